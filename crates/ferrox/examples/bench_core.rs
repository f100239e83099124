//! Times the core array ops on the CPU: matmul, elementwise, reductions, the fused `fast` ops,
//! and a memory-bandwidth probe. scripts/bench_core_ref.py runs the same cases with NumPy and
//! mlx and prints the same table; scripts/bench_core_compare.py runs both and merges them.
//!
//! cargo run --release -p ferrox --example bench_core [-- FILTER]
//!
//! Each case is timed as the median of N runs after warm-up; every run builds the lazy graph
//! and evaluates it. Rates count the bytes each op must read and write once (GB/s, 1e9) or
//! its flops (GFLOP/s). FILTER keeps the cases whose name contains it.

use std::time::Instant;

use ferrox::{self as fx, fast::SdpaMask, Array, Dtype};
use rayon::prelude::*;

/// Median wall time (ms) of `iters` runs of `f` after `warm` warm-up runs.
fn median_ms(warm: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f();
        t.push(start.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    t[iters / 2]
}

/// Deterministic pseudo-random values in [-1, 1) (an LCG; the values do not matter).
fn data(shape: &[usize], dtype: Dtype, seed: u64) -> fx::Result<Array> {
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let a = fx::astype(&Array::from_slice(&v, shape)?, dtype)?;
    a.eval()?;
    Ok(a)
}

/// The table's rows, filtered by name.
struct Table {
    filter: String,
}

impl Table {
    /// Prints the header.
    fn new(filter: String) -> Table {
        println!("| op | shape | dtype | ms | rate | unit |");
        println!("|---|---|---|---:|---:|---|");
        Table { filter }
    }

    /// Whether the case `op` is selected.
    fn wants(&self, op: &str) -> bool {
        self.filter.is_empty() || op.contains(&self.filter)
    }

    /// Times `f` (iters runs) and prints a row; `amount` is bytes (unit GB/s) or flops (GFLOP/s).
    /// Returns the rate (`None` when the case is filtered out).
    #[allow(clippy::too_many_arguments)]
    fn case(
        &self,
        op: &str,
        shape: &str,
        dtype: &str,
        iters: usize,
        amount: f64,
        unit: &str,
        f: impl FnMut(),
    ) -> fx::Result<Option<f64>> {
        if !self.wants(op) {
            return Ok(None);
        }
        let warm = if iters <= 3 { 1 } else { 2 };
        let ms = median_ms(warm, iters, f);
        let rate = amount / ms / 1e6;
        println!("| {op} | {shape} | {dtype} | {ms:.3} | {rate:.1} | {unit} |");
        Ok(Some(rate))
    }

    /// Times an op given as a function building a lazy array that is evaluated each run.
    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        op: &str,
        shape: &str,
        dtype: &str,
        iters: usize,
        amount: f64,
        unit: &str,
        f: impl Fn() -> fx::Result<Array>,
    ) -> fx::Result<Option<f64>> {
        if !self.wants(op) {
            return Ok(None);
        }
        // Surface errors once, outside the timed loop.
        f()?.eval()?;
        self.case(op, shape, dtype, iters, amount, unit, || f().unwrap().eval().unwrap())
    }
}

fn dname(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "f32",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
        _ => "?",
    }
}

fn shape_str(s: &[usize]) -> String {
    s.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("x")
}

/// Plain-Rust bandwidth probes on 256 MiB buffers: one-thread memcpy, a copy split over all
/// threads, and a read-only sum over all threads.
fn bandwidth(t: &Table) -> fx::Result<()> {
    let n = 64 << 20; // f32 elements: 256 MiB
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![1f32; n];
    let bytes = (n * 4) as f64;
    let shape = "64M";
    t.case("bw rust memcpy 1 thread", shape, "f32", 7, 2.0 * bytes, "GB/s", || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    })?;
    const CHUNK: usize = 1 << 18; // 1 MiB of f32
    t.case("bw rust copy all threads", shape, "f32", 7, 2.0 * bytes, "GB/s", || {
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
    })?;
    t.case("bw rust read all threads", shape, "f32", 7, bytes, "GB/s", || {
        let s: f32 = src
            .par_chunks(CHUNK)
            .map(|c| {
                let mut acc = [0f32; 16];
                for v in c.chunks_exact(16) {
                    for k in 0..16 {
                        acc[k] += v[k];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(s);
    })?;
    t.case("bw rust fill all threads", shape, "f32", 7, bytes, "GB/s", || {
        dst.par_chunks_mut(CHUNK).for_each(|d| d.fill(2.0));
        std::hint::black_box(&dst);
    })?;
    drop((src, dst));
    if t.wants("bw ferrox copy") {
        // A row slice with an offset is not the input's own buffer, so `contiguous` copies it.
        let x = data(&[(64 << 20) / 4096 + 1, 4096], Dtype::F32, 1)?;
        let v = fx::slice_axis(&x, 0, 1, ((64 << 20) / 4096 + 1) as isize)?;
        t.op("bw ferrox copy", shape, "f32", 7, 2.0 * bytes, "GB/s", || fx::contiguous(&v))?;
    }
    Ok(())
}

fn matmuls(t: &Table) -> fx::Result<()> {
    for dtype in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        for n in [1024usize, 2048, 4096] {
            if !t.wants("matmul") {
                break;
            }
            let a = data(&[n, n], dtype, 1)?;
            let b = data(&[n, n], dtype, 2)?;
            let iters = match n {
                1024 => 10,
                2048 => 5,
                _ => 3,
            };
            let flops = 2.0 * (n * n * n) as f64;
            t.op("matmul", &format!("{n}x{n}x{n}"), dname(dtype), iters, flops, "GFLOP/s", || fx::matmul(&a, &b))?;
        }
    }
    // Prompt attention's two products for a 135M head (D 64, a block of 128 queries, 384
    // keys): small enough that each matrix runs on one thread, the batch across threads.
    let (batch, m, s, d) = (64usize, 128usize, 384usize, 64usize);
    let q = data(&[batch, m, d], Dtype::F32, 1)?;
    let k = data(&[batch, s, d], Dtype::F32, 2)?;
    let p = data(&[batch, m, s], Dtype::F32, 3)?;
    let flops = 2.0 * (batch * m * s * d) as f64;
    let shape = format!("B{batch} M{m} K{d} N{s}");
    t.op("matmul batched q kT", &shape, "f32", 10, flops, "GFLOP/s", || fx::matmul(&q, &fx::swapaxes(&k, 1, 2)?))?;
    let shape = format!("B{batch} M{m} K{s} N{d}");
    t.op("matmul batched p v", &shape, "f32", 10, flops, "GFLOP/s", || fx::matmul(&p, &k))?;
    Ok(())
}

/// Matrix-vector products of the decode step (one row times a transposed weight, as a Linear
/// layer stores it), rated by the bytes of the weight: the SmolLM2-135M and Qwen2.5-0.5B
/// projections and the 135M model's tied 49152 × 576 head.
fn matvecs(t: &Table) -> fx::Result<()> {
    for dtype in [Dtype::Bf16, Dtype::F32] {
        for (k, n) in QUANT_SHAPES.into_iter().chain([(576, 49152)]) {
            if !t.wants("matvec") {
                return Ok(());
            }
            let w = data(&[n, k], dtype, 1)?;
            let x = data(&[1, k], dtype, 2)?;
            let bytes = (n * k * dtype.size()) as f64;
            t.op("matvec", &format!("K{k} N{n}"), dname(dtype), 50, bytes, "GB/s", || fx::matmul(&x, &w.t()))?;
        }
    }
    Ok(())
}

fn elementwise(t: &Table) -> fx::Result<()> {
    let shape = [4096usize, 4096];
    let n = (shape[0] * shape[1]) as f64;
    let s = "16M";
    let x = data(&shape, Dtype::F32, 1)?;
    let y = data(&shape, Dtype::F32, 2)?;
    t.op("add", s, "f32", 10, 12.0 * n, "GB/s", || fx::add(&x, &y))?;
    t.op("multiply scalar", s, "f32", 10, 8.0 * n, "GB/s", || fx::multiply(&x, 2.0f32))?;
    t.op("exp", s, "f32", 10, 8.0 * n, "GB/s", || fx::exp(&x))?;
    t.op("astype f32->bf16", s, "f32", 10, 6.0 * n, "GB/s", || fx::astype(&x, Dtype::Bf16))?;
    let xb = data(&shape, Dtype::Bf16, 3)?;
    let yb = data(&shape, Dtype::Bf16, 4)?;
    t.op("add", s, "bf16", 10, 6.0 * n, "GB/s", || fx::add(&xb, &yb))?;
    // A transposed copy: the strided path.
    t.op("transpose copy", "4096x4096", "f32", 5, 8.0 * n, "GB/s", || fx::contiguous(&x.t()))?;
    Ok(())
}

fn reductions(t: &Table) -> fx::Result<()> {
    let shape = [4096usize, 4096];
    let n = (shape[0] * shape[1]) as f64;
    let x = data(&shape, Dtype::F32, 1)?;
    t.op("sum all", "4096x4096", "f32", 10, 4.0 * n, "GB/s", || fx::sum(&x, None, false))?;
    t.op("sum axis 0", "4096x4096", "f32", 10, 4.0 * n, "GB/s", || fx::sum(&x, Some(&[0]), false))?;
    t.op("sum axis 1", "4096x4096", "f32", 10, 4.0 * n, "GB/s", || fx::sum(&x, Some(&[1]), false))?;
    t.op("max all", "4096x4096", "f32", 10, 4.0 * n, "GB/s", || fx::max(&x, None, false))?;
    t.op("argmax all", "4096x4096", "f32", 5, 4.0 * n, "GB/s", || fx::argmax(&x, None, false))?;
    t.op("argmax axis 1", "4096x4096", "f32", 5, 4.0 * n, "GB/s", || fx::argmax(&x, Some(1), false))?;
    let xb = data(&shape, Dtype::Bf16, 3)?;
    t.op("sum all", "4096x4096", "bf16", 10, 2.0 * n, "GB/s", || fx::sum(&xb, None, false))?;
    Ok(())
}

fn fused(t: &Table) -> fx::Result<()> {
    // softmax / norms: read once, write once.
    let cases: [(&[usize], Dtype); 4] = [
        (&[4096, 4096], Dtype::F32),
        (&[1, 32, 512, 512], Dtype::F32),
        (&[1, 32, 512, 512], Dtype::Bf16),
        (&[1, 512, 4096], Dtype::Bf16),
    ];
    for (shape, dtype) in cases {
        let n: usize = shape.iter().product();
        let bytes = 2.0 * (n * dtype.size()) as f64;
        let x = data(shape, dtype, 1)?;
        let d = *shape.last().unwrap();
        let w = data(&[d], dtype, 2)?;
        let b = data(&[d], dtype, 3)?;
        let (s, dn) = (shape_str(shape), dname(dtype));
        t.op("softmax", &s, dn, 10, bytes, "GB/s", || fx::softmax(&x, Some(&[-1]), true))?;
        t.op("rms_norm", &s, dn, 10, bytes, "GB/s", || fx::fast::rms_norm(&x, Some(&w), 1e-5))?;
        t.op("layer_norm", &s, dn, 10, bytes, "GB/s", || fx::fast::layer_norm(&x, Some(&w), Some(&b), 1e-5))?;
    }
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let shape = [1usize, 32, 512, 128];
        let n: usize = shape.iter().product();
        let x = data(&shape, dtype, 1)?;
        let bytes = 2.0 * (n * dtype.size()) as f64;
        t.op("rope", &shape_str(&shape), dname(dtype), 10, bytes, "GB/s", || {
            fx::fast::rope(&x, 128, false, Some(10000.0), 1.0, 0usize, None)
        })?;
    }
    // Attention: flops of q kᵀ and p v over all (query, key) pairs (causal counts them all too).
    for dtype in [Dtype::F32, Dtype::Bf16] {
        let (b, h, l, d) = (1usize, 32usize, 512usize, 128usize);
        let q = data(&[b, h, l, d], dtype, 1)?;
        let k = data(&[b, h, l, d], dtype, 2)?;
        let v = data(&[b, h, l, d], dtype, 3)?;
        let flops = 4.0 * (b * h * l * l * d) as f64;
        let scale = 1.0 / (d as f32).sqrt();
        t.op("sdpa prefill causal", "B1 H32 L512 S512 D128", dname(dtype), 5, flops, "GFLOP/s", || {
            fx::fast::scaled_dot_product_attention(&q, &k, &v, scale, SdpaMask::Causal)
        })?;
        let (hkv, s) = (8usize, 2048usize);
        let q = data(&[b, h, 1, d], dtype, 4)?;
        let k = data(&[b, hkv, s, d], dtype, 5)?;
        let v = data(&[b, hkv, s, d], dtype, 6)?;
        // Decode is bound by reading K and V.
        let bytes = 2.0 * (b * hkv * s * d * dtype.size()) as f64;
        t.op("sdpa decode", "B1 Hq32 Hkv8 L1 S2048 D128", dname(dtype), 20, bytes, "GB/s", || {
            fx::fast::scaled_dot_product_attention(&q, &k, &v, scale, SdpaMask::None)
        })?;
        // SmolLM2-135M's heads after a 512-token prompt: three key/value heads, fewer than
        // twice the threads here.
        let (hq, hkv, s, d) = (9usize, 3usize, 576usize, 64usize);
        let q = data(&[b, hq, 1, d], dtype, 7)?;
        let k = data(&[b, hkv, s, d], dtype, 8)?;
        let v = data(&[b, hkv, s, d], dtype, 9)?;
        let bytes = 2.0 * (b * hkv * s * d * dtype.size()) as f64;
        let scale = 1.0 / (d as f32).sqrt();
        t.op("sdpa decode", "B1 Hq9 Hkv3 L1 S576 D64", dname(dtype), 50, bytes, "GB/s", || {
            fx::fast::scaled_dot_product_attention(&q, &k, &v, scale, SdpaMask::Causal)
        })?;
    }
    Ok(())
}

/// The LLM weight shapes of the quantized cases: (K, N) of x [M, K] @ Wᵀ with W [N, K]
/// (SmolLM2-135M's MLP 576 ↔ 1536, Qwen2.5-0.5B's 896 ↔ 4864).
const QUANT_SHAPES: [(usize, usize); 4] = [(576, 1536), (1536, 576), (896, 4864), (4864, 896)];

/// Bytes of an [n, k] matrix quantized with group size 64: the packed codes and a scale and a
/// bias per group in `dtype`.
fn quantized_bytes(n: usize, k: usize, bits: usize, dtype: Dtype) -> f64 {
    (n * k * bits / 8 + 2 * (n * k / 64) * dtype.size()) as f64
}

/// The all-threads read bandwidth (GB/s) of a plain Rust sum over 256 MiB: the roofline of
/// the decode kernel.
fn read_bandwidth() -> f64 {
    let src: Vec<f32> = (0..64 << 20).map(|i| i as f32).collect();
    let ms = median_ms(2, 7, || {
        let s: f32 = src
            .par_chunks(1 << 18)
            .map(|c| {
                let mut acc = [0f32; 16];
                for v in c.chunks_exact(16) {
                    for k in 0..16 {
                        acc[k] += v[k];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        std::hint::black_box(s);
    });
    (src.len() * 4) as f64 / ms / 1e6
}

/// Quantized matmul (affine, group 64): decode (one row, rated by the bytes of the packed
/// matrix with its scales and biases, as a share of the read bandwidth) and prefill (512 rows,
/// rated in flops, as a share of the dense float32 product of the same shape). The shares
/// follow the table, in rows of four cells (which bench_core_compare.py skips).
fn quantized(t: &Table) -> fx::Result<()> {
    if !t.wants("qm") {
        return Ok(());
    }
    let bw = read_bandwidth();
    let mut shares = Vec::new();
    for (bits, dtype) in [(4usize, Dtype::Bf16), (4, Dtype::F32), (8, Dtype::Bf16), (3, Dtype::Bf16), (6, Dtype::Bf16)]
    {
        for (k, n) in QUANT_SHAPES {
            let w = data(&[n, k], dtype, 1)?;
            let (wq, s, b) = fx::quantize(&w, 64, bits, fx::QuantMode::Affine)?;
            fx::eval(&[&wq, &s, b.as_ref().unwrap()])?;
            let b = b.unwrap();
            let bytes = quantized_bytes(n, k, bits, dtype);
            let x1 = data(&[1, k], dtype, 2)?;
            let qmv = || fx::quantized_matmul(&x1, &wq, &s, Some(&b), true, 64, bits, fx::QuantMode::Affine);
            let shape = format!("K{k} N{n}");
            let op = format!("qmv {bits}-bit g64");
            if let Some(rate) = t.op(&op, &shape, dname(dtype), 50, bytes, "GB/s", qmv)? {
                shares.push(format!(
                    "| {op} {shape} {} | {rate:.1} GB/s | read {bw:.1} GB/s | {:.0}% |",
                    dname(dtype),
                    100.0 * rate / bw
                ));
            }
            if bits == 4 && dtype == Dtype::Bf16 {
                let m = 512;
                let x = data(&[m, k], dtype, 3)?;
                let qmm = || fx::quantized_matmul(&x, &wq, &s, Some(&b), true, 64, bits, fx::QuantMode::Affine);
                let flops = 2.0 * (m * n * k) as f64;
                let shape = format!("M{m} {shape}");
                let q = t.op(&format!("qmm {bits}-bit g64"), &shape, dname(dtype), 5, flops, "GFLOP/s", qmm)?;
                let (xf, wf) = (fx::astype(&x, Dtype::F32)?, fx::astype(&w, Dtype::F32)?);
                fx::eval(&[&xf, &wf])?;
                let dense = || fx::matmul(&xf, &wf.t());
                let d = t.op("qm dense matmul", &shape, "f32", 5, flops, "GFLOP/s", dense)?;
                if let (Some(q), Some(d)) = (q, d) {
                    shares.push(format!(
                        "| qmm {bits}-bit g64 {shape} | {q:.1} GFLOP/s | dense f32 {d:.1} GFLOP/s | {:.0}% |",
                        100.0 * q / d
                    ));
                }
            }
        }
    }
    println!();
    println!("| case | rate | reference | share |");
    println!("|---|---:|---:|---:|");
    for s in shares {
        println!("{s}");
    }
    Ok(())
}

/// (K, N) of one SmolLM2-135M layer's products with q/k/v and gate/up fused, as ferrox-lm
/// runs them: q/k/v, o, gate/up, down.
const LAYER_135M: [(usize, usize); 4] = [(576, 960), (576, 576), (576, 3072), (1536, 576)];

/// The products of one decode step of a SmolLM2-135M-shaped model (30 layers and the tied
/// output head, every weight its own matrix: 76 MB at 4-bit, 269 MB in bf16, 538 MB in f32, so they stream
/// from memory as in a real step, unlike the cases above whose one matrix stays in the cache),
/// evaluated together, one row of x each. Rated by the bytes of all the weights, as a share
/// of the read bandwidth. The "joined" case holds the same bytes as five matrices (the 30
/// layers' matrices of each kind stacked, and the head): the rate the kernel streams at when
/// a product's fixed costs are spread over large matrices, against which the step's 121
/// products are measured (docs/PERF.md, session 31).
fn decode_step(t: &Table) -> fx::Result<()> {
    // (weights' dtype, bits, joined): 0 bits is the dense matrix itself.
    let variants = [
        (Dtype::Bf16, 0usize, false),
        (Dtype::F32, 0, false),
        (Dtype::Bf16, 4, false),
        (Dtype::Bf16, 4, true),
        (Dtype::Bf16, 8, false),
    ];
    let name = |(dtype, bits, joined): (Dtype, usize, bool)| match bits {
        0 => format!("decode step {}", dname(dtype)),
        _ => format!("decode step {bits}-bit g64{}", if joined { " joined" } else { "" }),
    };
    if !variants.iter().any(|&v| t.wants(&name(v))) {
        return Ok(());
    }
    let bw = read_bandwidth();
    for (dtype, bits, joined) in variants {
        if !t.wants(&name((dtype, bits, joined))) {
            continue;
        }
        let shapes: Vec<(usize, usize)> = if joined {
            LAYER_135M.iter().map(|&(k, n)| (k, 30 * n)).chain([(576, 49152)]).collect()
        } else {
            (0..30).flat_map(|_| LAYER_135M).chain([(576, 49152)]).collect()
        };
        let xs = [data(&[1, 576], dtype, 2)?, data(&[1, 1536], dtype, 3)?];
        let x_for = |k: usize| &xs[usize::from(k != 576)];
        let mut bytes = 0.0;
        let mut weights = Vec::new();
        for (i, &(k, n)) in shapes.iter().enumerate() {
            let w = data(&[n, k], dtype, 10 + i as u64)?;
            if bits == 0 {
                bytes += (n * k * dtype.size()) as f64;
                weights.push((w, None));
            } else {
                let (wq, s, b) = fx::quantize(&w, 64, bits, fx::QuantMode::Affine)?;
                let b = b.unwrap();
                fx::eval(&[&wq, &s, &b])?;
                bytes += quantized_bytes(n, k, bits, dtype);
                weights.push((wq, Some((s, b))));
            }
        }
        let step = || -> fx::Result<()> {
            let ys = shapes
                .iter()
                .zip(&weights)
                .map(|(&(k, _), (w, sb))| match sb {
                    None => fx::matmul(x_for(k), &w.t()),
                    Some((s, b)) => {
                        fx::quantized_matmul(x_for(k), w, s, Some(b), true, 64, bits, fx::QuantMode::Affine)
                    }
                })
                .collect::<fx::Result<Vec<_>>>()?;
            fx::eval(&ys.iter().collect::<Vec<_>>())
        };
        step()?;
        let case = name((dtype, bits, joined));
        if let Some(rate) = t.case(&case, "135M", dname(dtype), 20, bytes, "GB/s", || step().unwrap())? {
            println!("| {case}: {:.0}% of read {bw:.1} GB/s |||||", 100.0 * rate / bw);
        }
    }
    Ok(())
}

fn main() -> fx::Result<()> {
    let filter = std::env::args().nth(1).unwrap_or_default();
    println!("ferrox, {} threads", rayon::current_num_threads());
    let t = Table::new(filter);
    bandwidth(&t)?;
    matmuls(&t)?;
    matvecs(&t)?;
    elementwise(&t)?;
    reductions(&t)?;
    fused(&t)?;
    quantized(&t)?;
    decode_step(&t)?;
    Ok(())
}
