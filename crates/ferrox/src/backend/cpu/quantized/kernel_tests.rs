//! The decode and prefill kernels at every instruction set this CPU has (forced through their
//! `isa` argument), against float64 products of the dequantized matrix: every bits value and
//! mode, row counts 1–4 (decode) and more (prefill), output counts with tails, transposed or not.

use super::formats::{e8m0_to_f32, fp8_table, pack_codes, FP4_VALUES};
use super::lanes;
use super::panel::panel;
use super::qmm::{E4m3, E8m0, QMat};
use super::qmv::{qmv, QMV_MAX_ROWS};
use super::view::View;
use crate::backend::cpu::{assert_sum_close, test_rand as rand};
use crate::primitives::{QuantMode, QuantParams};

/// Runs the decode (`prefill` false; `transpose` must be true) or prefill kernel on the
/// stored matrix `codes` ([n, k], packed here) with the given scales, into a fresh `y`.
#[allow(clippy::too_many_arguments)]
fn run(
    isa: crate::backend::cpu::simd::Isa,
    prefill: bool,
    transpose: bool,
    p: QuantParams,
    (n, k): (usize, usize),
    codes: &[u8],
    (scales, biases, codes8): (&[f32], &[f32], &[u8]),
    x: &[f32],
    r: usize,
) -> Vec<f32> {
    let mut words = vec![0u32; n * k * p.bits / 32];
    pack_codes(codes, p.bits, &mut words);
    let mut y = vec![f32::NAN; r * if transpose { n } else { k }];
    macro_rules! go {
        ($q:expr) => {{
            let q = $q;
            if prefill {
                panel(isa, x, r, &q, transpose, &mut y)
            } else {
                qmv(isa, x, r, &q, &mut y)
            }
        }};
    }
    match p.mode {
        QuantMode::Affine => go!(QMat { words: &words, scales, biases: Some(biases), rows: n, cols: k, p }),
        QuantMode::Nvfp4 => {
            // SAFETY: E4m3 is a repr(transparent) u8.
            let s = unsafe { std::slice::from_raw_parts(codes8.as_ptr() as *const E4m3, codes8.len()) };
            go!(QMat { words: &words, scales: s, biases: None, rows: n, cols: k, p })
        }
        _ => {
            // SAFETY: E8m0 is a repr(transparent) u8.
            let s = unsafe { std::slice::from_raw_parts(codes8.as_ptr() as *const E8m0, codes8.len()) };
            go!(QMat { words: &words, scales: s, biases: None, rows: n, cols: k, p })
        }
    }
    y
}

/// Every kind, row counts for both kernels, output counts with tails, transposed or not, at
/// every instruction set this CPU has, against float64 products of the dequantized matrix.
#[test]
fn kernels_match_a_float64_reference_at_every_isa() {
    let cases: Vec<(QuantMode, usize, usize)> = [1, 2, 3, 4, 5, 6, 8]
        .into_iter()
        .flat_map(|b| [32, 64, 128].map(|g| (QuantMode::Affine, b, g)))
        .chain([(QuantMode::Mxfp4, 4, 32), (QuantMode::Nvfp4, 4, 16), (QuantMode::Mxfp8, 8, 32)])
        .collect();
    for (mode, bits, gs) in cases {
        let p = QuantParams { group_size: gs, bits, mode };
        for (n, k) in [(1, gs), (7, 2 * gs), (13, 384), (70, 256)] {
            let codes: Vec<u8> = rand(n * k, 1).iter().map(|v| (v * (1 << bits) as f32) as u8).collect();
            let groups = n * k / gs;
            let scales: Vec<f32> = rand(groups, 2).iter().map(|v| v - 0.5).collect();
            let biases: Vec<f32> = rand(groups, 3).iter().map(|v| v - 0.5).collect();
            let codes8: Vec<u8> = match mode {
                QuantMode::Nvfp4 => rand(groups, 5).iter().map(|v| 0x30 + (v * 40.0) as u8).collect(),
                _ => rand(groups, 4).iter().map(|v| 120 + (v * 10.0) as u8).collect(),
            };
            // The dequantized matrix [n, k] in float64.
            let w: Vec<f64> = (0..n * k)
                .map(|i| {
                    let (c, g) = (codes[i] as usize, i / gs);
                    match mode {
                        QuantMode::Affine => c as f64 * scales[g] as f64 + biases[g] as f64,
                        QuantMode::Mxfp8 => fp8_table()[c] as f64 * e8m0_to_f32(codes8[g]) as f64,
                        QuantMode::Mxfp4 => FP4_VALUES[c] as f64 * e8m0_to_f32(codes8[g]) as f64,
                        QuantMode::Nvfp4 => FP4_VALUES[c] as f64 * fp8_table()[codes8[g] as usize] as f64,
                    }
                })
                .collect();
            // (kernel is prefill, transposed, rows of x)
            let runs = (1..=QMV_MAX_ROWS).map(|r| (false, true, r)).chain([
                (true, true, 1),
                (true, true, 6),
                (true, false, 5),
            ]);
            for (prefill, transpose, r) in runs {
                let (inner, outer) = if transpose { (k, n) } else { (n, k) };
                let x: Vec<f32> = rand(r * inner, 6).iter().map(|v| v * 2.0 - 1.0).collect();
                let w_at = |o: usize, e: usize| if transpose { w[o * k + e] } else { w[e * k + o] };
                let (xr, wr) = (&x, &w_at);
                let terms = |m: usize, o: usize| (0..inner).map(move |e| xr[m * inner + e] as f64 * wr(o, e));
                for isa in lanes::available_isas() {
                    let y = run(isa, prefill, transpose, p, (n, k), &codes, (&scales, &biases, &codes8), &x, r);
                    for (i, &got) in y.iter().enumerate() {
                        let (m, o) = (i / outer, i % outer);
                        let want: f64 = terms(m, o).sum();
                        // f32 accumulation: errors of a few ulps of the sum of |terms|.
                        let mag: f64 = terms(m, o).map(f64::abs).sum();
                        assert!(
                            (got as f64 - want).abs() <= 1e-6 * mag + 1e-30,
                            "{mode:?} {bits}b g{gs} n{n} k{k} r{r} prefill {prefill} transpose {transpose} {isa:?} \
                             [{i}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// The bf16-activation 4-bit decode kernel (where the CPU has AVX512-BF16), against float64
/// products: every group size, row lengths that end inside a 128-element chunk, output counts
/// with tails, 1–4 rows of x, and scales and biases stored as f32, f16 and bf16 (each read by
/// its own path).
#[test]
fn bf16_decode_kernel_matches_a_float64_reference() {
    if !crate::backend::cpu::bf16_gemm::cpu_supported() {
        eprintln!("skipped: this CPU has no AVX512-BF16");
        return;
    }
    let round_bf16 = |v: f32| half::bf16::from_f32(v).to_f32();
    for gs in [32, 64, 128] {
        let p = QuantParams { group_size: gs, bits: 4, mode: QuantMode::Affine };
        for (n, k) in [(1, gs), (5, 2 * gs), (13, 576), (70, 384), (9, 1088), (6, 1600)] {
            if k % gs != 0 {
                continue;
            }
            let mut w = RandomAffine::new(n, k, p, 11);
            for stored in [Stored::F32, Stored::F16, Stored::Bf16] {
                let scales = w.store(stored);
                let product = |x: &[f32], r: usize| {
                    let mut y = vec![f32::NAN; r * n];
                    super::qmv_bf16::qmv_bf16(x, r, &scales.view(&w), &mut y);
                    y
                };
                for r in 1..=4 {
                    let x: Vec<f32> = rand(r * k, 14 + r as u64).iter().map(|v| round_bf16(v * 2.0 - 1.0)).collect();
                    let y = product(&x, r);
                    for (i, &got) in y.iter().enumerate() {
                        // The kernel sums x·(code + 128)·s: errors scale with those terms.
                        let (want, mag) = affine_reference(w.reference(), &x, i / n, i % n, |c, s, b| {
                            (c * s + b).abs() + 144.0 * s.abs()
                        });
                        assert!(
                            (got as f64 - want).abs() <= 1e-6 * mag,
                            "{stored:?} scales g{gs} n{n} k{k} r{r} [{i}]: {got} vs {want} (tolerance {})",
                            1e-6 * mag
                        );
                    }
                }
            }
        }
    }
}

/// The bf16-activation prefill kernel (where the CPU has AVX512-BF16) against float64 products:
/// every affine bits value and group size, row counts around its micro-tile, output counts
/// around its panel width.
#[test]
fn bf16_prefill_kernel_matches_a_float64_reference() {
    if !crate::backend::cpu::bf16_gemm::cpu_supported() {
        eprintln!("skipped: this CPU has no AVX512-BF16");
        return;
    }
    let round_bf16 = |v: f32| half::bf16::from_f32(v).to_f32();
    for bits in [2, 3, 4, 5, 6, 8] {
        for gs in [32, 64, 128] {
            let p = QuantParams { group_size: gs, bits, mode: QuantMode::Affine };
            for (n, k, r) in [(33, 2 * gs, 7), (70, 384, 13)] {
                let w = RandomAffine::new(n, k, p, 21);
                let q = w.matrix();
                let v = View::of(&q);
                let affine = w.reference();
                let x: Vec<f32> = rand(r * k, 24).iter().map(|v| round_bf16(v * 2.0 - 1.0)).collect();
                let mut y = vec![f32::NAN; r * n];
                super::qmm_bf16::qmm_bf16(&x, r, &v, &mut y);
                for (i, &got) in y.iter().enumerate() {
                    // Codes and biases are summed apart: errors scale with each's terms.
                    let (want, mag) = affine_reference(affine, &x, i / n, i % n, |c, s, b| c * s.abs() + b.abs());
                    assert!(
                        (got as f64 - want).abs() <= 1e-6 * mag,
                        "{bits}b g{gs} n{n} k{k} r{r} [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// A random affine matrix `[n, k]` with its codes (seed `seed`), scales in [-0.5, 0.5) and
/// biases in [-2, 2) (seeds `seed + 1`, `seed + 2`), and the packed words.
struct RandomAffine {
    codes: Vec<u8>,
    scales: Vec<f32>,
    biases: Vec<f32>,
    words: Vec<u32>,
    n: usize,
    k: usize,
    p: QuantParams,
}

impl RandomAffine {
    fn new(n: usize, k: usize, p: QuantParams, seed: u64) -> Self {
        let codes: Vec<u8> = rand(n * k, seed).iter().map(|v| (v * (1 << p.bits) as f32) as u8).collect();
        let groups = n * k / p.group_size;
        let scales = rand(groups, seed + 1).iter().map(|v| v - 0.5).collect();
        let biases = rand(groups, seed + 2).iter().map(|v| v * 4.0 - 2.0).collect();
        let mut words = vec![0u32; n * k * p.bits / 32];
        pack_codes(&codes, p.bits, &mut words);
        RandomAffine { codes, scales, biases, words, n, k, p }
    }

    /// The stored matrix the kernels read.
    fn matrix(&self) -> QMat<'_, f32> {
        let (words, scales, biases) = (&self.words[..], &self.scales[..], Some(&self.biases[..]));
        QMat { words, scales, biases, rows: self.n, cols: self.k, p: self.p }
    }

    /// The matrix for [`affine_reference`].
    fn reference(&self) -> Affine<'_> {
        (&self.codes, &self.scales, &self.biases, self.k, self.p.group_size)
    }

    /// Rounds the scales and biases to `stored` (so the f32 reference stays exact) and
    /// returns them stored so.
    fn store(&mut self, stored: Stored) -> StoredScales {
        let (s, b) = (&mut self.scales, &mut self.biases);
        match stored {
            Stored::F32 => StoredScales::F32,
            Stored::F16 => {
                let half = |v: &mut Vec<f32>| v.iter_mut().map(to_f16).collect::<Vec<_>>();
                StoredScales::F16(half(s), half(b))
            }
            Stored::Bf16 => {
                let bfloat = |v: &mut Vec<f32>| v.iter_mut().map(to_bf16).collect::<Vec<_>>();
                StoredScales::Bf16(bfloat(s), bfloat(b))
            }
        }
    }
}

/// `v` rounded to f16, and its value kept rounded.
fn to_f16(v: &mut f32) -> half::f16 {
    let h = half::f16::from_f32(*v);
    *v = h.to_f32();
    h
}

/// `v` rounded to bf16, and its value kept rounded.
fn to_bf16(v: &mut f32) -> half::bf16 {
    let h = half::bf16::from_f32(*v);
    *v = h.to_f32();
    h
}

/// The stored type of a test matrix's scales and biases (each read by its own kernel path).
#[derive(Clone, Copy, Debug)]
enum Stored {
    F32,
    F16,
    Bf16,
}

/// A [`RandomAffine`]'s scales and biases in their stored type ([`RandomAffine::store`]).
enum StoredScales {
    /// The matrix's own f32 ones.
    F32,
    F16(Vec<half::f16>, Vec<half::f16>),
    Bf16(Vec<half::bf16>, Vec<half::bf16>),
}

impl StoredScales {
    /// The view of `w`'s codes with these scales and biases.
    fn view<'a>(&'a self, w: &'a RandomAffine) -> View<'a> {
        let (words, rows, cols, p) = (&w.words[..], w.n, w.k, w.p);
        match self {
            StoredScales::F32 => View::of(&w.matrix()),
            StoredScales::F16(s, b) => View::of(&QMat { words, scales: &s[..], biases: Some(&b[..]), rows, cols, p }),
            StoredScales::Bf16(s, b) => View::of(&QMat { words, scales: &s[..], biases: Some(&b[..]), rows, cols, p }),
        }
    }
}

/// An affine matrix for [`affine_reference`]: codes `[n, k]`, per-group scales and biases, k,
/// group size.
type Affine<'a> = (&'a [u8], &'a [f32], &'a [f32], usize, usize);

/// Output `(m, o)` of `x @ Wᵀ` in float64 for the affine matrix `w`, and the sum over the row
/// of `|x| · term(code, scale, bias)`, the magnitude a kernel's rounding errors scale with.
fn affine_reference(w: Affine, x: &[f32], m: usize, o: usize, term: impl Fn(f64, f64, f64) -> f64) -> (f64, f64) {
    let (codes, scales, biases, k, gs) = w;
    let (mut want, mut mag) = (0f64, 0f64);
    for e in 0..k {
        let g = (o * k + e) / gs;
        let (c, s, b) = (codes[o * k + e] as f64, scales[g] as f64, biases[g] as f64);
        let xe = x[m * k + e] as f64;
        want += xe * (c * s + b);
        mag += xe.abs() * term(c, s, b);
    }
    (want, mag)
}

/// The integer 4- and 8-bit decode kernel, on each path this CPU has (AVX2, AVX-512 VNNI),
/// against float64 products: every group size, output counts with tails, rows of more than 16
/// groups, 1–4 rows of x, groups of zeros, scales and biases stored as f32, f16 and bf16; its error is bounded by the rounding of x to a step of max|x_g| / 32767
/// per group, plus f32 summation.
#[test]
fn integer_decode_kernel_matches_a_float64_reference() {
    if crate::backend::cpu::simd::best_isa() == crate::backend::cpu::simd::Isa::Baseline {
        eprintln!("skipped: this CPU has no AVX2");
        return;
    }
    for bits in [4, 8] {
        for gs in [32, 64, 128] {
            let p = QuantParams { group_size: gs, bits, mode: QuantMode::Affine };
            for ((n, k), stored) in [(1, gs), (5, 2 * gs), (13, 576), (70, 384), (9, 1152), (6, 1600)]
                .into_iter()
                .flat_map(|nk| [Stored::F32, Stored::F16, Stored::Bf16].map(|s| (nk, s)))
            {
                if k % gs != 0 {
                    continue;
                }
                let mut w = RandomAffine::new(n, k, p, 31);
                let scales = w.store(stored);
                let v = scales.view(&w);
                assert!(super::qmv_i16::applies(&v));
                for (path, r) in
                    super::qmv_i16::Path::available(&v).into_iter().flat_map(|p| (1..=4).map(move |r| (p, r)))
                {
                    // Values over several magnitudes, and the first group of row 0 all zeros.
                    let mut x: Vec<f32> = rand(r * k, 34 + r as u64)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (v * 2.0 - 1.0) * (1 + i % 7) as f32)
                        .collect();
                    x[..gs].fill(0.0);
                    let mut y = vec![f32::NAN; r * n];
                    super::qmv_i16::qmv_i16_on(path, &x, r, &v, &mut y);
                    for (i, &got) in y.iter().enumerate() {
                        let (m, o) = (i / n, i % n);
                        let (want, tol) = integer_bounds(&w, &x, m, o);
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{path:?} {stored:?} scales {bits}b g{gs} n{n} k{k} r{r} [{i}]: {got} vs {want} (tolerance {tol})"
                        );
                    }
                }
            }
        }
    }
}

/// The float64 product `(m, o)` of `x @ Wᵀ` and the bound of an integer kernel's error there:
/// x's rounding to a step of max|x_g| / 32767 per group moves each element by at most half a
/// step, plus f32 summation.
fn integer_bounds(w: &RandomAffine, x: &[f32], m: usize, o: usize) -> (f64, f64) {
    let (k, gs) = (w.k, w.p.group_size);
    let (want, mag) = affine_reference(w.reference(), x, m, o, |c, s, b| c * s.abs() + b.abs());
    let rounding: f64 = (0..k / gs)
        .map(|g| {
            let xg = &x[m * k + g * gs..m * k + (g + 1) * gs];
            let step = xg.iter().fold(0f32, |t, v| t.max(v.abs())) as f64 / 32767.0;
            let codes_sum: f64 = w.codes[o * k + g * gs..o * k + (g + 1) * gs].iter().map(|&c| c as f64).sum();
            (w.scales[(o * k) / gs + g] as f64).abs() * codes_sum * step / 2.0
        })
        .sum();
    (want, 1e-6 * mag + 1.01 * rounding)
}

/// The integer prefill kernel (AVX-512 VNNI) against float64 products: every bit width it
/// takes and group size, feature counts around its panel of 32, row counts around its tile of
/// 6, a group of zeros.
#[test]
fn integer_prefill_kernel_matches_a_float64_reference() {
    for bits in [2, 3, 4, 6, 8] {
        for gs in [32, 64, 128] {
            let p = QuantParams { group_size: gs, bits, mode: QuantMode::Affine };
            let (n, k) = if gs == 32 { (33, 256) } else { (70, 384) };
            let w = RandomAffine::new(n, k, p, 41);
            let q = w.matrix();
            let v = View::of(&q);
            if !super::qmm_i16::applies(&v) {
                eprintln!("skipped: this CPU has no AVX-512 VNNI");
                return;
            }
            for r in [1, 6, 13] {
                let mut x: Vec<f32> = rand(r * k, 50 + r as u64)
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v * 2.0 - 1.0) * (1 + i % 5) as f32)
                    .collect();
                x[k..k + gs.min(r * k - k)].fill(0.0);
                let mut y = vec![f32::NAN; r * n];
                super::qmm_i16::qmm_i16(&x, r, &v, &mut y);
                for (i, &got) in y.iter().enumerate() {
                    let (m, o) = (i / n, i % n);
                    let (want, tol) = integer_bounds(&w, &x, m, o);
                    assert!(
                        (got as f64 - want).abs() <= tol,
                        "{bits}b g{gs} r{r} [{i}]: {got} vs {want} (tolerance {tol})"
                    );
                }
            }
        }
    }
}

/// The integer kernels' rounding of x, on this CPU's path, against its definition: each group
/// on a step of max|x_g| / 32767, each element `round_ties_even(x / step)` computed in f32 as
/// `x · (32767 / max)`, 4-bit blocks reordered (even elements, then odd), the group sums
/// within f32 summation error, a group of zeros left zero and a group with a NaN a NaN step.
#[test]
fn integer_kernels_round_x_as_defined() {
    for gs in [32, 64, 128] {
        for block in [Some(32), Some(64), None] {
            if block.is_some_and(|b| b > gs) {
                continue;
            }
            let p = QuantParams { group_size: gs, bits: 4, mode: QuantMode::Affine };
            let (r, k) = (2, 3 * gs);
            let w = RandomAffine::new(4, k, p, 61);
            let q = w.matrix();
            let v = View::of(&q);
            let mut x: Vec<f32> =
                rand(r * k, 62).iter().enumerate().map(|(i, v)| (v * 2.0 - 1.0) * (1 + i % 9) as f32).collect();
            x[gs..2 * gs].fill(0.0);
            x[k + 5] = f32::NAN;
            let prep = super::qmv_i16::prepare(&x, r, &v, block);
            for m in 0..r {
                for g in 0..k / gs {
                    let xg = &x[m * k + g * gs..m * k + (g + 1) * gs];
                    let (dx, xsum) = (prep.dx[m * prep.padded + g], prep.xsum[m * prep.padded + g]);
                    let what = format!("g{gs} block {block:?} row {m} group {g}");
                    if xg.iter().any(|v| v.is_nan()) {
                        assert!(dx.is_nan() && xsum.is_nan(), "{what}: a NaN gives a NaN step and sum");
                        continue;
                    }
                    assert_sum_close(xsum, xg.iter().map(|&v| v as f64), &what);
                    let top = xg.iter().fold(0f32, |t, v| t.max(v.abs()));
                    assert_eq!(dx, top / 32767.0, "{what}: step");
                    let got = &prep.x[m * k + g * gs..m * k + (g + 1) * gs];
                    for (e, &val) in xg.iter().enumerate() {
                        let want = if top == 0.0 { 0 } else { (val * (32767.0 / top)).round_ties_even() as i16 };
                        let at = match block {
                            Some(b) => e / b * b + (e % b) / 2 + (e % 2) * b / 2,
                            None => e,
                        };
                        assert_eq!(got[at], want, "{what}: element {e}");
                    }
                }
            }
            for m in 0..r {
                assert!(prep.dx[m * prep.padded + k / gs..(m + 1) * prep.padded].iter().all(|&d| d == 0.0), "padding");
            }
        }
    }
}
