//! Arrays from nothing: zeros, ones, full, arange, linspace, eye, tri, ...

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitives::Op;

use super::{astype, broadcast_to, greater_equal, less_equal, reshape_usize, subtract, where_, IntoOperand, Scalar};

/// An array of `shape` filled with `value` (a scalar or an array broadcast to `shape`).
pub fn full(shape: &[usize], value: impl IntoOperand, dtype: Dtype) -> Result<Array> {
    let v = match value.into_operand() {
        super::Operand::Array(a) => astype(&a, dtype)?,
        super::Operand::Scalar(s) => s.to_array(dtype),
    };
    let b = broadcast_to(&v, shape)?;
    // Materialize: a full array is written to, and a broadcast view is not writable.
    super::contiguous(&b)
}

/// Zeros of `shape`.
pub fn zeros(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 0, dtype)
}

/// Ones of `shape`.
pub fn ones(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 1, dtype)
}

/// Zeros with the shape and dtype of `a`.
pub fn zeros_like(a: &Array) -> Result<Array> {
    zeros(a.shape(), a.dtype())
}

/// Ones with the shape and dtype of `a`.
pub fn ones_like(a: &Array) -> Result<Array> {
    ones(a.shape(), a.dtype())
}

/// `value` with the shape and dtype of `a`.
pub fn full_like(a: &Array, value: impl IntoOperand) -> Result<Array> {
    full(a.shape(), value, a.dtype())
}

/// `start, start + step, ...` up to (not including) `stop`.
pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !stop.is_finite() {
        return Err(Error::invalid("arange", format!("cannot make a range from {start} to {stop} by {step}")));
    }
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    Ok(Array::from_op(vec![n], dtype, Op::Arange { start, step }, vec![]))
}

/// `num` evenly spaced values from `start` to `stop` inclusive.
pub fn linspace(start: f64, stop: f64, num: usize, dtype: Dtype) -> Result<Array> {
    let step = if num > 1 { (stop - start) / (num - 1) as f64 } else { 0.0 };
    Ok(Array::from_op(vec![num], dtype, Op::Arange { start, step }, vec![]))
}

/// An n×m matrix with ones on diagonal `k` (above the main one if positive).
pub fn eye(n: usize, m: Option<usize>, k: isize, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    let (r, c) = grid(n, m)?;
    astype(&super::equal(&subtract(&c, &r)?, k as i32)?, dtype)
}

/// The n×n identity matrix.
pub fn identity(n: usize, dtype: Dtype) -> Result<Array> {
    eye(n, None, 0, dtype)
}

/// Row and column indices of an n×m grid, as int32 [n, 1] and [1, m].
fn grid(n: usize, m: usize) -> Result<(Array, Array)> {
    let r = reshape_usize(&arange(0.0, n as f64, 1.0, Dtype::I32)?, &[n, 1])?;
    let c = reshape_usize(&arange(0.0, m as f64, 1.0, Dtype::I32)?, &[1, m])?;
    Ok((r, c))
}

/// An n×m matrix with ones at and below diagonal `k`.
pub fn tri(n: usize, m: Option<usize>, k: isize, dtype: Dtype) -> Result<Array> {
    let (r, c) = grid(n, m.unwrap_or(n))?;
    astype(&less_equal(&subtract(&c, &r)?, k as i32)?, dtype)
}

/// `a` with elements above diagonal `k` of the last two axes zeroed.
pub fn tril(a: &Array, k: isize) -> Result<Array> {
    let (n, m) = last_two(a, "tril")?;
    let (r, c) = grid(n, m)?;
    where_(&less_equal(&subtract(&c, &r)?, k as i32)?, a, zero_of(a))
}

/// `a` with elements below diagonal `k` of the last two axes zeroed.
pub fn triu(a: &Array, k: isize) -> Result<Array> {
    let (n, m) = last_two(a, "triu")?;
    let (r, c) = grid(n, m)?;
    where_(&greater_equal(&subtract(&c, &r)?, k as i32)?, a, zero_of(a))
}

fn last_two(a: &Array, op: &'static str) -> Result<(usize, usize)> {
    if a.ndim() < 2 {
        return Err(Error::shape(op, format!("needs at least 2 dimensions, got shape {:?}", a.shape())));
    }
    Ok((a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]))
}

/// A zero scalar of `a`'s dtype.
fn zero_of(a: &Array) -> Array {
    Scalar::Int(0).to_array(a.dtype())
}
