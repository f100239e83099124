//! `vmap(f)(x)` against stacking `f` over the examples, for every primitive's batching rule,
//! with batch axes in different places, unbatched (shared) inputs, nesting with itself and
//! with `grad`.

use ferrox::{self as fx, fast, fast::SdpaMask, Array, Dtype, Result};

fn rand(shape: &[usize], seed: u64) -> Array {
    fx::random::normal(shape, Dtype::F64, 0.0, 1.0, Some(&fx::random::key(seed))).unwrap()
}

fn ints(shape: &[usize], hi: i64, seed: u64) -> Array {
    fx::random::randint(0, hi, shape, Dtype::I32, Some(&fx::random::key(seed))).unwrap()
}

type F = dyn Fn(&[Array]) -> Result<Vec<Array>>;

/// Example `i` of `x` along `axis`.
fn example(x: &Array, axis: usize, i: usize) -> Array {
    let s = fx::slice_axis(x, axis as isize, i as isize, i as isize + 1).unwrap();
    fx::squeeze(&s, Some(&[axis as isize])).unwrap()
}

/// Asserts `vmap(f, in_axes)` equals `f` applied per example and stacked on axis 0.
fn check(name: &str, f: &F, inputs: &[Array], in_axes: &[Option<isize>]) {
    let got = fx::vmap_call(f, inputs, in_axes, &[Some(0)]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let axes: Vec<Option<usize>> = (0..inputs.len())
        .map(|i| {
            let ax = if in_axes.len() == 1 { in_axes[0] } else { in_axes[i] };
            ax.map(|a| if a < 0 { (a + inputs[i].ndim() as isize) as usize } else { a as usize })
        })
        .collect();
    let b = inputs.iter().zip(&axes).find_map(|(x, ax)| ax.map(|a| x.shape()[a])).unwrap();
    let per: Vec<Vec<Array>> = (0..b)
        .map(|i| {
            let args: Vec<Array> = inputs
                .iter()
                .zip(&axes)
                .map(|(x, ax)| match ax {
                    Some(a) => example(x, *a, i),
                    None => x.clone(),
                })
                .collect();
            f(&args).unwrap()
        })
        .collect();
    assert_eq!(got.len(), per[0].len(), "{name}: number of outputs");
    for (j, g) in got.iter().enumerate() {
        let want = fx::stack(&per.iter().map(|o| o[j].clone()).collect::<Vec<_>>(), 0).unwrap();
        assert_eq!(g.shape(), want.shape(), "{name}: output {j} shape");
        assert_eq!(g.dtype(), want.dtype(), "{name}: output {j} dtype");
        let a: Vec<f64> = g.to_vec().unwrap();
        let w: Vec<f64> = want.to_vec().unwrap();
        for (k, (x, y)) in a.iter().zip(&w).enumerate() {
            let ok = (x - y).abs() <= 1e-9 * (1.0 + y.abs()) || (x.is_nan() && y.is_nan());
            assert!(ok, "{name}: output {j}[{k}] = {x}, per-example {y}");
        }
    }
}

fn one(a: Result<Array>) -> Result<Vec<Array>> {
    Ok(vec![a?])
}

#[test]
fn elementwise_with_broadcasting_and_shared_inputs() {
    let x = rand(&[4, 3], 1);
    let y = rand(&[3], 2);
    let f = |a: &[Array]| one(fx::add(&fx::multiply(&fx::sin(&a[0])?, &a[1])?, &fx::exp(&a[1])?));
    check("binary shared", &f, &[x.clone(), y.clone()], &[Some(0), None]);
    check("binary both", &f, &[x.clone(), rand(&[4, 3], 3)], &[Some(0)]);
    check("binary axis 1", &f, &[rand(&[3, 5], 4), rand(&[5, 3], 5)], &[Some(1), Some(0)]);
    check("negative axis", &f, &[rand(&[3, 5], 4), y.clone()], &[Some(-1), None]);
    let g = |a: &[Array]| {
        let c = fx::greater(&a[0], 0.0)?;
        one(fx::where_(&c, &a[0], &fx::astype(&a[1], Dtype::F32)?))
    };
    check("where mixed", &g, &[rand(&[2, 4, 3], 6), y.clone()], &[Some(1), None]);
    let u = |a: &[Array]| {
        Ok(vec![
            fx::tanh(&a[0])?,
            fx::astype(&fx::floor(&fx::multiply(&a[0], 3.0)?)?, Dtype::I32)?,
            fx::isnan(&fx::log(&a[0])?)?,
            fx::view(&fx::astype(&a[0], Dtype::F32)?, Dtype::U32)?,
            fx::stop_gradient(&fx::erf(&a[0])?)?,
            fx::maximum(&a[0], 0.25)?,
        ])
    };
    check("unary family", &u, &[rand(&[3, 2, 5], 7)], &[Some(2)]);
}

#[test]
fn shape_ops() {
    let f = |a: &[Array]| {
        let x = &a[0];
        Ok(vec![
            fx::transpose(x, &[2, 0, 1])?,
            fx::reshape(x, &[-1])?,
            fx::reshape(&x.t(), &[3, 8])?,
            fx::slice(x, &[1, 0, 3], &[2, 3, -1], &[1, 2, -2])?,
            fx::broadcast_to(&fx::slice_axis(x, 1, 0, 1)?, &[5, 2, 3, 4])?,
            fx::concatenate(&[x.clone(), fx::negative(x)?], 1)?,
            fx::stack(&[x.clone(), a[1].clone()], 0)?,
            fx::as_strided(x, &[3, 2], &[4, 1], 2)?,
            fx::expand_dims(x, &[0, 2])?,
            fx::pad(x, &[(1, 0), (0, 2), (1, 1)], fx::PadMode::Constant, 0.5)?,
            fx::tile(x, &[1, 2, 1])?,
            fx::repeat(x, 2, Some(1))?,
            fx::slice_update(x, &a[1], &[0, 0, 0], &[2, 3, 4], &[1, 1, 1])?,
        ])
    };
    check("shape ops", &f, &[rand(&[2, 3, 4, 6], 1), rand(&[2, 3, 4, 6], 2)], &[Some(3), Some(3)]);
    check("shape ops shared", &f, &[rand(&[5, 2, 3, 4], 1), rand(&[2, 3, 4], 2)], &[Some(0), None]);
    let upd = |a: &[Array]| one(fx::slice_update(&a[0], &a[1], &[1, 0], &[3, 4], &[1, 2]));
    check("slice_update shared target", &upd, &[rand(&[4, 4], 3), rand(&[3, 2, 2], 4)], &[None, Some(0)]);
}

#[test]
fn reductions_scans_and_sorts() {
    let f = |a: &[Array]| {
        let x = &a[0];
        Ok(vec![
            fx::sum(x, Some(&[1]), false)?,
            fx::mean(x, None, false)?,
            fx::max(x, Some(&[0, 2]), true)?,
            fx::prod(x, Some(&[-1]), false)?,
            fx::all(&fx::greater(x, -1.0)?, Some(&[1]), false)?,
            fx::argmax(x, Some(1), false)?,
            fx::argmin(x, None, false)?,
            fx::var(x, Some(&[0]), false, 1)?,
            fx::logsumexp(x, Some(&[2]), false)?,
            fx::softmax(x, Some(&[-1]), true)?,
            fx::cumsum(x, Some(1), true, false)?,
            fx::cumprod(x, Some(2), false, true)?,
            fx::cummax(x, Some(0), false, true)?,
            fx::sort(x, Some(1))?,
            fx::argsort(x, Some(-1))?,
            fx::partition(x, 1, Some(2))?,
            fx::topk(x, 2, Some(1))?,
        ])
    };
    check("reductions", &f, &[rand(&[3, 4, 5, 2], 1)], &[Some(3)]);
    check("reductions axis 0", &f, &[rand(&[2, 3, 4, 5], 2)], &[Some(0)]);
}

#[test]
fn matmul_family() {
    let mm = |a: &[Array]| one(fx::matmul(&a[0], &a[1]));
    check("matmul both", &mm, &[rand(&[3, 4, 5], 1), rand(&[3, 5, 2], 2)], &[Some(0)]);
    check("matmul left", &mm, &[rand(&[4, 3, 5], 1), rand(&[5, 2], 2)], &[Some(1), None]);
    check("matmul right", &mm, &[rand(&[4, 5], 1), rand(&[5, 2, 3], 2)], &[None, Some(2)]);
    check("matmul batched operands", &mm, &[rand(&[2, 6, 4, 5], 1), rand(&[6, 5, 3], 2)], &[Some(0), None]);
    check("matvec", &mm, &[rand(&[4, 5], 1), rand(&[3, 5], 2)], &[None, Some(0)]);
    check("vecvec", &mm, &[rand(&[3, 5], 1), rand(&[5, 3], 2)], &[Some(0), Some(1)]);
    let addmm = |a: &[Array]| one(fx::addmm(&a[2], &a[0], &a[1], 0.5, 2.0));
    check(
        "addmm c batched",
        &addmm,
        &[rand(&[4, 5], 1), rand(&[5, 2], 2), rand(&[3, 4, 2], 3)],
        &[None, None, Some(0)],
    );
    check("addmm all", &addmm, &[rand(&[3, 4, 5], 1), rand(&[5, 2], 2), rand(&[2], 3)], &[Some(0), None, None]);
    let es = |a: &[Array]| one(fx::einsum("ij,jk->ik", &[a[0].clone(), a[1].clone()]));
    check("einsum", &es, &[rand(&[3, 4, 5], 1), rand(&[5, 2], 2)], &[Some(0), None]);
}

#[test]
fn indexing() {
    let take = |a: &[Array]| one(fx::take(&a[0], &a[1], Some(1)));
    check("take data batched", &take, &[rand(&[3, 4, 6], 1), ints(&[2, 2], 6, 2)], &[Some(0), None]);
    check("take index batched", &take, &[rand(&[4, 6], 1), ints(&[3, 5], 6, 2)], &[None, Some(0)]);
    check("take both", &take, &[rand(&[4, 6, 3], 1), ints(&[3, 5], 6, 2)], &[Some(2), Some(0)]);
    let gather = |a: &[Array]| one(fx::gather(&a[0], &[a[1].clone(), a[2].clone()], &[0, 2], &[1, 2, 1]));
    check(
        "gather two index arrays",
        &gather,
        &[rand(&[3, 4, 5, 6], 1), ints(&[3, 2, 1], 4, 2), ints(&[3], 6, 3)],
        &[Some(0), Some(0), None],
    );
    let scat = |a: &[Array]| {
        let upd = fx::reshape(&a[2], &[2, 1, 3])?;
        Ok(vec![
            fx::scatter_add(&a[0], std::slice::from_ref(&a[1]), &upd, &[0])?,
            fx::scatter(&a[0], std::slice::from_ref(&a[1]), &upd, &[0])?,
            fx::scatter_max(&a[0], std::slice::from_ref(&a[1]), &upd, &[0])?,
        ])
    };
    check("scatter all batched", &scat, &[rand(&[3, 4, 3], 1), ints(&[3, 2], 4, 2), rand(&[3, 2, 3], 3)], &[Some(0)]);
    check(
        "scatter shared target",
        &scat,
        &[rand(&[4, 3], 1), ints(&[2, 3], 4, 2), rand(&[2, 3], 3)],
        &[None, Some(1), None],
    );
    let tal = |a: &[Array]| {
        Ok(vec![
            fx::take_along_axis(&a[0], &a[1], Some(1))?,
            fx::put_along_axis(&a[0], &a[1], &fx::negative(&fx::take_along_axis(&a[0], &a[1], Some(1))?)?, Some(1))?,
            fx::scatter_along_axis(
                &a[0],
                &a[1],
                &fx::ones(&[1], Dtype::F64)?,
                Some(1),
                fx::primitives::ScatterMode::Add,
            )?,
        ])
    };
    check("along axis both", &tal, &[rand(&[3, 4, 5], 1), ints(&[3, 4, 2], 5, 2)], &[Some(0)]);
    check("along axis shared data", &tal, &[rand(&[4, 5], 1), ints(&[4, 2, 3], 5, 2)], &[None, Some(2)]);
}

#[test]
fn fast_ops() {
    let norms = |a: &[Array]| {
        Ok(vec![
            fast::rms_norm(&a[0], Some(&a[1]), 1e-5)?,
            fast::layer_norm(&a[0], Some(&a[1]), Some(&a[2]), 1e-5)?,
            fast::layer_norm(&a[0], None, None, 1e-5)?,
        ])
    };
    check("norms shared weights", &norms, &[rand(&[3, 4, 8], 1), rand(&[8], 2), rand(&[8], 3)], &[Some(0), None, None]);
    check(
        "norms batched weights",
        &norms,
        &[rand(&[3, 4, 8], 1), rand(&[3, 8], 2), rand(&[8, 3], 3)],
        &[Some(0), Some(0), Some(1)],
    );
    let rope = |a: &[Array]| one(fast::rope(&a[0], 8, false, Some(10000.0), 1.0, 3, None));
    check("rope", &rope, &[rand(&[2, 3, 5, 8], 1)], &[Some(1)]);
    let rope_t = |a: &[Array]| one(fast::rope(&a[0], 4, true, None, 0.5, 0, Some(&a[1])));
    check(
        "rope freqs",
        &rope_t,
        &[rand(&[5, 2, 8], 1), fx::add(fx::abs(&rand(&[2], 2)).unwrap(), 1.0).unwrap()],
        &[Some(1), None],
    );
    let sdpa = |a: &[Array]| {
        Ok(vec![
            fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.3, SdpaMask::Causal)?,
            fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.3, SdpaMask::Array(a[3].clone()))?,
        ])
    };
    let (q, k, v, m) = (rand(&[3, 1, 4, 2, 8], 1), rand(&[3, 1, 2, 5, 8], 2), rand(&[1, 2, 5, 6], 3), rand(&[2, 5], 4));
    check("sdpa", &sdpa, &[q.clone(), k, v.clone(), m], &[Some(0), Some(0), None, None]);
    check(
        "sdpa mask batched",
        &sdpa,
        &[q, rand(&[1, 2, 5, 8], 5), v, rand(&[3, 2, 5], 6)],
        &[Some(0), None, None, Some(0)],
    );
}

#[test]
fn convolution() {
    let c1 = |a: &[Array]| one(fx::conv1d(&a[0], &a[1], 2, 1, 1, 2));
    check("conv1d x batched", &c1, &[rand(&[3, 2, 9, 4], 1), rand(&[6, 3, 2], 2)], &[Some(0), None]);
    check("conv1d w batched", &c1, &[rand(&[2, 9, 4], 1), rand(&[6, 3, 2, 3], 2)], &[None, Some(3)]);
    check("conv1d both", &c1, &[rand(&[2, 9, 4, 3], 1), rand(&[3, 6, 3, 2], 2)], &[Some(3), Some(0)]);
    let c2 = |a: &[Array]| one(fx::conv2d(&a[0], &a[1], (1, 2), (1, 0), (1, 1), 1));
    check("conv2d both", &c2, &[rand(&[2, 1, 5, 6, 3], 1), rand(&[2, 4, 3, 2, 3], 2)], &[Some(0)]);
    let ct = |a: &[Array]| one(fx::conv_transpose1d(&a[0], &a[1], 2, 1, 1, 0, 1));
    check("conv_transpose1d", &ct, &[rand(&[2, 1, 5, 3], 1), rand(&[2, 4, 3, 3], 2)], &[Some(0)]);
}

#[test]
fn random_with_batched_keys_matches_each_key() {
    let keys = fx::random::split(&fx::random::key(7), 4).unwrap();
    let f = |a: &[Array]| {
        Ok(vec![
            fx::random::normal(&[3, 2], Dtype::F32, 0.0, 1.0, Some(&a[0]))?,
            fx::random::bits(&[5], 4, Some(&a[0]))?,
            fx::random::split(&a[0], 3)?,
        ])
    };
    check("random keys", &f, &[keys], &[Some(0)]);
}

#[test]
fn nesting_and_out_axes() {
    // vmap of vmap: an outer product of rows.
    let inner = |a: &[Array]| one(fx::multiply(&a[0], &a[1]));
    let row = fx::vmap(inner, &[None, Some(0)], &[Some(0)]);
    let outer = fx::vmap(row, &[Some(0), None], &[Some(1)]);
    let x = rand(&[3], 1);
    let y = rand(&[4], 2);
    let got = outer(&[x.clone(), y.clone()]).unwrap().remove(0);
    let want = fx::transpose(&fx::outer(&x, &y).unwrap(), &[1, 0]).unwrap();
    assert_eq!(got.shape(), &[4, 3]);
    assert_eq!(got.to_vec::<f64>().unwrap(), want.to_vec::<f64>().unwrap());
    // An output that does not depend on the batch is broadcast; out_axes None keeps it as is.
    let f = |a: &[Array]| Ok(vec![fx::sum(&a[0], None, false)?, fx::multiply(&a[1], 2.0)?]);
    let outs = fx::vmap_call(&f, &[rand(&[3, 2], 3), y.clone()], &[Some(0), None], &[Some(0), None]).unwrap();
    assert_eq!(outs[0].shape(), &[3]);
    assert_eq!(outs[1].shape(), &[4]);
    let outs = fx::vmap_call(&f, &[rand(&[3, 2], 3), y], &[Some(0), None], &[Some(0), Some(-1)]).unwrap();
    assert_eq!(outs[1].shape(), &[4, 3]);
}

#[test]
fn per_example_gradients_and_grad_of_vmap() {
    let w = rand(&[4], 1);
    let xs = rand(&[5, 4], 2);
    let loss = |a: &[Array]| fx::sum(&fx::tanh(&fx::multiply(&a[0], &a[1])?)?, None, false);
    // vmap(grad): per-example gradients with respect to the shared weight.
    let per_example = |a: &[Array]| fx::grad(loss, a, &[0]);
    let got = fx::vmap_call(&per_example, &[w.clone(), xs.clone()], &[None, Some(0)], &[Some(0)]).unwrap().remove(0);
    assert_eq!(got.shape(), &[5, 4]);
    for i in 0..5 {
        let g = fx::grad(loss, &[w.clone(), example(&xs, 0, i)], &[0]).unwrap().remove(0);
        let row = example(&got, 0, i);
        assert!(fx::allclose(&row, &g, 1e-12, 1e-12, false).unwrap().item::<bool>().unwrap(), "example {i}");
    }
    // grad(vmap): the gradient of the summed batch loss is the sum of per-example gradients.
    let batched = |a: &[Array]| {
        let per = fx::vmap_call(&|b: &[Array]| Ok(vec![loss(b)?]), a, &[None, Some(0)], &[Some(0)])?;
        fx::sum(&per[0], None, false)
    };
    let g = fx::grad(batched, &[w, xs], &[0]).unwrap().remove(0);
    let want = fx::sum(&got, Some(&[0]), false).unwrap();
    assert!(fx::allclose(&g, &want, 1e-12, 1e-12, false).unwrap().item::<bool>().unwrap());
}

#[test]
fn bad_arguments_are_errors() {
    let f = |a: &[Array]| one(fx::add(&a[0], &a[1]));
    let e = fx::vmap_call(&f, &[rand(&[3, 2], 1), rand(&[4, 2], 2)], &[Some(0)], &[Some(0)]).unwrap_err();
    assert!(e.to_string().contains("examples"), "{e}");
    let e = fx::vmap_call(&f, &[rand(&[3, 2], 1), rand(&[3, 2], 2)], &[None], &[Some(0)]).unwrap_err();
    assert!(e.to_string().contains("batch axis"), "{e}");
    let e = fx::vmap_call(&f, &[rand(&[3, 2], 1), rand(&[3, 2], 2)], &[Some(0)], &[None]).unwrap_err();
    assert!(e.to_string().contains("None"), "{e}");
    let e = fx::vmap_call(&f, &[rand(&[3, 2], 1), rand(&[3, 2], 2)], &[Some(0), Some(0), Some(0)], &[Some(0)]);
    assert!(e.is_err());
}
