//! f32 matrix products on AVX-512. The `gemm` crate multiplies with 256-bit vectors on a stable
//! compiler (its AVX-512 kernels need a nightly one), half of what these CPUs do per cycle.
//!
//! `dst = alpha · a @ b (+ beta · dst)`, the operands f32, bf16 or f16 (widened to f32 as they
//! are copied), sums in f32. The k axis is cut into blocks of at most [`KC`]. Each block of
//! `a` is copied once into panels of [`MR`] rows (a row at a fixed stride of `KC`, so the
//! micro-tile's loads are one base register and constant offsets). Tasks then take groups of
//! up to [`GROUP`] strips of [`NR`] columns of `b` (and, when the strips are fewer than the
//! threads, runs of `a`'s panels): each strip's part of the block is copied k-major
//! (transposed 16 × 16 in registers when `b`'s columns are contiguous along k, as a transposed
//! weight's are), and a micro-tile of MR × NR sums in 28 registers runs over each panel of `a`
//! by each strip of the group — the panel stays in L1 while the group's strips stay in L2.

use std::cell::RefCell;

use rayon::prelude::*;

use super::iter::{with_scratch, MutPtr, Ptr};
use super::matmul::Mat;
use super::simd::{best_isa, Isa};
use crate::dtype::Dtype;
use crate::element::Element;

/// Rows of a micro-tile.
const MR: usize = 14;
/// Columns of a micro-tile (two vectors of 16 lanes).
const NR: usize = 32;
/// Largest block of the k axis (a strip's block is at most 32 KiB).
const KC: usize = 256;
/// Most strips a task packs together: their blocks (up to 512 KiB) stay in the L2 cache while
/// a panel of `a` is multiplied by each of them from L1.
const GROUP: usize = 16;
/// Products of fewer multiply-adds run on the calling thread.
const PARALLEL_WORK: usize = 1 << 20;

/// Whether this CPU runs [`gemm`] (AVX-512 F/BW/DQ/VL with FMA and F16C).
pub fn supported() -> bool {
    best_isa() == Isa::Avx512
}

thread_local! {
    /// The panels of `a`, kept between calls (no page faults for a fresh buffer each time).
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A task's strips of `b`, kept the same way.
    static STRIPS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst = alpha · a @ b + beta · dst` (`beta · dst` only when `read_dst`) for `a` m × k, `b`
/// k × n (element type `T`: f32, bf16 or f16) and `dst` m × n f32 at row stride `dst_rs`,
/// columns contiguous. Runs on up to `threads` threads.
///
/// # Safety
/// The views must be valid for m × k, k × n and m × n elements; the CPU must be
/// [`supported`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm<T: Element>(
    (m, n, k): (usize, usize, usize),
    dst: MutPtr<f32>,
    dst_rs: isize,
    read_dst: bool,
    a: Mat<T>,
    b: Mat<T>,
    beta: f32,
    alpha: f32,
    threads: usize,
) {
    assert!(supported() && matches!(T::DTYPE, Dtype::F32 | Dtype::Bf16 | Dtype::F16));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(dst.get().offset(i as isize * dst_rs), n);
            row.iter_mut().for_each(|v| *v = if read_dst { beta * *v } else { 0.0 });
        }
        return;
    }
    let blocks = k.div_ceil(KC);
    let kc = k.div_ceil(blocks);
    let panels = m.div_ceil(MR);
    let parallel = threads > 1 && m * n * k >= PARALLEL_WORK;
    with_scratch(&PANELS, blocks * panels * MR * KC, |packed| {
        // Panel p of block blk starts at (blk * panels + p) * MR * KC.
        let packed = MutPtr(packed.as_mut_ptr());
        let pack = |t: usize| {
            let (blk, p) = (t / panels, t % panels);
            let (k0, i0) = (blk * kc, p * MR);
            // SAFETY: rows i0.. and columns k0.. of a; the panel's own part of the buffer.
            x86::pack_a(a, i0, MR.min(m - i0), k0, kc.min(k - k0), packed.get().add(t * MR * KC));
        };
        if parallel && m * k >= 1 << 15 {
            (0..blocks * panels).into_par_iter().for_each(pack);
        } else {
            (0..blocks * panels).for_each(pack);
        }
        // Tasks take groups of strips of columns (a multiple of the threads, of even sizes),
        // and when there are fewer strips than threads, runs of panels of each.
        let strips = n.div_ceil(NR);
        let groups = strips.div_ceil(GROUP);
        let groups = if parallel { groups.next_multiple_of(threads).min(strips) } else { groups };
        let per_group = strips.div_ceil(groups);
        let groups = strips.div_ceil(per_group);
        let chunks = if parallel { threads.div_ceil(groups).min(panels) } else { 1 };
        let per_chunk = panels.div_ceil(chunks);
        let packed = Ptr(packed.get() as *const f32);
        let task = |t: usize| {
            let (g, c) = (t / chunks, t % chunks);
            let strip_range = (g * per_group, strips.min((g + 1) * per_group));
            let panel_range = (c * per_chunk, panels.min((c + 1) * per_chunk));
            if panel_range.0 >= panel_range.1 {
                return;
            }
            with_scratch(&STRIPS, per_group * KC * NR, |strips_buf| {
                let strips_buf = strips_buf.as_mut_ptr();
                for blk in 0..blocks {
                    let k0 = blk * kc;
                    let run = Run {
                        m,
                        n,
                        strip_range,
                        k0,
                        kc: kc.min(k - k0),
                        panels: packed.get().add(blk * panels * MR * KC),
                        panel_range,
                        dst,
                        dst_rs,
                        alpha,
                        add: if blk > 0 {
                            Add::Dst
                        } else if read_dst {
                            Add::Scaled(beta)
                        } else {
                            Add::Nothing
                        },
                    };
                    // SAFETY: the group's columns of every row the task's panels cover.
                    x86::group_block(b, &run, strips_buf);
                }
            })
        };
        if parallel {
            (0..groups * chunks).into_par_iter().for_each(task);
        } else {
            (0..groups * chunks).for_each(task);
        }
    });
}

/// What a micro-tile adds to its sums (times alpha) as it stores them.
#[derive(Clone, Copy)]
enum Add {
    /// Nothing: the first block overwrites.
    Nothing,
    /// `beta ·` the destination (the first block, reading it).
    Scaled(f32),
    /// The destination (later blocks add to the first's).
    Dst,
}

/// One group of strips of columns over one block of k, for a run of panels of `a`.
struct Run {
    m: usize,
    n: usize,
    /// The group's strips.
    strip_range: (usize, usize),
    k0: usize,
    kc: usize,
    /// The block's panels of a.
    panels: *const f32,
    panel_range: (usize, usize),
    dst: MutPtr<f32>,
    dst_rs: isize,
    alpha: f32,
    add: Add,
}

impl Run {
    /// The first column of strip `s` and its columns inside the matrix (≤ NR).
    fn strip_cols(&self, s: usize) -> (usize, usize) {
        (s * NR, NR.min(self.n - s * NR))
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Add, Run, KC, MR, NR};
    use crate::backend::cpu::matmul::Mat;
    use crate::dtype::Dtype;
    use crate::element::Element;

    /// The mask of the first `n` (at most 16, more count as 16) lanes.
    #[inline(always)]
    fn lanes(n: usize) -> u16 {
        if n >= 16 {
            u16::MAX
        } else {
            ((1u32 << n) - 1) as u16
        }
    }

    /// Up to 16 consecutive elements at `p` widened to f32, the lanes outside `mask` zero (and
    /// not read).
    #[inline(always)]
    unsafe fn load16<T: Element>(p: *const T, mask: u16) -> __m512 {
        match T::DTYPE {
            Dtype::F32 => _mm512_maskz_loadu_ps(mask, p as *const f32),
            Dtype::Bf16 => {
                let bits = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p as *const i16));
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bits))
            }
            Dtype::F16 => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16)),
            _ => unreachable!("f32_gemm takes f32, bf16 and f16"),
        }
    }

    /// Transposes the 16 × 16 matrix whose rows are `r` in place.
    #[inline(always)]
    unsafe fn transpose16(r: &mut [__m512; 16]) {
        // Pairs of rows interleaved, then fours: u[4i + j] holds, in 128-bit lane l, column
        // 4l + j of rows 4i..4i + 4.
        let t: [__m512; 16] = std::array::from_fn(|x| {
            let (a, b) = (r[x & !1], r[x | 1]);
            if x % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        let u: [__m512; 16] = std::array::from_fn(|x| {
            let (g, j) = (x / 4 * 4, x % 4);
            let (a, b) = (t[g + j / 2], t[g + 2 + j / 2]);
            if j % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(a, b)
            } else {
                _mm512_shuffle_ps::<0xEE>(a, b)
            }
        });
        // Lanes of four rows at a time: column 4l + j gathers lane l of u[j], u[4 + j],
        // u[8 + j] and u[12 + j].
        for j in 0..4 {
            let even_lo = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            let odd_lo = _mm512_shuffle_f32x4::<0xDD>(u[j], u[4 + j]);
            let even_hi = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            let odd_hi = _mm512_shuffle_f32x4::<0xDD>(u[8 + j], u[12 + j]);
            r[j] = _mm512_shuffle_f32x4::<0x88>(even_lo, even_hi);
            r[8 + j] = _mm512_shuffle_f32x4::<0xDD>(even_lo, even_hi);
            r[4 + j] = _mm512_shuffle_f32x4::<0x88>(odd_lo, odd_hi);
            r[12 + j] = _mm512_shuffle_f32x4::<0xDD>(odd_lo, odd_hi);
        }
    }

    /// Copies rows `i0..i0 + rows`, columns `k0..k0 + kc` of `a` into a panel (row r at
    /// `panel + r * KC`), widened to f32.
    ///
    /// # Safety
    /// The elements must lie in a's view, the panel must hold MR · KC values; AVX-512.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn pack_a<T: Element>(a: Mat<T>, i0: usize, rows: usize, k0: usize, kc: usize, panel: *mut f32) {
        for r in 0..rows {
            let src = a.ptr.get().offset((i0 + r) as isize * a.rs + k0 as isize * a.cs);
            let dst = panel.add(r * KC);
            if a.cs == 1 {
                for kk in (0..kc).step_by(16) {
                    let mask = lanes(kc - kk);
                    _mm512_mask_storeu_ps(dst.add(kk), mask, load16(src.add(kk), mask));
                }
            } else {
                for kk in 0..kc {
                    *dst.add(kk) = (*src.offset(kk as isize * a.cs)).to_f64() as f32;
                }
            }
        }
    }

    /// Copies the run's strips of `b` over its block of k into `buf` (strip after strip, each
    /// k-major, zeros past the last column), then runs the micro-tiles of the run's panels of
    /// `a` by each strip.
    ///
    /// # Safety
    /// As for [`super::gemm`]; `buf` holds the run's strips; AVX-512.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    pub(super) unsafe fn group_block<T: Element>(b: Mat<T>, run: &Run, buf: *mut f32) {
        let (s0, s1) = run.strip_range;
        for s in s0..s1 {
            let (n0, cols) = run.strip_cols(s);
            pack_b(b, run.k0, run.kc, n0, cols, buf.add((s - s0) * KC * NR));
        }
        for p in run.panel_range.0..run.panel_range.1 {
            match MR.min(run.m - p * MR) {
                14 => panel::<14>(p, run, buf),
                13 => panel::<13>(p, run, buf),
                12 => panel::<12>(p, run, buf),
                11 => panel::<11>(p, run, buf),
                10 => panel::<10>(p, run, buf),
                9 => panel::<9>(p, run, buf),
                8 => panel::<8>(p, run, buf),
                7 => panel::<7>(p, run, buf),
                6 => panel::<6>(p, run, buf),
                5 => panel::<5>(p, run, buf),
                4 => panel::<4>(p, run, buf),
                3 => panel::<3>(p, run, buf),
                2 => panel::<2>(p, run, buf),
                _ => panel::<1>(p, run, buf),
            }
        }
    }

    /// Panel `p` of `a` (`R` rows) by each of the run's strips.
    #[inline(always)]
    unsafe fn panel<const R: usize>(p: usize, run: &Run, buf: *const f32) {
        let ap = run.panels.add(p * MR * KC);
        let (s0, s1) = run.strip_range;
        for s in s0..s1 {
            let (n0, cols) = run.strip_cols(s);
            let c = run.dst.get().offset((p * MR) as isize * run.dst_rs).add(n0);
            tile::<R>(ap, buf.add((s - s0) * KC * NR), c, cols, run);
        }
    }

    /// Columns `n0..n0 + cols` of `b` over rows `k0..k0 + kc`, k-major into `sp` (NR values a
    /// row, zeros past `cols`).
    #[inline(always)]
    unsafe fn pack_b<T: Element>(b: Mat<T>, k0: usize, kc: usize, n0: usize, cols: usize, sp: *mut f32) {
        let base = b.ptr.get().offset(k0 as isize * b.rs + n0 as isize * b.cs);
        if b.rs == 1 && b.cs != 1 {
            // Columns contiguous along k: 16 × 16 blocks transposed in registers.
            for kk in (0..kc).step_by(16) {
                let mask = lanes(kc - kk);
                for half in 0..2 {
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (j, v) in r.iter_mut().enumerate() {
                        let col = half * 16 + j;
                        if col < cols {
                            *v = load16(base.offset(col as isize * b.cs).add(kk), mask);
                        }
                    }
                    transpose16(&mut r);
                    for (c, v) in r.iter().enumerate().take(kc - kk) {
                        _mm512_store_ps(sp.add((kk + c) * NR + half * 16), *v);
                    }
                }
            }
        } else if b.cs == 1 {
            // Rows contiguous along n.
            let (lo, hi) = (lanes(cols), lanes(cols.saturating_sub(16)));
            for kk in 0..kc {
                let row = base.offset(kk as isize * b.rs);
                _mm512_store_ps(sp.add(kk * NR), load16(row, lo));
                _mm512_store_ps(
                    sp.add(kk * NR + 16),
                    if hi == 0 { _mm512_setzero_ps() } else { load16(row.add(16), hi) },
                );
            }
        } else {
            for kk in 0..kc {
                for j in 0..NR {
                    let v = if j < cols { *base.offset(kk as isize * b.rs + j as isize * b.cs) } else { T::default() };
                    *sp.add(kk * NR + j) = v.to_f64() as f32;
                }
            }
        }
    }

    /// The micro-tile of `R` rows (panel `ap`) by a strip (`sp`, `cols` columns inside the
    /// matrix): sums over the block, then `c = alpha · sums + (what the run adds)`.
    #[inline(always)]
    unsafe fn tile<const R: usize>(ap: *const f32, sp: *const f32, c: *mut f32, cols: usize, run: &Run) {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for kk in 0..run.kc {
            let b0 = _mm512_load_ps(sp.add(kk * NR));
            let b1 = _mm512_load_ps(sp.add(kk * NR + 16));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r * KC + kk));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        let alpha = _mm512_set1_ps(run.alpha);
        let masks = [lanes(cols), lanes(cols.saturating_sub(16))];
        for (r, row) in acc.iter().enumerate() {
            let out = c.offset(r as isize * run.dst_rs);
            for (h, &mask) in masks.iter().enumerate() {
                if mask == 0 {
                    continue;
                }
                let o = out.add(16 * h);
                let v = match run.add {
                    Add::Nothing => _mm512_mul_ps(row[h], alpha),
                    Add::Scaled(beta) => {
                        let old = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, o), _mm512_set1_ps(beta));
                        _mm512_fmadd_ps(row[h], alpha, old)
                    }
                    Add::Dst => _mm512_fmadd_ps(row[h], alpha, _mm512_maskz_loadu_ps(mask, o)),
                };
                _mm512_mask_storeu_ps(o, mask, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use super::*;
    use crate::backend::cpu::iter::Ptr;
    use crate::backend::cpu::test_rand;

    /// Checks `dst` against float64 sums of the products (the elements as stored), within the
    /// bound of f32 summation: k · 2⁻²⁴ of Σ|term| (plus the old value's share).
    #[allow(clippy::too_many_arguments)]
    fn check<T: Element>(
        (m, n, k): (usize, usize, usize),
        got: &[f32],
        old: &[f32],
        (read_dst, beta, alpha): (bool, f32, f32),
        a: &[T],
        (a_rs, a_cs): (usize, usize),
        b: &[T],
        (b_rs, b_cs): (usize, usize),
        what: &str,
    ) {
        for i in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|kk| a[i * a_rs + kk * a_cs].to_f64() * b[kk * b_rs + j * b_cs].to_f64());
                let (sum, mag): (f64, f64) = (terms.clone().sum(), terms.map(f64::abs).sum());
                let base = if read_dst { beta as f64 * old[i * n + j] as f64 } else { 0.0 };
                let want = alpha as f64 * sum + base;
                let bound = (k + 2) as f64 * 2f64.powi(-24) * (alpha.abs() as f64 * mag + base.abs()) + 1e-30;
                let g = got[i * n + j] as f64;
                assert!((g - want).abs() <= bound, "{what} m{m} n{n} k{k} [{i}, {j}]: {g} vs {want}");
            }
        }
    }

    fn values<T: Element>(len: usize, seed: u64) -> Vec<T> {
        test_rand(len, seed).iter().map(|v| T::from_f64((v * 2.0 - 1.0) as f64)).collect()
    }

    /// Shapes around the micro-tile, the strip and the k block; `b` with either axis
    /// contiguous or neither, `a` with rows or columns contiguous; alpha / beta; every dtype.
    fn products<T: Element>() {
        // The last two are large enough to run on two threads, the last in runs of panels.
        let shapes = [
            (1, 1, 1),
            (3, 17, 5),
            (14, 32, 16),
            (15, 33, 17),
            (29, 64, 256),
            (30, 70, 300),
            (40, 31, 600),
            (64, 100, 170),
            (100, 20, 600),
        ];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            let a = values::<T>(m * k, 2 * si as u64 + 1);
            let b = values::<T>(k * n, 2 * si as u64 + 2);
            for (b_rs, b_cs) in [(n, 1), (1, k), (2 * n, 2)] {
                let b_store = if b_rs == 2 * n { values::<T>(2 * k * n, 99) } else { b.clone() };
                for (a_rs, a_cs) in [(k, 1), (1, m)] {
                    for (read_dst, beta, alpha) in [(false, 0.0, 1.0), (true, 1.0, 1.0), (true, -0.5, 0.25)] {
                        let old: Vec<f32> = test_rand(m * n, 7).iter().map(|v| v - 0.5).collect();
                        let mut got = old.clone();
                        for threads in [1, 2] {
                            got.copy_from_slice(&old);
                            // SAFETY: the strides describe the buffers' m×k, k×n and m×n matrices.
                            unsafe {
                                gemm(
                                    (m, n, k),
                                    MutPtr(got.as_mut_ptr()),
                                    n as isize,
                                    read_dst,
                                    Mat { ptr: Ptr(a.as_ptr()), rs: a_rs as isize, cs: a_cs as isize },
                                    Mat { ptr: Ptr(b_store.as_ptr()), rs: b_rs as isize, cs: b_cs as isize },
                                    beta,
                                    alpha,
                                    threads,
                                )
                            };
                            let what =
                                format!("{:?} b ({b_rs}, {b_cs}) a ({a_rs}, {a_cs}) threads {threads}", T::DTYPE);
                            check(
                                (m, n, k),
                                &got,
                                &old,
                                (read_dst, beta, alpha),
                                &a,
                                (a_rs, a_cs),
                                &b_store,
                                (b_rs, b_cs),
                                &what,
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn products_match_a_float64_reference() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        products::<f32>();
        products::<bf16>();
        products::<f16>();
    }
}
