//! Attention of few query rows against many keys (decode): the keys of each (batch, key/value
//! head) are split into chunks, so both threads stream K and V even when a model has fewer
//! key/value heads than twice the threads (SmolLM2-135M has 3). A task takes every query row
//! of one key/value head (its grouped query heads read K and V once, from the cache) over one
//! chunk of keys and leaves, per row, the chunk's largest score, its sum of exponentials and
//! the unnormalized weighted sum of values; a second pass joins the chunks of a row
//! (rescaling by the largest scores), as flash-decoding does.
//!
//! The inner loops are [`attention_kernels`]' where the CPU runs them (bf16 on AVX512-BF16 or
//! AVX2, f32 and f16 on AVX-512); otherwise, and for f64, this module's portable ones, which
//! dot four keys at a time in the compute type.

use std::any::TypeId;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::AttentionMask;

use super::fast::{as_compute, dot, AttentionOperands, Real, ScoreMask};
use super::iter::{alloc_out, fold_slice};
use super::simd::{dispatch, Isa};
use super::{attention_kernels, bf16_gemm};

/// Up to this many query rows per key/value head, attention runs here.
pub(super) const DECODE_ROWS: usize = 8;

/// Fewest keys a chunk takes (below it, splitting costs more than it spreads).
const MIN_CHUNK: usize = 64;

/// Below this many multiply-adds (query rows × keys × (Dk + Dv), over every head) the tasks
/// run one after another on the calling thread: a few microseconds of work, less than waking
/// the other thread costs (SmolLM2-135M's heads: up to ~170 keys; docs/PERF.md session 33).
const SERIAL_WORK: usize = 3 << 16;

/// Tasks a thread takes, about: each task has a fixed cost (its score rows, their softmax
/// passes), so few large ones beat many small ones while every thread still gets some.
const TASKS_PER_THREAD: usize = 2;

/// Query rows per (batch, key/value head) of `inputs` (q, k, ...), before reading their data:
/// the grouped query heads times the queries.
pub(super) fn rows_per_kv_head(inputs: &[Array]) -> usize {
    let (q, k) = (inputs[0].shape(), inputs[1].shape());
    q[1] / k[1].max(1) * q[2]
}

/// softmax(q kᵀ · scale + mask) v for q [B, Hq, L, Dk], k [B, Hkv, S, Dk], v [B, Hkv, S, Dv]
/// with at most [`DECODE_ROWS`] query rows per key/value head, computing in `F`.
pub(super) fn decode_attention<T: Element<Acc = F>, F: Real + Element<Acc = F>>(
    inputs: &[Array],
    scale: F,
    mask: AttentionMask,
    shape: &[usize],
) -> Result<Data> {
    let ops = AttentionOperands::<T>::new(inputs)?;
    let AttentionOperands { b, hq, hkv, l, s, dk, dv, .. } = ops;
    let rows = ops.rows();
    let heads = b * hkv;
    let masked = ScoreMask::<F>::new::<T>(inputs, mask, [b, hq, hkv, l, s])?;
    let kernels = Kernels::for_dtype(T::DTYPE);
    let serial = heads * rows * s * (dk + dv) < SERIAL_WORK;
    // Chunks per head: about TASKS_PER_THREAD tasks a thread, and a multiple of the threads in all
    // where that takes at most threads - 1 more chunks, so that equal tasks end together; none
    // under MIN_CHUNK keys (one when the work is too small to share).
    let threads = rayon::current_num_threads().max(1);
    let want = if serial {
        1
    } else {
        let few = (TASKS_PER_THREAD * threads).div_ceil(heads.max(1));
        (few..few + threads).find(|c| (heads * c).is_multiple_of(threads)).unwrap_or(few)
    };
    let chunk = s.div_ceil(want).max(MIN_CHUNK).min(s.max(1));
    let chunks = s.div_ceil(chunk).max(1);
    // A task's result per query row: the weighted sum, then the largest score and the sum.
    let part = dv + 2;
    alloc_out::<T>(shape, |out| {
        if out.is_empty() || heads == 0 {
            return Ok(());
        }
        let mut parts = vec![F::ZERO; heads * chunks * rows * part];
        let task = |(t, res): (usize, &mut [F])| {
            let (bk, c) = (t / chunks, t % chunks);
            let (j0, j1) = (c * chunk, s.min((c + 1) * chunk));
            let n = j1 - j0;
            let (kt, vt) = (ops.keys(bk, j0, j1), ops.values(bk, j0, j1));
            let qh = ops.queries(bk, 0, rows);
            dispatch(
                #[inline(always)]
                |isa| {
                    // Every row's scores, then their probabilities (each row's largest score and
                    // sum of exponentials kept), then every row's weighted sum of the values.
                    let mut p = vec![F::ZERO; rows * n];
                    let mut qbuf = Vec::new();
                    let qf = if kernels == Kernels::Bf16 { &[][..] } else { as_compute(qh, &mut qbuf) };
                    if !simd_scores(kernels, qh, qf, rows, kt, vt, dk, f32_of(scale), &mut p) {
                        for (qr, pr) in qf.chunks_exact(dk.max(1)).zip(p.chunks_exact_mut(n.max(1))) {
                            scores(qr, kt, dk, scale, pr);
                        }
                    }
                    for (r, res) in res.chunks_exact_mut(part).enumerate() {
                        let pr = &mut p[r * n..(r + 1) * n];
                        masked.apply(bk, r, j0, pr);
                        // A row whose keys are all hidden gets zero probabilities, so zero sums.
                        res[dv] = exponentiate(pr, isa);
                        res[dv + 1] = fold_slice(pr, F::ZERO, Acc::add, |x: F| x);
                    }
                    if n == 0 {
                        res.chunks_exact_mut(part).for_each(|r| r[..dv].iter_mut().for_each(|a| *a = F::ZERO));
                    } else if !simd_weighted_sum(kernels, &p, rows, vt, dv, res, part) {
                        for (pr, res) in p.chunks_exact(n).zip(res.chunks_exact_mut(part)) {
                            weighted_sum(pr, vt, &mut res[..dv]);
                        }
                    }
                },
            )
        };
        let tasks = heads * chunks;
        if tasks == 1 || serial {
            parts.chunks_mut(rows * part).enumerate().for_each(task);
        } else {
            parts.par_chunks_mut(rows * part).enumerate().for_each(task);
        }
        // Join the chunks of each row: Σ e^(m_c − M) · acc_c / Σ e^(m_c − M) · sum_c.
        let join = |(i, o): (usize, &mut [T])| {
            let (bk, r) = (i / rows, i % rows);
            let part_of = |c: usize| &parts[((bk * chunks + c) * rows + r) * part..][..part];
            let m = (0..chunks).map(|c| part_of(c)[dv]).fold(F::MIN, |a, x| if x > a { x } else { a });
            if m == F::MIN {
                o.iter_mut().for_each(|x| *x = T::from_acc(F::ZERO));
                return;
            }
            let weights: Vec<F> = (0..chunks)
                .map(|c| {
                    dispatch(
                        #[inline(always)]
                        |isa| Real::exp(Acc::sub(part_of(c)[dv], m), isa),
                    )
                })
                .collect();
            let total = (0..chunks).fold(F::ZERO, |t, c| Acc::add(t, Acc::mul(weights[c], part_of(c)[dv + 1])));
            let inv = Acc::div(F::ONE, total);
            // 16 columns at a time, each summed over the chunks in order (in vectors).
            dispatch(
                #[inline(always)]
                |_| {
                    for (b, o) in o.chunks_mut(16).enumerate() {
                        let mut sums = [F::ZERO; 16];
                        for (c, &w) in weights.iter().enumerate() {
                            for (s, &x) in sums.iter_mut().zip(&part_of(c)[16 * b..]) {
                                *s = Acc::add(*s, Acc::mul(w, x));
                            }
                        }
                        for (x, s) in o.iter_mut().zip(sums) {
                            *x = T::from_acc(Acc::mul(s, inv));
                        }
                    }
                },
            )
        };
        if dv > 0 {
            out.chunks_mut(dv).enumerate().for_each(join);
        }
        Ok(())
    })
}

/// `x ← e^(x − max x)` in place; returns the largest (non-NaN) score, or `F::MIN` (all
/// hidden: the scores are left alone).
#[inline(always)]
fn exponentiate<F: Real + Element<Acc = F>>(p: &mut [F], isa: Isa) -> F {
    let m = fold_slice(
        p,
        F::MIN,
        #[inline(always)]
        |a: F, b: F| if b > a { b } else { a },
        |x: F| x,
    );
    if m != F::MIN {
        for x in p.iter_mut() {
            *x = Real::exp(Acc::sub(*x, m), isa);
        }
    } else {
        p.iter_mut().for_each(|x| *x = F::ZERO);
    }
    m
}

/// `out[j] = scale · q · k_j` over the rows of `k` (`dk` values each, in their own type).
/// Four keys go together, each with [`LANES`] independent sums, so a key's loads and
/// multiply-adds overlap those of the other three.
#[inline(always)]
fn scores<T: Element<Acc = F>, F: Real + Element<Acc = F>>(q: &[F], k: &[T], dk: usize, scale: F, out: &mut [F]) {
    if dk == 0 {
        out.iter_mut().for_each(|x| *x = F::ZERO);
        return;
    }
    let mut keys = k.chunks_exact(4 * dk);
    let mut o = out.chunks_exact_mut(4);
    for (k4, o4) in (&mut keys).zip(&mut o) {
        let mut lanes = [[F::ZERO; LANES]; 4];
        let mut tail = [F::ZERO; 4];
        let full = dk - dk % LANES;
        for (c, qv) in q[..full].chunks_exact(LANES).enumerate() {
            // Fixed-size steps and loops of constant length, so they unroll into vector code
            // with no bounds checks.
            let qv: &[F; LANES] = qv.try_into().unwrap();
            let kv: [&[T; LANES]; 4] = std::array::from_fn(|kr| k4[kr * dk + c * LANES..][..LANES].try_into().unwrap());
            for e in 0..LANES {
                for kr in 0..4 {
                    lanes[kr][e] = Acc::add(lanes[kr][e], Acc::mul(qv[e], kv[kr][e].to_acc()));
                }
            }
        }
        for (kr, t) in tail.iter_mut().enumerate() {
            for e in full..dk {
                *t = Acc::add(*t, Acc::mul(q[e], k4[kr * dk + e].to_acc()));
            }
        }
        for ((x, lane), t) in o4.iter_mut().zip(&lanes).zip(tail) {
            *x = Acc::mul(Acc::add(sum_lanes(lane), t), scale);
        }
    }
    for (x, row) in o.into_remainder().iter_mut().zip(keys.remainder().chunks_exact(dk)) {
        *x = Acc::mul(dot(q, row), scale);
    }
}

/// Independent partial sums of a dot product.
const LANES: usize = 16;

/// The sum of the lanes, pairwise (lane i with lane i + width, halving the width).
#[inline(always)]
fn sum_lanes<F: Real>(lanes: &[F; LANES]) -> F {
    let mut l = *lanes;
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            l[i] = Acc::add(l[i], l[i + width]);
        }
        width /= 2;
    }
    l[0]
}

/// `out = Σ_j p[j] · v_j` over the rows of `v` (`out.len()` values each), two rows a step.
#[inline(always)]
fn weighted_sum<T: Element<Acc = F>, F: Real + Element<Acc = F>>(p: &[F], v: &[T], out: &mut [F]) {
    let dv = out.len();
    out.iter_mut().for_each(|x| *x = F::ZERO);
    let mut pairs = v.chunks_exact(2 * dv);
    let mut ps = p.chunks_exact(2);
    for (v2, p2) in (&mut pairs).zip(&mut ps) {
        let (v0, v1) = v2.split_at(dv);
        for ((o, a), b) in out.iter_mut().zip(v0).zip(v1) {
            *o = Acc::add(*o, Acc::add(Acc::mul(p2[0], a.to_acc()), Acc::mul(p2[1], b.to_acc())));
        }
    }
    if let (Some(&pj), true) = (ps.remainder().first(), pairs.remainder().len() == dv) {
        for (o, a) in out.iter_mut().zip(pairs.remainder()) {
            *o = Acc::add(*o, Acc::mul(pj, a.to_acc()));
        }
    }
}

/// Which inner loops run: `attention_kernels`' for bf16 (AVX512-BF16, or AVX2 without
/// AVX-512) or the wide ones for f32, f16 and bf16 (AVX-512: a bf16 key or value is widened as
/// it loads), else the portable ones of this module.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernels {
    Bf16,
    Wide,
    Portable,
}

impl Kernels {
    fn for_dtype(dtype: Dtype) -> Kernels {
        match dtype {
            Dtype::Bf16 if bf16_gemm::cpu_supported() => Kernels::Bf16,
            Dtype::F32 | Dtype::F16 | Dtype::Bf16 if attention_kernels::wide_applies() => Kernels::Wide,
            Dtype::Bf16 if attention_kernels::applies() => Kernels::Bf16,
            _ => Kernels::Portable,
        }
    }
}

/// The scores of `rows` query rows (`qt` in the keys' type, `qf` in the compute type) against
/// the keys `k`, into rows of `out`, through the SIMD kernels, which ask for the values `v` from
/// memory as they go; false, leaving `out` alone, when `kernels` is portable.
#[allow(clippy::too_many_arguments)]
fn simd_scores<T: 'static, F: 'static>(
    kernels: Kernels,
    qt: &[T],
    qf: &[F],
    rows: usize,
    k: &[T],
    v: &[T],
    dk: usize,
    scale: f32,
    out: &mut [F],
) -> bool {
    let out = same_mut::<F, f32>(out);
    match (kernels, out) {
        (Kernels::Bf16, Some(out)) => {
            attention_kernels::scores(bf16_bits(qt), rows, bf16_bits(k), dk, scale, out, bf16_bits(v))
        }
        (Kernels::Wide, Some(out)) => {
            let q = same::<F, f32>(qf).expect("the compute type of f32 and f16 is f32");
            if let (Some(k), Some(v)) = (same::<T, f32>(k), same::<T, f32>(v)) {
                attention_kernels::scores_wide(q, rows, k, dk, scale, out, v)
            } else if let (Some(k), Some(v)) = (same::<T, f16>(k), same::<T, f16>(v)) {
                attention_kernels::scores_wide(q, rows, k, dk, scale, out, v)
            } else {
                attention_kernels::scores_wide(q, rows, bf16_bits(k), dk, scale, out, bf16_bits(v))
            }
        }
        _ => return false,
    }
    true
}

/// `out[r·stride..][..dv] = Σ_j p[r·n + j] · v_j` for the `rows` rows of `p` through the SIMD
/// kernels; false, leaving `out` alone, when `kernels` is portable.
fn simd_weighted_sum<T: 'static, F: 'static>(
    kernels: Kernels,
    p: &[F],
    rows: usize,
    v: &[T],
    dv: usize,
    out: &mut [F],
    stride: usize,
) -> bool {
    let (p, out) = match (same::<F, f32>(p), same_mut::<F, f32>(out)) {
        (Some(p), Some(out)) if kernels != Kernels::Portable => (p, out),
        _ => return false,
    };
    if kernels == Kernels::Bf16 {
        attention_kernels::weighted_sum(p, rows, bf16_bits(v), dv, out, stride);
    } else if let Some(v) = same::<T, f32>(v) {
        attention_kernels::weighted_sum_wide(p, rows, v, dv, out, stride);
    } else if let Some(v) = same::<T, f16>(v) {
        attention_kernels::weighted_sum_wide(p, rows, v, dv, out, stride);
    } else {
        attention_kernels::weighted_sum_wide(p, rows, bf16_bits(v), dv, out, stride);
    }
    true
}

/// `x` as a slice of `U` when `T` is `U`.
fn same<T: 'static, U: 'static>(x: &[T]) -> Option<&[U]> {
    // SAFETY: T and U are the same type.
    (TypeId::of::<T>() == TypeId::of::<U>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr() as *const U, x.len()) })
}

/// `x` as a mutable slice of `U` when `T` is `U`.
fn same_mut<T: 'static, U: 'static>(x: &mut [T]) -> Option<&mut [U]> {
    // SAFETY: T and U are the same type.
    (TypeId::of::<T>() == TypeId::of::<U>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut U, x.len()) })
}

/// bf16 values as their bits (panics for another type).
fn bf16_bits<T: 'static>(x: &[T]) -> &[u16] {
    let x = same::<T, bf16>(x).expect("bf16 values");
    // SAFETY: a bf16 is its 16 bits.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u16, x.len()) }
}

/// A scale of the compute type as f32 (it is f32 wherever the SIMD kernels run).
fn f32_of<F: Element>(x: F) -> f32 {
    x.to_f64() as f32
}
