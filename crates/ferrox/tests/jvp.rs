//! Forward mode (`jvp`) against central finite differences in float64, rule family by rule
//! family, over broadcast and non-contiguous inputs; against reverse mode; and nested with it.

use ferrox::primitives::ScatterMode;
use ferrox::{self as fx, fast, Array, Dtype, Result};

type Fun<'a> = &'a dyn Fn(&[Array]) -> Result<Vec<Array>>;

fn rand(shape: &[usize], seed: u64) -> Array {
    fx::random::normal(shape, Dtype::F64, 0.0, 1.0, Some(&fx::random::key(seed))).unwrap()
}

fn values(a: &Array) -> Vec<f64> {
    fx::astype(a, Dtype::F64).unwrap().to_vec().unwrap()
}

/// The directional derivative of `f` at `args` along `tangents` by central differences.
fn numeric_jvp(f: Fun, args: &[Array], tangents: &[Array]) -> Vec<Vec<f64>> {
    let eps = 1e-6;
    let at = |s: f64| {
        let moved: Vec<Array> =
            args.iter().zip(tangents).map(|(a, t)| fx::add(a, fx::multiply(t, s).unwrap()).unwrap()).collect();
        f(&moved).unwrap().iter().map(values).collect::<Vec<_>>()
    };
    let (hi, lo) = (at(eps), at(-eps));
    hi.iter().zip(&lo).map(|(h, l)| h.iter().zip(l).map(|(a, b)| (a - b) / (2.0 * eps)).collect()).collect()
}

fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{name}[{i}]: jvp {a}, finite differences {b}");
    }
}

/// jvp of `f` at `args` along random tangents (seeded by `seed`) against finite differences;
/// the primal outputs must be `f(args)`.
fn check(name: &str, f: Fun, args: &[Array], seed: u64) {
    let tangents: Vec<Array> = args.iter().enumerate().map(|(i, a)| rand(a.shape(), seed + i as u64)).collect();
    let (outs, jvps) = fx::jvp(f, args, &tangents).unwrap();
    let direct = f(args).unwrap();
    let want = numeric_jvp(f, args, &tangents);
    assert_eq!(jvps.len(), direct.len(), "{name}: outputs");
    for (k, ((o, d), (j, w))) in outs.iter().zip(&direct).zip(jvps.iter().zip(&want)).enumerate() {
        assert_eq!(o.shape(), d.shape(), "{name}: output {k} shape");
        assert_eq!(j.shape(), d.shape(), "{name}: tangent {k} shape");
        assert_close(&format!("{name}: primal {k}"), &values(o), &values(d), 1e-12);
        assert_close(&format!("{name}: tangent {k}"), &values(j), w, 1e-5);
    }
}

/// A positive array (for logs, roots, powers).
fn positive(shape: &[usize], seed: u64) -> Array {
    fx::add(fx::abs(&rand(shape, seed)).unwrap(), 0.5).unwrap()
}

#[test]
fn unary_ops() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let x = &a[0];
        let p = &a[1]; // positive
        let small = fx::multiply(&fx::tanh(x)?, 0.5)?; // in (-0.5, 0.5)
        Ok(vec![
            fx::abs(x)?,
            fx::negative(x)?,
            fx::exp(x)?,
            fx::expm1(x)?,
            fx::log(p)?,
            fx::log1p(p)?,
            fx::log2(p)?,
            fx::log10(p)?,
            fx::sqrt(p)?,
            fx::rsqrt(p)?,
            fx::square(x)?,
            fx::reciprocal(p)?,
            fx::sin(x)?,
            fx::cos(x)?,
            fx::tan(&small)?,
            fx::arcsin(&small)?,
            fx::arccos(&small)?,
            fx::arctan(x)?,
            fx::sinh(x)?,
            fx::cosh(x)?,
            fx::tanh(x)?,
            fx::arcsinh(x)?,
            fx::arccosh(&fx::add(p, 1.0)?)?,
            fx::arctanh(&small)?,
            fx::sigmoid(x)?,
            fx::erf(x)?,
            fx::erfinv(&small)?,
            // Piecewise constant: zero tangents.
            fx::floor(x)?,
            fx::sign(x)?,
            fx::astype(&fx::greater(x, 0.0)?, Dtype::F64)?,
        ])
    };
    // Non-contiguous: a transposed view.
    check("unary", &f, &[rand(&[4, 3], 1).t(), positive(&[3, 4], 2)], 100);
    // Through float32 and back: the tangent is cast too.
    let g = |a: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![fx::astype(&fx::multiply(&fx::astype(&a[0], Dtype::F32)?, 2.0)?, Dtype::F64)?])
    };
    let x = rand(&[5], 3);
    let t = rand(&[5], 4);
    let (_, j) = fx::jvp(g, std::slice::from_ref(&x), std::slice::from_ref(&t)).unwrap();
    let want: Vec<f64> = values(&t).iter().map(|v| 2.0 * (*v as f32) as f64).collect();
    assert_close("astype", &values(&j[0]), &want, 1e-6);
}

#[test]
fn binary_ops_with_broadcasting() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let (x, y) = (&a[0], &a[1]); // [3, 1] and [4]
        let py = fx::add(&fx::abs(y)?, 0.5)?;
        Ok(vec![
            fx::add(x, y)?,
            fx::subtract(x, y)?,
            fx::multiply(x, y)?,
            fx::divide(x, &py)?,
            fx::power(&py, x)?,
            fx::power(x, 2.0)?,
            fx::logaddexp(x, y)?,
            fx::arctan2(x, y)?,
            fx::maximum(x, y)?,
            fx::minimum(x, y)?,
            fx::remainder(x, &py)?,
            fx::where_(&fx::greater(x, y)?, &fx::sin(x)?, &fx::exp(y)?)?,
            fx::where_(&fx::greater(y, 0.0)?, x, 2.0)?,
            fx::floor_divide(x, &py)?,
        ])
    };
    check("binary", &f, &[rand(&[3, 1], 5), rand(&[4], 6)], 110);
    // A tangent only for one argument (the other is a constant of the trace).
    let y = rand(&[4], 7);
    let g = |a: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![fx::multiply(&fx::power(&fx::add(&fx::abs(&a[0])?, 0.5)?, &y)?, &y)?])
    };
    check("binary, one traced", &g, &[rand(&[2, 4], 8)], 115);
}

#[test]
fn shapes_and_views() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let x = &a[0]; // [4, 6] (non-contiguous)
        let s = fx::sin(x)?;
        Ok(vec![
            fx::broadcast_to(&fx::reshape(x, &[4, 1, 6])?, &[4, 2, 6])?,
            fx::transpose(&s, &[1, 0])?,
            fx::reshape(&s, &[2, 12])?,
            fx::slice(x, &[3, 5], &[0, 0], &[-2, -2])?,
            fx::as_strided(&s, &[3, 3], &[5, 1], 2)?,
            fx::concatenate(&[x.clone(), fx::multiply(&s, 2.0)?, fx::ones(&[1, 6], Dtype::F64)?], 0)?,
            fx::contiguous(&fx::transpose(x, &[1, 0])?)?,
            fx::expand_dims(&fx::squeeze(&fx::reshape(x, &[1, 24])?, None)?, &[0])?,
        ])
    };
    check("shapes", &f, &[fx::slice(&rand(&[6, 8], 9), &[0, 0], &[6, 8], &[1, 2]).unwrap().t()], 120);
    // A non-contiguous tangent gives what its contiguous copy gives.
    let x = rand(&[3, 4], 121);
    let t = rand(&[4, 3], 122).t();
    let g = |a: &[Array]| -> Result<Vec<Array>> { Ok(vec![fx::sum(&fx::exp(&a[0])?, Some(&[0]), false)?]) };
    let (_, strided) = fx::jvp(g, std::slice::from_ref(&x), std::slice::from_ref(&t)).unwrap();
    let (_, packed) = fx::jvp(g, std::slice::from_ref(&x), &[fx::contiguous(&t).unwrap()]).unwrap();
    assert_close("non-contiguous tangent", &values(&strided[0]), &values(&packed[0]), 1e-14);
}

#[test]
fn reductions_and_scans() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let x = &a[0]; // [3, 5]
        Ok(vec![
            fx::sum(x, Some(&[1]), false)?,
            fx::mean(x, None, false)?,
            fx::prod(x, Some(&[0]), true)?,
            fx::max(x, Some(&[1]), false)?,
            fx::min(x, None, false)?,
            fx::logsumexp(x, Some(&[-1]), true)?,
            fx::logsumexp(x, Some(&[0]), false)?,
            fx::softmax(x, None, false)?,
            fx::var(x, Some(&[1]), false, 0)?,
        ])
    };
    check("reductions", &f, &[rand(&[5, 3], 10).t()], 130);
    // Prod and cumprod with zeros (multilinear, so differences are exact around them).
    let z = Array::from_slice(&[1.5, 0.0, 2.0, -1.0, 0.0, 0.0, 3.0, 0.5, 0.7, 2.0, 0.0, 1.1], &[3, 4]).unwrap();
    let g = |a: &[Array]| -> Result<Vec<Array>> {
        let x = &a[0];
        let mut outs = vec![fx::prod(x, Some(&[1]), false)?, fx::prod(x, Some(&[0]), false)?];
        for (axis, reverse, inclusive) in [(1, false, true), (1, true, true), (1, false, false), (0, true, false)] {
            outs.push(fx::cumprod(x, Some(axis), reverse, inclusive)?);
        }
        Ok(outs)
    };
    check("prod with zeros", &g, &[z], 135);
    for (axis, reverse, inclusive) in [(0, false, true), (1, true, true), (1, false, false), (0, true, false)] {
        let h = |a: &[Array]| -> Result<Vec<Array>> {
            let x = &a[0];
            let finite = |y: &Array| fx::where_(&fx::isfinite(y)?, y, 0.0);
            Ok(vec![
                fx::cumsum(x, Some(axis), reverse, inclusive)?,
                fx::cumprod(x, Some(axis), reverse, inclusive)?,
                finite(&fx::cummax(x, Some(axis), reverse, inclusive)?)?,
                finite(&fx::cummin(x, Some(axis), reverse, inclusive)?)?,
            ])
        };
        check(&format!("scans {axis} {reverse} {inclusive}"), &h, &[rand(&[5, 4], 11).t()], 140);
    }
}

#[test]
fn matmul_and_addmm() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let (x, w, c) = (&a[0], &a[1], &a[2]);
        Ok(vec![
            fx::matmul(x, w)?,
            fx::matmul(&fx::reshape(x, &[2, 1, 3, 4])?, &fx::broadcast_to(w, &[3, 4, 5])?)?,
            fx::addmm(c, x, w, 0.7, 1.3)?,
            fx::matmul(&fx::slice_axis(x, 1, 0, 3)?, &fx::ones(&[3, 2], Dtype::F64)?)?,
        ])
    };
    check("matmul", &f, &[rand(&[4, 6], 12).t(), rand(&[4, 5], 13), rand(&[5], 14)], 150);
}

#[test]
fn indexing_sort_and_scatter() {
    let idx = Array::from_slice(&[2i32, 0, 2, 1], &[4]).unwrap();
    let uniq = Array::from_slice(&[2i32, 0], &[2]).unwrap();
    let along = Array::from_slice(&[1u32, 0, 3, 2, 1, 0, 0, 3, 2], &[3, 3]).unwrap();
    let put = Array::from_slice(&[3u32, 0, 1, 2, 0, 3], &[3, 2]).unwrap();
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let (x, u) = (&a[0], &a[1]); // [3, 4], [4, 1, 4]
        let u2 = fx::slice_axis(u, 0, 0, 2)?;
        Ok(vec![
            fx::take(x, &idx, Some(0))?,
            fx::take_along_axis(x, &along, Some(1))?,
            fx::put_along_axis(x, &put, &fx::slice_axis(x, 1, 1, 3)?, Some(1))?,
            fx::scatter_along_axis(x, &put, &fx::exp(&fx::slice_axis(x, 1, 0, 2)?)?, Some(1), ScatterMode::Add)?,
            fx::scatter_along_axis(x, &put, &fx::cos(&fx::slice_axis(x, 1, 0, 2)?)?, Some(1), ScatterMode::Max)?,
            fx::scatter_along_axis(x, &put, &fx::sin(&fx::slice_axis(x, 1, 1, 3)?)?, Some(1), ScatterMode::Min)?,
            fx::scatter_along_axis(x, &put, &fx::slice_axis(x, 1, 2, 4)?, Some(1), ScatterMode::Prod)?,
            fx::scatter(x, std::slice::from_ref(&uniq), &u2, &[0])?,
            fx::scatter_add(x, std::slice::from_ref(&idx), u, &[0])?,
            fx::scatter_prod(x, std::slice::from_ref(&idx), u, &[0])?,
            fx::scatter_max(x, std::slice::from_ref(&idx), u, &[0])?,
            fx::scatter_min(x, std::slice::from_ref(&idx), u, &[0])?,
            fx::slice_update(x, &fx::square(&fx::slice_axis(x, 0, 0, 2)?)?, &[1, 0], &[3, 4], &[1, 1])?,
            fx::sort(x, Some(1))?,
            fx::sort(x, Some(0))?,
            fx::partition(x, 1, Some(1))?,
            fx::astype(&fx::argsort(x, Some(1))?, Dtype::F64)?,
        ])
    };
    check("indexing", &f, &[rand(&[4, 3], 15).t(), rand(&[4, 1, 4], 16)], 160);
}

#[test]
fn fast_ops() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let (x, w, b) = (&a[0], &a[1], &a[2]); // [6, 4], [4], [4]
        let x4 = fx::reshape(x, &[1, 2, 3, 4])?;
        Ok(vec![
            fast::rms_norm(x, Some(w), 1e-5)?,
            fast::rms_norm(x, None, 1e-5)?,
            fast::layer_norm(x, Some(w), Some(b), 1e-5)?,
            fast::layer_norm(x, None, Some(b), 1e-5)?,
            fast::layer_norm(x, None, None, 1e-5)?,
            fast::rope(&x4, 4, false, Some(10000.0), 1.0, 2i64, None)?,
            fast::rope(&x4, 2, true, Some(500.0), 0.5, 1i64, None)?,
        ])
    };
    check("norms and rope", &f, &[rand(&[4, 6], 17).t(), rand(&[4], 18), rand(&[4], 19)], 170);
    for mask in ["none", "causal", "additive", "bool"] {
        let g = |a: &[Array]| -> Result<Vec<Array>> {
            let m = match mask {
                "none" => fast::SdpaMask::None,
                "causal" => fast::SdpaMask::Causal,
                "additive" => fast::SdpaMask::Array(fx::sin(&a[3])?),
                _ => fast::SdpaMask::Array(fx::greater(rand(&[1, 1, 3, 5], 22), -0.5)?),
            };
            Ok(vec![fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.35, m)?])
        };
        let args = [rand(&[1, 4, 3, 3], 24), rand(&[1, 2, 5, 3], 25), rand(&[1, 2, 5, 2], 26), rand(&[3, 5], 27)];
        check(&format!("attention {mask}"), &g, &args, 180);
    }
    // Causal with more queries than keys (L = 5, S = 2): the first three rows see no key, so
    // their outputs are the mean of v whatever q and k are (tangents through v only).
    let g = |a: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.35, fast::SdpaMask::Causal)?])
    };
    let args = [rand(&[1, 4, 5, 3], 28), rand(&[1, 2, 2, 3], 29), rand(&[1, 2, 2, 2], 30)];
    check("attention causal L > S", &g, &args, 185);
}

#[test]
fn convolutions() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let (x, w, w1, wt) = (&a[0], &a[1], &a[2], &a[3]);
        Ok(vec![
            fx::conv2d(x, w, (1, 2), (1, 1), (1, 1), 1)?,
            fx::conv2d(x, &fx::slice_axis(w, 3, 0, 1)?, (2, 1), (0, 1), (2, 1), 2)?,
            fx::conv1d(&fx::reshape(x, &[2, 20, 2])?, w1, 2, 1, 2, 1)?,
            fx::conv_transpose2d(x, wt, (2, 1), (1, 0), (1, 2), (1, 0), 2)?,
        ])
    };
    let args = [
        fx::swapaxes(&rand(&[2, 4, 5, 2], 28), 1, 2).unwrap(),
        rand(&[4, 3, 3, 2], 29),
        rand(&[3, 2, 2], 30),
        rand(&[4, 2, 2, 1], 31),
    ];
    check("conv", &f, &args, 190);
}

#[test]
fn compiled_and_checkpointed() {
    let body = |a: &[Array]| -> Result<Vec<Array>> {
        let x = &a[0];
        let g = fx::multiply(
            &fx::multiply(x, 0.5)?,
            &fx::add(&fx::erf(&fx::multiply(x, std::f64::consts::FRAC_1_SQRT_2)?)?, 1.0)?,
        )?;
        Ok(vec![fx::add(&fx::multiply(&g, &a[1])?, &fx::tanh(&fx::maximum(x, &a[1])?)?)?])
    };
    let compiled = fx::compile(body);
    let f = |a: &[Array]| compiled.call(a);
    check("compiled", &f, &[rand(&[3, 4], 32), rand(&[4], 33)], 200);
    let ck = fx::checkpoint(body);
    let g = |a: &[Array]| -> Result<Vec<Array>> { Ok(vec![fx::exp(&ck(&[fx::sin(&a[0])?, a[1].clone()])?[0])?]) };
    check("checkpoint", &g, &[rand(&[3, 4], 34), rand(&[4], 35)], 210);
}

/// A small network: layer norm, attention, an MLP and a softmax.
fn composite(a: &[Array]) -> Result<Vec<Array>> {
    let (x, w1, w2) = (&a[0], &a[1], &a[2]); // [2, 3, 4], [4, 8], [8, 4]
    let h = fast::layer_norm(x, None, None, 1e-5)?;
    let q = fx::reshape(&h, &[1, 2, 3, 4])?;
    let att = fast::scaled_dot_product_attention(&q, &q, &q, 0.5, fast::SdpaMask::Causal)?;
    let y = fx::matmul(&fx::tanh(&fx::matmul(&fx::reshape(&att, &[2, 3, 4])?, w1)?)?, w2)?;
    Ok(vec![fx::softmax(&fx::add(&y, x)?, None, false)?, fx::sum(&fx::square(w1)?, None, false)?])
}

fn composite_args() -> Vec<Array> {
    vec![rand(&[2, 3, 4], 40), rand(&[4, 8], 41), rand(&[8, 4], 42)]
}

#[test]
fn forward_matches_reverse() {
    let args = composite_args();
    check("composite", &composite, &args, 220);
    let v: Vec<Array> = args.iter().enumerate().map(|(i, a)| rand(a.shape(), 230 + i as u64)).collect();
    let (outs, jv) = fx::jvp(composite, &args, &v).unwrap();
    let u: Vec<Array> = outs.iter().enumerate().map(|(i, o)| rand(o.shape(), 240 + i as u64)).collect();
    let (_, ju) = fx::vjp(composite, &args, &u).unwrap();
    let dot = |a: &[Array], b: &[Array]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| fx::sum(&fx::multiply(x, y).unwrap(), None, false).unwrap().item::<f64>().unwrap())
            .sum()
    };
    let (lhs, rhs) = (dot(&u, &jv), dot(&ju, &v));
    assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()), "⟨u, J v⟩ = {lhs}, ⟨Jᵀu, v⟩ = {rhs}");
}

fn loss(a: &[Array]) -> Result<Array> {
    let outs = composite(a)?;
    fx::add(&fx::sum(&fx::multiply(&outs[0], rand(outs[0].shape(), 250))?, None, false)?, &outs[1])
}

#[test]
fn hessian_vector_products() {
    // jvp of grad against finite differences of grad.
    let grads = |a: &[Array]| fx::grad(loss, a, &[0, 1, 2]);
    check("jvp(grad)", &grads, &composite_args(), 260);
    // grad of jvp: d/dx ⟨w, J(x) v⟩ against finite differences.
    let v: Vec<Array> = composite_args().iter().enumerate().map(|(i, a)| rand(a.shape(), 270 + i as u64)).collect();
    let directional = |a: &[Array]| -> Result<Vec<Array>> {
        let (_, jv) = fx::jvp(|b: &[Array]| Ok(vec![loss(b)?]), a, &v)?;
        Ok(jv)
    };
    let hv = fx::grad(|a: &[Array]| Ok(directional(a)?.remove(0)), &composite_args(), &[0, 1, 2]).unwrap();
    let grads_fn = |a: &[Array]| fx::grad(loss, a, &[0, 1, 2]);
    let (_, hv_fwd) = fx::jvp(grads_fn, &composite_args(), &v).unwrap();
    for (k, (a, b)) in hv.iter().zip(&hv_fwd).enumerate() {
        assert_close(&format!("grad(jvp) vs jvp(grad) {k}"), &values(a), &values(b), 1e-9);
    }
    // jvp of jvp: a second directional derivative.
    let x = rand(&[5], 280);
    let (t1, t2) = (rand(&[5], 281), rand(&[5], 282));
    let cube = |a: &[Array]| -> Result<Vec<Array>> { Ok(vec![fx::sum(&fx::power(&a[0], 3.0)?, None, false)?]) };
    let first = |a: &[Array]| -> Result<Vec<Array>> { Ok(fx::jvp(cube, a, std::slice::from_ref(&t1))?.1) };
    let (_, second) = fx::jvp(first, std::slice::from_ref(&x), std::slice::from_ref(&t2)).unwrap();
    let want: f64 = values(&x).iter().zip(values(&t1)).zip(values(&t2)).map(|((x, a), b)| 6.0 * x * a * b).sum();
    assert_close("jvp(jvp)", &values(&second[0]), &[want], 1e-10);
}

#[test]
fn errors_and_zero_tangents() {
    let x = rand(&[3], 290);
    let e = fx::jvp(|a: &[Array]| Ok(vec![a[0].clone()]), std::slice::from_ref(&x), &[rand(&[4], 291)]).unwrap_err();
    assert!(e.to_string().contains("tangent"), "{e}");
    let e = fx::jvp(|a: &[Array]| Ok(vec![a[0].clone()]), std::slice::from_ref(&x), &[]).unwrap_err();
    assert!(e.to_string().contains("tangents"), "{e}");
    // Outputs independent of the inputs, integer outputs and identities.
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![fx::ones(&[2], Dtype::F64)?, fx::argmax(&a[0], None, false)?, a[0].clone(), fx::stop_gradient(&a[0])?])
    };
    let t = rand(&[3], 292);
    let (_, j) = fx::jvp(f, std::slice::from_ref(&x), std::slice::from_ref(&t)).unwrap();
    assert_eq!(values(&j[0]), vec![0.0, 0.0]);
    assert_eq!(j[1].shape(), &[] as &[usize]);
    assert_eq!(values(&j[2]), values(&t));
    assert_eq!(values(&j[3]), vec![0.0; 3]);
}
