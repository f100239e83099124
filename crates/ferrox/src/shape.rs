//! Shape arithmetic: axes, broadcasting, and which reshapes can be views.

use crate::error::{Error, Result};

/// Resolves a possibly negative `axis` against `ndim` axes.
pub fn normalize_axis(axis: isize, ndim: usize, op: &'static str) -> Result<usize> {
    let n = ndim as isize;
    let a = if axis < 0 { axis + n } else { axis };
    if a < 0 || a >= n {
        return Err(Error::invalid(op, format!("axis {axis} is out of range for an array with {ndim} dimensions")));
    }
    Ok(a as usize)
}

/// Resolves a list of axes; `None` means all axes. Duplicates are an error.
pub fn normalize_axes(axes: Option<&[isize]>, ndim: usize, op: &'static str) -> Result<Vec<usize>> {
    let Some(axes) = axes else { return Ok((0..ndim).collect()) };
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = normalize_axis(a, ndim, op)?;
        if out.contains(&a) {
            return Err(Error::invalid(op, format!("axis {a} appears twice in {axes:?}")));
        }
        out.push(a);
    }
    out.sort_unstable();
    Ok(out)
}

/// The NumPy broadcast of several shapes.
pub fn broadcast_shapes(shapes: &[&[usize]], op: &'static str) -> Result<Vec<usize>> {
    let ndim = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; ndim];
    for s in shapes {
        let off = ndim - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                let list: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
                return Err(Error::shape(op, format!("shapes {} cannot be broadcast together", list.join(" and "))));
            }
        }
    }
    Ok(out)
}

/// Strides of `from_strides` broadcast to `to` (0 on new or stretched axes).
pub fn broadcast_strides(from_shape: &[usize], from_strides: &[isize], to: &[usize]) -> Vec<isize> {
    let off = to.len() - from_shape.len();
    let mut st = vec![0isize; to.len()];
    for i in 0..from_shape.len() {
        st[off + i] = if from_shape[i] == 1 && to[off + i] != 1 { 0 } else { from_strides[i] };
    }
    st
}

/// Strides that view data of `shape`/`strides` as `new_shape` without copying, if any exist
/// (NumPy's no-copy reshape: axes merge only where their strides chain).
pub fn reshape_strides(shape: &[usize], strides: &[isize], new_shape: &[usize]) -> Option<Vec<isize>> {
    let size: usize = shape.iter().product();
    if size == 0 {
        return Some(crate::array::row_major_strides(new_shape));
    }
    // Drop size-1 axes of the source: their strides never matter.
    let (old_shape, old_strides): (Vec<usize>, Vec<isize>) =
        shape.iter().zip(strides).filter(|(&n, _)| n != 1).map(|(&n, &s)| (n, s)).unzip();
    let mut new_strides = vec![0isize; new_shape.len()];
    let (mut oi, mut ni) = (0usize, 0usize);
    let (olen, nlen) = (old_shape.len(), new_shape.len());
    while ni < nlen && oi < olen {
        // Skip size-1 new axes (filled in below).
        if new_shape[ni] == 1 {
            ni += 1;
            continue;
        }
        let (mut np, mut op) = (new_shape[ni], old_shape[oi]);
        let (ni0, oi0) = (ni, oi);
        while np != op {
            if np < op {
                ni += 1;
                np *= new_shape[ni];
            } else {
                oi += 1;
                op *= old_shape[oi];
            }
        }
        // The old axes oi0..=oi must chain.
        for k in oi0..oi {
            if old_strides[k] != old_strides[k + 1] * old_shape[k + 1] as isize {
                return None;
            }
        }
        // Give the new axes ni0..=ni strides from the last old stride.
        new_strides[ni] = old_strides[oi];
        for k in (ni0..ni).rev() {
            new_strides[k] = new_strides[k + 1] * new_shape[k + 1] as isize;
        }
        ni += 1;
        oi += 1;
    }
    // Remaining size-1 axes: any stride works; use the row-major one.
    for k in (0..nlen).rev() {
        if new_shape[k] == 1 {
            new_strides[k] = if k + 1 < nlen { new_strides[k + 1] * new_shape[k + 1] as isize } else { 1 };
        }
    }
    Some(new_strides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_views() {
        // Contiguous: any reshape.
        assert_eq!(reshape_strides(&[2, 3, 4], &[12, 4, 1], &[6, 4]), Some(vec![4, 1]));
        // Transposed [3,2] of a [2,3]: merging is impossible, adding unit axes is fine.
        assert_eq!(reshape_strides(&[3, 2], &[1, 3], &[6]), None);
        assert_eq!(reshape_strides(&[3, 2], &[1, 3], &[3, 1, 2]), Some(vec![1, 6, 3]));
        // Sliced rows keep a chain inside each row.
        assert_eq!(reshape_strides(&[2, 4], &[8, 1], &[2, 2, 2]), Some(vec![8, 2, 1]));
        assert!(broadcast_shapes(&[&[2, 1], &[3]], "t").is_ok());
        assert!(broadcast_shapes(&[&[2, 2], &[3]], "t").is_err());
    }
}
