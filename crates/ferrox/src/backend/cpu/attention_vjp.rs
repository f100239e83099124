//! The backward pass of scaled dot-product attention as one kernel.
//!
//! With S = q kᵀ·scale + mask, P = softmax(S) and out = P v, the cotangent g of out gives
//! dv = Pᵀ g, dP = g vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS k·scale and
//! dk = dSᵀ q·scale. Per (batch, key/value head), blocks of query rows (all the heads of its
//! query group) recompute their probabilities, write their dq, and add into dk and dv, which
//! stay in the compute type until the head is done: P and dS never exist beyond one block.

use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::AttentionMask;

use super::fast::{as_compute, row_major, Real, ScoreMask, QUERY_BLOCK};
use super::iter::{alloc_out, MutPtr, Ptr};
use super::matmul::{gemm_one, Mat};
use super::simd::dispatch;

/// `dst (m×n) = alpha · a (m×k) · b (k×n) (+ dst if accumulate)`, row-major buffers read with
/// the given (row, column) strides, on the calling thread.
#[allow(clippy::too_many_arguments)]
fn gemm<F: Element>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [F],
    accumulate: bool,
    a: &[F],
    (a_rs, a_cs): (usize, usize),
    b: &[F],
    (b_rs, b_cs): (usize, usize),
    alpha: F,
    one: F,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the strides describe m×k, k×n and m×n matrices inside the given buffers.
    unsafe {
        gemm_one(
            m,
            n,
            k,
            MutPtr(dst.as_mut_ptr()),
            n as isize,
            accumulate,
            Mat { ptr: Ptr(a.as_ptr()), rs: a_rs as isize, cs: a_cs as isize },
            Mat { ptr: Ptr(b.as_ptr()), rs: b_rs as isize, cs: b_cs as isize },
            one,
            alpha,
            gemm::Parallelism::None,
        )
    }
}

/// The gradients of attention over `inputs` (q, k, v, the mask array if `mask` is one, and
/// last the cotangent g of its output), flattened one after the other — dq, dk, dv, each
/// row-major in its input's shape — into an output of `shape` (their total size).
pub fn attention_vjp(inputs: &[Array], scale: f32, mask: AttentionMask, shape: &[usize]) -> Result<Data> {
    match inputs[0].dtype() {
        Dtype::F64 => run::<f64, f64>(inputs, scale as f64, mask, shape),
        Dtype::F32 => run::<f32, f32>(inputs, scale, mask, shape),
        Dtype::F16 => run::<half::f16, f32>(inputs, scale, mask, shape),
        Dtype::Bf16 => run::<half::bf16, f32>(inputs, scale, mask, shape),
        dtype => unreachable!("attention_vjp on {dtype}"),
    }
}

fn run<T: Element<Acc = F>, F: Real + Element<Acc = F>>(
    inputs: &[Array],
    scale: F,
    mask: AttentionMask,
    shape: &[usize],
) -> Result<Data> {
    let (q, k, v, g) = (&inputs[0], &inputs[1], &inputs[2], &inputs[inputs.len() - 1]);
    let (b, hq, l, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    let rows = (hq / hkv.max(1)) * l;
    let masked = ScoreMask::new::<T>(inputs, mask, [b, hq, hkv, l, s])?;
    let arrays = [q, k, v, g];
    let datas = [row_major(q)?, row_major(k)?, row_major(v)?, row_major(g)?];
    // SAFETY: row-major data of each array's size.
    let [qs, ks, vs, gs]: [&[T]; 4] =
        std::array::from_fn(|i| unsafe { std::slice::from_raw_parts(datas[i].ptr::<T>(), arrays[i].size()) });
    let (nq, nk) = (q.size(), k.size());
    alloc_out::<T>(shape, |out| {
        let out_ptr = MutPtr(out.as_mut_ptr());
        (0..b * hkv).into_par_iter().for_each(|bk| {
            dispatch(
                #[inline(always)]
                |isa| {
                    let (mut kbuf, mut vbuf) = (Vec::new(), Vec::new());
                    let kf = as_compute(&ks[bk * s * dk..(bk + 1) * s * dk], &mut kbuf);
                    let vf = as_compute(&vs[bk * s * dv..(bk + 1) * s * dv], &mut vbuf);
                    let mut dk_acc = vec![F::ZERO; s * dk];
                    let mut dv_acc = vec![F::ZERO; s * dv];
                    let (mut qbuf, mut gbuf) = (Vec::new(), Vec::new());
                    for r0 in (0..rows).step_by(QUERY_BLOCK) {
                        let nr = QUERY_BLOCK.min(rows - r0);
                        let first = bk * rows + r0;
                        let qf = as_compute(&qs[first * dk..(first + nr) * dk], &mut qbuf);
                        let gf = as_compute(&gs[first * dv..(first + nr) * dv], &mut gbuf);
                        // P = softmax(q kᵀ·scale + mask).
                        let mut p = vec![F::ZERO; nr * s];
                        gemm((nr, s, dk), &mut p, false, qf, (dk, 1), kf, (1, dk), scale, F::ONE);
                        masked.softmax_rows(bk, r0, s, &mut p, isa);
                        // dv += Pᵀ g.
                        gemm((s, dv, nr), &mut dv_acc, true, &p, (1, s), gf, (dv, 1), F::ONE, F::ONE);
                        // dS = P ⊙ (g vᵀ − rowsum(g vᵀ ⊙ P)), in place of g vᵀ.
                        let mut ds = vec![F::ZERO; nr * s];
                        gemm((nr, s, dv), &mut ds, false, gf, (dv, 1), vf, (1, dv), F::ONE, F::ONE);
                        for (drow, prow) in ds.chunks_exact_mut(s.max(1)).zip(p.chunks_exact(s.max(1))) {
                            let c = drow.iter().zip(prow).fold(F::ZERO, |t, (&d, &pp)| Acc::add(t, Acc::mul(d, pp)));
                            for (d, &pp) in drow.iter_mut().zip(prow) {
                                *d = Acc::mul(pp, Acc::sub(*d, c));
                            }
                        }
                        // dq = dS k·scale, straight into the output.
                        let mut dq = vec![F::ZERO; nr * dk];
                        gemm((nr, dk, s), &mut dq, false, &ds, (s, 1), kf, (dk, 1), scale, F::ONE);
                        // SAFETY: this block's dq rows are written by this task only.
                        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(first * dk), nr * dk) };
                        dst.iter_mut().zip(&dq).for_each(|(o, &x)| *o = T::from_acc(x));
                        // dk += dSᵀ q·scale.
                        gemm((s, dk, nr), &mut dk_acc, true, &ds, (1, s), qf, (dk, 1), scale, F::ONE);
                    }
                    // SAFETY: this (batch, kv head)'s dk and dv are written by this task only.
                    let (dkd, dvd) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(out_ptr.get().add(nq + bk * s * dk), s * dk),
                            std::slice::from_raw_parts_mut(out_ptr.get().add(nq + nk + bk * s * dv), s * dv),
                        )
                    };
                    dkd.iter_mut().zip(&dk_acc).for_each(|(o, &x)| *o = T::from_acc(x));
                    dvd.iter_mut().zip(&dv_acc).for_each(|(o, &x)| *o = T::from_acc(x));
                },
            )
        });
        Ok(())
    })
}
