//! Copies, casts, views and the ops that only move data: broadcast, transpose, slice, reshape,
//! as_strided, bit casts, concatenate, slice_update, arange.

use rayon::prelude::*;

use half::{bf16, f16};

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::shape::{broadcast_strides, reshape_strides};

use super::iter::{alloc_out, collapse, map1, operand, row_offsets, MutPtr, Ptr, PAR_THRESHOLD};

/// Converts `x` to `dtype`, laid out row-major.
pub fn astype(x: &Array, dtype: Dtype) -> Result<Data> {
    let d = x.data()?;
    let shape = x.shape();
    // Between f32, f16 and bf16 go through f32, which holds every value of all three exactly,
    // so the result is rounded once as through f64, with the branch-free bf16 conversions.
    macro_rules! via_f32 {
        ($S:ty, $D:ty) => {{
            let (p, s) = operand::<$S>(&d, shape, shape);
            alloc_out::<$D>(shape, |out| {
                map1(
                    p,
                    s,
                    shape,
                    out,
                    #[inline(always)]
                    |v: $S, _| <$D as Element>::from_acc(v.to_acc()),
                );
                Ok(())
            })
        }};
    }
    match (x.dtype(), dtype) {
        (Dtype::F32, Dtype::Bf16) => via_f32!(f32, bf16),
        (Dtype::Bf16, Dtype::F32) => via_f32!(bf16, f32),
        (Dtype::F32, Dtype::F16) => via_f32!(f32, f16),
        (Dtype::F16, Dtype::F32) => via_f32!(f16, f32),
        (Dtype::F16, Dtype::Bf16) => via_f32!(f16, bf16),
        (Dtype::Bf16, Dtype::F16) => via_f32!(bf16, f16),
        _ => crate::dispatch_dtype!(x.dtype(), S => {
            crate::dispatch_dtype!(dtype, D => {
                let (p, s) = operand::<S>(&d, shape, shape);
                alloc_out::<D>(shape, |out| {
                    map1(p, s, shape, out, #[inline(always)] |v: S, _| v.cast::<D>());
                    Ok(())
                })
            })
        }),
    }
}

/// A row-major copy of `x`.
pub fn copy(x: &Array) -> Result<Data> {
    let d = x.data()?;
    if d.is_row_contiguous(x.shape()) && d.offset == 0 && d.buffer.nbytes() == x.nbytes() {
        return Ok(d);
    }
    let shape = x.shape();
    crate::dispatch_dtype!(x.dtype(), T => {
        let (p, s) = operand::<T>(&d, shape, shape);
        alloc_out::<T>(shape, |out| {
            map1(p, s, shape, out, #[inline(always)] |v: T, _| v);
            Ok(())
        })
    })
}

/// `x` viewed with new strides and offset over the same buffer.
fn view(d: &Data, offset: isize, strides: Vec<isize>) -> Data {
    Data { buffer: d.buffer.clone(), offset: offset as usize, strides }
}

/// Broadcast `x` to `shape` (a view).
pub fn broadcast(x: &Array, shape: &[usize]) -> Result<Data> {
    let d = x.data()?;
    let st = broadcast_strides(x.shape(), &d.strides, shape);
    Ok(view(&d, d.offset as isize, st))
}

/// Permute the axes of `x` (a view).
pub fn transpose(x: &Array, perm: &[usize]) -> Result<Data> {
    let d = x.data()?;
    let st = perm.iter().map(|&p| d.strides[p]).collect();
    Ok(view(&d, d.offset as isize, st))
}

/// The strided window `start + i * step` of `x` (a view).
pub fn slice(x: &Array, start: &[usize], step: &[isize], shape: &[usize]) -> Result<Data> {
    let d = x.data()?;
    let mut off = d.offset as isize;
    if shape.iter().all(|&n| n > 0) {
        for (&i, &st) in start.iter().zip(&d.strides) {
            off += i as isize * st;
        }
    }
    let st = d.strides.iter().zip(step).map(|(&s, &k)| s * k).collect();
    Ok(view(&d, off, st))
}

/// Reshape `x` to `shape`: a view if the strides allow, else a copy.
pub fn reshape(x: &Array, shape: &[usize]) -> Result<Data> {
    let d = x.data()?;
    match reshape_strides(x.shape(), &d.strides, shape) {
        Some(st) => Ok(view(&d, d.offset as isize, st)),
        None => {
            let c = copy(x)?;
            Ok(Data { strides: row_major_strides(shape), ..c })
        }
    }
}

/// An arbitrary strided view; every reachable element must lie inside the buffer.
pub fn as_strided(x: &Array, shape: &[usize], strides: &[isize], offset: usize, op_dtype: Dtype) -> Result<Data> {
    let d = x.data()?;
    let start = d.offset as isize + offset as isize;
    let elems = (d.buffer.nbytes() / op_dtype.size()) as isize;
    if shape.iter().all(|&n| n > 0) {
        let (mut lo, mut hi) = (start, start);
        for (&n, &s) in shape.iter().zip(strides) {
            let span = (n as isize - 1) * s;
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        if lo < 0 || hi >= elems {
            return Err(Error::invalid(
                "as_strided",
                format!("shape {shape:?} with strides {strides:?} and offset {offset} reaches outside the {elems} elements of the data"),
            ));
        }
    }
    Ok(view(&d, start, strides.to_vec()))
}

/// Reinterprets the bytes of `x` as `dtype`.
pub fn bitcast(x: &Array, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let d = x.data()?;
    let (si, so) = (x.dtype().size(), dtype.size());
    if si == so {
        return Ok(d);
    }
    let d = if d.is_row_contiguous(x.shape()) && (d.offset * si) % so == 0 { d } else { copy(x)? };
    Ok(Data { buffer: d.buffer.clone(), offset: d.offset * si / so, strides: row_major_strides(shape) })
}

/// Copies the strided `src` of `shape` into the strided destination `dst`.
///
/// # Safety
/// Both views must be valid for `shape`, and `dst` must not overlap `src` or itself.
pub unsafe fn strided_copy<T: Copy + Send + Sync>(
    src: Ptr<T>,
    src_strides: &[isize],
    dst: MutPtr<T>,
    dst_strides: &[isize],
    shape: &[usize],
) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let (cs, cst) = collapse(shape, &[src_strides.to_vec(), dst_strides.to_vec()]);
    let inner = *cs.last().unwrap();
    let outer = &cs[..cs.len() - 1];
    let (is, id) = (*cst[0].last().unwrap(), *cst[1].last().unwrap());
    let ost: Vec<Vec<isize>> = cst.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let rows = n / inner;
    let row = |r: usize| {
        let [os, od] = row_offsets::<2>(outer, &ost, r);
        if is == 1 && id == 1 {
            std::ptr::copy_nonoverlapping(src.get().offset(os), dst.get().offset(od), inner);
        } else {
            for j in 0..inner as isize {
                *dst.get().offset(od + j * id) = *src.get().offset(os + j * is);
            }
        }
    };
    if n < PAR_THRESHOLD {
        (0..rows).for_each(row);
    } else {
        (0..rows).into_par_iter().with_min_len((4096 / inner).max(1)).for_each(row);
    }
}

/// Joins `inputs` along `axis` into a row-major output.
pub fn concatenate(inputs: &[Array], axis: usize, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let datas: Vec<Data> = inputs.iter().map(|a| a.data()).collect::<Result<_>>()?;
    crate::dispatch_dtype!(dtype, T => {
        alloc_out::<T>(shape, |out| {
            let ost = row_major_strides(shape);
            let mut at = 0usize;
            for (a, d) in inputs.iter().zip(&datas) {
                let dst = MutPtr(unsafe { out.as_mut_ptr().offset(at as isize * ost[axis]) });
                // SAFETY: each input lands in its own slab of the output.
                unsafe { strided_copy(Ptr(d.ptr::<T>()), &d.strides, dst, &ost, a.shape()) };
                at += a.shape()[axis];
            }
            Ok(())
        })
    })
}

/// `x` with `update` written at the window `start + i * step`: into `x`'s own buffer when
/// nothing else can see it ([`donated`]), else into a copy.
pub fn slice_update(x: &Array, update: &Array, start: &[usize], step: &[isize]) -> Result<Data> {
    let shape = x.shape();
    let out = match donated(x) {
        Some(d) => d,
        None => {
            let dx = x.data()?;
            crate::dispatch_dtype!(x.dtype(), T => {
                alloc_out::<T>(shape, |out| {
                    // SAFETY: out is a fresh row-major buffer of x's shape.
                    unsafe { strided_copy(Ptr(dx.ptr::<T>()), &dx.strides, MutPtr(out.as_mut_ptr()), &row_major_strides(shape), shape) };
                    Ok(())
                })
            })?
        }
    };
    write_window(&out, update, start, step, shape, x.dtype())?;
    Ok(out)
}

/// The data of `x` if the node being computed may take it over and write into it: nothing
/// but that node's pending computation holds `x` ([`crate::eval::pending_refs`]), no view shares its
/// buffer, and the buffer is row-major host memory of its own. A KV cache written one token
/// at a time is this case: each update replaces the cache's buffer, so the old one is only
/// the update's input, and writing in place saves a copy of the whole cache per token.
fn donated(x: &Array) -> Option<Data> {
    if std::sync::Arc::strong_count(&x.0) != crate::eval::pending_refs() {
        return None;
    }
    let st = x.state();
    let crate::array::State::Ready(d) = &*st else { return None };
    let exclusive = std::sync::Arc::strong_count(&d.buffer) == 1 && d.buffer.is_owned_host_only();
    (exclusive && d.offset == 0 && d.is_row_contiguous(x.shape())).then(|| d.clone())
}

/// Writes `update` into the window `start`/`step` of the row-major `dst` of `shape`.
fn write_window(
    dst: &Data,
    update: &Array,
    start: &[usize],
    step: &[isize],
    shape: &[usize],
    dtype: Dtype,
) -> Result<()> {
    if update.size() == 0 {
        return Ok(());
    }
    let du = update.data()?;
    let ost = row_major_strides(shape);
    let off: isize = start.iter().zip(&ost).map(|(&s, &st)| s as isize * st).sum();
    let wst: Vec<isize> = ost.iter().zip(step).map(|(&s, &k)| s * k).collect();
    let window = window_shape(update.shape(), shape.len());
    let ust = broadcast_strides(update.shape(), &du.strides, &window);
    crate::dispatch_dtype!(dtype, T => {
        // SAFETY: `dst` is row-major for `shape` and no one else reads it (see `donated`); the
        // window lies inside it (checked by the op) and its elements are distinct.
        unsafe { strided_copy(Ptr(du.ptr::<T>()), &ust, MutPtr((dst.ptr::<T>() as *mut T).offset(off)), &wst, &window) };
        Ok(())
    })
}

fn window_shape(update_shape: &[usize], ndim: usize) -> Vec<usize> {
    let mut s = vec![1usize; ndim - update_shape.len()];
    s.extend_from_slice(update_shape);
    s
}

/// `start + i * step` for i in 0..n.
pub fn arange(start: f64, step: f64, shape: &[usize], dtype: Dtype) -> Result<Data> {
    crate::dispatch_dtype!(dtype, T => {
        alloc_out::<T>(shape, |out| {
            for (i, o) in out.iter_mut().enumerate() {
                *o = T::from_f64(start + i as f64 * step);
            }
            Ok(())
        })
    })
}
