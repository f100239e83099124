//! The vector-Jacobian product rule of each primitive, built from ops so it is itself
//! differentiable.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops::{self as fx, astype};
use crate::primitives::{AttentionMask, BinaryOp, Op, ReduceOp, ScanOp, ScatterMode, SortKind, UnaryOp};

type Grads = Vec<Option<Array>>;

/// Sums `g` down to `shape` over the axes broadcasting added or stretched.
pub(crate) fn unbroadcast(g: &Array, shape: &[usize]) -> Result<Array> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let extra = g.ndim() - shape.len();
    let mut axes: Vec<isize> = (0..extra as isize).collect();
    for (i, &n) in shape.iter().enumerate() {
        if n == 1 && g.shape()[extra + i] != 1 {
            axes.push((extra + i) as isize);
        }
    }
    let s = fx::sum(g, Some(&axes), true)?;
    fx::reshape_usize(&s, shape)
}

fn not_differentiable(op: &Op) -> Error {
    Error::invalid("vjp", format!("no gradient rule for {op:?} yet"))
}

/// Cotangents for each input of `op` given the output cotangent `g`.
pub(crate) fn vjp(op: &Op, inputs: &[Array], out: &Array, g: &Array) -> Result<Grads> {
    let x = inputs.first();
    Ok(match op {
        Op::Arange { .. } | Op::RandomBits | Op::Load(_) | Op::ArgReduce { .. } | Op::StopGradient => {
            vec![None; inputs.len()]
        }
        Op::Unary(u) => vec![unary(*u, x.unwrap(), out, g)?],
        Op::Binary(b) => binary(*b, &inputs[0], &inputs[1], out, g)?,
        Op::Select => {
            let (c, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
            let zero = fx::zeros_like(g)?;
            vec![
                None,
                Some(unbroadcast(&fx::where_(c, g, &zero)?, a.shape())?),
                Some(unbroadcast(&fx::where_(c, &zero, g)?, b.shape())?),
            ]
        }
        Op::AsType => {
            let x = x.unwrap();
            vec![if x.dtype().is_float() { Some(astype(g, x.dtype())?) } else { None }]
        }
        Op::Copy => vec![Some(g.clone())],
        Op::Checkpoint(c) => {
            // Recompute the function from its inputs and differentiate that.
            let primals = &inputs[..inputs.len() - 1];
            let cotangents = |outs: &[Array]| -> Result<Vec<Array>> {
                outs.iter()
                    .enumerate()
                    .map(|(j, o)| if j == c.output { Ok(g.clone()) } else { fx::zeros_like(o) })
                    .collect()
            };
            let (_, grads) = super::vjp_with(|xs: &[Array]| (c.f)(xs), primals, cotangents)?;
            grads.into_iter().map(Some).chain([None]).collect()
        }
        Op::Fused(program) => {
            // The gradient of the unfused program (compile fuses the backward graph in turn).
            let shape = out.shape().to_vec();
            let expand = |xs: &[Array]| Ok(program.expand(xs, &shape).pop().into_iter().collect());
            super::vjp(expand, inputs, std::slice::from_ref(g))?.1.into_iter().map(Some).collect()
        }
        Op::Broadcast => vec![Some(unbroadcast(g, x.unwrap().shape())?)],
        Op::Transpose(perm) => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(fx::transpose(g, &inv)?)]
        }
        Op::Reshape => vec![Some(fx::reshape_usize(g, x.unwrap().shape())?)],
        Op::Slice { start, step } => {
            let x = x.unwrap();
            let zeros = fx::zeros_like(x)?;
            let op = Op::SliceUpdate { start: start.clone(), step: step.clone() };
            vec![Some(Array::from_op(x.shape().to_vec(), x.dtype(), op, vec![zeros, astype(g, x.dtype())?]))]
        }
        Op::SliceUpdate { start, step } => {
            let (src, upd) = (&inputs[0], &inputs[1]);
            let zeros = fx::zeros_like(upd)?;
            let wop = Op::SliceUpdate { start: start.clone(), step: step.clone() };
            let g_src =
                Array::from_op(src.shape().to_vec(), g.dtype(), wop, vec![g.clone(), astype(&zeros, g.dtype())?]);
            let sop = Op::Slice { start: start.clone(), step: step.clone() };
            let g_upd = Array::from_op(upd.shape().to_vec(), g.dtype(), sop, vec![g.clone()]);
            vec![Some(g_src), Some(g_upd)]
        }
        Op::Reduce { op: r, axes } => {
            let x = x.unwrap();
            match r {
                ReduceOp::Sum => vec![Some(fx::broadcast_to(g, x.shape())?)],
                ReduceOp::Prod => vec![Some(fx::divide(&fx::multiply(g, out)?, x)?)],
                ReduceOp::Max | ReduceOp::Min => {
                    let mask = astype(&fx::equal(x, out)?, g.dtype())?;
                    let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
                    let count = fx::sum(&mask, Some(&ax), true)?;
                    vec![Some(fx::multiply(&fx::divide(&mask, &count)?, g)?)]
                }
                ReduceOp::All | ReduceOp::Any => vec![None],
            }
        }
        Op::Scan { op: ScanOp::Sum, axis, reverse, inclusive } => {
            vec![Some(fx::cumsum(g, Some(*axis as isize), !reverse, *inclusive)?)]
        }
        Op::Matmul { alpha, beta } => {
            let (a, b) = (&inputs[0], &inputs[1]);
            let ga = fx::multiply(&fx::matmul(g, &fx::swapaxes(b, -1, -2)?)?, *alpha)?;
            let gb = fx::multiply(&fx::matmul(&fx::swapaxes(a, -1, -2)?, g)?, *alpha)?;
            let mut v = vec![Some(unbroadcast(&ga, a.shape())?), Some(unbroadcast(&gb, b.shape())?)];
            if inputs.len() == 3 {
                v.push(Some(unbroadcast(&fx::multiply(g, *beta)?, inputs[2].shape())?));
            }
            v
        }
        Op::Concatenate(axis) => {
            let mut cuts = Vec::new();
            let mut at = 0;
            for i in &inputs[..inputs.len() - 1] {
                at += i.shape()[*axis];
                cuts.push(at);
            }
            fx::split(g, fx::SplitAt::Indices(cuts), *axis as isize)?.into_iter().map(Some).collect()
        }
        Op::Gather { axes, .. } => {
            let a = x.unwrap();
            let zeros = fx::zeros_like(a)?;
            let mut ins = vec![zeros, astype(g, a.dtype())?];
            ins.extend(inputs[1..].iter().cloned());
            let sop = Op::Scatter { axes: axes.clone(), mode: ScatterMode::Add };
            let mut v = vec![Some(Array::from_op(a.shape().to_vec(), a.dtype(), sop, ins))];
            v.extend(std::iter::repeat_n(None, inputs.len() - 1));
            v
        }
        Op::TakeAlongAxis(axis) => {
            let (a, idx) = (&inputs[0], &inputs[1]);
            let mut target = out.shape().to_vec();
            target[*axis] = a.shape()[*axis];
            let zeros = fx::zeros(&target, a.dtype())?;
            let sop = Op::PutAlongAxis { axis: *axis, mode: ScatterMode::Add };
            let spread = Array::from_op(target, a.dtype(), sop, vec![zeros, idx.clone(), astype(g, a.dtype())?]);
            vec![Some(unbroadcast(&spread, a.shape())?), None]
        }
        Op::Softmax { .. } => {
            let gy = fx::multiply(g, out)?;
            let s = fx::sum(&gy, Some(&[-1]), true)?;
            vec![Some(fx::subtract(&gy, &fx::multiply(out, &s)?)?)]
        }
        Op::LogSumExp => vec![Some(fx::multiply(g, &fx::exp(&fx::subtract(x.unwrap(), out)?)?)?)],
        Op::RmsNorm { eps, weight } => rms_norm(inputs, g, *eps, *weight)?,
        Op::LayerNorm { eps, weight, bias } => layer_norm(inputs, g, *eps, *weight, *bias)?,
        Op::Rope { dims, traditional, base, scale, freqs } => {
            // The inverse rotation: the same rope with the angle negated.
            let inv = Op::Rope { dims: *dims, traditional: *traditional, base: *base, scale: -scale, freqs: *freqs };
            let mut ins = vec![g.clone()];
            ins.extend(inputs[1..].iter().cloned());
            let mut v = vec![Some(Array::from_op(g.shape().to_vec(), g.dtype(), inv, ins))];
            v.extend(std::iter::repeat_n(None, inputs.len() - 1));
            v
        }
        Op::Sort { kind, axis } => {
            let x = x.unwrap();
            let ax = Some(*axis as isize);
            let perm = match kind {
                SortKind::Sort => fx::argsort(x, ax)?,
                SortKind::Partition(k) => fx::argpartition(x, *k, ax)?,
                SortKind::ArgSort | SortKind::ArgPartition(_) => return Ok(vec![None]),
            };
            let spread = fx::scatter_along_axis(&fx::zeros_like(x)?, &perm, g, ax, ScatterMode::Add)?;
            vec![Some(spread)]
        }
        Op::Scatter { axes, mode } => {
            let (a, upd) = (&inputs[0], &inputs[1]);
            let idx = &inputs[2..];
            let ax: Vec<isize> = axes.iter().map(|&v| v as isize).collect();
            let g_a = match mode {
                ScatterMode::Assign => fx::scatter(g, idx, &fx::zeros_like(upd)?, &ax)?,
                ScatterMode::Add => g.clone(),
                _ => return Err(not_differentiable(op)),
            };
            let idx_nd = upd.ndim() - a.ndim();
            let sizes = &upd.shape()[idx_nd..];
            let g_u = fx::gather(g, idx, &ax, sizes)?;
            let mut v = vec![Some(g_a), Some(fx::reshape_usize(&g_u, upd.shape())?)];
            v.extend(std::iter::repeat_n(None, idx.len()));
            v
        }
        Op::PutAlongAxis { axis, mode } => {
            let (idx, vals) = (&inputs[1], &inputs[2]);
            let ax = Some(*axis as isize);
            let g_a = match mode {
                ScatterMode::Assign => fx::put_along_axis(g, idx, &fx::zeros_like(vals)?, ax)?,
                ScatterMode::Add => g.clone(),
                _ => return Err(not_differentiable(op)),
            };
            let g_v = unbroadcast(&fx::take_along_axis(g, idx, ax)?, vals.shape())?;
            vec![Some(g_a), None, Some(g_v)]
        }
        Op::Attention { scale, mask } => attention(inputs, g, *scale, *mask)?,
        _ => return Err(not_differentiable(op)),
    })
}

/// Attention's backward pass, recomputing the probabilities: with S = q kᵀ·scale + mask and
/// P = softmax(S), out = P v, so dv = Pᵀ g, dP = g vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)),
/// dq = dS k·scale, dk = dSᵀ q·scale; key/value heads sum over their query group.
fn attention(inputs: &[Array], g: &Array, scale: f32, mask: AttentionMask) -> Result<Grads> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let (b, hq, l, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    let grp = hq / hkv;
    let q5 = fx::reshape_usize(q, &[b, hkv, grp, l, d])?;
    let g5 = fx::reshape_usize(g, &[b, hkv, grp, l, dv])?;
    let k5 = fx::expand_dims(k, &[2])?;
    let v5 = fx::expand_dims(v, &[2])?;
    let mut scores = fx::multiply(&fx::matmul(&q5, &fx::swapaxes(&k5, -1, -2)?)?, scale as f64)?;
    match mask {
        AttentionMask::None => {}
        AttentionMask::Causal => {
            let keep =
                fx::astype(&fx::tri(l, Some(s), s as isize - l as isize, crate::Dtype::Bool)?, crate::Dtype::Bool)?;
            scores = fx::where_(&keep, &scores, f64::NEG_INFINITY)?;
        }
        AttentionMask::Array => {
            let m = fx::broadcast_to(&inputs[3], &[b, hq, l, s])?;
            let m = fx::reshape_usize(&m, &[b, hkv, grp, l, s])?;
            scores = if m.dtype() == crate::Dtype::Bool {
                fx::where_(&m, &scores, f64::NEG_INFINITY)?
            } else {
                fx::add(&scores, &m)?
            };
        }
    }
    let p = fx::softmax(&scores, None, false)?;
    let gv = fx::sum(&fx::matmul(&fx::swapaxes(&p, -1, -2)?, &g5)?, Some(&[2]), false)?;
    let gp = fx::matmul(&g5, &fx::swapaxes(&v5, -1, -2)?)?;
    let gs = fx::multiply(&p, &fx::subtract(&gp, &fx::sum(&fx::multiply(&gp, &p)?, Some(&[-1]), true)?)?)?;
    let gq = fx::multiply(&fx::matmul(&gs, &k5)?, scale as f64)?;
    let gk = fx::multiply(&fx::sum(&fx::matmul(&fx::swapaxes(&gs, -1, -2)?, &q5)?, Some(&[2]), false)?, scale as f64)?;
    let mut out = vec![Some(fx::reshape_usize(&gq, q.shape())?), Some(gk), Some(gv)];
    if inputs.len() == 4 {
        out.push(None);
    }
    Ok(out)
}

fn unary(u: UnaryOp, x: &Array, out: &Array, g: &Array) -> Result<Option<Array>> {
    use UnaryOp::*;
    if !x.dtype().is_float() && !matches!(u, Abs | Negative | Square) {
        return Ok(None);
    }
    let m = |a: &Array, b: &Array| fx::multiply(a, b);
    Ok(Some(match u {
        Abs => m(g, &fx::sign(x)?)?,
        Negative => fx::negative(g)?,
        Sign | Floor | Ceil | Round | LogicalNot | IsNan | IsInf | IsFinite | BitwiseInvert => return Ok(None),
        Exp => m(g, out)?,
        Expm1 => m(g, &fx::add(out, 1.0)?)?,
        Log => fx::divide(g, x)?,
        Log1p => fx::divide(g, &fx::add(x, 1.0)?)?,
        Log2 => fx::divide(g, &fx::multiply(x, std::f64::consts::LN_2)?)?,
        Log10 => fx::divide(g, &fx::multiply(x, std::f64::consts::LN_10)?)?,
        Sqrt => fx::divide(g, &fx::multiply(out, 2.0)?)?,
        Rsqrt => m(g, &fx::multiply(&fx::divide(out, x)?, -0.5)?)?,
        Square => m(g, &fx::multiply(x, 2.0)?)?,
        Reciprocal => fx::negative(&m(g, &fx::square(out)?)?)?,
        Sin => m(g, &fx::cos(x)?)?,
        Cos => fx::negative(&m(g, &fx::sin(x)?)?)?,
        Tan => m(g, &fx::add(&fx::square(out)?, 1.0)?)?,
        ArcSin => fx::multiply(g, &fx::rsqrt(&fx::subtract(1.0, &fx::square(x)?)?)?)?,
        ArcCos => fx::negative(&fx::multiply(g, &fx::rsqrt(&fx::subtract(1.0, &fx::square(x)?)?)?)?)?,
        ArcTan => fx::divide(g, &fx::add(&fx::square(x)?, 1.0)?)?,
        Sinh => m(g, &fx::cosh(x)?)?,
        Cosh => m(g, &fx::sinh(x)?)?,
        Tanh => m(g, &fx::subtract(1.0, &fx::square(out)?)?)?,
        ArcSinh => fx::multiply(g, &fx::rsqrt(&fx::add(&fx::square(x)?, 1.0)?)?)?,
        ArcCosh => fx::multiply(g, &fx::rsqrt(&fx::subtract(&fx::square(x)?, 1.0)?)?)?,
        ArcTanh => fx::divide(g, &fx::subtract(1.0, &fx::square(x)?)?)?,
        Sigmoid => m(g, &fx::multiply(out, &fx::subtract(1.0, out)?)?)?,
        Erf => m(g, &fx::multiply(&fx::exp(&fx::negative(&fx::square(x)?)?)?, std::f64::consts::FRAC_2_SQRT_PI)?)?,
        ErfInv => m(g, &fx::multiply(&fx::exp(&fx::square(out)?)?, std::f64::consts::PI.sqrt() / 2.0)?)?,
    }))
}

fn binary(b: BinaryOp, x: &Array, y: &Array, out: &Array, g: &Array) -> Result<Grads> {
    use BinaryOp::*;
    if !out.dtype().is_float() {
        return Ok(vec![None, None]);
    }
    let (gx, gy) = match b {
        Add => (g.clone(), g.clone()),
        Subtract => (g.clone(), fx::negative(g)?),
        Multiply => (fx::multiply(g, y)?, fx::multiply(g, x)?),
        Divide => (fx::divide(g, y)?, fx::negative(&fx::divide(&fx::multiply(g, out)?, y)?)?),
        Power => {
            let gx = fx::multiply(&fx::multiply(g, y)?, &fx::power(x, &fx::subtract(y, 1.0)?)?)?;
            let gy = fx::multiply(&fx::multiply(g, out)?, &fx::log(x)?)?;
            (gx, gy)
        }
        Maximum | Minimum => {
            let pick = if b == Maximum { fx::greater_equal(x, y)? } else { fx::less_equal(x, y)? };
            let zero = fx::zeros_like(g)?;
            (fx::where_(&pick, g, &zero)?, fx::where_(&pick, &zero, g)?)
        }
        LogAddExp => {
            (fx::multiply(g, &fx::exp(&fx::subtract(x, out)?)?)?, fx::multiply(g, &fx::exp(&fx::subtract(y, out)?)?)?)
        }
        ArcTan2 => {
            let d = fx::add(&fx::square(x)?, &fx::square(y)?)?;
            (fx::divide(&fx::multiply(g, y)?, &d)?, fx::negative(&fx::divide(&fx::multiply(g, x)?, &d)?)?)
        }
        Remainder => (g.clone(), fx::negative(&fx::multiply(g, &fx::floor_divide(x, y)?)?)?),
        _ => return Ok(vec![None, None]),
    };
    Ok(vec![Some(unbroadcast(&gx, x.shape())?), Some(unbroadcast(&gy, y.shape())?)])
}

/// Leading axes of `g` (all but the last), for summing weight gradients.
fn leading_axes(g: &Array) -> Vec<isize> {
    (0..g.ndim() as isize - 1).collect()
}

fn rms_norm(inputs: &[Array], g: &Array, eps: f32, has_w: bool) -> Result<Grads> {
    let x = &inputs[0];
    let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(x)?, Some(&[-1]), true)?, eps as f64)?)?;
    let gw_in = if has_w { fx::multiply(g, &inputs[1])? } else { g.clone() };
    let proj = fx::mean(&fx::multiply(&gw_in, x)?, Some(&[-1]), true)?;
    let gx = fx::multiply(&r, &fx::subtract(&gw_in, &fx::multiply(&fx::multiply(x, &fx::square(&r)?)?, &proj)?)?)?;
    let mut v = vec![Some(gx)];
    if has_w {
        v.push(Some(fx::sum(&fx::multiply(g, &fx::multiply(x, &r)?)?, Some(&leading_axes(g)), false)?));
    }
    Ok(v)
}

fn layer_norm(inputs: &[Array], g: &Array, eps: f32, has_w: bool, has_b: bool) -> Result<Grads> {
    let x = &inputs[0];
    let mu = fx::mean(x, Some(&[-1]), true)?;
    let xc = fx::subtract(x, &mu)?;
    let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(&xc)?, Some(&[-1]), true)?, eps as f64)?)?;
    let xhat = fx::multiply(&xc, &r)?;
    let gh = if has_w { fx::multiply(g, &inputs[1])? } else { g.clone() };
    let m1 = fx::mean(&gh, Some(&[-1]), true)?;
    let m2 = fx::mean(&fx::multiply(&gh, &xhat)?, Some(&[-1]), true)?;
    let gx = fx::multiply(&r, &fx::subtract(&fx::subtract(&gh, &m1)?, &fx::multiply(&xhat, &m2)?)?)?;
    let mut v = vec![Some(gx)];
    let lead = leading_axes(g);
    if has_w {
        v.push(Some(fx::sum(&fx::multiply(g, &xhat)?, Some(&lead), false)?));
    }
    if has_b {
        v.push(Some(fx::sum(g, Some(&lead), false)?));
    }
    Ok(v)
}
