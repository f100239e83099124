//! Reductions over axes, arg-reductions and scans.

use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::{ArgReduceOp, ReduceOp, ScanOp};

use super::iter::{alloc_out, collapse, row_offsets, MutPtr, Ptr, PAR_THRESHOLD};

/// Folds a contiguous slice with 8 independent accumulators (vectorizes; better rounding).
#[inline(always)]
fn fold_slice<T: Copy, A: Copy>(x: &[T], init: A, f: impl Fn(A, A) -> A, map: impl Fn(T) -> A) -> A {
    let mut lanes = [init; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = f(lanes[k], map(c[k]));
        }
    }
    let mut acc = init;
    for &v in chunks.remainder() {
        acc = f(acc, map(v));
    }
    let l4 = [f(lanes[0], lanes[4]), f(lanes[1], lanes[5]), f(lanes[2], lanes[6]), f(lanes[3], lanes[7])];
    f(acc, f(f(l4[0], l4[2]), f(l4[1], l4[3])))
}

/// The identity of `max` for `T`, as its compute type: −∞ for floats, the smallest value of
/// the element type for integers (not of the wider compute type, which would wrap to a
/// different number when narrowed back), `false` for bool.
///
/// Not `A::MIN` with `A` a concrete type: `f32::MIN` (an inherent constant, the most negative
/// finite value) would win over the trait's −∞.
fn lowest<T: Element>() -> T::Acc {
    if T::DTYPE == Dtype::Bool {
        <T::Acc as Acc>::MIN
    } else {
        T::from_f64(f64::NEG_INFINITY).to_acc()
    }
}

/// The identity of `min` for `T` (see [`lowest`]).
fn highest<T: Element>() -> T::Acc {
    if T::DTYPE == Dtype::Bool {
        <T::Acc as Acc>::MAX
    } else {
        T::from_f64(f64::INFINITY).to_acc()
    }
}

/// The plan of a reduction: kept axes (collapsed) and reduced axes (collapsed), with strides.
struct Plan {
    kept: Vec<usize>,
    kept_strides: Vec<isize>,
    red: Vec<usize>,
    red_strides: Vec<isize>,
}

fn plan(shape: &[usize], strides: &[isize], axes: &[usize]) -> Plan {
    let mut kept = Vec::new();
    let mut kst = Vec::new();
    let mut red = Vec::new();
    let mut rst = Vec::new();
    for i in 0..shape.len() {
        if axes.contains(&i) {
            red.push(shape[i]);
            rst.push(strides[i]);
        } else {
            kept.push(shape[i]);
            kst.push(strides[i]);
        }
    }
    let (kept, kst) = collapse(&kept, &[kst]);
    let (red, rst) = collapse(&red, &[rst]);
    Plan { kept, kept_strides: kst.into_iter().next().unwrap(), red, red_strides: rst.into_iter().next().unwrap() }
}

/// Generic reduction of `x` over `axes` into a row-major output of `out_shape`.
#[allow(clippy::too_many_arguments)]
fn reduce_generic<T: Element, A: Copy + Send + Sync, O: Element>(
    d: &Data,
    shape: &[usize],
    axes: &[usize],
    out_shape: &[usize],
    init: A,
    f: impl Fn(A, A) -> A + Sync + Send + Copy,
    map: impl Fn(T) -> A + Sync + Send + Copy,
    finish: impl Fn(A) -> O + Sync + Send + Copy,
) -> Result<Data> {
    let p = plan(shape, &d.strides, axes);
    let x = Ptr(d.ptr::<T>());
    let n_red: usize = p.red.iter().product();
    let n_in: usize = shape.iter().product();
    alloc_out::<O>(out_shape, |out| {
        if out.is_empty() {
            return Ok(());
        }
        if n_red == 0 {
            out.iter_mut().for_each(|o| *o = finish(init));
            return Ok(());
        }
        let red_inner = *p.red.last().unwrap();
        let red_inner_stride = *p.red_strides.last().unwrap();
        let red_outer = &p.red[..p.red.len() - 1];
        let red_outer_strides = vec![p.red_strides[..p.red.len() - 1].to_vec()];
        let kept_outer = &p.kept[..p.kept.len() - 1];
        let kept_strides = vec![p.kept_strides.clone()];
        // Reduce the elements that output `o` (a linear index over kept axes) gathers.
        let reduce_one = |o: usize| -> A {
            let [base] = row_offsets::<1>(&p.kept, &kept_strides, o);
            let mut acc = init;
            for r in 0..n_red / red_inner {
                let [ro] = row_offsets::<1>(red_outer, &red_outer_strides, r);
                let start = base + ro;
                // SAFETY: offsets lie inside the input view.
                let part = unsafe {
                    if red_inner_stride == 1 {
                        fold_slice(std::slice::from_raw_parts(x.get().offset(start), red_inner), init, f, map)
                    } else {
                        let mut a = init;
                        for j in 0..red_inner as isize {
                            a = f(a, map(x.at(start + j * red_inner_stride)));
                        }
                        a
                    }
                };
                acc = f(acc, part);
            }
            acc
        };
        let n_out = out.len();
        let kept_inner_stride = *p.kept_strides.last().unwrap();
        if n_out == 1 && red_inner_stride == 1 && p.red.len() == 1 && n_red >= PAR_THRESHOLD {
            // One long contiguous reduction: split it across threads.
            // SAFETY: the reduced axis is contiguous with n_red elements.
            let xs = unsafe { std::slice::from_raw_parts(x.get(), n_red) };
            let acc = xs.par_chunks(1 << 16).map(|c| fold_slice(c, init, f, map)).reduce(|| init, f);
            out[0] = finish(acc);
        } else if red_inner_stride != 1 && kept_inner_stride == 1 && p.kept.last().copied().unwrap_or(1) >= 8 {
            // Column reduction: accumulate whole contiguous rows of kept elements.
            let kin = *p.kept.last().unwrap();
            let red_all = vec![p.red_strides.clone()];
            let kept_outer_strides = vec![p.kept_strides[..p.kept.len() - 1].to_vec()];
            let do_block = |(blk, chunk): (usize, &mut [O])| {
                let [kb] = row_offsets::<1>(kept_outer, &kept_outer_strides, blk);
                let mut accs = vec![init; kin];
                for r in 0..n_red {
                    let [ro] = row_offsets::<1>(&p.red, &red_all, r);
                    // SAFETY: a kept row of kin contiguous elements.
                    let row = unsafe { std::slice::from_raw_parts(x.get().offset(kb + ro), kin) };
                    for (a, &v) in accs.iter_mut().zip(row) {
                        *a = f(*a, map(v));
                    }
                }
                for (o, a) in chunk.iter_mut().zip(accs) {
                    *o = finish(a);
                }
            };
            if n_in < PAR_THRESHOLD {
                out.chunks_mut(kin).enumerate().for_each(do_block);
            } else {
                out.par_chunks_mut(kin).enumerate().for_each(do_block);
            }
        } else if n_in < PAR_THRESHOLD {
            for (o, v) in out.iter_mut().enumerate() {
                *v = finish(reduce_one(o));
            }
        } else {
            let min_len = (PAR_THRESHOLD / n_red).max(1);
            out.par_iter_mut().enumerate().with_min_len(min_len).for_each(|(o, v)| *v = finish(reduce_one(o)));
        }
        Ok(())
    })
}

/// Evaluates a reduction of `x` over `axes` (kept as size 1 in `out_shape`).
pub fn reduce(op: ReduceOp, x: &Array, axes: &[usize], out_shape: &[usize], dtype: Dtype) -> Result<Data> {
    let d = x.data()?;
    let shape = x.shape();
    match op {
        ReduceOp::All | ReduceOp::Any => crate::dispatch_dtype!(x.dtype(), T => {
            let is_all = op == ReduceOp::All;
            reduce_generic::<T, bool, bool>(
                &d, shape, axes, out_shape, is_all,
                move |a, b| if is_all { a & b } else { a | b },
                |v: T| v.to_acc() != <T as Element>::Acc::ZERO,
                |a| a,
            )
        }),
        _ => crate::dispatch_dtype!(dtype, T => {
            type A = <T as Element>::Acc;
            match op {
                ReduceOp::Sum => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, A::ZERO, |a, b| Acc::add(a, b), |v: T| v.to_acc(), T::from_acc),
                ReduceOp::Prod => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, A::ONE, |a, b| Acc::mul(a, b), |v: T| v.to_acc(), T::from_acc),
                ReduceOp::Max => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, lowest::<T>(), |a, b| Acc::max(a, b), |v: T| v.to_acc(), T::from_acc),
                _ => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, highest::<T>(), |a, b| Acc::min(a, b), |v: T| v.to_acc(), T::from_acc),
            }
        }),
    }
}

/// Index of the max or min along `axis` (first on ties; NaN wins), as uint32.
pub fn arg_reduce(op: ArgReduceOp, x: &Array, axis: usize, out_shape: &[usize]) -> Result<Data> {
    let d = x.data()?;
    let shape = x.shape();
    let n = shape[axis];
    let stride = d.strides[axis];
    let mut outer_shape = shape.to_vec();
    outer_shape[axis] = 1;
    let outer_strides = vec![d.strides.clone()];
    crate::dispatch_dtype!(x.dtype(), T => {
        let p = Ptr(d.ptr::<T>());
        alloc_out::<u32>(out_shape, |out| {
            let line = |o: usize| -> u32 {
                let [base] = row_offsets::<1>(&outer_shape, &outer_strides, o);
                let mut best = 0usize;
                // SAFETY: indices along the axis stay inside the view.
                let mut bv = unsafe { p.at(base) }.to_acc();
                for i in 1..n {
                    let v = unsafe { p.at(base + i as isize * stride) }.to_acc();
                    if bv.is_nan() {
                        break;
                    }
                    let better = v.is_nan() || match op {
                        ArgReduceOp::ArgMax => v > bv,
                        ArgReduceOp::ArgMin => v < bv,
                    };
                    if better {
                        best = i;
                        bv = v;
                    }
                }
                best as u32
            };
            if n == 0 {
                return Err(crate::Error::invalid("argmax", "cannot take the arg-reduction of an empty axis"));
            }
            if x.size() < PAR_THRESHOLD {
                out.iter_mut().enumerate().for_each(|(o, v)| *v = line(o));
            } else {
                out.par_iter_mut().enumerate().for_each(|(o, v)| *v = line(o));
            }
            Ok(())
        })
    })
}

/// Cumulative reduction along `axis`.
pub fn scan(op: ScanOp, x: &Array, axis: usize, reverse: bool, inclusive: bool) -> Result<Data> {
    let d = x.data()?;
    let shape = x.shape();
    let n = shape[axis];
    let in_stride = d.strides[axis];
    let ost = row_major_strides(shape);
    let out_stride = ost[axis];
    let mut lines_shape = shape.to_vec();
    lines_shape[axis] = 1;
    let strides = vec![d.strides.clone(), ost.clone()];
    let n_lines: usize = lines_shape.iter().product();
    crate::dispatch_dtype!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        let (init, f): (A, fn(A, A) -> A) = match op {
            ScanOp::Sum => (A::ZERO, |a, b| Acc::add(a, b)),
            ScanOp::Prod => (A::ONE, |a, b| Acc::mul(a, b)),
            ScanOp::Max => (lowest::<T>(), |a, b| Acc::max(a, b)),
            ScanOp::Min => (highest::<T>(), |a, b| Acc::min(a, b)),
        };
        let p = Ptr(d.ptr::<T>());
        alloc_out::<T>(shape, |out| {
            let o = MutPtr(out.as_mut_ptr());
            let line = |l: usize| {
                let [bi, bo] = row_offsets::<2>(&lines_shape, &strides, l);
                let mut acc = init;
                for k in 0..n {
                    let i = if reverse { n - 1 - k } else { k } as isize;
                    // SAFETY: within the line of the input view and of the output.
                    unsafe {
                        let v = p.at(bi + i * in_stride).to_acc();
                        if inclusive {
                            acc = f(acc, v);
                            *o.get().offset(bo + i * out_stride) = T::from_acc(acc);
                        } else {
                            *o.get().offset(bo + i * out_stride) = T::from_acc(acc);
                            acc = f(acc, v);
                        }
                    }
                }
            };
            if x.size() < PAR_THRESHOLD {
                (0..n_lines).for_each(line);
            } else {
                (0..n_lines).into_par_iter().for_each(line);
            }
            Ok(())
        })
    })
}
