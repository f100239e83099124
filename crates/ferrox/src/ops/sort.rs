//! Sorting and selection: sort, argsort, partition, argpartition, topk.

use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitives::{Op, SortKind};
use crate::shape::normalize_axis;

use super::{reshape_usize, slice_axis};

fn sort_op(kind: SortKind, name: &'static str, a: &Array, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), name)?),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    if let SortKind::Partition(k) | SortKind::ArgPartition(k) = kind {
        if k >= x.shape()[ax] && x.shape()[ax] > 0 {
            return Err(Error::invalid(name, format!("kth={k} is out of range for an axis of size {}", x.shape()[ax])));
        }
    }
    let dtype = match kind {
        SortKind::ArgSort | SortKind::ArgPartition(_) => Dtype::U32,
        _ => x.dtype(),
    };
    Ok(Array::from_op(x.shape().to_vec(), dtype, Op::Sort { kind, axis: ax }, vec![x]))
}

/// Sorted copy along `axis` (flattened if `None`); NaN sorts last.
pub fn sort(a: &Array, axis: Option<isize>) -> Result<Array> {
    sort_op(SortKind::Sort, "sort", a, axis)
}

/// Indices (uint32) that sort along `axis`; stable.
pub fn argsort(a: &Array, axis: Option<isize>) -> Result<Array> {
    sort_op(SortKind::ArgSort, "argsort", a, axis)
}

/// Reorders along `axis` so element `kth` is where a full sort would put it, smaller ones
/// before it and larger ones after (in no particular order).
pub fn partition(a: &Array, kth: usize, axis: Option<isize>) -> Result<Array> {
    sort_op(SortKind::Partition(kth), "partition", a, axis)
}

/// Indices (uint32) of [`partition`].
pub fn argpartition(a: &Array, kth: usize, axis: Option<isize>) -> Result<Array> {
    sort_op(SortKind::ArgPartition(kth), "argpartition", a, axis)
}

/// The `k` largest elements along `axis` (flattened if `None`), in no particular order.
pub fn topk(a: &Array, k: usize, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), "topk")? as isize),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    let n = x.shape()[ax as usize];
    if k > n {
        return Err(Error::invalid("topk", format!("k={k} is larger than the axis size {n}")));
    }
    if k == 0 {
        return slice_axis(&x, ax, 0, 0);
    }
    let p = partition(&x, n - k, Some(ax))?;
    slice_axis(&p, ax, (n - k) as isize, n as isize)
}
