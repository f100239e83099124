//! The Jacobian-vector product rule of each primitive, built from ops so forward mode records a
//! lazy graph that other transforms can take in turn.
//!
//! A rule gets the node's inputs, its output and one tangent per input (`None`: zero, so the
//! terms it would feed are skipped) and returns the output's tangent (`None`: zero).

use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops::{self as fx, astype};
use crate::primitives::{AttentionMask, BinaryOp, Op, ReduceOp, ScanOp, ScatterMode, SortKind};

use super::vjp_rules::{
    attention_parts, attention_vjp_composed, cum_extreme_source, norm_vjp_composed, unary, AttentionParts,
};

type Tangents<'a> = &'a [Option<Array>];

/// The tangent of `out = op(inputs)` given the inputs' tangents: of `out`'s shape and dtype,
/// or `None` when it is zero (every input tangent zero, a non-float output, or an op that is
/// piecewise constant).
pub(crate) fn jvp(op: &Op, inputs: &[Array], out: &Array, tangents: Tangents) -> Result<Option<Array>> {
    if !out.dtype().is_float() || tangents.iter().all(Option::is_none) {
        return Ok(None);
    }
    let Some(t) = rule(op, inputs, out, tangents)? else { return Ok(None) };
    let t = if t.dtype() == out.dtype() { t } else { astype(&t, out.dtype())? };
    Ok(Some(if t.shape() == out.shape() { t } else { fx::broadcast_to(&t, out.shape())? }))
}

/// The same primitive recorded over `inputs` (the op is linear in the argument replaced by a
/// tangent).
fn same_op(op: &Op, out: &Array, inputs: Vec<Array>) -> Array {
    Array::from_op(out.shape().to_vec(), out.dtype(), op.clone(), inputs)
}

/// The sum of the terms present (`None` if there are none).
fn sum_terms(terms: impl IntoIterator<Item = Option<Array>>) -> Result<Option<Array>> {
    let mut acc: Option<Array> = None;
    for t in terms.into_iter().flatten() {
        acc = Some(match acc {
            Some(a) => fx::add(&a, &t)?,
            None => t,
        });
    }
    Ok(acc)
}

/// `f(t)` for a present tangent.
fn term(t: &Option<Array>, f: impl FnOnce(&Array) -> Result<Array>) -> Result<Option<Array>> {
    t.as_ref().map(f).transpose()
}

/// The tangent, or zeros shaped and typed like `like`.
fn or_zeros(t: &Option<Array>, like: &Array, dtype: crate::Dtype) -> Result<Array> {
    match t {
        Some(t) => astype(t, dtype),
        None => fx::zeros(like.shape(), dtype),
    }
}

fn axes_isize(axes: &[usize]) -> Vec<isize> {
    axes.iter().map(|&a| a as isize).collect()
}

fn rule(op: &Op, inputs: &[Array], out: &Array, ts: Tangents) -> Result<Option<Array>> {
    let x = &inputs[0];
    let tx = &ts[0];
    Ok(match op {
        Op::Arange { .. }
        | Op::RandomBits
        | Op::Load(_)
        | Op::ArgReduce { .. }
        | Op::StopGradient
        | Op::Sort { kind: SortKind::ArgSort | SortKind::ArgPartition(_), .. } => None,
        Op::BitCast => return Err(Error::invalid("jvp", format!("no tangent rule for {op:?}"))),
        Op::JoinedMatmul { .. } | Op::RopeWrite { .. } | Op::Written => {
            return Err(super::vjp_rules::only_in_evaluation(op, "jvp"))
        }
        Op::Unary(u) => match tx {
            Some(t) if x.dtype().is_float() => unary(*u, x, out, t)?,
            _ => None,
        },
        Op::Binary(b) => binary(*b, &inputs[0], &inputs[1], out, &ts[0], &ts[1])?,
        Op::Select => {
            let (c, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
            let dt = out.dtype();
            Some(fx::where_(c, &or_zeros(&ts[1], a, dt)?, &or_zeros(&ts[2], b, dt)?)?)
        }
        Op::AsType => match tx {
            Some(t) if x.dtype().is_float() => Some(astype(t, out.dtype())?),
            _ => None,
        },
        Op::Copy => tx.clone(),
        Op::Checkpoint(_) => ts.last().cloned().flatten(),
        Op::Fused(program) => {
            let steps = program.expand(inputs)?;
            let result = steps.last().cloned().into_iter().collect::<Vec<_>>();
            super::forward(inputs, ts, &result)?.pop().flatten()
        }
        // Linear in input 0; the other inputs are indices or parameters (Rope's custom
        // frequencies are held constant, as in the reverse rule).
        Op::Broadcast
        | Op::Transpose(_)
        | Op::Reshape
        | Op::Slice { .. }
        | Op::TakeAlongAxis(_)
        | Op::Gather { .. }
        | Op::Rope { .. } => term(tx, |t| {
            let mut ins = vec![t.clone()];
            ins.extend(inputs[1..].iter().cloned());
            Ok(same_op(op, out, ins))
        })?,
        Op::AsStrided { strides, offset } => term(tx, |t| fx::as_strided(t, out.shape(), strides, *offset))?,
        Op::Reduce { op: r, axes } => reduce(*r, axes, x, out, tx)?,
        Op::Scan { op: s, axis, reverse, inclusive } => {
            let Some(t) = tx else { return Ok(None) };
            let ax = Some(*axis as isize);
            match s {
                ScanOp::Sum => Some(fx::cumsum(t, ax, *reverse, *inclusive)?),
                ScanOp::Prod => Some(cumprod(x, t, *axis, *reverse, *inclusive)?),
                ScanOp::Max | ScanOp::Min => {
                    let (source, valid) = cum_extreme_source(*s, x, out, *axis, *reverse, *inclusive)?;
                    Some(fx::where_(&valid, &fx::take_along_axis(t, &source, ax)?, 0.0)?)
                }
            }
        }
        Op::Matmul { alpha, beta } => {
            let (a, b) = (&inputs[0], &inputs[1]);
            let prod = sum_terms([term(&ts[0], |t| fx::matmul(t, b))?, term(&ts[1], |t| fx::matmul(a, t))?])?;
            let prod = match prod {
                Some(p) if *alpha != 1.0 => Some(fx::multiply(&p, *alpha)?),
                p => p,
            };
            let addend = match ts.get(2) {
                Some(tc) => term(tc, |t| fx::multiply(t, *beta))?,
                None => None,
            };
            sum_terms([prod, addend])?
        }
        Op::GatherMm { sorted } => {
            let (a, b, l, r) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
            let gmm = |x: &Array, y: &Array| fx::gather_mm(x, y, Some(l), Some(r), *sorted);
            sum_terms([term(&ts[0], |t| gmm(t, b))?, term(&ts[1], |t| gmm(a, t))?])?
        }
        Op::Concatenate(axis) => {
            let parts = inputs.iter().zip(ts).map(|(i, t)| or_zeros(t, i, out.dtype())).collect::<Result<Vec<_>>>()?;
            Some(fx::concatenate(&parts, *axis as isize)?)
        }
        Op::SliceUpdate { .. } => {
            let dt = out.dtype();
            Some(same_op(op, out, vec![or_zeros(&ts[0], &inputs[0], dt)?, or_zeros(&ts[1], &inputs[1], dt)?]))
        }
        Op::Scatter { mode: ScatterMode::Assign | ScatterMode::Add, .. } => {
            let dt = out.dtype();
            let mut ins = vec![or_zeros(&ts[0], &inputs[0], dt)?, or_zeros(&ts[1], &inputs[1], dt)?];
            ins.extend(inputs[2..].iter().cloned());
            Some(same_op(op, out, ins))
        }
        Op::PutAlongAxis { mode: ScatterMode::Assign | ScatterMode::Add, .. } => {
            let dt = out.dtype();
            let ins = vec![or_zeros(&ts[0], &inputs[0], dt)?, inputs[1].clone(), or_zeros(&ts[2], &inputs[2], dt)?];
            Some(same_op(op, out, ins))
        }
        Op::Scatter { axes, mode: ScatterMode::Max | ScatterMode::Min } => {
            let (a, upd, idx) = (&inputs[0], &inputs[1], &inputs[2..]);
            let ax = axes_isize(axes);
            let sizes = &upd.shape()[upd.ndim() - a.ndim()..];
            let pick = |t: &Array| fx::reshape_usize(&fx::gather(t, idx, &ax, sizes)?, upd.shape());
            let spread = |u: &Array| {
                let mut ins = vec![fx::zeros_like(a)?, u.clone()];
                ins.extend(idx.iter().cloned());
                Ok(same_op(&Op::Scatter { axes: axes.clone(), mode: ScatterMode::Add }, out, ins))
            };
            scatter_extreme(a, upd, out, &ts[0], &ts[1], &pick, &spread)?
        }
        Op::PutAlongAxis { axis, mode: ScatterMode::Max | ScatterMode::Min } => {
            let (a, idx, vals) = (&inputs[0], &inputs[1], &inputs[2]);
            let ax = Some(*axis as isize);
            let pick = |t: &Array| fx::take_along_axis(t, idx, ax);
            let spread = |u: &Array| fx::scatter_along_axis(&fx::zeros_like(a)?, idx, u, ax, ScatterMode::Add);
            scatter_extreme(a, vals, out, &ts[0], &ts[2], &pick, &spread)?
        }
        Op::Scatter { .. } | Op::PutAlongAxis { .. } => linearized(op, inputs, out, ts)?,
        Op::Sort { kind, axis } => {
            let Some(t) = tx else { return Ok(None) };
            let ax = Some(*axis as isize);
            let perm = match kind {
                SortKind::Partition(k) => fx::argpartition(x, *k, ax)?,
                _ => fx::argsort(x, ax)?,
            };
            Some(fx::take_along_axis(t, &perm, ax)?)
        }
        Op::Softmax { .. } => term(tx, |t| {
            let dot = fx::sum(&fx::multiply(out, t)?, Some(&[-1]), true)?;
            fx::multiply(out, &fx::subtract(t, &dot)?)
        })?,
        Op::LogSumExp => {
            term(tx, |t| fx::sum(&fx::multiply(t, &fx::exp(&fx::subtract(x, out)?)?)?, Some(&[-1]), true))?
        }
        Op::RmsNorm { eps, weight } => rms_norm(inputs, ts, *eps, *weight)?,
        Op::LayerNorm { eps, weight, bias } => layer_norm(inputs, ts, *eps, *weight, *bias)?,
        Op::NormVjp { eps, weight, centered } => {
            through_composed(|a| norm_vjp_composed(a, *eps, *weight, *centered), inputs, ts)?
        }
        Op::Attention { scale, mask } => Some(attention(inputs, ts, out, *scale, *mask)?),
        Op::AttentionVjp { scale, mask } => through_composed(|a| attention_vjp_composed(a, *scale, *mask), inputs, ts)?,
        Op::Quantized { op, params } => super::quantized_rules::jvp(*op, *params, inputs, ts)?,
        Op::Conv(_) => {
            let (w, tw) = (&inputs[1], &ts[1]);
            sum_terms([
                term(tx, |t| Ok(same_op(op, out, vec![t.clone(), w.clone()])))?,
                term(tw, |t| Ok(same_op(op, out, vec![x.clone(), t.clone()])))?,
            ])?
        }
    })
}

/// Local linearization through reverse mode, for the primitives without a forward rule: the
/// vjp of the (linear) vjp of the node with respect to the inputs that have tangents.
fn linearized(op: &Op, inputs: &[Array], out: &Array, ts: Tangents) -> Result<Option<Array>> {
    let live: Vec<usize> = (0..inputs.len()).filter(|&i| ts[i].is_some()).collect();
    let primals: Vec<Array> = live.iter().map(|&i| inputs[i].clone()).collect();
    let tangents: Vec<Array> = live.iter().filter_map(|&i| ts[i].clone()).collect();
    let rebuild = |xs: &[Array]| -> Result<Vec<Array>> {
        let mut all = inputs.to_vec();
        for (&i, x) in live.iter().zip(xs) {
            all[i] = x.clone();
        }
        Ok(vec![same_op(op, out, all)])
    };
    // u ↦ vjp(node, u) is linear; its vjp with the tangents is J·t.
    let probe = fx::zeros_like(out)?;
    let linear = |us: &[Array]| -> Result<Vec<Array>> { Ok(super::vjp(rebuild, &primals, us)?.1) };
    Ok(super::vjp(linear, std::slice::from_ref(&probe), &tangents)?.1.pop())
}

/// A scatter-like op (`Scatter`, `PutAlongAxis`) of `upd` into `a` in max / min mode, given
/// `pick` (the values of an array shaped like `a` at each update's position, shaped like the
/// updates) and `spread` (zeros shaped like `a` with updates added in): the mean tangent of
/// the factors equal to the result (ties share, as in the reverse rule).
fn scatter_extreme(
    a: &Array,
    upd: &Array,
    out: &Array,
    ta: &Option<Array>,
    tu: &Option<Array>,
    pick: &dyn Fn(&Array) -> Result<Array>,
    spread: &dyn Fn(&Array) -> Result<Array>,
) -> Result<Option<Array>> {
    let mask_a = astype(&fx::equal(a, out)?, out.dtype())?;
    let mask_u = astype(&fx::equal(upd, &pick(out)?)?, out.dtype())?;
    let count = fx::maximum(&fx::add(&mask_a, &spread(&mask_u)?)?, 1.0)?;
    let num = sum_terms([term(ta, |t| fx::multiply(t, &mask_a))?, term(tu, |t| spread(&fx::multiply(t, &mask_u)?))?])?;
    term(&num, |n| fx::divide(n, &count))
}

fn binary(
    b: BinaryOp,
    x: &Array,
    y: &Array,
    out: &Array,
    tx: &Option<Array>,
    ty: &Option<Array>,
) -> Result<Option<Array>> {
    use BinaryOp::*;
    Ok(match b {
        Add => sum_terms([tx.clone(), ty.clone()])?,
        Subtract => sum_terms([tx.clone(), term(ty, fx::negative)?])?,
        Multiply => sum_terms([term(tx, |t| fx::multiply(t, y))?, term(ty, |t| fx::multiply(x, t))?])?,
        Divide => {
            let num = sum_terms([tx.clone(), term(ty, |t| fx::negative(&fx::multiply(out, t)?))?])?;
            term(&num, |n| fx::divide(n, y))?
        }
        Power => sum_terms([
            term(tx, |t| fx::multiply(&fx::multiply(t, y)?, &fx::power(x, &fx::subtract(y, 1.0)?)?))?,
            term(ty, |t| fx::multiply(&fx::multiply(t, out)?, &fx::log(x)?))?,
        ])?,
        Maximum | Minimum => {
            let pick = if b == Maximum { fx::greater_equal(x, y)? } else { fx::less_equal(x, y)? };
            let dt = out.dtype();
            Some(fx::where_(&pick, &or_zeros(tx, x, dt)?, &or_zeros(ty, y, dt)?)?)
        }
        LogAddExp => sum_terms([
            term(tx, |t| fx::multiply(t, &fx::exp(&fx::subtract(x, out)?)?))?,
            term(ty, |t| fx::multiply(t, &fx::exp(&fx::subtract(y, out)?)?))?,
        ])?,
        ArcTan2 => {
            // d atan2(x, y) = (y dx − x dy) / (x² + y²).
            let num =
                sum_terms([term(tx, |t| fx::multiply(t, y))?, term(ty, |t| fx::negative(&fx::multiply(t, x)?))?])?;
            match num {
                Some(n) => Some(fx::divide(&n, &fx::add(&fx::square(x)?, &fx::square(y)?)?)?),
                None => None,
            }
        }
        Remainder => sum_terms([tx.clone(), term(ty, |t| fx::negative(&fx::multiply(t, &fx::floor_divide(x, y)?)?))?])?,
        _ => None,
    })
}

/// Sum: the sum of the tangent. Prod: each element's tangent times the product of the others
/// (counting zeros, so none is divided by). Max / Min: the mean tangent of the elements equal
/// to the result (ties share, as in the reverse rule).
fn reduce(r: ReduceOp, axes: &[usize], x: &Array, out: &Array, tx: &Option<Array>) -> Result<Option<Array>> {
    let Some(t) = tx else { return Ok(None) };
    let ax = axes_isize(axes);
    let sum = |a: &Array| fx::sum(a, Some(&ax), true);
    Ok(match r {
        ReduceOp::Sum => Some(sum(t)?),
        ReduceOp::Prod => {
            let zero = fx::equal(x, 0.0)?;
            let nonzero = fx::where_(&zero, 1.0, x)?;
            let nonzero_prod = fx::prod(&nonzero, Some(&ax), true)?;
            let zeros = sum(&astype(&zero, x.dtype())?)?;
            // The product of the others: a zero sees the non-zero product if it is the only zero;
            // a non-zero element, the non-zero product over itself if there is no zero.
            let if_zero = fx::where_(&fx::equal(&zeros, 1.0)?, &nonzero_prod, 0.0)?;
            let if_nonzero = fx::where_(&fx::equal(&zeros, 0.0)?, &fx::divide(&nonzero_prod, &nonzero)?, 0.0)?;
            Some(sum(&fx::multiply(t, &fx::where_(&zero, &if_zero, &if_nonzero)?)?)?)
        }
        ReduceOp::Max | ReduceOp::Min => {
            let mask = astype(&fx::equal(x, out)?, t.dtype())?;
            Some(fx::divide(&sum(&fx::multiply(t, &mask)?)?, &sum(&mask)?)?)
        }
        ReduceOp::All | ReduceOp::Any => None,
    })
}

/// Cumulative product: with no zero in an output's window its tangent is the output times the
/// windowed sum of `t / x`; with exactly one zero, the product of the window's non-zero elements
/// times the zero's tangent; with more, zero.
fn cumprod(x: &Array, t: &Array, axis: usize, reverse: bool, inclusive: bool) -> Result<Array> {
    let ax = Some(axis as isize);
    let window_sum = |a: &Array| fx::cumsum(a, ax, reverse, inclusive);
    let zero = fx::equal(x, 0.0)?;
    let nonzero = fx::where_(&zero, 1.0, x)?;
    let nonzero_prod = fx::cumprod(&nonzero, ax, reverse, inclusive)?;
    let zeros = window_sum(&astype(&zero, x.dtype())?)?;
    let none = fx::multiply(&nonzero_prod, &window_sum(&fx::divide(t, &nonzero)?)?)?;
    let one = fx::multiply(&nonzero_prod, &window_sum(&fx::where_(&zero, t, 0.0)?)?)?;
    fx::where_(&fx::equal(&zeros, 0.0)?, &none, &fx::where_(&fx::equal(&zeros, 1.0)?, &one, 0.0)?)
}

/// `y = x·r·w` with `r = rsqrt(mean(x²) + eps)`: with `n = x·r`,
/// `dy = w·r·(dx − n·mean(n·dx)) + n·dw`.
fn rms_norm(inputs: &[Array], ts: Tangents, eps: f32, has_w: bool) -> Result<Option<Array>> {
    let x = &inputs[0];
    let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(x)?, Some(&[-1]), true)?, eps as f64)?)?;
    let n = fx::multiply(x, &r)?;
    let dx = term(&ts[0], |t| {
        let proj = fx::mean(&fx::multiply(&n, t)?, Some(&[-1]), true)?;
        let d = fx::multiply(&r, &fx::subtract(t, &fx::multiply(&n, &proj)?)?)?;
        if has_w {
            fx::multiply(&d, &inputs[1])
        } else {
            Ok(d)
        }
    })?;
    let dw = if has_w { term(&ts[1], |t| fx::multiply(&n, t))? } else { None };
    sum_terms([dx, dw])
}

/// `y = x̂·w + b` with `x̂ = (x − mean(x))·r`, `r = rsqrt(var(x) + eps)`: with `c = dx − mean(dx)`,
/// `dx̂ = r·(c − x̂·mean(x̂·c))`, and `dy = dx̂·w + x̂·dw + db`.
fn layer_norm(inputs: &[Array], ts: Tangents, eps: f32, has_w: bool, has_b: bool) -> Result<Option<Array>> {
    let x = &inputs[0];
    let xc = fx::subtract(x, &fx::mean(x, Some(&[-1]), true)?)?;
    let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(&xc)?, Some(&[-1]), true)?, eps as f64)?)?;
    let xhat = fx::multiply(&xc, &r)?;
    let dx = term(&ts[0], |t| {
        let c = fx::subtract(t, &fx::mean(t, Some(&[-1]), true)?)?;
        let proj = fx::mean(&fx::multiply(&xhat, &c)?, Some(&[-1]), true)?;
        let d = fx::multiply(&r, &fx::subtract(&c, &fx::multiply(&xhat, &proj)?)?)?;
        if has_w {
            fx::multiply(&d, &inputs[1])
        } else {
            Ok(d)
        }
    })?;
    let dw = if has_w { term(&ts[1], |t| fx::multiply(&xhat, t))? } else { None };
    let db = if has_b { ts[1 + has_w as usize].clone() } else { None };
    sum_terms([dx, dw, db])
}

/// With `S = q kᵀ·scale + mask`, `P = softmax(S)` and `out = P v`:
/// `dS = (dq kᵀ + q dkᵀ)·scale + dmask`, `dP = P ⊙ (dS − rowsum(P ⊙ dS))`, `dout = dP v + P dv`.
fn attention(inputs: &[Array], ts: Tangents, out: &Array, scale: f32, mask: AttentionMask) -> Result<Array> {
    let AttentionParts { q5, k5, v5, p } = attention_parts(inputs, scale, mask)?;
    let (b, hkv, grp, l) = (q5.shape()[0], q5.shape()[1], q5.shape()[2], q5.shape()[3]);
    let s = k5.shape()[3];
    let kt = fx::swapaxes(&k5, -1, -2)?;
    let dq = term(&ts[0], |t| fx::matmul(&fx::reshape_usize(t, q5.shape())?, &kt))?;
    let dk = term(&ts[1], |t| fx::matmul(&q5, &fx::swapaxes(&fx::expand_dims(t, &[2])?, -1, -2)?))?;
    let scores = match sum_terms([dq, dk])? {
        Some(d) => Some(fx::multiply(&d, scale as f64)?),
        None => None,
    };
    let dmask = match (mask, ts.get(3)) {
        (AttentionMask::Array, Some(Some(t))) if inputs[3].dtype().is_float() => {
            let hq = grp * hkv;
            Some(fx::reshape_usize(&fx::broadcast_to(t, &[b, hq, l, s])?, &[b, hkv, grp, l, s])?)
        }
        _ => None,
    };
    let dp = match sum_terms([scores, dmask])? {
        Some(ds) => {
            let row = fx::sum(&fx::multiply(&p, &ds)?, Some(&[-1]), true)?;
            Some(fx::matmul(&fx::multiply(&p, &fx::subtract(&ds, &row)?)?, &v5)?)
        }
        None => None,
    };
    let dv = term(&ts[2], |t| fx::matmul(&p, &fx::expand_dims(t, &[2])?))?;
    match sum_terms([dp, dv])? {
        Some(d) => fx::reshape_usize(&d, out.shape()),
        None => fx::zeros_like(out),
    }
}

/// The tangent of a fused op through `composed`, the same function written with ordinary ops
/// (absent tangents are zeros).
fn through_composed(
    composed: impl Fn(&[Array]) -> Result<Array>,
    inputs: &[Array],
    ts: Tangents,
) -> Result<Option<Array>> {
    let tangents: Vec<Array> =
        inputs.iter().zip(ts).map(|(x, t)| t.clone().map_or_else(|| fx::zeros_like(x), Ok)).collect::<Result<_>>()?;
    Ok(super::jvp(|a: &[Array]| Ok(vec![composed(a)?]), inputs, &tangents)?.1.pop())
}
