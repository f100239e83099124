//! Reverse-mode gradients against central finite differences in float64, higher order, and
//! forward mode against reverse mode.

use ferrox::primitives::ScatterMode;
use ferrox::{self as fx, fast, Array, Dtype, Result};

fn rand(shape: &[usize], seed: u64) -> Array {
    fx::random::normal(shape, Dtype::F64, 0.0, 1.0, Some(&fx::random::key(seed))).unwrap()
}

/// Central differences of the scalar `f` with respect to argument `which`.
fn numeric_grad(f: &dyn Fn(&[Array]) -> Result<Array>, args: &[Array], which: usize) -> Vec<f64> {
    let base: Vec<f64> = args[which].to_vec().unwrap();
    let eps = 1e-6;
    (0..base.len())
        .map(|i| {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let mut a = args.to_vec();
                a[which] = Array::from_slice(&v, args[which].shape()).unwrap();
                f(&a).unwrap().item::<f64>().unwrap()
            };
            (at(eps) - at(-eps)) / (2.0 * eps)
        })
        .collect()
}

fn check(name: &str, f: &dyn Fn(&[Array]) -> Result<Array>, args: &[Array]) {
    let argnums: Vec<usize> = (0..args.len()).collect();
    let (value, grads) = fx::value_and_grad(f, args, &argnums).unwrap();
    let direct = f(args).unwrap().item::<f64>().unwrap();
    assert!((value.item::<f64>().unwrap() - direct).abs() < 1e-12, "{name}: value");
    for (k, g) in grads.iter().enumerate() {
        assert_eq!(g.shape(), args[k].shape(), "{name}: grad {k} shape");
        let got: Vec<f64> = g.to_vec().unwrap();
        let want = numeric_grad(f, args, k);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{name}: d/darg{k}[{i}] = {a}, finite differences {b}");
        }
    }
}

#[test]
fn elementwise_and_broadcasting() {
    let f = |a: &[Array]| -> Result<Array> {
        let x = &a[0];
        let y = &a[1];
        let num = fx::multiply(&fx::sin(x)?, &fx::exp(y)?)?;
        let den = fx::add(&fx::square(x)?, 1.0)?;
        let t = fx::add(&fx::divide(&num, &den)?, &fx::tanh(&fx::multiply(x, y)?)?)?;
        let t = fx::add(&t, &fx::sigmoid(&fx::subtract(y, x)?)?)?;
        let t = fx::add(&t, &fx::power(&fx::add(&fx::abs(x)?, 1.0)?, &fx::cos(y)?)?)?;
        let t = fx::add(&t, &fx::logaddexp(x, y)?)?;
        let t = fx::add(&t, &fx::maximum(x, &fx::multiply(y, 0.5)?)?)?;
        fx::sum(&fx::where_(&fx::greater(x, 0.0)?, &t, &fx::multiply(&t, 2.0)?)?, None, false)
    };
    check("elementwise", &f, &[rand(&[3, 1], 1), rand(&[4], 2)]);
    let g = |a: &[Array]| -> Result<Array> {
        let x = fx::add(&fx::abs(&a[0])?, 0.5)?;
        let terms = [
            fx::log(&x)?,
            fx::log1p(&x)?,
            fx::sqrt(&x)?,
            fx::rsqrt(&x)?,
            fx::reciprocal(&x)?,
            fx::expm1(&a[0])?,
            fx::arctan(&a[0])?,
            fx::erf(&a[0])?,
            fx::arcsinh(&a[0])?,
            fx::log2(&x)?,
            fx::arctan2(&a[0], &x)?,
            fx::erfinv(&fx::multiply(&fx::tanh(&a[0])?, 0.5)?)?,
        ];
        let mut acc = fx::zeros_like(&a[0])?;
        for t in terms {
            acc = fx::add(&acc, &t)?;
        }
        fx::sum(&acc, None, false)
    };
    check("unary", &g, &[rand(&[5], 3)]);
}

#[test]
fn reductions_matmul_and_shapes() {
    let f = |a: &[Array]| -> Result<Array> {
        let (x, w) = (&a[0], &a[1]);
        let h = fx::tanh(&fx::matmul(x, w)?)?; // [2, 4, 5]
        let s = fx::softmax(&h, None, false)?;
        let l = fx::logsumexp(&h, Some(&[1]), false)?;
        let m = fx::max(&h, Some(&[-1]), false)?;
        let v = fx::var(&h, Some(&[0, 2]), false, 1)?;
        let t = fx::transpose(&s, &[2, 0, 1])?;
        let sl = fx::slice(&t, &[0, 0, 3], &[5, 2, -5], &[2, 1, -2])?;
        let c = fx::concatenate(&[fx::reshape(&sl, &[-1])?, fx::reshape(&l, &[-1])?, fx::reshape(&m.t(), &[-1])?], 0)?;
        let p = fx::prod(&fx::add(&fx::slice_axis(&v, 0, 0, 2)?, 1.0)?, None, false)?;
        fx::add(&fx::sum(&fx::multiply(&c, &c)?, None, false)?, &p)
    };
    check("reductions", &f, &[rand(&[2, 4, 3], 4), rand(&[3, 5], 5)]);
    let addmm = |a: &[Array]| fx::sum(&fx::square(&fx::addmm(&a[2], &a[0], &a[1], 0.7, 1.3)?)?, None, false);
    check("addmm", &addmm, &[rand(&[3, 2], 6), rand(&[2, 4], 7), rand(&[4], 8)]);
}

#[test]
fn indexing_and_fast_ops() {
    let idx = Array::from_slice(&[2i32, 0, 2, 1], &[4]).unwrap();
    let along = Array::from_slice(&[1u32, 0, 2, 2, 1, 0], &[2, 3]).unwrap();
    let f = |a: &[Array]| -> Result<Array> {
        let x = &a[0]; // [3, 3]
        let t = fx::take(x, &idx, Some(0))?;
        let ta = fx::take_along_axis(&fx::slice_axis(x, 0, 0, 2)?, &along, Some(1))?;
        let cs = fx::cumsum(x, Some(1), false, true)?;
        let su = fx::slice_update(x, &fx::multiply(&ta, 3.0)?, &[1, 0], &[3, 3], &[1, 1])?;
        fx::add(
            &fx::add(&fx::sum(&fx::square(&t)?, None, false)?, &fx::sum(&fx::sin(&cs)?, None, false)?)?,
            &fx::sum(&fx::exp(&su)?, None, false)?,
        )
    };
    check("indexing", &f, &[rand(&[3, 3], 9)]);
    let n = |a: &[Array]| -> Result<Array> {
        let (x, w, b) = (&a[0], &a[1], &a[2]);
        let r = fast::rms_norm(x, Some(w), 1e-5)?;
        let l = fast::layer_norm(x, Some(w), Some(b), 1e-5)?;
        let x4 = fx::reshape(x, &[1, 2, 3, 4])?;
        let ro = fast::rope(&x4, 4, false, Some(10000.0), 1.0, 2i64, None)?;
        let rt = fast::rope(&x4, 2, true, Some(500.0), 0.5, 1i64, None)?;
        let parts = [
            fx::sin(&r)?,
            fx::square(&l)?,
            fx::reshape(&fx::cos(&ro)?, &[6, 4])?,
            fx::reshape(&fx::exp(&rt)?, &[6, 4])?,
        ];
        let mut acc = fx::zeros(&[6, 4], Dtype::F64)?;
        for p in parts {
            acc = fx::add(&acc, &fx::multiply(&p, &fx::reshape(&fx::arange(1.0, 25.0, 1.0, Dtype::F64)?, &[6, 4])?)?)?;
        }
        fx::sum(&acc, None, false)
    };
    check("norms and rope", &n, &[rand(&[6, 4], 10), rand(&[4], 11), rand(&[4], 12)]);
}

/// The fused norm backward kernels: their own gradients (second order) against finite
/// differences of the fused first-order gradient, and per-example gradients under vmap
/// (weight shared or batched) against a loop over the examples.
#[test]
fn norm_backward_kernels() {
    let c = rand(&[6, 4], 20);
    for centered in [false, true] {
        let name = if centered { "layer_norm" } else { "rms_norm" };
        let inner = |b: &[Array]| -> Result<Array> {
            let y = if centered {
                fast::layer_norm(&b[0], Some(&b[1]), None, 1e-5)?
            } else {
                fast::rms_norm(&b[0], Some(&b[1]), 1e-5)?
            };
            fx::sum(&fx::multiply(&fx::sin(&y)?, &c)?, None, false)
        };
        let outer = |a: &[Array]| -> Result<Array> {
            let g = fx::grad(inner, a, &[0, 1])?;
            fx::add(&fx::sum(&fx::square(&g[0])?, None, false)?, &fx::sum(&fx::sin(&g[1])?, None, false)?)
        };
        check(&format!("second order through {name}"), &outer, &[rand(&[6, 4], 21), rand(&[4], 22)]);

        let (xs, ws) = (rand(&[3, 6, 4], 23), rand(&[3, 4], 24));
        let grad_x = |a: &[Array]| -> Result<Vec<Array>> { Ok(vec![fx::grad(inner, a, &[0])?.remove(0)]) };
        for batched_w in [false, true] {
            let w_axis = batched_w.then_some(0);
            let w_in = if batched_w { ws.clone() } else { fx::take(&ws, &Array::from(0i32), Some(0)).unwrap() };
            let got = fx::vmap_call(&grad_x, &[xs.clone(), w_in.clone()], &[Some(0), w_axis], &[Some(0)]).unwrap();
            let got: Vec<f64> = got[0].to_vec().unwrap();
            for e in 0..3 {
                let x = fx::take(&xs, &Array::from(e as i32), Some(0)).unwrap();
                let w = if batched_w { fx::take(&ws, &Array::from(e as i32), Some(0)).unwrap() } else { w_in.clone() };
                let want: Vec<f64> = grad_x(&[x, w]).unwrap()[0].to_vec().unwrap();
                for (i, (a, b)) in got[e * 24..(e + 1) * 24].iter().zip(&want).enumerate() {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{name} vmap (w batched {batched_w}) [{e}, {i}]");
                }
            }
        }
    }
}

#[test]
fn higher_order_and_forward_mode() {
    // d²/dx² sum(x³) = 6x.
    let x = rand(&[4], 13);
    let second = fx::grad(
        |a: &[Array]| {
            fx::sum(&fx::grad(|b: &[Array]| fx::sum(&fx::power(&b[0], 3.0)?, None, false), a, &[0])?[0], None, false)
        },
        std::slice::from_ref(&x),
        &[0],
    )
    .unwrap();
    let want: Vec<f64> = x.to_vec::<f64>().unwrap().iter().map(|v| 6.0 * v).collect();
    for (a, b) in second[0].to_vec::<f64>().unwrap().iter().zip(&want) {
        assert!((a - b).abs() < 1e-10, "{a} vs {b}");
    }
    // ⟨u, J v⟩ both ways.
    let f = |a: &[Array]| -> Result<Vec<Array>> { Ok(vec![fx::tanh(&fx::matmul(&a[0], &fx::sin(&a[0])?)?)?]) };
    let p = rand(&[3, 3], 14);
    let v = rand(&[3, 3], 15);
    let u = rand(&[3, 3], 16);
    let (_, jv) = fx::jvp(f, std::slice::from_ref(&p), std::slice::from_ref(&v)).unwrap();
    let (_, ju) = fx::vjp(f, &[p], std::slice::from_ref(&u)).unwrap();
    let lhs = fx::sum(&fx::multiply(&u, &jv[0]).unwrap(), None, false).unwrap().item::<f64>().unwrap();
    let rhs = fx::sum(&fx::multiply(&ju[0], &v).unwrap(), None, false).unwrap().item::<f64>().unwrap();
    assert!((lhs - rhs).abs() < 1e-10 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
}

#[test]
fn stop_gradient_and_constants() {
    let x = rand(&[3], 17);
    let g = fx::grad(
        |a: &[Array]| fx::sum(&fx::multiply(&a[0], &fx::stop_gradient(&a[0])?)?, None, false),
        std::slice::from_ref(&x),
        &[0],
    )
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), x.to_vec::<f64>().unwrap());
    let e = fx::grad(|a: &[Array]| fx::sum(&a[0], None, false), std::slice::from_ref(&x), &[1]).unwrap_err();
    assert!(e.to_string().contains("argnum"));
    let e = fx::grad(|a: &[Array]| Ok(a[0].clone()), &[x], &[0]).unwrap_err();
    assert!(e.to_string().contains("scalar"));
}

#[test]
fn sort_scatter_and_attention() {
    let f = |a: &[Array]| -> Result<Array> {
        let x = &a[0]; // [2, 5]
        let s = fx::sort(x, Some(1))?;
        let w = fx::arange(1.0, 11.0, 1.0, Dtype::F64)?;
        let t = fx::sum(&fx::multiply(&fx::reshape(&s, &[-1])?, &w)?, None, false)?;
        let idx = Array::from_slice(&[1i32, 1, 0], &[3]).unwrap();
        let upd = fx::reshape(&fx::slice(x, &[0, 0], &[1, 3], &[1, 1])?, &[3, 1, 1])?;
        let upd = fx::broadcast_to(&upd, &[3, 1, 5])?;
        let sa = fx::scatter_add(x, std::slice::from_ref(&idx), &upd, &[0])?;
        let pi = Array::from_slice(&[4u32, 0, 2, 1, 3, 2], &[2, 3]).unwrap();
        let pa = fx::put_along_axis(x, &pi, &fx::multiply(&fx::slice_axis(x, 1, 1, 4)?, 2.0)?, Some(1))?;
        fx::add(&t, &fx::add(&fx::sum(&fx::square(&sa)?, None, false)?, &fx::sum(&fx::exp(&pa)?, None, false)?)?)
    };
    check("sort/scatter", &f, &[rand(&[2, 5], 20)]);
    for mask in ["none", "causal", "additive", "bool"] {
        let f = |a: &[Array]| -> Result<Array> {
            let m = match mask {
                "none" => fast::SdpaMask::None,
                "causal" => fast::SdpaMask::Causal,
                "additive" => fast::SdpaMask::Array(rand(&[3, 5], 21)),
                _ => fast::SdpaMask::Array(fx::greater(rand(&[1, 1, 3, 5], 22), -0.5)?),
            };
            let o = fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.35, m)?;
            fx::sum(&fx::multiply(&fx::sin(&o)?, rand(&[1, 4, 3, 2], 23))?, None, false)
        };
        check(mask, &f, &[rand(&[1, 4, 3, 3], 24), rand(&[1, 2, 5, 3], 25), rand(&[1, 2, 5, 2], 26)]);
    }
}

#[test]
fn trees_and_aux() {
    use std::collections::BTreeMap;
    let (w, b, x) = (rand(&[3, 2], 30), rand(&[2], 31), rand(&[4, 3], 32));
    let mut layer = BTreeMap::new();
    layer.insert("weight".to_string(), fx::Tree::Leaf(w.clone()));
    layer.insert("bias".to_string(), fx::Tree::Leaf(b.clone()));
    let params = fx::Tree::List(vec![fx::Tree::Dict(layer)]);
    let loss = |p: &fx::Tree| -> Result<(Array, Vec<Array>)> {
        let flat = p.flatten();
        let get = |name: &str| flat.iter().find(|(k, _)| k == name).unwrap().1.clone();
        let y = fx::tanh(&fx::add(&fx::matmul(&x, &get("0.weight"))?, get("0.bias"))?)?;
        Ok((fx::sum(&fx::square(&y)?, None, false)?, vec![y]))
    };
    let ((value, aux), g) = fx::value_and_grad_tree(loss, &params).unwrap();
    assert_eq!(aux[0].shape(), &[4, 2]);
    let names: Vec<String> = g.flatten().into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, vec!["0.bias", "0.weight"]);
    // Against the positional API, itself checked by finite differences above.
    let f = |a: &[Array]| fx::sum(&fx::square(&fx::tanh(&fx::add(&fx::matmul(&x, &a[0])?, &a[1])?)?)?, None, false);
    let (v2, g2) = fx::value_and_grad(f, &[w, b], &[0, 1]).unwrap();
    assert_eq!(value.item::<f64>().unwrap(), v2.item::<f64>().unwrap());
    let flat = g.flatten();
    assert_eq!(flat[1].1.to_vec::<f64>().unwrap(), g2[0].to_vec::<f64>().unwrap());
    assert_eq!(flat[0].1.to_vec::<f64>().unwrap(), g2[1].to_vec::<f64>().unwrap());
}

/// `sum(sin(y) · r)` for a fixed random `r` of `y`'s shape: a loss whose cotangent differs
/// at every element.
fn weighted(y: &Array, seed: u64) -> Result<Array> {
    fx::sum(&fx::multiply(&fx::sin(y)?, rand(y.shape(), seed))?, None, false)
}

/// A convolution's geometry for [`conv_case`].
struct Conv {
    stride: &'static [usize],
    lo: &'static [isize],
    hi: &'static [isize],
    kernel_dilation: &'static [usize],
    input_dilation: &'static [usize],
    groups: usize,
    flip: bool,
}

#[test]
fn convolutions() {
    // (name, input shape stored with its axes reversed and viewed transposed, weight shape, geometry)
    let cases: [(&str, &[usize], &[usize], Conv); 7] = [
        (
            "1d stride, uneven padding",
            &[2, 7, 3],
            &[4, 3, 3],
            Conv {
                stride: &[2],
                lo: &[1],
                hi: &[2],
                kernel_dilation: &[1],
                input_dilation: &[1],
                groups: 1,
                flip: false,
            },
        ),
        (
            "1d groups, kernel dilation",
            &[1, 9, 4],
            &[6, 2, 2],
            Conv {
                stride: &[1],
                lo: &[0],
                hi: &[1],
                kernel_dilation: &[3],
                input_dilation: &[1],
                groups: 2,
                flip: false,
            },
        ),
        (
            "1d transposed (input dilation, flip)",
            &[2, 4, 2],
            &[3, 3, 2],
            Conv {
                stride: &[1],
                lo: &[1],
                hi: &[2],
                kernel_dilation: &[1],
                input_dilation: &[2],
                groups: 1,
                flip: true,
            },
        ),
        (
            "1d negative padding, stride over input dilation",
            &[1, 8, 2],
            &[2, 2, 2],
            Conv {
                stride: &[3],
                lo: &[-2],
                hi: &[-1],
                kernel_dilation: &[2],
                input_dilation: &[2],
                groups: 1,
                flip: false,
            },
        ),
        (
            "2d",
            &[2, 5, 6, 3],
            &[4, 3, 2, 3],
            Conv {
                stride: &[2, 1],
                lo: &[1, 0],
                hi: &[0, 2],
                kernel_dilation: &[1, 2],
                input_dilation: &[1, 1],
                groups: 1,
                flip: false,
            },
        ),
        (
            "2d groups, input dilation, flip",
            &[1, 4, 5, 6],
            &[3, 2, 3, 2],
            Conv {
                stride: &[1, 2],
                lo: &[0, 1],
                hi: &[1, 0],
                kernel_dilation: &[2, 1],
                input_dilation: &[2, 1],
                groups: 3,
                flip: true,
            },
        ),
        (
            "3d groups",
            &[1, 4, 3, 5, 2],
            &[2, 2, 2, 3, 1],
            Conv {
                stride: &[1, 2, 1],
                lo: &[1],
                hi: &[1],
                kernel_dilation: &[1, 1, 2],
                input_dilation: &[1],
                groups: 2,
                flip: false,
            },
        ),
    ];
    for (i, (name, xs, ws, c)) in cases.iter().enumerate() {
        let stored: Vec<usize> = xs.iter().rev().copied().collect();
        let perm: Vec<usize> = (0..xs.len()).rev().collect();
        let f = |a: &[Array]| -> Result<Array> {
            let x = fx::transpose(&a[0], &perm)?;
            let y = fx::conv_general(
                &x,
                &a[1],
                c.stride,
                c.lo,
                c.hi,
                c.kernel_dilation,
                c.input_dilation,
                c.groups,
                c.flip,
            )?;
            weighted(&y, 100 + i as u64)
        };
        check(name, &f, &[rand(&stored, 40 + i as u64), rand(ws, 60 + i as u64)]);
    }
    // The fixed-rank functions, a weight shared across output channels by broadcasting, and a
    // second-order gradient through the backward convolutions.
    let f = |a: &[Array]| -> Result<Array> {
        let w = fx::broadcast_to(&a[1], &[4, 3, 3, 2])?;
        let y = fx::conv2d(&a[0], &w, (1, 2), (1, 1), (1, 1), 1)?;
        let t = fx::conv_transpose2d(&fx::tanh(&y)?, &a[2], (2, 1), (1, 0), (1, 2), (1, 0), 2)?;
        let z = fx::conv3d(&fx::reshape(&a[0], &[1, 2, 5, 4, 2])?, &a[3], (1, 1, 2), (0, 1, 0), (1, 2, 1), 1)?;
        fx::add(&weighted(&t, 120)?, &weighted(&z, 121)?)
    };
    check(
        "conv2d / conv_transpose2d / conv3d",
        &f,
        &[rand(&[2, 5, 4, 2], 70), rand(&[1, 3, 3, 2], 71), rand(&[4, 2, 2, 2], 72), rand(&[3, 2, 2, 1, 2], 73)],
    );
    let g = |a: &[Array]| -> Result<Array> {
        let inner = |b: &[Array]| weighted(&fx::conv1d(&b[0], &b[1], 2, 1, 2, 1)?, 122);
        let gs = fx::grad(inner, a, &[0, 1])?;
        fx::add(&fx::sum(&fx::square(&gs[0])?, None, false)?, &fx::sum(&fx::square(&gs[1])?, None, false)?)
    };
    check("conv1d second order", &g, &[rand(&[2, 7, 2], 74), rand(&[3, 2, 2], 75)]);
}

#[test]
fn cumulative_products_and_extremes() {
    for (axis, reverse, inclusive) in [(0, false, true), (1, true, true), (1, false, false), (0, true, false)] {
        let f = |a: &[Array]| -> Result<Array> {
            let x = a[0].t(); // [4, 5] viewed from [5, 4]
            let p = fx::cumprod(&x, Some(axis), reverse, inclusive)?;
            let hi = fx::cummax(&x, Some(axis), reverse, inclusive)?;
            let lo = fx::cummin(&x, Some(axis), reverse, inclusive)?;
            // The identities of exclusive max/min scans are infinite: keep them out of the loss.
            let finite = |y: &Array| fx::where_(&fx::isfinite(y)?, y, 0.0);
            fx::add(&fx::add(&weighted(&p, 130)?, &weighted(&finite(&hi)?, 131)?)?, &weighted(&finite(&lo)?, 132)?)
        };
        let name = format!("scans axis {axis} reverse {reverse} inclusive {inclusive}");
        check(&name, &f, &[rand(&[5, 4], 80)]);
        // Zeros: cumprod is multilinear, so central differences stay exact around them.
        // Stored [5, 4], so each line of the [4, 5] view holds one, two or no zeros.
        let keep: Vec<f64> = (0..20).map(|i| if [1, 6, 9, 13, 14, 19].contains(&i) { 0.0 } else { 1.0 }).collect();
        let with_zeros = fx::multiply(rand(&[5, 4], 81), Array::from_slice(&keep, &[5, 4]).unwrap()).unwrap();
        let g = |a: &[Array]| weighted(&fx::cumprod(&a[0].t(), Some(axis), reverse, inclusive)?, 133);
        check(&format!("cumprod with zeros, {name}"), &g, &[with_zeros]);
    }
    // The flattened scan of a broadcast input.
    let f = |a: &[Array]| weighted(&fx::cumprod(&fx::broadcast_to(&a[0], &[3, 4])?, None, false, true)?, 134);
    check("cumprod flattened broadcast", &f, &[fx::add(rand(&[4], 83), 1.0).unwrap()]);
}

#[test]
fn scans_match_mlx_at_zeros_and_ties() {
    // Gradients of sum(scan(x) · [1, 2, ...]) as mlx 0.32 computes them: ties of a running
    // extreme send the cotangent to the latest element in scan order; after a zero, cumprod
    // passes gradient only to the first zero.
    let grad_of = |x: &[f64], scan: &dyn Fn(&Array) -> Result<Array>| -> Vec<f64> {
        let n = x.len();
        let f = |a: &[Array]| -> Result<Array> {
            let w = fx::arange(1.0, n as f64 + 1.0, 1.0, Dtype::F64)?;
            let y = scan(&a[0])?;
            fx::sum(&fx::multiply(&fx::where_(&fx::isfinite(&y)?, &y, 0.0)?, &w)?, None, false)
        };
        fx::grad(f, &[Array::from_slice(x, &[n]).unwrap()], &[0]).unwrap()[0].to_vec().unwrap()
    };
    let ties = [1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 0.0];
    let zeros = [2.0, 0.0, 3.0, 0.0, 4.0];
    // (scan, input, reverse, inclusive, gradient)
    type Scan = fn(&Array, Option<isize>, bool, bool) -> Result<Array>;
    type ScanCase<'a> = (Scan, &'a [f64], bool, bool, &'a [f64]);
    let cases: [ScanCase; 12] = [
        (fx::cummax, &ties, false, true, &[1.0, 2.0, 7.0, 0.0, 5.0, 13.0, 0.0]),
        (fx::cummax, &ties, true, true, &[0.0, 0.0, 0.0, 0.0, 15.0, 6.0, 7.0]),
        (fx::cummax, &ties, false, false, &[2.0, 3.0, 9.0, 0.0, 6.0, 7.0, 0.0]),
        (fx::cummax, &ties, true, false, &[0.0, 0.0, 0.0, 0.0, 10.0, 5.0, 6.0]),
        (fx::cummin, &ties, false, true, &[21.0, 0.0, 0.0, 0.0, 0.0, 0.0, 7.0]),
        (fx::cummin, &ties, true, true, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 28.0]),
        (fx::cummin, &ties, false, false, &[27.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        (fx::cummin, &ties, true, false, &[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 21.0]),
        (fx::cumprod, &zeros, false, true, &[1.0, 22.0, 0.0, 0.0, 0.0]),
        (fx::cumprod, &zeros, true, true, &[0.0, 0.0, 0.0, 52.0, 5.0]),
        (fx::cumprod, &zeros, false, false, &[2.0, 30.0, 0.0, 0.0, 0.0]),
        (fx::cumprod, &zeros, true, false, &[0.0, 0.0, 0.0, 36.0, 4.0]),
    ];
    for (i, (scan, x, reverse, inclusive, want)) in cases.iter().enumerate() {
        let got = grad_of(x, &|a| scan(a, Some(0), *reverse, *inclusive));
        assert_eq!(got, *want, "case {i}: reverse {reverse}, inclusive {inclusive}");
    }
}

#[test]
fn as_strided_views() {
    let f = |a: &[Array]| -> Result<Array> {
        let x = a[0].t(); // [3, 4] viewed from [4, 3]
                          // Overlapping sliding windows, a reversed diagonal walk and a repeated element.
        let windows = fx::as_strided(&x, &[3, 4], &[2, 1], 1)?;
        let back = fx::as_strided(&x, &[3], &[-5], 10)?;
        let again = fx::as_strided(&x, &[2, 3], &[0, 4], 2)?;
        fx::add(&fx::add(&weighted(&windows, 140)?, &weighted(&back, 141)?)?, &weighted(&again, 142)?)
    };
    check("as_strided", &f, &[rand(&[4, 3], 90)]);
    let d = |a: &[Array]| weighted(&fx::diagonal(&fx::broadcast_to(&a[0], &[2, 3, 3])?, 1, 1, 2)?, 143);
    check("diagonal of a broadcast", &d, &[rand(&[3, 1], 91)]);
}

#[test]
fn scatter_modes() {
    let idx = Array::from_slice(&[2i32, 0, 2, 3], &[4]).unwrap();
    let along = Array::from_slice(&[1u32, 3, 1, 0, 0, 2], &[2, 3]).unwrap();
    for mode in ["prod", "max", "min"] {
        let f = |a: &[Array]| -> Result<Array> {
            let x = a[0].t(); // [5, 3] viewed from [3, 5]
            let upd = fx::reshape(&a[1], &[4, 1, 3])?;
            let s = match mode {
                "prod" => fx::scatter_prod(&x, std::slice::from_ref(&idx), &upd, &[0])?,
                "max" => fx::scatter_max(&x, std::slice::from_ref(&idx), &upd, &[0])?,
                _ => fx::scatter_min(&x, std::slice::from_ref(&idx), &upd, &[0])?,
            };
            let m = match mode {
                "prod" => ScatterMode::Prod,
                "max" => ScatterMode::Max,
                _ => ScatterMode::Min,
            };
            // Values broadcast along the rows; the second row of indices repeats one.
            let vals = fx::slice(&a[1], &[0, 0], &[1, 3], &[1, 1])?;
            let rows = fx::slice(&a[0], &[0, 0], &[2, 5], &[1, 1])?;
            let pa = fx::scatter_along_axis(&rows, &along, &vals, Some(1), m)?;
            fx::add(&weighted(&s, 150)?, &weighted(&pa, 151)?)
        };
        check(&format!("scatter {mode}"), &f, &[rand(&[3, 5], 92), rand(&[4, 3], 93)]);
    }
    // Zeros among the factors of a product.
    let f = |a: &[Array]| -> Result<Array> {
        let upd = fx::reshape(&a[1], &[4, 1, 3])?;
        weighted(&fx::scatter_prod(&a[0], std::slice::from_ref(&idx), &upd, &[0])?, 152)
    };
    let x = Array::from_slice(&[0.5, 0.0, -1.5, 2.0, 1.0, 0.0, 0.7, -0.3, 1.2, 0.0, 0.9, 1.1, 2.0, 0.4, -0.8], &[5, 3]);
    let u = Array::from_slice(&[0.0, 1.5, 0.3, 0.0, 1.0, 0.6, 1.3, -0.7, 0.0, 0.8, 0.0, 0.0], &[4, 3]);
    check("scatter prod with zeros", &f, &[x.unwrap(), u.unwrap()]);
}

/// Attention as plain ops (scores, causal mask, softmax, weighted values; grouped key/value
/// heads repeated), differentiated by the generic rules: the reference for the fused kernel.
fn attention_composed(q: &Array, k: &Array, v: &Array, scale: f64) -> Result<Array> {
    let group = q.shape()[1] / k.shape()[1];
    let (k, v) = (fx::repeat(k, group, Some(1))?, fx::repeat(v, group, Some(1))?);
    let (l, s) = (q.shape()[2], k.shape()[2]);
    let scores = fx::multiply(&fx::matmul(q, &fx::swapaxes(&k, -1, -2)?)?, scale)?;
    let keep = fx::astype(&fx::tri(l, Some(s), s as isize - l as isize, Dtype::Bool)?, Dtype::Bool)?;
    let p = fx::softmax(&fx::where_(&keep, &scores, f64::NEG_INFINITY)?, Some(&[-1]), false)?;
    fx::matmul(&p, &v)
}

/// The fused attention backward kernel against the composed attention's gradients: several
/// query blocks per key/value head, grouped heads, per-example gradients through vmap, and a
/// second-order gradient (through the composed form of the kernel).
#[test]
fn attention_backward_kernel() {
    let (q, k, v, w) =
        (rand(&[2, 4, 150, 8], 40), rand(&[2, 2, 150, 8], 41), rand(&[2, 2, 150, 8], 42), rand(&[2, 4, 150, 8], 43));
    let scale = 0.25; // exact in f32, which the fused op takes
    let loss = |fused: bool| {
        let w = w.clone();
        move |a: &[Array]| -> Result<Array> {
            let o = if fused {
                fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], scale as f32, fast::SdpaMask::Causal)?
            } else {
                attention_composed(&a[0], &a[1], &a[2], scale)?
            };
            fx::sum(&fx::multiply(&fx::tanh(&o)?, &w)?, None, false)
        }
    };
    let args = [q, k, v];
    let got = fx::grad(loss(true), &args, &[0, 1, 2]).unwrap();
    let want = fx::grad(loss(false), &args, &[0, 1, 2]).unwrap();
    for (name, (g, r)) in ["dq", "dk", "dv"].iter().zip(got.iter().zip(&want)) {
        assert!(fx::allclose(g, r, 1e-9, 1e-10, false).unwrap().item::<bool>().unwrap(), "{name}");
    }
    // Per-example gradients: vmap over a leading batch of 3 equals each example's gradient.
    let xs: Vec<Array> = (0..3).map(|i| rand(&[1, 2, 20, 4], 50 + i)).collect();
    let (kk, vv) = (rand(&[1, 1, 20, 4], 60), rand(&[1, 1, 20, 4], 61));
    let per = |x: &Array, fused: bool| -> Result<Array> {
        let (kk, vv) = (kk.clone(), vv.clone());
        let f = move |a: &[Array]| -> Result<Array> {
            let o = if fused {
                fast::scaled_dot_product_attention(&a[0], &kk, &vv, 0.5, fast::SdpaMask::Causal)?
            } else {
                attention_composed(&a[0], &kk, &vv, 0.5)?
            };
            fx::sum(&fx::square(&o)?, None, false)
        };
        Ok(fx::grad(f, std::slice::from_ref(x), &[0])?.remove(0))
    };
    let stacked = fx::stack(&xs, 0).unwrap();
    let batched =
        fx::vmap_call(&|a: &[Array]| Ok(vec![per(&a[0], true)?]), &[stacked], &[Some(0)], &[Some(0)]).unwrap();
    let each = fx::stack(&xs.iter().map(|x| per(x, false).unwrap()).collect::<Vec<_>>(), 0).unwrap();
    assert!(fx::allclose(&batched[0], &each, 1e-9, 1e-10, false).unwrap().item::<bool>().unwrap(), "vmap(grad)");
    // Second order: the gradient of a function of dq.
    let second = |fused: bool| {
        let first = move |a: &[Array]| -> Result<Array> { fx::sum(&fx::square(&per(&a[0], fused)?)?, None, false) };
        fx::grad(first, std::slice::from_ref(&xs[0]), &[0]).unwrap().remove(0)
    };
    assert!(fx::allclose(&second(true), &second(false), 1e-8, 1e-10, false).unwrap().item::<bool>().unwrap());
}

/// Causal attention with more queries than keys (L = 6, S = 3, grouped heads): query i sees
/// keys j ≤ i + S − L, so rows 0..3 see none and give the mean of v (no gradient into q or
/// k). The fused backward kernel and, at second order, its composed form (the vjp of
/// `AttentionVjp`) against finite differences.
#[test]
fn attention_causal_more_queries_than_keys() {
    let (ct, v) = (rand(&[1, 4, 6, 2], 72), rand(&[1, 2, 3, 2], 73));
    let out = |a: &[Array]| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.4, fast::SdpaMask::Causal);
    let v_mean = fx::repeat(&fx::mean(&v, Some(&[2]), true).unwrap(), 2, Some(1)).unwrap();
    let o = out(&[rand(&[1, 4, 6, 3], 70), rand(&[1, 2, 3, 3], 71), v.clone()]).unwrap();
    let blind = fx::slice(&o, &[0, 0, 0, 0], &[1, 4, 3, 2], &[1, 1, 1, 1]).unwrap();
    let want = fx::broadcast_to(&v_mean, &[1, 4, 3, 2]).unwrap();
    assert!(fx::allclose(&blind, &want, 1e-12, 1e-12, false).unwrap().item::<bool>().unwrap(), "rows seeing no key");
    let loss = |a: &[Array]| -> Result<Array> { fx::sum(&fx::multiply(&fx::sin(&out(a)?)?, &ct)?, None, false) };
    let args = [rand(&[1, 4, 6, 3], 70), rand(&[1, 2, 3, 3], 71), v.clone()];
    check("causal L > S", &loss, &args);
    let dq = fx::grad(loss, &args, &[0]).unwrap().remove(0);
    let rows = fx::slice(&dq, &[0, 0, 0, 0], &[1, 4, 3, 3], &[1, 1, 1, 1]).unwrap();
    assert!(fx::all(&fx::equal(&rows, 0.0).unwrap(), None, false).unwrap().item::<bool>().unwrap(), "dq of blind rows");
    // Second order: a function of the first-order gradients.
    let second = |a: &[Array]| -> Result<Array> {
        let g = fx::grad(loss, a, &[0, 1, 2])?;
        let terms = g.iter().map(|x| fx::sum(&fx::square(x)?, None, false)).collect::<Result<Vec<_>>>()?;
        fx::add(&fx::add(&terms[0], &terms[1])?, &terms[2])
    };
    check("causal L > S, second order", &second, &args);
}
