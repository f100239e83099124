//! Fused kernels: softmax, logsumexp, rms_norm, layer_norm, rope, scaled dot-product attention.
//!
//! Each works row by row over the last axis of a row-major input, in f32 for half precision
//! (f64 for f64), parallel over rows.

use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::AttentionMask;
use crate::shape::broadcast_strides;

use super::iter::{alloc_out, row_offsets, PAR_THRESHOLD};

/// Float compute type with the few functions the fused kernels need.
trait Real: Acc + Into<f64> {
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn of(v: f64) -> Self;
}
impl Real for f32 {
    fn exp(self) -> f32 {
        f32::exp(self)
    }
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    fn of(v: f64) -> f32 {
        v as f32
    }
}
impl Real for f64 {
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    fn of(v: f64) -> f64 {
        v
    }
}

/// The array as row-major data (a copy only if it is not already).
fn row_major(x: &Array) -> Result<Data> {
    let d = x.data()?;
    if d.is_row_contiguous(x.shape()) {
        Ok(d)
    } else {
        super::copy::copy(x)
    }
}

/// Runs `f(row_in, row_out)` over the rows of the last axis, in parallel when large.
fn for_rows<T: Element, O: Element>(
    x: &Array,
    out_row: usize,
    out_shape: &[usize],
    f: impl Fn(&[T], &mut [O]) + Sync + Send,
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
        if x.size() < PAR_THRESHOLD {
            xs.chunks(n).zip(out.chunks_mut(out_row)).for_each(|(r, o)| f(r, o));
        } else {
            xs.par_chunks(n).zip(out.par_chunks_mut(out_row)).for_each(|(r, o)| f(r, o));
        }
        Ok(())
    })
}

fn softmax_row<T: Element<Acc = A>, A: Real>(r: &[T], o: &mut [T]) {
    let mut m = A::MIN;
    for v in r {
        m = Acc::max(m, v.to_acc());
    }
    let mut s = A::ZERO;
    let mut tmp: Vec<A> = Vec::with_capacity(r.len());
    for v in r {
        let e = Real::exp(Acc::sub(v.to_acc(), m));
        s = Acc::add(s, e);
        tmp.push(e);
    }
    let inv = Acc::div(A::ONE, s);
    for (ov, e) in o.iter_mut().zip(tmp) {
        *ov = T::from_acc(Acc::mul(e, inv));
    }
}

/// Softmax over the last axis.
pub fn softmax(x: &Array, shape: &[usize]) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => for_rows::<T, T>(x, n, shape, softmax_row), unreachable!())
}

/// log-sum-exp over the last axis (output keeps it as size 1).
pub fn logsumexp(x: &Array, shape: &[usize]) -> Result<Data> {
    fn row<T: Element<Acc = A>, A: Real>(r: &[T], o: &mut [T]) {
        let mut m = A::MIN;
        for v in r {
            m = Acc::max(m, v.to_acc());
        }
        let mf: f64 = m.into();
        if !mf.is_finite() {
            let s: f64 = r.iter().map(|v| Into::<f64>::into(v.to_acc()).exp()).sum();
            o[0] = T::from_acc(A::of(s.ln()));
            return;
        }
        let mut s = A::ZERO;
        for v in r {
            s = Acc::add(s, Real::exp(Acc::sub(v.to_acc(), m)));
        }
        o[0] = T::from_acc(Acc::add(Real::ln(s), m));
    }
    crate::dispatch_float!(x.dtype(), T => for_rows::<T, T>(x, 1, shape, row), unreachable!())
}

/// A weight or bias vector over the last axis, as the compute type.
fn vector<A: Real>(a: Option<&Array>, n: usize) -> Result<Option<Vec<A>>> {
    match a {
        None => Ok(None),
        Some(w) => {
            let w = crate::ops::broadcast_to(w, &[n])?;
            Ok(Some(w.to_vec::<f64>()?.into_iter().map(A::of).collect()))
        }
    }
}

/// RMS normalization over the last axis, times an optional weight.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32, shape: &[usize]) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let w = vector::<A>(weight, n)?;
        let eps = A::of(eps as f64);
        let inv_n = A::of(1.0 / n.max(1) as f64);
        for_rows::<T, T>(x, n, shape, |r, o| {
            let mut ss = A::ZERO;
            for v in r {
                let a = v.to_acc();
                ss = Acc::add(ss, Acc::mul(a, a));
            }
            let scale = Acc::div(A::ONE, Real::sqrt(Acc::add(Acc::mul(ss, inv_n), eps)));
            match &w {
                Some(w) => {
                    for ((ov, v), &wv) in o.iter_mut().zip(r).zip(w) {
                        *ov = T::from_acc(Acc::mul(Acc::mul(v.to_acc(), scale), wv));
                    }
                }
                None => {
                    for (ov, v) in o.iter_mut().zip(r) {
                        *ov = T::from_acc(Acc::mul(v.to_acc(), scale));
                    }
                }
            }
        })
    }, unreachable!())
}

/// Layer normalization over the last axis, with optional weight and bias.
pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32, shape: &[usize]) -> Result<Data> {
    let n = *shape.last().unwrap_or(&1);
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let w = vector::<A>(weight, n)?;
        let b = vector::<A>(bias, n)?;
        let eps = A::of(eps as f64);
        let inv_n = A::of(1.0 / n.max(1) as f64);
        for_rows::<T, T>(x, n, shape, |r, o| {
            let mut s = A::ZERO;
            for v in r {
                s = Acc::add(s, v.to_acc());
            }
            let mean = Acc::mul(s, inv_n);
            let mut ss = A::ZERO;
            for v in r {
                let c = Acc::sub(v.to_acc(), mean);
                ss = Acc::add(ss, Acc::mul(c, c));
            }
            let scale = Acc::div(A::ONE, Real::sqrt(Acc::add(Acc::mul(ss, inv_n), eps)));
            for (i, (ov, v)) in o.iter_mut().zip(r).enumerate() {
                let mut y = Acc::mul(Acc::sub(v.to_acc(), mean), scale);
                if let Some(w) = &w {
                    y = Acc::mul(y, w[i]);
                }
                if let Some(b) = &b {
                    y = Acc::add(y, b[i]);
                }
                *ov = T::from_acc(y);
            }
        })
    }, unreachable!())
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
    let offset = offset.item::<i64>()? as f64;
    // Inverse frequencies: base^(-2i/dims), or 1 / freqs[i].
    let inv_freq: Vec<f64> = match freqs {
        Some(f) => f.to_vec::<f64>()?.into_iter().map(|p| 1.0 / p).collect(),
        None => (0..half).map(|i| (base as f64).powf(-(2.0 * i as f64) / dims as f64)).collect(),
    };
    // cos/sin table for the L positions (shared by every sequence and head).
    let mut cos = vec![0f64; l * half];
    let mut sin = vec![0f64; l * half];
    for p in 0..l {
        let pos = (offset + p as f64) * scale as f64;
        for i in 0..half {
            let t = pos * inv_freq[i];
            cos[p * half + i] = t.cos();
            sin[p * half + i] = t.sin();
        }
    }
    crate::dispatch_float!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let cos: Vec<A> = cos.into_iter().map(A::of).collect();
        let sin: Vec<A> = sin.into_iter().map(A::of).collect();
        let d_row = row_major(x)?;
        let total = x.size();
        // SAFETY: row-major data of total elements.
        let xs = unsafe { std::slice::from_raw_parts(d_row.ptr::<T>(), total) };
        alloc_out::<T>(shape, |out| {
            if total == 0 {
                return Ok(());
            }
            let row = |(ri, (r, o)): (usize, (&[T], &mut [T]))| {
                let p = ri % l;
                let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
                for i in 0..half {
                    let (i1, i2) = if traditional { (2 * i, 2 * i + 1) } else { (i, i + half) };
                    let (a, b) = (r[i1].to_acc(), r[i2].to_acc());
                    o[i1] = T::from_acc(Acc::sub(Acc::mul(a, c[i]), Acc::mul(b, s[i])));
                    o[i2] = T::from_acc(Acc::add(Acc::mul(a, s[i]), Acc::mul(b, c[i])));
                }
                o[2 * half..].copy_from_slice(&r[2 * half..]);
            };
            if total < PAR_THRESHOLD {
                xs.chunks(d).zip(out.chunks_mut(d)).enumerate().for_each(row);
            } else {
                xs.par_chunks(d).zip(out.par_chunks_mut(d)).enumerate().for_each(row);
            }
            Ok(())
        })
    }, unreachable!())
}

/// softmax(q kᵀ · scale + mask) v for q [B, Hq, L, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv].
pub fn attention(inputs: &[Array], scale: f32, mask: AttentionMask, shape: &[usize]) -> Result<Data> {
    // Compute in f64 for f64 inputs, in f32 otherwise.
    if inputs[0].dtype() == Dtype::F64 {
        attention_in::<f64>(inputs, scale as f64, mask, shape)
    } else {
        attention_in::<f32>(inputs, scale, mask, shape)
    }
}

fn attention_in<F>(inputs: &[Array], scale: F, mask: AttentionMask, shape: &[usize]) -> Result<Data>
where
    F: Element + num_traits::Float + std::ops::AddAssign + std::ops::MulAssign + Send + Sync,
{
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let (b, hq, l, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s) = (k.shape()[1], k.shape()[2]);
    let dv = v.shape()[3];
    let group = hq / hkv.max(1);
    let (qf, kf, vf) = (q.to_vec::<F>()?, k.to_vec::<F>()?, v.to_vec::<F>()?);
    // Mask as additive values, broadcast to [B, Hq, L, S] by strides.
    let (maskv, mst): (Vec<F>, Vec<isize>) = match mask {
        AttentionMask::Array => {
            let m = &inputs[3];
            let vals: Vec<F> = if m.dtype() == Dtype::Bool {
                m.to_vec::<bool>()?.into_iter().map(|keep| if keep { F::zero() } else { F::neg_infinity() }).collect()
            } else {
                m.to_vec::<F>()?
            };
            let st = broadcast_strides(m.shape(), &crate::array::row_major_strides(m.shape()), &[b, hq, l, s]);
            (vals, st)
        }
        _ => (Vec::new(), Vec::new()),
    };
    let mut out = vec![F::zero(); b * hq * l * dv];
    out.par_chunks_mut(l * dv).enumerate().for_each(|(bh, o)| {
        let (bi, h) = (bh / hq, bh % hq);
        let kh = h / group.max(1);
        let qh = &qf[bh * l * dk..(bh + 1) * l * dk];
        let kb = (bi * hkv + kh) * s;
        let kh_ = &kf[kb * dk..(kb + s) * dk];
        let vh = &vf[kb * dv..(kb + s) * dv];
        let mut scores = vec![F::zero(); l * s];
        if l * s * dk >= 1 << 14 {
            // SAFETY: row-major l×dk, s×dk (read transposed) and l×s buffers.
            unsafe {
                gemm::gemm(
                    l,
                    s,
                    dk,
                    scores.as_mut_ptr(),
                    1,
                    s as isize,
                    false,
                    qh.as_ptr(),
                    1,
                    dk as isize,
                    kh_.as_ptr(),
                    dk as isize,
                    1,
                    F::zero(),
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        } else {
            for i in 0..l {
                for j in 0..s {
                    let mut acc = F::zero();
                    for t in 0..dk {
                        acc += qh[i * dk + t] * kh_[j * dk + t];
                    }
                    scores[i * s + j] = acc * scale;
                }
            }
        }
        for i in 0..l {
            let row = &mut scores[i * s..(i + 1) * s];
            match mask {
                AttentionMask::Causal => {
                    let limit = i + s.saturating_sub(l);
                    for (j, x) in row.iter_mut().enumerate() {
                        if j > limit {
                            *x = F::neg_infinity();
                        }
                    }
                }
                AttentionMask::Array => {
                    let [base] = row_offsets::<1>(&[b, hq, l], &[mst[..3].to_vec()], (bi * hq + h) * l + i);
                    for (j, x) in row.iter_mut().enumerate() {
                        *x += maskv[(base + j as isize * mst[3]) as usize];
                    }
                }
                AttentionMask::None => {}
            }
            let m = row.iter().copied().fold(F::neg_infinity(), F::max);
            if m == F::neg_infinity() {
                row.iter_mut().for_each(|x| *x = F::zero());
                continue;
            }
            let mut sum = F::zero();
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            let inv = F::one() / sum;
            row.iter_mut().for_each(|x| *x *= inv);
        }
        if l * s * dv >= 1 << 14 {
            // SAFETY: row-major l×s, s×dv and l×dv buffers.
            unsafe {
                gemm::gemm(
                    l,
                    dv,
                    s,
                    o.as_mut_ptr(),
                    1,
                    dv as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    s as isize,
                    vh.as_ptr(),
                    1,
                    dv as isize,
                    F::zero(),
                    F::one(),
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        } else {
            for i in 0..l {
                let orow = &mut o[i * dv..(i + 1) * dv];
                for j in 0..s {
                    let p = scores[i * s + j];
                    if p != F::zero() {
                        for (ov, &vv) in orow.iter_mut().zip(&vh[j * dv..(j + 1) * dv]) {
                            *ov += p * vv;
                        }
                    }
                }
            }
        }
    });
    let dtype = q.dtype();
    crate::dispatch_float!(dtype, T => alloc_out::<T>(shape, |o| {
        for (ov, &x) in o.iter_mut().zip(&out) {
            *ov = T::from_f64(Element::to_f64(x));
        }
        Ok(())
    }), unreachable!())
}
