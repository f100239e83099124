//! Memory accounting and limits, training-loop memory hygiene and checkpointing. The counters
//! are process-wide, so this binary holds one test and nothing else allocates while it runs.

use ferrox::{self as fx, Array, Dtype, Error, Result};

#[test]
fn memory_accounting_and_limits() {
    fx::clear_cache();
    let base = fx::active_memory();
    let a = fx::zeros(&[1024, 1024], Dtype::F32).unwrap();
    a.eval().unwrap();
    assert!(fx::active_memory() >= base + (4 << 20));
    assert!(fx::peak_memory() >= fx::active_memory());
    drop(a);
    assert!(fx::cache_memory() >= 4 << 20, "freed buffer parked in the cache");
    fx::clear_cache();
    assert_eq!(fx::cache_memory(), 0);

    // A limit is a clear error, not an abort.
    let old = fx::set_memory_limit(fx::active_memory() + (1 << 20));
    let big = fx::zeros(&[4096, 4096], Dtype::F32).unwrap();
    let err = big.eval().unwrap_err();
    assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
    fx::set_memory_limit(old);
    assert!(big.eval().is_ok());
    drop(big);

    // A loop of evaluated steps holds constant memory: graphs are detached.
    let mut x = fx::zeros(&[256, 256], Dtype::F32).unwrap();
    x.eval().unwrap();
    let steady = fx::active_memory();
    for _ in 0..2000 {
        x = fx::add(fx::multiply(&x, 0.5).unwrap(), 1.0).unwrap();
        x.eval().unwrap();
    }
    assert!(fx::active_memory() <= steady + (256 * 256 * 4), "memory grew across steps");
    assert!((x.to_vec::<f32>().unwrap()[0] - 2.0).abs() < 1e-6);

    fx::set_cache_limit(0);
    assert_eq!(fx::cache_memory(), 0);
    fx::set_cache_limit(usize::MAX);

    training_loop_holds_constant_memory();
    checkpoint_lowers_peak_memory();
    compiled_norm_never_materializes_its_intermediates();
}

/// 10 000 steps of value_and_grad of a small MLP plus an SGD update: evaluated graphs are
/// detached, so active memory does not grow.
fn training_loop_holds_constant_memory() {
    let key = fx::random::key(0);
    let keys = fx::random::split(&key, 3).unwrap();
    let row = |i: isize| fx::squeeze(&fx::slice_axis(&keys, 0, i, i + 1).unwrap(), Some(&[0])).unwrap();
    let x = fx::random::normal(&[8, 16], Dtype::F32, 0.0, 1.0, Some(&row(0))).unwrap();
    let mut params = vec![
        fx::random::normal(&[16, 32], Dtype::F32, 0.0, 0.2, Some(&row(1))).unwrap(),
        fx::zeros(&[32], Dtype::F32).unwrap(),
        fx::random::normal(&[32, 1], Dtype::F32, 0.0, 0.2, Some(&row(2))).unwrap(),
    ];
    let target = fx::ones(&[8, 1], Dtype::F32).unwrap();
    let loss = |p: &[Array]| -> Result<Array> {
        let h = fx::maximum(&fx::add(&fx::matmul(&x, &p[0])?, &p[1])?, 0.0)?;
        let y = fx::matmul(&h, &p[2])?;
        fx::mean(&fx::square(&fx::subtract(&y, &target)?)?, None, false)
    };
    let mut steady = 0;
    let mut first_loss = 0.0;
    let mut last_loss = 0.0;
    for step in 0..10_000 {
        let (l, grads) = fx::value_and_grad(loss, &params, &[0, 1, 2]).unwrap();
        params =
            params.iter().zip(&grads).map(|(p, g)| fx::subtract(p, fx::multiply(g, 0.01).unwrap()).unwrap()).collect();
        let mut outs: Vec<&Array> = params.iter().collect();
        outs.push(&l);
        fx::eval(&outs).unwrap();
        if step == 0 {
            first_loss = l.item::<f32>().unwrap();
        }
        if step == 100 {
            steady = fx::active_memory();
        }
        last_loss = l.item::<f32>().unwrap();
    }
    assert!(fx::active_memory() <= steady, "active memory grew from {steady} to {}", fx::active_memory());
    assert!(last_loss < first_loss * 0.1, "training made progress: {first_loss} -> {last_loss}");
}

/// Reverse mode through checkpointed blocks keeps less alive at its peak than through plain
/// ones, and gives the same gradients.
fn checkpoint_lowers_peak_memory() {
    let n = 256;
    let w = fx::multiply(fx::random::normal(&[n, n], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(1))).unwrap(), 0.05)
        .unwrap();
    let x = fx::random::normal(&[n, n], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(2))).unwrap();
    fx::eval(&[&w, &x]).unwrap();
    let block = |a: &[Array]| -> Result<Vec<Array>> {
        let mut h = a[0].clone();
        for _ in 0..4 {
            h = fx::add(&fx::tanh(&fx::matmul(&h, &a[1])?)?, &fx::multiply(&h, 0.5)?)?;
        }
        Ok(vec![h])
    };
    let checkpointed = fx::checkpoint(block);
    let run = |use_checkpoint: bool| -> (usize, Vec<f32>) {
        fx::clear_cache();
        fx::reset_peak_memory();
        let base = fx::active_memory();
        let loss = |a: &[Array]| -> Result<Array> {
            let mut h = a[0].clone();
            for _ in 0..6 {
                let args = [h, a[1].clone()];
                h = if use_checkpoint { checkpointed(&args)?.remove(0) } else { block(&args)?.remove(0) };
            }
            fx::sum(&fx::square(&h)?, None, false)
        };
        let g = fx::grad(loss, &[x.clone(), w.clone()], &[1]).unwrap().remove(0);
        g.eval().unwrap();
        (fx::peak_memory() - base, g.to_vec().unwrap())
    };
    let (plain_peak, plain_grad) = run(false);
    let (ckpt_peak, ckpt_grad) = run(true);
    for (a, b) in plain_grad.iter().zip(&ckpt_grad) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "checkpointed gradient {a} vs {b}");
    }
    assert!(ckpt_peak * 10 < plain_peak * 7, "peak with checkpoints {ckpt_peak} vs without {plain_peak}");
}

/// A compiled layer-norm-like expression fuses its elementwise steps into the reductions that
/// read them and recomputes the cheap centered values instead of storing them: at its peak it
/// holds the input and the output, where the plain expression holds several full-size
/// intermediates.
fn compiled_norm_never_materializes_its_intermediates() {
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        let x = &a[0];
        let mu = fx::mean(x, Some(&[-1]), true)?;
        let c = fx::subtract(x, &mu)?;
        let var = fx::mean(&fx::square(&c)?, Some(&[-1]), true)?;
        Ok(vec![fx::multiply(&c, &fx::rsqrt(&fx::add(&var, 1e-5)?)?)?])
    };
    let x = fx::random::normal(&[512, 1024], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(3))).unwrap();
    x.eval().unwrap();
    let full = 512 * 1024 * 4;
    let compiled = fx::compile(f);
    compiled.call(std::slice::from_ref(&x)).unwrap()[0].eval().unwrap(); // trace outside the measurement
    let peak = |run: &dyn Fn() -> Array| -> (usize, Vec<f32>) {
        fx::clear_cache();
        fx::reset_peak_memory();
        let base = fx::active_memory();
        let y = run();
        y.eval().unwrap();
        (fx::peak_memory() - base, y.to_vec().unwrap())
    };
    let (plain_peak, want) = peak(&|| f(std::slice::from_ref(&x)).unwrap().remove(0));
    let (fused_peak, got) = peak(&|| compiled.call(std::slice::from_ref(&x)).unwrap().remove(0));
    assert_eq!(got, want, "compiled values differ from the plain ones");
    assert!(plain_peak >= 2 * full, "plain peak {plain_peak}");
    assert!(fused_peak < full + full / 4, "fused peak {fused_peak}: an intermediate was materialized");
}
