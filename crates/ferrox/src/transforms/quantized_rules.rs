//! The vjp, jvp and vmap rules of the quantized ops ([`Op::Quantized`]).
//!
//! Products are linear in x, and in the affine scales and biases (`w = scale·q + bias` per
//! group), so those get exact gradients; the packed integers and the uint8 scales of the
//! floating-point modes get none. Quantization itself is a rounding: it has no gradient rule.

use super::vjp_rules::{scatter_pairs, unbroadcast};
use super::vmap::Batched;
use super::vmap_rules::{example_shape, fold_batch, front, front_as, with_batch};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::{self as fx, QuantMode};
use crate::primitives::{Op, QuantOp, QuantParams};

fn no_rule(what: &'static str) -> Error {
    Error::invalid(what, "quantize rounds its input and has no derivative; apply stop_gradient to its input")
}

/// The parts of a quantized node's inputs: x (absent for dequantize), packed, scales,
/// biases, and the gather indices.
struct Parts<'a> {
    x: Option<&'a Array>,
    w: &'a Array,
    s: &'a Array,
    b: Option<&'a Array>,
    idx: Option<(&'a Array, &'a Array)>,
}

fn parts(op: QuantOp, p: QuantParams, inputs: &[Array]) -> Parts<'_> {
    let off = usize::from(op != QuantOp::Dequantize);
    let b = (p.mode == QuantMode::Affine).then(|| &inputs[off + 2]);
    let idx =
        matches!(op, QuantOp::GatherMatmul { .. }).then(|| (&inputs[inputs.len() - 2], &inputs[inputs.len() - 1]));
    Parts { x: (off == 1).then(|| &inputs[0]), w: &inputs[off], s: &inputs[off + 1], b, idx }
}

/// The same product with other operands (x, scales, biases); the transpose may flip.
fn product(
    op: QuantOp,
    p: QuantParams,
    x: &Array,
    q: &Parts,
    s: &Array,
    b: Option<&Array>,
    flip: bool,
) -> Result<Array> {
    let QuantParams { group_size: gs, bits, mode } = p;
    match op {
        QuantOp::Matmul { transpose } => fx::quantized_matmul(x, q.w, s, b, transpose != flip, gs, bits, mode),
        QuantOp::GatherMatmul { transpose, .. } => {
            let (l, r) = q.idx.expect("gather has indices");
            fx::gather_qmm(x, q.w, s, b, Some(l), Some(r), transpose != flip, gs, bits, mode, false)
        }
        _ => unreachable!("only products"),
    }
}

/// The integer codes of the packed matrix as floats of `dtype`, split into groups:
/// [..., rows, groups, group_size].
fn codes(p: QuantParams, q: &Parts, dtype: Dtype) -> Result<Array> {
    let ones = fx::ones(q.s.shape(), dtype)?;
    let zeros = fx::zeros(q.s.shape(), dtype)?;
    let c = fx::dequantize(q.w, &ones, Some(&zeros), p.group_size, p.bits, QuantMode::Affine, Some(dtype))?;
    fx::unflatten(&c, -1, &[-1, p.group_size as isize])
}

/// Gradients of affine scales and biases from the gradient of the dequantized matrix
/// `dw` [..., rows, cols].
fn scale_bias_grads(p: QuantParams, q: &Parts, dw: &Array) -> Result<(Array, Array)> {
    let dsb = fx::unflatten(dw, -1, &[-1, p.group_size as isize])?;
    let gb = fx::sum(&dsb, Some(&[-1]), false)?;
    let gs = fx::sum(&fx::multiply(&dsb, &codes(p, q, dw.dtype())?)?, Some(&[-1]), false)?;
    Ok((astype_like(&gs, q.s)?, astype_like(&gb, q.b.expect("affine"))?))
}

fn astype_like(a: &Array, like: &Array) -> Result<Array> {
    fx::astype(a, like.dtype())
}

/// `gᵀ x` (stored transposed) or `xᵀ g`: the gradient of the dequantized matrix from rows of
/// x [..., M, K] and of the cotangent [..., M, N].
fn weight_grad(x: &Array, g: &Array, transpose: bool) -> Result<Array> {
    if transpose {
        fx::matmul(&fx::swapaxes(g, -1, -2)?, x)
    } else {
        fx::matmul(&fx::swapaxes(x, -1, -2)?, g)
    }
}

/// Cotangents of a quantized node's inputs.
pub(crate) fn vjp(op: QuantOp, p: QuantParams, inputs: &[Array], g: &Array) -> Result<Vec<Option<Array>>> {
    if let QuantOp::Quantize(_) = op {
        return Err(no_rule("quantize"));
    }
    let q = parts(op, p, inputs);
    let affine = p.mode == QuantMode::Affine;
    let mut grads: Vec<Option<Array>> = vec![None; inputs.len()];
    let (si, bi) = (inputs.iter().position(|a| a.same(q.s)).unwrap(), inputs.len());
    let bi = if affine { si + 1 } else { bi };
    match op {
        QuantOp::Quantize(_) => unreachable!("handled above"),
        QuantOp::Dequantize => {
            if affine {
                let gg = fx::unflatten(g, -1, &[-1, p.group_size as isize])?;
                let gb = fx::sum(&gg, Some(&[-1]), false)?;
                let gs = fx::sum(&fx::multiply(&gg, &codes(p, &q, g.dtype())?)?, Some(&[-1]), false)?;
                grads[si] = Some(astype_like(&gs, q.s)?);
                grads[bi] = Some(astype_like(&gb, q.b.unwrap())?);
            }
        }
        QuantOp::Matmul { transpose } => {
            let x = q.x.unwrap();
            let gx = product(op, p, g, &q, q.s, q.b, true)?;
            grads[0] = Some(unbroadcast(&gx, x.shape())?);
            if affine {
                let dw = if q.w.ndim() == 2 {
                    let k = x.shape()[x.ndim() - 1];
                    let n = g.shape()[g.ndim() - 1];
                    let x2 = fx::reshape_usize(x, &[x.size() / k.max(1), k])?;
                    let g2 = fx::reshape_usize(g, &[g.size() / n.max(1), n])?;
                    weight_grad(&x2, &g2, transpose)?
                } else {
                    let mut full = q.w.shape()[..q.w.ndim() - 2].to_vec();
                    let (rows, cols) = (q.w.shape()[q.w.ndim() - 2], q.s.shape()[q.s.ndim() - 1] * p.group_size);
                    full.extend([rows, cols]);
                    unbroadcast(&weight_grad(x, g, transpose)?, &full)?
                };
                let (gs, gb) = scale_bias_grads(p, &q, &dw)?;
                grads[si] = Some(gs);
                grads[bi] = Some(gb);
            }
        }
        QuantOp::GatherMatmul { transpose, .. } => {
            let x = q.x.unwrap();
            let (lhs, rhs) = q.idx.unwrap();
            let (m, k) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
            let n = g.shape()[g.ndim() - 1];
            let pairs = lhs.size();
            let bx = x.size() / (m * k).max(1);
            // x's gradient: each pair's product with the stored matrix, added at its lhs index.
            let gx =
                fx::gather_qmm(g, q.w, q.s, q.b, None, Some(rhs), !transpose, p.group_size, p.bits, p.mode, false)?;
            let gx = fx::reshape_usize(&gx, &[pairs, m, k])?;
            let spread = scatter_pairs(&gx, &fx::reshape_usize(lhs, &[pairs])?, bx)?;
            grads[0] = Some(fx::reshape_usize(&spread, x.shape())?);
            if affine {
                let xs = fx::take(&fx::reshape_usize(x, &[bx, m, k])?, &fx::reshape_usize(lhs, &[pairs])?, Some(0))?;
                let dwp = weight_grad(&xs, &fx::reshape_usize(g, &[pairs, m, n])?, transpose)?;
                let wshape: Vec<usize> = {
                    let mut s = q.w.shape()[..q.w.ndim() - 2].to_vec();
                    s.extend_from_slice(&dwp.shape()[1..]);
                    s
                };
                let bw = q.w.size() / (q.w.shape()[q.w.ndim() - 2] * q.w.shape()[q.w.ndim() - 1]).max(1);
                let dw = scatter_pairs(&dwp, &fx::reshape_usize(rhs, &[pairs])?, bw)?;
                let (gs, gb) = scale_bias_grads(p, &q, &fx::reshape_usize(&dw, &wshape)?)?;
                grads[si] = Some(gs);
                grads[bi] = Some(gb);
            }
        }
    }
    Ok(grads)
}

/// The tangent of a quantized node's output.
pub(crate) fn jvp(op: QuantOp, p: QuantParams, inputs: &[Array], ts: &[Option<Array>]) -> Result<Option<Array>> {
    if let QuantOp::Quantize(_) = op {
        return Err(no_rule("quantize"));
    }
    let q = parts(op, p, inputs);
    if p.mode != QuantMode::Affine && matches!(op, QuantOp::Dequantize) {
        return Ok(None);
    }
    let off = usize::from(op != QuantOp::Dequantize);
    let (ts_s, ts_b) = (&ts[off + 1], if p.mode == QuantMode::Affine { &ts[off + 2] } else { &None });
    let mut terms: Vec<Array> = Vec::new();
    match op {
        QuantOp::Quantize(_) => unreachable!("handled above"),
        QuantOp::Dequantize => {
            let (gs, bits) = (p.group_size, p.bits);
            let (s, b) = (q.s, q.b.unwrap());
            if let Some(t) = ts_s {
                terms.push(fx::dequantize(q.w, t, Some(&fx::zeros_like(b)?), gs, bits, p.mode, Some(s.dtype()))?);
            }
            if let Some(t) = ts_b {
                terms.push(fx::dequantize(q.w, &fx::zeros_like(s)?, Some(t), gs, bits, p.mode, Some(s.dtype()))?);
            }
        }
        _ => {
            let x = q.x.unwrap();
            if let Some(t) = &ts[0] {
                terms.push(product(op, p, t, &q, q.s, q.b, false)?);
            }
            if let Some(t) = ts_s {
                terms.push(product(op, p, x, &q, t, Some(&fx::zeros_like(q.b.unwrap())?), false)?);
            }
            if let Some(t) = ts_b {
                terms.push(product(op, p, x, &q, &fx::zeros_like(q.s)?, Some(t), false)?);
            }
        }
    }
    let mut acc: Option<Array> = None;
    for t in terms {
        acc = Some(match acc {
            Some(a) => fx::add(&a, &t)?,
            None => t,
        });
    }
    Ok(acc)
}

/// `x` with its batch on axis 0 and size-1 axes after it, `rank` axes in all.
fn padded(x: &Array, rank: usize) -> Result<Array> {
    let mut shape = vec![x.shape()[0]];
    shape.extend(std::iter::repeat_n(1, rank - x.ndim()));
    shape.extend_from_slice(&x.shape()[1..]);
    fx::reshape_usize(x, &shape)
}

/// The batched value of a quantized node.
pub(crate) fn vmap(op: QuantOp, p: QuantParams, args: &[Batched], node: &Array, b: usize) -> Result<Batched> {
    let out_shape = with_batch(b, node.shape());
    let raw = |inputs: Vec<Array>| -> Result<Batched> {
        let q = Op::Quantized { op, params: p };
        Ok((Array::from_op(out_shape.clone(), node.dtype(), q, inputs), Some(0)))
    };
    let off = usize::from(op != QuantOp::Dequantize);
    let n_mat = p.mode.matrix_inputs();
    let mats = &args[off..off + n_mat];
    let mats_batched = mats.iter().any(|a| a.1.is_some());
    let lift = |a: &Batched| front_as(a, b, &example_shape(a));
    match op {
        QuantOp::Quantize(_) => raw(vec![front(&args[0], b)?]),
        QuantOp::Dequantize => raw(mats.iter().map(lift).collect::<Result<_>>()?),
        QuantOp::Matmul { .. } => {
            let x = &args[0];
            let xe = example_shape(x);
            let mut xf = front(x, b)?;
            if xe.len() == 1 {
                xf = fx::expand_dims(&xf, &[1])?;
            }
            let (w, s, bias) = if mats_batched {
                let m: Vec<Array> = mats.iter().map(lift).collect::<Result<_>>()?;
                let rank = (xf.ndim()).max(m[0].ndim());
                xf = padded(&xf, rank)?;
                let m: Vec<Array> = m.iter().map(|a| padded(a, rank)).collect::<Result<_>>()?;
                (m[0].clone(), m[1].clone(), m.get(2).cloned())
            } else {
                let w = &mats[0].0;
                if w.ndim() > 2 {
                    xf = padded(&xf, (xf.ndim()).max(w.ndim() + 1))?;
                }
                (w.clone(), mats[1].0.clone(), mats.get(2).map(|a| a.0.clone()))
            };
            let QuantOp::Matmul { transpose } = op else { unreachable!("a matmul") };
            let y = fx::quantized_matmul(&xf, &w, &s, bias.as_ref(), transpose, p.group_size, p.bits, p.mode)?;
            Ok((fx::reshape_usize(&y, &out_shape)?, Some(0)))
        }
        QuantOp::GatherMatmul { transpose, .. } => {
            let idx_shape = &node.shape()[..node.ndim() - 2];
            let (l, r) = (&args[args.len() - 2], &args[args.len() - 1]);
            let fold = |m: Array, idx: &Batched| fold_batch(m, idx, b, idx_shape);
            let (x, lhs) = match args[0].1 {
                Some(_) => fold(front(&args[0], b)?, l)?,
                None => (args[0].0.clone(), front_as(l, b, idx_shape)?),
            };
            let (m, rhs): (Vec<Array>, Array) = if mats_batched {
                let mut rhs = None;
                let mut m = Vec::with_capacity(mats.len());
                for a in mats {
                    let (f, idx) = fold(front(a, b)?, r)?;
                    m.push(f);
                    rhs = Some(idx);
                }
                (m, rhs.expect("at least two matrices"))
            } else {
                (mats.iter().map(|a| a.0.clone()).collect(), front_as(r, b, idx_shape)?)
            };
            let (gs, bits) = (p.group_size, p.bits);
            let y =
                fx::gather_qmm(&x, &m[0], &m[1], m.get(2), Some(&lhs), Some(&rhs), transpose, gs, bits, p.mode, false)?;
            Ok((y, Some(0)))
        }
    }
}
