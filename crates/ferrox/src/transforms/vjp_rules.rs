//! The vector-Jacobian product rule of each primitive, built from ops so it is itself
//! differentiable.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::ops::{self as fx, astype};
use crate::primitives::{AttentionMask, BinaryOp, ConvParams, Op, ReduceOp, ScanOp, ScatterMode, SortKind, UnaryOp};

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

/// The error for an op that only evaluation's plan makes ([`Op::JoinedMatmul`]): no graph a
/// transform walks holds one.
pub(super) fn only_in_evaluation(op: &Op, transform: &'static str) -> Error {
    Error::invalid(transform, format!("{op:?} is made only inside an evaluation and has no rule"))
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
        Op::JoinedMatmul { .. } | Op::RopeWrite { .. } | Op::Written => return Err(only_in_evaluation(op, "vjp")),
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
            let expand = |xs: &[Array]| Ok(program.expand(xs)?.pop().into_iter().collect());
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
        Op::Scan { .. } if !x.unwrap().dtype().is_float() => vec![None],
        Op::Scan { op: ScanOp::Prod, axis, reverse, inclusive } => {
            vec![Some(cumprod(x.unwrap(), out, g, *axis, *reverse, *inclusive)?)]
        }
        Op::Scan { op: op @ (ScanOp::Max | ScanOp::Min), axis, reverse, inclusive } => {
            vec![Some(cum_extreme(*op, x.unwrap(), out, g, *axis, *reverse, *inclusive)?)]
        }
        Op::AsStrided { strides, offset } => vec![Some(as_strided(x.unwrap(), out, g, strides, *offset)?)],
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
        Op::GatherMm { .. } => gather_mm(inputs, g)?,
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
        Op::NormVjp { eps, weight, centered } => {
            let f = |a: &[Array]| Ok(vec![norm_vjp_composed(a, *eps, *weight, *centered)?]);
            super::vjp(f, inputs, std::slice::from_ref(g))?.1.into_iter().map(Some).collect()
        }
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
            let sizes = &upd.shape()[upd.ndim() - a.ndim()..];
            let pick = |t: &Array| fx::reshape_usize(&fx::gather(t, idx, &ax, sizes)?, upd.shape());
            let combine = |base: &Array, u: &Array, m: ScatterMode| {
                let mut ins = vec![base.clone(), u.clone()];
                ins.extend(idx.iter().cloned());
                Ok(Array::from_op(
                    base.shape().to_vec(),
                    base.dtype(),
                    Op::Scatter { axes: axes.clone(), mode: m },
                    ins,
                ))
            };
            let (g_a, g_u) = scatter_like(*mode, a, upd, out, g, &pick, &combine)?;
            let mut v = vec![Some(g_a), Some(g_u)];
            v.extend(std::iter::repeat_n(None, idx.len()));
            v
        }
        Op::PutAlongAxis { axis, mode } => {
            let (a, idx, vals) = (&inputs[0], &inputs[1], &inputs[2]);
            let ax = Some(*axis as isize);
            let pick = |t: &Array| fx::take_along_axis(t, idx, ax);
            let combine = |base: &Array, u: &Array, m: ScatterMode| fx::scatter_along_axis(base, idx, u, ax, m);
            let (g_a, g_v) = scatter_like(*mode, a, vals, out, g, &pick, &combine)?;
            vec![Some(g_a), None, Some(unbroadcast(&g_v, vals.shape())?)]
        }
        Op::Conv(p) => conv(p, &inputs[0], &inputs[1], g)?,
        Op::Attention { scale, mask } => {
            let mut grads: Grads = crate::ops::fast::attention_vjp(inputs, g, *scale, *mask)?.map(Some).into();
            grads.extend((inputs.len() == 4).then_some(None));
            grads
        }
        Op::AttentionVjp { scale, mask } => {
            let f = |a: &[Array]| Ok(vec![attention_vjp_composed(a, *scale, *mask)?]);
            super::vjp(f, inputs, std::slice::from_ref(g))?.1.into_iter().map(Some).collect()
        }
        Op::Quantized { op, params } => super::quantized_rules::vjp(*op, *params, inputs, g)?,
        Op::BitCast => return Err(not_differentiable(op)),
    })
}

/// Cumulative product. Where no zero came before, an element's gradient is the reverse
/// cumulative sum of `g · out` over the products it is in, divided by the element. The first
/// zero of a line gets the reverse cumulative sum of `g` times the products with that zero
/// replaced by one; every later element only enters products that hold that zero: none.
fn cumprod(x: &Array, out: &Array, g: &Array, axis: usize, reverse: bool, inclusive: bool) -> Result<Array> {
    let ax = Some(axis as isize);
    let other = fx::cumprod(x, ax, reverse, !inclusive)?;
    let (upto, before) = if inclusive { (out.clone(), other) } else { (other, out.clone()) };
    let upto_zero = fx::equal(&upto, 0.0)?;
    let first_zero = fx::logical_and(&upto_zero, &fx::not_equal(&before, 0.0)?)?;
    let back = |y: &Array| fx::cumsum(&fx::multiply(y, g)?, ax, !reverse, inclusive);
    let no_zero_yet = fx::divide(&back(out)?, &fx::where_(&upto_zero, 1.0, x)?)?;
    let at_zero = back(&fx::cumprod(&fx::where_(&first_zero, 1.0, x)?, ax, reverse, inclusive)?)?;
    fx::where_(&first_zero, &at_zero, &fx::where_(&upto_zero, 0.0, &no_zero_yet)?)
}

/// Cumulative maximum / minimum: each output's cotangent goes to the element that set the
/// running extreme it reports (see [`cum_extreme_source`]).
fn cum_extreme(
    op: ScanOp,
    x: &Array,
    out: &Array,
    g: &Array,
    axis: usize,
    reverse: bool,
    inclusive: bool,
) -> Result<Array> {
    let (source, valid) = cum_extreme_source(op, x, out, axis, reverse, inclusive)?;
    let g = fx::where_(&valid, g, 0.0)?;
    fx::scatter_along_axis(&fx::zeros_like(x)?, &source, &g, Some(axis as isize), ScatterMode::Add)
}

/// For each output of a cumulative maximum / minimum, the position along `axis` of the element
/// that set the running extreme it reports — the latest one in scan order that equals the
/// inclusive running extreme at its own position (so ties go to the latest, as in MLX) — and
/// whether there is one: an exclusive scan's first output (the identity) has none (its
/// position is then 0).
pub(crate) fn cum_extreme_source(
    op: ScanOp,
    x: &Array,
    out: &Array,
    axis: usize,
    reverse: bool,
    inclusive: bool,
) -> Result<(Array, Array)> {
    let ax = axis as isize;
    let n = x.shape()[axis];
    let running = if inclusive {
        out.clone()
    } else if op == ScanOp::Max {
        fx::cummax(x, Some(ax), reverse, true)?
    } else {
        fx::cummin(x, Some(ax), reverse, true)?
    };
    let it = index_dtype(n);
    let mut along = vec![1; x.ndim()];
    along[axis] = n;
    let pos = fx::reshape_usize(&fx::arange(0.0, n as f64, 1.0, it)?, &along)?;
    // Positions that set the running extreme; the others are marked past the scan's start so a
    // running max (forward) or min (reverse) of the marks finds the latest setter.
    let sets = fx::equal(x, &running)?;
    let source = if reverse {
        fx::cummin(&fx::where_(&sets, &pos, n as i64)?, Some(ax), true, inclusive)?
    } else {
        fx::cummax(&fx::where_(&sets, &pos, -1i64)?, Some(ax), false, inclusive)?
    };
    let valid = fx::logical_and(&fx::greater_equal(&source, 0i64)?, &fx::less(&source, n as i64)?)?;
    Ok((fx::where_(&valid, &source, 0i64)?, valid))
}

/// The smallest signed integer type that holds positions `0..=n`.
fn index_dtype(n: usize) -> Dtype {
    if n < i32::MAX as usize {
        Dtype::I32
    } else {
        Dtype::I64
    }
}

/// A strided view: each output element reads one input element (possibly several times), so
/// the cotangent is scattered, adding, back to the flat input position it read — found by
/// taking the same view of the positions `0..size`.
fn as_strided(x: &Array, out: &Array, g: &Array, strides: &[isize], offset: usize) -> Result<Array> {
    let positions = fx::arange(0.0, x.size() as f64, 1.0, index_dtype(x.size()))?;
    let read = fx::reshape_usize(&fx::as_strided(&positions, out.shape(), strides, offset)?, &[out.size()])?;
    let flat_g = fx::reshape_usize(g, &[out.size(), 1])?;
    let gx = fx::scatter_add(&fx::zeros(&[x.size()], x.dtype())?, &[read], &flat_g, &[0])?;
    fx::reshape_usize(&gx, x.shape())
}

/// The cotangents of a scatter-like op (`Scatter`, `PutAlongAxis`) of `upd` into `a`, given
/// `pick` (the values of an array shaped like `a` at each update's position, shaped like the
/// updates) and `combine` (a copy of a base shaped like `a` with updates combined in by a mode).
///
/// Assign: the overwritten positions pass nothing to `a`. Prod: each factor gets the product
/// of the other factors at its position, counting zeros so none is divided by. Max / Min: the
/// factors equal to the result share its cotangent evenly (as the Max / Min reductions do).
fn scatter_like(
    mode: ScatterMode,
    a: &Array,
    upd: &Array,
    out: &Array,
    g: &Array,
    pick: &dyn Fn(&Array) -> Result<Array>,
    combine: &dyn Fn(&Array, &Array, ScatterMode) -> Result<Array>,
) -> Result<(Array, Array)> {
    let spread = |u: &Array| combine(&fx::zeros_like(a)?, u, ScatterMode::Add);
    Ok(match mode {
        ScatterMode::Assign => (combine(g, &fx::zeros_like(upd)?, ScatterMode::Assign)?, pick(g)?),
        ScatterMode::Add => (g.clone(), pick(g)?),
        ScatterMode::Prod => {
            let g_a = fx::multiply(g, &combine(&fx::ones_like(a)?, upd, ScatterMode::Prod)?)?;
            let (a_zero, u_zero) = (fx::equal(a, 0.0)?, fx::equal(upd, 0.0)?);
            let zeros = fx::add(&astype(&a_zero, a.dtype())?, &spread(&astype(&u_zero, a.dtype())?)?)?;
            let nonzero_prod =
                combine(&fx::where_(&a_zero, 1.0, a)?, &fx::where_(&u_zero, 1.0, upd)?, ScatterMode::Prod)?;
            let (zeros, nonzero_prod) = (pick(&zeros)?, pick(&nonzero_prod)?);
            // A zero factor sees the others' product if it is the only zero; a non-zero one,
            // the non-zero product over itself if there is no zero.
            let if_zero = fx::where_(&fx::equal(&zeros, 1.0)?, &nonzero_prod, 0.0)?;
            let others = fx::divide(&nonzero_prod, &fx::where_(&u_zero, 1.0, upd)?)?;
            let if_nonzero = fx::where_(&fx::equal(&zeros, 0.0)?, &others, 0.0)?;
            (g_a, fx::multiply(&pick(g)?, &fx::where_(&u_zero, &if_zero, &if_nonzero)?)?)
        }
        ScatterMode::Max | ScatterMode::Min => {
            let mask_a = astype(&fx::equal(a, out)?, g.dtype())?;
            let mask_u = astype(&fx::equal(upd, &pick(out)?)?, g.dtype())?;
            let count = fx::maximum(&fx::add(&mask_a, &spread(&mask_u)?)?, 1.0)?;
            let share = fx::divide(g, &count)?;
            (fx::multiply(&share, &mask_a)?, fx::multiply(&pick(&share)?, &mask_u)?)
        }
    })
}

/// Size of an axis of `n` elements spread `d` apart.
fn dilated(n: usize, d: usize) -> isize {
    if n == 0 {
        0
    } else {
        ((n - 1) * d + 1) as isize
    }
}

/// Convolution's cotangents, both convolutions again (so any rank, and lazy).
///
/// Per spatial axis, with stride s, kernel dilation kd, input dilation id, padding lo and
/// K taps: output o reads padded position `o·s + k·kd`, where input element i sits at
/// `lo + i·id`. So the input's cotangent correlates the cotangent, dilated by s, with the
/// kernel (channels transposed within each group, flipped the other way), stepping id over
/// the positions of the input elements; and the kernel's cotangent correlates the input,
/// with the channels as the batch and the batch as the channels, with the cotangent as the
/// kernel, dilated by s, stepping kd over the taps.
fn conv(p: &ConvParams, x: &Array, w: &Array, g: &Array) -> Result<Grads> {
    let nsp = x.ndim() - 2;
    let (xs, ws, gs) = (x.shape(), w.shape(), g.shape());
    let groups = p.groups;
    let (cin, cout, cg) = (xs[nsp + 1], ws[0], ws[nsp + 1]);
    let cog = cout / groups;
    let spatial = 1..=nsp;

    let (mut lo, mut hi, mut w_hi) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..nsp {
        let (n, k, m) = (xs[i + 1], ws[i + 1], gs[i + 1]);
        let (s, kd, id, plo) = (p.stride[i], p.kernel_dilation[i], p.input_dilation[i], p.padding_lo[i] as isize);
        let l = dilated(k, kd) - 1 - plo;
        lo.push(l);
        hi.push((n as isize - 1) * id as isize + dilated(k, kd) - dilated(m, s) - l);
        w_hi.push((k as isize - 1) * kd as isize + dilated(m, s) - dilated(n, id) - plo);
    }

    // [Cout, k..., Cg] → [G, Cog, k..., Cg] → [G, Cg, k..., Cog] → [Cin, k..., Cog].
    let mut split = vec![groups, cog];
    split.extend_from_slice(&ws[spatial.clone()]);
    split.push(cg);
    let mut perm = vec![0, nsp + 2];
    perm.extend(2..nsp + 2);
    perm.push(1);
    let mut wt_shape = vec![cin];
    wt_shape.extend_from_slice(&ws[spatial.clone()]);
    wt_shape.push(cog);
    let wt = fx::reshape_usize(&fx::transpose(&fx::reshape_usize(w, &split)?, &perm)?, &wt_shape)?;
    let gx = fx::conv_general(g, &wt, &p.input_dilation, &lo, &hi, &p.kernel_dilation, &p.stride, groups, !p.flip)?;

    // x [N, sp..., Cin] → [N, sp..., G, Cg] → [Cg, sp..., G, N] → [Cg, sp..., G·N].
    let mut split = xs[..=nsp].to_vec();
    split.extend([groups, cg]);
    let mut perm = vec![nsp + 2];
    perm.extend(spatial.clone());
    perm.extend([nsp + 1, 0]);
    let mut xt_shape = vec![cg];
    xt_shape.extend_from_slice(&xs[spatial.clone()]);
    xt_shape.push(groups * xs[0]);
    let xt = fx::reshape_usize(&fx::transpose(&fx::reshape_usize(x, &split)?, &perm)?, &xt_shape)?;
    // g [N, out..., Cout] → [Cout, out..., N].
    let mut perm = vec![nsp + 1];
    perm.extend(spatial.clone());
    perm.push(0);
    let gt = fx::transpose(g, &perm)?;
    let plo: Vec<isize> = p.padding_lo.iter().map(|&v| v as isize).collect();
    let gw = fx::conv_general(&xt, &gt, &p.kernel_dilation, &plo, &w_hi, &p.stride, &p.input_dilation, groups, false)?;
    // [Cg, k..., Cout] → [Cout, k..., Cg], taps reversed for a flipped kernel.
    let mut perm = vec![nsp + 1];
    perm.extend(spatial);
    perm.push(0);
    let mut gw = fx::transpose(&gw, &perm)?;
    if p.flip {
        let nd = gw.ndim();
        let (mut start, mut stop, mut step) = (vec![0; nd], vec![isize::MAX; nd], vec![1; nd]);
        for i in 1..=nsp {
            (start[i], stop[i], step[i]) = (isize::MAX, isize::MIN, -1);
        }
        gw = fx::slice(&gw, &start, &stop, &step)?;
    }
    Ok(vec![Some(gx), Some(gw)])
}

/// What [`Op::AttentionVjp`] computes, as ordinary ops over its inputs (q, k, v, the mask if
/// any, the output cotangent g): with S = q kᵀ·scale + mask and P = softmax(S), out = P v, so
/// dv = Pᵀ g, dP = g vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)), dq = dS k·scale, dk = dSᵀ q·scale;
/// key/value heads sum over their query group. The three are flattened one after the other.
pub(crate) fn attention_vjp_composed(inputs: &[Array], scale: f32, mask: AttentionMask) -> Result<Array> {
    let (fwd, g) = inputs.split_at(inputs.len() - 1);
    let g = &g[0];
    let AttentionParts { q5, k5, v5, p } = attention_parts(fwd, scale, mask)?;
    let g5 = fx::reshape_usize(g, &[q5.shape()[0], q5.shape()[1], q5.shape()[2], q5.shape()[3], v5.shape()[4]])?;
    let gv = fx::sum(&fx::matmul(&fx::swapaxes(&p, -1, -2)?, &g5)?, Some(&[2]), false)?;
    let gp = fx::matmul(&g5, &fx::swapaxes(&v5, -1, -2)?)?;
    let gs = fx::multiply(&p, &fx::subtract(&gp, &fx::sum(&fx::multiply(&gp, &p)?, Some(&[-1]), true)?)?)?;
    let gq = fx::multiply(&fx::matmul(&gs, &k5)?, scale as f64)?;
    let gk = fx::multiply(&fx::sum(&fx::matmul(&fx::swapaxes(&gs, -1, -2)?, &q5)?, Some(&[2]), false)?, scale as f64)?;
    let flat = |a: &Array| fx::reshape(&astype(a, inputs[0].dtype())?, &[-1]);
    fx::concatenate(&[flat(&gq)?, flat(&gk)?, flat(&gv)?], 0)
}

/// Attention's operands grouped by key/value head, and its probabilities.
pub(crate) struct AttentionParts {
    /// q as [B, Hkv, group, L, D].
    pub q5: Array,
    /// k as [B, Hkv, 1, S, D].
    pub k5: Array,
    /// v as [B, Hkv, 1, S, Dv].
    pub v5: Array,
    /// softmax(q kᵀ·scale + mask) as [B, Hkv, group, L, S].
    pub p: Array,
}

/// The lowest finite value of a float dtype: MLX's score for a masked-out key.
fn lowest_finite(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F16 => half::f16::MIN.to_f64(),
        Dtype::Bf16 => half::bf16::MIN.to_f64(),
        Dtype::F32 => f32::MIN as f64,
        _ => f64::MIN,
    }
}

/// Recomputes attention's probabilities from its inputs (q, k, v and the mask array if any).
pub(crate) fn attention_parts(inputs: &[Array], scale: f32, mask: AttentionMask) -> Result<AttentionParts> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let (b, hq, l, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s) = (k.shape()[1], k.shape()[2]);
    let grp = hq / hkv;
    let q5 = fx::reshape_usize(q, &[b, hkv, grp, l, d])?;
    let k5 = fx::expand_dims(k, &[2])?;
    let v5 = fx::expand_dims(v, &[2])?;
    let mut scores = fx::multiply(&fx::matmul(&q5, &fx::swapaxes(&k5, -1, -2)?)?, scale as f64)?;
    match mask {
        AttentionMask::None => {}
        AttentionMask::Causal => {
            // Query i sees keys j ≤ i + S − L (MLX's offset; L ≤ S here, since
            // scaled_dot_product_attention splits off the queries that see no key).
            let keep =
                fx::astype(&fx::tri(l, Some(s), s as isize - l as isize, crate::Dtype::Bool)?, crate::Dtype::Bool)?;
            scores = fx::where_(&keep, &scores, lowest_finite(scores.dtype()))?;
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
    Ok(AttentionParts { q5, k5, v5, p })
}

/// The cotangent of an elementwise function of one input: `g` times its derivative at `x`
/// (which, being elementwise, is also its tangent for the tangent `g`).
pub(crate) fn unary(u: UnaryOp, x: &Array, out: &Array, g: &Array) -> Result<Option<Array>> {
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
    let w = has_w.then(|| &inputs[1]);
    let mut v = vec![Some(crate::ops::fast::norm_vjp(x, w, g, eps, false))];
    if has_w {
        let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(x)?, Some(&[-1]), true)?, eps as f64)?)?;
        v.push(Some(fx::sum(&fx::multiply(g, &fx::multiply(x, &r)?)?, Some(&leading_axes(g)), false)?));
    }
    Ok(v)
}

fn layer_norm(inputs: &[Array], g: &Array, eps: f32, has_w: bool, has_b: bool) -> Result<Grads> {
    let x = &inputs[0];
    let w = has_w.then(|| &inputs[1]);
    let mut v = vec![Some(crate::ops::fast::norm_vjp(x, w, g, eps, true))];
    let lead = leading_axes(g);
    if has_w {
        let xc = fx::subtract(x, &fx::mean(x, Some(&[-1]), true)?)?;
        let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(&xc)?, Some(&[-1]), true)?, eps as f64)?)?;
        v.push(Some(fx::sum(&fx::multiply(g, &fx::multiply(&xc, &r)?)?, Some(&lead), false)?));
    }
    if has_b {
        v.push(Some(fx::sum(g, Some(&lead), false)?));
    }
    Ok(v)
}

/// What [`Op::NormVjp`] computes, as ordinary ops over its inputs (x, the weight if
/// `has_w`, the cotangent g): the input gradient of RMS norm, or of layer norm when
/// `centered`. The fused op's own derivatives (and its batching with a batched weight)
/// differentiate this.
pub(crate) fn norm_vjp_composed(inputs: &[Array], eps: f32, has_w: bool, centered: bool) -> Result<Array> {
    let x = &inputs[0];
    let g = &inputs[inputs.len() - 1];
    let xc = if centered { fx::subtract(x, &fx::mean(x, Some(&[-1]), true)?)? } else { x.clone() };
    let r = fx::rsqrt(&fx::add(&fx::mean(&fx::square(&xc)?, Some(&[-1]), true)?, eps as f64)?)?;
    let xhat = fx::multiply(&xc, &r)?;
    let h = if has_w { fx::multiply(g, &inputs[1])? } else { g.clone() };
    let m2 = fx::mean(&fx::multiply(&h, &xhat)?, Some(&[-1]), true)?;
    let h = if centered { fx::subtract(&h, &fx::mean(&h, Some(&[-1]), true)?)? } else { h };
    fx::astype(&fx::multiply(&r, &fx::subtract(&h, &fx::multiply(&xhat, &m2)?)?)?, x.dtype())
}

/// Sums each of `parts` [pairs, r, c] into row `idx[p]` of a zero [count, r, c] array.
pub(crate) fn scatter_pairs(parts: &Array, idx: &Array, count: usize) -> Result<Array> {
    let pairs = parts.shape()[0];
    let mut full = vec![count];
    full.extend_from_slice(&parts.shape()[1..]);
    let zeros = fx::zeros(&full, parts.dtype())?;
    let i3 = fx::reshape_usize(idx, &[pairs, 1, 1])?;
    fx::scatter_along_axis(&zeros, &i3, parts, Some(0), ScatterMode::Add)
}

/// `gather_mm`'s cotangents: pair i's products `g_i bᵀ` and `aᵀ g_i`, added at its lhs and
/// rhs matrix; the indices get none.
fn gather_mm(inputs: &[Array], g: &Array) -> Result<Grads> {
    let (a, b, lhs, rhs) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
    let (m, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let n = b.shape()[b.ndim() - 1];
    let pairs = lhs.size();
    let (a_count, b_count) = (a.size() / (m * k).max(1), b.size() / (k * n).max(1));
    let (l1, r1) = (fx::reshape_usize(lhs, &[pairs])?, fx::reshape_usize(rhs, &[pairs])?);
    let g3 = fx::reshape_usize(g, &[pairs, m, n])?;
    let bt = fx::swapaxes(&fx::reshape_usize(b, &[b_count, k, n])?, -1, -2)?;
    let ga = fx::gather_mm(&g3, &bt, None, Some(&r1), false)?;
    let ga = scatter_pairs(&ga, &l1, a_count)?;
    let at = fx::take(&fx::swapaxes(&fx::reshape_usize(a, &[a_count, m, k])?, -1, -2)?, &l1, Some(0))?;
    let gb = scatter_pairs(&fx::matmul(&at, &g3)?, &r1, b_count)?;
    Ok(vec![Some(fx::reshape_usize(&ga, a.shape())?), Some(fx::reshape_usize(&gb, b.shape())?), None, None])
}
