//! The decode product of a dense model: one row of activations times a matrix whose rows
//! (output features) hold k contiguous values — a Linear layer's weight, or the tied
//! embedding as the output head — for bf16 and f32 weights.
//!
//! Every kernel reads a thread's range of rows; they differ by what the CPU has:
//! - AVX512-BF16 (bf16): one row at a time, 64 elements a step through `vdpbf16ps` (32
//!   exact products of bf16 pairs into 16 f32 lanes per instruction) on two accumulators,
//!   the last step under a mask. One contiguous stream a thread is what the hardware
//!   prefetcher follows best: on Zen 4, four rows a pass (four interleaved streams) read ~20
//!   GB/s over a 135M model's step where one row a pass reads ~29 (docs/PERF.md, session 17).
//! - AVX-512 without it (bf16 and f32, the "wide" kernel): one row at a time too, 64
//!   elements a step into four f32 accumulators, each step asking for the line 8 KiB on.
//!   A bf16 step is two loads split into the f32 of their even and their odd columns by a
//!   shift and a mask (the `Wide` loads of `attention_kernels`), and x is laid out once a
//!   product in the same order, so the products pair up; four rows' sums are reduced together.
//!   On a Xeon without AVX512-BF16 the four-row AVX2 kernel read a 135M bf16 step at ~21
//!   GB/s and the f32 one ~24, where the memory gives 27 (docs/PERF.md, session 29).
//! - AVX2 (bf16): a pass dots [`ROWS_AVX2`] rows at once, two accumulators a row, 16
//!   elements a step, each bf16 widened to f32 by a shift or mask of its bits and
//!   multiplied-added in f32, the pass's rows prefetched ahead; the last `k mod 16` elements
//!   are summed one at a time.
//!
//! Products are exact and sums are f32 in every kernel.

use super::attention_kernels::wide_applies;
use super::bf16_gemm::cpu_supported;
use super::for_feature_ranges;
use super::iter::MutPtr;
use super::simd::{best_isa, Isa};

/// Weight rows one pass of the AVX2 kernel reads (tuned on Zen 1, whose 256-bit operations
/// are two 128-bit halves: the rows share each step's split of x).
const ROWS_AVX2: usize = 4;

/// A matrix of `n` rows of `k` contiguous values, row `j` at `ptr + j · ld`.
pub struct RowMatrix<E> {
    /// The first row.
    pub ptr: *const E,
    /// Elements between the starts of consecutive rows.
    pub ld: usize,
    /// Rows (output features).
    pub n: usize,
    /// Elements of a row.
    pub k: usize,
}

impl<E> Clone for RowMatrix<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for RowMatrix<E> {}

// SAFETY: a read-only view of memory that outlives the product.
unsafe impl<E> Sync for RowMatrix<E> {}

/// A weight element the decode product reads: bf16 (as its bits) or f32.
pub trait Weight: Copy + Sync {
    /// Whether this CPU has a kernel for these weights.
    fn applies() -> bool;

    /// The first `k` values of x laid out for the kernel that runs, made once a product and
    /// shared by its ranges: the wide kernel's order, or nothing for kernels that read x as
    /// it is.
    ///
    /// # Safety
    /// [`Weight::applies`] must hold; `x` must hold `k` values.
    unsafe fn layout(x: &[Self], k: usize) -> Vec<f32>;

    /// Rows `j0..j1` of `w` dotted with `x` (and its [`Weight::layout`] `xs`) into `y`.
    ///
    /// # Safety
    /// [`Weight::applies`] must hold; `w` must be valid for its rows, `x` for `w.k` values,
    /// and rows `j0..j1` of `y` must be this call's alone.
    unsafe fn rows(x: &[Self], xs: &[f32], w: RowMatrix<Self>, j0: usize, j1: usize, y: MutPtr<f32>);
}

impl Weight for u16 {
    /// AVX512-BF16, else AVX-512, else AVX2 with FMA.
    fn applies() -> bool {
        cpu_supported() || best_isa() != Isa::Baseline
    }

    unsafe fn layout(x: &[u16], k: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if !cpu_supported() && wide_applies() {
            return x86::wide_layout(x, k);
        }
        let _ = (x, k);
        Vec::new()
    }

    unsafe fn rows(x: &[u16], xs: &[f32], w: RowMatrix<u16>, j0: usize, j1: usize, y: MutPtr<f32>) {
        #[cfg(target_arch = "x86_64")]
        if cpu_supported() {
            x86::rows_bf16(x, w, j0, j1, y)
        } else if wide_applies() {
            x86::rows_wide(xs, w, j0, j1, y)
        } else {
            x86::rows_avx2(x, w, j0, j1, y)
        }
    }
}

impl Weight for f32 {
    /// AVX-512 (elsewhere the matmul's portable matrix-vector loop runs).
    fn applies() -> bool {
        wide_applies()
    }

    unsafe fn layout(x: &[f32], k: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        return x86::wide_layout(x, k);
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (x, k);
            Vec::new()
        }
    }

    unsafe fn rows(_: &[f32], xs: &[f32], w: RowMatrix<f32>, j0: usize, j1: usize, y: MutPtr<f32>) {
        #[cfg(target_arch = "x86_64")]
        x86::rows_wide(xs, w, j0, j1, y)
    }
}

/// `y[j] = Σ_k x[k] · w[j, k]` for the `w.n` rows of `w`; `x` holds `w.k` values. The CPU must
/// have a kernel for `E` ([`Weight::applies`]).
///
/// # Safety
/// `w` must be valid for its `n` rows of `k` elements.
pub unsafe fn gemv<E: Weight>(x: &[E], w: RowMatrix<E>, y: &mut [f32]) {
    assert!(E::applies() && x.len() >= w.k && y.len() >= w.n);
    let out = MutPtr(y.as_mut_ptr());
    // SAFETY: the kernel applies and x holds w.k values.
    let xs = unsafe { E::layout(x, w.k) };
    // SAFETY: as above; rows j0..j1 of w and of y belong to this range only.
    for_feature_ranges(w.n, w.k, |j0, j1| unsafe { E::rows(x, &xs, w, j0, j1, out) });
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::backend::cpu::attention_kernels::Wide;
    use crate::backend::cpu::bf16_gemm::x86::{first_lanes, load_bf16, reduce4};
    use crate::backend::cpu::iter::MutPtr;
    use crate::backend::cpu::simd::{hsum_avx2, prefetch_ahead};

    use super::{RowMatrix, ROWS_AVX2};

    /// How far ahead of a step of the wide kernel its row is asked for: on the Xeon of
    /// session 29, 8 KiB read a 135M step ~10 % faster than none and ~3 % faster than 4 KiB
    /// (a C model of the step).
    const WIDE_PREFETCH_BYTES: usize = 8192;

    /// Rows `j0..j1` of `w` dotted with x into `y`, one row at a time, by `vdpbf16ps`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn rows_bf16(x: &[u16], w: RowMatrix<u16>, j0: usize, j1: usize, y: MutPtr<f32>) {
        for j in j0..j1 {
            *y.get().add(j) = dot_bf16(x, w.ptr.add(j * w.ld), w.k);
        }
    }

    /// The first `k` values of x as the wide kernel's weight loads lay them out (64 values a
    /// step, zero past k).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn wide_layout<E: Wide>(x: &[E], k: usize) -> Vec<f32> {
        let mut xs = vec![0f32; k.div_ceil(64) * 64];
        for (s, chunk) in xs.chunks_exact_mut(64).enumerate() {
            let v = E::load64(x.as_ptr().add(64 * s), k - 64 * s);
            for (i, v) in v.into_iter().enumerate() {
                _mm512_storeu_ps(chunk.as_mut_ptr().add(16 * i), v);
            }
        }
        xs
    }

    /// Rows `j0..j1` of `w` dotted with x (laid out by [`wide_layout`] as `xs`) into `y` with
    /// AVX-512 FMA, one row at a time, four rows' sums reduced together.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub unsafe fn rows_wide<E: Wide>(xs: &[f32], w: RowMatrix<E>, j0: usize, j1: usize, y: MutPtr<f32>) {
        let k = w.k;
        let mut j = j0;
        while j + 4 <= j1 {
            let row = |r: usize| w.ptr.add((j + r) * w.ld);
            let (a, b) = (row_wide(xs, row(0), k), row_wide(xs, row(1), k));
            let (c, d) = (row_wide(xs, row(2), k), row_wide(xs, row(3), k));
            _mm_storeu_ps(y.get().add(j), reduce4(a, b, c, d));
            j += 4;
        }
        while j < j1 {
            *y.get().add(j) = _mm512_reduce_add_ps(row_wide(xs, w.ptr.add(j * w.ld), k));
            j += 1;
        }
    }

    /// The lanes of the dot product of `xs` (x laid out by [`wide_layout`]) with the `k`
    /// values at `row`.
    #[inline(always)]
    unsafe fn row_wide<E: Wide>(xs: &[f32], row: *const E, k: usize) -> __m512 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let full = k / 64;
        // SAFETY (whole function): reads stay inside the row (the last step's through masks)
        // and xs; a prefetch never faults.
        for s in 0..full {
            let p = row.add(64 * s);
            _mm_prefetch::<_MM_HINT_T0>((p as *const i8).wrapping_add(WIDE_PREFETCH_BYTES));
            madd_step(&mut acc, E::load64(p, 64), xs.as_ptr().add(64 * s));
        }
        if full * 64 < k {
            madd_step(&mut acc, E::load64(row.add(64 * full), k - 64 * full), xs.as_ptr().add(64 * full));
        }
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))
    }

    /// `acc[i] += v[i] · x[16 i..16 i + 16]`: one step of 64 values.
    #[inline(always)]
    unsafe fn madd_step(acc: &mut [__m512; 4], v: [__m512; 4], x: *const f32) {
        for i in 0..4 {
            acc[i] = _mm512_fmadd_ps(v[i], _mm512_loadu_ps(x.add(16 * i)), acc[i]);
        }
    }

    /// Rows `j0..j1` of `w` dotted with x into `y`, with AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows_avx2(x: &[u16], w: RowMatrix<u16>, j0: usize, j1: usize, y: MutPtr<f32>) {
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
    unsafe fn block_avx2<const R: usize>(x: &[u16], w: RowMatrix<u16>, j: usize, y: MutPtr<f32>) {
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
    unsafe fn dot_bf16(x: &[u16], row: *const u16, k: usize) -> f32 {
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
    use crate::backend::cpu::{assert_sum_close, test_bf16_bits, test_rand};

    /// `y` of every row of `w` (`ld` apart) against float64 sums of `x` times the row.
    fn check<E: Copy>(name: &str, x: &[E], w: &[E], (n, k, ld): (usize, usize, usize), y: &[f32], f: fn(E) -> f64) {
        for (j, &got) in y.iter().enumerate().take(n) {
            let terms = (0..k).map(|kk| f(x[kk]) * f(w[j * ld + kk]));
            assert_sum_close(got, terms, format!("{name} n{n} k{k} row {j}"));
        }
    }

    /// Row counts around the passes, the four-row reductions and the threading split;
    /// lengths around the steps (odd ones too); rows apart by more than their length.
    const SHAPES: [(usize, usize); 7] = [(1, 1), (3, 31), (5, 64), (9, 97), (130, 576), (1100, 130), (7, 200)];

    /// bf16 weights: the dispatched kernel, and where the CPU has them the AVX-512 wide and
    /// AVX2 kernels too (a CPU with AVX512-BF16 would skip them), against float64 sums.
    #[test]
    fn bf16_products_match_a_float64_reference() {
        if !u16::applies() {
            eprintln!("skipped: this CPU has none of AVX512-BF16, AVX-512 and AVX2");
            return;
        }
        let f = |b: u16| bf16::from_bits(b).to_f32() as f64;
        for (n, k) in SHAPES {
            let ld = k + 5;
            let x = test_bf16_bits(k, 1);
            let w = test_bf16_bits(n * ld, 2);
            let m = RowMatrix { ptr: w.as_ptr(), ld, n, k };
            let mut y = vec![f32::NAN; n];
            // SAFETY: w holds n rows of ld ≥ k elements.
            unsafe { gemv(&x, m, &mut y) };
            check("dispatched", &x, &w, (n, k, ld), &y, f);
            #[cfg(target_arch = "x86_64")]
            {
                use crate::backend::cpu::simd::{best_isa, Isa};
                if wide_applies() {
                    let mut y = vec![f32::NAN; n];
                    // SAFETY: the CPU has AVX-512; w holds n rows.
                    unsafe { x86::rows_wide(&x86::wide_layout(&x, k), m, 0, n, MutPtr(y.as_mut_ptr())) };
                    check("wide", &x, &w, (n, k, ld), &y, f);
                }
                if best_isa() != Isa::Baseline {
                    let mut y = vec![f32::NAN; n];
                    // SAFETY: the CPU has AVX2 and FMA; w holds n rows.
                    unsafe { x86::rows_avx2(&x, m, 0, n, MutPtr(y.as_mut_ptr())) };
                    check("avx2", &x, &w, (n, k, ld), &y, f);
                }
            }
        }
    }

    /// f32 weights (the wide kernel), against float64 sums.
    #[test]
    fn f32_products_match_a_float64_reference() {
        if !f32::applies() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for (n, k) in SHAPES {
            let ld = k + 3;
            let x: Vec<f32> = test_rand(k, 3).iter().map(|v| v * 2.0 - 1.0).collect();
            let w: Vec<f32> = test_rand(n * ld, 4).iter().map(|v| v * 2.0 - 1.0).collect();
            let mut y = vec![f32::NAN; n];
            // SAFETY: w holds n rows of ld ≥ k elements.
            unsafe { gemv(&x, RowMatrix { ptr: w.as_ptr(), ld, n, k }, &mut y) };
            check("f32", &x, &w, (n, k, ld), &y, |v| v as f64);
        }
    }
}
