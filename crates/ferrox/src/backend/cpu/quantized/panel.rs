//! The prefill kernel: many rows of x times a stored matrix. Panels of output features are
//! dequantized to f32 (SIMD, both threads) into a reused per-thread buffer and multiplied with
//! `gemm` on all threads. Panels are wide (up to [`PANEL_ELEMS`] elements), so `gemm` packs x
//! once per panel and runs its large-matrix blocking; an LLM layer's matrix is one or a few
//! panels.

use std::cell::RefCell;

use rayon::prelude::*;

use super::lanes::{self, Lanes, LanesKernel};
use super::qmm::{QMat, Scale};
use super::view::{decode_floats, unpack_bytes, Kind, View, MAX_GROUP};
use crate::backend::cpu::iter::{with_scratch, MutPtr, Ptr};
use crate::backend::cpu::matmul::{gemm_one, Mat};
use crate::backend::cpu::simd::Isa;

/// Largest dequantized panel (f32 elements, 8 MiB).
const PANEL_ELEMS: usize = 1 << 21;
/// Elements dequantized per parallel task.
const DEQUANT_TASK: usize = 1 << 15;

thread_local! {
    /// The dequantized panel, kept between calls (no page faults for a fresh buffer each time).
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = x @ Wᵀ` (`transpose`) or `x @ W` for the `r` rows of `x` (f32, row-major); `y` [r, N].
pub fn panel<S: Scale>(isa: Isa, x: &[f32], r: usize, q: &QMat<S>, transpose: bool, y: &mut [f32]) {
    let v = View::of(q);
    let (k, n) = if transpose { (v.cols, v.rows) } else { (v.rows, v.cols) };
    // Panel width: whole groups when the panel cuts across them (not transposed).
    let unit = if transpose { 16 } else { v.group_size };
    let nb = ((PANEL_ELEMS / k.max(1)) / unit * unit).max(unit).min(n);
    with_scratch(&PANEL, nb * k, |buf| {
        for n0 in (0..n).step_by(nb) {
            let w = nb.min(n - n0);
            dequantize_panel(isa, &v, transpose, n0, w, &mut buf[..w * k]);
            let (rhs_rs, rhs_cs) = if transpose { (1, k as isize) } else { (w as isize, 1) };
            let par = if r * w * k >= 1 << 18 {
                gemm::Parallelism::Rayon(rayon::current_num_threads())
            } else {
                gemm::Parallelism::None
            };
            // SAFETY: x is r×k, the panel k×w (strides above), y r×n with columns n0..n0+w.
            unsafe {
                gemm_one(
                    r,
                    w,
                    k,
                    MutPtr(y.as_mut_ptr().add(n0)),
                    n as isize,
                    false,
                    Mat { ptr: Ptr(x.as_ptr()), rs: k as isize, cs: 1 },
                    Mat { ptr: Ptr(buf.as_ptr()), rs: rhs_rs, cs: rhs_cs },
                    0.0f32,
                    1.0f32,
                    par,
                )
            };
        }
    });
}

/// Dequantizes output features `n0..n0 + w` into `out`: transposed, rows `n0..` of the matrix
/// (each `cols` long); else the column range of every row ([rows, w]).
fn dequantize_panel(isa: Isa, v: &View, transpose: bool, n0: usize, w: usize, out: &mut [f32]) {
    let gs = v.group_size;
    // (rows of the matrix, first group, group count) this panel covers.
    let (rows, row0, g0, ng) = if transpose { (w, n0, 0, v.groups()) } else { (v.rows, 0, n0 / gs, w / gs) };
    let len = ng * gs;
    let per_task = (DEQUANT_TASK / len).max(1);
    let op = MutPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (a, b) = (t * per_task, rows.min((t + 1) * per_task));
        lanes::run(isa, Dequant { v, rows: row0 + a..row0 + b, g0, ng, out: MutPtr(op.get().wrapping_add(a * len)) });
    };
    let tasks = rows.div_ceil(per_task);
    if tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Groups `g0..g0 + ng` of each row in `rows`, dequantized to consecutive runs of `out`.
struct Dequant<'a> {
    v: &'a View<'a>,
    rows: std::ops::Range<usize>,
    g0: usize,
    ng: usize,
    out: MutPtr<f32>,
}

impl LanesKernel for Dequant<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes>(self) {
        let v = self.v;
        let (gs, groups, bpr) = (v.group_size, v.groups(), v.bytes_per_row());
        let bpg = gs * v.bits / 8;
        let mut codes = [0u8; MAX_GROUP];
        let mut o = self.out.get();
        for row in self.rows {
            let rb = &v.bytes[row * bpr..(row + 1) * bpr];
            for g in self.g0..self.g0 + self.ng {
                let gi = row * groups + g;
                let (s, b) = (v.scales.get(gi), v.biases.map_or(0.0, |b| b.get(gi)));
                let src = &rb[g * bpg..(g + 1) * bpg];
                // SAFETY: `o` walks this task's rows × groups of `out`; reads stay inside the
                // group's bytes (`gs` codes, a multiple of N) or `codes`.
                unsafe {
                    let (s, b) = (V::splat(s), V::splat(b));
                    match v.kind {
                        Kind::Nibbles => {
                            for e in (0..gs).step_by(V::N) {
                                V::fma(V::nibbles_in_order(src.as_ptr().add(e / 2)), s, b).store(o.add(e));
                            }
                        }
                        Kind::Bytes => {
                            for e in (0..gs).step_by(V::N) {
                                V::fma(V::bytes(src.as_ptr().add(e)), s, b).store(o.add(e));
                            }
                        }
                        Kind::Codes(bits) => {
                            unpack_bytes(bits, src, &mut codes[..gs]);
                            for e in (0..gs).step_by(V::N) {
                                V::fma(V::bytes(codes.as_ptr().add(e)), s, b).store(o.add(e));
                            }
                        }
                        Kind::Floats => {
                            let vals = std::slice::from_raw_parts_mut(o, gs);
                            decode_floats(v.mode, src, vals);
                            for e in (0..gs).step_by(V::N) {
                                V::fma(V::load(o.add(e)), s, b).store(o.add(e));
                            }
                        }
                    }
                    o = o.add(gs);
                }
            }
        }
    }
}
