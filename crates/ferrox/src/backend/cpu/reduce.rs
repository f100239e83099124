//! Reductions over axes, arg-reductions and scans.

use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::{ArgReduceOp, ReduceOp, ScanOp};

use super::iter::{alloc_out, collapse, fold_slice, row_offsets, MutPtr, Ptr, LANES, PAR_CHUNK, PAR_THRESHOLD};
use super::simd::{dispatch, inline_always};

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
        let reduce_one = inline_always(
            #[inline(always)]
            |o: usize| -> A {
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
            },
        );
        let n_out = out.len();
        let kept_inner_stride = *p.kept_strides.last().unwrap();
        if n_out == 1 && red_inner_stride == 1 && p.red.len() == 1 && n_red >= PAR_THRESHOLD {
            // One long contiguous reduction: split it across threads.
            // SAFETY: the reduced axis is contiguous with n_red elements.
            let xs = unsafe { std::slice::from_raw_parts(x.get(), n_red) };
            let acc = xs
                .par_chunks(1 << 16)
                .map(|c| {
                    dispatch(
                        #[inline(always)]
                        |_| fold_slice(c, init, f, map),
                    )
                })
                .reduce(|| init, f);
            out[0] = finish(acc);
        } else if red_inner_stride != 1 && kept_inner_stride == 1 && p.kept.last().copied().unwrap_or(1) >= 8 {
            // Column reduction: accumulate whole contiguous rows of kept elements.
            let kin = *p.kept.last().unwrap();
            let n_blocks = n_out / kin;
            let red_all = vec![p.red_strides.clone()];
            let kept_outer_strides = vec![p.kept_strides[..p.kept.len() - 1].to_vec()];
            // Accumulates reduction rows [r0, r1) of block `blk` into `accs`.
            let accumulate = |blk: usize, r0: usize, r1: usize, accs: &mut [A]| {
                let [kb] = row_offsets::<1>(kept_outer, &kept_outer_strides, blk);
                dispatch(
                    #[inline(always)]
                    |_| {
                        for r in r0..r1 {
                            let [ro] = row_offsets::<1>(&p.red, &red_all, r);
                            // SAFETY: a kept row of kin contiguous elements.
                            let row = unsafe { std::slice::from_raw_parts(x.get().offset(kb + ro), kin) };
                            for (a, &v) in accs.iter_mut().zip(row) {
                                *a = f(*a, map(v));
                            }
                        }
                    },
                );
            };
            // With fewer blocks than threads, split the reduced rows too: each part streams its
            // own contiguous stretch of rows, and the parts' accumulators are combined after.
            let threads = rayon::current_num_threads();
            let parts =
                if n_in < PAR_THRESHOLD || n_blocks >= threads { 1 } else { (2 * threads).min(n_red / 64).max(1) };
            if parts == 1 {
                let do_block = |(blk, chunk): (usize, &mut [O])| {
                    let mut accs = vec![init; kin];
                    accumulate(blk, 0, n_red, &mut accs);
                    for (o, a) in chunk.iter_mut().zip(accs) {
                        *o = finish(a);
                    }
                };
                if n_in < PAR_THRESHOLD {
                    out.chunks_mut(kin).enumerate().for_each(do_block);
                } else {
                    out.par_chunks_mut(kin).enumerate().for_each(do_block);
                }
            } else {
                for (blk, chunk) in out.chunks_mut(kin).enumerate() {
                    let partials: Vec<Vec<A>> = (0..parts)
                        .into_par_iter()
                        .map(|part| {
                            let mut accs = vec![init; kin];
                            accumulate(blk, part * n_red / parts, (part + 1) * n_red / parts, &mut accs);
                            accs
                        })
                        .collect();
                    for (j, o) in chunk.iter_mut().enumerate() {
                        *o = finish(partials.iter().fold(init, |acc, part| f(acc, part[j])));
                    }
                }
            }
        } else if n_in < PAR_THRESHOLD {
            dispatch(
                #[inline(always)]
                |_| {
                    for (o, v) in out.iter_mut().enumerate() {
                        *v = finish(reduce_one(o));
                    }
                },
            );
        } else {
            let per_task = (PAR_CHUNK / n_red).max(1);
            out.par_chunks_mut(per_task).enumerate().for_each(|(t, chunk)| {
                dispatch(
                    #[inline(always)]
                    |_| {
                        for (j, v) in chunk.iter_mut().enumerate() {
                            *v = finish(reduce_one(t * per_task + j));
                        }
                    },
                )
            });
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
                #[inline(always)] |v: T| v.to_acc() != <T as Element>::Acc::ZERO,
                |a| a,
            )
        }),
        _ => crate::dispatch_dtype!(dtype, T => {
            type A = <T as Element>::Acc;
            match op {
                ReduceOp::Sum => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, A::ZERO, Acc::add, #[inline(always)] |v: T| v.to_acc(), T::from_acc),
                ReduceOp::Prod => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, A::ONE, Acc::mul, #[inline(always)] |v: T| v.to_acc(), T::from_acc),
                ReduceOp::Max => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, lowest::<T>(), Acc::max, #[inline(always)] |v: T| v.to_acc(), T::from_acc),
                _ => reduce_generic::<T, A, T>(&d, shape, axes, out_shape, highest::<T>(), Acc::min, #[inline(always)] |v: T| v.to_acc(), T::from_acc),
            }
        }),
    }
}

/// The most extreme value of `x` by `better` (strictly better replaces), starting from `init`
/// and ignoring NaNs, and whether `x` holds a NaN. Vectorizes: [`LANES`] independent lanes of
/// selects.
#[inline(always)]
fn block_extreme<T: Element>(x: &[T], init: T::Acc, better: impl Fn(T::Acc, T::Acc) -> bool) -> (T::Acc, bool) {
    let mut lanes = [init; LANES];
    let mut nans = [false; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            let v = c[k].to_acc();
            nans[k] |= v.is_nan();
            lanes[k] = if better(v, lanes[k]) { v } else { lanes[k] };
        }
    }
    // As in fold_slice: a barrier between the vector loop and the scalar combination.
    let (lanes, nans) = std::hint::black_box((lanes, nans));
    let mut best = init;
    let mut nan = false;
    for v in chunks.remainder().iter().map(|v| v.to_acc()).chain(lanes) {
        nan |= v.is_nan();
        best = if better(v, best) { v } else { best };
    }
    (best, nan || nans.iter().any(|&n| n))
}

/// A candidate of an arg-reduction: index, value, and whether the value is a NaN (which wins).
#[derive(Clone, Copy)]
struct Extreme<A> {
    index: usize,
    value: A,
    nan: bool,
}

/// The position of the first element of `x` for which `pred` holds (which must exist): tests
/// [`LANES`] elements at a time without early exit (so the test vectorizes), then finds the
/// element inside the first chunk that has one.
#[inline(always)]
fn first_match<T: Copy>(x: &[T], pred: impl Fn(T) -> bool) -> usize {
    for (ci, c) in x.chunks(LANES).enumerate() {
        if c.iter().fold(false, |any, &v| any | pred(v)) {
            return ci * LANES + c.iter().position(|&v| pred(v)).unwrap();
        }
    }
    unreachable!("first_match: no element matches")
}

/// The first most extreme element of the non-empty contiguous `x` by `better`, NaN winning
/// (the first NaN). Scans blocks of 1024 with [`block_extreme`] and looks for the position only
/// in a block that improves on the best so far.
#[inline(always)]
fn slice_extreme<T: Element>(x: &[T], better: impl Fn(T::Acc, T::Acc) -> bool + Copy) -> Extreme<T::Acc> {
    const BLOCK: usize = 1024;
    let mut best = Extreme { index: 0, value: x[0].to_acc(), nan: false };
    for (b, blk) in x.chunks(BLOCK).enumerate() {
        let (m, nan) = block_extreme::<T>(blk, best.value, better);
        if nan {
            let i = first_match(blk, |v: T| v.to_acc().is_nan());
            return Extreme { index: b * BLOCK + i, value: blk[i].to_acc(), nan: true };
        }
        if better(m, best.value) {
            let i = first_match(blk, |v: T| v.to_acc() == m);
            best = Extreme { index: b * BLOCK + i, value: m, nan: false };
        }
    }
    best
}

/// Index of the max or min along `axis` (first on ties; NaN wins), as uint32.
pub fn arg_reduce(op: ArgReduceOp, x: &Array, axis: usize, out_shape: &[usize]) -> Result<Data> {
    crate::dispatch_dtype!(x.dtype(), T => {
        type A = <T as Element>::Acc;
        // Through PartialOrd's methods: `A` may be bool, where clippy flags `<` and `>`.
        match op {
            ArgReduceOp::ArgMax => arg_reduce_by::<T>(x, axis, out_shape, #[inline(always)] |a: A, b: A| a.gt(&b)),
            ArgReduceOp::ArgMin => arg_reduce_by::<T>(x, axis, out_shape, #[inline(always)] |a: A, b: A| a.lt(&b)),
        }
    })
}

/// [`arg_reduce`] with `better(a, b)` true when `a` should replace `b` (`>` for argmax).
fn arg_reduce_by<T: Element>(
    x: &Array,
    axis: usize,
    out_shape: &[usize],
    better: impl Fn(T::Acc, T::Acc) -> bool + Copy + Send + Sync,
) -> Result<Data> {
    let d = x.data()?;
    let shape = x.shape();
    let n = shape[axis];
    let stride = d.strides[axis];
    let mut outer_shape = shape.to_vec();
    outer_shape[axis] = 1;
    let outer_strides = vec![d.strides.clone()];
    if n == 0 {
        return Err(crate::Error::invalid("argmax", "cannot take the arg-reduction of an empty axis"));
    }
    let p = Ptr(d.ptr::<T>());
    alloc_out::<u32>(out_shape, |out| {
        let base = |o: usize| row_offsets::<1>(&outer_shape, &outer_strides, o)[0];
        if stride == 1 {
            // SAFETY: the line at `base` has n contiguous elements.
            let line = |o: usize| unsafe { std::slice::from_raw_parts(p.get().offset(base(o)), n) };
            let threads = rayon::current_num_threads();
            if x.size() >= PAR_THRESHOLD && out.len() < threads {
                // Few long lines: split each across threads, then pick the first best part.
                const PART: usize = 1 << 16;
                for (o, v) in out.iter_mut().enumerate() {
                    let line = line(o);
                    let parts: Vec<Extreme<T::Acc>> = line
                        .par_chunks(PART)
                        .enumerate()
                        .map(|(i, c)| {
                            let e = dispatch(
                                #[inline(always)]
                                |_| slice_extreme::<T>(c, better),
                            );
                            Extreme { index: i * PART + e.index, ..e }
                        })
                        .collect();
                    let mut best = parts[0];
                    for e in &parts {
                        if best.nan {
                            break;
                        }
                        if e.nan || better(e.value, best.value) {
                            best = *e;
                        }
                    }
                    *v = best.index as u32;
                }
            } else {
                let fill = |(t, chunk): (usize, &mut [u32]), per_task: usize| {
                    dispatch(
                        #[inline(always)]
                        |_| {
                            for (j, v) in chunk.iter_mut().enumerate() {
                                *v = slice_extreme::<T>(line(t * per_task + j), better).index as u32;
                            }
                        },
                    )
                };
                if x.size() < PAR_THRESHOLD {
                    fill((0, out), 0);
                } else {
                    let per_task = (PAR_CHUNK / n).max(1);
                    out.par_chunks_mut(per_task).enumerate().for_each(|c| fill(c, per_task));
                }
            }
            return Ok(());
        }
        let line = |o: usize| -> u32 {
            let base = base(o);
            let mut best = 0usize;
            // SAFETY: indices along the axis stay inside the view.
            let mut bv = unsafe { p.at(base) }.to_acc();
            for i in 1..n {
                if bv.is_nan() {
                    break;
                }
                let v = unsafe { p.at(base + i as isize * stride) }.to_acc();
                if v.is_nan() || better(v, bv) {
                    best = i;
                    bv = v;
                }
            }
            best as u32
        };
        if x.size() < PAR_THRESHOLD {
            out.iter_mut().enumerate().for_each(|(o, v)| *v = line(o));
        } else {
            out.par_iter_mut().enumerate().for_each(|(o, v)| *v = line(o));
        }
        Ok(())
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
