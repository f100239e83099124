//! Times the function transforms on the CPU: compiled against uncompiled elementwise chains
//! (exact GELU, tanh GELU, a layer-norm-like expression) and a value_and_grad training step of
//! a 2-layer MLP. scripts/bench_transforms_ref.py times the same cases with mlx (plain and
//! mx.compile).
//!
//! cargo run --release -p ferrox --example bench_transforms
//!
//! Each case is the median of N runs after warm-up; every run builds the graph (or replays
//! the compiled trace) and evaluates it.

use std::time::Instant;

use ferrox::{self as fx, Array, Dtype, Result};

fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[iters / 2]
}

fn gelu(a: &[Array]) -> Result<Vec<Array>> {
    let x = &a[0];
    let t = fx::erf(&fx::multiply(x, std::f32::consts::FRAC_1_SQRT_2)?)?;
    Ok(vec![fx::multiply(&fx::multiply(x, 0.5)?, &fx::add(&t, 1.0)?)?])
}

fn gelu_tanh(a: &[Array]) -> Result<Vec<Array>> {
    let x = &a[0];
    let inner = fx::multiply(&fx::add(x, &fx::multiply(&fx::power(x, 3.0)?, 0.044715)?)?, 0.797_884_6)?;
    Ok(vec![fx::multiply(&fx::multiply(x, 0.5)?, &fx::add(&fx::tanh(&inner)?, 1.0)?)?])
}

fn layer_norm_like(a: &[Array]) -> Result<Vec<Array>> {
    let x = &a[0];
    let mu = fx::mean(x, Some(&[-1]), true)?;
    let c = fx::subtract(x, &mu)?;
    let var = fx::mean(&fx::square(&c)?, Some(&[-1]), true)?;
    let y = fx::multiply(&c, &fx::rsqrt(&fx::add(&var, 1e-5)?)?)?;
    Ok(vec![fx::add(&fx::multiply(&y, &a[1])?, &a[2])?])
}

fn row(name: &str, shape: &str, plain: f64, compiled: f64) {
    println!("| {name} | {shape} | {plain:.2} | {compiled:.2} | {:.2}x |", plain / compiled);
}

fn main() -> Result<()> {
    println!("ferrox, {} threads", rayon::current_num_threads());
    println!("| case | shape | plain ms | compiled ms | speed-up |");
    println!("|---|---|---:|---:|---:|");
    let key = fx::random::key(0);
    let n = 1 << 24;
    let x = fx::random::normal(&[n], Dtype::F32, 0.0, 1.0, Some(&key))?;
    x.eval()?;
    type Chain = fn(&[Array]) -> Result<Vec<Array>>;
    for (name, f) in [("gelu (erf)", gelu as Chain), ("gelu (tanh)", gelu_tanh as Chain)] {
        let args = [x.clone()];
        let plain = median_ms(9, || f(&args).unwrap()[0].eval().unwrap());
        let c = fx::compile(f);
        let compiled = median_ms(9, || c.call(&args).unwrap()[0].eval().unwrap());
        row(name, "16M", plain, compiled);
    }
    let xs = fx::reshape(&x, &[4096, 4096])?;
    let w = fx::random::normal(&[4096], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(1)))?;
    let b = fx::random::normal(&[4096], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(2)))?;
    fx::eval(&[&xs, &w, &b])?;
    let args = [xs, w, b];
    let plain = median_ms(9, || layer_norm_like(&args).unwrap()[0].eval().unwrap());
    let c = fx::compile(layer_norm_like);
    let compiled = median_ms(9, || c.call(&args).unwrap()[0].eval().unwrap());
    row("layer-norm-like", "4096x4096", plain, compiled);

    // value_and_grad of a 2-layer MLP with a cross-entropy loss, plus the SGD update.
    let (batch, d_in, hidden, classes) = (256, 1024, 1024, 10);
    let inputs = fx::random::normal(&[batch, d_in], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(3)))?;
    let labels = fx::random::randint(0, classes as i64, &[batch], Dtype::U32, Some(&fx::random::key(4)))?;
    let mut params = vec![
        fx::random::normal(&[d_in, hidden], Dtype::F32, 0.0, 0.03, Some(&fx::random::key(5)))?,
        fx::zeros(&[hidden], Dtype::F32)?,
        fx::random::normal(&[hidden, classes], Dtype::F32, 0.0, 0.03, Some(&fx::random::key(6)))?,
        fx::zeros(&[classes], Dtype::F32)?,
    ];
    fx::eval(&[&inputs, &labels])?;
    let loss = |p: &[Array]| -> Result<Array> {
        let h = fx::maximum(&fx::add(&fx::matmul(&inputs, &p[0])?, &p[1])?, 0.0)?;
        let logits = fx::add(&fx::matmul(&h, &p[2])?, &p[3])?;
        let lse = fx::logsumexp(&logits, Some(&[-1]), false)?;
        let picked = fx::take_along_axis(&logits, &fx::expand_dims(&labels, &[-1])?, Some(-1))?;
        fx::mean(&fx::subtract(&lse, &fx::squeeze(&picked, Some(&[-1]))?)?, None, false)
    };
    let ms = median_ms(9, || {
        let (l, g) = fx::value_and_grad(loss, &params, &[0, 1, 2, 3]).unwrap();
        params = params.iter().zip(&g).map(|(p, g)| fx::subtract(p, fx::multiply(g, 0.1).unwrap()).unwrap()).collect();
        let mut outs: Vec<&Array> = params.iter().collect();
        outs.push(&l);
        fx::eval(&outs).unwrap();
    });
    println!();
    println!("| case | shape | ms |");
    println!("|---|---|---:|");
    println!("| mlp value_and_grad + sgd step | batch {batch}, {d_in}-{hidden}-{classes} | {ms:.2} |");

    // The backward pass of the fused norms (the input gradient is one fused kernel): the vjp
    // of rms_norm / layer_norm for a given cotangent, every gradient evaluated.
    let (x, w, b) = (&args[0], &args[1], &args[2]);
    let cot = fx::random::normal(&[4096, 4096], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(7)))?;
    cot.eval()?;
    let primals = [x.clone(), w.clone(), b.clone()];
    type Norm = fn(&[Array]) -> Result<Vec<Array>>;
    let rms: Norm = |a| Ok(vec![fx::fast::rms_norm(&a[0], Some(&a[1]), 1e-5)?]);
    let ln: Norm = |a| Ok(vec![fx::fast::layer_norm(&a[0], Some(&a[1]), Some(&a[2]), 1e-5)?]);
    for (name, f, n) in [("rms_norm vjp (x, w)", rms, 2), ("layer_norm vjp (x, w, b)", ln, 3)] {
        let ms = median_ms(9, || {
            let (_, g) = fx::vjp(f, &primals[..n], std::slice::from_ref(&cot)).unwrap();
            fx::eval(&g.iter().collect::<Vec<_>>()).unwrap();
        });
        println!("| {name} | 4096x4096 | {ms:.2} |");
    }

    // The backward pass of causal attention (one fused kernel): q, k, v gradients for a
    // given cotangent, grouped-query heads.
    let (hq, hkv, l, d) = (8, 2, 512, 64);
    let qkv: Vec<Array> = [(hq, 10), (hkv, 11), (hkv, 12)]
        .into_iter()
        .map(|(h, seed)| fx::random::normal(&[1, h, l, d], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(seed))))
        .collect::<Result<_>>()?;
    let cot = fx::random::normal(&[1, hq, l, d], Dtype::F32, 0.0, 1.0, Some(&fx::random::key(13)))?;
    fx::eval(&qkv.iter().chain([&cot]).collect::<Vec<_>>())?;
    let sdpa = |a: &[Array]| {
        Ok(vec![fx::fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.125, fx::fast::SdpaMask::Causal)?])
    };
    let ms = median_ms(9, || {
        let (_, g) = fx::vjp(sdpa, &qkv, std::slice::from_ref(&cot)).unwrap();
        fx::eval(&g.iter().collect::<Vec<_>>()).unwrap();
    });
    println!("| sdpa vjp (q, k, v), causal | 1x{hq}x{l}x{d}, {hkv} kv heads | {ms:.2} |");
    Ok(())
}
