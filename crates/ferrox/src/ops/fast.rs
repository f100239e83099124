//! Fused ops (MLX's `mx.fast`): each runs as one kernel, not a chain of small ops.

use crate::array::Array;
use crate::dtype::{promote_types, Dtype};
use crate::error::{Error, Result};
use crate::primitives::{AttentionMask, Op};
use crate::shape::broadcast_shapes;

use super::astype;

fn check_float(a: &Array, op: &'static str) -> Result<()> {
    if a.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::dtype(op, "needs a floating-point input", a.dtype()))
    }
}

fn check_vector(w: &Array, n: usize, op: &'static str, what: &str) -> Result<()> {
    if w.ndim() != 1 || w.shape()[0] != n {
        return Err(Error::shape(
            op,
            format!("{what} of shape {:?} must be [{n}] (the last axis of the input)", w.shape()),
        ));
    }
    Ok(())
}

/// `x / sqrt(mean(x², axis=-1) + eps) * weight`.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    check_float(x, "rms_norm")?;
    let n = *x.shape().last().ok_or_else(|| Error::shape("rms_norm", "needs at least 1 dimension"))?;
    let mut dtype = x.dtype();
    if let Some(w) = weight {
        check_vector(w, n, "rms_norm", "weight")?;
        dtype = promote_types(dtype, w.dtype());
    }
    let mut inputs = vec![astype(x, dtype)?];
    if let Some(w) = weight {
        inputs.push(w.clone());
    }
    Ok(Array::from_op(x.shape().to_vec(), dtype, Op::RmsNorm { eps, weight: weight.is_some() }, inputs))
}

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last axis.
pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    check_float(x, "layer_norm")?;
    let n = *x.shape().last().ok_or_else(|| Error::shape("layer_norm", "needs at least 1 dimension"))?;
    let mut dtype = x.dtype();
    for (a, what) in [(weight, "weight"), (bias, "bias")] {
        if let Some(a) = a {
            check_vector(a, n, "layer_norm", what)?;
            dtype = promote_types(dtype, a.dtype());
        }
    }
    let mut inputs = vec![astype(x, dtype)?];
    inputs.extend(weight.cloned());
    inputs.extend(bias.cloned());
    Ok(Array::from_op(
        x.shape().to_vec(),
        dtype,
        Op::LayerNorm { eps, weight: weight.is_some(), bias: bias.is_some() },
        inputs,
    ))
}

/// The input gradient of `rms_norm` (`centered` false) or `layer_norm` (true) for the output
/// cotangent `g`, as one fused op (the backward pass of both uses it).
pub(crate) fn norm_vjp(x: &Array, weight: Option<&Array>, g: &Array, eps: f32, centered: bool) -> Array {
    let mut inputs = vec![x.clone()];
    inputs.extend(weight.cloned());
    inputs.push(g.clone());
    Array::from_op(x.shape().to_vec(), x.dtype(), Op::NormVjp { eps, weight: weight.is_some(), centered }, inputs)
}

/// Per-head score matrices (L · S) from which a GPU takes attention's gradients as products
/// over materialized probabilities rather than from the fused kernel (a warp a row, no tensor
/// cores: ~0.4 TFLOP/s), and the most score elements (B · Hq · L · S) it materializes so.
const COMPOSED_VJP_FROM: usize = 4096;
const COMPOSED_VJP_MAX: usize = 1 << 27;

/// The gradients (dq, dk, dv) of an [`Op::Attention`] over `inputs` (q, k, v and the mask
/// array if `mask` is one) for the output cotangent `g`, as one flat array the three are
/// views of: one fused op, or on a GPU, where its scores fit, MLX's way — cuBLAS products
/// over the probabilities, recomputed in f32 for f16 / bf16 (the fused op's precision).
pub(crate) fn attention_vjp(inputs: &[Array], g: &Array, scale: f32, mask: AttentionMask) -> Result<[Array; 3]> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let sizes = [q.size(), k.size(), v.size()];
    let mut ins = inputs.to_vec();
    ins.push(astype(g, q.dtype())?);
    let scores = q.shape()[2] * k.shape()[2];
    let composed = matches!(crate::device::current_stream().device, crate::Device::Gpu(_))
        && q.dtype() != Dtype::F64
        && scores >= COMPOSED_VJP_FROM
        && q.shape()[0] * q.shape()[1] * scores <= COMPOSED_VJP_MAX;
    let flat = if composed {
        let wide = |a: &Array| if a.dtype().is_float() { astype(a, Dtype::F32) } else { Ok(a.clone()) };
        let ins = ins.iter().map(wide).collect::<Result<Vec<_>>>()?;
        astype(&crate::transforms::vjp_rules::attention_vjp_composed(&ins, scale, mask)?, q.dtype())?
    } else {
        Array::from_op(vec![sizes.iter().sum()], q.dtype(), Op::AttentionVjp { scale, mask }, ins)
    };
    let mut start = 0;
    let mut grads = Vec::with_capacity(3);
    for (x, n) in [q, k, v].into_iter().zip(sizes) {
        let part = crate::ops::slice(&flat, &[start as isize], &[(start + n) as isize], &[1])?;
        grads.push(crate::ops::reshape_usize(&part, x.shape())?);
        start += n;
    }
    Ok(grads.try_into().expect("three gradients"))
}

/// Rotary position embedding over the first `dims` features of the last axis of `x`
/// ([..., L, D]; token l is at position `offset + l`). `traditional` rotates consecutive pairs,
/// otherwise the two halves. Frequencies are `base^(-2i/dims)`, or `1 / freqs[i]` when custom
/// `freqs` (shape [dims/2]) are given; positions are multiplied by `scale`.
pub fn rope(
    x: &Array,
    dims: usize,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: impl Into<RopeOffset>,
    freqs: Option<&Array>,
) -> Result<Array> {
    check_float(x, "rope")?;
    if x.ndim() < 2 {
        return Err(Error::shape("rope", format!("needs at least 2 dimensions [..., L, D], got {:?}", x.shape())));
    }
    let d = x.shape()[x.ndim() - 1];
    if dims > d || !dims.is_multiple_of(2) {
        return Err(Error::invalid("rope", format!("dims={dims} must be even and at most the feature size {d}")));
    }
    if base.is_some() == freqs.is_some() {
        return Err(Error::invalid("rope", "give exactly one of base and freqs"));
    }
    let offset = match offset.into() {
        RopeOffset::Int(i) => Array::scalar(i as i32),
        RopeOffset::Array(a) => {
            if a.size() != 1 || !a.dtype().is_integer() {
                return Err(Error::invalid(
                    "rope",
                    format!("offset must be an integer scalar, got shape {:?} of {}", a.shape(), a.dtype()),
                ));
            }
            a
        }
    };
    let mut inputs = vec![x.clone(), offset];
    if let Some(f) = freqs {
        if f.shape() != [dims / 2] {
            return Err(Error::shape("rope", format!("freqs of shape {:?} must be [{}]", f.shape(), dims / 2)));
        }
        inputs.push(f.clone());
    }
    Ok(Array::from_op(
        x.shape().to_vec(),
        x.dtype(),
        Op::Rope { dims, traditional, base: base.unwrap_or(0.0), scale, freqs: freqs.is_some() },
        inputs,
    ))
}

/// The position offset of [`rope`]: a number, or an integer scalar array (e.g. a cache length
/// still being computed).
#[derive(Clone, Debug)]
pub enum RopeOffset {
    /// A known offset.
    Int(i64),
    /// An integer scalar array.
    Array(Array),
}

impl From<i64> for RopeOffset {
    fn from(v: i64) -> Self {
        RopeOffset::Int(v)
    }
}
impl From<usize> for RopeOffset {
    fn from(v: usize) -> Self {
        RopeOffset::Int(v as i64)
    }
}
impl From<i32> for RopeOffset {
    fn from(v: i32) -> Self {
        RopeOffset::Int(v as i64)
    }
}
impl From<&Array> for RopeOffset {
    fn from(v: &Array) -> Self {
        RopeOffset::Array(v.clone())
    }
}

/// The mask argument of [`scaled_dot_product_attention`].
#[derive(Clone, Debug)]
pub enum SdpaMask {
    /// No mask.
    None,
    /// Causal: query i sees keys up to i + (S − L), aligned to the end of the keys. With more
    /// queries than keys (L > S) the first L − S queries see none; as in MLX, each of their
    /// outputs is the mean of all values (and passes no gradient to q or k).
    Causal,
    /// An array broadcastable to [B, Hq, L, S]: additive if float, keep/drop if bool.
    Array(Array),
}

/// `softmax(q kᵀ · scale + mask) v` with q [B, Hq, L, D], k [B, Hkv, S, D], v [B, Hkv, S, Dv];
/// Hq a multiple of Hkv (grouped-query attention). Output [B, Hq, L, Dv].
pub fn scaled_dot_product_attention(q: &Array, k: &Array, v: &Array, scale: f32, mask: SdpaMask) -> Result<Array> {
    let op = "scaled_dot_product_attention";
    for a in [q, k, v] {
        check_float(a, op)?;
        if a.ndim() != 4 {
            return Err(Error::shape(op, format!("q, k and v must be 4-D [B, H, L, D]; got {:?}", a.shape())));
        }
    }
    let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
    if ks[0] != qs[0] || vs[0] != qs[0] || ks[1] != vs[1] || ks[2] != vs[2] || ks[3] != qs[3] {
        return Err(Error::shape(op, format!("shapes q {qs:?}, k {ks:?}, v {vs:?} do not fit together")));
    }
    if ks[1] == 0 || qs[1] % ks[1] != 0 {
        return Err(Error::shape(op, format!("query heads {} must be a multiple of key/value heads {}", qs[1], ks[1])));
    }
    if matches!(mask, SdpaMask::Causal) && qs[2] > ks[2] {
        return causal_more_queries(q, k, v, scale);
    }
    let dtype = promote_types(promote_types(q.dtype(), k.dtype()), v.dtype());
    let shape = vec![qs[0], qs[1], qs[2], vs[3]];
    let mut inputs = vec![astype(q, dtype)?, astype(k, dtype)?, astype(v, dtype)?];
    let kind = match mask {
        SdpaMask::None => AttentionMask::None,
        SdpaMask::Causal => AttentionMask::Causal,
        SdpaMask::Array(m) => {
            let target = [qs[0], qs[1], qs[2], ks[2]];
            if broadcast_shapes(&[m.shape(), &target], op)? != target {
                return Err(Error::shape(
                    op,
                    format!("mask of shape {:?} does not broadcast to {target:?}", m.shape()),
                ));
            }
            inputs.push(if m.dtype() == Dtype::Bool { m } else { astype(&m, dtype)? });
            AttentionMask::Array
        }
    };
    Ok(Array::from_op(shape, dtype, Op::Attention { scale, mask: kind }, inputs))
}

/// Causal attention with more queries than keys (L > S), as MLX computes it: query i sees
/// keys j ≤ i + S − L, so the first L − S queries see none, and MLX's masked softmax (every
/// score the lowest finite value) weighs all keys alike — their outputs are the mean of the
/// values, which depends on neither q nor k; the other L' = S queries are causal attention.
/// Split here, so that no backend's kernel meets a query that sees no key.
fn causal_more_queries(q: &Array, k: &Array, v: &Array, scale: f32) -> Result<Array> {
    let (l, s) = (q.shape()[2], k.shape()[2]);
    let (b, hq, hkv, dv) = (q.shape()[0], q.shape()[1], k.shape()[1], v.shape()[3]);
    let seen = super::slice_axis(q, 2, (l - s) as isize, l as isize)?;
    let seen = scaled_dot_product_attention(&seen, k, v, scale, SdpaMask::Causal)?;
    // v's mean over the keys, for every query head of its group and every blind query.
    let mean = astype(&super::mean(v, Some(&[2]), true)?, seen.dtype())?;
    let mean = super::reshape_usize(&mean, &[b, hkv, 1, 1, dv])?;
    let mean = super::broadcast_to(&mean, &[b, hkv, hq / hkv, l - s, dv])?;
    let blind = super::reshape_usize(&mean, &[b, hq, l - s, dv])?;
    super::concatenate(&[blind, seen], 2)
}
