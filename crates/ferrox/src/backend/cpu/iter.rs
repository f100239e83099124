//! Strided iteration shared by the CPU kernels: collapse axes, then walk rows in parallel.

use rayon::prelude::*;

use crate::array::{row_major_strides, Data};
use crate::shape::broadcast_strides;

use super::simd::{dispatch, Isa};

/// Below this many elements a kernel runs on the calling thread.
pub const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per parallel task for contiguous loops.
pub const PAR_CHUNK: usize = 1 << 14;

/// Independent accumulators of [`fold_slice`] (and the arg-reductions): two AVX-512 registers
/// (four AVX2 registers) of f32, enough to hide the latency of the combining instruction.
pub const LANES: usize = 32;

/// Folds a contiguous slice with [`LANES`] independent accumulators (vectorizes; better rounding).
#[inline(always)]
pub fn fold_slice<T: Copy, A: Copy>(x: &[T], init: A, f: impl Fn(A, A) -> A, map: impl Fn(T) -> A) -> A {
    let mut lanes = [init; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for k in 0..LANES {
            lanes[k] = f(lanes[k], map(c[k]));
        }
    }
    let mut acc = init;
    for &v in chunks.remainder() {
        acc = f(acc, map(v));
    }
    // The barrier keeps LLVM's SLP vectorizer from shaping the loop above after the pairwise
    // combination below (it would build two-wide vectors); it costs one spill per call.
    let mut lanes = std::hint::black_box(lanes);
    // Pairwise: lane k with lane k + width.
    let mut width = LANES / 2;
    while width > 0 {
        for k in 0..width {
            lanes[k] = f(lanes[k], lanes[k + width]);
        }
        width /= 2;
    }
    f(acc, lanes[0])
}

/// A raw pointer that may cross threads; kernels only read through it (or write disjoint
/// elements).
#[derive(Clone, Copy)]
pub struct Ptr<T>(pub *const T);
// SAFETY: see the type's doc: shared reads, or disjoint writes.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Ptr<T> {}

impl<T: Copy> Ptr<T> {
    /// The raw pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline(always)]
    pub fn get(self) -> *const T {
        self.0
    }

    /// Reads the element at `off`.
    ///
    /// # Safety
    /// `off` must lie inside the viewed data.
    #[inline(always)]
    pub unsafe fn at(self, off: isize) -> T {
        *self.get().offset(off)
    }
}

/// Runs `f` on `len` f32 values (64-byte aligned, contents unspecified) of this thread's
/// buffer `key`, kept between calls so a kernel's scratch is not a fresh allocation (and fresh
/// page faults) each time; a nested call on the same thread (work stealing) that finds the
/// buffer held gets one of its own.
pub fn with_scratch<R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| {
        let mut own = Vec::new();
        let mut held = cell.try_borrow_mut();
        let buf = match held.as_mut() {
            Ok(b) => &mut **b,
            Err(_) => &mut own,
        };
        if buf.len() < len + 16 {
            *buf = vec![0f32; len + 16];
        }
        let off = buf.as_ptr().align_offset(64);
        f(&mut buf[off..off + len])
    })
}

/// A mutable raw pointer for kernels that write disjoint elements from several threads.
#[derive(Clone, Copy)]
pub struct MutPtr<T>(pub *mut T);
// SAFETY: writers touch disjoint elements.
unsafe impl<T> Send for MutPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for MutPtr<T> {}

impl<T> MutPtr<T> {
    /// The raw pointer (a method, so closures capture the whole `Send` wrapper).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// Merges neighbouring axes whose strides chain in every operand and drops size-1 axes.
pub fn collapse(shape: &[usize], strides: &[Vec<isize>]) -> (Vec<usize>, Vec<Vec<isize>>) {
    let mut cs: Vec<usize> = Vec::new();
    let mut cst: Vec<Vec<isize>> = vec![Vec::new(); strides.len()];
    for ax in 0..shape.len() {
        let n = shape[ax];
        if n == 1 {
            continue;
        }
        let merge = !cs.is_empty() && strides.iter().zip(&cst).all(|(s, c)| *c.last().unwrap() == s[ax] * n as isize);
        if merge {
            *cs.last_mut().unwrap() *= n;
            for (s, c) in strides.iter().zip(cst.iter_mut()) {
                *c.last_mut().unwrap() = s[ax];
            }
        } else {
            cs.push(n);
            for (s, c) in strides.iter().zip(cst.iter_mut()) {
                c.push(s[ax]);
            }
        }
    }
    if cs.is_empty() {
        cs.push(1);
        for c in cst.iter_mut() {
            c.push(0);
        }
    }
    (cs, cst)
}

/// The element offset, in each operand, of the start of `row` (rows run along the last axis).
#[inline]
pub fn row_offsets<const N: usize>(outer: &[usize], strides: &[Vec<isize>], mut row: usize) -> [isize; N] {
    let mut offs = [0isize; N];
    for ax in (0..outer.len()).rev() {
        let i = row % outer[ax];
        row /= outer[ax];
        for k in 0..N {
            offs[k] += i as isize * strides[k][ax];
        }
    }
    offs
}

/// Fills the row-major `out` by rows: `f(offsets, inner_strides, chunk)` writes `chunk`, whose
/// element `j` comes from element `offsets[k] + j * inner_strides[k]` of each input `k`.
/// `strides` are the inputs' strides already broadcast to `shape`. Runs in parallel when large.
pub fn map_rows<const N: usize, O: Send + Sync>(
    shape: &[usize],
    strides: &[Vec<isize>],
    out: &mut [O],
    f: impl Fn([isize; N], [isize; N], &mut [O]) + Sync + Send,
) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let contiguous = row_major_strides(shape);
    let all_contiguous =
        strides.iter().all(|s| shape.iter().zip(s.iter().zip(&contiguous)).all(|(&d, (a, b))| d == 1 || a == b));
    if all_contiguous {
        // One long row, cut into chunks.
        if n < PAR_THRESHOLD {
            f([0; N], [1; N], out);
        } else {
            out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, chunk)| {
                f([(i * PAR_CHUNK) as isize; N], [1; N], chunk);
            });
        }
        return;
    }
    let (cs, cst) = collapse(shape, strides);
    let inner = *cs.last().unwrap();
    let outer = &cs[..cs.len() - 1];
    let mut inner_strides = [0isize; N];
    for k in 0..N {
        inner_strides[k] = *cst[k].last().unwrap();
    }
    let outer_strides: Vec<Vec<isize>> = cst.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let run_row = |row: usize, chunk: &mut [O]| {
        let offs = row_offsets::<N>(outer, &outer_strides, row);
        f(offs, inner_strides, chunk);
    };
    if n < PAR_THRESHOLD {
        for (row, chunk) in out.chunks_mut(inner).enumerate() {
            run_row(row, chunk);
        }
    } else {
        let min_rows = (PAR_CHUNK / inner).max(1);
        out.par_chunks_mut(inner).enumerate().with_min_len(min_rows).for_each(|(row, chunk)| run_row(row, chunk));
    }
}

/// Applies `f` elementwise to one strided input of `shape` into the row-major `out`.
///
/// Contiguous runs go through [`dispatch`], so `f` is compiled for the CPU's vector
/// instruction set (it receives the [`Isa`]; see there). A transposed input goes through
/// [`map1_transposed`].
pub fn map1<A: Copy, O: Send + Sync>(
    a: Ptr<A>,
    sa: Vec<isize>,
    shape: &[usize],
    out: &mut [O],
    f: impl Fn(A, Isa) -> O + Sync + Send,
) {
    if map1_transposed(a, &sa, shape, out, &f) {
        return;
    }
    map_rows::<1, O>(shape, &[sa], out, |[oa], [ia], chunk| {
        // SAFETY: offsets come from the input's own view.
        unsafe {
            if ia == 1 {
                let src = std::slice::from_raw_parts(a.get().offset(oa), chunk.len());
                dispatch(
                    #[inline(always)]
                    |isa| {
                        for (o, &x) in chunk.iter_mut().zip(src) {
                            *o = f(x, isa);
                        }
                    },
                );
            } else {
                // Dispatched too, so a value does not depend on its input's layout (the float
                // functions use fused multiply-adds where the ISA has them).
                dispatch(
                    #[inline(always)]
                    |isa| {
                        for (j, o) in chunk.iter_mut().enumerate() {
                            *o = f(a.at(oa + j as isize * ia), isa);
                        }
                    },
                );
            }
        }
    });
}

/// [`map1`] for an input that is contiguous along the second-to-last axis of the output (after
/// collapsing), such as a transposed matrix. Walks 32 × 32 tiles, so that each tile reads 32
/// cache lines many times instead of a new one for every element, inside 256 × 256 blocks,
/// so that the pages a block touches stay few (TLB). Returns false, doing nothing, for other
/// layouts and small sizes.
fn map1_transposed<A: Copy, O: Send + Sync>(
    a: Ptr<A>,
    sa: &[isize],
    shape: &[usize],
    out: &mut [O],
    f: &(impl Fn(A, Isa) -> O + Sync + Send),
) -> bool {
    const TILE: usize = 32;
    const BLOCK: usize = 256;
    let (cs, cst) = collapse(shape, &[sa.to_vec(), row_major_strides(shape)]);
    let nd = cs.len();
    if nd < 2 || out.len() < PAR_THRESHOLD || cst[0][nd - 2] != 1 || matches!(cst[0][nd - 1], -1..=1) {
        return false;
    }
    let (rows, cols, col_stride) = (cs[nd - 2], cs[nd - 1], cst[0][nd - 1]);
    if rows < TILE || cols < TILE {
        return false;
    }
    let outer = &cs[..nd - 2];
    let outer_strides = vec![cst[0][..nd - 2].to_vec()];
    // Output rows r0.. (whole rows, at most BLOCK) of the slab at input offset `base`.
    let row_block = |base: isize, r0: usize, block: &mut [O]| {
        dispatch(
            #[inline(always)]
            |isa| {
                for cb in (0..cols).step_by(BLOCK) {
                    let cb_end = (cb + BLOCK).min(cols);
                    for (rt, tile_rows) in block.chunks_mut(TILE * cols).enumerate() {
                        for c0 in (cb..cb_end).step_by(TILE) {
                            let nc = TILE.min(cb_end - c0);
                            for (r, orow) in tile_rows.chunks_mut(cols).enumerate() {
                                let src = base + (r0 + rt * TILE + r) as isize + c0 as isize * col_stride;
                                for (j, o) in orow[c0..c0 + nc].iter_mut().enumerate() {
                                    // SAFETY: inside the input view: row r0 + rt·TILE + r, column c0 + j.
                                    *o = f(unsafe { a.at(src + j as isize * col_stride) }, isa);
                                }
                            }
                        }
                    }
                }
            },
        )
    };
    out.par_chunks_mut(rows * cols).enumerate().for_each(|(o, slab)| {
        let [base] = row_offsets::<1>(outer, &outer_strides, o);
        slab.par_chunks_mut(BLOCK * cols).enumerate().for_each(|(rb, block)| row_block(base, rb * BLOCK, block));
    });
    true
}

/// Applies `f` elementwise to two strided inputs broadcast to `shape` into the row-major `out`.
///
/// Contiguous runs (either input possibly a broadcast scalar) go through [`dispatch`], as in
/// [`map1`].
#[allow(clippy::too_many_arguments)]
pub fn map2<A: Copy, B: Copy, O: Send + Sync>(
    a: Ptr<A>,
    sa: Vec<isize>,
    b: Ptr<B>,
    sb: Vec<isize>,
    shape: &[usize],
    out: &mut [O],
    f: impl Fn(A, B, Isa) -> O + Sync + Send,
) {
    map_rows::<2, O>(shape, &[sa, sb], out, |[oa, ob], [ia, ib], chunk| {
        let len = chunk.len();
        // SAFETY: offsets come from the inputs' own views.
        unsafe {
            match (ia, ib) {
                (1, 1) => {
                    let x = std::slice::from_raw_parts(a.get().offset(oa), len);
                    let y = std::slice::from_raw_parts(b.get().offset(ob), len);
                    dispatch(
                        #[inline(always)]
                        |isa| {
                            for ((o, &x), &y) in chunk.iter_mut().zip(x).zip(y) {
                                *o = f(x, y, isa);
                            }
                        },
                    );
                }
                (1, 0) => {
                    let x = std::slice::from_raw_parts(a.get().offset(oa), len);
                    let y = b.at(ob);
                    dispatch(
                        #[inline(always)]
                        |isa| {
                            for (o, &x) in chunk.iter_mut().zip(x) {
                                *o = f(x, y, isa);
                            }
                        },
                    );
                }
                (0, 1) => {
                    let x = a.at(oa);
                    let y = std::slice::from_raw_parts(b.get().offset(ob), len);
                    dispatch(
                        #[inline(always)]
                        |isa| {
                            for (o, &y) in chunk.iter_mut().zip(y) {
                                *o = f(x, y, isa);
                            }
                        },
                    );
                }
                _ => dispatch(
                    #[inline(always)]
                    |isa| {
                        for (j, o) in chunk.iter_mut().enumerate() {
                            let j = j as isize;
                            *o = f(a.at(oa + j * ia), b.at(ob + j * ib), isa);
                        }
                    },
                ),
            }
        }
    });
}

/// Applies `f` elementwise to three strided inputs broadcast to `shape` into the row-major `out`.
#[allow(clippy::too_many_arguments)]
pub fn map3<A: Copy, B: Copy, C: Copy, O: Send + Sync>(
    a: (Ptr<A>, Vec<isize>),
    b: (Ptr<B>, Vec<isize>),
    c: (Ptr<C>, Vec<isize>),
    shape: &[usize],
    out: &mut [O],
    f: impl Fn(A, B, C) -> O + Sync + Send,
) {
    map_rows::<3, O>(shape, &[a.1, b.1, c.1], out, |[oa, ob, oc], [ia, ib, ic], chunk| {
        for (j, o) in chunk.iter_mut().enumerate() {
            let j = j as isize;
            // SAFETY: offsets come from the inputs' own views.
            unsafe { *o = f(a.0.at(oa + j * ia), b.0.at(ob + j * ib), c.0.at(oc + j * ic)) };
        }
    });
}

/// A typed base pointer and broadcast strides for an input of `in_shape` viewed as `shape`.
pub fn operand<T>(d: &Data, in_shape: &[usize], shape: &[usize]) -> (Ptr<T>, Vec<isize>) {
    (Ptr(d.ptr::<T>()), broadcast_strides(in_shape, &d.strides, shape))
}

/// Allocates a row-major output of `n` elements of `T`, lets `fill` write all of it, and wraps it.
pub fn alloc_out<T: crate::Element>(
    shape: &[usize],
    fill: impl FnOnce(&mut [T]) -> crate::Result<()>,
) -> crate::Result<Data> {
    let n: usize = shape.iter().product();
    let mut buf = crate::memory::Buffer::alloc(n * std::mem::size_of::<T>())?;
    {
        let bytes = buf.as_bytes_mut();
        // SAFETY: the buffer is 64-byte aligned and holds n elements of T; every element
        // type is valid for any bit pattern except bool, which fill writes before any read.
        let out = unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut T, n) };
        fill(out)?;
    }
    Ok(Data::contiguous(buf, shape))
}

/// The values of an evaluated input broadcast to `shape`, row-major, cast to `U` as `astype`
/// casts: read straight from its buffer through its strides. Kernels use it for small
/// operands they need on the host (a norm's weight, rope's offset, indices); reading them
/// through `to_vec` would build and evaluate a cast and a copy of them on every call.
pub fn host_values<U: crate::Element>(a: &crate::Array, shape: &[usize]) -> crate::Result<Vec<U>> {
    let d = a.data()?;
    let n: usize = shape.iter().product();
    let mut out = vec![U::default(); n];
    crate::dispatch_dtype!(a.dtype(), T => {
        let (p, s) = operand::<T>(&d, a.shape(), shape);
        map1(p, s, shape, &mut out, |v: T, _| crate::Element::cast::<U>(v));
    });
    Ok(out)
}
