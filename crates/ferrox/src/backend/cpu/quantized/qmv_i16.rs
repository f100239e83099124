//! The affine 4- and 8-bit decode kernel on AVX2 integer dot products, for CPUs without
//! AVX512-BF16 (the bf16 kernel, [`super::qmv_bf16`], is exact where it applies).
//!
//! Each group of x is held as 16-bit integers on a step of its own (`dx_g = max|x_g| / 32767`,
//! rounded to nearest), and the codes are widened to 16 bits, so `vpmaddwd` multiplies 16 pairs
//! and sums them into 8 exact 32-bit lanes: no code is ever converted to a float. A group's
//! integer sum becomes a float once, times `s_g · dx_g`; the bias term comes through x's group
//! sums (of the float values): `y = Σ_g s_g·dx_g·(q_g·x̂_g) + b_g·Σx_g`. The rounding of x moves
//! each element by at most `dx_g / 2`, about 1.5e-5 of its group's largest magnitude, far
//! below the bf16 rounding of the activations themselves.
//!
//! 4-bit rows: the low nibbles of 16 packed bytes are the even elements of a 32-element block
//! and the high nibbles the odd ones; each half is masked in a 128-bit register and widened to
//! 16 words, and x is reordered per block to meet them (even elements, then odd). 8-bit rows:
//! 16 bytes widen to 16 codes in order.
//!
//! Per pass a few weight rows share each load of x; the rows' scales times x's steps and their
//! bias terms are computed for the pass before its group loop, so that loop only multiplies,
//! adds and, once a group, converts and scales. The weight bytes a few passes ahead are
//! prefetched: the rows of a pass are short runs that the hardware prefetcher follows late.

use super::qmv::QMV_MAX_ROWS;
use super::view::{for_decode_ranges, DecodeTask, Kind, View};
use crate::backend::cpu::simd::{best_isa, Isa};
use crate::primitives::QuantMode;

/// Elements of a block: one 16-byte load of 4-bit codes, two of 8-bit ones.
const BLOCK: usize = 32;

/// Whether the kernel computes products with `v` (affine 4- or 8-bit with biases) on this CPU.
pub fn applies(v: &View) -> bool {
    matches!(v.kind, Kind::Nibbles | Kind::Bytes)
        && v.mode == QuantMode::Affine
        && v.biases.is_some()
        && matches!(v.group_size, 32 | 64 | 128)
        && best_isa() != Isa::Baseline
}

/// x as integers on a step per group, with the steps and group sums.
struct Prepared {
    /// `[r, cols]` integers (4-bit: reordered per block, even elements then odd).
    x: Vec<i16>,
    /// The step of each group of each row: `[r, padded]`, zero past the row's groups.
    dx: Vec<f32>,
    /// Σ over each group of each row of x (the float values): `[r, padded]`, zero past the
    /// row's groups.
    xsum: Vec<f32>,
    /// The groups of a row rounded up to a whole vector of 8.
    padded: usize,
}

/// Rounds the groups of `x` ([r, cols]) to integers (see the module docs).
fn prepare(x: &[f32], r: usize, v: &View) -> Prepared {
    let (cols, gs, groups) = (v.cols, v.group_size, v.groups());
    let padded = groups.next_multiple_of(8);
    let mut p = Prepared { x: vec![0; r * cols], dx: vec![0.0; r * padded], xsum: vec![0.0; r * padded], padded };
    for m in 0..r {
        for g in 0..groups {
            let src = &x[m * cols + g * gs..m * cols + (g + 1) * gs];
            let dst = &mut p.x[m * cols + g * gs..m * cols + (g + 1) * gs];
            let (top, sum) = src.iter().fold((0f32, 0f32), |(t, s), &e| (t.max(e.abs()), s + e));
            p.xsum[m * padded + g] = sum;
            if top == 0.0 || !top.is_finite() {
                // Zeros stay zero; a NaN or infinity spreads through the step as a float would.
                p.dx[m * padded + g] = if top == 0.0 { 0.0 } else { f32::NAN };
                continue;
            }
            let inv = 32767.0 / top;
            p.dx[m * padded + g] = top / 32767.0;
            // Adding and taking away 1.5·2²³ rounds |v| ≤ 32767 to the nearest integer (ties
            // to even) in vector registers, where `round_ties_even` would call libm.
            let round = |val: f32| ((val * inv + 12_582_912.0) - 12_582_912.0) as i16;
            for (d, s) in dst.chunks_exact_mut(BLOCK).zip(src.chunks_exact(BLOCK)) {
                if v.kind == Kind::Nibbles {
                    for e in 0..BLOCK / 2 {
                        d[e] = round(s[2 * e]);
                        d[BLOCK / 2 + e] = round(s[2 * e + 1]);
                    }
                } else {
                    for (o, &val) in d.iter_mut().zip(s) {
                        *o = round(val);
                    }
                }
            }
        }
    }
    p
}

/// `y = x @ Wᵀ` for the `r` (1 to [`QMV_MAX_ROWS`]) rows of `x` ([r, cols] f32), `y` [r, rows]; `v` must be
/// one the kernel [`applies`] to.
pub fn qmv_i16(x: &[f32], r: usize, v: &View, y: &mut [f32]) {
    debug_assert!(applies(v) && (1..=QMV_MAX_ROWS).contains(&r));
    let prep = prepare(x, r, v);
    for_decode_ranges(v, &prep, r, y, |t, j0, j1| {
        // SAFETY: `applies` checked that the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::run(t, j0, j1)
        }
    });
}

/// What every range of output features shares.
type Task<'a> = DecodeTask<'a, Prepared>;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Task, BLOCK};
    use crate::backend::cpu::quantized::view::Kind;
    use crate::backend::cpu::simd::{hsum_avx2, prefetch_ahead};

    /// Output features `j0..j1` of every row of x.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run(t: &Task, j0: usize, j1: usize) {
        match t.v.group_size {
            32 => with_blocks::<1>(t, j0, j1),
            64 => with_blocks::<2>(t, j0, j1),
            _ => with_blocks::<4>(t, j0, j1),
        }
    }

    /// [`run`] with `B` blocks a group (a constant, so the group's loop unrolls).
    #[inline(always)]
    unsafe fn with_blocks<const B: usize>(t: &Task, j0: usize, j1: usize) {
        let nibbles = t.v.kind == Kind::Nibbles;
        // Weight rows a pass: one for one row of x, so a thread's loads are one sequential
        // stream (a 135M step's 8-bit products 15-25 % faster than two rows a pass on Zen 4,
        // docs/PERF.md session 24); two rows of x share each weight load between two weight
        // rows; more rows of x leave no registers for a second.
        match (t.r, nibbles) {
            (1, true) => rows::<1, 1, B, true>(t, j0, j1),
            (2, true) => rows::<2, 2, B, true>(t, j0, j1),
            (3, true) => rows::<3, 1, B, true>(t, j0, j1),
            (_, true) => rows::<4, 1, B, true>(t, j0, j1),
            (1, false) => rows::<1, 1, B, false>(t, j0, j1),
            (2, false) => rows::<2, 2, B, false>(t, j0, j1),
            (3, false) => rows::<3, 1, B, false>(t, j0, j1),
            (_, false) => rows::<4, 1, B, false>(t, j0, j1),
        }
    }

    /// Scratch of one range: for each weight row of a pass, its scales and biases
    /// (`[NR][padded]` each, zeros past the groups), then its scales times each row of x's
    /// steps (`[NR][R][padded]`).
    struct Scratch {
        scales: Vec<f32>,
        biases: Vec<f32>,
        scaled: Vec<f32>,
    }

    #[inline(always)]
    unsafe fn rows<const R: usize, const NR: usize, const B: usize, const NIB: bool>(t: &Task, j0: usize, j1: usize) {
        let pd = t.prep.padded;
        let mut s = Scratch { scales: vec![0.0; NR * pd], biases: vec![0.0; NR * pd], scaled: vec![0.0; NR * R * pd] };
        let mut j = j0;
        while j + NR <= j1 {
            block::<R, NR, B, NIB>(t, j, &mut s);
            j += NR;
        }
        while j < j1 {
            block::<R, 1, B, NIB>(t, j, &mut s);
            j += 1;
        }
    }

    /// 16 codes of a block as 16-bit lanes: for 4-bit rows, the even elements' codes (`lo`)
    /// and the odd ones' (`hi`) of the block at byte `off`; for 8-bit rows, elements `0..16`
    /// and `16..32` of the block.
    #[inline(always)]
    unsafe fn codes<const NIB: bool>(row: *const u8, block: usize) -> (__m256i, __m256i) {
        if NIB {
            let w = _mm_loadu_si128(row.add(block * BLOCK / 2) as *const __m128i);
            let mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(w, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(w), mask);
            (_mm256_cvtepu8_epi16(lo), _mm256_cvtepu8_epi16(hi))
        } else {
            let p = row.add(block * BLOCK);
            (
                _mm256_cvtepu8_epi16(_mm_loadu_si128(p as *const __m128i)),
                _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(16) as *const __m128i)),
            )
        }
    }

    /// Output features `j..j + NR` for the `R` rows of x, in groups of `B` blocks.
    #[inline(always)]
    unsafe fn block<const R: usize, const NR: usize, const B: usize, const NIB: bool>(
        t: &Task,
        j: usize,
        s: &mut Scratch,
    ) {
        let v = t.v;
        let (cols, groups, bpr) = (v.cols, v.groups(), v.bytes_per_row());
        let gs = B * BLOCK;
        let group_bytes = if NIB { gs / 2 } else { gs };
        let pd = t.prep.padded;
        let bytes = v.bytes.as_ptr();
        prefetch_ahead(bytes.wrapping_add(j * bpr), NR * bpr);
        // Each row's scales times each row of x's steps, and its bias term Σ_g b_g·Σx_g in the
        // lanes of its total (8 groups a vector; the padding is zeros on both sides).
        let mut tot = [[_mm256_setzero_ps(); R]; NR];
        for (i, tot_i) in tot.iter_mut().enumerate() {
            let (sc, bi) = (&mut s.scales[i * pd..i * pd + groups], &mut s.biases[i * pd..i * pd + groups]);
            v.scales.read((j + i) * groups, sc);
            if let Some(b) = v.biases {
                b.read((j + i) * groups, bi);
            }
            for (m, tot_im) in tot_i.iter_mut().enumerate() {
                let (dx, xs) = (t.prep.dx.as_ptr().add(m * pd), t.prep.xsum.as_ptr().add(m * pd));
                let (sc, bi) = (s.scales.as_ptr().add(i * pd), s.biases.as_ptr().add(i * pd));
                let out = s.scaled.as_mut_ptr().add((i * R + m) * pd);
                for g in (0..pd).step_by(8) {
                    _mm256_storeu_ps(out.add(g), _mm256_mul_ps(_mm256_loadu_ps(sc.add(g)), _mm256_loadu_ps(dx.add(g))));
                    *tot_im = _mm256_fmadd_ps(_mm256_loadu_ps(bi.add(g)), _mm256_loadu_ps(xs.add(g)), *tot_im);
                }
            }
        }
        let rows: [*const u8; NR] = std::array::from_fn(|i| bytes.add((j + i) * bpr));
        // SAFETY (whole loop): code reads stay inside each weight row (`bpr` bytes), x reads
        // inside each row of x (`cols` integers), scratch reads inside the scratch.
        for g in 0..groups {
            let mut acc = [[_mm256_setzero_si256(); R]; NR];
            for b in 0..B {
                let xb = g * gs + b * BLOCK;
                let xs: [(__m256i, __m256i); R] = std::array::from_fn(|m| {
                    let xp = t.prep.x.as_ptr().add(m * cols + xb);
                    (_mm256_loadu_si256(xp as *const __m256i), _mm256_loadu_si256(xp.add(16) as *const __m256i))
                });
                for (i, acc_i) in acc.iter_mut().enumerate() {
                    let (lo, hi) = codes::<NIB>(rows[i].add(g * group_bytes), b);
                    for (m, a) in acc_i.iter_mut().enumerate() {
                        let d = _mm256_add_epi32(_mm256_madd_epi16(lo, xs[m].0), _mm256_madd_epi16(hi, xs[m].1));
                        *a = _mm256_add_epi32(*a, d);
                    }
                }
            }
            for i in 0..NR {
                for m in 0..R {
                    let sd = _mm256_broadcast_ss(&*s.scaled.as_ptr().add((i * R + m) * pd + g));
                    tot[i][m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][m]), sd, tot[i][m]);
                }
            }
        }
        let n = v.rows;
        for (i, row) in tot.iter().enumerate() {
            for (m, lanes) in row.iter().enumerate() {
                *t.y.get().add(m * n + j + i) = hsum_avx2(*lanes);
            }
        }
    }
}
