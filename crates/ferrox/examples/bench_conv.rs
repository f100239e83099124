//! Times conv2d on a typical shape; compare with scripts/bench_conv_mlx.py (same shapes).
//!
//! cargo run --release -p ferrox --example bench_conv

use std::time::Instant;

use ferrox::{self as fx, Dtype};

/// Median wall time (ms) of `iters` evaluations of `f` after two warm-up runs.
fn time_ms(iters: usize, f: impl Fn() -> fx::Result<fx::Array>) -> fx::Result<f64> {
    for _ in 0..2 {
        f()?.eval()?;
    }
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f()?.eval()?;
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[iters / 2])
}

/// Deterministic pseudo-random values in [-1, 1) (an LCG; the values do not matter).
fn data(shape: &[usize], dtype: Dtype, seed: u64) -> fx::Result<fx::Array> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    fx::astype(&fx::Array::from_slice(&v, shape)?, dtype)
}

fn main() -> fx::Result<()> {
    println!("threads: {}", rayon::current_num_threads());
    println!("{:<44} {:>10} {:>10}", "case", "ms", "GFLOP/s");
    // (name, N, H, W, C_in, C_out, K, stride, padding, groups, dtype)
    let cases = [
        ("conv2d N=8 32x32x64->64 3x3 p1", 8, 32, 32, 64, 64, 3, 1, 1, 1, Dtype::F32),
        ("conv2d N=8 32x32x64->64 3x3 p1 bf16", 8, 32, 32, 64, 64, 3, 1, 1, 1, Dtype::Bf16),
        ("conv2d N=8 32x32x64->128 1x1", 8, 32, 32, 64, 128, 1, 1, 0, 1, Dtype::F32),
        ("conv2d N=8 32x32x64 depthwise 3x3 p1", 8, 32, 32, 64, 64, 3, 1, 1, 64, Dtype::F32),
        ("conv2d N=4 64x64x32->64 3x3 s2 p1", 4, 64, 64, 32, 64, 3, 2, 1, 1, Dtype::F32),
    ];
    for (name, n, h, w, cin, cout, k, s, p, g, dtype) in cases {
        let x = data(&[n, h, w, cin], dtype, 1)?;
        let wt = data(&[cout, k, k, cin / g], dtype, 2)?;
        fx::eval(&[&x, &wt])?;
        let y = fx::conv2d(&x, &wt, (s, s), (p, p), (1, 1), g)?;
        let (ho, wo) = (y.shape()[1], y.shape()[2]);
        let flops = 2.0 * (n * ho * wo * cout * k * k * (cin / g)) as f64;
        let ms = time_ms(20, || fx::conv2d(&x, &wt, (s, s), (p, p), (1, 1), g))?;
        println!("{name:<44} {ms:>10.3} {:>10.1}", flops / ms / 1e6);
    }
    Ok(())
}
