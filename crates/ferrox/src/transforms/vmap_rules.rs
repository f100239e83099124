//! The batching rule of each primitive: the same computation over a whole batch, recorded
//! as one op (or a few), given inputs whose batch sits on some axis or is absent.

use super::vmap::Batched;
use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops as fx;
use crate::primitives::{ConvParams, Op};

/// `[b] + shape`.
pub(super) fn with_batch(b: usize, shape: &[usize]) -> Vec<usize> {
    let mut s = Vec::with_capacity(shape.len() + 1);
    s.push(b);
    s.extend_from_slice(shape);
    s
}

/// `x` with its batch on axis 0; an unbatched `x` is broadcast to `b` examples (a view).
pub(super) fn front(x: &Batched, b: usize) -> Result<Array> {
    match x.1 {
        Some(0) => Ok(x.0.clone()),
        Some(ax) => fx::moveaxis(&x.0, ax as isize, 0),
        None => fx::broadcast_to(&fx::expand_dims(&x.0, &[0])?, &with_batch(b, x.0.shape())),
    }
}

/// A batched `x` with its batch on axis 0 and size-1 axes after it so each example has rank
/// `rank` (right-aligned broadcasting then lines examples up); an unbatched `x` unchanged.
fn aligned(x: &Batched, rank: usize) -> Result<Array> {
    match x.1 {
        None => Ok(x.0.clone()),
        Some(_) => {
            let f = front(x, 0)?;
            let pad = rank + 1 - f.ndim();
            if pad == 0 {
                return Ok(f);
            }
            let axes: Vec<isize> = (1..=pad as isize).collect();
            fx::expand_dims(&f, &axes)
        }
    }
}

/// `x` with its batch on axis 0 and exactly the per-example shape `shape` (broadcast).
pub(super) fn front_as(x: &Batched, b: usize, shape: &[usize]) -> Result<Array> {
    fx::broadcast_to(&aligned(x, shape.len())?, &with_batch(b, shape))
}

/// Axes shifted past a leading batch axis.
fn shifted(axes: &[usize]) -> Vec<usize> {
    axes.iter().map(|&a| a + 1).collect()
}

/// `[first] + rest`.
fn prepend<T: Clone>(first: T, rest: &[T]) -> Vec<T> {
    let mut v = Vec::with_capacity(rest.len() + 1);
    v.push(first);
    v.extend_from_slice(rest);
    v
}

/// `0..b` as an index array of `dtype`, shaped `[b, 1, ..., 1]` and broadcast to `[b] + shape`.
fn batch_index(b: usize, shape: &[usize], dtype: crate::dtype::Dtype) -> Result<Array> {
    let iota = fx::arange(0.0, b as f64, 1.0, dtype)?;
    let mut s = vec![1; shape.len() + 1];
    s[0] = b;
    fx::broadcast_to(&fx::reshape_usize(&iota, &s)?, &with_batch(b, shape))
}

/// The batched value of `node` (op `op`) given its batched inputs `args`; `b` examples.
pub(crate) fn batch(op: &Op, args: &[Batched], node: &Array, b: usize) -> Result<Batched> {
    let dtype = node.dtype();
    let out_shape = with_batch(b, node.shape());
    let rank = node.ndim();
    let raw = |op: Op, inputs: Vec<Array>| -> Result<Batched> {
        Ok((Array::from_op(out_shape.clone(), dtype, op, inputs), Some(0)))
    };
    let x = &args[0];
    match op {
        Op::Unary(_) | Op::AsType | Op::StopGradient | Op::Copy => {
            let ax = x.1.expect("a single-input node is batched through its input");
            let mut shape = node.shape().to_vec();
            shape.insert(ax, b);
            Ok((Array::from_op(shape, dtype, op.clone(), vec![x.0.clone()]), Some(ax)))
        }
        Op::BitCast => raw(op.clone(), vec![front(x, b)?]),
        Op::Binary(_) | Op::Select => raw(op.clone(), args.iter().map(|a| aligned(a, rank)).collect::<Result<_>>()?),
        Op::Fused(g) => {
            let ins = args.iter().map(|a| aligned(a, rank)).collect::<Result<_>>()?;
            match g.reduction() {
                None => raw(op.clone(), ins),
                Some((op, axes)) => {
                    // The prologue gained a leading batch axis: the reduced axes move past it.
                    let mut steps = g.steps.clone();
                    let last = steps.len() - 1;
                    steps[last].0 = Op::Reduce { op, axes: shifted(axes) };
                    raw(Op::Fused(std::sync::Arc::new(crate::primitives::FusedGraph { steps })), ins)
                }
            }
        }
        Op::Broadcast => Ok((fx::broadcast_to(&aligned(x, rank)?, &out_shape)?, Some(0))),
        Op::Transpose(perm) => Ok((fx::transpose(&front(x, b)?, &prepend(0, &shifted(perm)))?, Some(0))),
        Op::Reshape => Ok((fx::reshape_usize(&front(x, b)?, &out_shape)?, Some(0))),
        Op::Slice { start, step } => {
            raw(Op::Slice { start: prepend(0, start), step: prepend(1, step) }, vec![front(x, b)?])
        }
        Op::AsStrided { strides, offset } => {
            let per_example: usize = x.0.shape().iter().product::<usize>() / b;
            let strides = prepend(per_example as isize, strides);
            raw(Op::AsStrided { strides, offset: *offset }, vec![fx::contiguous(&front(x, b)?)?])
        }
        Op::Reduce { op: r, axes } => raw(Op::Reduce { op: *r, axes: shifted(axes) }, vec![front(x, b)?]),
        Op::ArgReduce { op: r, axis } => raw(Op::ArgReduce { op: *r, axis: axis + 1 }, vec![front(x, b)?]),
        Op::Scan { op: s, axis, reverse, inclusive } => {
            raw(Op::Scan { op: *s, axis: axis + 1, reverse: *reverse, inclusive: *inclusive }, vec![front(x, b)?])
        }
        Op::Sort { kind, axis } => raw(Op::Sort { kind: *kind, axis: axis + 1 }, vec![front(x, b)?]),
        Op::Softmax { .. } | Op::LogSumExp | Op::RandomBits => raw(op.clone(), vec![front(x, b)?]),
        Op::Matmul { alpha, beta } => matmul(args, rank, *alpha, *beta, dtype),
        Op::GatherMm { .. } => {
            let idx_shape = &node.shape()[..node.ndim() - 2];
            let pick = |m: &Batched, idx: &Batched| match m.1 {
                Some(_) => fold_batch(front(m, b)?, idx, b, idx_shape),
                None => Ok((m.0.clone(), front_as(idx, b, idx_shape)?)),
            };
            let (a, lhs) = pick(&args[0], &args[2])?;
            let (bm, rhs) = pick(&args[1], &args[3])?;
            Ok((fx::gather_mm(&a, &bm, Some(&lhs), Some(&rhs), false)?, Some(0)))
        }
        Op::Concatenate(axis) => {
            raw(Op::Concatenate(axis + 1), args.iter().map(|a| front(a, b)).collect::<Result<_>>()?)
        }
        Op::SliceUpdate { start, step } => raw(
            Op::SliceUpdate { start: prepend(0, start), step: prepend(1, step) },
            vec![front(x, b)?, front(&args[1], b)?],
        ),
        Op::Gather { axes, slice_sizes } => gather(args, node, axes, slice_sizes, b),
        Op::Scatter { axes, mode } => {
            let a = front(x, b)?;
            let upd = &args[1];
            let upd_rank = upd.0.ndim() - usize::from(upd.1.is_some());
            let idx_shape: Vec<usize> = example_shape(upd)[..upd_rank - rank].to_vec();
            let upd = fx::expand_dims(&front(upd, b)?, &[1 + idx_shape.len() as isize])?;
            let index_dtype = args[2].0.dtype();
            let mut inputs = vec![a, upd, batch_index(b, &idx_shape, index_dtype)?];
            for ix in &args[2..] {
                inputs.push(front_as(ix, b, &idx_shape)?);
            }
            raw(Op::Scatter { axes: prepend(0, &shifted(axes)), mode: *mode }, inputs)
        }
        Op::TakeAlongAxis(axis) => {
            let lift = |a: &Batched| if a.1.is_some() { front(a, b) } else { fx::expand_dims(&a.0, &[0]) };
            let out = fx::take_along_axis(&lift(x)?, &lift(&args[1])?, Some(*axis as isize + 1))?;
            Ok((out, Some(0)))
        }
        Op::PutAlongAxis { axis, mode } => {
            let full = example_shape(&args[1]);
            let inputs = vec![front(x, b)?, front_as(&args[1], b, &full)?, front_as(&args[2], b, &full)?];
            raw(Op::PutAlongAxis { axis: axis + 1, mode: *mode }, inputs)
        }
        Op::RmsNorm { eps, weight } => {
            let w = args.get(1).filter(|_| *weight);
            match w {
                Some(w) if w.1.is_some() => {
                    let y = fx::fast::rms_norm(&front(x, b)?, None, *eps)?;
                    Ok((fx::astype(&fx::multiply(&y, &aligned(w, rank)?)?, dtype)?, Some(0)))
                }
                _ => raw(op.clone(), prepend(front(x, b)?, &args[1..].iter().map(|a| a.0.clone()).collect::<Vec<_>>())),
            }
        }
        Op::NormVjp { eps, weight, centered } => {
            // x and the cotangent share the per-example shape; the op is row-wise along the
            // last axis, so a leading batch axis passes through. A batched weight takes the
            // composed form, which broadcasts it.
            let shape = node.shape().to_vec();
            let g = &args[args.len() - 1];
            let (xs, gs) = (front_as(x, b, &shape)?, front_as(g, b, &shape)?);
            match args.get(1).filter(|_| *weight) {
                Some(w) if w.1.is_some() => {
                    let w = aligned(w, shape.len())?;
                    let y = super::vjp_rules::norm_vjp_composed(&[xs, w, gs], *eps, true, *centered)?;
                    Ok((y, Some(0)))
                }
                w => {
                    let mut inputs = vec![xs];
                    inputs.extend(w.map(|w| w.0.clone()));
                    inputs.push(gs);
                    raw(op.clone(), inputs)
                }
            }
        }
        Op::LayerNorm { eps, .. } => {
            if args[1..].iter().all(|a| a.1.is_none()) {
                return raw(
                    op.clone(),
                    prepend(front(x, b)?, &args[1..].iter().map(|a| a.0.clone()).collect::<Vec<_>>()),
                );
            }
            let Op::LayerNorm { weight, bias, .. } = op else { unreachable!() };
            let mut y = fx::fast::layer_norm(&front(x, b)?, None, None, *eps)?;
            let mut rest = args[1..].iter();
            if *weight {
                y = fx::multiply(&y, &aligned(rest.next().unwrap(), rank)?)?;
            }
            if *bias {
                y = fx::add(&y, &aligned(rest.next().unwrap(), rank)?)?;
            }
            Ok((fx::astype(&y, dtype)?, Some(0)))
        }
        Op::Rope { .. } => {
            if args[1..].iter().any(|a| a.1.is_some()) {
                return Err(Error::invalid(
                    "vmap",
                    "rope with a batched offset or batched frequencies is not supported; batch x only",
                ));
            }
            raw(op.clone(), prepend(front(x, b)?, &args[1..].iter().map(|a| a.0.clone()).collect::<Vec<_>>()))
        }
        Op::Attention { .. } => attention(op, args, node, b),
        Op::AttentionVjp { .. } => attention_vjp(op, args, node, b),
        // The batched forward result; the recomputation is not batched.
        Op::Checkpoint(_) => Ok(args.last().expect("the forward result is the last input").clone()),
        Op::Conv(p) => conv(p, args, node, b),
        Op::Quantized { op, params } => super::quantized_rules::vmap(*op, *params, args, node, b),
        Op::JoinedMatmul { .. } | Op::RopeWrite { .. } | Op::Written => {
            Err(super::vjp_rules::only_in_evaluation(op, "vmap"))
        }
        Op::Arange { .. } | Op::Load(_) => {
            Err(Error::invalid("vmap", format!("{op:?} has no inputs and cannot depend on the batch")))
        }
    }
}

/// The per-example shape of a batched value.
pub(super) fn example_shape(x: &Batched) -> Vec<usize> {
    let mut s = x.0.shape().to_vec();
    if let Some(ax) = x.1 {
        s.remove(ax);
    }
    s
}

/// `alpha * a @ b + beta * c` over a batch: operands lined up on a leading batch axis, the
/// matmul broadcasting handles unbatched ones.
fn matmul(args: &[Batched], rank: usize, alpha: f64, beta: f64, dtype: crate::dtype::Dtype) -> Result<Batched> {
    let a = aligned(&args[0], rank)?;
    let bm = aligned(&args[1], rank)?;
    let product_batched = args[0].1.is_some() || args[1].1.is_some();
    let out = match args.get(2) {
        Some(c) if product_batched => fx::addmm(&aligned(c, rank)?, &a, &bm, alpha, beta)?,
        Some(c) => {
            let p = fx::multiply(&fx::matmul(&a, &bm)?, alpha)?;
            fx::add(&p, &fx::multiply(&aligned(c, rank)?, beta)?)?
        }
        None if alpha == 1.0 => fx::matmul(&a, &bm)?,
        None => fx::multiply(&fx::matmul(&a, &bm)?, alpha)?,
    };
    Ok((fx::astype(&out, dtype)?, Some(0)))
}

/// Gather over a batch. Unbatched indices gather whole batch slices; batched indices get a
/// leading index over the batch.
fn gather(args: &[Batched], node: &Array, axes: &[usize], slice_sizes: &[usize], b: usize) -> Result<Batched> {
    let a = front(&args[0], b)?;
    let idx_shape = &node.shape()[..node.ndim() - slice_sizes.len()];
    let dtype = node.dtype();
    if args[1..].iter().all(|i| i.1.is_none()) {
        let mut shape = idx_shape.to_vec();
        shape.push(b);
        shape.extend_from_slice(slice_sizes);
        let mut inputs = vec![a];
        inputs.extend(args[1..].iter().map(|i| i.0.clone()));
        let op = Op::Gather { axes: shifted(axes), slice_sizes: prepend(b, slice_sizes) };
        return Ok((Array::from_op(shape, dtype, op, inputs), Some(idx_shape.len())));
    }
    let mut inputs = vec![a, batch_index(b, idx_shape, args[1].0.dtype())?];
    for ix in &args[1..] {
        inputs.push(front_as(ix, b, idx_shape)?);
    }
    let mut shape = with_batch(b, idx_shape);
    shape.push(1);
    shape.extend_from_slice(slice_sizes);
    let op = Op::Gather { axes: prepend(0, &shifted(axes)), slice_sizes: prepend(1, slice_sizes) };
    let g = Array::from_op(shape, dtype, op, inputs);
    Ok((fx::reshape_usize(&g, &with_batch(b, node.shape()))?, Some(0)))
}

/// Attention's operands (q, k, v, the mask if `has_mask`, then any others shaped as
/// themselves) with the batch folded into the attention's own batch axis.
fn fold_attention_args(args: &[Batched], b: usize, has_mask: bool) -> Result<Vec<Array>> {
    let q_shape = example_shape(&args[0]);
    let n = q_shape[0];
    let mut inputs = Vec::with_capacity(args.len());
    for (i, a) in args.iter().enumerate() {
        let per = if has_mask && i == 3 {
            // The mask broadcasts to [B, Hq, L, S].
            let k_shape = example_shape(&args[1]);
            vec![n, q_shape[1], q_shape[2], k_shape[2]]
        } else {
            example_shape(a)
        };
        let full = front_as(a, b, &per)?;
        let mut folded = vec![b * n];
        folded.extend_from_slice(&per[1..]);
        inputs.push(fx::reshape_usize(&full, &folded)?);
    }
    Ok(inputs)
}

/// Attention over a batch: the batch folds into the attention's own batch axis.
fn attention(op: &Op, args: &[Batched], node: &Array, b: usize) -> Result<Batched> {
    let inputs = fold_attention_args(args, b, args.len() == 4)?;
    let mut shape = vec![inputs[0].shape()[0]];
    shape.extend_from_slice(&node.shape()[1..]);
    let out = Array::from_op(shape, node.dtype(), op.clone(), inputs);
    Ok((fx::reshape_usize(&out, &with_batch(b, node.shape()))?, Some(0)))
}

/// Attention's gradients over a batch: the batch folds into the attention's batch axis, and
/// each example's flat dq, dk, dv are gathered from the folded ones.
fn attention_vjp(op: &Op, args: &[Batched], node: &Array, b: usize) -> Result<Batched> {
    let inputs = fold_attention_args(args, b, args.len() == 5)?;
    let sizes: Vec<usize> = inputs[..3].iter().map(|a| a.size()).collect();
    let flat = Array::from_op(vec![sizes.iter().sum()], node.dtype(), op.clone(), inputs);
    let mut parts = Vec::with_capacity(3);
    let mut start = 0;
    for n in sizes {
        let part = fx::slice(&flat, &[start as isize], &[(start + n) as isize], &[1])?;
        parts.push(fx::reshape_usize(&part, &[b, n / b.max(1)])?);
        start += n;
    }
    Ok((fx::concatenate(&parts, 1)?, Some(0)))
}

/// Convolution over a batch: a batch of inputs folds into N; a batch of weights becomes
/// `b` times as many channel groups.
fn conv(p: &ConvParams, args: &[Batched], node: &Array, b: usize) -> Result<Batched> {
    let (x, w) = (&args[0], &args[1]);
    let o = node.shape();
    let dtype = node.dtype();
    if w.1.is_none() {
        let xf = front(x, b)?;
        let mut folded = vec![b * xf.shape()[1]];
        folded.extend_from_slice(&xf.shape()[2..]);
        let xf = fx::reshape_usize(&xf, &folded)?;
        let mut shape = vec![b * o[0]];
        shape.extend_from_slice(&o[1..]);
        let y = Array::from_op(shape, dtype, Op::Conv(p.clone()), vec![xf, w.0.clone()]);
        return Ok((fx::reshape_usize(&y, &with_batch(b, o))?, Some(0)));
    }
    // Channels of example v sit at v * C_in.. in the input and v * C_out.. in the output.
    let xf = front(x, b)?;
    let nd = xf.ndim();
    let xf = fx::moveaxis(&xf, 0, nd as isize - 2)?;
    let mut xs = xf.shape()[..nd - 2].to_vec();
    xs.push(b * xf.shape()[nd - 1]);
    let xf = fx::reshape_usize(&xf, &xs)?;
    let wf = front(w, b)?;
    let mut ws = vec![b * wf.shape()[1]];
    ws.extend_from_slice(&wf.shape()[2..]);
    let wf = fx::reshape_usize(&wf, &ws)?;
    let cout = o[o.len() - 1];
    let mut shape = o[..o.len() - 1].to_vec();
    shape.push(b * cout);
    let params = ConvParams { groups: p.groups * b, ..p.clone() };
    let y = Array::from_op(shape, dtype, Op::Conv(params), vec![xf, wf]);
    let mut split = o[..o.len() - 1].to_vec();
    split.extend_from_slice(&[b, cout]);
    let y = fx::reshape_usize(&y, &split)?;
    Ok((fx::moveaxis(&y, o.len() as isize - 1, 0)?, Some(0)))
}

/// Folds the vmap batch of `m` (on axis 0, before its own batch axes and two matrix axes)
/// into one flat batch axis, and shifts the indices into it: example v's matrices move to
/// `v · per ..`, so its indices (brought to [b] + `idx_shape`) gain `v · per`. For the
/// gathered products (`gather_mm`, `gather_qmm`).
pub(super) fn fold_batch(m: Array, idx: &Batched, b: usize, idx_shape: &[usize]) -> Result<(Array, Array)> {
    let per: usize = m.shape()[1..m.ndim() - 2].iter().product();
    let off = fx::multiply(&fx::arange(0.0, b as f64, 1.0, crate::Dtype::U32)?, per as u32)?;
    let mut s = vec![b];
    s.extend(std::iter::repeat_n(1, idx_shape.len()));
    let idx = fx::add(&front_as(idx, b, idx_shape)?, &fx::reshape_usize(&off, &s)?)?;
    let mut flat = vec![b * per];
    flat.extend_from_slice(&m.shape()[m.ndim() - 2..]);
    Ok((fx::reshape_usize(&m, &flat)?, idx))
}
