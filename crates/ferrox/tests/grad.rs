//! Reverse-mode gradients against central finite differences in float64, higher order, and
//! forward mode against reverse mode.

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
