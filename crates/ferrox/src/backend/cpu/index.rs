//! Indexing kernels: gather, scatter, take_along_axis, put_along_axis.
//!
//! Index arrays are first read into row-major `i64` (any integer dtype, negative indices
//! counting from the end, out-of-range indices an error). Gathers move elements by size only;
//! scatters that combine (add, prod, max, min) compute in the element type.

use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::{Error, Result};
use crate::primitives::ScatterMode;
use crate::shape::broadcast_strides;

use super::iter::{alloc_out, host_values, map_rows, row_offsets, MutPtr, Ptr, PAR_THRESHOLD};

/// Reads an index array as row-major i64, broadcast to `shape`, each checked against `n` and
/// wrapped if negative.
fn read_indices(idx: &Array, shape: &[usize], n: usize, op: &'static str) -> Result<Vec<i64>> {
    let v = host_values::<i64>(idx, shape)?;
    let n = n as i64;
    v.into_iter()
        .map(|i| {
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                Err(Error::invalid(op, format!("index {i} is out of bounds for an axis of size {n}")))
            } else {
                Ok(j)
            }
        })
        .collect()
}

/// Runs `$body` with `$T` an unsigned type of the dtype's size (for moving elements).
macro_rules! by_size {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype.size() {
            1 => {
                type $T = u8;
                $body
            }
            2 => {
                type $T = u16;
                $body
            }
            4 => {
                type $T = u32;
                $body
            }
            _ => {
                type $T = u64;
                $body
            }
        }
    };
}

/// `Gather`: output = index shape + `slice_sizes`; slice starts from the indices on `axes`.
pub fn gather(inputs: &[Array], axes: &[usize], slice_sizes: &[usize], shape: &[usize], dtype: Dtype) -> Result<Data> {
    let a = &inputs[0];
    let d = a.data()?;
    let idx_shape = &shape[..shape.len() - slice_sizes.len()];
    let n_idx: usize = idx_shape.iter().product();
    let idxs: Vec<Vec<i64>> = inputs[1..]
        .iter()
        .zip(axes)
        .map(|(ix, &ax)| read_indices(ix, idx_shape, a.shape()[ax], "gather"))
        .collect::<Result<_>>()?;
    let slice_n: usize = slice_sizes.iter().product();
    let sst = vec![d.strides.clone()];
    by_size!(dtype, T => {
        let p = Ptr(d.ptr::<T>());
        alloc_out::<T>(shape, |out| {
            if slice_n == 0 {
                return Ok(());
            }
            let body = |(pos, chunk): (usize, &mut [T])| {
                let mut base = 0isize;
                for (ix, &ax) in idxs.iter().zip(axes) {
                    base += ix[pos] as isize * d.strides[ax];
                }
                for (j, o) in chunk.iter_mut().enumerate() {
                    let [off] = row_offsets::<1>(slice_sizes, &sst, j);
                    // SAFETY: indices were bounds-checked; the slice lies inside a.
                    *o = unsafe { p.at(base + off) };
                }
            };
            if n_idx * slice_n < PAR_THRESHOLD {
                out.chunks_mut(slice_n).enumerate().for_each(body);
            } else {
                out.par_chunks_mut(slice_n).enumerate().for_each(body);
            }
            Ok(())
        })
    })
}

#[inline]
fn combine<A: Acc>(mode: ScatterMode, old: A, new: A) -> A {
    match mode {
        ScatterMode::Assign => new,
        ScatterMode::Add => Acc::add(old, new),
        ScatterMode::Prod => Acc::mul(old, new),
        ScatterMode::Max => Acc::max(old, new),
        ScatterMode::Min => Acc::min(old, new),
    }
}

/// `Scatter`: a copy of input 0 with the updates (input 1, index shape + slice shape)
/// combined in at the indices (inputs 2..) on `axes`. Runs in order, so with repeated
/// indices the last assignment wins and every addition counts.
pub fn scatter(inputs: &[Array], axes: &[usize], mode: ScatterMode, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (a, upd) = (&inputs[0], &inputs[1]);
    let (da, du) = (a.data()?, upd.data()?);
    let nd = a.ndim();
    let idx_shape = &upd.shape()[..upd.ndim() - nd];
    let slice_shape = &upd.shape()[upd.ndim() - nd..];
    let n_idx: usize = idx_shape.iter().product();
    let slice_n: usize = slice_shape.iter().product();
    let idxs: Vec<Vec<i64>> = inputs[2..]
        .iter()
        .zip(axes)
        .map(|(ix, &ax)| read_indices(ix, idx_shape, a.shape()[ax], "scatter"))
        .collect::<Result<_>>()?;
    let ost = row_major_strides(shape);
    let ust = vec![du.strides[du.strides.len() - nd..].to_vec(), ost.clone()];
    let ust_idx = du.strides[..du.strides.len() - nd].to_vec();
    crate::dispatch_dtype!(dtype, T => {
        let pu = Ptr(du.ptr::<T>());
        alloc_out::<T>(shape, |out| {
            let po = MutPtr(out.as_mut_ptr());
            // SAFETY: out is a fresh row-major buffer of a's shape.
            unsafe { super::copy::strided_copy(Ptr(da.ptr::<T>()), &da.strides, po, &ost, shape) };
            for pos in 0..n_idx {
                let mut base = 0isize;
                for (ix, &ax) in idxs.iter().zip(axes) {
                    base += ix[pos] as isize * ost[ax];
                }
                let [ubase] = row_offsets::<1>(idx_shape, std::slice::from_ref(&ust_idx), pos);
                for j in 0..slice_n {
                    let [uo, oo] = row_offsets::<2>(slice_shape, &ust, j);
                    // SAFETY: indices were bounds-checked and the slice fits (checked by the op).
                    unsafe {
                        let dst = po.get().offset(base + oo);
                        let v = pu.at(ubase + uo);
                        *dst = T::from_acc(combine(mode, (*dst).to_acc(), v.to_acc()));
                    }
                }
            }
            Ok(())
        })
    })
}

/// `take_along_axis`: out[pos] = a[pos with axis replaced by idx[pos]].
pub fn take_along_axis(a: &Array, idx: &Array, axis: usize, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let d = a.data()?;
    let ind = read_indices(idx, shape, a.shape()[axis], "take_along_axis")?;
    let mut sa = broadcast_strides(a.shape(), &d.strides, shape);
    let step = d.strides[axis];
    sa[axis] = 0;
    let contiguous = row_major_strides(shape);
    by_size!(dtype, T => {
        let p = Ptr(d.ptr::<T>());
        let pi = Ptr(ind.as_ptr());
        alloc_out::<T>(shape, |out| {
            map_rows::<2, T>(shape, &[sa, contiguous], out, |[oa, oi], [ia, ii], chunk| {
                for (j, o) in chunk.iter_mut().enumerate() {
                    let j = j as isize;
                    // SAFETY: indices were bounds-checked.
                    unsafe { *o = p.at(oa + j * ia + pi.at(oi + j * ii) as isize * step) };
                }
            });
            Ok(())
        })
    })
}

/// `put_along_axis`: a copy of `a` with `values` combined in at positions whose `axis`
/// coordinate comes from `idx` (all broadcast together), in order.
pub fn put_along_axis(inputs: &[Array], axis: usize, mode: ScatterMode, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (a, idx, vals) = (&inputs[0], &inputs[1], &inputs[2]);
    let (da, dv) = (a.data()?, vals.data()?);
    let upd_shape = crate::shape::broadcast_shapes(&[idx.shape(), vals.shape()], "put_along_axis")?;
    let ind = read_indices(idx, &upd_shape, a.shape()[axis], "put_along_axis")?;
    let ost = row_major_strides(shape);
    let mut dst_st = ost.clone();
    dst_st[axis] = 0;
    let sv = broadcast_strides(vals.shape(), &dv.strides, &upd_shape);
    let strides = vec![sv, dst_st];
    let n: usize = upd_shape.iter().product();
    crate::dispatch_dtype!(dtype, T => {
        let pv = Ptr(dv.ptr::<T>());
        alloc_out::<T>(shape, |out| {
            let po = MutPtr(out.as_mut_ptr());
            // SAFETY: out is a fresh row-major buffer of a's shape.
            unsafe { super::copy::strided_copy(Ptr(da.ptr::<T>()), &da.strides, po, &ost, shape) };
            for (pos, &i) in ind.iter().enumerate().take(n) {
                let [vo, oo] = row_offsets::<2>(&upd_shape, &strides, pos);
                // SAFETY: indices were bounds-checked; upd_shape fits a off the axis (op check).
                unsafe {
                    let dst = po.get().offset(oo + i as isize * ost[axis]);
                    *dst = T::from_acc(combine(mode, (*dst).to_acc(), pv.at(vo).to_acc()));
                }
            }
            Ok(())
        })
    })
}
