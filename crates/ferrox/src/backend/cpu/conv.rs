//! Convolution ([`Op::Conv`](crate::primitives::Op::Conv)) over any number of spatial axes,
//! channels last.
//!
//! The main path is im2col + GEMM: blocks of output rows (one row per batch element and
//! output position) are unfolded into a `[rows, taps * C_in/groups]` matrix in a pool buffer,
//! honouring padding, kernel dilation, input dilation and flipping, and each group multiplies
//! it by its `[taps * C_in/groups, C_out/groups]` slice of the weight with the `gemm` crate,
//! writing straight into the output rows. Blocks run in parallel on rayon, one scratch slice
//! per worker, so the unfolded matrix never exists whole. A 1×1 convolution without padding
//! or striding skips the unfolding and multiplies the input in place. Convolutions with few
//! channels per group (depthwise ones above all), where a GEMM would have a tiny inner or
//! outer dimension, run a direct loop instead. Half-precision types compute in f32.

use std::any::TypeId;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitives::ConvParams;

use super::iter::{alloc_out, MutPtr, Ptr};
use super::matmul::{gemm_one, Mat};

/// Marks a (position, tap) pair that reads padding or a hole of the input dilation.
const HOLE: isize = isize::MIN;

/// Work (multiply-adds) below which a convolution runs on the calling thread.
const SERIAL_WORK: usize = 1 << 18;

/// Geometry of one convolution, with per-axis offset tables.
struct Geom {
    /// Batch size.
    n: usize,
    /// Output spatial sizes.
    out_sp: Vec<usize>,
    /// Kernel spatial sizes.
    ker: Vec<usize>,
    cin: usize,
    cout: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    /// Kernel taps (product of `ker`).
    taps: usize,
    /// Output rows: `n * prod(out_sp)`.
    rows: usize,
    /// Stride of the input's batch axis and of its channel axis, in elements.
    xs_n: isize,
    xs_c: isize,
    /// Per spatial axis, `[out_i * ker_i]`: the input offset read by output position `o`
    /// and tap `k` along that axis, or [`HOLE`].
    tables: Vec<Vec<isize>>,
}

impl Geom {
    fn new(xshape: &[usize], xstrides: &[isize], wshape: &[usize], p: &ConvParams, oshape: &[usize]) -> Geom {
        let nsp = xshape.len() - 2;
        let ker = wshape[1..=nsp].to_vec();
        let out_sp = oshape[1..=nsp].to_vec();
        let tables = (0..nsp)
            .map(|i| {
                let (len, k) = (xshape[i + 1] as isize, ker[i]);
                let id = p.input_dilation[i] as isize;
                let mut t = Vec::with_capacity(out_sp[i] * k);
                for o in 0..out_sp[i] {
                    for kk in 0..k {
                        let tap = if p.flip { k - 1 - kk } else { kk };
                        let pos = (o * p.stride[i] + tap * p.kernel_dilation[i]) as isize - p.padding_lo[i] as isize;
                        let ok = pos >= 0 && pos % id == 0 && pos / id < len;
                        t.push(if ok { pos / id * xstrides[i + 1] } else { HOLE });
                    }
                }
                t
            })
            .collect();
        let (cin, cout, groups) = (xshape[nsp + 1], oshape[nsp + 1], p.groups);
        Geom {
            n: xshape[0],
            rows: xshape[0] * out_sp.iter().product::<usize>(),
            taps: ker.iter().product(),
            out_sp,
            ker,
            cin,
            cout,
            groups,
            cin_g: cin / groups,
            cout_g: cout / groups,
            xs_n: xstrides[0],
            xs_c: xstrides[nsp + 1],
            tables,
        }
    }

    /// Fills `tabs` with the table rows of output row `m` (one slice of `ker_i` offsets per
    /// spatial axis) and returns the input offset of its batch element.
    fn row<'a>(&'a self, m: usize, tabs: &mut Vec<&'a [isize]>) -> isize {
        tabs.clear();
        tabs.resize(self.out_sp.len(), &[]);
        let mut rem = m;
        for i in (0..self.out_sp.len()).rev() {
            let o = rem % self.out_sp[i];
            rem /= self.out_sp[i];
            tabs[i] = &self.tables[i][o * self.ker[i]..(o + 1) * self.ker[i]];
        }
        debug_assert!(rem < self.n);
        rem as isize * self.xs_n
    }
}

/// Calls `f(tap, offset)` for every kernel tap in row-major order; `offset` is `None` where
/// the tap falls on padding or a dilation hole.
fn walk_taps(tabs: &[&[isize]], off: Option<isize>, t: &mut usize, f: &mut impl FnMut(usize, Option<isize>)) {
    match tabs.split_first() {
        None => {
            f(*t, off);
            *t += 1;
        }
        Some((tab, rest)) => {
            for &e in tab.iter() {
                let next = match off {
                    Some(o) if e != HOLE => Some(o + e),
                    _ => None,
                };
                walk_taps(rest, next, t, f);
            }
        }
    }
}

/// Evaluates a convolution: `inputs` are the input `[N, spatial..., C_in]` and the weight
/// `[C_out, kernel..., C_in/groups]` (any strides), `shape` the output `[N, out..., C_out]`.
pub fn conv(inputs: &[Array], p: &ConvParams, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (x, w) = (&inputs[0], &inputs[1]);
    let (dx, dw) = (x.data()?, w.data()?);
    let g = Geom::new(x.shape(), &dx.strides, w.shape(), p, shape);
    crate::dispatch_float!(
        dtype,
        T => alloc_out::<T>(shape, |out| conv_typed::<T>(&g, &dx, x.shape(), p, &dw, w.shape(), out)),
        Err(Error::dtype("conv", "only floating-point types are supported", dtype))
    )
}

fn conv_typed<T: Element<Acc: Element>>(
    g: &Geom,
    dx: &Data,
    xshape: &[usize],
    p: &ConvParams,
    dw: &Data,
    wshape: &[usize],
    out: &mut [T],
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    if g.cin_g == 0 {
        out.iter_mut().for_each(|v| *v = T::default());
        return Ok(());
    }
    if g.cin_g * g.cout_g <= 16 {
        direct::<T>(g, dx, dw, wshape, out);
        Ok(())
    } else {
        im2col_gemm::<T>(g, dx, xshape, p, dw, wshape, out)
    }
}

/// The weight `[C_out, taps, C_in/groups]` (strided) as a row-major buffer of the compute
/// type, laid out by `index(co, tap, c)`.
fn pack_weight<T: Element>(
    g: &Geom,
    dw: &Data,
    wshape: &[usize],
    index: impl Fn(usize, usize, usize) -> usize,
) -> Vec<T::Acc> {
    let nsp = wshape.len() - 2;
    let mut packed = vec![T::Acc::ZERO; g.cout * g.taps * g.cin_g];
    let wp = Ptr(dw.ptr::<T>());
    let mut kidx = vec![0usize; nsp];
    for co in 0..g.cout {
        for t in 0..g.taps {
            let mut rem = t;
            for i in (0..nsp).rev() {
                kidx[i] = rem % wshape[i + 1];
                rem /= wshape[i + 1];
            }
            let off = kidx
                .iter()
                .zip(&dw.strides[1..=nsp])
                .fold(co as isize * dw.strides[0], |o, (&k, &s)| o + k as isize * s);
            for c in 0..g.cin_g {
                // SAFETY: (co, k..., c) lies inside the weight's view.
                let v = unsafe { wp.at(off + c as isize * dw.strides[nsp + 1]) };
                packed[index(co, t, c)] = v.to_acc();
            }
        }
    }
    packed
}

/// Direct loop for few channels per group: each output row accumulates, tap by tap, the
/// gathered input channels times the weight laid out `[tap, C_in/groups, C_out]`.
fn direct<T: Element>(g: &Geom, dx: &Data, dw: &Data, wshape: &[usize], out: &mut [T]) {
    let (cin_g, cout, cout_g) = (g.cin_g, g.cout, g.cout_g);
    let wp = pack_weight::<T>(g, dw, wshape, |co, t, c| (t * cin_g + c) * cout + co);
    let xp = Ptr(dx.ptr::<T>());
    let depthwise = cin_g == 1 && cout_g == 1;
    let run = |m0: usize, chunk: &mut [T]| {
        let mut xv = vec![T::Acc::ZERO; g.cin];
        let mut acc = vec![T::Acc::ZERO; cout];
        let mut tabs = Vec::new();
        for (r, orow) in chunk.chunks_mut(cout).enumerate() {
            let base = g.row(m0 + r, &mut tabs);
            acc.iter_mut().for_each(|v| *v = T::Acc::ZERO);
            walk_taps(&tabs, Some(base), &mut 0, &mut |t, off| {
                let Some(off) = off else { return };
                for (c, v) in xv.iter_mut().enumerate() {
                    // SAFETY: the tables only yield offsets inside the input's view.
                    *v = unsafe { xp.at(off + c as isize * g.xs_c) }.to_acc();
                }
                if depthwise {
                    for ((a, &x), &w) in acc.iter_mut().zip(&xv).zip(&wp[t * cout..(t + 1) * cout]) {
                        *a = a.add(x.mul(w));
                    }
                } else {
                    for grp in 0..g.groups {
                        let arow = &mut acc[grp * cout_g..(grp + 1) * cout_g];
                        for c in 0..cin_g {
                            let x = xv[grp * cin_g + c];
                            let w0 = (t * cin_g + c) * cout + grp * cout_g;
                            for (a, &w) in arow.iter_mut().zip(&wp[w0..w0 + cout_g]) {
                                *a = a.add(x.mul(w));
                            }
                        }
                    }
                }
            });
            for (o, &a) in orow.iter_mut().zip(&acc) {
                *o = T::from_acc(a);
            }
        }
    };
    let per_row = (g.taps * g.cin * cout_g).max(1);
    if g.rows * per_row < SERIAL_WORK {
        run(0, out);
    } else {
        let rows_per_task = (SERIAL_WORK / 8 / per_row).max(1);
        out.par_chunks_mut(rows_per_task * cout).enumerate().for_each(|(i, chunk)| run(i * rows_per_task, chunk));
    }
}

/// Unfolds rows `m0..m0 + nrows` of group `grp` into `col` (`[nrows, taps * C_in/groups]`).
fn im2col<'a, T: Element>(
    g: &'a Geom,
    xp: Ptr<T>,
    grp: usize,
    m0: usize,
    nrows: usize,
    col: &mut [T::Acc],
    tabs: &mut Vec<&'a [isize]>,
) {
    let cin_g = g.cin_g;
    let kd = g.taps * cin_g;
    let coff = (grp * cin_g) as isize * g.xs_c;
    for r in 0..nrows {
        let base = g.row(m0 + r, tabs);
        let crow = &mut col[r * kd..(r + 1) * kd];
        walk_taps(tabs, Some(base + coff), &mut 0, &mut |t, off| {
            let dst = &mut crow[t * cin_g..(t + 1) * cin_g];
            match off {
                None => dst.iter_mut().for_each(|v| *v = T::Acc::ZERO),
                Some(off) if g.xs_c == 1 => {
                    // SAFETY: the channels of one position lie inside the input's view.
                    let src = unsafe { std::slice::from_raw_parts(xp.get().offset(off), cin_g) };
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = s.to_acc();
                    }
                }
                Some(off) => {
                    for (c, d) in dst.iter_mut().enumerate() {
                        // SAFETY: as above, strided.
                        *d = unsafe { xp.at(off + c as isize * g.xs_c) }.to_acc();
                    }
                }
            }
        });
    }
}

fn im2col_gemm<T: Element<Acc: Element>>(
    g: &Geom,
    dx: &Data,
    xshape: &[usize],
    p: &ConvParams,
    dw: &Data,
    wshape: &[usize],
    out: &mut [T],
) -> Result<()> {
    let (cin_g, cout, cout_g) = (g.cin_g, g.cout, g.cout_g);
    let kd = g.taps * cin_g;
    // The compute type is the element type for f32 / f64: gemm then writes the output.
    let same = TypeId::of::<T>() == TypeId::of::<T::Acc>();
    let w_direct = same && dw.is_row_contiguous(wshape);
    let wpacked =
        if w_direct { Vec::new() } else { pack_weight::<T>(g, dw, wshape, |co, t, c| co * kd + t * cin_g + c) };
    let wbase: Ptr<T::Acc> = Ptr(if w_direct { dw.ptr::<T>() as *const T::Acc } else { wpacked.as_ptr() });
    // A 1×1 kernel on an unpadded, unstrided, undilated, row-major input is its own im2col.
    let pointwise = same
        && g.taps == 1
        && p.stride.iter().all(|&s| s == 1)
        && p.input_dilation.iter().all(|&d| d == 1)
        && p.padding_lo.iter().chain(&p.padding_hi).all(|&q| q == 0)
        && dx.is_row_contiguous(xshape);

    let threads = rayon::current_num_threads().max(1);
    let work = g.rows * cout * kd;
    let cap = ((1usize << 17) / kd).max(16);
    let block = if work < SERIAL_WORK { g.rows.min(cap) } else { g.rows.div_ceil(threads).min(cap) }.max(1);
    let nblocks = g.rows.div_ceil(block);
    let workers = if work < SERIAL_WORK { 1 } else { threads.min(nblocks) };
    let par = if workers == 1 && work >= SERIAL_WORK * 4 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };

    // Per-worker scratch from the pool: the unfolded block, and an f32 output block for
    // half-precision types.
    let col_len = if pointwise { 0 } else { block * kd };
    let oscr_len = if same { 0 } else { block * cout };
    let per_worker = col_len + oscr_len;
    let mut scratch =
        if per_worker > 0 { Some(Buffer::alloc(workers * per_worker * std::mem::size_of::<T::Acc>())?) } else { None };
    let sp: MutPtr<T::Acc> = MutPtr(match scratch.as_mut() {
        Some(b) => b.as_bytes_mut().as_mut_ptr() as *mut T::Acc,
        None => std::ptr::NonNull::dangling().as_ptr(),
    });
    let xp = Ptr(dx.ptr::<T>());
    let op = MutPtr(out.as_mut_ptr());
    let next = AtomicUsize::new(0);

    let worker = |wi: usize| {
        // SAFETY: each worker owns its slice of the scratch buffer (64-byte aligned pool
        // memory holding `workers * per_worker` elements of the compute type).
        let (col, oscr) = unsafe {
            let mine = sp.get().add(wi * per_worker);
            (std::slice::from_raw_parts_mut(mine, col_len), std::slice::from_raw_parts_mut(mine.add(col_len), oscr_len))
        };
        let mut tabs = Vec::new();
        loop {
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= nblocks {
                break;
            }
            let m0 = b * block;
            let nrows = block.min(g.rows - m0);
            for grp in 0..g.groups {
                let (a, a_rs) = if pointwise {
                    // SAFETY: rows m0.. of a row-major [rows, C_in] input, channels of grp.
                    (unsafe { (xp.get() as *const T::Acc).add(m0 * g.cin + grp * cin_g) }, g.cin as isize)
                } else {
                    im2col::<T>(g, xp, grp, m0, nrows, col, &mut tabs);
                    (col.as_ptr(), kd as isize)
                };
                let (dst, dst_rs) = if same {
                    // SAFETY: output rows m0..m0 + nrows, columns of group grp.
                    (unsafe { (op.get() as *mut T::Acc).add(m0 * cout + grp * cout_g) }, cout as isize)
                } else {
                    (oscr[grp * cout_g..].as_mut_ptr(), cout as isize)
                };
                // SAFETY: dst is nrows × cout_g with row stride cout, a is nrows × kd, and the
                // weight slice of group grp is kd × cout_g with column stride kd; the blocks
                // of different workers are disjoint.
                unsafe {
                    gemm_one(
                        nrows,
                        cout_g,
                        kd,
                        MutPtr(dst),
                        dst_rs,
                        false,
                        Mat { ptr: Ptr(a), rs: a_rs, cs: 1 },
                        Mat { ptr: Ptr(wbase.get().add(grp * cout_g * kd)), rs: 1, cs: kd as isize },
                        T::Acc::ZERO,
                        T::Acc::ONE,
                        par,
                    )
                };
            }
            if !same {
                // SAFETY: output rows m0..m0 + nrows belong to this block only.
                let orows = unsafe { std::slice::from_raw_parts_mut((op.get()).add(m0 * cout), nrows * cout) };
                for (o, &v) in orows.iter_mut().zip(oscr.iter()) {
                    *o = T::from_acc(v);
                }
            }
        }
    };
    if workers == 1 {
        worker(0);
    } else {
        (0..workers).into_par_iter().for_each(worker);
    }
    drop(scratch);
    Ok(())
}
