//! Decode attention of a bf16 model: a few query rows against a KV cache, with the scores
//! and the weighted sum of values computed straight from the bf16 keys and values.
//!
//! With AVX512-BF16, scores take four keys at a time: `vdpbf16ps` dots 32 bf16 pairs per
//! instruction into f32 lanes (products exact), and one transposing reduction sums the four
//! keys' lanes together, instead of a horizontal sum per key. With AVX2, keys and the query
//! are widened to f32 8 values at a time and dotted by FMA, four keys in independent chains.
//! The weighted sum widens a key's values (a bf16 value is the top half of its f32: 16 lanes
//! with AVX-512, 8 with AVX2) and accumulates four keys in independent chains. Probabilities
//! stay f32, so the result is what the widening kernel gives, up to f32 sums.

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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::bf16_gemm::x86::{first_lanes, load_bf16, reduce4};

    /// 16 bf16 values (bits) from `p` widened to f32, the lanes past `mask` zero.
    #[inline(always)]
    unsafe fn load_f32(p: *const u16, mask: u16) -> __m512 {
        let bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p as *const i16));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
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

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn weighted_sum(p: &[f32], v: &[u16], out: &mut [f32]) {
        let (s, dv) = (p.len(), out.len());
        let mut c = 0;
        while c < dv {
            let mask = first_lanes(dv - c) as u16;
            let col = v.as_ptr().add(c);
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut j = 0;
            while j + 4 <= s {
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(p[j + r]), load_f32(col.add((j + r) * dv), mask), *a);
                }
                j += 4;
            }
            while j < s {
                acc[0] = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), load_f32(col.add(j * dv), mask), acc[0]);
                j += 1;
            }
            let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(c), mask, sum);
            c += 16;
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
            for (s, d) in [(1, 1), (3, 17), (5, 64), (9, 80), (130, 128)] {
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
}
