//! The GPU check (feature `cuda`, run by scripts/gpu-check.sh on the GPU machine): every CUDA
//! kernel against the CPU backend on fresh random inputs, with the GPU's memory poisoned
//! before each op so that an element the kernel does not write shows up; then a few timings.
//! Prints one line per check and a table last; exits non-zero if any check fails. Without a
//! GPU it says so and passes.
//!
//! Bounds (relative error ‖gpu − cpu‖ / ‖cpu‖): f32 1e-5 (1e-3 for matmul with FERROX_TF32=1),
//! f16 / bf16 1e-2, f64 1e-12; integers, bools, copies, casts and indices exactly. A NaN where
//! the CPU has none never passes.

use std::time::Instant;

use ferrox::{self as fx, Array, Device, Dtype};

/// xorshift64*: fresh inputs every run (the seed is printed to replay one).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

struct Checker {
    rng: Rng,
    results: Vec<(String, f64, f64, bool)>,
}

fn cpu<R>(f: impl FnOnce() -> R) -> R {
    fx::with_device(Device::Cpu, f).unwrap()
}
fn gpu<R>(f: impl FnOnce() -> R) -> R {
    fx::with_device(Device::Gpu(0), f).unwrap()
}

/// The exact bound for integer-valued results, else the dtype's.
fn bound(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F32 => 1e-5,
        Dtype::F16 | Dtype::Bf16 => 1e-2,
        Dtype::F64 => 1e-12,
        _ => 0.0,
    }
}

impl Checker {
    /// A host array of `shape` and `dtype` with values uniform in [lo, hi) (integers: rounded).
    fn array(&mut self, shape: &[usize], dtype: Dtype, lo: f64, hi: f64) -> Array {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let x = self.rng.uniform(lo, hi);
                if dtype.is_float() {
                    x
                } else {
                    x.floor()
                }
            })
            .collect();
        let a = Array::from_slice(&v, shape).unwrap();
        let a = cpu(|| fx::astype(&a, dtype)).unwrap();
        a.eval().unwrap();
        a
    }

    /// Records, as the check `name`, whether evaluation made `want` joins
    /// (`backend::cuda::joined_products`) since the counter read `before`; nothing where none
    /// was expected (every check of the set skipped).
    fn joins(&mut self, name: &str, before: usize, want: usize) {
        if want == 0 {
            return;
        }
        let joined = ferrox::backend::cuda::joined_products() - before;
        let ok = joined == want;
        println!("{} {name}: {joined} joins, {want} expected", if ok { "ok  " } else { "FAIL" });
        self.results.push((name.to_string(), 0.0, 0.0, ok));
    }

    /// Leaves blocks of `nbytes` filled with NaN bytes in the GPU's cache, so the next
    /// allocations of that size start poisoned.
    fn poison(&mut self, nbytes: usize) {
        let words = nbytes.div_ceil(4).max(1);
        let mut keep = Vec::new();
        for _ in 0..3 {
            let p = Array::from_slice(&vec![0x7FC0_7FC0u32; words], &[words]).unwrap();
            let s = gpu(|| fx::bitwise_or(&p, &p)).unwrap();
            s.eval().unwrap();
            keep.push((p, s));
        }
        ferrox::backend::cuda::synchronize().unwrap();
    }

    /// Runs `f` on the CPU and on the GPU (poisoned first) and compares; with
    /// `GPU_CHECK_ONLY=prefix[,prefix...]`, only checks whose name starts with one of them.
    fn check(&mut self, name: &str, bound: f64, f: impl Fn() -> fx::Result<Array>) {
        if std::env::var("GPU_CHECK_ONLY").is_ok_and(|p| !p.split(',').any(|p| name.starts_with(p))) {
            return;
        }
        let want = match cpu(&f).and_then(|w| w.eval().map(|_| w)) {
            Ok(w) => w,
            Err(e) => {
                println!("skip {name}: the CPU refuses it ({e})");
                return;
            }
        };
        self.poison(want.nbytes());
        let got = gpu(|| {
            let g = f()?;
            g.eval()?;
            Ok::<_, fx::Error>(g)
        });
        let (err, norm, ok) = match got {
            Err(e) => {
                println!("FAIL {name}: {e}");
                (f64::NAN, 0.0, false)
            }
            Ok(got) => compare(&want, &got, bound),
        };
        println!(
            "{} {name}: rel err {err:.2e} (bound {bound:.0e}, |ref| {norm:.3e})",
            if ok { "ok  " } else { "FAIL" }
        );
        self.results.push((name.to_string(), err, bound, ok));
    }
}

/// How many times ops of the variants `ops` ("Attention", "Gather", ...; any dtype) ran on the
/// CPU for the GPU so far.
fn fallbacks_of(ops: &[&str]) -> usize {
    ferrox::backend::fallback::fallbacks()
        .iter()
        .filter(|(name, _)| ops.iter().any(|op| name.split('(').next() == Some(op)))
        .map(|(_, n)| n)
        .sum()
}

impl Checker {
    /// Records check `name`: no op of the variants `ops` fell back to the CPU since
    /// [`fallbacks_of`] gave `before`.
    fn no_fallback(&mut self, name: &str, ops: &[&str], before: usize) {
        let after = fallbacks_of(ops);
        let ok = after == before;
        println!(
            "{} {name}: {} ran on the CPU {before} -> {after} times",
            if ok { "ok  " } else { "FAIL" },
            ops.join(", ")
        );
        self.results.push((name.into(), 0.0, 0.0, ok));
    }
}

/// (relative error, reference norm, pass). Bools and integers compare exactly, bit by bit for
/// bool (a poisoned byte is neither 0 nor 1).
fn compare(want: &Array, got: &Array, bound: f64) -> (f64, f64, bool) {
    if got.shape() != want.shape() || got.dtype() != want.dtype() {
        println!("  shape/dtype {:?} {} vs {:?} {}", got.shape(), got.dtype(), want.shape(), want.dtype());
        return (f64::NAN, 0.0, false);
    }
    if want.dtype() == Dtype::Bool {
        let g = cpu(|| fx::contiguous(got)).unwrap();
        let w = cpu(|| fx::contiguous(want)).unwrap();
        let (gd, wd) = (g.data().unwrap(), w.data().unwrap());
        let n = want.size();
        let gb = &gd.buffer.as_bytes()[gd.offset..gd.offset + n];
        let wb = &wd.buffer.as_bytes()[wd.offset..wd.offset + n];
        let bad = gb.iter().zip(wb).filter(|(a, b)| a != b).count();
        return (bad as f64 / n.max(1) as f64, n as f64, bad == 0);
    }
    let w: Vec<f64> = cpu(|| want.to_vec::<f64>()).unwrap();
    let g: Vec<f64> = cpu(|| got.to_vec::<f64>()).unwrap();
    let (mut num, mut den, mut nan_bad) = (0f64, 0f64, 0usize);
    for (&a, &b) in g.iter().zip(&w) {
        if a.is_nan() || b.is_nan() {
            nan_bad += usize::from(a.is_nan() != b.is_nan());
            continue;
        }
        if a.is_infinite() || b.is_infinite() {
            nan_bad += usize::from(a != b);
            continue;
        }
        num += (a - b) * (a - b);
        den += b * b;
    }
    let err = if den > 0.0 { (num / den).sqrt() } else { num.sqrt() };
    (err, den.sqrt(), nan_bad == 0 && err <= bound)
}

const FLOATS: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::F64];
const INTS: [Dtype; 8] = [Dtype::U8, Dtype::U16, Dtype::U32, Dtype::U64, Dtype::I8, Dtype::I16, Dtype::I32, Dtype::I64];

fn main() {
    if !Device::Gpu(0).is_available() {
        println!("no GPU here: the GPU check is skipped");
        println!("0 passed, 0 failed");
        return;
    }
    println!("GPU: {}", ferrox::backend::cuda::device_name().unwrap_or_default());
    let seed = std::env::var("GPU_CHECK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("seed {seed}");
    let mut c = Checker { rng: Rng(seed), results: Vec::new() };
    let t0 = Instant::now();
    casts_and_copies(&mut c);
    unary(&mut c);
    binary(&mut c);
    reductions(&mut c);
    matmuls(&mut c);
    fast(&mut c);
    llm_ops(&mut c);
    attention(&mut c);
    quantized(&mut c);
    quantized_more(&mut c);
    sorting(&mut c);
    scatters(&mut c);
    random(&mut c);
    convolutions(&mut c);
    backward(&mut c);
    movement(&mut c);
    fused(&mut c);
    replay(&mut c);
    println!("checks took {:.1} s (kernels compiled on first use included)", t0.elapsed().as_secs_f64());
    let timings = timings(&mut c);

    let failed: Vec<_> = c.results.iter().filter(|r| !r.3).collect();
    println!("\nCPU fallbacks taken on the GPU stream: {:?}", ferrox::backend::fallback::fallbacks());
    println!("\n| check group | passed | failed | worst rel err |");
    println!("| --- | --- | --- | --- |");
    let mut groups: Vec<String> = Vec::new();
    for r in &c.results {
        let g = r.0.split(' ').next().unwrap().to_string();
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    for gname in groups {
        let rs: Vec<_> = c.results.iter().filter(|r| r.0.split(' ').next().unwrap() == gname).collect();
        let worst = rs.iter().map(|r| r.1).fold(0f64, |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) });
        let p = rs.iter().filter(|r| r.3).count();
        println!("| {gname} | {p} | {} | {worst:.1e} |", rs.len() - p);
    }
    println!("\n| timing | value |\n| --- | --- |");
    for (k, v) in &timings {
        println!("| {k} | {v} |");
    }
    for f in &failed {
        println!("FAILED: {} (err {:.2e}, bound {:.0e})", f.0, f.1, f.2);
    }
    println!("\n{} passed, {} failed", c.results.len() - failed.len(), failed.len());
    if !failed.is_empty() {
        std::process::exit(1);
    }
}

fn casts_and_copies(c: &mut Checker) {
    for s in Dtype::ALL {
        let x = c.array(&[37, 29], s, -120.0, 120.0);
        for d in Dtype::ALL {
            c.check(&format!("astype {s}->{d}"), 0.0, || fx::astype(&x, d));
        }
        // A transposed, sliced view made row-major.
        let y = c.array(&[6, 50, 40], s, -100.0, 100.0);
        c.check(&format!("copy {s} strided"), 0.0, || {
            let t = fx::transpose(&y, &[2, 0, 1])?;
            fx::contiguous(&fx::slice(&t, &[1, 0, 3], &[40, 6, 50], &[3, 1, 2])?)
        });
    }
    let x = c.array(&[300], Dtype::F64, -1e6, 1e6);
    for d in [Dtype::F16, Dtype::Bf16, Dtype::F32] {
        c.check(&format!("astype f64->{d} rounding"), 0.0, || fx::astype(&x, d));
    }
    // f32 just above a bf16 tie (low bits 0x8001..0x8007): rounded once, these go up; a cast
    // that dropped the f32's last three bits first would see the tie and round to even.
    let near_ties: Vec<f32> = (0..256u32).map(|i| f32::from_bits(0x3F80_8001 + (i % 7) + (i << 16))).collect();
    let near = Array::from_slice(&near_ties, &[256]).unwrap();
    for d in [Dtype::Bf16, Dtype::F16] {
        c.check(&format!("astype float32->{d} near ties"), 0.0, || fx::astype(&near, d));
    }
}

fn unary(c: &mut Checker) {
    use fx::*;
    type F = fn(&Array) -> fx::Result<Array>;
    // (name, function, input range)
    let float_ops: [(&str, F, f64, f64); 31] = [
        ("exp", exp, -5.0, 5.0),
        ("expm1", expm1, -2.0, 2.0),
        ("log", log, 0.1, 10.0),
        ("log1p", log1p, -0.5, 5.0),
        ("log2", log2, 0.1, 10.0),
        ("log10", log10, 0.1, 10.0),
        ("sqrt", sqrt, 0.0, 10.0),
        ("rsqrt", rsqrt, 0.1, 10.0),
        ("reciprocal", reciprocal, 0.5, 10.0),
        ("sin", sin, -4.0, 4.0),
        ("cos", cos, -4.0, 4.0),
        ("tan", tan, -1.2, 1.2),
        ("arcsin", arcsin, -0.99, 0.99),
        ("arccos", arccos, -0.99, 0.99),
        ("arctan", arctan, -5.0, 5.0),
        ("sinh", sinh, -3.0, 3.0),
        ("cosh", cosh, -3.0, 3.0),
        ("tanh", tanh, -3.0, 3.0),
        ("arcsinh", arcsinh, -5.0, 5.0),
        ("arccosh", arccosh, 1.01, 5.0),
        ("arctanh", arctanh, -0.95, 0.95),
        ("sigmoid", sigmoid, -8.0, 8.0),
        ("erf", erf, -2.0, 2.0),
        ("erfinv", erfinv, -0.95, 0.95),
        ("floor", floor, -10.0, 10.0),
        ("ceil", ceil, -10.0, 10.0),
        ("round", |a| round(a, 0), -10.0, 10.0),
        ("abs", abs, -10.0, 10.0),
        ("negative", negative, -10.0, 10.0),
        ("sign", sign, -10.0, 10.0),
        ("square", square, -10.0, 10.0),
    ];
    for dt in FLOATS {
        for (name, f, lo, hi) in float_ops {
            let x = c.array(&[33, 65], dt, lo, hi);
            let xt = fx::transpose(&x, &[1, 0]).unwrap();
            c.check(&format!("unary {name} {dt}"), bound(dt), || f(&xt));
        }
    }
    let int_ops: [(&str, F); 5] =
        [("abs", abs), ("negative", negative), ("sign", sign), ("square", square), ("bitwise_invert", bitwise_invert)];
    for dt in INTS {
        for (name, f) in int_ops {
            let x = c.array(&[17, 31], dt, -100.0, 100.0);
            c.check(&format!("unary {name} {dt}"), 0.0, || f(&x));
        }
    }
    let preds: [(&str, F); 4] =
        [("isnan", isnan), ("isinf", isinf), ("isfinite", isfinite), ("logical_not", logical_not)];
    for dt in Dtype::ALL {
        let x = c.array(&[64], dt, -3.0, 3.0);
        let x = if dt.is_float() {
            let special = Array::from_slice(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0], &[4]).unwrap();
            let special = cpu(|| fx::astype(&special, dt)).unwrap();
            cpu(|| fx::concatenate(&[x.clone(), special.clone()], 0)).unwrap()
        } else {
            x
        };
        x.eval().unwrap();
        for (name, f) in preds {
            c.check(&format!("unary {name} {dt}"), 0.0, || f(&x));
        }
    }
}

fn binary(c: &mut Checker) {
    use fx::*;
    type F = fn(&Array, &Array) -> fx::Result<Array>;
    macro_rules! f2 {
        ($f:ident) => {
            (|a: &Array, b: &Array| $f(a, b)) as F
        };
    }
    let arith: [(&str, F); 11] = [
        ("add", f2!(add)),
        ("subtract", f2!(subtract)),
        ("multiply", f2!(multiply)),
        ("divide", f2!(divide)),
        ("floor_divide", f2!(floor_divide)),
        ("remainder", f2!(remainder)),
        ("power", f2!(power)),
        ("maximum", f2!(maximum)),
        ("minimum", f2!(minimum)),
        ("logaddexp", f2!(logaddexp)),
        ("arctan2", f2!(arctan2)),
    ];
    let compare_ops: [(&str, F); 8] = [
        ("equal", f2!(equal)),
        ("not_equal", f2!(not_equal)),
        ("less", f2!(less)),
        ("less_equal", f2!(less_equal)),
        ("greater", f2!(greater)),
        ("greater_equal", f2!(greater_equal)),
        ("logical_and", f2!(logical_and)),
        ("logical_or", f2!(logical_or)),
    ];
    let bitwise: [(&str, F); 5] = [
        ("bitwise_and", f2!(bitwise_and)),
        ("bitwise_or", f2!(bitwise_or)),
        ("bitwise_xor", f2!(bitwise_xor)),
        ("left_shift", f2!(left_shift)),
        ("right_shift", f2!(right_shift)),
    ];
    for dt in Dtype::ALL {
        // Broadcasting [3, 1, 40] with a transposed [40, 7] -> [3, 7, 40]... via [7, 40].
        let (lo, hi) = if dt.is_float() { (0.5, 4.0) } else { (-9.0, 9.0) };
        let a = c.array(&[3, 1, 40], dt, lo, hi);
        let b0 = c.array(&[40, 7], dt, lo, hi);
        let b = fx::transpose(&b0, &[1, 0]).unwrap();
        let is_arith_ok = dt != Dtype::Bool;
        for (name, f) in arith {
            // Integer power / shifts: small exponents; division by zero is defined (0) on both.
            if !is_arith_ok && matches!(name, "logaddexp" | "arctan2" | "divide") {
                continue;
            }
            if !dt.is_float() && matches!(name, "logaddexp" | "arctan2" | "divide") {
                continue; // these promote integers to float: covered by the float dtypes
            }
            let bd = bound(dt).max(if name == "power" && dt == Dtype::F32 { 2e-5 } else { 0.0 });
            c.check(&format!("binary {name} {dt}"), bd, || f(&a, &b));
        }
        for (name, f) in compare_ops {
            c.check(&format!("binary {name} {dt}"), 0.0, || f(&a, &b));
        }
        if !dt.is_float() && dt != Dtype::Bool {
            let s = c.array(&[7, 40], dt, 0.0, 70.0);
            for (name, f) in bitwise {
                c.check(&format!("binary {name} {dt}"), 0.0, || f(&a, &s));
            }
        }
        let cond = c.array(&[7, 1], Dtype::Bool, 0.0, 2.0);
        c.check(&format!("select {dt}"), 0.0, || where_(&cond, &a, &b));
        // Rows whose last axis is a multiple of 8, unit-stride or broadcast (a run of 8 elements
        // a thread, moved 16 bytes at a time where aligned): contiguous, a row and a column
        // broadcast (stride 0 along the last axis), and a view one element off alignment.
        let x = c.array(&[6, 72], dt, lo, hi);
        let y = c.array(&[6, 72], dt, lo, hi);
        let row = c.array(&[72], dt, lo, hi);
        let col = c.array(&[6, 1], dt, lo, hi);
        let off = |a: &Array| fx::slice(a, &[0, 1], &[6, 65], &[1, 1]);
        let add_or_or = |a: &Array, b: &Array| if dt == Dtype::Bool { logical_or(a, b) } else { add(a, b) };
        c.check(&format!("binary runs {dt}"), bound(dt), || add_or_or(&x, &y));
        c.check(&format!("binary runs {dt} row broadcast"), bound(dt), || add_or_or(&x, &row));
        c.check(&format!("binary runs {dt} column broadcast"), bound(dt), || add_or_or(&col, &x));
        c.check(&format!("binary runs {dt} misaligned"), bound(dt), || add_or_or(&off(&x)?, &off(&y)?));
        c.check(&format!("unary runs {dt} misaligned"), bound(dt), || abs(&off(&x)?));
        c.check(&format!("copy runs {dt} column broadcast"), 0.0, || contiguous(&broadcast_to(&col, &[6, 72])?));
    }
}

fn reductions(c: &mut Checker) {
    use fx::*;
    for dt in Dtype::ALL {
        let (lo, hi) = match dt {
            Dtype::Bool => (0.0, 2.0),
            d if d.is_float() => (-2.0, 2.0),
            _ => (-20.0, 20.0),
        };
        let x = c.array(&[6, 130, 9], dt, lo, hi);
        // Float sums of positive values: with cancellation the result's relative error
        // measures the summation order, not the kernel.
        let xs = if dt.is_float() { c.array(&[6, 130, 9], dt, 0.0, hi) } else { x.clone() };
        let xp = c.array(&[6, 30, 9], dt, if dt.is_float() { 0.9 } else { lo }, if dt.is_float() { 1.1 } else { hi });
        let axes: [&[isize]; 4] = [&[1], &[0, 2], &[2], &[0, 1, 2]];
        for ax in axes {
            let b = if dt == Dtype::F16 || dt == Dtype::Bf16 { 1e-2 } else { bound(dt) };
            if dt != Dtype::Bool {
                c.check(&format!("reduce sum {dt} {ax:?}"), b, || sum(&xs, Some(ax), false));
                c.check(&format!("reduce prod {dt} {ax:?}"), b, || prod(&xp, Some(ax), true));
            }
            c.check(&format!("reduce max {dt} {ax:?}"), 0.0, || max(&x, Some(ax), false));
            c.check(&format!("reduce min {dt} {ax:?}"), 0.0, || min(&x, Some(ax), false));
            c.check(&format!("reduce all {dt} {ax:?}"), 0.0, || all(&x, Some(ax), false));
            c.check(&format!("reduce any {dt} {ax:?}"), 0.0, || any(&x, Some(ax), false));
        }
        for ax in [0isize, 1, 2] {
            c.check(&format!("argreduce argmax {dt} {ax}"), 0.0, || argmax(&x, Some(ax), false));
            c.check(&format!("argreduce argmin {dt} {ax}"), 0.0, || argmin(&x, Some(ax), true));
        }
    }
    // One long row (a whole-array sum) and many short ones.
    let big = c.array(&[1 << 20], Dtype::F32, 0.0, 1.0);
    c.check("reduce sum f32 whole 1M", 1e-5, || sum(&big, None, false));
    // Few long rows: split into parts reduced by separate blocks, then joined.
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::I32, Dtype::U8, Dtype::F64] {
        let long = c.array(&[3, 70_000], dt, if dt.is_float() { 0.0 } else { -3.0 }, 3.0);
        let b = if dt.is_float() { bound(dt).max(1e-5) } else { 0.0 };
        c.check(&format!("reduce sum {dt} split"), b, || sum(&long, Some(&[1]), false));
        c.check(&format!("reduce max {dt} split"), 0.0, || max(&long, Some(&[1]), false));
        c.check(&format!("reduce min {dt} split strided"), 0.0, || {
            min(&fx::transpose(&long, &[1, 0])?, Some(&[0]), false)
        });
        c.check(&format!("reduce any {dt} split"), 0.0, || any(&long, Some(&[1]), false));
        // Arg-reductions of long rows are split too (ties — common in bf16 and u8 — go to the
        // first index, as one pass gives).
        c.check(&format!("argreduce argmax {dt} split"), 0.0, || argmax(&long, Some(1), false));
        c.check(&format!("argreduce argmin {dt} split strided"), 0.0, || {
            argmin(&fx::transpose(&long, &[1, 0])?, Some(0), true)
        });
        c.check(&format!("reduce all {dt} split"), 0.0, || all(&long, None, false));
    }
    let rows = c.array(&[4096, 3], Dtype::F32, -1.0, 1.0);
    c.check("reduce max f32 short rows", 0.0, || max(&rows, Some(&[1]), false));
    // Scans: positive float sums (order-independent to rounding), products near 1.
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::I32, Dtype::U8, Dtype::I64, Dtype::F64] {
        let (lo, hi) = if dt.is_float() { (0.0, 1.0) } else { (-3.0, 4.0) };
        let x = c.array(&[5, 700, 3], dt, lo, hi);
        let xp =
            c.array(&[5, 300, 3], dt, if dt.is_float() { 0.99 } else { 1.0 }, if dt.is_float() { 1.01 } else { 2.0 });
        let b = if dt == Dtype::Bf16 { 1e-2 } else { bound(dt).max(if dt.is_float() { 1e-5 } else { 0.0 }) };
        for (rev, inc) in [(false, true), (true, false), (true, true)] {
            c.check(&format!("scan cumsum {dt} rev={rev} inc={inc}"), b, || cumsum(&x, Some(1), rev, inc));
            c.check(&format!("scan cummax {dt} rev={rev} inc={inc}"), 0.0, || cummax(&x, Some(1), rev, inc));
            c.check(&format!("scan cummin {dt} last axis rev={rev}"), 0.0, || cummin(&x, Some(2), rev, inc));
            if dt != Dtype::U8 && dt != Dtype::I32 {
                c.check(&format!("scan cumprod {dt} rev={rev} inc={inc}"), b, || cumprod(&xp, Some(1), rev, inc));
            }
        }
    }
}

fn matmuls(c: &mut Checker) {
    for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::F64] {
        let b = if dt == Dtype::F32 && std::env::var("FERROX_TF32").is_ok_and(|v| v == "1") { 1e-3 } else { bound(dt) };
        let a = c.array(&[3, 65, 130], dt, -1.0, 1.0);
        let w = c.array(&[130, 47], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} batched-broadcast"), b, || fx::matmul(&a, &w));
        let wt = c.array(&[47, 130], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} transposed-b"), b, || fx::matmul(&a, &fx::transpose(&wt, &[1, 0])?));
        let v = c.array(&[1, 130], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} vector"), b, || fx::matmul(&v, &w));
        let big_a = c.array(&[512, 768], dt, -1.0, 1.0);
        let big_b = c.array(&[768, 256], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} 512x768x256"), b, || fx::matmul(&big_a, &big_b));
        if dt == Dtype::F32 {
            std::env::set_var("FERROX_TF32", "1");
            c.check("matmul float32 512x768x256 FERROX_TF32=1", 1e-3, || fx::matmul(&big_a, &big_b));
            std::env::remove_var("FERROX_TF32");
        }
        let bias = c.array(&[47], dt, -1.0, 1.0);
        let a2 = c.array(&[33, 130], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} addmm"), b, || fx::addmm(&bias, &a2, &w, 0.5, 2.0));
        if dt == Dtype::F64 {
            continue;
        }
        // Decode products (the matrix-vector kernel): a few rows against a Linear weight's
        // transpose, one row, eight rows over batch axes, alpha, a weight view with padded
        // rows, a large output.
        let wl = c.array(&[100, 264], dt, -1.0, 1.0);
        let wlt = fx::transpose(&wl, &[1, 0]).unwrap();
        let x1 = c.array(&[1, 1, 264], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 1 row"), b, || fx::matmul(&x1, &wlt));
        let x8 = c.array(&[4, 2, 264], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 8 rows batched"), b, || fx::matmul(&x8, &wlt));
        let z = c.array(&[100], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv alpha"), b, || fx::addmm(&z, &x8, &wlt, -0.75, 0.0));
        // An addend joined in the kernel: a residual of the output's shape, and a broadcast row
        // with alpha and beta.
        let r8 = c.array(&[4, 2, 100], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv addend (residual)"), b, || fx::addmm(&r8, &x8, &wlt, 1.0, 1.0));
        c.check(&format!("matmul {dt} gemv addend broadcast, alpha, beta"), b, || fx::addmm(&z, &x8, &wlt, 0.5, -2.0));
        let wp = c.array(&[100, 320], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv padded weight rows"), b, || {
            let v = fx::slice(&wp, &[0, 8], &[100, 272], &[1, 1])?;
            fx::matmul(&x1, &fx::transpose(&v, &[1, 0])?)
        });
        // Eight rows against 4301 columns: two columns a block (the last block's second past
        // the end); two rows (the 2-row kernel).
        let wmid = c.array(&[4301, 264], dt, -1.0, 1.0);
        let x8f = c.array(&[8, 264], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 8 rows x 4301"), b, || fx::matmul(&x8f, &fx::transpose(&wmid, &[1, 0])?));
        let x2 = c.array(&[2, 264], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 2 rows x 4301"), b, || fx::matmul(&x2, &fx::transpose(&wmid, &[1, 0])?));
        // Eight rows against 1000 columns of k 512: the tensor-core kernel for f16 / bf16 (16
        // columns a block, the last one past the end).
        let wmma = c.array(&[1000, 512], dt, -1.0, 1.0);
        let x8m = c.array(&[8, 512], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 8 rows x 1000 (mma)"), b, || {
            fx::matmul(&x8m, &fx::transpose(&wmma, &[1, 0])?)
        });
        let r8m = c.array(&[8, 1000], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 8 rows x 1000 (mma) addend"), b, || {
            fx::addmm(&r8m, &x8m, &fx::transpose(&wmma, &[1, 0])?, 1.0, 1.0)
        });
        let wbig = c.array(&[5003, 2048], dt, -1.0, 1.0);
        let xbig = c.array(&[3, 2048], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv 5003 x 2048"), b, || fx::matmul(&xbig, &fx::transpose(&wbig, &[1, 0])?));
        // An rms_norm read only by a product of 1 or 2 rows runs inside it
        // (backend/cuda/join.rs): with a residual, without a weight, 1 row of 5003 columns.
        // Not joined: 8 rows (the tensor cores for f16 / bf16), a norm read elsewhere too.
        let before = (ferrox::backend::cuda::joined_products(), c.results.len());
        let g264 = c.array(&[264], dt, 0.5, 1.5);
        let g512 = c.array(&[512], dt, 0.5, 1.5);
        let normed = |x: &Array, g: Option<&Array>| fx::fast::rms_norm(x, g, 1e-5);
        let r2 = c.array(&[2, 4301], dt, -1.0, 1.0);
        let x1big = c.array(&[1, 1, 2048], dt, -1.0, 1.0);
        c.check(&format!("matmul {dt} gemv rms_norm joined, 1 row"), b, || {
            fx::matmul(&normed(&x1, Some(&g264))?, &wlt)
        });
        c.check(&format!("matmul {dt} gemv rms_norm joined, 2 rows, residual"), b, || {
            fx::addmm(&r2, &normed(&x2, Some(&g264))?, &fx::transpose(&wmid, &[1, 0])?, 1.0, 1.0)
        });
        c.check(&format!("matmul {dt} gemv rms_norm joined, 1 row x 5003, no weight"), b, || {
            fx::matmul(&normed(&x1big, None)?, &fx::transpose(&wbig, &[1, 0])?)
        });
        let ran = c.results.len() - before.1;
        c.check(&format!("matmul {dt} gemv rms_norm, 8 rows, residual (not joined)"), b, || {
            fx::addmm(&r8m, &normed(&x8m, Some(&g512))?, &fx::transpose(&wmma, &[1, 0])?, 1.0, 1.0)
        });
        c.check(&format!("matmul {dt} gemv rms_norm read twice (not joined)"), b, || {
            let n = normed(&x1, Some(&g264))?;
            fx::concatenate(&[fx::matmul(&n, &wlt)?, n], 2)
        });
        c.joins(&format!("matmul {dt} gemv rms_norm joined"), before.0, ran);
    }
}

/// A decode step's rope and the KV-cache writes of its keys and values at the rope's position
/// (`put_along_axis` into caches nothing else holds) run as one kernel (backend/cuda/join.rs,
/// `Op::RopeWrite`): the heads of one joined q/k/v output, 2 sequences, 6 q, 2 kv heads of 64,
/// custom frequencies too; the caches' other positions must keep their values. Not joined:
/// a cache read elsewhere too. Where those heads are the product of a decode step's x (1 or 2
/// rows, its rms_norm joined in or none), the product computes the rope and the writes too
/// (`Epilogue::Rope`, gemv.cu's `*_rope_*`). The join counter must match the joined checks.
fn rope_cache_writes(c: &mut Checker, dt: Dtype) {
    let b = bound(dt);
    let (hq, hk, d, len, k) = (6, 2, 64, 40, 256);
    let heads = c.array(&[2, 1, hq + 2 * hk, d], dt, -1.0, 1.0);
    let (k0, v0) = (c.array(&[2, hk, len, d], dt, -1.0, 1.0), c.array(&[2, hk, len, d], dt, -1.0, 1.0));
    let freqs = c.array(&[d / 2], Dtype::F32, 1.0, 500.0);
    let pos = Array::from_slice(&[17i32], &[1]).unwrap();
    let x = c.array(&[2, 1, k], dt, -1.0, 1.0);
    let (w, g) = (c.array(&[(hq + 2 * hk) * d, k], dt, -0.1, 0.1), c.array(&[k], dt, 0.5, 1.5));
    let quantized = |bits: usize| cpu(|| fx::quantize(&w, 64, bits, fx::primitives::QuantMode::Affine)).unwrap();
    // No quantized f64 matrices.
    let (q4, q3) = if dt == Dtype::F64 { (None, None) } else { (Some(quantized(4)), Some(quantized(3))) };
    // The heads as given, or as the product of `rows` rows of x (normalized first or not) and
    // w, or w quantized to `bits` bits.
    #[derive(Clone, Copy)]
    enum Heads {
        Given,
        Product { rows: usize, norm: bool, bits: Option<usize> },
    }
    // q, the new key cache and the new value cache, flattened into one output.
    let step = |custom: bool, keep_old: bool, from: Heads| -> fx::Result<Array> {
        let (heads, rows) = match from {
            Heads::Given => (heads.clone(), 2),
            Heads::Product { rows, norm, bits } => {
                let x = fx::slice_axis(&x, 0, 0, rows as isize)?;
                let x = if norm { fx::fast::rms_norm(&x, Some(&g), 1e-5)? } else { x };
                let y = match bits {
                    None => fx::matmul(&x, &fx::transpose(&w, &[1, 0])?)?,
                    Some(bits) => {
                        let (wq, s, bq) = if bits == 4 { &q4 } else { &q3 }.as_ref().expect("a quantized matrix");
                        let mode = fx::primitives::QuantMode::Affine;
                        fx::quantized_matmul(&x, wq, s, bq.as_ref(), true, 64, bits, mode)?
                    }
                };
                (fx::reshape_usize(&y, &[rows, 1, hq + 2 * hk, d])?, rows)
            }
        };
        let (k0, v0) = (fx::slice_axis(&k0, 0, 0, rows as isize)?, fx::slice_axis(&v0, 0, 0, rows as isize)?);
        let y = fx::transpose(&heads, &[0, 2, 1, 3])?;
        let (base, f) = if custom { (None, Some(&freqs)) } else { (Some(10000.0), None) };
        let qk = fx::fast::rope(&fx::slice_axis(&y, 1, 0, (hq + hk) as isize)?, d, false, base, 1.0, &pos, f)?;
        // Caches of the device the check runs on, held by the writes alone.
        let one = fx::astype(&Array::scalar(1.0f32), dt)?;
        let (kc, vc) = (fx::multiply(&k0, &one)?, fx::multiply(&v0, &one)?);
        kc.eval()?;
        vc.eval()?;
        let at = fx::reshape_usize(&pos, &[1, 1, 1, 1])?;
        let k = fx::put_along_axis(&kc, &at, &fx::slice_axis(&qk, 1, hq as isize, (hq + hk) as isize)?, Some(2))?;
        let v = fx::slice_axis(&y, 1, (hq + hk) as isize, (hq + 2 * hk) as isize)?;
        let v = fx::put_along_axis(&vc, &at, &v, Some(2))?;
        let flat = |a: &Array| fx::reshape_usize(a, &[a.size()]);
        let mut parts = vec![flat(&fx::slice_axis(&qk, 1, 0, hq as isize)?)?, flat(&k)?, flat(&v)?];
        if keep_old {
            parts.push(flat(&kc)?);
        }
        fx::concatenate(&parts, 0)
    };
    let before = (ferrox::backend::cuda::joined_products(), c.results.len());
    c.check(&format!("fast rope {dt} KV-cache writes joined"), b, || step(false, false, Heads::Given));
    c.check(&format!("fast rope {dt} KV-cache writes joined, custom frequencies"), b, || {
        step(true, false, Heads::Given)
    });
    let mut want = c.results.len() - before.1;
    c.check(&format!("fast rope {dt} KV-cache writes, cache read elsewhere (not joined)"), b, || {
        step(false, true, Heads::Given)
    });
    // The product's joins: the writes, the rope into the product, and the norm; dense, and
    // (but for f64) of a 4- or 3-bit matrix.
    let bits: &[Option<usize>] = if dt == Dtype::F64 { &[None] } else { &[None, Some(4), Some(3)] };
    for &bits in bits {
        let kind = bits.map_or("dense".to_string(), |b| format!("{b}-bit"));
        let n0 = c.results.len();
        c.check(&format!("fast rope {dt} KV-cache writes joined into the {kind} product, 1 row"), b, || {
            step(false, false, Heads::Product { rows: 1, norm: false, bits })
        });
        want += 2 * (c.results.len() - n0);
        let n0 = c.results.len();
        c.check(
            &format!("fast rope {dt} KV-cache writes joined into the normalizing {kind} product, 2 rows"),
            b,
            || step(true, false, Heads::Product { rows: 2, norm: true, bits }),
        );
        want += 3 * (c.results.len() - n0);
    }
    c.joins(&format!("fast rope {dt} KV-cache writes joined"), before.0, want);
}

/// The row kernels: softmax, the norms (also with a weight and bias of another dtype than x)
/// and rope (offsets of any integer dtype, f16 / bf16 frequencies). None may fall back.
fn fast(c: &mut Checker) {
    let row_ops = ["Softmax", "RmsNorm", "LayerNorm", "Rope"];
    let before = fallbacks_of(&row_ops);
    for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
        let b = bound(dt);
        let x = c.array(&[2, 5, 1000], dt, -4.0, 4.0);
        c.check(&format!("fast softmax {dt}"), b, || fx::softmax(&x, None, false));
        let xt = fx::transpose(&c.array(&[130, 6], dt, -4.0, 4.0), &[1, 0]).unwrap();
        c.check(&format!("fast softmax {dt} strided"), b, || fx::softmax(&xt, None, true));
        let w = c.array(&[1000], dt, 0.5, 1.5);
        let bias = c.array(&[1000], dt, -1.0, 1.0);
        c.check(&format!("fast rms_norm {dt}"), b, || fx::fast::rms_norm(&x, Some(&w), 1e-5));
        c.check(&format!("fast rms_norm {dt} no weight"), b, || fx::fast::rms_norm(&x, None, 1e-5));
        c.check(&format!("fast layer_norm {dt}"), b, || fx::fast::layer_norm(&x, Some(&w), Some(&bias), 1e-5));
        c.check(&format!("fast layer_norm {dt} plain"), b, || fx::fast::layer_norm(&x, None, None, 1e-5));
        // A prompt's many rows: a warp a row (vector loads; rows of a length that is not a
        // multiple of 16 bytes, or a strided weight, element by element).
        for n in [1000, 2050] {
            let xr = c.array(&[300, n], dt, -4.0, 4.0);
            let wr = c.array(&[n], dt, 0.5, 1.5);
            c.check(&format!("fast rms_norm {dt} 300 rows of {n}"), b, || fx::fast::rms_norm(&xr, Some(&wr), 1e-5));
        }
        let xr = c.array(&[300, 1000], dt, -4.0, 4.0);
        let w2 = c.array(&[2000], dt, 0.5, 1.5);
        c.check(&format!("fast rms_norm {dt} 300 rows, strided weight"), b, || {
            fx::fast::rms_norm(&xr, Some(&fx::slice(&w2, &[0], &[2000], &[2])?), 1e-5)
        });
        c.check(&format!("fast rms_norm {dt} 300 rows, no weight"), b, || fx::fast::rms_norm(&xr, None, 1e-5));
        // Heads in groups of 8 a thread, the last group short (15 and 7 heads).
        for heads in [15, 7] {
            let qh = c.array(&[1, heads, 19, 64], dt, -1.0, 1.0);
            c.check(&format!("fast rope {dt} {heads} heads"), b, || {
                fx::fast::rope(&qh, 48, false, Some(10000.0), 1.0, 100i32, None)
            });
        }
        // Far positions (angles of 1e5 radians, reduced before f32's sine and cosine): a prompt
        // of heads of 128 and a decode step.
        for (shape, off) in [([1, 12, 40, 128], 131_000i32), ([1, 8, 1, 128], 70_001)] {
            let qf = c.array(&shape, dt, -1.0, 1.0);
            c.check(&format!("fast rope {dt} far positions, {} of them", shape[2]), b, || {
                fx::fast::rope(&qf, 128, false, Some(500000.0), 1.0, off, None)
            });
        }
        let q = c.array(&[2, 4, 33, 64], dt, -1.0, 1.0);
        for trad in [false, true] {
            c.check(&format!("fast rope {dt} traditional={trad}"), b, || {
                fx::fast::rope(&q, 64, trad, Some(10000.0), 1.0, 17i32, None)
            });
            c.check(&format!("fast rope {dt} partial traditional={trad}"), b, || {
                fx::fast::rope(&q, 32, trad, Some(500000.0), 0.5, 3i32, None)
            });
        }
        // As attention's q and k arrive: a transposed view [B, H, L, D] of [B, L, H, D], read
        // in place; the offset an i64 scalar on the host, or one computed on the device.
        let qt = c.array(&[2, 9, 4, 64], dt, -1.0, 1.0);
        c.check(&format!("fast rope {dt} transposed view, i64 offset"), b, || {
            let v = fx::transpose(&qt, &[0, 2, 1, 3])?;
            fx::fast::rope(&v, 64, false, Some(10000.0), 1.0, &Array::scalar(21i64), None)
        });
        c.check(&format!("fast rope {dt} transposed view, computed offset"), b, || {
            let v = fx::transpose(&qt, &[0, 2, 1, 3])?;
            let off = fx::add(Array::scalar(20i32), Array::scalar(5i32))?;
            fx::fast::rope(&v, 32, true, Some(10000.0), 1.0, &off, None)
        });
        // Rows not contiguous (features strided): through a row-major copy.
        c.check(&format!("fast rope {dt} strided features"), b, || {
            let v = fx::transpose(&qt, &[0, 3, 2, 1])?;
            fx::fast::rope(&v, 4, false, Some(10000.0), 1.0, 2i32, None)
        });
        // Offsets of other integer dtypes (converted to i64 on the device): a u16 scalar on the
        // host, an i8 one computed on the device; f16 / bf16 frequencies (converted to f32).
        c.check(&format!("fast rope {dt} u16 offset"), b, || {
            fx::fast::rope(&q, 64, false, Some(10000.0), 1.0, &Array::scalar(300u16), None)
        });
        c.check(&format!("fast rope {dt} computed i8 offset"), b, || {
            let off = fx::add(Array::scalar(-3i8), Array::scalar(12i8))?;
            fx::fast::rope(&q, 64, true, Some(10000.0), 1.0, &off, None)
        });
        for fdt in [Dtype::F16, Dtype::Bf16] {
            let freqs = c.array(&[16], fdt, 1.0, 500.0);
            c.check(&format!("fast rope {dt} {fdt} freqs"), b, || {
                fx::fast::rope(&q, 32, false, None, 1.0, 5i32, Some(&freqs))
            });
        }
        rope_cache_writes(c, dt);
    }
    // f64: planned alike, but the product kernels take no f64, so the joined ops run one
    // after another (backend::joined_matmul_parts).
    rope_cache_writes(c, Dtype::F64);
    // A weight (and bias) of another float dtype than x: the op's dtype is their promotion,
    // and the vectors are converted to it on the device.
    for (xdt, wdt, bdt) in [
        (Dtype::F32, Dtype::Bf16, Dtype::F16),
        (Dtype::F16, Dtype::Bf16, Dtype::F32),
        (Dtype::F64, Dtype::F32, Dtype::F64),
    ] {
        let x = c.array(&[3, 700], xdt, -4.0, 4.0);
        let w = c.array(&[700], wdt, 0.5, 1.5);
        let bias = c.array(&[700], bdt, -1.0, 1.0);
        let b = bound(fx::promote_types(xdt, wdt));
        c.check(&format!("fast rms_norm {xdt} x, {wdt} weight"), b, || fx::fast::rms_norm(&x, Some(&w), 1e-5));
        c.check(&format!("fast layer_norm {xdt} x, {wdt} weight, {bdt} bias"), b, || {
            fx::fast::layer_norm(&x, Some(&w), Some(&bias), 1e-5)
        });
    }
    c.no_fallback("fast: no CPU fallback", &row_ops, before);
}

/// The ops an LLM step needs beside matmul and the norms: embedding gathers (no gather may
/// fall back, index arrays of two dtypes included), KV-cache writes and growth, ranges,
/// log-sum-exp, rope with custom frequencies.
fn llm_ops(c: &mut Checker) {
    let before = fallbacks_of(&["Gather"]);
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::F16, Dtype::I32, Dtype::U8] {
        let w = c.array(&[500, 96], dt, -3.0, 3.0);
        for it in [Dtype::I32, Dtype::U32, Dtype::I64] {
            let lo = if it == Dtype::U32 { 0.0 } else { -500.0 };
            let ids = c.array(&[3, 7], it, lo, 500.0);
            c.check(&format!("index take {dt} ids {it}"), 0.0, || fx::take(&w, &ids, Some(0)));
        }
        let wt = fx::transpose(&w, &[1, 0]).unwrap();
        let ids = c.array(&[11], Dtype::I32, 0.0, 96.0);
        c.check(&format!("index take {dt} strided source"), 0.0, || fx::take(&wt, &ids, Some(0)));
        let ids2 = c.array(&[4, 1], Dtype::I32, 0.0, 96.0);
        let ids3 = c.array(&[1, 5], Dtype::I32, 0.0, 500.0);
        c.check(&format!("index gather {dt} two axes"), 0.0, || {
            fx::gather(&w, &[ids3.clone(), ids2.clone()], &[0, 1], &[1, 1])
        });
        // Index arrays of different dtypes (converted to i64 on the device).
        let ids2u = c.array(&[4, 1], Dtype::U8, 0.0, 96.0);
        c.check(&format!("index gather {dt} two axes, i32 and u8 indices"), 0.0, || {
            fx::gather(&w, &[ids3.clone(), ids2u.clone()], &[0, 1], &[1, 1])
        });
        let a = c.array(&[6, 40, 9], dt, -3.0, 3.0);
        let idx = c.array(&[6, 5, 9], Dtype::I32, 0.0, 40.0);
        c.check(&format!("index take_along_axis {dt}"), 0.0, || fx::take_along_axis(&a, &idx, Some(1)));
        // A KV-cache write: one position into [B, H, S, D], and a strided window.
        let buf = c.array(&[2, 4, 64, 32], dt, -3.0, 3.0);
        let upd = c.array(&[2, 4, 1, 32], dt, -3.0, 3.0);
        c.check(&format!("index slice_update {dt} cache write"), 0.0, || {
            fx::slice_update(&buf, &upd, &[0, 0, 17, 0], &[2, 4, 18, 32], &[1, 1, 1, 1])
        });
        let upd2 = c.array(&[4, 8, 16], dt, -3.0, 3.0);
        c.check(&format!("index slice_update {dt} stepped, broadcast"), 0.0, || {
            fx::slice_update(&buf, &upd2, &[1, 0, 3, 0], &[2, 4, 19, 32], &[1, 1, 2, 2])
        });
        // Into an intermediate nothing else holds: written in place (donated), twice in a row
        // as a KV cache is, the second from the first's output.
        let upd3 = c.array(&[2, 4, 1, 32], dt, -3.0, 3.0);
        c.check(&format!("index slice_update {dt} in place, chained"), 0.0, || {
            let t = fx::maximum(&buf, &upd3)?;
            let a = fx::slice_update(&t, &upd, &[0, 0, 17, 0], &[2, 4, 18, 32], &[1, 1, 1, 1])?;
            fx::slice_update(&a, &upd3, &[0, 0, 18, 0], &[2, 4, 19, 32], &[1, 1, 1, 1])
        });
        let p1 = c.array(&[2, 4, 5, 32], dt, -3.0, 3.0);
        c.check(&format!("index concatenate {dt} cache growth"), 0.0, || {
            let z = fx::zeros(&[2, 4, 16, 32], dt)?;
            let view = fx::slice(&buf, &[0, 0, 0, 0], &[2, 4, 10, 32], &[1, 1, 1, 1])?;
            fx::concatenate(&[view, p1.clone(), z], 2)
        });
        c.check(&format!("index arange {dt}"), 0.0, || fx::arange(-7.0, 90.0, 1.5, dt));
    }
    c.no_fallback("index: no CPU fallback (gather)", &["Gather"], before);
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::F16] {
        let x = c.array(&[3, 7, 1000], dt, -8.0, 8.0);
        c.check(&format!("fast logsumexp {dt}"), bound(dt), || fx::logsumexp(&x, Some(&[-1]), true));
        // Two vocabulary-long rows (split across blocks), the second all -inf but one +inf
        // key, and a third all -inf.
        let v = c.array(&[3, 50001], dt, -8.0, 8.0);
        c.check(&format!("fast logsumexp {dt} split rows"), bound(dt), || {
            let inf = fx::full(&[1, 1], f64::INFINITY, dt)?;
            let ninf = fx::full(&[2, 50001], f64::NEG_INFINITY, dt)?;
            let row1 = fx::concatenate(
                &[
                    fx::slice(&ninf, &[0, 0], &[1, 30000], &[1, 1])?,
                    inf,
                    fx::slice(&ninf, &[0, 0], &[1, 20000], &[1, 1])?,
                ],
                1,
            )?;
            let x = fx::concatenate(
                &[
                    fx::slice(&v, &[0, 0], &[1, 50001], &[1, 1])?,
                    row1,
                    fx::slice(&ninf, &[1, 0], &[2, 50001], &[1, 1])?,
                ],
                0,
            )?;
            fx::logsumexp(&x, Some(&[-1]), true)
        });
        let q = c.array(&[1, 4, 9, 64], dt, -1.0, 1.0);
        let freqs = c.array(&[32], Dtype::F32, 1.0, 5000.0);
        c.check(&format!("fast rope {dt} custom freqs"), bound(dt), || {
            fx::fast::rope(&q, 64, false, None, 1.0, 40i32, Some(&freqs))
        });
    }
}

/// Attention: the split-KV decode kernel (few rows per kv head) and the flash kernel (many),
/// with grouped heads, every mask kind, a KV-cache view (strided keys) and head sizes 64–256;
/// f64 (every case) through its warp-a-row kernel. None may fall back to the CPU.
fn attention(c: &mut Checker) {
    use fx::fast::{scaled_dot_product_attention as sdpa, SdpaMask};
    let before = fallbacks_of(&["Attention"]);
    /// (name, B, Hq, Hkv, L, S, D, Dv)
    type Case = (&'static str, usize, usize, usize, usize, usize, usize, usize);
    let cases: [Case; 13] = [
        ("decode", 2, 8, 2, 1, 37, 64, 64),
        // Sixteen rows of one kv head: four blocks of the keys-across-lanes kernel.
        ("decode 16 rows", 1, 16, 1, 1, 333, 128, 128),
        ("decode long", 1, 32, 8, 1, 1000, 64, 64),
        // One kv head: the most key splits (the combine pass's 256), and its scalar path (Dv 35).
        ("decode many splits", 1, 2, 1, 1, 5000, 64, 64),
        ("decode dv35", 1, 4, 1, 1, 700, 40, 35),
        ("decode d128", 1, 8, 8, 1, 300, 128, 128),
        ("decode d256 L2", 1, 4, 2, 2, 200, 256, 256),
        ("decode L3", 1, 8, 2, 3, 130, 64, 64),
        ("prefill", 1, 8, 2, 100, 100, 64, 64),
        ("prefill S>L", 2, 4, 4, 70, 90, 128, 128),
        ("prefill dv96", 1, 6, 2, 40, 77, 80, 96),
        ("prefill d256", 1, 2, 1, 45, 45, 256, 256),
        // More queries than keys: under the causal mask the first 50 see none (the mean of v,
        // as MLX; ops::fast computes them apart from the kernels).
        ("prefill L>S", 1, 8, 2, 90, 40, 64, 64),
    ];
    for dt in FLOATS {
        let bd = bound(dt);
        for (name, b, hq, hkv, l, s, d, dv) in cases {
            let q = c.array(&[b, hq, l, d], dt, -1.0, 1.0);
            let k = c.array(&[b, hkv, s, d], dt, -1.0, 1.0);
            let v = c.array(&[b, hkv, s, dv], dt, -1.0, 1.0);
            let scale = 1.0 / (d as f32).sqrt();
            c.check(&format!("attention {name} {dt} none"), bd, || sdpa(&q, &k, &v, scale, SdpaMask::None));
            c.check(&format!("attention {name} {dt} causal"), bd, || sdpa(&q, &k, &v, scale, SdpaMask::Causal));
            let add = c.array(&[l, s], dt, -2.0, 2.0);
            c.check(&format!("attention {name} {dt} additive"), bd, || {
                sdpa(&q, &k, &v, scale, SdpaMask::Array(add.clone()))
            });
            let keep = c.array(&[b, 1, l, s], Dtype::Bool, 0.3, 2.0);
            c.check(&format!("attention {name} {dt} bool"), bd, || {
                sdpa(&q, &k, &v, scale, SdpaMask::Array(keep.clone()))
            });
        }
        // Keys and values as a view of a larger cache buffer (positions 0..S of 256).
        let q = c.array(&[1, 8, 1, 64], dt, -1.0, 1.0);
        let kb = c.array(&[1, 2, 256, 64], dt, -1.0, 1.0);
        let vb = c.array(&[1, 2, 256, 64], dt, -1.0, 1.0);
        for (l, s) in [(1usize, 150usize), (60, 150)] {
            let q = if l == 1 { q.clone() } else { c.array(&[1, 8, l, 64], dt, -1.0, 1.0) };
            c.check(&format!("attention cache view L{l} {dt}"), bd, || {
                let k = fx::slice(&kb, &[0, 0, 0, 0], &[1, 2, s as isize, 64], &[1, 1, 1, 1])?;
                let v = fx::slice(&vb, &[0, 0, 0, 0], &[1, 2, s as isize, 64], &[1, 1, 1, 1])?;
                sdpa(&q, &k, &v, 0.125, SdpaMask::Causal)
            });
        }
    }
    c.no_fallback("attention: no CPU fallback", &["Attention"], before);
}

/// Quantized products (affine, mxfp4, nvfp4, mxfp8): the matrix-vector kernel (1–8 rows) and
/// dequantize + cuBLAS.
fn quantized(c: &mut Checker) {
    use fx::primitives::QuantMode;
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::F16] {
        for (bits, gs) in [(4usize, 64usize), (8, 64), (2, 32), (3, 64), (5, 128), (6, 64), (4, 128), (8, 32)] {
            let (n, k) = (128, 256);
            let w = c.array(&[n, k], dt, -1.0, 1.0);
            let (wq, s, b) = cpu(|| fx::quantize(&w, gs, bits, QuantMode::Affine)).unwrap();
            let b = b.unwrap();
            for rows in [1usize, 3, 8, 37] {
                let x = c.array(&[rows, k], dt, -1.0, 1.0);
                c.check(&format!("quantized qmm {dt} {bits}-bit g{gs} rows {rows}"), bound(dt), || {
                    fx::quantized_matmul(&x, &wq, &s, Some(&b), true, gs, bits, QuantMode::Affine)
                });
            }
            let x = c.array(&[5, k], dt, -1.0, 1.0);
            let (wq2, s2, b2) =
                cpu(|| fx::quantize(&fx::transpose(&w, &[1, 0])?, gs, bits, QuantMode::Affine)).unwrap();
            let b2 = b2.unwrap();
            c.check(&format!("quantized qmm {dt} {bits}-bit g{gs} not transposed"), bound(dt), || {
                fx::quantized_matmul(&x, &wq2, &s2, Some(&b2), false, gs, bits, QuantMode::Affine)
            });
            c.check(&format!("quantized dequantize {dt} {bits}-bit g{gs}"), bound(dt), || {
                fx::dequantize(&wq, &s, Some(&b), gs, bits, QuantMode::Affine, None)
            });
        }
        // The decode kernel with features past a block's end (100, 8 a block), k of 64 packs
        // split between warps, and x a view that starts off a 16-byte boundary.
        let w = c.array(&[100, 2048], dt, -1.0, 1.0);
        let xs = c.array(&[3, 2049], dt, -1.0, 1.0);
        for bits in [4usize, 3] {
            let (wq, s, b) = cpu(|| fx::quantize(&w, 64, bits, QuantMode::Affine)).unwrap();
            let b = b.unwrap();
            c.check(&format!("quantized qmm {dt} {bits}-bit 100 x 2048, 3 rows"), bound(dt), || {
                let x = fx::slice(&xs, &[0, 0], &[3, 2048], &[1, 1])?;
                fx::quantized_matmul(&fx::contiguous(&x)?, &wq, &s, Some(&b), true, 64, bits, QuantMode::Affine)
            });
            c.check(&format!("quantized qmm {dt} {bits}-bit 100 x 2048, x off 16 bytes"), bound(dt), || {
                let x = fx::slice(&xs, &[1, 1], &[2, 2049], &[1, 1])?;
                fx::quantized_matmul(&x, &wq, &s, Some(&b), true, 64, bits, QuantMode::Affine)
            });
        }
        // The floating-point formats (no biases): FP4 / FP8 codes with E8M0 or FP8 scales.
        for mode in [QuantMode::Mxfp4, QuantMode::Nvfp4, QuantMode::Mxfp8] {
            let (gs, bits) = mode.defaults();
            let (n, k) = (96, 256);
            let w = c.array(&[n, k], dt, -1.0, 1.0);
            let (wq, s, _) = cpu(|| fx::quantize(&w, gs, bits, mode)).unwrap();
            let m = mode.name();
            for rows in [1usize, 3, 8, 37] {
                let x = c.array(&[rows, k], dt, -1.0, 1.0);
                c.check(&format!("quantized qmm {dt} {m} rows {rows}"), bound(dt), || {
                    fx::quantized_matmul(&x, &wq, &s, None, true, gs, bits, mode)
                });
            }
            let (wq2, s2, _) = cpu(|| fx::quantize(&fx::transpose(&w, &[1, 0])?, gs, bits, mode)).unwrap();
            let x = c.array(&[5, k], dt, -1.0, 1.0);
            c.check(&format!("quantized qmm {dt} {m} not transposed"), bound(dt), || {
                fx::quantized_matmul(&x, &wq2, &s2, None, false, gs, bits, mode)
            });
            c.check(&format!("quantized dequantize {dt} {m}"), bound(dt), || {
                fx::dequantize(&wq, &s, None, gs, bits, mode, None)
            });
            let we = c.array(&[6, 64, 128], dt, -1.0, 1.0);
            let (wqe, se, _) = cpu(|| fx::quantize(&we, gs, bits, mode)).unwrap();
            let x = c.array(&[4, 1, 2, 128], dt, -1.0, 1.0);
            let idx = c.array(&[4, 2], Dtype::U32, 0.0, 6.0);
            c.check(&format!("quantized gather_qmm {dt} {m}"), bound(dt), || {
                fx::gather_qmm(&x, &wqe, &se, None, None, Some(&idx), true, gs, bits, mode, false)
            });
        }
        quantized_joins(c, dt);
        // MoE experts: 6 stacked matrices, 4 tokens each routed to 2 of them.
        let we = c.array(&[6, 64, 128], dt, -1.0, 1.0);
        let (wq, s, b) = cpu(|| fx::quantize(&we, 64, 4, QuantMode::Affine)).unwrap();
        let b = b.unwrap();
        for rows in [1usize, 2] {
            let x = c.array(&[4, 1, rows, 128], dt, -1.0, 1.0);
            let idx = c.array(&[4, 2], Dtype::U32, 0.0, 6.0);
            c.check(&format!("quantized gather_qmm {dt} rows {rows}"), bound(dt), || {
                fx::gather_qmm(&x, &wq, &s, Some(&b), None, Some(&idx), true, 64, 4, QuantMode::Affine, false)
            });
        }
    }
}

/// The work before and after a quantized decode product joined into its kernel
/// (backend/cuda/join.rs): an `rms_norm` read only by the product (with and without a weight),
/// a residual added to its output (either operand order), both; 1 and 2 rows, 4- and 3-bit,
/// 100 features (past a block's end). Not joined: 8 rows, a product read twice, a residual of
/// another shape (broadcast). The join counter must match.
fn quantized_joins(c: &mut Checker, dt: Dtype) {
    use fx::primitives::QuantMode;
    let b = bound(dt);
    let (n, k) = (100, 512);
    let w = c.array(&[n, k], dt, -1.0, 1.0);
    let g = c.array(&[k], dt, 0.5, 1.5);
    let (x1, x2, x8) =
        (c.array(&[1, 1, k], dt, -1.0, 1.0), c.array(&[2, k], dt, -1.0, 1.0), c.array(&[8, k], dt, -1.0, 1.0));
    let (r1, r2, r8) =
        (c.array(&[1, 1, n], dt, -1.0, 1.0), c.array(&[2, n], dt, -1.0, 1.0), c.array(&[8, n], dt, -1.0, 1.0));
    // k as long as 2 048 features or longer: the long-k kernel (qmv_long_*), plain and joined.
    let wl = c.array(&[2048, 2048], dt, -1.0, 1.0);
    let (xl1, xl2) = (c.array(&[1, 1, 2048], dt, -1.0, 1.0), c.array(&[2, 2048], dt, -1.0, 1.0));
    let rl2 = c.array(&[2, 2048], dt, -1.0, 1.0);
    let before = ferrox::backend::cuda::joined_products();
    // Joins expected: one a check of the first four, two for the norm and the residual.
    let mut want = 0;
    for bits in [4usize, 3] {
        let (wq, s, bq) = cpu(|| fx::quantize(&wl, 64, bits, QuantMode::Affine)).unwrap();
        let qmm = |x: &Array| fx::quantized_matmul(x, &wq, &s, bq.as_ref(), true, 64, bits, QuantMode::Affine);
        c.check(&format!("quantized-join {dt} {bits}-bit long k, 1 row"), b, || qmm(&xl1));
        let n0 = c.results.len();
        c.check(&format!("quantized-join {dt} {bits}-bit long k, joined residual, 2 rows"), b, || {
            fx::add(&qmm(&xl2)?, &rl2)
        });
        want += c.results.len() - n0;
    }
    for bits in [4usize, 3] {
        let (wq, s, bq) = cpu(|| fx::quantize(&w, 64, bits, QuantMode::Affine)).unwrap();
        let bq = bq.unwrap();
        let qmm = |x: &Array| fx::quantized_matmul(x, &wq, &s, Some(&bq), true, 64, bits, QuantMode::Affine);
        let normed = |x: &Array, g: Option<&Array>| fx::fast::rms_norm(x, g, 1e-5);
        let name = |what: &str| format!("quantized-join {dt} {bits}-bit {what}");
        let n0 = c.results.len();
        c.check(&name("joined rms_norm, 1 row"), b, || qmm(&normed(&x1, Some(&g))?));
        c.check(&name("joined rms_norm, 2 rows, no weight"), b, || qmm(&normed(&x2, None)?));
        c.check(&name("joined residual, 1 row"), b, || fx::add(&qmm(&x1)?, &r1));
        c.check(&name("joined residual first, 2 rows"), b, || fx::add(&r2, &qmm(&x2)?));
        want += c.results.len() - n0;
        let n0 = c.results.len();
        c.check(&name("joined rms_norm and residual, 1 row"), b, || fx::add(&r1, &qmm(&normed(&x1, Some(&g))?)?));
        want += 2 * (c.results.len() - n0);
        c.check(&name("rms_norm, 8 rows, residual (not joined)"), b, || fx::add(&r8, &qmm(&normed(&x8, Some(&g))?)?));
        c.check(&name("read twice, residual (not joined)"), b, || {
            let p = qmm(&x1)?;
            fx::concatenate(&[fx::add(&p, &r1)?, p], 2)
        });
        c.check(&name("broadcast residual (not joined)"), b, || fx::add(&qmm(&x2)?, &fx::slice_axis(&r2, 0, 0, 1)?));
    }
    c.joins(&format!("quantized-join {dt}: joins"), before, want);
}

/// Quantization on the GPU (bit for bit: every part compared exactly), gather_mm and
/// gather_qmm through the tiled kernel (many rows, no transpose, sorted indices over a
/// prompt's rows, unsorted ones over a tile), `quantized_matmul` of a stack of matrices, and
/// that none of it fell back to the CPU.
fn quantized_more(c: &mut Checker) {
    use fx::primitives::QuantMode;
    let before = fallbacks_of(&["Quantized", "GatherMm"]);
    let part = |q: (Array, Array, Option<Array>), i: usize| match i {
        0 => q.0,
        1 => q.1,
        _ => q.2.unwrap(),
    };
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::F16] {
        let w = c.array(&[48, 256], dt, -1.0, 1.0);
        for (bits, gs) in [(1usize, 32usize), (2, 32), (3, 64), (4, 64), (5, 128), (6, 64), (8, 32), (4, 128)] {
            for (i, name) in ["packed", "scales", "biases"].iter().enumerate() {
                c.check(&format!("quantized quantize {dt} {bits}-bit g{gs} {name}"), 0.0, || {
                    Ok(part(fx::quantize(&w, gs, bits, QuantMode::Affine)?, i))
                });
            }
        }
        // A constant group and one with a single nonzero value (the nudged edge cases).
        let edge = cpu(|| {
            let z = fx::zeros(&[2, 64], dt)?;
            let one = fx::concatenate(&[fx::full(&[1, 64], 0.5f32, dt)?, fx::zeros(&[1, 64], dt)?], 0)?;
            let e = fx::add(&z, &one)?;
            e.eval()?;
            Ok::<_, fx::Error>(e)
        })
        .unwrap();
        for (i, name) in ["packed", "scales", "biases"].iter().enumerate() {
            c.check(&format!("quantized quantize {dt} 4-bit constant groups {name}"), 0.0, || {
                Ok(part(fx::quantize(&edge, 32, 4, QuantMode::Affine)?, i))
            });
        }
        for mode in [QuantMode::Mxfp4, QuantMode::Nvfp4, QuantMode::Mxfp8] {
            let (gs, bits) = mode.defaults();
            let m = mode.name();
            // Spread magnitudes so scales cover many exponents.
            let wide = cpu(|| fx::multiply(&w, &fx::exp(&fx::multiply(&w, 6.0f32)?)?)).unwrap();
            for (i, name) in ["packed", "scales"].iter().enumerate() {
                c.check(&format!("quantized quantize {dt} {m} {name}"), 0.0, || {
                    Ok(part(fx::quantize(&wide, gs, bits, mode)?, i))
                });
            }
        }
        // gather_qmm through the tiled kernel: 6 matrices of 96 x 128 (4-bit and 3-bit affine,
        // mxfp4), x of 12 rows a matrix, and without the transpose.
        // (Without the transpose the stored matrices are [K 128, N 192]: packed along N.)
        let we = c.array(&[6, 96, 128], dt, -1.0, 1.0);
        let wn = c.array(&[6, 128, 192], dt, -1.0, 1.0);
        for (mode, bits, gs) in
            [(QuantMode::Affine, 4usize, 64usize), (QuantMode::Affine, 3, 32), (QuantMode::Mxfp4, 4, 32)]
        {
            let m = if mode == QuantMode::Affine { format!("{bits}-bit") } else { mode.name().to_string() };
            let (wq, s, b) = cpu(|| fx::quantize(&we, gs, bits, mode)).unwrap();
            let (wqt, st, bt) = cpu(|| fx::quantize(&wn, gs, bits, mode)).unwrap();
            let x = c.array(&[4, 1, 12, 128], dt, -1.0, 1.0);
            let idx = c.array(&[4, 2], Dtype::U32, 0.0, 6.0);
            c.check(&format!("quantized gather_qmm {dt} {m} 12 rows (tiled)"), bound(dt), || {
                fx::gather_qmm(&x, &wq, &s, b.as_ref(), None, Some(&idx), true, gs, bits, mode, false)
            });
            let x3 = c.array(&[4, 1, 3, 128], dt, -1.0, 1.0);
            c.check(&format!("quantized gather_qmm {dt} {m} not transposed (tiled)"), bound(dt), || {
                fx::gather_qmm(&x3, &wqt, &st, bt.as_ref(), None, Some(&idx), false, gs, bits, mode, false)
            });
            // A prompt's rows routed to experts: 150 tokens x top-2, sorted by expert (as
            // mlx-lm's MoE layers sort them), each a row of x; then the same unsorted with more rows.
            let xs = c.array(&[300, 1, 128], dt, -1.0, 1.0);
            let ri: Vec<u32> = {
                let mut v: Vec<u32> = (0..300).map(|_| c.rng.uniform(0.0, 6.0) as u32).collect();
                v.sort();
                v
            };
            let rsorted = Array::from_slice(&ri, &[300]).unwrap();
            let li: Vec<u32> = (0..300).collect();
            let lidx = Array::from_slice(&li, &[300]).unwrap();
            c.check(&format!("quantized gather_qmm {dt} {m} 300 sorted rows (tiled)"), bound(dt), || {
                fx::gather_qmm(&xs, &wq, &s, b.as_ref(), Some(&lidx), Some(&rsorted), true, gs, bits, mode, true)
            });
            let x2 = c.array(&[70, 2, 9, 128], dt, -1.0, 1.0);
            let i2 = c.array(&[70, 2], Dtype::U32, 0.0, 6.0);
            c.check(&format!("quantized gather_qmm {dt} {m} 1260 unsorted rows (tiled)"), bound(dt), || {
                fx::gather_qmm(&x2, &wq, &s, b.as_ref(), None, Some(&i2), true, gs, bits, mode, false)
            });
            // quantized_matmul of a stack: x [2, 1, 5, 128] against [1, 6, 96, 128] (broadcast).
            let xb = c.array(&[2, 1, 5, 128], dt, -1.0, 1.0);
            let wq4 = fx::reshape(&wq, &[1, 6, 96, -1]).unwrap();
            let s4 = fx::reshape(&s, &[1, 6, 96, -1]).unwrap();
            let b4 = b.as_ref().map(|b| fx::reshape(b, &[1, 6, 96, -1]).unwrap());
            c.check(&format!("quantized qmm {dt} {m} batched matrices (tiled)"), bound(dt), || {
                fx::quantized_matmul(&xb, &wq4, &s4, b4.as_ref(), true, gs, bits, mode)
            });
        }
        // gather_mm (dense): b as given and as a transposed view (a Linear's weight).
        let a = c.array(&[5, 20, 72], dt, -1.0, 1.0);
        let bm = c.array(&[6, 72, 100], dt, -1.0, 1.0);
        let bt = fx::transpose(&c.array(&[6, 100, 72], dt, -1.0, 1.0), &[0, 2, 1]).unwrap();
        let (li, ri) = (c.array(&[3, 4], Dtype::U32, 0.0, 5.0), c.array(&[3, 4], Dtype::U32, 0.0, 6.0));
        for (name, b) in [("row-major", &bm), ("transposed view", &bt)] {
            c.check(&format!("quantized gather_mm {dt} {name}"), bound(dt), || {
                fx::gather_mm(&a, b, Some(&li), Some(&ri), false)
            });
        }
    }
    c.no_fallback("quantized: no CPU fallback", &["Quantized", "GatherMm"], before);
}

/// Values with many ties (for stability) and, for floats, NaN and signed zeros.
fn tied(c: &mut Checker, shape: &[usize], dt: Dtype) -> Array {
    let (lo, hi) = match dt {
        Dtype::Bool => (0.0, 2.0),
        d if d.is_float() => (-2.0, 2.0),
        Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => (0.0, 9.0),
        _ => (-5.0, 5.0),
    };
    let x = c.array(shape, dt, lo, hi);
    if !dt.is_float() {
        return x;
    }
    cpu(|| {
        // Quarters (ties), some NaN, some -0.
        let q = fx::divide(&fx::floor(&fx::multiply(&x, 4.0f32)?)?, 4.0f32)?;
        let q = fx::where_(&fx::greater(&x, 1.7f32)?, f32::NAN, &q)?;
        let q = fx::where_(&fx::equal(&q, 0.0f32)?, -0.0f32, &q)?;
        let q = fx::astype(&q, dt)?;
        q.eval()?;
        Ok::<_, fx::Error>(q)
    })
    .unwrap()
}

/// Whether `p` is partitioned around position `k` of `axis` (a bool scalar): nothing before
/// it greater, nothing after it less.
fn partitioned(p: &Array, k: usize, axis: usize) -> fx::Result<Array> {
    let n = p.shape()[axis] as isize;
    let k = k as isize;
    let at = fx::slice_axis(p, axis as isize, k, k + 1)?;
    let before = fx::slice_axis(p, axis as isize, 0, k)?;
    let after = fx::slice_axis(p, axis as isize, k + 1, n)?;
    let ok_before = fx::all(&fx::less_equal(&before, &at)?, None, false)?;
    let ok_after = fx::all(&fx::greater_equal(&after, &at)?, None, false)?;
    fx::logical_and(&ok_before, &ok_after)
}

/// Sort, argsort (stable: with ties, the CPU's order exactly), partition and argpartition
/// (checked by the partition property and as permutations), topk; short lines (one block),
/// long ones (merges across blocks) and vocabulary-sized ones.
fn sorting(c: &mut Checker) {
    for dt in Dtype::ALL {
        let x = tied(c, &[6, 130, 9], dt);
        for ax in [0isize, 1, 2] {
            c.check(&format!("sort sort {dt} axis {ax}"), 0.0, || fx::sort(&x, Some(ax)));
            c.check(&format!("sort argsort {dt} axis {ax}"), 0.0, || fx::argsort(&x, Some(ax)));
        }
        c.check(&format!("sort sort {dt} flattened"), 0.0, || fx::sort(&x, None));
        if dt == Dtype::Bool {
            continue;
        }
        // No NaN for the partition property (NaN compares false).
        let y = c.array(&[6, 130, 9], dt, if dt.is_float() { -2.0 } else { 0.0 }, 9.0);
        for k in [0usize, 17, 129] {
            c.check(&format!("sort partition {dt} k={k} property"), 0.0, || {
                partitioned(&fx::partition(&y, k, Some(1))?, k, 1)
            });
            c.check(&format!("sort partition {dt} k={k} permutation"), 0.0, || {
                fx::sort(&fx::partition(&y, k, Some(1))?, Some(1))
            });
            c.check(&format!("sort argpartition {dt} k={k} property"), 0.0, || {
                partitioned(&fx::take_along_axis(&y, &fx::argpartition(&y, k, Some(1))?, Some(1))?, k, 1)
            });
            c.check(&format!("sort argpartition {dt} k={k} permutation"), 0.0, || {
                fx::sort(&fx::argpartition(&y, k, Some(1))?, Some(1))
            });
        }
    }
    for (dt, n) in [(Dtype::F32, 5000usize), (Dtype::Bf16, 3000), (Dtype::I64, 70_000), (Dtype::F64, 4097)] {
        let x = tied(c, &[3, n], dt);
        c.check(&format!("sort argsort {dt} long {n}"), 0.0, || fx::argsort(&x, Some(1)));
        c.check(&format!("sort sort {dt} long {n} strided"), 0.0, || fx::sort(&fx::transpose(&x, &[1, 0])?, Some(0)));
    }
    for dt in [Dtype::F32, Dtype::Bf16] {
        let logits = c.array(&[2, 151_936], dt, -10.0, 10.0);
        c.check(&format!("sort topk {dt} vocab k=50"), 0.0, || fx::sort(&fx::topk(&logits, 50, Some(-1))?, Some(-1)));
        c.check(&format!("sort argsort {dt} vocab"), 0.0, || fx::argsort(&logits, Some(-1)));
    }
}

/// Scatters in every mode with repeated and negative indices (and index arrays of two
/// dtypes): assignments must keep the CPU's last-wins order exactly. None may fall back.
fn scatters(c: &mut Checker) {
    use fx::primitives::ScatterMode;
    let before = fallbacks_of(&["Scatter", "PutAlongAxis"]);
    let modes = [
        ("assign", ScatterMode::Assign),
        ("add", ScatterMode::Add),
        ("prod", ScatterMode::Prod),
        ("max", ScatterMode::Max),
        ("min", ScatterMode::Min),
    ];
    for dt in
        [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::F64, Dtype::I32, Dtype::U8, Dtype::I64, Dtype::I16, Dtype::Bool]
    {
        let (lo, hi) = match dt {
            Dtype::Bool => (0.0, 2.0),
            d if d.is_float() => (0.8, 1.25),
            _ => (-3.0, 4.0),
        };
        let b = if dt.is_float() { bound(dt) } else { 0.0 };
        let a = c.array(&[20, 7, 5], dt, lo, hi);
        let idx = c.array(&[12], Dtype::I32, -20.0, 20.0);
        let upd = c.array(&[12, 1, 7, 5], dt, lo, hi);
        let upd_part = c.array(&[12, 1, 3, 5], dt, lo, hi);
        let i0 = c.array(&[4, 1], Dtype::I64, 0.0, 20.0);
        let i2 = c.array(&[1, 3], Dtype::I64, -5.0, 5.0);
        let i2s = c.array(&[1, 3], Dtype::I16, -5.0, 5.0);
        let upd2 = c.array(&[4, 3, 1, 7, 1], dt, lo, hi);
        let t = c.array(&[6, 40, 9], dt, lo, hi);
        let ti = c.array(&[6, 5, 9], Dtype::I32, -40.0, 40.0);
        let tv = c.array(&[6, 5, 9], dt, lo, hi);
        let row = c.array(&[1, 5, 1], Dtype::U32, 0.0, 40.0);
        for (name, mode) in modes {
            if dt == Dtype::Bool && mode == ScatterMode::Prod {
                continue;
            }
            let f = move |a: &Array, i: &[Array], u: &Array, ax: &[isize]| match mode {
                ScatterMode::Assign => fx::scatter(a, i, u, ax),
                ScatterMode::Add => fx::scatter_add(a, i, u, ax),
                ScatterMode::Prod => fx::scatter_prod(a, i, u, ax),
                ScatterMode::Max => fx::scatter_max(a, i, u, ax),
                ScatterMode::Min => fx::scatter_min(a, i, u, ax),
            };
            c.check(&format!("scatter {name} {dt} axis 0"), b, || f(&a, std::slice::from_ref(&idx), &upd, &[0]));
            c.check(&format!("scatter {name} {dt} partial slice"), b, || {
                f(&a, std::slice::from_ref(&idx), &upd_part, &[0])
            });
            c.check(&format!("scatter {name} {dt} two axes"), b, || f(&a, &[i0.clone(), i2.clone()], &upd2, &[0, 2]));
            c.check(&format!("scatter {name} {dt} two axes, i64 and i16 indices"), b, || {
                f(&a, &[i0.clone(), i2s.clone()], &upd2, &[0, 2])
            });
            c.check(&format!("scatter put_along_axis {name} {dt}"), b, || {
                fx::scatter_along_axis(&t, &ti, &tv, Some(1), mode)
            });
            c.check(&format!("scatter put_along_axis {name} {dt} broadcast"), b, || {
                fx::scatter_along_axis(&t, &row, &tv, Some(1), mode)
            });
        }
    }
    c.no_fallback("scatter: no CPU fallback", &["Scatter", "PutAlongAxis"], before);
}

/// Random bits bit for bit, and the samplers built on them.
fn random(c: &mut Checker) {
    use fx::random;
    let key = random::key(c.rng.next());
    for (shape, width) in [
        (vec![1000usize, 37], 4usize),
        (vec![7], 4),
        (vec![1], 4),
        (vec![3, 333], 1),
        (vec![1001], 2),
        (vec![3], 1),
        (vec![5], 2),
    ] {
        c.check(&format!("random bits {shape:?} width {width}"), 0.0, || random::bits(&shape, width, Some(&key)));
    }
    c.check("random split", 0.0, || random::split(&key, 7));
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::F16] {
        c.check(&format!("random uniform {dt}"), bound(dt), || {
            random::uniform(-2.0f32, 3.0f32, &[64, 129], dt, Some(&key))
        });
        c.check(&format!("random normal {dt}"), bound(dt), || {
            random::normal(&[64, 129], dt, 0.5f32, 2.0f32, Some(&key))
        });
    }
    c.check("random randint i32", 0.0, || random::randint(-50i32, 50i32, &[999], Dtype::I32, Some(&key)));
}

/// Convolutions through im2col + cuBLAS: 1-D (a Whisper-style stem), 2-D with strides,
/// padding, dilation, groups and depthwise, transposed (input dilation, flipped kernel),
/// 3-D, and a strided input.
fn convolutions(c: &mut Checker) {
    for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::F64] {
        let b = bound(dt);
        let x1 = c.array(&[2, 100, 80], dt, -1.0, 1.0);
        let w1 = c.array(&[64, 3, 80], dt, -1.0, 1.0);
        c.check(&format!("conv conv1d {dt} pad 1"), b, || fx::conv1d(&x1, &w1, 1, 1, 1, 1));
        c.check(&format!("conv conv1d {dt} stride 2 dilation 2"), b, || fx::conv1d(&x1, &w1, 2, 3, 2, 1));
        let w1g = c.array(&[64, 5, 20], dt, -1.0, 1.0);
        c.check(&format!("conv conv1d {dt} groups 4"), b, || fx::conv1d(&x1, &w1g, 1, 2, 1, 4));
        let xt = fx::transpose(&c.array(&[100, 2, 80], dt, -1.0, 1.0), &[1, 0, 2]).unwrap();
        c.check(&format!("conv conv1d {dt} strided input"), b, || fx::conv1d(&xt, &w1, 1, 0, 1, 1));
        let wt = c.array(&[16, 4, 80], dt, -1.0, 1.0);
        c.check(&format!("conv conv_transpose1d {dt}"), b, || fx::conv_transpose1d(&x1, &wt, 2, 1, 1, 1, 1));
        let x2 = c.array(&[2, 17, 19, 6], dt, -1.0, 1.0);
        let w2 = c.array(&[8, 3, 3, 6], dt, -1.0, 1.0);
        c.check(&format!("conv conv2d {dt}"), b, || fx::conv2d(&x2, &w2, (1, 1), (1, 1), (1, 1), 1));
        c.check(&format!("conv conv2d {dt} stride pad dilation"), b, || {
            fx::conv2d(&x2, &w2, (2, 1), (1, 2), (1, 2), 1)
        });
        let w2g = c.array(&[8, 3, 3, 3], dt, -1.0, 1.0);
        c.check(&format!("conv conv2d {dt} groups 2"), b, || fx::conv2d(&x2, &w2g, (1, 2), (0, 1), (1, 1), 2));
        let w2d = c.array(&[6, 3, 3, 1], dt, -1.0, 1.0);
        c.check(&format!("conv conv2d {dt} depthwise"), b, || fx::conv2d(&x2, &w2d, (1, 1), (1, 1), (1, 1), 6));
        let w2p = c.array(&[12, 1, 1, 6], dt, -1.0, 1.0);
        c.check(&format!("conv conv2d {dt} 1x1"), b, || fx::conv2d(&x2, &w2p, (1, 1), (0, 0), (1, 1), 1));
        let x3 = c.array(&[1, 6, 7, 8, 4], dt, -1.0, 1.0);
        let w3 = c.array(&[5, 2, 3, 2, 4], dt, -1.0, 1.0);
        c.check(&format!("conv conv3d {dt}"), b, || fx::conv3d(&x3, &w3, (1, 2, 1), (1, 0, 1), (1, 1, 2), 1));
    }
}

/// The fused backward kernels: the input gradients of rms_norm and layer_norm (NormVjp) with
/// the weight gradients made from them by ordinary ops (also with a weight of another dtype
/// than x), and attention's (AttentionVjp, f64 too). None may fall back to the CPU.
fn backward(c: &mut Checker) {
    let fused_ops = ["NormVjp", "AttentionVjp", "Attention", "RmsNorm", "LayerNorm"];
    let before = fallbacks_of(&fused_ops);
    type Norm = fn(&Array, Option<&Array>) -> fx::Result<Array>;
    let norms: [(&str, Norm); 2] = [
        ("rms_norm", |x, w| fx::fast::rms_norm(x, w, 1e-5)),
        ("layer_norm", |x, w| fx::fast::layer_norm(x, w, None, 1e-5)),
    ];
    for dt in [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::F64] {
        let x = c.array(&[3, 5, 777], dt, -2.0, 2.0);
        let w = c.array(&[777], dt, 0.5, 1.5);
        let ct = c.array(&[3, 5, 777], dt, -1.0, 1.0);
        for (name, norm) in norms {
            let b = bound(dt);
            c.check(&format!("backward {name} vjp {dt} dx"), b, || {
                let (_, g) = fx::vjp(
                    |a| Ok(vec![norm(&a[0], Some(&a[1]))?]),
                    &[x.clone(), w.clone()],
                    std::slice::from_ref(&ct),
                )?;
                Ok(g[0].clone())
            });
            c.check(&format!("backward {name} vjp {dt} dw"), b, || {
                let (_, g) = fx::vjp(
                    |a| Ok(vec![norm(&a[0], Some(&a[1]))?]),
                    &[x.clone(), w.clone()],
                    std::slice::from_ref(&ct),
                )?;
                Ok(g[1].clone())
            });
            c.check(&format!("backward {name} vjp {dt} dx no weight"), b, || {
                let (_, g) =
                    fx::vjp(|a| Ok(vec![norm(&a[0], None)?]), std::slice::from_ref(&x), std::slice::from_ref(&ct))?;
                Ok(g[0].clone())
            });
        }
    }
    // A bf16 weight on an f32 x: the op's dtype is f32, the weight is converted on the device.
    let x = c.array(&[4, 300], Dtype::F32, -2.0, 2.0);
    let w = c.array(&[300], Dtype::Bf16, 0.5, 1.5);
    let ct = c.array(&[4, 300], Dtype::F32, -1.0, 1.0);
    for (name, norm) in norms {
        c.check(&format!("backward {name} vjp float32 x, bfloat16 weight dx"), bound(Dtype::F32), || {
            let (_, g) =
                fx::vjp(|a| Ok(vec![norm(&a[0], Some(&a[1]))?]), &[x.clone(), w.clone()], std::slice::from_ref(&ct))?;
            Ok(g[0].clone())
        });
    }
    // Attention's gradients (AttentionVjp): grouped heads, every mask kind, S > L, Dv != D.
    use fx::fast::{scaled_dot_product_attention as sdpa, SdpaMask};
    /// (name, B, Hq, Hkv, L, S, D, Dv, mask: 0 none, 1 causal, 2 additive, 3 bool)
    type Case = (&'static str, usize, usize, usize, usize, usize, usize, usize, u8);
    // The last two have scores enough (L · S ≥ 4096) for the products over materialized
    // probabilities (ops::fast::attention_vjp), the others run the fused kernel.
    let cases: [Case; 7] = [
        ("causal gqa", 1, 4, 2, 33, 33, 64, 64, 1),
        ("none", 2, 2, 2, 20, 45, 32, 32, 0),
        ("additive dv96", 1, 3, 1, 17, 40, 80, 96, 2),
        ("bool d128", 1, 2, 2, 9, 70, 128, 128, 3),
        ("decode d256", 2, 8, 2, 1, 50, 256, 256, 1),
        ("causal gqa products", 1, 4, 2, 80, 80, 64, 64, 1),
        ("bool products", 2, 2, 1, 64, 100, 64, 48, 3),
    ];
    for dt in FLOATS {
        for (name, b, hq, hkv, l, s, d, dv, mk) in cases {
            let q = c.array(&[b, hq, l, d], dt, -1.0, 1.0);
            let k = c.array(&[b, hkv, s, d], dt, -1.0, 1.0);
            let v = c.array(&[b, hkv, s, dv], dt, -1.0, 1.0);
            let ct = c.array(&[b, hq, l, dv], dt, -1.0, 1.0);
            let add = c.array(&[l, s], dt, -2.0, 2.0);
            let keep = c.array(&[b, 1, l, s], Dtype::Bool, 0.3, 2.0);
            let scale = 1.0 / (d as f32).sqrt();
            for (gi, gname) in ["dq", "dk", "dv"].into_iter().enumerate() {
                c.check(&format!("backward attention {name} {dt} {gname}"), bound(dt), || {
                    let mask = match mk {
                        0 => SdpaMask::None,
                        1 => SdpaMask::Causal,
                        2 => SdpaMask::Array(add.clone()),
                        _ => SdpaMask::Array(keep.clone()),
                    };
                    let f = |a: &[Array]| Ok(vec![sdpa(&a[0], &a[1], &a[2], scale, mask.clone())?]);
                    let (_, g) = fx::vjp(f, &[q.clone(), k.clone(), v.clone()], std::slice::from_ref(&ct))?;
                    Ok(g[gi].clone())
                });
            }
        }
    }
    c.no_fallback("backward: no CPU fallback", &fused_ops, before);
}

/// A decode-shaped step for [`replay`]: token `tok` (i32 `[1]`) and position `pos` (i32 `[1]`)
/// arrays; embedding, rope at `pos`, the key written into `cache` (`[1, 2, S, 32]`) at `pos`
/// in place, attention over the cache with keys past `pos` masked, a product and the pick.
/// Returns (logits row, argmax, the updated cache).
fn replay_step(emb: &Array, w: &Array, tok: &Array, pos: &Array, cache: Array) -> fx::Result<(Array, Array, Array)> {
    use fx::fast::{rope, scaled_dot_product_attention as sdpa, SdpaMask};
    let s = cache.shape()[2];
    let x = fx::reshape_usize(&fx::take(emb, tok, Some(0))?, &[1, 2, 1, 32])?;
    let q = rope(&x, 32, false, Some(10000.0), 1.0, pos, None)?;
    let k = fx::multiply(&q, Array::scalar(0.5f32))?;
    let at = fx::reshape_usize(pos, &[1, 1, 1, 1])?;
    let cache = fx::put_along_axis(&cache, &at, &k, Some(2))?;
    let keys = fx::arange(0.0, s as f64, 1.0, Dtype::I32)?;
    let mask = fx::reshape_usize(&fx::less_equal(&keys, pos)?, &[1, 1, 1, s])?;
    let o = sdpa(&q, &cache, &cache, 0.2, SdpaMask::Array(mask))?;
    let logits = fx::matmul(&fx::reshape_usize(&o, &[1, 64])?, w)?;
    let pick = fx::argmax(&logits, Some(-1), false)?;
    Ok((logits, pick, cache))
}

/// `a` computed on the GPU (its bytes in device memory, never read on the host): a recorded
/// step's input or state.
fn on_gpu(a: &Array) -> Array {
    let r = gpu(|| fx::add(a, &fx::zeros(&[], a.dtype())?)).unwrap();
    r.eval().unwrap();
    r
}

/// Recorded steps ([`fx::Replay`]): a decode-shaped step recorded once at position 0 and
/// replayed at positions 1.. with new inputs written to the device must give what the CPU
/// computes step by step (the KV cache carried in place); then the host time of a chain of
/// small ops, evaluated and replayed.
fn replay(c: &mut Checker) {
    if std::env::var("GPU_CHECK_ONLY").is_ok_and(|p| !p.split(',').any(|p| "replay decode step".starts_with(p))) {
        return;
    }
    let (emb, w) = (c.array(&[50, 64], Dtype::F32, -1.0, 1.0), c.array(&[64, 40], Dtype::F32, -1.0, 1.0));
    let cache0 = c.array(&[1, 2, 16, 32], Dtype::F32, -1.0, 1.0);
    let tokens: Vec<i32> = (0..6).map(|_| c.rng.uniform(0.0, 50.0) as i32).collect();
    // The CPU, step by step.
    let mut want = Vec::new();
    let mut cache = cache0.clone();
    for (p, &t) in tokens.iter().enumerate() {
        let (l, _, k) =
            cpu(|| replay_step(&emb, &w, &Array::from_vec(vec![t]), &Array::from_vec(vec![p as i32]), cache)).unwrap();
        cpu(|| fx::eval(&[&l, &k])).unwrap();
        want.push(l);
        cache = k;
    }
    // The GPU: inputs computed there (device memory), the cache a fresh device buffer.
    let tok = on_gpu(&Array::from_vec(vec![tokens[0]]));
    let pos = on_gpu(&Array::from_vec(vec![0i32]));
    let result = gpu(|| {
        let (l, pick, k) = replay_step(&emb, &w, &tok, &pos, on_gpu(&cache0))?;
        let rec = fx::Replay::record(&[&l, &pick, &k])?.expect("a GPU records");
        // Outputs are read at once (copied to the host): the next replay overwrites them.
        let read = |l: &Array, k: &Array| -> fx::Result<(Array, Array)> {
            let zero = || fx::zeros(&[], Dtype::F32);
            let (l, k) = cpu(|| Ok::<_, fx::Error>((fx::add(l, &zero()?)?, fx::add(k, &zero()?)?)))?;
            fx::eval(&[&l, &k])?;
            Ok((l, k))
        };
        let mut got = vec![read(&l, &k)?];
        for (p, &t) in tokens.iter().enumerate().skip(1) {
            rec.write(&tok, &t.to_ne_bytes())?;
            rec.write(&pos, &(p as i32).to_ne_bytes())?;
            let outs = rec.replay()?;
            got.push(read(&outs[0], &outs[2])?);
        }
        Ok::<_, fx::Error>(got)
    });
    match result {
        Err(e) => {
            println!("FAIL replay decode step: {e}");
            c.results.push(("replay decode step".into(), f64::NAN, 1e-5, false));
        }
        Ok(got) => {
            for (p, ((gl, _), wl)) in got.iter().zip(&want).enumerate() {
                let (err, norm, ok) = compare(wl, gl, 1e-5);
                println!(
                    "{} replay decode step {p}: rel err {err:.2e} (|ref| {norm:.3e})",
                    if ok { "ok  " } else { "FAIL" }
                );
                c.results.push((format!("replay decode step {p} logits"), err, 1e-5, ok));
            }
            let (err, _, ok) = compare(&cache, &got.last().unwrap().1, 1e-5);
            println!(
                "{} replay decode cache after {} steps: rel err {err:.2e}",
                if ok { "ok  " } else { "FAIL" },
                got.len()
            );
            c.results.push(("replay decode cache".into(), err, 1e-5, ok));
        }
    }
    replay_fed(c, &emb, &w, &cache0);
}

/// Replays enqueued ahead: each step's token fed from the step before's pick on the device
/// ([`fx::Replay::feed`]) and the step enqueued ([`fx::Replay::start`]) before the host waits
/// for the one before it, must follow the CPU's greedy chain (logits of every step, and the
/// cache after the last).
fn replay_fed(c: &mut Checker, emb: &Array, w: &Array, cache0: &Array) {
    let steps = 6;
    let t0 = c.rng.uniform(0.0, 40.0) as i32;
    let (mut want, mut cache, mut t) = (Vec::new(), cache0.clone(), t0);
    for p in 0..steps {
        let (l, pick, k) =
            cpu(|| replay_step(emb, w, &Array::from_vec(vec![t]), &Array::from_vec(vec![p as i32]), cache)).unwrap();
        t = pick.item::<u32>().unwrap() as i32;
        want.push(l);
        cache = k;
    }
    let (tok, pos) = (on_gpu(&Array::from_vec(vec![t0])), on_gpu(&Array::from_vec(vec![0i32])));
    let result = gpu(|| {
        let (l, pick, k) = replay_step(emb, w, &tok, &pos, on_gpu(cache0))?;
        let rec = fx::Replay::record(&[&l, &pick, &k])?.expect("a GPU records");
        // Step 0's logits copied to the host now: the replays below overwrite them.
        let l0 = cpu(|| fx::add(&l, &fx::zeros(&[], Dtype::F32)?))?;
        l0.eval()?;
        let mut got = vec![l0];
        let start = |p: usize| -> fx::Result<fx::Started> {
            rec.feed(1, &tok)?;
            rec.write(&pos, &(p as i32).to_ne_bytes())?;
            rec.start()
        };
        let mut pending = start(1)?;
        let mut last = Vec::new();
        for p in 2..=steps {
            let next = if p < steps { Some(start(p)?) } else { None };
            last = pending.wait()?;
            got.push(last[0].clone());
            match next {
                Some(n) => pending = n,
                None => break,
            }
        }
        Ok::<_, fx::Error>((got, last.pop().expect("three outputs")))
    });
    match result {
        Err(e) => {
            println!("FAIL replay fed ahead: {e}");
            c.results.push(("replay fed ahead".into(), f64::NAN, 1e-5, false));
        }
        Ok((got, k)) => {
            for (p, (gl, wl)) in got.iter().zip(&want).enumerate() {
                let (err, norm, ok) = compare(wl, gl, 1e-5);
                println!(
                    "{} replay fed ahead step {p}: rel err {err:.2e} (|ref| {norm:.3e})",
                    if ok { "ok  " } else { "FAIL" }
                );
                c.results.push((format!("replay fed ahead step {p} logits"), err, 1e-5, ok));
            }
            let ok_len = got.len() == steps;
            c.results.push(("replay fed ahead: every step".into(), 0.0, 1e-5, ok_len));
            let (err, _, ok) = compare(&cache, &k, 1e-5);
            println!("{} replay fed ahead cache: rel err {err:.2e}", if ok { "ok  " } else { "FAIL" });
            c.results.push(("replay fed ahead cache".into(), err, 1e-5, ok));
        }
    }
}

/// Host time of a chain of `n` small adds: evaluated each time, and replayed (per op, µs).
fn replay_timings(c: &mut Checker, out: &mut Vec<(String, String)>) {
    let n = 200;
    let x0 = c.array(&[1024], Dtype::F32, -1.0, 1.0);
    let one = c.array(&[1024], Dtype::F32, -1.0, 1.0);
    let chain = || {
        let mut y = x0.clone();
        for _ in 0..n {
            y = fx::add(&y, &one).unwrap();
        }
        y
    };
    let s = time(20, chain);
    out.push((format!("chain of {n} small adds, eval: per op"), format!("{:.2} µs", s / n as f64 * 1e6)));
    let y = chain();
    let rec = fx::Replay::record(&[&y]).unwrap().expect("a GPU records");
    let mut ts = Vec::new();
    for i in 0..22 {
        let t = Instant::now();
        let outs = rec.replay().unwrap();
        ferrox::backend::cuda::synchronize().unwrap();
        drop(outs);
        if i >= 2 {
            ts.push(t.elapsed().as_secs_f64());
        }
    }
    ts.sort_by(f64::total_cmp);
    let s = ts[ts.len() / 2];
    out.push((format!("chain of {n} small adds, replayed: per op"), format!("{:.2} µs", s / n as f64 * 1e6)));
}

/// Views, reshapes and an op the GPU kernels cannot take (more axes than a layout holds): it
/// falls back to the CPU by itself.
fn movement(c: &mut Checker) {
    let x = c.array(&[4, 6, 10], Dtype::F32, -1.0, 1.0);
    c.check("views reshape-of-transpose", 0.0, || fx::reshape(&fx::transpose(&x, &[2, 1, 0])?, &[10, 24]));
    c.check("views broadcast+add", 1e-6, || fx::add(&fx::broadcast_to(&x, &[3, 4, 6, 10])?, 1.0f32));
    // Ten axes no view merges are more than a kernel's layout takes: that add runs on the CPU.
    let x10 = fx::transpose(&c.array(&[2; 10], Dtype::I32, -9.0, 9.0), &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]).unwrap();
    c.check("fallback 10-axis add (CPU) then xor (GPU)", 0.0, || fx::bitwise_xor(&fx::add(&x10, &x10)?, 0x5555i32));
    // Memory figures count device memory.
    let before = fx::active_memory();
    let host = c.array(&[1 << 20], Dtype::F32, 0.0, 1.0);
    let big = gpu(|| fx::add(&host, 1.0f32)).unwrap();
    big.eval().unwrap();
    let grew = fx::active_memory() >= before + (4 << 20);
    println!(
        "{} memory active_memory counts a 4 MiB GPU array ({before} -> {})",
        if grew { "ok  " } else { "FAIL" },
        fx::active_memory()
    );
    c.results.push(("memory active".into(), 0.0, 0.0, grew));
    let v = big.to_vec::<f32>().unwrap();
    let want: Vec<f32> = host.to_vec::<f32>().unwrap().iter().map(|x| x + 1.0).collect();
    let ok = v == want;
    c.results.push(("memory to_vec-from-gpu".into(), 0.0, 0.0, ok));
}

/// Median seconds of `reps` runs of `f` (after two warm-ups), synchronized.
/// `compile`'s fused programs: one generated kernel (swiglu as mlx-lm compiles it; a chain of
/// compare, select, casts and integer math over broadcast and transposed inputs), an
/// elementwise prologue fused into a reduction, and a program of more inputs than a generated
/// kernel takes (run step by step). None may fall back to the CPU.
fn fused(c: &mut Checker) {
    let before = fallbacks_of(&["Fused"]);
    let swiglu = fx::compile(|a: &[Array]| Ok(vec![fx::multiply(&fx::multiply(&a[0], &fx::sigmoid(&a[0])?)?, &a[1])?]))
        .shapeless(true);
    for dt in [Dtype::F32, Dtype::Bf16, Dtype::F16] {
        let g = c.array(&[3, 4099], dt, -6.0, 6.0);
        let u = c.array(&[3, 4099], dt, -1.0, 1.0);
        c.check(&format!("fused {dt} swiglu"), bound(dt), || Ok(swiglu.call(&[g.clone(), u.clone()])?.remove(0)));
        // As a fused gate/up product's halves arrive: two views of one [rows, 2 · width]
        // output (runs of 8 elements a thread).
        let gu = c.array(&[5, 2 * 1024], dt, -6.0, 6.0);
        c.check(&format!("fused {dt} swiglu of two halves"), bound(dt), || {
            let g = fx::slice(&gu, &[0, 0], &[5, 1024], &[1, 1])?;
            let u = fx::slice(&gu, &[0, 1024], &[5, 2048], &[1, 1])?;
            Ok(swiglu.call(&[g, u])?.remove(0))
        });
        // A program over the two halves of a product's columns (read by nothing else) runs in
        // the product's kernel (backend/cuda/join.rs; a SwiGLU block's gate/up projection): 1
        // and 2 rows, the halves either way round, with the rms_norm before the product joined
        // too; 8 rows are not joined.
        let before = ferrox::backend::cuda::joined_products();
        let mut expected = 0;
        let wgu = c.array(&[2 * 300, 512], dt, -1.0, 1.0);
        let gnorm = c.array(&[512], dt, 0.5, 1.5);
        for rows in [1, 2, 8] {
            let x = c.array(&[rows, 1, 512], dt, -2.0, 2.0);
            let glu = |x: &Array, lower_first: bool| -> fx::Result<Array> {
                let y = fx::matmul(x, &fx::transpose(&wgu, &[1, 0])?)?;
                let lo = fx::slice(&y, &[0, 0, 0], &[rows as isize, 1, 300], &[1, 1, 1])?;
                let hi = fx::slice(&y, &[0, 0, 300], &[rows as isize, 1, 600], &[1, 1, 1])?;
                let ins = if lower_first { [lo, hi] } else { [hi, lo] };
                Ok(swiglu.call(&ins)?.remove(0))
            };
            let name = |what: &str| format!("fused {dt} swiglu of a product's halves, {rows} rows{what}");
            let ran = c.results.len();
            c.check(&name(""), bound(dt), || glu(&x, true));
            c.check(&name(", upper first"), bound(dt), || glu(&x, false));
            let with_norm = c.results.len();
            c.check(&name(", rms_norm"), bound(dt), || glu(&fx::fast::rms_norm(&x, Some(&gnorm), 1e-5)?, true));
            // One join a check (two with the norm) where the rows are few enough, else none.
            if rows <= 2 {
                expected += 2 * c.results.len() - ran - with_norm;
            }
        }
        c.joins(&format!("fused {dt} joined into products"), before, expected);
    }
    let mixed = fx::compile(|a: &[Array]| {
        let (x, y, n) = (&a[0], &a[1], &a[2]);
        let picked = fx::where_(&fx::greater(x, y)?, &fx::exp(x)?, &fx::negative(y)?)?;
        let count = fx::astype(&fx::multiply(&fx::add(n, n)?, n)?, Dtype::F32)?;
        let flags = fx::logical_not(&fx::isnan(&fx::sqrt(x)?)?)?;
        Ok(vec![fx::add(&fx::multiply(&picked, &count)?, &fx::astype(&flags, Dtype::F32)?)?])
    });
    let x = c.array(&[64, 33], Dtype::F32, -2.0, 2.0);
    let yt = fx::transpose(&c.array(&[33, 64], Dtype::F32, -2.0, 2.0), &[1, 0]).unwrap();
    let n = c.array(&[33], Dtype::I32, -5.0, 5.0);
    c.check("fused float32 select, casts, int math (broadcast, transposed)", 1e-5, || {
        Ok(mixed.call(&[x.clone(), yt.clone(), n.clone()])?.remove(0))
    });
    let reduce = fx::compile(|a: &[Array]| {
        Ok(vec![fx::sum(&fx::exp(&fx::minimum(&fx::multiply(&a[0], &a[1])?, 2.0)?)?, Some(&[-1]), true)?])
    });
    for dt in [Dtype::F32, Dtype::Bf16] {
        let a = c.array(&[17, 515], dt, -1.0, 1.0);
        let b = c.array(&[515], dt, -1.0, 1.0);
        c.check(&format!("fused {dt} prologue into sum"), bound(dt), || {
            Ok(reduce.call(&[a.clone(), b.clone()])?.remove(0))
        });
    }
    let wide = fx::compile(|a: &[Array]| {
        let mut acc = fx::multiply(&a[0], &a[1])?;
        for x in &a[2..] {
            acc = fx::add(&fx::tanh(&acc)?, x)?;
        }
        Ok(vec![acc])
    });
    let ins: Vec<Array> = (0..6).map(|_| c.array(&[5, 301], Dtype::F32, -1.0, 1.0)).collect();
    c.check("fused float32 six inputs (step by step)", 1e-5, || Ok(wide.call(&ins)?.remove(0)));
    c.no_fallback("fused: no CPU fallback", &["Fused"], before);
}

fn time(reps: usize, f: impl Fn() -> Array) -> f64 {
    let mut ts = Vec::new();
    for i in 0..reps + 2 {
        let t = Instant::now();
        let a = f();
        a.eval().unwrap();
        ferrox::backend::cuda::synchronize().unwrap();
        if i >= 2 {
            ts.push(t.elapsed().as_secs_f64());
        }
    }
    ts.sort_by(f64::total_cmp);
    ts[ts.len() / 2]
}

fn timings(c: &mut Checker) -> Vec<(String, String)> {
    let mut out = Vec::new();
    gpu(|| {
        let n = 4096;
        for dt in [Dtype::Bf16, Dtype::F16, Dtype::F32] {
            let a = c.array(&[n, n], dt, -1.0, 1.0);
            let b = c.array(&[n, n], dt, -1.0, 1.0);
            let s = time(10, || fx::matmul(&a, &b).unwrap());
            if dt == Dtype::F32 {
                std::env::set_var("FERROX_TF32", "1");
                let s = time(10, || fx::matmul(&a, &b).unwrap());
                std::env::remove_var("FERROX_TF32");
                out.push((
                    "matmul f32 4096³, FERROX_TF32=1".into(),
                    format!("{:.0} TFLOP/s ({:.2} ms)", 2.0 * (n as f64).powi(3) / s / 1e12, s * 1e3),
                ));
            }
            out.push((
                format!("matmul {dt} 4096³"),
                format!("{:.0} TFLOP/s ({:.2} ms)", 2.0 * (n as f64).powi(3) / s / 1e12, s * 1e3),
            ));
        }
        let m = 1 << 24;
        let a = c.array(&[m], Dtype::F32, -1.0, 1.0);
        let b = c.array(&[m], Dtype::F32, -1.0, 1.0);
        let s = time(20, || fx::add(&a, &b).unwrap());
        out.push(("add f32 16M".into(), format!("{:.0} GB/s ({:.1} µs)", 12.0 * m as f64 / s / 1e9, s * 1e6)));
        let s = time(20, || fx::sum(&a, None, false).unwrap());
        out.push(("sum f32 16M".into(), format!("{:.0} GB/s ({:.1} µs)", 4.0 * m as f64 / s / 1e9, s * 1e6)));
        let x = c.array(&[4096, 4096], Dtype::Bf16, -1.0, 1.0);
        let w = c.array(&[4096], Dtype::Bf16, -1.0, 1.0);
        let s = time(20, || fx::fast::rms_norm(&x, Some(&w), 1e-5).unwrap());
        out.push((
            "rms_norm bf16 4096²".into(),
            format!("{:.0} GB/s ({:.1} µs)", 4.0 * (4096.0 * 4096.0) / s / 1e9, s * 1e6),
        ));
        let small = c.array(&[1024], Dtype::F32, -1.0, 1.0);
        let s = time(200, || fx::add(&small, &small).unwrap());
        out.push(("one small add (launch + eval overhead)".into(), format!("{:.1} µs", s * 1e6)));
        let s = time(20, || {
            let mut y = small.clone();
            for _ in 0..200 {
                y = fx::add(&y, &small).unwrap();
            }
            y
        });
        out.push(("a chain of 200 small adds, one eval: per op".into(), format!("{:.2} µs", s / 200.0 * 1e6)));
        llm_timings(c, &mut out);
        new_family_timings(c, &mut out);
        replay_timings(c, &mut out);
    });
    out
}

/// The sampling, convolution and backward kernels at LLM-ish shapes.
fn new_family_timings(c: &mut Checker, out: &mut Vec<(String, String)>) {
    use fx::fast::{scaled_dot_product_attention as sdpa, SdpaMask};
    let us = |s: f64| format!("{:.1} µs", s * 1e6);
    let logits = c.array(&[1, 151_936], Dtype::Bf16, -10.0, 10.0);
    out.push((
        "argsort bf16 [1, 151936] (a vocabulary)".into(),
        us(time(10, || fx::argsort(&logits, Some(-1)).unwrap())),
    ));
    out.push(("topk 50 bf16 [1, 151936]".into(), us(time(10, || fx::topk(&logits, 50, Some(-1)).unwrap()))));
    let rows = c.array(&[4096, 1024], Dtype::F32, -1.0, 1.0);
    out.push(("sort f32 [4096, 1024] last axis".into(), us(time(10, || fx::sort(&rows, Some(-1)).unwrap()))));
    let key = fx::random::key(7);
    let s = time(10, || fx::random::uniform(0.0f32, 1.0f32, &[1 << 24], Dtype::F32, Some(&key)).unwrap());
    out.push(("random uniform f32 16M".into(), format!("{:.0} GB/s ({})", 4.0 * (1 << 24) as f64 / s / 1e9, us(s))));
    let a = c.array(&[1 << 20, 8], Dtype::F32, -1.0, 1.0);
    let idx = c.array(&[1 << 16], Dtype::I32, 0.0, (1 << 20) as f64);
    let upd = c.array(&[1 << 16, 1, 8], Dtype::F32, -1.0, 1.0);
    let sa = |f: fn(&Array, &[Array], &Array, &[isize]) -> fx::Result<Array>| {
        time(10, || f(&a, std::slice::from_ref(&idx), &upd, &[0]).unwrap())
    };
    out.push(("scatter f32 64K rows of 8 into [1M, 8]".into(), us(sa(fx::scatter))));
    out.push(("scatter_add f32 64K rows of 8 into [1M, 8]".into(), us(sa(fx::scatter_add))));
    let x = c.array(&[1, 3000, 80], Dtype::F32, -1.0, 1.0);
    let w = c.array(&[384, 3, 80], Dtype::F32, -1.0, 1.0);
    let s = time(10, || fx::conv1d(&x, &w, 1, 1, 1, 1).unwrap());
    out.push((
        "conv1d f32 [1, 3000, 80] * [384, 3, 80] (Whisper's stem)".into(),
        format!("{:.1} TFLOP/s ({})", 2.0 * 3000.0 * 384.0 * 240.0 / s / 1e12, us(s)),
    ));
    let x = c.array(&[8, 56, 56, 64], Dtype::Bf16, -1.0, 1.0);
    let w = c.array(&[64, 3, 3, 64], Dtype::Bf16, -1.0, 1.0);
    let s = time(10, || fx::conv2d(&x, &w, (1, 1), (1, 1), (1, 1), 1).unwrap());
    out.push((
        "conv2d bf16 [8, 56, 56, 64] * 3x3x64x64".into(),
        format!("{:.1} TFLOP/s ({})", 2.0 * 8.0 * 56.0 * 56.0 * 64.0 * 576.0 / s / 1e12, us(s)),
    ));
    let (l, d) = (512usize, 64usize);
    let q = c.array(&[1, 32, l, d], Dtype::Bf16, -1.0, 1.0);
    let k = c.array(&[1, 8, l, d], Dtype::Bf16, -1.0, 1.0);
    let v = c.array(&[1, 8, l, d], Dtype::Bf16, -1.0, 1.0);
    let ct = c.array(&[1, 32, l, d], Dtype::Bf16, -1.0, 1.0);
    let s = time(5, || {
        let f = |a: &[Array]| Ok(vec![sdpa(&a[0], &a[1], &a[2], 0.125, SdpaMask::Causal)?]);
        let (_, g) = fx::vjp(f, &[q.clone(), k.clone(), v.clone()], std::slice::from_ref(&ct)).unwrap();
        g[0].clone() // dq, dk and dv come from one computation (here: products over P)
    });
    // Causal: about half of the 4 products of L·L·D each (forward recomputed, dq, dk, dv).
    out.push((
        "attention vjp causal bf16 Hq32 Hkv8 D64 L=S=512 (forward included, as products)".into(),
        format!("{:.2} TFLOP/s ({})", 0.5 * 5.0 * 2.0 * 32.0 * (l * l * d) as f64 / s / 1e12, us(s)),
    ));
}

/// Attention and quantized-product timings at Llama-3.2-1B shapes (32 query heads, 8 kv
/// heads, head size 64; hidden 2048, MLP 8192).
fn llm_timings(c: &mut Checker, out: &mut Vec<(String, String)>) {
    use fx::fast::{scaled_dot_product_attention as sdpa, SdpaMask};
    use fx::primitives::QuantMode;
    let bf = Dtype::Bf16;
    for s_len in [1024usize, 4096] {
        let q = c.array(&[1, 32, 1, 64], bf, -1.0, 1.0);
        let k = c.array(&[1, 8, s_len, 64], bf, -1.0, 1.0);
        let v = c.array(&[1, 8, s_len, 64], bf, -1.0, 1.0);
        let s = time(50, || sdpa(&q, &k, &v, 0.125, SdpaMask::None).unwrap());
        let bytes = 2.0 * (8 * s_len * 64 * 2) as f64;
        out.push((
            format!("attention decode bf16 Hq32 Hkv8 D64 S{s_len}"),
            format!("{:.0} GB/s ({:.1} µs)", bytes / s / 1e9, s * 1e6),
        ));
        // 20 decode attentions in one eval (each output the next query): the GPU's time per
        // call once one eval's fixed host cost and synchronization are spread out.
        let s = time(10, || {
            let mut y = q.clone();
            for _ in 0..20 {
                y = sdpa(&y, &k, &v, 0.125, SdpaMask::None).unwrap();
            }
            y
        });
        out.push((
            format!("attention decode S{s_len}, chain of 20 in one eval: per call"),
            format!("{:.1} µs", s / 20.0 * 1e6),
        ));
    }
    for l in [512usize, 2048] {
        let q = c.array(&[1, 32, l, 64], bf, -1.0, 1.0);
        let k = c.array(&[1, 8, l, 64], bf, -1.0, 1.0);
        let v = c.array(&[1, 8, l, 64], bf, -1.0, 1.0);
        let s = time(10, || sdpa(&q, &k, &v, 0.125, SdpaMask::Causal).unwrap());
        let flops = 4.0 * (l * l) as f64 / 2.0 * 64.0 * 32.0;
        out.push((
            format!("attention prefill causal bf16 Hq32 Hkv8 D64 L=S={l}"),
            format!("{:.1} TFLOP/s ({:.2} ms)", flops / s / 1e12, s * 1e3),
        ));
    }
    for (n, k) in [(8192usize, 2048usize), (2048, 8192), (128256, 2048)] {
        let w = c.array(&[n, k], bf, -1.0, 1.0);
        // The dense decode product (the matrix-vector kernel): 1 and 8 rows against Wᵀ.
        let wt = fx::transpose(&w, &[1, 0]).unwrap();
        for rows in [1usize, 8] {
            let x = c.array(&[rows, k], bf, -1.0, 1.0);
            let s = time(30, || fx::matmul(&x, &wt).unwrap());
            out.push((
                format!("matmul bf16 rows {rows} x ({n} x {k})ᵀ (gemv)"),
                format!("{:.0} GB/s ({:.1} µs)", (2 * n * k) as f64 / s / 1e9, s * 1e6),
            ));
        }
        for bits in [4usize, 8] {
            let (wq, sc, bi) = cpu(|| fx::quantize(&w, 64, bits, QuantMode::Affine)).unwrap();
            let bi = bi.unwrap();
            for a in [&wq, &sc, &bi] {
                a.eval().unwrap();
            }
            let bytes = (n * k * bits / 8 + 2 * 2 * n * k / 64) as f64;
            for rows in [1usize, 8] {
                let x = c.array(&[rows, k], bf, -1.0, 1.0);
                let s = time(30, || {
                    fx::quantized_matmul(&x, &wq, &sc, Some(&bi), true, 64, bits, QuantMode::Affine).unwrap()
                });
                out.push((
                    format!("qmv {bits}-bit g64 bf16 N{n} K{k} rows {rows}"),
                    format!("{:.0} GB/s ({:.1} µs)", bytes / s / 1e9, s * 1e6),
                ));
            }
            if n == 8192 {
                let x = c.array(&[2048, k], bf, -1.0, 1.0);
                let s = time(10, || {
                    fx::quantized_matmul(&x, &wq, &sc, Some(&bi), true, 64, bits, QuantMode::Affine).unwrap()
                });
                out.push((
                    format!("qmm {bits}-bit g64 bf16 M2048 N{n} K{k} (dequantize + cuBLAS)"),
                    format!("{:.0} TFLOP/s ({:.2} ms)", 2.0 * (2048 * n * k) as f64 / s / 1e12, s * 1e3),
                ));
            }
        }
    }
}
