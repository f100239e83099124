//! The decode product of a bf16 model: one row of bf16 activations times a matrix whose rows
//! (output features) hold k contiguous bf16 values — a Linear layer's weight, or the tied
//! embedding as the output head.
//!
//! With AVX512-BF16 a thread reads its range of rows one row at a time, 64 elements a step
//! through `vdpbf16ps` (32 exact products of bf16 pairs into 16 f32 lanes per instruction) on
//! two accumulators, the last step under a mask, so any k works. One contiguous stream a
//! thread is what the hardware prefetcher follows best: on Zen 4, four rows a pass (four
//! interleaved streams) read ~20 GB/s over a 135M model's step where one row a pass reads
//! ~29 (docs/PERF.md, session 17). With AVX2 a pass dots [`ROWS_AVX2`] rows at once, two
//! accumulators a row, 16 elements a step, each bf16 widened to f32 by a shift or mask of its
//! bits (exact) and multiplied-added in f32, the pass's rows prefetched ahead; the last
//! `k mod 16` elements are summed one at a time. Products are exact and sums are f32 either
//! way.

use super::bf16_gemm::cpu_supported;
use super::for_feature_ranges;
use super::iter::MutPtr;
use super::simd::{best_isa, Isa};

/// Weight rows one pass of the AVX2 kernel reads (tuned on Zen 1, whose 256-bit operations
/// are two 128-bit halves: the rows share each step's split of x).
const ROWS_AVX2: usize = 4;

/// A matrix of `n` rows of `k` contiguous bf16 values (as bits), row `j` at `ptr + j · ld`.
#[derive(Clone, Copy)]
pub struct RowMatrix {
    /// The first row.
    pub ptr: *const u16,
    /// Elements between the starts of consecutive rows.
    pub ld: usize,
    /// Rows (output features).
    pub n: usize,
    /// Elements of a row.
    pub k: usize,
}

// SAFETY: a read-only view of memory that outlives the product.
unsafe impl Sync for RowMatrix {}

/// Whether this CPU runs [`gemv`] (AVX512-BF16, or AVX2 with FMA).
pub fn applies() -> bool {
    cpu_supported() || best_isa() != Isa::Baseline
}

/// `y[j] = Σ_k x[k] · w[j, k]` for the `w.n` rows of `w`; `x` holds `w.k` bf16 values (bits).
/// The CPU must have AVX512-BF16 or AVX2 ([`applies`]).
///
/// # Safety
/// `w` must be valid for its `n` rows of `k` elements.
pub unsafe fn gemv(x: &[u16], w: RowMatrix, y: &mut [f32]) {
    assert!(applies() && x.len() >= w.k && y.len() >= w.n);
    let out = MutPtr(y.as_mut_ptr());
    let dpbf16 = cpu_supported();
    let task = |j0: usize, j1: usize| {
        // SAFETY: features checked; rows j0..j1 of w and of y belong to this range only.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if dpbf16 {
                x86::rows(x, w, j0, j1, out)
            } else {
                x86::rows_avx2(x, w, j0, j1, out)
            }
        }
    };
    for_feature_ranges(w.n, w.k, task);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::simd::{hsum_avx2, prefetch_ahead};

    use super::{RowMatrix, ROWS_AVX2};
    use crate::backend::cpu::bf16_gemm::x86::{first_lanes, load_bf16};
    use crate::backend::cpu::iter::MutPtr;

    /// Rows `j0..j1` of `w` dotted with x into `y`, one row at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn rows(x: &[u16], w: RowMatrix, j0: usize, j1: usize, y: MutPtr<f32>) {
        for j in j0..j1 {
            *y.get().add(j) = dot(x, w.ptr.add(j * w.ld), w.k);
        }
    }

    /// Rows `j0..j1` of `w` dotted with x into `y`, with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows_avx2(x: &[u16], w: RowMatrix, j0: usize, j1: usize, y: MutPtr<f32>) {
        let mut j = j0;
        while j + ROWS_AVX2 <= j1 {
            block_avx2::<ROWS_AVX2>(x, w, j, y);
            j += ROWS_AVX2;
        }
        while j < j1 {
            block_avx2::<1>(x, w, j, y);
            j += 1;
        }
    }

    /// Rows `j..j + R`, with AVX2. A step loads 16 bf16 values of a row as one 256-bit word
    /// and makes two f32 vectors of it without moving a value between lanes: the odd
    /// elements are the words' upper halves already (a mask clears the lower), the even ones
    /// their lower halves shifted up. x is split the same way once a step for all R rows; a
    /// dot product does not care about the order of its terms. (Widening by
    /// `vpmovzxwd` + shift, eight values at a time, took more micro-ops a value on Zen 1,
    /// whose 256-bit operations are two 128-bit halves.)
    #[inline(always)]
    unsafe fn block_avx2<const R: usize>(x: &[u16], w: RowMatrix, j: usize, y: MutPtr<f32>) {
        let k = w.k;
        let rows: [*const u16; R] = std::array::from_fn(|r| w.ptr.add((j + r) * w.ld));
        prefetch_ahead(rows[0] as *const u8, R * w.ld * 2);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        let halves = |p: *const u16| {
            let v = _mm256_loadu_si256(p as *const __m256i);
            (_mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)), _mm256_castsi256_ps(_mm256_and_si256(v, high)))
        };
        let mut c = 0;
        // SAFETY (whole function): reads stay inside x and the rows.
        while c + 16 <= k {
            let (x0, x1) = halves(x.as_ptr().add(c));
            for (a, row) in acc.iter_mut().zip(&rows) {
                let (w0, w1) = halves(row.add(c));
                a[0] = _mm256_fmadd_ps(w0, x0, a[0]);
                a[1] = _mm256_fmadd_ps(w1, x1, a[1]);
            }
            c += 16;
        }
        let widen = |b: u16| f32::from_bits((b as u32) << 16);
        for (r, a) in acc.iter().enumerate() {
            let tail: f32 = (c..k).map(|e| widen(*rows[r].add(e)) * widen(x[e])).sum();
            *y.get().add(j + r) = hsum_avx2(_mm256_add_ps(a[0], a[1])) + tail;
        }
    }

    /// The dot product of x with the `k` bf16 values at `row`.
    #[inline(always)]
    unsafe fn dot(x: &[u16], row: *const u16, k: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 2];
        let full = u32::MAX;
        let mut c = 0;
        // SAFETY (whole function): reads stay inside x and the row (the last through masks).
        while c + 64 <= k {
            acc[0] = _mm512_dpbf16_ps(acc[0], load_bf16(row.add(c), full), load_bf16(x.as_ptr().add(c), full));
            acc[1] =
                _mm512_dpbf16_ps(acc[1], load_bf16(row.add(c + 32), full), load_bf16(x.as_ptr().add(c + 32), full));
            c += 64;
        }
        while c < k {
            let mask = first_lanes(k - c);
            acc[0] = _mm512_dpbf16_ps(acc[0], load_bf16(row.add(c), mask), load_bf16(x.as_ptr().add(c), mask));
            c += 32;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::backend::cpu::{assert_sum_close, test_bf16_bits};

    /// Row counts around the pass width and the threading split, lengths around the step
    /// (odd ones too), rows apart by more than their length: against float64 sums.
    #[test]
    fn products_match_a_float64_reference() {
        if !applies() {
            eprintln!("skipped: this CPU has neither AVX512-BF16 nor AVX2");
            return;
        }
        let f = |b: u16| bf16::from_bits(b).to_f32() as f64;
        for (n, k) in [(1, 1), (3, 31), (5, 64), (9, 97), (130, 576), (1100, 130)] {
            let ld = k + 5;
            let x = test_bf16_bits(k, 1);
            let w = test_bf16_bits(n * ld, 2);
            let w = RowMatrix { ptr: w.as_ptr(), ld, n, k };
            let mut y = vec![f32::NAN; n];
            // SAFETY: w holds n rows of ld ≥ k elements.
            unsafe { gemv(&x, w, &mut y) };
            let mut ys = vec![("dispatched", y)];
            #[cfg(target_arch = "x86_64")]
            if crate::backend::cpu::simd::best_isa() != crate::backend::cpu::simd::Isa::Baseline {
                // The AVX2 kernel too, where a CPU with AVX512-BF16 would skip it.
                let mut y = vec![f32::NAN; n];
                // SAFETY: the CPU has AVX2 and FMA; w holds n rows.
                unsafe { x86::rows_avx2(&x, w, 0, n, MutPtr(y.as_mut_ptr())) };
                ys.push(("avx2", y));
            }
            for (name, y) in ys {
                for (j, &got) in y.iter().enumerate() {
                    // SAFETY: row j of w.
                    let row = unsafe { std::slice::from_raw_parts(w.ptr.add(j * ld), k) };
                    let terms = (0..k).map(|kk| f(x[kk]) * f(row[kk]));
                    assert_sum_close(got, terms, format!("{name} n{n} k{k} row {j}"));
                }
            }
        }
    }
}
