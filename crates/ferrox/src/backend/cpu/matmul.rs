//! Matrix multiplication: [`f32_gemm`] for f32, f16 and bf16 on AVX-512 CPUs (the operands
//! widened as it packs them), [`bf16_gemm`] for bf16 on AVX512-BF16, the `gemm` crate for f64
//! and for f32 / f16 elsewhere (half types converted in panels), and direct matrix-vector
//! kernels for the decode case (one row). Every product of the CPU backend goes through
//! [`gemm_one`] or these kernels.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::element::{widen_for_sum, Element};
use crate::error::{Error, Result};
use crate::shape::broadcast_strides;

use super::decode_gemv::{self, Weight};
use super::iter::{alloc_out, map1, operand, row_offsets, MutPtr, Ptr, PAR_CHUNK, PAR_THRESHOLD};
use super::simd::{dispatch, inline_always};
use super::{bf16_gemm, f32_gemm};

/// One matrix operand: base pointer, and row / column strides (elements).
#[derive(Clone, Copy)]
pub(super) struct Mat<T> {
    /// First element.
    pub ptr: Ptr<T>,
    /// Row stride.
    pub rs: isize,
    /// Column stride.
    pub cs: isize,
}

impl<T> Mat<T> {
    /// The same view, its elements read as another type of the same size.
    fn cast<U>(self) -> Mat<U> {
        Mat { ptr: Ptr(self.ptr.0 as *const U), rs: self.rs, cs: self.cs }
    }
}

fn parallelism(flops: usize) -> gemm::Parallelism {
    if flops < (1 << 20) {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    }
}

/// `dst = dst_scale * dst + prod_scale * a @ b` for one matrix (`dst_scale * dst` only when
/// `read_dst`; `dst`'s columns contiguous): f32 on [`f32_gemm`] where the CPU runs it, else on
/// `gemm`.
///
/// # Safety
/// The views must be valid for m×k, k×n and m×n.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_one<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    dst: MutPtr<T>,
    dst_rs: isize,
    read_dst: bool,
    a: Mat<T>,
    b: Mat<T>,
    dst_scale: T,
    prod_scale: T,
    par: gemm::Parallelism,
) {
    if T::DTYPE == Dtype::F32 && f32_gemm::supported() {
        let threads = match par {
            gemm::Parallelism::None => 1,
            gemm::Parallelism::Rayon(t) => t.max(1),
        };
        let (beta, alpha) = (dst_scale.to_f64() as f32, prod_scale.to_f64() as f32);
        return f32_gemm::gemm((m, n, k), MutPtr(dst.get() as *mut f32), dst_rs, read_dst, a, b, beta, alpha, threads);
    }
    gemm::gemm(
        m, n, k, dst.0, 1, dst_rs, read_dst, a.ptr.0, a.cs, a.rs, b.ptr.0, b.cs, b.rs, dst_scale, prod_scale, false,
        false, false, par,
    );
}

/// Matrix-vector: `y[j] = scale * sum_k x[k] * b[k, j]` (+ `beta * y`) reading `b` in its own
/// dtype, for one row of `a`. Columns of `b` contiguous along k (a transposed weight) give dot
/// products; rows contiguous along n give scaled row sums.
fn gemv<T: Element<Acc = f32>>(x: &[f32], b: Mat<T>, n: usize, k: usize, y: &mut [f32]) {
    if b.rs == 1 {
        // b[k, j] at j*cs + k: each output is a dot product over a contiguous column.
        const L: usize = 16;
        let dot = inline_always(
            #[inline(always)]
            |j: usize| {
                // SAFETY: column j of b has k contiguous elements.
                let col = unsafe { std::slice::from_raw_parts(b.ptr.get().offset(j as isize * b.cs), k) };
                let mut acc = [0f32; L];
                let mut cc = col.chunks_exact(L);
                let mut xc = x.chunks_exact(L);
                for (c, xv) in (&mut cc).zip(&mut xc) {
                    for l in 0..L {
                        acc[l] += widen_for_sum(c[l]) * xv[l];
                    }
                }
                let mut s = 0f32;
                for (c, xv) in cc.remainder().iter().zip(xc.remainder()) {
                    s += widen_for_sum(*c) * xv;
                }
                // A barrier between the vector loop and the horizontal sum (see fold_slice).
                s + std::hint::black_box(acc).iter().sum::<f32>()
            },
        );
        const COLS: usize = 16;
        let body = |(ci, yc): (usize, &mut [f32])| {
            dispatch(
                #[inline(always)]
                |_| {
                    for (j, yj) in yc.iter_mut().enumerate() {
                        *yj = dot(ci * COLS + j);
                    }
                },
            )
        };
        if n * k >= 1 << 16 {
            y.par_chunks_mut(COLS).enumerate().for_each(body);
        } else {
            y.chunks_mut(COLS).enumerate().for_each(body);
        }
    } else {
        // Rows of b contiguous along n (cs == 1): accumulate x[k] * b[k, :].
        let chunk = 256;
        let body = |(ci, yc): (usize, &mut [f32])| {
            yc.iter_mut().for_each(|v| *v = 0.0);
            let j0 = ci * chunk;
            dispatch(
                #[inline(always)]
                |_| {
                    for (kk, &xv) in x.iter().enumerate() {
                        // SAFETY: row kk of b, columns j0..j0+len.
                        let row = unsafe {
                            std::slice::from_raw_parts(b.ptr.get().offset(kk as isize * b.rs + j0 as isize), yc.len())
                        };
                        for (yv, bv) in yc.iter_mut().zip(row) {
                            *yv += xv * widen_for_sum(*bv);
                        }
                    }
                },
            )
        };
        if n * k >= 1 << 16 {
            y.par_chunks_mut(chunk).enumerate().for_each(body);
        } else {
            y.chunks_mut(chunk).enumerate().for_each(body);
        }
    }
}

/// Evaluates `alpha * a @ b + beta * c`; `a` is [..., M, K], `b` [..., K, N], batch axes
/// broadcast to those of `shape` = [..., M, N].
pub fn matmul(inputs: &[Array], alpha: f64, beta: f64, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (a, b) = (&inputs[0], &inputs[1]);
    let nd = shape.len();
    let (m, n) = (shape[nd - 2], shape[nd - 1]);
    let k = a.shape()[a.ndim() - 1];
    let batch_shape = &shape[..nd - 2];
    let nbatch: usize = batch_shape.iter().product();
    let (da, db) = (a.data()?, b.data()?);
    let mut a_full = batch_shape.to_vec();
    a_full.extend([m, k]);
    let mut b_full = batch_shape.to_vec();
    b_full.extend([k, n]);
    let sa = broadcast_strides(a.shape(), &da.strides, &a_full);
    let sb = broadcast_strides(b.shape(), &db.strides, &b_full);
    let bstrides = vec![sa[..nd - 2].to_vec(), sb[..nd - 2].to_vec()];
    let ost = row_major_strides(shape);
    let c = if beta != 0.0 { Some(inputs[2].clone()) } else { None };

    macro_rules! run {
        ($T:ty, $conv:expr) => {{
            alloc_out::<$T>(shape, |out| {
                if let Some(c) = &c {
                    let dc = c.data()?;
                    let (pc, sc) = operand::<$T>(&dc, c.shape(), shape);
                    // SAFETY: out is a fresh row-major buffer of `shape`.
                    unsafe { super::copy::strided_copy(pc, &sc, MutPtr(out.as_mut_ptr()), &ost, shape) };
                } else if k == 0 {
                    out.iter_mut().for_each(|v| *v = <$T>::default());
                }
                if k == 0 || m == 0 || n == 0 {
                    if beta != 0.0 && beta != 1.0 {
                        out.iter_mut().for_each(|v| *v = <$T as Element>::from_f64(v.to_f64() * beta));
                    }
                    return Ok(());
                }
                let pa = Ptr(da.ptr::<$T>());
                let pb = Ptr(db.ptr::<$T>());
                let po = MutPtr(out.as_mut_ptr());
                let conv: fn(f64) -> $T = $conv;
                let one_batch = |bi: usize, par: gemm::Parallelism| {
                    let [oa, ob] = row_offsets::<2>(batch_shape, &bstrides, bi);
                    // SAFETY: offsets of batch bi inside each operand and the output.
                    unsafe {
                        gemm_one(
                            m,
                            n,
                            k,
                            MutPtr(po.get().offset(bi as isize * (m * n) as isize)),
                            n as isize,
                            c.is_some(),
                            Mat { ptr: Ptr(pa.get().offset(oa)), rs: sa[nd - 2], cs: sa[nd - 1] },
                            Mat { ptr: Ptr(pb.get().offset(ob)), rs: sb[nd - 2], cs: sb[nd - 1] },
                            conv(beta),
                            conv(alpha),
                            par,
                        )
                    }
                };
                let flops = m * n * k;
                if nbatch > 1 && flops < (1 << 22) {
                    (0..nbatch).into_par_iter().for_each(|bi| one_batch(bi, gemm::Parallelism::None));
                } else {
                    (0..nbatch).for_each(|bi| one_batch(bi, parallelism(flops)));
                }
                Ok(())
            })
        }};
    }

    match dtype {
        // One row (decode): the direct matrix-vector kernel.
        Dtype::F32 if m == 1 => half_matmul::<f32>(inputs, alpha, beta, shape),
        Dtype::F32 => run!(f32, |v| v as f32),
        Dtype::F64 => run!(f64, |v| v),
        Dtype::F16 if m > 1 && !f32_gemm::supported() => run!(f16, f16::from_f64),
        Dtype::F16 => half_matmul::<f16>(inputs, alpha, beta, shape),
        Dtype::Bf16 => half_matmul::<bf16>(inputs, alpha, beta, shape),
        _ => Err(Error::dtype("matmul", "only floating-point types are supported", dtype)),
    }
}

/// Converts `dst.len()` elements of `src`, starting at element `off` and `stride` apart, to f32.
///
/// # Safety
/// The elements read must lie inside `src`'s view.
#[inline(always)]
pub(super) unsafe fn convert_run<T: Element<Acc = f32>>(src: Ptr<T>, off: isize, stride: isize, dst: &mut [f32]) {
    if stride == 1 {
        let run = std::slice::from_raw_parts(src.get().offset(off), dst.len());
        for (d, v) in dst.iter_mut().zip(run) {
            *d = v.to_acc();
        }
    } else {
        for (j, d) in dst.iter_mut().enumerate() {
            *d = src.at(off + j as isize * stride).to_acc();
        }
    }
}

/// Fills the row-major `rows × len` f32 buffer `dst` with row `r` read from
/// `off + r * row_stride + j * stride` of `src`: contiguous runs when `stride` is 1, in
/// parallel when large.
///
/// # Safety
/// The elements read must lie inside `src`'s view.
unsafe fn convert_rows<T: Element<Acc = f32>>(
    src: Ptr<T>,
    off: isize,
    row_stride: isize,
    stride: isize,
    len: usize,
    dst: &mut [f32],
) {
    if len == 0 {
        return;
    }
    let row = |(r, d): (usize, &mut [f32])| {
        // SAFETY: the caller guarantees the view.
        dispatch(
            #[inline(always)]
            |_| unsafe { convert_run(src, off + r as isize * row_stride, stride, d) },
        )
    };
    if dst.len() < PAR_THRESHOLD {
        dst.chunks_mut(len).enumerate().for_each(row);
    } else {
        dst.par_chunks_mut(len).enumerate().with_min_len((PAR_CHUNK / len).max(1)).for_each(row);
    }
}

/// Matmul computing in f32 for f16 / bf16 (and f32 with a single row): for a single row, `b` is read in its own dtype
/// (matrix-vector); otherwise `a` and `b` are converted to f32 in panels of up to 512 of the
/// k axis (never a whole-matrix copy of `b`) and multiplied with `gemm`. A panel of `b` keeps
/// the source's layout (rows or columns contiguous), so the conversion reads contiguous runs.
fn half_matmul<T: Element<Acc = f32>>(inputs: &[Array], alpha: f64, beta: f64, shape: &[usize]) -> Result<Data> {
    let (a, b) = (&inputs[0], &inputs[1]);
    let nd = shape.len();
    let (m, n) = (shape[nd - 2], shape[nd - 1]);
    let k = a.shape()[a.ndim() - 1];
    let batch_shape = &shape[..nd - 2];
    let nbatch: usize = batch_shape.iter().product();
    let (da, db) = (a.data()?, b.data()?);
    let mut a_full = batch_shape.to_vec();
    a_full.extend([m, k]);
    let mut b_full = batch_shape.to_vec();
    b_full.extend([k, n]);
    let sa = broadcast_strides(a.shape(), &da.strides, &a_full);
    let sb = broadcast_strides(b.shape(), &db.strides, &b_full);
    let bstrides = vec![sa[..nd - 2].to_vec(), sb[..nd - 2].to_vec()];
    let cvals: Option<Vec<f32>> = if beta != 0.0 {
        // Read the (already evaluated) addend through its strides: building a new array here
        // and reading it back would start a nested evaluation, which waits on this one forever.
        let c = &inputs[2];
        let dc = c.data()?;
        let (pc, sc) = operand::<T>(&dc, c.shape(), shape);
        let mut v = vec![0f32; shape.iter().product()];
        map1(
            pc,
            sc,
            shape,
            &mut v,
            #[inline(always)]
            |x: T, _| x.to_acc(),
        );
        Some(v)
    } else {
        None
    };
    let pa = Ptr(da.ptr::<T>());
    let pb = Ptr(db.ptr::<T>());
    alloc_out::<T>(shape, |out| {
        let mut acc = vec![0f32; m * n];
        let mut scratch = PanelScratch::default();
        for bi in 0..nbatch {
            let [oa, ob] = row_offsets::<2>(batch_shape, &bstrides, bi);
            let (a_rs, a_cs) = (sa[nd - 2], sa[nd - 1]);
            let bm = Mat { ptr: Ptr(unsafe { pb.get().offset(ob) }), rs: sb[nd - 2], cs: sb[nd - 1] };
            let row_product = m == 1 && bm.rs == 1 && bm.cs >= 0;
            if T::DTYPE == Dtype::Bf16 && row_product && u16::applies() {
                // SAFETY: a's row and b are batch bi's views (bf16: T is bf16 here, read as bits).
                unsafe { row_times_rows::<u16>(pa.get().offset(oa) as *const u16, a_cs, k, bm.cast(), n, &mut acc) };
            } else if T::DTYPE == Dtype::F32 && row_product && f32::applies() {
                // SAFETY: a's row and b are batch bi's views (T is f32 here).
                unsafe { row_times_rows::<f32>(pa.get().offset(oa) as *const f32, a_cs, k, bm.cast(), n, &mut acc) };
            } else if T::DTYPE == Dtype::Bf16 && m > 1 && k > 0 && k % 2 == 0 && bf16_gemm::cpu_supported() {
                // SAFETY: a's rows and b are batch bi's views (bf16: T is bf16 here).
                unsafe { bf16_product(pa.get().offset(oa) as *const u16, a_rs, a_cs, m, k, bm.cast(), n, &mut acc) };
            } else if m > 1 && f32_gemm::supported() {
                let am = Mat { ptr: Ptr(unsafe { pa.get().offset(oa) }), rs: a_rs, cs: a_cs };
                let threads = rayon::current_num_threads();
                // SAFETY: a and b are batch bi's views, acc is m × n.
                unsafe {
                    f32_gemm::gemm((m, n, k), MutPtr(acc.as_mut_ptr()), n as isize, false, am, bm, 0.0, 1.0, threads)
                };
            } else {
                // SAFETY: panels of a (m × kb) read inside batch bi's view; b is batch bi's matrix.
                unsafe {
                    f32_product(
                        m,
                        n,
                        k,
                        |k0, kb, ap| convert_rows(pa, oa + k0 as isize * a_cs, a_rs, a_cs, kb, ap),
                        bm,
                        &mut acc,
                        &mut scratch,
                    )
                };
            }
            let o = &mut out[bi * m * n..(bi + 1) * m * n];
            let c = cvals.as_ref().map(|c| &c[bi * m * n..(bi + 1) * m * n]);
            let (alpha, beta) = (alpha as f32, beta as f32);
            let finish = |(i, (ov, av)): (usize, (&mut [T], &[f32]))| {
                dispatch(
                    #[inline(always)]
                    |_| match c {
                        Some(c) => {
                            for ((ov, &av), &cv) in ov.iter_mut().zip(av).zip(&c[i * PAR_CHUNK..]) {
                                *ov = T::from_acc(alpha * av + beta * cv);
                            }
                        }
                        None => {
                            for (ov, &av) in ov.iter_mut().zip(av) {
                                *ov = T::from_acc(alpha * av);
                            }
                        }
                    },
                )
            };
            if m * n < PAR_THRESHOLD {
                o.chunks_mut(PAR_CHUNK).zip(acc.chunks(PAR_CHUNK)).enumerate().for_each(finish);
            } else {
                o.par_chunks_mut(PAR_CHUNK).zip(acc.par_chunks(PAR_CHUNK)).enumerate().for_each(finish);
            }
        }
        Ok(())
    })
}

/// `acc = a @ b` for bf16 operands through [`bf16_gemm`]: `a` (m × k at `a`, strides `a_rs`,
/// `a_cs`) is read in place when its rows are contiguous, else copied into rows first.
///
/// # Safety
/// The views must be valid for m × k and k × n bf16 elements (as bits).
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_product(
    a: *const u16,
    a_rs: isize,
    a_cs: isize,
    m: usize,
    k: usize,
    b: Mat<u16>,
    n: usize,
    acc: &mut [f32],
) {
    let packed_b = bf16_gemm::Bf16Matrix { ptr: b.ptr.get(), k, n, rs: b.rs, cs: b.cs };
    if a_cs == 1 && a_rs >= k as isize {
        let a = std::slice::from_raw_parts(a, (m - 1) * a_rs as usize + k);
        bf16_gemm::gemm(a, a_rs as usize, m, &packed_b, acc);
    } else {
        let rows: Vec<u16> = (0..m * k).map(|e| *a.offset((e / k) as isize * a_rs + (e % k) as isize * a_cs)).collect();
        bf16_gemm::gemm(&rows, k, m, &packed_b, acc);
    }
}

/// `acc = a @ b` for one row `a` (k elements at stride `a_cs`, read in place when contiguous)
/// and a `b` whose columns are contiguous along k (a transposed weight) through
/// [`decode_gemv`].
///
/// # Safety
/// The views must be valid for k and k × n elements.
unsafe fn row_times_rows<E: Weight>(a: *const E, a_cs: isize, k: usize, b: Mat<E>, n: usize, acc: &mut [f32]) {
    let w = decode_gemv::RowMatrix { ptr: b.ptr.get(), ld: b.cs as usize, n, k };
    if a_cs == 1 {
        decode_gemv::gemv(std::slice::from_raw_parts(a, k), w, acc);
    } else {
        let row: Vec<E> = (0..k).map(|e| *a.offset(e as isize * a_cs)).collect();
        decode_gemv::gemv(&row, w, acc);
    }
}

/// Reusable f32 buffers of [`f32_product`].
#[derive(Default)]
pub(super) struct PanelScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// `acc = a @ b` computed in f32 (`acc` is m×n row-major, overwritten). `a` comes from
/// `fill_a(k0, kb, panel)`, which writes columns `k0..k0 + kb` of a as a row-major m×kb f32
/// panel; `b` is read in its own dtype: directly (matrix-vector) for one row when b has a
/// contiguous axis, else in panels of up to 512 of the k axis converted to f32 (keeping the
/// source's layout, so the conversion reads contiguous runs) and multiplied with `gemm`.
///
/// # Safety
/// `b` must be valid for k×n; `fill_a` must read only inside a's view.
pub(super) unsafe fn f32_product<T: Element<Acc = f32>>(
    m: usize,
    n: usize,
    k: usize,
    mut fill_a: impl FnMut(usize, usize, &mut [f32]),
    bm: Mat<T>,
    acc: &mut [f32],
    scratch: &mut PanelScratch,
) {
    const PANEL: usize = 512;
    if k == 0 {
        acc.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    if m == 1 && (bm.rs == 1 || bm.cs == 1) {
        scratch.a.resize(k, 0.0);
        fill_a(0, k, &mut scratch.a);
        gemv(&scratch.a, bm, n, k, &mut acc[..n]);
        return;
    }
    scratch.a.resize(m * k.min(PANEL), 0.0);
    scratch.b.resize(k.min(PANEL) * n, 0.0);
    let mut k0 = 0;
    while k0 < k {
        let kb = PANEL.min(k - k0);
        let ap = &mut scratch.a[..m * kb];
        let bp = &mut scratch.b[..kb * n];
        fill_a(k0, kb, ap);
        let b_mat = if bm.rs == 1 && bm.cs != 1 {
            // Columns of b contiguous along k: a column-major panel.
            convert_rows(bm.ptr, k0 as isize, bm.cs, 1, kb, bp);
            Mat { ptr: Ptr(bp.as_ptr()), rs: 1, cs: kb as isize }
        } else {
            convert_rows(bm.ptr, k0 as isize * bm.rs, bm.rs, bm.cs, n, bp);
            Mat { ptr: Ptr(bp.as_ptr()), rs: n as isize, cs: 1 }
        };
        gemm_one(
            m,
            n,
            kb,
            MutPtr(acc.as_mut_ptr()),
            n as isize,
            k0 > 0,
            Mat { ptr: Ptr(ap.as_ptr()), rs: kb as isize, cs: 1 },
            b_mat,
            1.0,
            1.0,
            parallelism(m * n * kb),
        );
        k0 += kb;
    }
}
