//! Reductions and scans.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitives::{ArgReduceOp, Op, ReduceOp, ScanOp};
use crate::shape::{normalize_axes, normalize_axis};

use super::{add, astype, divide, exp, isfinite, log, multiply, reshape_usize, sqrt, square, subtract, where_};

fn reduce_shape(shape: &[usize], axes: &[usize], keepdims: bool) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = shape.iter().enumerate().map(|(i, &n)| if axes.contains(&i) { 1 } else { n }).collect();
    let out = if keepdims {
        kept.clone()
    } else {
        shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &n)| n).collect()
    };
    (kept, out)
}

fn reduce(op: ReduceOp, name: &'static str, a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    let axes = normalize_axes(axes, a.ndim(), name)?;
    let (kept, out_shape) = reduce_shape(a.shape(), &axes, keepdims);
    let (input, dtype) = match op {
        ReduceOp::All | ReduceOp::Any => (a.clone(), Dtype::Bool),
        ReduceOp::Sum | ReduceOp::Prod if a.dtype() == Dtype::Bool => (astype(a, Dtype::I32)?, Dtype::I32),
        ReduceOp::Max | ReduceOp::Min if a.size() == 0 && axes.iter().any(|&ax| a.shape()[ax] == 0) => {
            return Err(Error::invalid(
                name,
                format!("cannot reduce an empty axis of an array of shape {:?}", a.shape()),
            ));
        }
        _ => (a.clone(), a.dtype()),
    };
    if axes.is_empty() {
        return Ok(input);
    }
    let r = Array::from_op(kept, dtype, Op::Reduce { op, axes }, vec![input]);
    if keepdims {
        Ok(r)
    } else {
        reshape_usize(&r, &out_shape)
    }
}

/// Sum over `axes` (all if `None`). Booleans sum as int32.
pub fn sum(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    reduce(ReduceOp::Sum, "sum", a, axes, keepdims)
}

/// Product over `axes`.
pub fn prod(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    reduce(ReduceOp::Prod, "prod", a, axes, keepdims)
}

/// Maximum over `axes` (NaN propagates).
pub fn max(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    reduce(ReduceOp::Max, "max", a, axes, keepdims)
}

/// Minimum over `axes` (NaN propagates).
pub fn min(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    reduce(ReduceOp::Min, "min", a, axes, keepdims)
}

/// True where every element over `axes` is non-zero.
pub fn all(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    reduce(ReduceOp::All, "all", a, axes, keepdims)
}

/// True where any element over `axes` is non-zero.
pub fn any(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    reduce(ReduceOp::Any, "any", a, axes, keepdims)
}

fn count(a: &Array, axes: Option<&[isize]>, name: &'static str) -> Result<usize> {
    Ok(normalize_axes(axes, a.ndim(), name)?.iter().map(|&ax| a.shape()[ax]).product())
}

/// Mean over `axes`. Integers give float32; half precision accumulates in float32.
pub fn mean(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    let n = count(a, axes, "mean")?;
    let out = a.dtype().to_float();
    let x = if out.size() == 2 { astype(a, Dtype::F32)? } else { astype(a, out)? };
    let s = sum(&x, axes, keepdims)?;
    astype(&divide(&s, n as f64)?, out)
}

/// Variance over `axes` with `ddof` delta degrees of freedom.
pub fn var(a: &Array, axes: Option<&[isize]>, keepdims: bool, ddof: usize) -> Result<Array> {
    let n = count(a, axes, "var")?;
    let out = a.dtype().to_float();
    let x = astype(a, if out.size() == 2 { Dtype::F32 } else { out })?;
    let m = mean(&x, axes, true)?;
    let ss = sum(&square(&subtract(&x, &m)?)?, axes, keepdims)?;
    let denom = n as f64 - ddof as f64;
    let v = if denom > 0.0 { divide(&ss, denom)? } else { multiply(&ss, f64::NAN)? };
    astype(&v, out)
}

/// Standard deviation over `axes` with `ddof` delta degrees of freedom.
pub fn std(a: &Array, axes: Option<&[isize]>, keepdims: bool, ddof: usize) -> Result<Array> {
    sqrt(&var(a, axes, keepdims, ddof)?)
}

/// `log(sum(exp(a)))` over `axes`, computed stably.
pub fn logsumexp(a: &Array, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    let x = astype(a, a.dtype().to_float())?;
    let axes_v = normalize_axes(axes, a.ndim(), "logsumexp")?;
    if a.ndim() >= 1 && axes_v == [a.ndim() - 1] {
        let mut kept = a.shape().to_vec();
        *kept.last_mut().unwrap() = 1;
        let r = Array::from_op(kept, x.dtype(), Op::LogSumExp, vec![x]);
        let (_, out) = reduce_shape(a.shape(), &axes_v, keepdims);
        return reshape_usize(&r, &out);
    }
    let m = max(&x, axes, true)?;
    let m = super::stop_gradient(&where_(&isfinite(&m)?, &m, 0.0)?)?;
    let s = log(&sum(&exp(&subtract(&x, &m)?)?, axes, true)?)?;
    let r = add(&s, &m)?;
    if keepdims {
        Ok(r)
    } else {
        let axes = normalize_axes(axes, a.ndim(), "logsumexp")?;
        let (_, out) = reduce_shape(a.shape(), &axes, false);
        reshape_usize(&r, &out)
    }
}

fn arg_reduce(op: ArgReduceOp, name: &'static str, a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    let flattened = axis.is_none();
    let (x, axis) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), name)?),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    if x.shape()[axis] == 0 {
        return Err(Error::invalid(name, format!("cannot take {name} of an empty axis (shape {:?})", a.shape())));
    }
    let mut kept = x.shape().to_vec();
    kept[axis] = 1;
    let r = Array::from_op(kept.clone(), Dtype::U32, Op::ArgReduce { op, axis }, vec![x]);
    if keepdims {
        if flattened {
            return reshape_usize(&r, &vec![1; a.ndim()]);
        }
        Ok(r)
    } else {
        kept.remove(axis);
        reshape_usize(&r, &kept)
    }
}

/// Index of the maximum along `axis` (of the flattened array if `None`), uint32.
pub fn argmax(a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    arg_reduce(ArgReduceOp::ArgMax, "argmax", a, axis, keepdims)
}

/// Index of the minimum along `axis` (of the flattened array if `None`), uint32.
pub fn argmin(a: &Array, axis: Option<isize>, keepdims: bool) -> Result<Array> {
    arg_reduce(ArgReduceOp::ArgMin, "argmin", a, axis, keepdims)
}

fn scan(
    op: ScanOp,
    name: &'static str,
    a: &Array,
    axis: Option<isize>,
    reverse: bool,
    inclusive: bool,
) -> Result<Array> {
    let (x, axis) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), name)?),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    let x =
        if x.dtype() == Dtype::Bool && matches!(op, ScanOp::Sum | ScanOp::Prod) { astype(&x, Dtype::I32)? } else { x };
    Ok(Array::from_op(x.shape().to_vec(), x.dtype(), Op::Scan { op, axis, reverse, inclusive }, vec![x]))
}

/// Cumulative sum along `axis` (of the flattened array if `None`).
pub fn cumsum(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Sum, "cumsum", a, axis, reverse, inclusive)
}

/// Cumulative product along `axis`.
pub fn cumprod(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Prod, "cumprod", a, axis, reverse, inclusive)
}

/// Cumulative maximum along `axis`.
pub fn cummax(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Max, "cummax", a, axis, reverse, inclusive)
}

/// Cumulative minimum along `axis`.
pub fn cummin(a: &Array, axis: Option<isize>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan(ScanOp::Min, "cummin", a, axis, reverse, inclusive)
}

/// Softmax along `axes` (the last axis if `None`). `precise` computes half-precision inputs
/// in float32.
pub fn softmax(a: &Array, axes: Option<&[isize]>, precise: bool) -> Result<Array> {
    let x = astype(a, a.dtype().to_float())?;
    let last = [-1isize];
    let axes_v = normalize_axes(Some(axes.unwrap_or(&last)), a.ndim().max(1), "softmax")?;
    if a.ndim() >= 1 && axes_v == [a.ndim() - 1] {
        return Ok(Array::from_op(x.shape().to_vec(), x.dtype(), Op::Softmax { precise }, vec![x]));
    }
    let m = super::stop_gradient(&max(&x, axes, true)?)?;
    let e = exp(&subtract(&x, &m)?)?;
    divide(&e, &sum(&e, axes, true)?)
}
