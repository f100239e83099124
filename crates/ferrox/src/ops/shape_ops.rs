//! Shape manipulation: reshape, transpose, broadcast, slice, concatenate, split, pad, ...

use crate::array::Array;
use crate::error::{Error, Result};
use crate::primitives::Op;
use crate::shape::{broadcast_shapes, normalize_axis};

use super::{full, IntoOperand};

/// Reshapes to `shape`; one entry may be −1 and is inferred. A view where the layout allows.
pub fn reshape(a: &Array, shape: &[isize]) -> Result<Array> {
    let size = a.size();
    let mut infer = None;
    let mut known = 1usize;
    for (i, &d) in shape.iter().enumerate() {
        if d == -1 {
            if infer.is_some() {
                return Err(Error::shape("reshape", format!("only one dimension can be -1 in {shape:?}")));
            }
            infer = Some(i);
        } else if d < 0 {
            return Err(Error::shape("reshape", format!("invalid dimension {d} in {shape:?}")));
        } else {
            known *= d as usize;
        }
    }
    let mut out: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || !size.is_multiple_of(known) {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape array of shape {:?} into {shape:?}", a.shape()),
            ));
        }
        out[i] = size / known;
    }
    reshape_usize(a, &out)
}

/// Reshapes to a fully specified `shape`.
pub fn reshape_usize(a: &Array, shape: &[usize]) -> Result<Array> {
    if shape.iter().product::<usize>() != a.size() {
        return Err(Error::shape("reshape", format!("cannot reshape array of shape {:?} into {shape:?}", a.shape())));
    }
    if shape == a.shape() {
        return Ok(a.clone());
    }
    Ok(Array::from_op(shape.to_vec(), a.dtype(), Op::Reshape, vec![a.clone()]))
}

/// Flattens axes `start..=end` into one.
pub fn flatten(a: &Array, start: isize, end: isize) -> Result<Array> {
    if a.ndim() == 0 {
        return reshape_usize(a, &[1]);
    }
    let s = normalize_axis(start, a.ndim(), "flatten")?;
    let e = normalize_axis(end, a.ndim(), "flatten")?;
    if s > e {
        return Err(Error::invalid("flatten", format!("start axis {start} is after end axis {end}")));
    }
    let mut shape = a.shape()[..s].to_vec();
    shape.push(a.shape()[s..=e].iter().product());
    shape.extend_from_slice(&a.shape()[e + 1..]);
    reshape_usize(a, &shape)
}

/// Splits `axis` into `shape` (one entry may be −1).
pub fn unflatten(a: &Array, axis: isize, shape: &[isize]) -> Result<Array> {
    let ax = normalize_axis(axis, a.ndim(), "unflatten")?;
    let mut new: Vec<isize> = a.shape()[..ax].iter().map(|&d| d as isize).collect();
    let n = a.shape()[ax];
    let known: isize = shape.iter().filter(|&&d| d != -1).product();
    for &d in shape {
        new.push(if d == -1 && known > 0 { n as isize / known } else { d });
    }
    new.extend(a.shape()[ax + 1..].iter().map(|&d| d as isize));
    let r = reshape(a, &new)?;
    if r.shape()[ax..ax + shape.len()].iter().product::<usize>() != n {
        return Err(Error::shape("unflatten", format!("cannot split axis of size {n} into {shape:?}")));
    }
    Ok(r)
}

/// Removes size-1 `axes` (all of them if `None`).
pub fn squeeze(a: &Array, axes: Option<&[isize]>) -> Result<Array> {
    let axes: Vec<usize> = match axes {
        None => (0..a.ndim()).filter(|&i| a.shape()[i] == 1).collect(),
        Some(ax) => {
            let v = crate::shape::normalize_axes(Some(ax), a.ndim(), "squeeze")?;
            if let Some(&bad) = v.iter().find(|&&i| a.shape()[i] != 1) {
                return Err(Error::shape(
                    "squeeze",
                    format!("cannot squeeze axis {bad} of size {} in shape {:?}", a.shape()[bad], a.shape()),
                ));
            }
            v
        }
    };
    let shape: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).map(|i| a.shape()[i]).collect();
    reshape_usize(a, &shape)
}

/// Inserts size-1 axes at `axes` (positions in the output).
pub fn expand_dims(a: &Array, axes: &[isize]) -> Result<Array> {
    let nd = a.ndim() + axes.len();
    let axes = crate::shape::normalize_axes(Some(axes), nd, "expand_dims")?;
    let mut shape = Vec::with_capacity(nd);
    let mut src = a.shape().iter();
    for i in 0..nd {
        shape.push(if axes.contains(&i) { 1 } else { *src.next().unwrap() });
    }
    reshape_usize(a, &shape)
}

/// Permutes the axes: output axis i is input axis `perm[i]`.
pub fn transpose(a: &Array, perm: &[usize]) -> Result<Array> {
    let mut seen = vec![false; a.ndim()];
    if perm.len() != a.ndim() || perm.iter().any(|&p| p >= a.ndim() || std::mem::replace(&mut seen[p], true)) {
        return Err(Error::invalid(
            "transpose",
            format!("{perm:?} is not a permutation of the axes of shape {:?}", a.shape()),
        ));
    }
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(a.clone());
    }
    let shape = perm.iter().map(|&p| a.shape()[p]).collect();
    Ok(Array::from_op(shape, a.dtype(), Op::Transpose(perm.to_vec()), vec![a.clone()]))
}

impl Array {
    /// All axes reversed (`.T` in NumPy and MLX).
    pub fn t(&self) -> Array {
        let perm: Vec<usize> = (0..self.ndim()).rev().collect();
        transpose(self, &perm).expect("reversing the axes is a permutation")
    }
}

/// Swaps two axes.
pub fn swapaxes(a: &Array, axis1: isize, axis2: isize) -> Result<Array> {
    let i = normalize_axis(axis1, a.ndim(), "swapaxes")?;
    let j = normalize_axis(axis2, a.ndim(), "swapaxes")?;
    let mut perm: Vec<usize> = (0..a.ndim()).collect();
    perm.swap(i, j);
    transpose(a, &perm)
}

/// Moves axis `source` to position `destination`.
pub fn moveaxis(a: &Array, source: isize, destination: isize) -> Result<Array> {
    let s = normalize_axis(source, a.ndim(), "moveaxis")?;
    let d = normalize_axis(destination, a.ndim(), "moveaxis")?;
    let mut perm: Vec<usize> = (0..a.ndim()).filter(|&i| i != s).collect();
    perm.insert(d, s);
    transpose(a, &perm)
}

/// Broadcasts to `shape` (a view).
pub fn broadcast_to(a: &Array, shape: &[usize]) -> Result<Array> {
    let out = broadcast_shapes(&[a.shape(), shape], "broadcast_to")?;
    if out != shape {
        return Err(Error::shape("broadcast_to", format!("cannot broadcast shape {:?} to {shape:?}", a.shape())));
    }
    if a.shape() == shape {
        return Ok(a.clone());
    }
    Ok(Array::from_op(shape.to_vec(), a.dtype(), Op::Broadcast, vec![a.clone()]))
}

/// Broadcasts arrays against each other.
pub fn broadcast_arrays(arrays: &[Array]) -> Result<Vec<Array>> {
    let shapes: Vec<&[usize]> = arrays.iter().map(|a| a.shape()).collect();
    let shape = broadcast_shapes(&shapes, "broadcast_arrays")?;
    arrays.iter().map(|a| broadcast_to(a, &shape)).collect()
}

/// A row-major copy, unless already row-major (then the array itself after evaluation).
pub fn contiguous(a: &Array) -> Result<Array> {
    Ok(Array::from_op(a.shape().to_vec(), a.dtype(), Op::Copy, vec![a.clone()]))
}

/// A strided view of `a`'s data: `shape`, `strides` and `offset` count elements. Every element
/// reachable must lie inside the data (checked at evaluation).
pub fn as_strided(a: &Array, shape: &[usize], strides: &[isize], offset: usize) -> Result<Array> {
    if shape.len() != strides.len() {
        return Err(Error::shape("as_strided", format!("shape {shape:?} and strides {strides:?} differ in length")));
    }
    let src = contiguous(a)?;
    Ok(Array::from_op(shape.to_vec(), a.dtype(), Op::AsStrided { strides: strides.to_vec(), offset }, vec![src]))
}

/// Resolves Python-style `start:stop:step` on an axis of size `n`: (first index, count).
fn resolve_slice(start: isize, stop: isize, step: isize, n: usize) -> Result<(usize, usize)> {
    if step == 0 {
        return Err(Error::invalid("slice", "slice step cannot be zero"));
    }
    let n = n as isize;
    let clamp = |v: isize, lo: isize, hi: isize| v.max(lo).min(hi);
    let norm = |v: isize| if v < 0 { v + n } else { v };
    let (s, e) = if step > 0 {
        (clamp(norm(start), 0, n), clamp(norm(stop), 0, n))
    } else {
        (clamp(norm(start), -1, n - 1), clamp(norm(stop), -1, n - 1))
    };
    let count = if step > 0 { (e - s + step - 1).max(0) / step } else { (s - e - step - 1).max(0) / -step };
    Ok((if count > 0 { s as usize } else { 0 }, count as usize))
}

/// `a[start:stop:step]` per axis, Python semantics (negative indices count from the end,
/// bounds clamp, `isize::MAX` / `isize::MIN` mean "to the end"). A view.
pub fn slice(a: &Array, start: &[isize], stop: &[isize], step: &[isize]) -> Result<Array> {
    let nd = a.ndim();
    if start.len() != nd || stop.len() != nd || step.len() != nd {
        return Err(Error::shape(
            "slice",
            format!("start, stop and step need one entry per axis of shape {:?}", a.shape()),
        ));
    }
    let mut first = Vec::with_capacity(nd);
    let mut shape = Vec::with_capacity(nd);
    for i in 0..nd {
        let (f, c) = resolve_slice(start[i], stop[i], step[i], a.shape()[i])?;
        first.push(f);
        shape.push(c);
    }
    if shape == a.shape() && step.iter().all(|&s| s == 1) {
        return Ok(a.clone());
    }
    Ok(Array::from_op(shape, a.dtype(), Op::Slice { start: first, step: step.to_vec() }, vec![a.clone()]))
}

/// Takes `start..stop` along one axis (a view).
pub fn slice_axis(a: &Array, axis: isize, start: isize, stop: isize) -> Result<Array> {
    let ax = normalize_axis(axis, a.ndim(), "slice")?;
    let mut s = vec![0isize; a.ndim()];
    let mut e: Vec<isize> = a.shape().iter().map(|&n| n as isize).collect();
    s[ax] = start;
    e[ax] = stop;
    slice(a, &s, &e, &vec![1; a.ndim()])
}

/// A copy of `a` with `update` (broadcast to the window) written at `a[start:stop:step]`.
pub fn slice_update(a: &Array, update: &Array, start: &[isize], stop: &[isize], step: &[isize]) -> Result<Array> {
    let window = slice(a, start, stop, step)?;
    let update = broadcast_to(&super::astype(update, a.dtype())?, window.shape()).map_err(|_| {
        Error::shape(
            "slice_update",
            format!("update of shape {:?} does not fit the window {:?}", update.shape(), window.shape()),
        )
    })?;
    let mut first = Vec::new();
    for i in 0..a.ndim() {
        first.push(resolve_slice(start[i], stop[i], step[i], a.shape()[i])?.0);
    }
    Ok(Array::from_op(
        a.shape().to_vec(),
        a.dtype(),
        Op::SliceUpdate { start: first, step: step.to_vec() },
        vec![a.clone(), update],
    ))
}

/// Joins arrays along `axis`; other axes must match (dtypes promote).
pub fn concatenate(arrays: &[Array], axis: isize) -> Result<Array> {
    if arrays.is_empty() {
        return Err(Error::invalid("concatenate", "needs at least one array"));
    }
    let nd = arrays[0].ndim();
    let ax = normalize_axis(axis, nd, "concatenate")?;
    let mut shape = arrays[0].shape().to_vec();
    shape[ax] = 0;
    for a in arrays {
        let ok = a.ndim() == nd && (0..nd).all(|i| i == ax || a.shape()[i] == shape[i]);
        if !ok {
            let shapes: Vec<_> = arrays.iter().map(|a| format!("{:?}", a.shape())).collect();
            return Err(Error::shape(
                "concatenate",
                format!("shapes {} do not match off axis {ax}", shapes.join(", ")),
            ));
        }
        shape[ax] += a.shape()[ax];
    }
    let dtype = arrays.iter().map(|a| a.dtype()).reduce(crate::promote_types).unwrap();
    let inputs = arrays.iter().map(|a| super::astype(a, dtype)).collect::<Result<Vec<_>>>()?;
    if inputs.len() == 1 {
        return Ok(inputs[0].clone());
    }
    Ok(Array::from_op(shape, dtype, Op::Concatenate(ax), inputs))
}

/// Stacks arrays of one shape along a new `axis`.
pub fn stack(arrays: &[Array], axis: isize) -> Result<Array> {
    let Some(first) = arrays.first() else {
        return Err(Error::invalid("stack", "needs at least one array"));
    };
    if let Some(bad) = arrays.iter().find(|a| a.shape() != first.shape()) {
        return Err(Error::shape(
            "stack",
            format!("all arrays need one shape; got {:?} and {:?}", first.shape(), bad.shape()),
        ));
    }
    let expanded = arrays.iter().map(|a| expand_dims(a, &[axis])).collect::<Result<Vec<_>>>()?;
    concatenate(&expanded, axis)
}

/// How [`split`] cuts an axis.
#[derive(Clone, Debug)]
pub enum SplitAt {
    /// Into this many equal parts.
    Sections(usize),
    /// At these indices.
    Indices(Vec<usize>),
}

/// Splits along `axis` into views.
pub fn split(a: &Array, at: SplitAt, axis: isize) -> Result<Vec<Array>> {
    let ax = normalize_axis(axis, a.ndim(), "split")?;
    let n = a.shape()[ax];
    let cuts = match at {
        SplitAt::Sections(k) => {
            if k == 0 || !n.is_multiple_of(k) {
                return Err(Error::shape("split", format!("axis of size {n} cannot be split into {k} equal parts")));
            }
            (1..k).map(|i| i * n / k).collect()
        }
        SplitAt::Indices(v) => v,
    };
    let mut bounds = vec![0usize];
    bounds.extend(cuts.iter().map(|&c| c.min(n)));
    bounds.push(n);
    bounds.windows(2).map(|w| slice_axis(a, ax as isize, w[0] as isize, w[1].max(w[0]) as isize)).collect()
}

/// Repeats each element `repeats` times along `axis` (of the flattened array if `None`).
pub fn repeat(a: &Array, repeats: usize, axis: Option<isize>) -> Result<Array> {
    let (x, ax) = match axis {
        Some(ax) => (a.clone(), normalize_axis(ax, a.ndim(), "repeat")?),
        None => (reshape_usize(a, &[a.size()])?, 0),
    };
    let mut bshape = x.shape().to_vec();
    bshape.insert(ax + 1, repeats);
    let e = broadcast_to(&expand_dims(&x, &[ax as isize + 1])?, &bshape)?;
    let mut out = x.shape().to_vec();
    out[ax] *= repeats;
    reshape_usize(&e, &out)
}

/// Tiles the array `reps` times per axis.
pub fn tile(a: &Array, reps: &[usize]) -> Result<Array> {
    let nd = a.ndim().max(reps.len());
    let mut shape = vec![1usize; nd - a.ndim()];
    shape.extend_from_slice(a.shape());
    let mut r = vec![1usize; nd - reps.len()];
    r.extend_from_slice(reps);
    let x = reshape_usize(a, &shape)?;
    // [r0, s0, r1, s1, ...] broadcast, then merged.
    let mut inter = Vec::new();
    let mut bshape = Vec::new();
    for i in 0..nd {
        inter.extend([1, shape[i]]);
        bshape.extend([r[i], shape[i]]);
    }
    let e = broadcast_to(&reshape_usize(&x, &inter)?, &bshape)?;
    let out: Vec<usize> = (0..nd).map(|i| r[i] * shape[i]).collect();
    reshape_usize(&e, &out)
}

/// How [`pad`] fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// The edge values repeated.
    Edge,
}

/// Pads each axis with `widths[i] = (before, after)` elements.
pub fn pad(a: &Array, widths: &[(usize, usize)], mode: PadMode, value: impl IntoOperand) -> Result<Array> {
    if widths.len() != a.ndim() {
        return Err(Error::shape(
            "pad",
            format!("need {} (before, after) pairs for shape {:?}, got {}", a.ndim(), a.shape(), widths.len()),
        ));
    }
    match mode {
        PadMode::Constant => {
            let shape: Vec<usize> = a.shape().iter().zip(widths).map(|(&n, &(lo, hi))| n + lo + hi).collect();
            let v = super::astype(&value.into_operand().into_array(), a.dtype())?;
            let base = full(&shape, &v, a.dtype())?;
            let start: Vec<isize> = widths.iter().map(|w| w.0 as isize).collect();
            let stop: Vec<isize> = a.shape().iter().zip(widths).map(|(&n, w)| (n + w.0) as isize).collect();
            slice_update(&base, a, &start, &stop, &vec![1; a.ndim()])
        }
        PadMode::Edge => {
            let mut x = a.clone();
            for (ax, &(lo, hi)) in widths.iter().enumerate() {
                if lo + hi == 0 {
                    continue;
                }
                let n = x.shape()[ax];
                if n == 0 {
                    return Err(Error::shape("pad", "edge padding needs a non-empty axis"));
                }
                let first = repeat(&slice_axis(&x, ax as isize, 0, 1)?, lo, Some(ax as isize))?;
                let last = repeat(&slice_axis(&x, ax as isize, n as isize - 1, n as isize)?, hi, Some(ax as isize))?;
                x = concatenate(&[first, x, last], ax as isize)?;
            }
            Ok(x)
        }
    }
}
