//! The inner loops of decode attention (`decode_attention.rs`): a few query rows against a
//! KV cache, scores and the weighted sum of values computed straight from the keys and values
//! in their own dtype.
//!
//! bf16: with AVX512-BF16, scores take four keys at a time: `vdpbf16ps` dots 32 bf16 pairs
//! per instruction into f32 lanes (products exact), and one transposing reduction sums the
//! four keys' lanes together, instead of a horizontal sum per key. With AVX2, keys and the
//! query are widened to f32 8 values at a time and dotted by FMA, four keys in independent
//! chains. f32 and f16 keys (AVX-512) are dotted four at a time by FMA, 16 values a step, with
//! the same reduction. The weighted sum widens values to f32 (a bf16 value is the top half of
//! its f32, an f16 one is converted by `vcvtph2ps`) and multiplies-adds them in f32: with
//! AVX-512 one pass over the values covers 64 columns (a whole row of a 64-wide head), two
//! rows a step in independent chains; with AVX2 (bf16), 8 columns a pass and four rows a step.
//! Probabilities stay f32, so results are exact products in f32 sums.

use super::bf16_gemm::cpu_supported;
use super::simd::{best_isa, Isa};

/// Whether this CPU runs the kernels (AVX512-BF16, or AVX2 with FMA).
pub fn applies() -> bool {
    cpu_supported() || best_isa() != Isa::Baseline
}

/// `out[j] = scale · Σ_d q[d] · k[j·dk + d]` for the `out.len()` keys of `k` (rows of `dk`
/// bf16 values, as bits). The CPU must run the kernels ([`applies`]).
pub fn scores(q: &[u16], k: &[u16], dk: usize, scale: f32, out: &mut [f32]) {
    assert!(applies() && q.len() >= dk && k.len() >= out.len() * dk);
    // SAFETY: features checked; the lengths bound every read.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if cpu_supported() {
            x86::scores(q, k, dk, scale, out)
        } else {
            avx2::scores(q, k, dk, scale, out)
        }
    }
}

/// `out[d] = Σ_j p[j] · v[j·dv + d]` for the `p.len()` rows of `v` (rows of `dv = out.len()`
/// bf16 values, as bits). The CPU must run the kernels ([`applies`]).
pub fn weighted_sum(p: &[f32], v: &[u16], out: &mut [f32]) {
    assert!(applies() && v.len() >= p.len() * out.len());
    // SAFETY: features checked; the lengths bound every read.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        if cpu_supported() {
            x86::weighted_sum(p, v, out)
        } else {
            avx2::weighted_sum(p, v, out)
        }
    }
}

/// An element type the AVX-512 kernels read 16 at a time as f32 (attention's keys and values,
/// the 4-bit decode kernel's scales and biases): f32, f16, and bf16 (as its bits).
pub trait Wide: Copy {
    /// The 16 values at `p` as f32, the lanes past `mask` zero (not read).
    ///
    /// # Safety
    /// The CPU must have AVX-512 (inline into code compiled with it); the unmasked lanes of
    /// `p` must be readable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self, mask: u16) -> std::arch::x86_64::__m512;
}

/// Whether this CPU runs [`scores_wide`] and [`weighted_sum_wide`] (AVX-512).
pub fn wide_applies() -> bool {
    best_isa() == Isa::Avx512
}

/// `out[j] = scale · Σ_d q[d] · k[j·dk + d]` for the `out.len()` keys of `k` (rows of `dk`
/// values). The CPU must have AVX-512 ([`wide_applies`]).
pub fn scores_wide<E: Wide>(q: &[f32], k: &[E], dk: usize, scale: f32, out: &mut [f32]) {
    assert!(wide_applies() && q.len() >= dk && k.len() >= out.len() * dk);
    // SAFETY: features checked; the lengths bound every read.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::scores_wide(q, k, dk, scale, out)
    }
}

/// `out[d] = Σ_j p[j] · v[j·dv + d]` for the `p.len()` rows of `v` (rows of `dv = out.len()`
/// values). The CPU must have AVX-512 ([`wide_applies`]).
pub fn weighted_sum_wide<E: Wide>(p: &[f32], v: &[E], out: &mut [f32]) {
    assert!(wide_applies() && v.len() >= p.len() * out.len());
    // SAFETY: features checked; the lengths bound every read.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        x86::weighted_sum(p, v, out)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::bf16_gemm::x86::{first_lanes, load_bf16, reduce4};

    use super::Wide;

    impl Wide for u16 {
        #[inline(always)]
        unsafe fn load16(p: *const u16, mask: u16) -> __m512 {
            let bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p as *const i16));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
        }
    }

    impl Wide for f32 {
        #[inline(always)]
        unsafe fn load16(p: *const f32, mask: u16) -> __m512 {
            _mm512_maskz_loadu_ps(mask, p)
        }
    }

    impl Wide for half::f16 {
        #[inline(always)]
        unsafe fn load16(p: *const half::f16, mask: u16) -> __m512 {
            _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16))
        }
    }

    /// Σ q·k over one key row, 16 values a step, for the `R` rows starting at `rows`.
    #[inline(always)]
    unsafe fn dots_wide<const R: usize, E: Wide>(q: *const f32, rows: *const E, dk: usize) -> [__m512; R] {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut c = 0;
        while c < dk {
            let mask = first_lanes(dk - c) as u16;
            let qv = _mm512_maskz_loadu_ps(mask, q.add(c));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(E::load16(rows.add(r * dk + c), mask), qv, *a);
            }
            c += 16;
        }
        acc
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn scores_wide<E: Wide>(q: &[f32], k: &[E], dk: usize, scale: f32, out: &mut [f32]) {
        let n = out.len();
        let mut j = 0;
        while j + 4 <= n {
            let [a, b, c, d] = dots_wide::<4, E>(q.as_ptr(), k.as_ptr().add(j * dk), dk);
            _mm_storeu_ps(out.as_mut_ptr().add(j), _mm_mul_ps(reduce4(a, b, c, d), _mm_set1_ps(scale)));
            j += 4;
        }
        while j < n {
            let [a] = dots_wide::<1, E>(q.as_ptr(), k.as_ptr().add(j * dk), dk);
            out[j] = _mm512_reduce_add_ps(a) * scale;
            j += 1;
        }
    }

    /// Σ q·k over one key row for the `R` rows starting at `rows`.
    #[inline(always)]
    unsafe fn dots<const R: usize>(q: *const u16, rows: *const u16, dk: usize) -> [__m512; R] {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut c = 0;
        while c < dk {
            let mask = first_lanes(dk - c);
            let qv = load_bf16(q.add(c), mask);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm512_dpbf16_ps(*a, load_bf16(rows.add(r * dk + c), mask), qv);
            }
            c += 32;
        }
        acc
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn scores(q: &[u16], k: &[u16], dk: usize, scale: f32, out: &mut [f32]) {
        let n = out.len();
        let mut j = 0;
        while j + 4 <= n {
            let [a, b, c, d] = dots::<4>(q.as_ptr(), k.as_ptr().add(j * dk), dk);
            _mm_storeu_ps(out.as_mut_ptr().add(j), _mm_mul_ps(reduce4(a, b, c, d), _mm_set1_ps(scale)));
            j += 4;
        }
        while j < n {
            let [a] = dots::<1>(q.as_ptr(), k.as_ptr().add(j * dk), dk);
            out[j] = _mm512_reduce_add_ps(a) * scale;
            j += 1;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn weighted_sum<E: Wide>(p: &[f32], v: &[E], out: &mut [f32]) {
        let dv = out.len();
        let mut c = 0;
        while c < dv {
            match (dv - c).div_ceil(16) {
                1 => columns::<1, E>(p, v, dv, c, out),
                2 => columns::<2, E>(p, v, dv, c, out),
                3 => columns::<3, E>(p, v, dv, c, out),
                _ => columns::<4, E>(p, v, dv, c, out),
            }
            c += 64;
        }
    }

    /// Columns `c..c + 16·W` of the weighted sum (those past `dv` masked off) in one pass
    /// over the rows of v, two rows a step into two sets of accumulators.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // w indexes both accumulator sets and the row loads
    unsafe fn columns<const W: usize, E: Wide>(p: &[f32], v: &[E], dv: usize, c: usize, out: &mut [f32]) {
        let s = p.len();
        let masks: [u16; W] = std::array::from_fn(|w| first_lanes(dv.saturating_sub(c + 16 * w)) as u16);
        let row = |j: usize, w: usize| E::load16(v.as_ptr().add(j * dv + c + 16 * w), masks[w]);
        let mut acc = [[_mm512_setzero_ps(); W]; 2];
        let mut j = 0;
        while j + 2 <= s {
            let (p0, p1) = (_mm512_set1_ps(p[j]), _mm512_set1_ps(p[j + 1]));
            for w in 0..W {
                acc[0][w] = _mm512_fmadd_ps(p0, row(j, w), acc[0][w]);
                acc[1][w] = _mm512_fmadd_ps(p1, row(j + 1, w), acc[1][w]);
            }
            j += 2;
        }
        if j < s {
            let p0 = _mm512_set1_ps(p[j]);
            for w in 0..W {
                acc[0][w] = _mm512_fmadd_ps(p0, row(j, w), acc[0][w]);
            }
        }
        for w in 0..W {
            let sum = _mm512_add_ps(acc[0][w], acc[1][w]);
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(c + 16 * w), masks[w], sum);
        }
    }
}

/// The kernels with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::simd::{hsum_avx2, widen8_bf16};

    /// One bf16 value widened to f32.
    #[inline(always)]
    fn widen(b: u16) -> f32 {
        f32::from_bits((b as u32) << 16)
    }

    /// Σ q·k over the key rows `rows..rows + R·dk`: whole 8-lane steps in vectors, the last
    /// `dk mod 8` elements one at a time.
    #[inline(always)]
    unsafe fn dots<const R: usize>(q: *const u16, rows: *const u16, dk: usize) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut c = 0;
        while c + 8 <= dk {
            let qv = widen8_bf16(q.add(c));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(widen8_bf16(rows.add(r * dk + c)), qv, *a);
            }
            c += 8;
        }
        std::array::from_fn(|r| {
            let tail: f32 = (c..dk).map(|e| widen(*q.add(e)) * widen(*rows.add(r * dk + e))).sum();
            hsum_avx2(acc[r]) + tail
        })
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scores(q: &[u16], k: &[u16], dk: usize, scale: f32, out: &mut [f32]) {
        let n = out.len();
        let mut j = 0;
        while j + 4 <= n {
            let sums = dots::<4>(q.as_ptr(), k.as_ptr().add(j * dk), dk);
            for (o, s) in out[j..j + 4].iter_mut().zip(sums) {
                *o = s * scale;
            }
            j += 4;
        }
        while j < n {
            out[j] = dots::<1>(q.as_ptr(), k.as_ptr().add(j * dk), dk)[0] * scale;
            j += 1;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_sum(p: &[f32], v: &[u16], out: &mut [f32]) {
        let (s, dv) = (p.len(), out.len());
        let mut c = 0;
        while c + 8 <= dv {
            let col = v.as_ptr().add(c);
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut j = 0;
            while j + 4 <= s {
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_set1_ps(p[j + r]), widen8_bf16(col.add((j + r) * dv)), *a);
                }
                j += 4;
            }
            while j < s {
                acc[0] = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), widen8_bf16(col.add(j * dv)), acc[0]);
                j += 1;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            _mm256_storeu_ps(out.as_mut_ptr().add(c), sum);
            c += 8;
        }
        for (d, o) in out.iter_mut().enumerate().skip(c) {
            *o = (0..s).map(|j| p[j] * widen(v[j * dv + d])).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::backend::cpu::{assert_sum_close, test_bf16_bits};

    /// Key counts around the four-key step, head sizes around the 32- and 16-lane steps:
    /// against float64 sums.
    #[test]
    fn kernels_match_a_float64_reference() {
        if !applies() {
            eprintln!("skipped: this CPU has neither AVX512-BF16 nor AVX2");
            return;
        }
        let f = |b: u16| bf16::from_bits(b).to_f32() as f64;
        // The dispatched kernels, and the AVX2 ones where a CPU with AVX512-BF16 skips them.
        type Kernels = (fn(&[u16], &[u16], usize, f32, &mut [f32]), fn(&[f32], &[u16], &mut [f32]));
        let mut kernels: Vec<(&str, Kernels)> = vec![("dispatched", (scores, weighted_sum))];
        #[cfg(target_arch = "x86_64")]
        if crate::backend::cpu::simd::best_isa() != crate::backend::cpu::simd::Isa::Baseline {
            // SAFETY (both): the CPU has AVX2 and FMA.
            kernels.push((
                "avx2",
                (
                    |q, k, d, sc, o| unsafe { avx2::scores(q, k, d, sc, o) },
                    |p, v, o| unsafe { avx2::weighted_sum(p, v, o) },
                ),
            ));
        }
        for (name, (scores, weighted_sum)) in kernels {
            for (s, d) in [(1, 1), (3, 17), (5, 64), (9, 80), (4, 100), (130, 128)] {
                let (q, k) = (test_bf16_bits(d, 1), test_bf16_bits(s * d, 2));
                let mut sc = vec![f32::NAN; s];
                scores(&q, &k, d, 0.5, &mut sc);
                for (j, &got) in sc.iter().enumerate() {
                    let terms = (0..d).map(|e| 0.5 * f(q[e]) * f(k[j * d + e]));
                    assert_sum_close(got, terms, format!("{name} scores s{s} d{d} key {j}"));
                }
                let p: Vec<f32> = crate::backend::cpu::test_rand(s, 3);
                let mut o = vec![f32::NAN; d];
                weighted_sum(&p, &k, &mut o);
                for (e, &got) in o.iter().enumerate() {
                    let terms = (0..s).map(|j| p[j] as f64 * f(k[j * d + e]));
                    assert_sum_close(got, terms, format!("{name} weighted sum s{s} d{d} column {e}"));
                }
            }
        }
    }

    /// The f32 and f16 kernels (AVX-512), over the same sizes: against float64 sums.
    #[test]
    fn wide_kernels_match_a_float64_reference() {
        if !wide_applies() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for (s, d) in [(1, 1), (3, 17), (5, 64), (9, 80), (4, 100), (130, 128)] {
            let q: Vec<f32> = crate::backend::cpu::test_rand(d, 1).iter().map(|v| v * 2.0 - 1.0).collect();
            let k32: Vec<f32> = crate::backend::cpu::test_rand(s * d, 2).iter().map(|v| v * 2.0 - 1.0).collect();
            let k16: Vec<half::f16> = k32.iter().map(|&v| half::f16::from_f32(v)).collect();
            let p: Vec<f32> = crate::backend::cpu::test_rand(s, 3);
            let check = |name: &str, kf: &dyn Fn(usize) -> f64, sc: Vec<f32>, o: Vec<f32>| {
                for (j, &got) in sc.iter().enumerate() {
                    let terms = (0..d).map(|e| 0.5 * q[e] as f64 * kf(j * d + e));
                    assert_sum_close(got, terms, format!("{name} scores s{s} d{d} key {j}"));
                }
                for (e, &got) in o.iter().enumerate() {
                    let terms = (0..s).map(|j| p[j] as f64 * kf(j * d + e));
                    assert_sum_close(got, terms, format!("{name} weighted sum s{s} d{d} column {e}"));
                }
            };
            let (mut sc, mut o) = (vec![f32::NAN; s], vec![f32::NAN; d]);
            scores_wide(&q, &k32, d, 0.5, &mut sc);
            weighted_sum_wide(&p, &k32, &mut o);
            check("f32", &|i| k32[i] as f64, sc.clone(), o.clone());
            scores_wide(&q, &k16, d, 0.5, &mut sc);
            weighted_sum_wide(&p, &k16, &mut o);
            check("f16", &|i| k16[i].to_f64(), sc, o);
        }
    }
}
