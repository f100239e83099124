//! Fused kernels: softmax, logsumexp, rms_norm, layer_norm, rope, scaled dot-product attention.
//!
//! Each works row by row over the last axis of a row-major input, in f32 for half precision
//! (f64 for f64), parallel over rows.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::AttentionMask;
use crate::shape::broadcast_strides;

use super::decode_attention;
use super::iter::{alloc_out, fold_slice, host_values, row_offsets, MutPtr, Ptr, PAR_CHUNK, PAR_THRESHOLD};
use super::math::exp_f32;
use super::matmul::{gemm_one, Mat};
use super::simd::{dispatch, inline_always, Isa};

/// Float compute type with the few functions the fused kernels need.
pub(super) trait Real: Acc {
    /// `e^x`: the vectorizable [`exp_f32`] for f32, libm for f64.
    fn exp(self, isa: Isa) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// From `f64`, rounding.
    fn of(v: f64) -> Self;
}
impl Real for f32 {
    #[inline(always)]
    fn exp(self, isa: Isa) -> f32 {
        exp_f32(self, isa)
    }
    #[inline(always)]
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn of(v: f64) -> f32 {
        v as f32
    }
}
impl Real for f64 {
    #[inline(always)]
    fn exp(self, _: Isa) -> f64 {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn of(v: f64) -> f64 {
        v
    }
}

/// The array as row-major data (a copy only if it is not already).
pub(super) fn row_major(x: &Array) -> Result<Data> {
    let d = x.data()?;
    if d.is_row_contiguous(x.shape()) {
        Ok(d)
    } else {
        super::copy::copy(x)
    }
}

/// A [B, H, S, D] attention operand whose (batch, head) blocks are each a row-major S×D run
/// (a KV cache's prefix view is one, with its heads `capacity × D` apart): its data, copied
/// only when a block is not such a run, and each block's offset from the data's first element.
fn head_blocks(x: &Array) -> Result<(Data, Vec<isize>)> {
    let sh = x.shape();
    let d = x.data()?;
    let runs = (sh[2] <= 1 || d.strides[2] == sh[3] as isize) && (sh[3] <= 1 || d.strides[3] == 1);
    let d = if runs { d } else { super::copy::copy(x)? };
    let offsets = (0..sh[0] * sh[1])
        .map(|bh| (bh / sh[1]) as isize * d.strides[0] + (bh % sh[1]) as isize * d.strides[1])
        .collect();
    Ok((d, offsets))
}

/// Attention's q [B, Hq, L, Dk], k [B, Hkv, S, Dk] and v [B, Hkv, S, Dv] as the kernels read
/// them: q row-major, so the query rows of one (batch, key/value head) — its grouped query
/// heads, consecutive — are one run; K and V by [`head_blocks`], read in place.
pub(super) struct AttentionOperands<T> {
    q: Data,
    k: (Data, Vec<isize>),
    v: (Data, Vec<isize>),
    /// Batch size.
    pub b: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads.
    pub hkv: usize,
    /// Queries.
    pub l: usize,
    /// Keys.
    pub s: usize,
    /// Query / key size.
    pub dk: usize,
    /// Value size.
    pub dv: usize,
    _element: std::marker::PhantomData<T>,
}

impl<T: Element> AttentionOperands<T> {
    /// The operands of `inputs` (q, k, v, ...), each of element type `T`.
    pub(super) fn new(inputs: &[Array]) -> Result<Self> {
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let [b, hq, l, dk] = [0, 1, 2, 3].map(|i| q.shape()[i]);
        Ok(AttentionOperands {
            q: row_major(q)?,
            k: head_blocks(k)?,
            v: head_blocks(v)?,
            b,
            hq,
            hkv: k.shape()[1],
            l,
            s: k.shape()[2],
            dk,
            dv: v.shape()[3],
            _element: std::marker::PhantomData,
        })
    }

    /// Query rows per (batch, key/value head): the grouped query heads times the queries.
    pub(super) fn rows(&self) -> usize {
        self.hq / self.hkv.max(1) * self.l
    }

    /// Query rows `r0..r1` of (batch, key/value head) `bk`, Dk values each.
    pub(super) fn queries(&self, bk: usize, r0: usize, r1: usize) -> &[T] {
        let first = (bk * self.rows() + r0) * self.dk;
        // SAFETY: row-major data of q's B·Hq·L·Dk elements, which hold these rows.
        unsafe { std::slice::from_raw_parts(self.q.ptr::<T>().add(first), (r1 - r0) * self.dk) }
    }

    /// Keys `j0..j1` of (batch, key/value head) `bk`, Dk values each.
    pub(super) fn keys(&self, bk: usize, j0: usize, j1: usize) -> &[T] {
        // SAFETY: block bk of K is a row-major S×Dk run at its offset.
        unsafe { Self::run(&self.k, bk, j0, j1, self.dk) }
    }

    /// Values `j0..j1` of (batch, key/value head) `bk`, Dv values each.
    pub(super) fn values(&self, bk: usize, j0: usize, j1: usize) -> &[T] {
        // SAFETY: block bk of V is a row-major S×Dv run at its offset.
        unsafe { Self::run(&self.v, bk, j0, j1, self.dv) }
    }

    /// Rows `j0..j1` of block `bk` of a [`head_blocks`] operand with rows of `d` values.
    ///
    /// # Safety
    /// The block must be a row-major run of at least `j1` rows.
    unsafe fn run((data, offsets): &(Data, Vec<isize>), bk: usize, j0: usize, j1: usize, d: usize) -> &[T] {
        std::slice::from_raw_parts(data.ptr::<T>().offset(offsets[bk]).add(j0 * d), (j1 - j0) * d)
    }
}

/// Runs `f(row_in, row_out, scratch, isa)` over the rows of the last axis, in parallel when
/// large. Rows go in batches of about [`PAR_CHUNK`] elements, each batch under [`dispatch`]
/// with one scratch vector that `f` may use as it likes. `f` should be an `#[inline(always)]`
/// closure (not a function item, whose call shim would not be inlined).
fn for_rows<T: Element, O: Element>(
    x: &Array,
    out_row: usize,
    out_shape: &[usize],
    f: impl Fn(&[T], &mut [O], &mut Vec<T::Acc>, Isa) + Sync + Send,
) -> Result<Data> {
    let d = row_major(x)?;
    let n = *x.shape().last().unwrap_or(&1);
    let rows = x.size().checked_div(n).unwrap_or(0);
    // SAFETY: row-major data of x.size() elements.
    let xs = unsafe { std::slice::from_raw_parts(d.ptr::<T>(), x.size()) };
    alloc_out::<O>(out_shape, |out| {
        if rows == 0 || out_row == 0 {
            return Ok(());
        }
        let batch = |(xb, ob): (&[T], &mut [O])| {
            dispatch(
                #[inline(always)]
                |isa| {
                    let mut scratch = Vec::new();
                    for (r, o) in xb.chunks(n).zip(ob.chunks_mut(out_row)) {
                        f(r, o, &mut scratch, isa);
                    }
                },
            )
        };
        if x.size() < PAR_THRESHOLD {
            batch((xs, out));
        } else {
            let per = (PAR_CHUNK / n).max(1);
            xs.par_chunks(per * n).zip(out.par_chunks_mut(per * out_row)).for_each(batch);
        }
        Ok(())
    })
}

/// The maximum of a row in the compute type (NaN if the row holds one).
#[inline(always)]
fn row_max<T: Element<Acc = A>, A: Real>(r: &[T]) -> A {
    fold_slice(
        r,
        A::MIN,
        Acc::max,
        #[inline(always)]
        |v: T| v.to_acc(),
    )
}

/// Softmax over the last axis.
pub fn softmax(x: &Array, shape: &[usize]) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        // Each row through the scratch vector, in the compute type.
        for_rows::<T, T>(x, n, shape, #[inline(always)] |r, o, tmp, isa| {
            let m = row_max(r);
            tmp.resize(r.len(), A::ZERO);
            for (t, v) in tmp.iter_mut().zip(r) {
                *t = Real::exp(Acc::sub(v.to_acc(), m), isa);
            }
            let inv = Acc::div(A::ONE, fold_slice(tmp, A::ZERO, Acc::add, #[inline(always)] |e: A| e));
            for (ov, &e) in o.iter_mut().zip(tmp.iter()) {
                *ov = T::from_acc(Acc::mul(e, inv));
            }
        })
    }, unreachable!())
}

/// log-sum-exp over the last axis (output keeps it as size 1).
pub fn logsumexp(x: &Array, shape: &[usize]) -> Result<Data> {
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        for_rows::<T, T>(x, 1, shape, #[inline(always)] |r, o, _, isa| {
            let m = row_max(r);
            let mf = Acc::as_f64(m);
            if !mf.is_finite() {
                let s: f64 = r.iter().map(|v| Acc::as_f64(v.to_acc()).exp()).sum();
                o[0] = T::from_acc(A::of(s.ln()));
                return;
            }
            let s = fold_slice(r, A::ZERO, Acc::add, #[inline(always)] |v: T| Real::exp(Acc::sub(v.to_acc(), m), isa));
            o[0] = T::from_acc(Acc::add(Real::ln(s), m));
        })
    }, unreachable!())
}

/// A weight or bias vector over the last axis, as the compute type.
fn vector<A: Real + Element>(a: Option<&Array>, n: usize) -> Result<Option<Vec<A>>> {
    match a {
        None => Ok(None),
        Some(w) => Ok(Some(host_values::<A>(w, &[n])?)),
    }
}

/// One row of RMS normalization in the compute type `A`: `o = r / sqrt(mean(r²) + eps) · w`,
/// each value rounded to `T`. The op's kernel and the quantized products that take the norm
/// in ([`rms_norm_f32`]) both compute it here, so they agree bit for bit.
#[inline(always)]
fn rms_norm_row<T: Element<Acc = A>, W: Element<Acc = A>, A: Real>(r: &[T], w: &[W], eps: A, o: &mut [T]) {
    let inv_n = A::of(1.0 / r.len().max(1) as f64);
    let ss = fold_slice(
        r,
        A::ZERO,
        Acc::add,
        #[inline(always)]
        |v: T| {
            let a = v.to_acc();
            Acc::mul(a, a)
        },
    );
    let scale = Acc::div(A::ONE, Real::sqrt(Acc::add(Acc::mul(ss, inv_n), eps)));
    for ((ov, v), &wv) in o.iter_mut().zip(r).zip(w) {
        *ov = T::from_acc(Acc::mul(Acc::mul(v.to_acc(), scale), wv.to_acc()));
    }
}

/// Runs `in_place` over a norm's weight of `n` values when it is a contiguous row of `T` (no
/// copy: a decode step's norms read theirs every token), else `converted` over it in the
/// compute type `A` (ones when there is none). Each value widens to `A` exactly either way.
fn with_norm_weight<T: Element<Acc = A>, A: Real + Element, R>(
    weight: Option<&Array>,
    n: usize,
    in_place: impl FnOnce(&[T]) -> R,
    converted: impl FnOnce(&[A]) -> R,
) -> Result<R> {
    if let Some(w) = weight.filter(|w| w.dtype() == T::DTYPE && w.size() == n) {
        let d = w.data()?;
        if d.is_row_contiguous(w.shape()) {
            // SAFETY: a contiguous row of n elements of T.
            return Ok(in_place(unsafe { std::slice::from_raw_parts(d.ptr::<T>(), n) }));
        }
    }
    // No weight multiplies by one, which is exact.
    Ok(converted(&vector::<A>(weight, n)?.unwrap_or_else(|| vec![A::ONE; n])))
}

/// RMS normalization over the last axis, times an optional weight.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32, shape: &[usize]) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let eps = A::of(eps as f64);
        with_norm_weight::<T, A, _>(
            weight,
            n,
            |w| for_rows::<T, T>(x, n, shape, #[inline(always)] |r, o, _, _| rms_norm_row(r, w, eps, o)),
            |w| for_rows::<T, T>(x, n, shape, #[inline(always)] |r, o, _, _| rms_norm_row(r, w, eps, o)),
        )?
    }, unreachable!())
}

/// [`rms_norm`] of the few rows of a float32, float16 or bfloat16 `x`, on the calling
/// thread, as float32 values (of `x`'s dtype: widened after rounding, so exactly the op's
/// output): what a decode step's product reads when it takes its input's norm in.
pub(super) fn rms_norm_f32(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Vec<f32>> {
    fn rows<T: Element<Acc = f32>>(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Vec<f32>> {
        let n = *x.shape().last().unwrap_or(&1);
        let d = row_major(x)?;
        // SAFETY: row-major data of x.size() elements.
        let xs = unsafe { std::slice::from_raw_parts(d.ptr::<T>(), x.size()) };
        with_norm_weight::<T, f32, _>(weight, n, |w| normed(xs, n, w, eps), |w| normed(xs, n, w, eps))
    }
    fn normed<T: Element<Acc = f32>, W: Element<Acc = f32>>(xs: &[T], n: usize, w: &[W], eps: f32) -> Vec<f32> {
        let mut out = vec![0f32; xs.len()];
        let mut row = vec![T::default(); n];
        dispatch(
            #[inline(always)]
            |_| {
                for (r, o) in xs.chunks(n.max(1)).zip(out.chunks_mut(n.max(1))) {
                    rms_norm_row(r, w, eps, &mut row);
                    for (o, v) in o.iter_mut().zip(&row) {
                        *o = v.to_acc();
                    }
                }
            },
        );
        out
    }
    match x.dtype() {
        Dtype::F32 => rows::<f32>(x, weight, eps),
        Dtype::F16 => rows::<f16>(x, weight, eps),
        Dtype::Bf16 => rows::<bf16>(x, weight, eps),
        dt => Err(crate::Error::invalid("rms_norm", format!("a product's joined norm over {dt}"))),
    }
}

/// Layer normalization over the last axis, with optional weight and bias.
pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32, shape: &[usize]) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        // No weight multiplies by one, which is exact.
        let w = vector::<A>(weight, n)?.unwrap_or_else(|| vec![A::ONE; n]);
        let b = vector::<A>(bias, n)?;
        let eps = A::of(eps as f64);
        let inv_n = A::of(1.0 / n.max(1) as f64);
        for_rows::<T, T>(x, n, shape, #[inline(always)] |r, o, _, _| {
            let mean = Acc::mul(fold_slice(r, A::ZERO, Acc::add, #[inline(always)] |v: T| v.to_acc()), inv_n);
            let ss = fold_slice(r, A::ZERO, Acc::add, #[inline(always)] |v: T| {
                let c = Acc::sub(v.to_acc(), mean);
                Acc::mul(c, c)
            });
            let scale = Acc::div(A::ONE, Real::sqrt(Acc::add(Acc::mul(ss, inv_n), eps)));
            let normed = |v: &T, wv: A| Acc::mul(Acc::mul(Acc::sub(v.to_acc(), mean), scale), wv);
            match &b {
                Some(b) => {
                    for (((ov, v), &wv), &bv) in o.iter_mut().zip(r).zip(&w).zip(b) {
                        *ov = T::from_acc(Acc::add(normed(v, wv), bv));
                    }
                }
                None => {
                    for ((ov, v), &wv) in o.iter_mut().zip(r).zip(&w) {
                        *ov = T::from_acc(normed(v, wv));
                    }
                }
            }
        })
    }, unreachable!())
}

/// The input gradient of RMS normalization (`centered` false) or layer normalization (true)
/// over the last axis, from x, the optional weight and the output cotangent `g`, in one pass
/// per row in the compute type. With `x̂ = (x − μ)·r` (μ = 0 for RMS norm), `r` the reciprocal
/// root of the mean square / variance plus `eps`, and `h = g·w`:
/// `dx = r·(h − mean(h) − x̂·mean(h·x̂))`, without the `mean(h)` term for RMS norm.
pub fn norm_vjp(
    x: &Array,
    weight: Option<&Array>,
    g: &Array,
    eps: f32,
    centered: bool,
    shape: &[usize],
) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let w = vector::<A>(weight, n)?;
        let (xd, gd) = (row_major(x)?, row_major(&crate::ops::astype(g, x.dtype())?)?);
        let size = x.size();
        // SAFETY: row-major data of `size` elements each.
        let xs = unsafe { std::slice::from_raw_parts(xd.ptr::<T>(), size) };
        let gs = unsafe { std::slice::from_raw_parts(gd.ptr::<T>(), size) };
        let eps = A::of(eps as f64);
        let inv_n = A::of(1.0 / n.max(1) as f64);
        alloc_out::<T>(shape, |out| {
            if size == 0 || n == 0 {
                return Ok(());
            }
            let row = |(i, o): (usize, &mut [T])| {
                let (xr, gr) = (&xs[i * n..(i + 1) * n], &gs[i * n..(i + 1) * n]);
                let h = |k: usize| match &w {
                    Some(w) => Acc::mul(gr[k].to_acc(), w[k]),
                    None => gr[k].to_acc(),
                };
                let mean = if centered {
                    Acc::mul(fold_slice(xr, A::ZERO, Acc::add, #[inline(always)] |v: T| v.to_acc()), inv_n)
                } else {
                    A::ZERO
                };
                let ss = fold_slice(xr, A::ZERO, Acc::add, #[inline(always)] |v: T| {
                    let c = Acc::sub(v.to_acc(), mean);
                    Acc::mul(c, c)
                });
                let r = Acc::div(A::ONE, Real::sqrt(Acc::add(Acc::mul(ss, inv_n), eps)));
                let (mut sum_h, mut sum_hx) = (A::ZERO, A::ZERO);
                for (k, v) in xr.iter().enumerate() {
                    let hk = h(k);
                    sum_h = Acc::add(sum_h, hk);
                    sum_hx = Acc::add(sum_hx, Acc::mul(hk, Acc::mul(Acc::sub(v.to_acc(), mean), r)));
                }
                let m1 = if centered { Acc::mul(sum_h, inv_n) } else { A::ZERO };
                let m2 = Acc::mul(sum_hx, inv_n);
                for (k, (ov, v)) in o.iter_mut().zip(xr).enumerate() {
                    let xhat = Acc::mul(Acc::sub(v.to_acc(), mean), r);
                    *ov = T::from_acc(Acc::mul(r, Acc::sub(Acc::sub(h(k), m1), Acc::mul(xhat, m2))));
                }
            };
            if size < PAR_THRESHOLD {
                out.chunks_mut(n).enumerate().for_each(row);
            } else {
                out.par_chunks_mut(n).enumerate().for_each(row);
            }
            Ok(())
        })
    }, unreachable!())
}

/// What a rope table of frequencies from `base` depends on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct AngleKey {
    offset: u64,
    positions: usize,
    base: u32,
    scale: u32,
    dims: usize,
}

/// A rope table: cos and sin, `[positions, dims / 2]`, in f64.
type AngleTable = std::rc::Rc<(Vec<f64>, Vec<f64>)>;

thread_local! {
    /// The latest table this thread made from `base`, with what it was made for: every layer
    /// of a forward pass (whose ops run on one thread) rotates the same positions, so they
    /// share it.
    static LAST_ANGLES: std::cell::RefCell<Option<(AngleKey, AngleTable)>> =
        const { std::cell::RefCell::new(None) };
}

/// The cos and sin tables `[l, inv_freq.len()]` of positions `offset ..` (times `scale`), in
/// f64. Each run of ANCHOR positions starts from sin_cos and steps by angle addition (rotating
/// by the per-position angle), which is exact to ~1e-14 over the run and costs a few
/// multiplies per entry instead of a sin_cos; runs fill in parallel.
fn angle_table(offset: f64, l: usize, scale: f32, inv_freq: &[f64]) -> (Vec<f64>, Vec<f64>) {
    const ANCHOR: usize = 64;
    let half = inv_freq.len();
    let mut cos = vec![0f64; l * half];
    let mut sin = vec![0f64; l * half];
    // (A decode step's one position needs no step.)
    let step: Vec<(f64, f64)> =
        if l > 1 { inv_freq.iter().map(|&f| (scale as f64 * f).sin_cos()).collect() } else { Vec::new() };
    let fill = |(run, (c, s)): (usize, (&mut [f64], &mut [f64]))| {
        let pos = (offset + (run * ANCHOR) as f64) * scale as f64;
        for ((c, s), &f) in c.iter_mut().zip(s.iter_mut()).zip(inv_freq) {
            (*s, *c) = (pos * f).sin_cos();
        }
        for p in 1..c.len() / half {
            let (prev, next) = ((p - 1) * half, p * half);
            for (i, &(ds, dc)) in step.iter().enumerate() {
                let (pc, ps) = (c[prev + i], s[prev + i]);
                c[next + i] = pc * dc - ps * ds;
                s[next + i] = ps * dc + pc * ds;
            }
        }
    };
    if half > 0 {
        let run = ANCHOR * half;
        if l * half < 4096 {
            cos.chunks_mut(run).zip(sin.chunks_mut(run)).enumerate().for_each(fill);
        } else {
            cos.par_chunks_mut(run).zip(sin.par_chunks_mut(run)).enumerate().for_each(fill);
        }
    }
    (cos, sin)
}

/// Rotary position embedding of x [..., L, D] over the first `dims` features; token l of
/// each sequence sits at position `offset + l`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &Array,
    offset: &Array,
    freqs: Option<&Array>,
    dims: usize,
    traditional: bool,
    base: f32,
    scale: f32,
    shape: &[usize],
) -> Result<Data> {
    let nd = shape.len();
    let (l, d) = (shape[nd - 2], shape[nd - 1]);
    let half = dims / 2;
    // The op checked that the offset holds one integer.
    let offset = host_values::<i64>(offset, offset.shape())?[0] as f64;
    // Every layer of a pass rotates the same positions: the table is made once (frequencies
    // given as an array are read and tabled each call).
    let key = freqs.is_none().then(|| AngleKey {
        offset: offset.to_bits(),
        positions: l,
        base: base.to_bits(),
        scale: scale.to_bits(),
        dims,
    });
    let cached =
        key.and_then(|k| LAST_ANGLES.with(|c| c.borrow().as_ref().filter(|(ck, _)| *ck == k).map(|(_, t)| t.clone())));
    let table = match cached {
        Some(t) => t,
        None => {
            // Inverse frequencies: base^(-2i/dims), or 1 / freqs[i].
            let inv_freq: Vec<f64> = match freqs {
                Some(f) => host_values::<f64>(f, &[half])?.into_iter().map(|p| 1.0 / p).collect(),
                None => (0..half).map(|i| (base as f64).powf(-(2.0 * i as f64) / dims as f64)).collect(),
            };
            let t = AngleTable::new(angle_table(offset, l, scale, &inv_freq));
            if let Some(k) = key {
                LAST_ANGLES.with(|c| *c.borrow_mut() = Some((k, t.clone())));
            }
            t
        }
    };
    let (cos, sin) = (&table.0, &table.1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let cos: Vec<A> = cos.iter().map(|&c| A::of(c)).collect();
        let sin: Vec<A> = sin.iter().map(|&s| A::of(s)).collect();
        let d_row = row_major(x)?;
        let total = x.size();
        // SAFETY: row-major data of total elements.
        let xs = unsafe { std::slice::from_raw_parts(d_row.ptr::<T>(), total) };
        alloc_out::<T>(shape, |out| {
            if total == 0 {
                return Ok(());
            }
            // Rotates row `ri` (position ri % l).
            let row = inline_always(#[inline(always)] |ri: usize, r: &[T], o: &mut [T]| {
                let p = ri % l;
                let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
                let rot = inline_always(#[inline(always)] |a: A, b: A, c: A, s: A| {
                    (T::from_acc(Acc::sub(Acc::mul(a, c), Acc::mul(b, s))), T::from_acc(Acc::add(Acc::mul(a, s), Acc::mul(b, c))))
                });
                if traditional {
                    for (((rp, op), &c), &s) in r.chunks_exact(2).zip(o.chunks_exact_mut(2)).zip(c).zip(s) {
                        (op[0], op[1]) = rot(rp[0].to_acc(), rp[1].to_acc(), c, s);
                    }
                } else {
                    let (o1, o2) = o[..2 * half].split_at_mut(half);
                    let (r1, r2) = r[..2 * half].split_at(half);
                    for ((((o1, o2), (a, b)), &c), &s) in o1.iter_mut().zip(o2).zip(r1.iter().zip(r2)).zip(c).zip(s) {
                        (*o1, *o2) = rot(a.to_acc(), b.to_acc(), c, s);
                    }
                }
                o[2 * half..].copy_from_slice(&r[2 * half..]);
            });
            let batch = |(bi, (xb, ob)): (usize, (&[T], &mut [T])), per: usize| {
                dispatch(#[inline(always)] |_| {
                    for (j, (r, o)) in xb.chunks(d).zip(ob.chunks_mut(d)).enumerate() {
                        row(bi * per + j, r, o);
                    }
                })
            };
            let per = (PAR_CHUNK / d.max(1)).max(1);
            if total < PAR_THRESHOLD {
                batch((0, (xs, out)), per);
            } else {
                xs.par_chunks(per * d).zip(out.par_chunks_mut(per * d)).enumerate().for_each(|b| batch(b, per));
            }
            Ok(())
        })
    }, unreachable!())
}

/// softmax(q kᵀ · scale + mask) v for q [B, Hq, L, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv].
/// Few query rows per key/value head (decode) take [`decode_attention`].
pub fn attention(inputs: &[Array], scale: f32, mask: AttentionMask, shape: &[usize]) -> Result<Data> {
    let decode = decode_attention::rows_per_kv_head(inputs) <= decode_attention::DECODE_ROWS;
    // Compute in f64 for f64 inputs, in f32 otherwise.
    match inputs[0].dtype() {
        Dtype::F64 if decode => decode_attention::decode_attention::<f64, f64>(inputs, scale as f64, mask, shape),
        Dtype::F32 if decode => decode_attention::decode_attention::<f32, f32>(inputs, scale, mask, shape),
        Dtype::F16 if decode => decode_attention::decode_attention::<f16, f32>(inputs, scale, mask, shape),
        Dtype::Bf16 if decode => decode_attention::decode_attention::<bf16, f32>(inputs, scale, mask, shape),
        Dtype::F64 => attention_in::<f64, f64>(inputs, scale as f64, mask, shape),
        Dtype::F32 => attention_in::<f32, f32>(inputs, scale, mask, shape),
        Dtype::F16 => attention_in::<f16, f32>(inputs, scale, mask, shape),
        Dtype::Bf16 => attention_in::<bf16, f32>(inputs, scale, mask, shape),
        dtype => unreachable!("attention on {dtype}"),
    }
}

/// Query rows per attention task: bounds the score matrix at `QUERY_BLOCK × S`.
pub(super) const QUERY_BLOCK: usize = 128;

/// `Σ a[i] · b[i]`, with `b` read in its own dtype; 16 independent lanes (vectorizes).
#[inline(always)]
pub(super) fn dot<T: Element<Acc = F>, F: Real>(a: &[F], b: &[T]) -> F {
    const L: usize = 16;
    let mut lanes = [F::ZERO; L];
    let (ac, bc) = (a.chunks_exact(L), b.chunks_exact(L));
    let mut acc = F::ZERO;
    for (&x, y) in ac.remainder().iter().zip(bc.remainder()) {
        acc = Acc::add(acc, Acc::mul(x, y.to_acc()));
    }
    for (x, y) in ac.zip(bc) {
        for k in 0..L {
            lanes[k] = Acc::add(lanes[k], Acc::mul(x[k], y[k].to_acc()));
        }
    }
    // A barrier between the vector loop and the horizontal sum (see fold_slice).
    std::hint::black_box(lanes).iter().fold(acc, |t, &v| Acc::add(t, v))
}

/// `src` in the compute type `F`: borrowed when `T` is `F`, else converted into `buf`.
#[inline(always)]
pub(super) fn as_compute<'a, T: Element<Acc = F>, F: Real>(src: &'a [T], buf: &'a mut Vec<F>) -> &'a [F] {
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<F>() {
        // SAFETY: T and F are the same type.
        return unsafe { std::slice::from_raw_parts(src.as_ptr() as *const F, src.len()) };
    }
    buf.resize(src.len(), F::ZERO);
    for (b, v) in buf.iter_mut().zip(src) {
        *b = v.to_acc();
    }
    buf
}

/// [`attention`] on inputs of element type `T`, computing in `F`.
fn attention_in<T: Element<Acc = F>, F: Real + Element<Acc = F>>(
    inputs: &[Array],
    scale: F,
    mask: AttentionMask,
    shape: &[usize],
) -> Result<Data> {
    let ops = AttentionOperands::<T>::new(inputs)?;
    let AttentionOperands { b, hq, hkv, l, s, dk, dv, .. } = ops;
    let (kblock, vblock) = (|bk: usize| ops.keys(bk, 0, s), |bk: usize| ops.values(bk, 0, s));
    // The query heads of one key/value head are consecutive, so for each (batch, kv head) its
    // queries form one (group · L) × D matrix, and its outputs one (group · L) × Dv matrix:
    // grouped queries share one pass over K and V. Tasks take QUERY_BLOCK rows of it.
    let rows = ops.rows();
    let masked = ScoreMask::new::<T>(inputs, mask, [b, hq, hkv, l, s])?;
    // Inlined where called, so that its loops are compiled with the dispatched instruction set.
    let softmax_rows = inline_always(
        #[inline(always)]
        |bk: usize, r0: usize, width: usize, scores: &mut [F], isa: Isa| {
            masked.softmax_rows(bk, r0, width, scores, isa)
        },
    );
    // One block of query rows `r0..r0 + o.len() / dv` of (batch, kv head) `bk`, with K and V
    // in the compute type.
    let block = inline_always(
        #[inline(always)]
        |bk: usize, kf: &[F], vf: &[F], r0: usize, o: &mut [T], isa: Isa| {
            let nr = o.len() / dv;
            // Keys past the last one these rows can see (causal) are never read.
            let s = masked.keys_visible(r0, nr);
            let (kf, vf) = (&kf[..s * dk], &vf[..s * dv]);
            let mut qbuf = Vec::new();
            let qh = as_compute(ops.queries(bk, r0, r0 + nr), &mut qbuf);
            let mut scores = vec![F::ZERO; nr * s];
            if nr * s * dk >= 1 << 14 {
                // SAFETY: row-major nr×dk, s×dk (read transposed) and nr×s buffers.
                unsafe {
                    gemm_one(
                        nr,
                        s,
                        dk,
                        MutPtr(scores.as_mut_ptr()),
                        s as isize,
                        false,
                        Mat { ptr: Ptr(qh.as_ptr()), rs: dk as isize, cs: 1 },
                        Mat { ptr: Ptr(kf.as_ptr()), rs: 1, cs: dk as isize },
                        F::ZERO,
                        scale,
                        gemm::Parallelism::None,
                    )
                };
            } else if dk > 0 {
                for (qrow, srow) in qh.chunks_exact(dk).zip(scores.chunks_exact_mut(s.max(1))) {
                    for (x, krow) in srow.iter_mut().zip(kf.chunks_exact(dk)) {
                        *x = Acc::mul(dot(qrow, krow), scale);
                    }
                }
            }
            softmax_rows(bk, r0, s, &mut scores, isa);
            let mut acc = vec![F::ZERO; nr * dv];
            if nr * s * dv >= 1 << 14 {
                // SAFETY: row-major nr×s, s×dv and nr×dv buffers.
                unsafe {
                    gemm_one(
                        nr,
                        dv,
                        s,
                        MutPtr(acc.as_mut_ptr()),
                        dv as isize,
                        false,
                        Mat { ptr: Ptr(scores.as_ptr()), rs: s as isize, cs: 1 },
                        Mat { ptr: Ptr(vf.as_ptr()), rs: dv as isize, cs: 1 },
                        F::ZERO,
                        F::ONE,
                        gemm::Parallelism::None,
                    )
                };
            } else {
                for (prow, orow) in scores.chunks_exact(s.max(1)).zip(acc.chunks_exact_mut(dv)) {
                    for (&p, vrow) in prow.iter().zip(vf.chunks_exact(dv)) {
                        if p != F::ZERO {
                            for (ov, &vv) in orow.iter_mut().zip(vrow) {
                                *ov = Acc::add(*ov, Acc::mul(p, vv));
                            }
                        }
                    }
                }
            }
            for (ov, &a) in o.iter_mut().zip(&acc) {
                *ov = T::from_acc(a);
            }
        },
    );
    alloc_out::<T>(shape, |out| {
        if out.is_empty() {
            return Ok(());
        }
        out.par_chunks_mut(rows * dv).enumerate().for_each(|(bk, ob)| {
            let (mut kbuf, mut vbuf) = (Vec::new(), Vec::new());
            let (kf, vf) = dispatch(
                #[inline(always)]
                |_| (as_compute(kblock(bk), &mut kbuf), as_compute(vblock(bk), &mut vbuf)),
            );
            ob.par_chunks_mut(QUERY_BLOCK * dv).enumerate().for_each(|(blk, o)| {
                dispatch(
                    #[inline(always)]
                    |isa| block(bk, kf, vf, blk * QUERY_BLOCK, o, isa),
                )
            });
        });
        Ok(())
    })
}

/// Attention's mask and masked softmax over rows of scores, shared by the forward and
/// backward kernels.
pub(super) struct ScoreMask<F> {
    mask: AttentionMask,
    /// The mask array as additive values (bool: 0 or the lowest value).
    values: Vec<F>,
    /// The mask array's strides broadcast to [B, Hq, L, S].
    strides: Vec<isize>,
    /// B, Hq, Hkv, L, S.
    dims: [usize; 5],
}

impl<F: Real + Element<Acc = F>> ScoreMask<F> {
    /// The mask of an attention over `inputs` (q, k, v, and the mask array when `mask` is
    /// [`AttentionMask::Array`]) of sizes `dims` = [B, Hq, Hkv, L, S].
    /// A mask array is read as `T` (the queries' dtype) or bool.
    pub(super) fn new<T: Element<Acc = F>>(inputs: &[Array], mask: AttentionMask, dims: [usize; 5]) -> Result<Self> {
        let [b, hq, _, l, s] = dims;
        let (values, strides) = match mask {
            AttentionMask::Array => {
                let m = &inputs[3];
                let vals: Vec<F> = if m.dtype() == Dtype::Bool {
                    host_values::<bool>(m, m.shape())?
                        .into_iter()
                        .map(|keep| if keep { F::ZERO } else { F::MIN })
                        .collect()
                } else {
                    host_values::<T>(m, m.shape())?.into_iter().map(|x| x.to_acc()).collect()
                };
                let st = broadcast_strides(m.shape(), &crate::array::row_major_strides(m.shape()), &[b, hq, l, s]);
                (vals, st)
            }
            _ => (Vec::new(), Vec::new()),
        };
        Ok(ScoreMask { mask, values, strides, dims })
    }

    /// How many leading keys query rows `r0..r0 + nr` (as in [`Self::softmax_rows`]) need:
    /// all S, except under a causal mask, where no row sees past its own position.
    pub(super) fn keys_visible(&self, r0: usize, nr: usize) -> usize {
        let [_, _, _, l, s] = self.dims;
        if self.mask != AttentionMask::Causal || nr == 0 || l == 0 {
            return s;
        }
        // Within one query head the last row sees the most; rows across a head boundary
        // include a head's last query, which sees all S.
        let (first, last) = (r0 % l, (r0 + nr - 1) % l);
        if (r0 + nr - 1) / l != r0 / l || last < first {
            return s;
        }
        // Query `last` sees keys 0..=last + S − L (MLX's offset; L ≤ S, since
        // scaled_dot_product_attention splits off the queries that see no key).
        (last + 1 + s - l).min(s)
    }

    /// Applies the mask to `row`, the scores of keys `j0..j0 + row.len()` of query row `r` of
    /// (batch, kv head) `bk` (row `r` is head `r / L`, query `r % L` of the group): hidden
    /// keys get the lowest value, an additive mask is added.
    #[inline(always)]
    pub(super) fn apply(&self, bk: usize, r: usize, j0: usize, row: &mut [F]) {
        let [b, hq, hkv, l, keys] = self.dims;
        let (g, i) = (r / l, r % l);
        match self.mask {
            AttentionMask::Causal => {
                // Query i sees keys 0..=i + S − L.
                let visible = (i + keys + 1).saturating_sub(l + j0);
                for x in row.iter_mut().skip(visible) {
                    *x = F::MIN;
                }
            }
            AttentionMask::Array => {
                let h = bk % hkv * (hq / hkv.max(1)) + g;
                let mst = &self.strides;
                let [base] = row_offsets::<1>(&[b, hq, l], &[mst[..3].to_vec()], (bk / hkv * hq + h) * l + i);
                for (j, x) in row.iter_mut().enumerate() {
                    *x = Acc::add(*x, self.values[(base + (j0 + j) as isize * mst[3]) as usize]);
                }
            }
            AttentionMask::None => {}
        }
    }

    /// Masked softmax, in place, of the scores (rows of the first `width` ≥
    /// [`Self::keys_visible`] keys) of query rows `r0..` of (batch, kv head) `bk`, whose query
    /// heads are consecutive (row `r` is head `r / L`, query `r % L` of the group).
    #[inline(always)]
    pub(super) fn softmax_rows(&self, bk: usize, r0: usize, width: usize, scores: &mut [F], isa: Isa) {
        for (ri, row) in scores.chunks_exact_mut(width.max(1)).enumerate() {
            self.apply(bk, r0 + ri, 0, row);
            // The largest non-NaN score.
            let m = fold_slice(
                row,
                F::MIN,
                #[inline(always)]
                |a: F, b: F| if b > a { b } else { a },
                |x: F| x,
            );
            if m == F::MIN {
                row.iter_mut().for_each(|x| *x = F::ZERO);
                continue;
            }
            for x in row.iter_mut() {
                *x = Real::exp(Acc::sub(*x, m), isa);
            }
            let inv = Acc::div(
                F::ONE,
                fold_slice(
                    row,
                    F::ZERO,
                    Acc::add,
                    #[inline(always)]
                    |x: F| x,
                ),
            );
            row.iter_mut().for_each(|x| *x = Acc::mul(*x, inv));
        }
    }
}
