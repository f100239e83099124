//! Sorting along an axis: sort, argsort, partition, argpartition.

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::SortKind;

use super::iter::{alloc_out, row_offsets, MutPtr, Ptr, PAR_THRESHOLD};

/// Total order with NaN last, as NumPy sorts.
#[inline]
fn cmp_nan_last<A: Acc>(a: A, b: A) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Evaluates a sort-family op of `x` along `axis`.
#[allow(clippy::unnecessary_cast)] // the byte-pointer cast is a no-op only when T is u8
pub fn sort(kind: SortKind, x: &Array, axis: usize, shape: &[usize]) -> Result<Data> {
    let d = x.data()?;
    let n = x.shape()[axis];
    let mut lines_shape = x.shape().to_vec();
    lines_shape[axis] = 1;
    let n_lines: usize = lines_shape.iter().product();
    let ost = row_major_strides(shape);
    let strides = vec![d.strides.clone(), ost.clone()];
    let (is, os) = (d.strides[axis], ost[axis]);
    let want_indices = matches!(kind, SortKind::ArgSort | SortKind::ArgPartition(_));
    crate::dispatch_dtype!(x.dtype(), T => {
        let p = Ptr(d.ptr::<T>());
        let run = |out_ptr: *mut u8| {
            let o = MutPtr(out_ptr);
            let line = |l: usize| {
                let [bi, bo] = row_offsets::<2>(&lines_shape, &strides, l);
                // SAFETY: the line lies inside the input view.
                let mut items: Vec<(T, u32)> = (0..n).map(|i| (unsafe { p.at(bi + i as isize * is) }, i as u32)).collect();
                let cmp = |a: &(T, u32), b: &(T, u32)| cmp_nan_last(a.0.to_acc(), b.0.to_acc());
                match kind {
                    SortKind::Sort | SortKind::ArgSort => items.sort_by(cmp),
                    SortKind::Partition(k) | SortKind::ArgPartition(k) => {
                        if n > 0 {
                            items.select_nth_unstable_by(k.min(n - 1), cmp);
                        }
                    }
                }
                for (i, (v, idx)) in items.into_iter().enumerate() {
                    let off = bo + i as isize * os;
                    // SAFETY: each line writes its own elements of the output.
                    unsafe {
                        if want_indices {
                            *(o.get() as *mut u32).offset(off) = idx;
                        } else {
                            *(o.get() as *mut T).offset(off) = v;
                        }
                    }
                }
            };
            if x.size() < PAR_THRESHOLD {
                (0..n_lines).for_each(line);
            } else {
                (0..n_lines).into_par_iter().for_each(line);
            }
        };
        if want_indices {
            alloc_out::<u32>(shape, |out| {
                run(out.as_mut_ptr() as *mut u8);
                Ok(())
            })
        } else {
            alloc_out::<T>(shape, |out| {
                run(out.as_mut_ptr() as *mut u8);
                Ok(())
            })
        }
    })
}
