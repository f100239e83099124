//! Indexing: take, gather, scatter, take/put along an axis, roll, diagonal, trace, meshgrid.

use crate::array::{row_major_strides, Array};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitives::{Op, ScatterMode};
use crate::shape::{broadcast_shapes, normalize_axis};

use super::{as_strided, astype, broadcast_to, concatenate, contiguous, reshape_usize, slice_axis, sum, transpose};

fn check_indices(idx: &Array, op: &'static str) -> Result<()> {
    if idx.dtype().is_integer() {
        Ok(())
    } else {
        Err(Error::dtype(op, "indices must be integers", idx.dtype()))
    }
}

/// MLX's general gather: index arrays (broadcast together) pick slice starts on `axes`; the
/// output has the index shape followed by `slice_sizes`.
pub fn gather(a: &Array, indices: &[Array], axes: &[isize], slice_sizes: &[usize]) -> Result<Array> {
    if indices.len() != axes.len() {
        return Err(Error::invalid("gather", format!("{} index arrays for {} axes", indices.len(), axes.len())));
    }
    if slice_sizes.len() != a.ndim() {
        return Err(Error::shape(
            "gather",
            format!("slice_sizes {slice_sizes:?} needs one entry per axis of {:?}", a.shape()),
        ));
    }
    let axes: Vec<usize> = axes.iter().map(|&x| normalize_axis(x, a.ndim(), "gather")).collect::<Result<_>>()?;
    for (i, (&s, &n)) in slice_sizes.iter().zip(a.shape()).enumerate() {
        if s > n || (axes.contains(&i) && s > 1) {
            return Err(Error::shape(
                "gather",
                format!("slice size {s} on axis {i} does not fit shape {:?}", a.shape()),
            ));
        }
    }
    for ix in indices {
        check_indices(ix, "gather")?;
    }
    let shapes: Vec<&[usize]> = indices.iter().map(|i| i.shape()).collect();
    let mut shape = broadcast_shapes(&shapes, "gather")?;
    shape.extend_from_slice(slice_sizes);
    let mut inputs = vec![a.clone()];
    inputs.extend(indices.iter().cloned());
    Ok(Array::from_op(shape, a.dtype(), Op::Gather { axes, slice_sizes: slice_sizes.to_vec() }, inputs))
}

/// Elements (or slices) of `a` at `indices` along `axis`; the flattened array if `None`.
/// Negative indices count from the end; out-of-range ones are an error at evaluation.
pub fn take(a: &Array, indices: &Array, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), "take")?),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    if x.shape()[ax] == 0 && indices.size() > 0 {
        return Err(Error::invalid("take", "cannot take from an empty axis"));
    }
    let mut sizes = x.shape().to_vec();
    sizes[ax] = 1;
    let g = gather(&x, std::slice::from_ref(indices), &[ax as isize], &sizes)?;
    // g: idx_shape + pre + [1] + post  →  pre + idx_shape + post
    let ki = indices.ndim();
    let mut squeezed: Vec<usize> = g.shape()[..ki + ax].to_vec();
    squeezed.extend_from_slice(&x.shape()[ax + 1..]);
    let g = reshape_usize(&g, &squeezed)?;
    let nd = squeezed.len();
    let perm: Vec<usize> = (ki..ki + ax).chain(0..ki).chain(ki + ax..nd).collect();
    transpose(&g, &perm)
}

fn scatter_impl(
    a: &Array,
    indices: &[Array],
    updates: &Array,
    axes: &[isize],
    mode: ScatterMode,
    name: &'static str,
) -> Result<Array> {
    if indices.len() != axes.len() {
        return Err(Error::invalid(name, format!("{} index arrays for {} axes", indices.len(), axes.len())));
    }
    let axes: Vec<usize> = axes.iter().map(|&x| normalize_axis(x, a.ndim(), name)).collect::<Result<_>>()?;
    for ix in indices {
        check_indices(ix, name)?;
    }
    let shapes: Vec<&[usize]> = indices.iter().map(|i| i.shape()).collect();
    let idx_shape = broadcast_shapes(&shapes, name)?;
    if updates.ndim() != idx_shape.len() + a.ndim() {
        return Err(Error::shape(
            name,
            format!(
                "updates of shape {:?} need index shape {idx_shape:?} followed by {} slice axes",
                updates.shape(),
                a.ndim()
            ),
        ));
    }
    let slice = &updates.shape()[idx_shape.len()..];
    for (i, (&s, &n)) in slice.iter().zip(a.shape()).enumerate() {
        if s > n || (axes.contains(&i) && s > 1) {
            return Err(Error::shape(
                name,
                format!("update slice {slice:?} does not fit shape {:?} on axis {i}", a.shape()),
            ));
        }
    }
    let mut full_upd = idx_shape.clone();
    full_upd.extend_from_slice(slice);
    let upd = broadcast_to(&astype(updates, a.dtype())?, &full_upd)?;
    let mut inputs = vec![a.clone(), upd];
    inputs.extend(indices.iter().cloned());
    Ok(Array::from_op(a.shape().to_vec(), a.dtype(), Op::Scatter { axes, mode }, inputs))
}

macro_rules! scatter_fns {
    ($($(#[$doc:meta])* $name:ident => $mode:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// `updates` has the broadcast index shape followed by one slice axis per axis of `a`
        /// (size 1 on the indexed axes). Repeated indices apply in order.
        pub fn $name(a: &Array, indices: &[Array], updates: &Array, axes: &[isize]) -> Result<Array> {
            scatter_impl(a, indices, updates, axes, ScatterMode::$mode, stringify!($name))
        }
    )*};
}

scatter_fns! {
    /// A copy of `a` with slices at `indices` on `axes` replaced by `updates`.
    scatter => Assign;
    /// A copy of `a` with `updates` added at `indices`.
    scatter_add => Add;
    /// A copy of `a` multiplied by `updates` at `indices`.
    scatter_prod => Prod;
    /// A copy of `a` with the maximum of it and `updates` at `indices`.
    scatter_max => Max;
    /// A copy of `a` with the minimum of it and `updates` at `indices`.
    scatter_min => Min;
}

fn along_axis_args(a: &Array, indices: &Array, axis: Option<isize>, op: &'static str) -> Result<(Array, Array, usize)> {
    check_indices(indices, op)?;
    match axis {
        None => Ok((reshape_usize(a, &[a.size()])?, reshape_usize(indices, &[indices.size()])?, 0)),
        Some(ax) => {
            let ax = normalize_axis(ax, a.ndim(), op)?;
            if indices.ndim() != a.ndim() {
                return Err(Error::shape(
                    op,
                    format!("indices of shape {:?} need the rank of {:?}", indices.shape(), a.shape()),
                ));
            }
            Ok((a.clone(), indices.clone(), ax))
        }
    }
}

/// `out[..., i, ...] = a[..., indices[..., i, ...], ...]` along `axis` (flattened if `None`);
/// `a` and `indices` broadcast off the axis.
pub fn take_along_axis(a: &Array, indices: &Array, axis: Option<isize>) -> Result<Array> {
    let (x, idx, ax) = along_axis_args(a, indices, axis, "take_along_axis")?;
    let mut xs = x.shape().to_vec();
    xs[ax] = 1;
    let mut is = idx.shape().to_vec();
    is[ax] = 1;
    let mut shape = broadcast_shapes(&[&xs, &is], "take_along_axis")?;
    shape[ax] = idx.shape()[ax];
    if x.shape()[ax] == 0 && idx.size() > 0 {
        return Err(Error::invalid("take_along_axis", "cannot take from an empty axis"));
    }
    Ok(Array::from_op(shape, x.dtype(), Op::TakeAlongAxis(ax), vec![x, idx]))
}

/// A copy of `a` with `values` combined at `indices` along `axis` by `mode`.
pub fn scatter_along_axis(
    a: &Array,
    indices: &Array,
    values: &Array,
    axis: Option<isize>,
    mode: ScatterMode,
) -> Result<Array> {
    let (x, idx, ax) = along_axis_args(a, indices, axis, "put_along_axis")?;
    let vals = astype(values, x.dtype())?;
    let vals = if axis.is_none() && vals.ndim() > 1 { reshape_usize(&vals, &[vals.size()])? } else { vals };
    let upd = broadcast_shapes(&[idx.shape(), vals.shape()], "put_along_axis")?;
    let mut check = upd.clone();
    check[ax] = 1;
    let mut xs = x.shape().to_vec();
    xs[ax] = 1;
    if broadcast_shapes(&[&check, &xs], "put_along_axis")? != xs {
        return Err(Error::shape(
            "put_along_axis",
            format!("indices/values of shape {upd:?} do not fit {:?} off axis {ax}", x.shape()),
        ));
    }
    // Off the axis, indices and values also broadcast against `a` (as NumPy and MLX do): an
    // index row of shape [1, k] writes into every row.
    let mut full = xs;
    full[ax] = upd[ax];
    let idx = broadcast_to(&idx, &full)?;
    let vals = broadcast_to(&vals, &full)?;
    let out_shape = x.shape().to_vec();
    let result = Array::from_op(out_shape, x.dtype(), Op::PutAlongAxis { axis: ax, mode }, vec![x, idx, vals]);
    if axis.is_none() {
        reshape_usize(&result, a.shape())
    } else {
        Ok(result)
    }
}

/// A copy of `a` with `values` written at `indices` along `axis`.
pub fn put_along_axis(a: &Array, indices: &Array, values: &Array, axis: Option<isize>) -> Result<Array> {
    scatter_along_axis(a, indices, values, axis, ScatterMode::Assign)
}

/// Shifts elements by `shift` along `axis` (the flattened array if `None`), wrapping around.
pub fn roll(a: &Array, shift: isize, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), "roll")?),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    let n = x.shape()[ax] as isize;
    if n == 0 {
        return Ok(a.clone());
    }
    let s = shift.rem_euclid(n);
    let r = if s == 0 {
        x
    } else {
        concatenate(&[slice_axis(&x, ax as isize, n - s, n)?, slice_axis(&x, ax as isize, 0, n - s)?], ax as isize)?
    };
    reshape_usize(&r, a.shape())
}

/// The diagonal at `offset` of the plane of `axis1` and `axis2`, as a new last axis (a view of
/// a row-major copy).
pub fn diagonal(a: &Array, offset: isize, axis1: isize, axis2: isize) -> Result<Array> {
    if a.ndim() < 2 {
        return Err(Error::shape("diagonal", format!("needs at least 2 dimensions, got {:?}", a.shape())));
    }
    let i = normalize_axis(axis1, a.ndim(), "diagonal")?;
    let j = normalize_axis(axis2, a.ndim(), "diagonal")?;
    if i == j {
        return Err(Error::invalid("diagonal", "axis1 and axis2 must differ"));
    }
    let st = row_major_strides(a.shape());
    let (ni, nj) = (a.shape()[i] as isize, a.shape()[j] as isize);
    let len = if offset >= 0 { (nj - offset).min(ni) } else { (ni + offset).min(nj) }.max(0) as usize;
    let start = if len == 0 {
        0
    } else if offset >= 0 {
        offset * st[j]
    } else {
        -offset * st[i]
    } as usize;
    let mut shape = Vec::new();
    let mut strides = Vec::new();
    for (k, &stride) in st.iter().enumerate() {
        if k != i && k != j {
            shape.push(a.shape()[k]);
            strides.push(stride);
        }
    }
    shape.push(len);
    strides.push(st[i] + st[j]);
    as_strided(&contiguous(a)?, &shape, &strides, start)
}

/// Sum of the diagonal at `offset` of the plane of `axis1` and `axis2`.
pub fn trace(a: &Array, offset: isize, axis1: isize, axis2: isize, dtype: Option<Dtype>) -> Result<Array> {
    let d = diagonal(a, offset, axis1, axis2)?;
    let d = match dtype {
        Some(t) => astype(&d, t)?,
        None => d,
    };
    sum(&d, Some(&[-1]), false)
}

/// Coordinate grids from 1-D arrays: `"xy"` (Cartesian, the default of NumPy) swaps the first
/// two output axes, `"ij"` (matrix) does not. `sparse` keeps them broadcastable instead of full.
pub fn meshgrid(arrays: &[Array], sparse: bool, indexing: &str) -> Result<Vec<Array>> {
    if indexing != "xy" && indexing != "ij" {
        return Err(Error::invalid("meshgrid", format!("indexing must be \"xy\" or \"ij\", got {indexing:?}")));
    }
    let n = arrays.len();
    let mut shapes = Vec::with_capacity(n);
    // Each output axis holds exactly one input (an empty one makes that axis 0).
    let mut full = vec![1usize; n];
    for (k, a) in arrays.iter().enumerate() {
        let mut s = vec![1usize; n];
        let mut pos = k;
        if indexing == "xy" && n >= 2 && k < 2 {
            pos = 1 - k;
        }
        s[pos] = a.size();
        full[pos] = a.size();
        shapes.push(s);
    }
    arrays
        .iter()
        .zip(&shapes)
        .map(|(a, s)| {
            let r = reshape_usize(a, s)?;
            if sparse {
                Ok(r)
            } else {
                broadcast_to(&r, &full)
            }
        })
        .collect()
}
