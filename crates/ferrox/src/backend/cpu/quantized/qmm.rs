//! Matrix products with quantized matrices, reading the packed words directly.
//!
//! Two kernels: decode (few rows of x, stored matrix transposed, the LLM layout; [`qmv`]) and
//! prefill (many rows, or the matrix not transposed; [`panel`]). This module reads the
//! operands and runs the products; products of gathered matrices (MoE) group the index pairs
//! by matrix, so each matrix is read once for all the rows that use it.

use std::borrow::Cow;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::array::{row_major_strides, Array};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::Result;
use crate::primitives::{QuantMode, QuantParams};
use crate::shape::broadcast_strides;

use super::row_major;
use crate::array::Data;
use crate::backend::cpu::iter::{alloc_out, row_offsets, PAR_THRESHOLD};
use crate::backend::cpu::simd::{best_isa, dispatch};

use super::panel::panel;
use super::qmv::{qmv, QMV_MAX_ROWS};
use super::view::{ScaleSlice, View};
use super::{qmm_bf16, qmm_i16, qmv_bf16, qmv_i16};

/// A stored scale (or bias): a float in affine mode, a uint8 code in the other modes.
pub(super) trait Scale: Copy + Send + Sync {
    /// A slice of them, as the kernels read it.
    fn slice(s: &[Self]) -> ScaleSlice<'_>;
}
impl Scale for f32 {
    fn slice(s: &[Self]) -> ScaleSlice<'_> {
        ScaleSlice::F32(s)
    }
}
impl Scale for f16 {
    fn slice(s: &[Self]) -> ScaleSlice<'_> {
        ScaleSlice::F16(s)
    }
}
impl Scale for bf16 {
    fn slice(s: &[Self]) -> ScaleSlice<'_> {
        ScaleSlice::Bf16(s)
    }
}
/// A power-of-two E8M0 scale code (mxfp4, mxfp8).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct E8m0(pub(super) u8);
impl Scale for E8m0 {
    fn slice(s: &[Self]) -> ScaleSlice<'_> {
        // SAFETY: a repr(transparent) u8.
        ScaleSlice::E8m0(unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, s.len()) })
    }
}
/// An FP8 E4M3 scale code (nvfp4).
#[derive(Clone, Copy)]
#[repr(transparent)]
pub(super) struct E4m3(pub(super) u8);
impl Scale for E4m3 {
    fn slice(s: &[Self]) -> ScaleSlice<'_> {
        // SAFETY: a repr(transparent) u8.
        ScaleSlice::E4m3(unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, s.len()) })
    }
}

/// One quantized matrix [rows, cols], packed along cols, row-major.
pub(super) struct QMat<'a, S> {
    pub words: &'a [u32],
    pub scales: &'a [S],
    pub biases: Option<&'a [S]>,
    pub rows: usize,
    pub cols: usize,
    pub p: QuantParams,
}

/// `y = x @ Wᵀ` (`transpose`) or `x @ W` for `r` rows of `x` (f32, row-major); `y` is [r, N].
/// `x_dtype`: the dtype x had before it was widened to f32 (the bf16 kernels take bfloat16
/// values exactly; the integer decode kernel is for half-precision x).
fn product<S: Scale>(x: &[f32], x_dtype: Dtype, r: usize, q: &QMat<S>, transpose: bool, y: &mut [f32]) {
    if r == 0 || y.is_empty() {
        return;
    }
    let x_bf16 = x_dtype == Dtype::Bf16;
    if transpose && r <= QMV_MAX_ROWS {
        let v = View::of(q);
        if x_bf16 && qmv_bf16::applies(&v) {
            qmv_bf16::qmv_bf16(x, r, &v, y);
        } else if matches!(x_dtype, Dtype::Bf16 | Dtype::F16) && qmv_i16::applies(&v) {
            // Half-precision x only: its rounding of x (1.5e-5 of a group's largest) is far
            // below a bf16 or f16 element's own precision, not below an f32 one's.
            qmv_i16::qmv_i16(x, r, &v, y);
        } else {
            qmv(best_isa(), x, r, q, y);
        }
    } else if transpose && x_bf16 && qmm_bf16::applies(&View::of(q)) {
        qmm_bf16::qmm_bf16(x, r, &View::of(q), y);
    } else if transpose && matches!(x_dtype, Dtype::Bf16 | Dtype::F16) && qmm_i16::applies(&View::of(q)) {
        // Half-precision x only, as for the integer decode kernel.
        qmm_i16::qmm_i16(x, r, &View::of(q), y);
    } else {
        panel(best_isa(), x, r, q, transpose, y);
    }
}

/// The operands of a product, read once: x as f32 rows, and the stored matrices.
struct Operands<'a> {
    x: Cow<'a, [f32]>,
    /// x's dtype before widening (bfloat16 values widen to f32 exactly).
    x_dtype: Dtype,
    words: &'a [u32],
    scales: Data,
    biases: Option<Data>,
    /// Rows and cols of one stored matrix, and how many there are.
    rows: usize,
    cols: usize,
    count: usize,
}

/// `dst[i] = src[i]` through f32, in vectors; split across threads only when large (a decode
/// step's vectors are converted on the calling thread).
fn convert<S: Element<Acc = f32>, D: Element<Acc = f32>>(src: &[S], dst: &mut [D]) {
    let run = |s: &[S], d: &mut [D]| {
        dispatch(
            #[inline(always)]
            |_| {
                for (o, &v) in d.iter_mut().zip(s) {
                    *o = D::from_acc(v.to_acc());
                }
            },
        )
    };
    if src.len() < PAR_THRESHOLD {
        run(src, dst);
    } else {
        dst.par_chunks_mut(PAR_THRESHOLD / 2).zip(src.par_chunks(PAR_THRESHOLD / 2)).for_each(|(d, s)| run(s, d));
    }
}

/// x converted to f32 (borrowed when it already is).
fn x_f32(d: &Data, size: usize, dtype: Dtype) -> Cow<'_, [f32]> {
    fn conv<T: Element<Acc = f32>>(d: &Data, size: usize) -> Vec<f32> {
        // SAFETY: row-major data of `size` elements.
        let s = unsafe { std::slice::from_raw_parts(d.ptr::<T>(), size) };
        let mut x = vec![0f32; size];
        convert(s, &mut x);
        x
    }
    match dtype {
        // SAFETY: as above.
        Dtype::F32 => Cow::Borrowed(unsafe { std::slice::from_raw_parts(d.ptr::<f32>(), size) }),
        Dtype::F16 => Cow::Owned(conv::<f16>(d, size)),
        _ => Cow::Owned(conv::<bf16>(d, size)),
    }
}

/// Runs `f` with the stored matrix `i` of the operands, typed by mode and dtype.
fn with_matrices<R>(
    ops: &Operands,
    p: QuantParams,
    dtype: Dtype,
    f: impl FnOnce(&dyn Fn(usize, &[f32], usize, bool, &mut [f32])) -> R,
) -> R {
    macro_rules! typed {
        ($S:ty, $B:ty) => {{
            let groups = ops.rows * ops.cols / p.group_size;
            let total = groups * ops.count;
            // SAFETY: the scales (and biases) are row-major with `total` elements; the uint8
            // codes are reinterpreted as their repr(transparent) wrappers.
            let scales = unsafe { std::slice::from_raw_parts(ops.scales.ptr::<$B>() as *const $S, total) };
            let biases =
                ops.biases.as_ref().map(|b| unsafe { std::slice::from_raw_parts(b.ptr::<$B>() as *const $S, total) });
            let wpm = ops.rows * ops.cols * p.bits / 32;
            let run = |i: usize, x: &[f32], r: usize, transpose: bool, y: &mut [f32]| {
                let q = QMat {
                    words: &ops.words[i * wpm..(i + 1) * wpm],
                    scales: &scales[i * groups..(i + 1) * groups],
                    biases: biases.map(|b| &b[i * groups..(i + 1) * groups]),
                    rows: ops.rows,
                    cols: ops.cols,
                    p,
                };
                product(x, ops.x_dtype, r, &q, transpose, y)
            };
            f(&run)
        }};
    }
    match (p.mode, dtype) {
        (QuantMode::Affine, Dtype::F32) => typed!(f32, f32),
        (QuantMode::Affine, Dtype::F16) => typed!(f16, f16),
        (QuantMode::Affine, _) => typed!(bf16, bf16),
        (QuantMode::Nvfp4, _) => typed!(E4m3, u8),
        _ => typed!(E8m0, u8),
    }
}

/// Runs the products of `pairs` (x matrix, stored matrix), each of `m` rows, into `out`
/// ([pairs, m, n] of the output dtype), plus `addend` (row-major, of the output's shape and
/// dtype) if given, added to the product rounded to the dtype, as an `add` after the product
/// would. Pairs that share a stored matrix run as one product.
#[allow(clippy::too_many_arguments)]
fn run_pairs(
    ops: &Operands,
    p: QuantParams,
    transpose: bool,
    pairs: &[(usize, usize)],
    m: usize,
    shape: &[usize],
    dtype: Dtype,
    addend: Option<&Data>,
) -> Result<Data> {
    let (k, n) = if transpose { (ops.cols, ops.rows) } else { (ops.rows, ops.cols) };
    let total = pairs.len() * m * n;
    let mut y = vec![0f32; if dtype == Dtype::F32 { 0 } else { total }];
    let compute = |y: &mut [f32]| {
        with_matrices(ops, p, dtype, |run| {
            // Group the pairs by stored matrix, in order of first use.
            let mut order: Vec<usize> = (0..pairs.len()).collect();
            order.sort_by_key(|&i| pairs[i].1);
            for group in order.chunk_by(|&a, &b| pairs[a].1 == pairs[b].1) {
                let wi = pairs[group[0]].1;
                if group.len() == 1 {
                    let (xi, i) = (pairs[group[0]].0, group[0]);
                    run(wi, &ops.x[xi * m * k..(xi + 1) * m * k], m, transpose, &mut y[i * m * n..(i + 1) * m * n]);
                    continue;
                }
                let mut xs = Vec::with_capacity(group.len() * m * k);
                for &i in group {
                    let xi = pairs[i].0;
                    xs.extend_from_slice(&ops.x[xi * m * k..(xi + 1) * m * k]);
                }
                let mut ys = vec![0f32; group.len() * m * n];
                run(wi, &xs, group.len() * m, transpose, &mut ys);
                for (&i, yv) in group.iter().zip(ys.chunks_exact(m * n)) {
                    y[i * m * n..(i + 1) * m * n].copy_from_slice(yv);
                }
            }
        })
    };
    match dtype {
        Dtype::F32 => alloc_out::<f32>(shape, |out| {
            compute(out);
            add_addend(out, addend, total);
            Ok(())
        }),
        Dtype::F16 => alloc_out::<f16>(shape, |out| {
            compute(&mut y);
            convert(&y, out);
            add_addend(out, addend, total);
            Ok(())
        }),
        _ => alloc_out::<bf16>(shape, |out| {
            compute(&mut y);
            convert(&y, out);
            add_addend(out, addend, total);
            Ok(())
        }),
    }
}

/// `out[i] += c[i]` for an addend `c` (`total` values) in the compute type, rounded to `D`
/// (an `add` of two `D` arrays), in vectors on the calling thread (a decode step's few
/// thousand values); nothing without one.
fn add_addend<D: Element<Acc = f32>>(out: &mut [D], c: Option<&Data>, total: usize) {
    let Some(c) = c else { return };
    // SAFETY: the addend is row-major data of the output's `total` elements and dtype.
    let c = unsafe { std::slice::from_raw_parts(c.ptr::<D>(), total) };
    dispatch(
        #[inline(always)]
        |_| {
            for (o, &c) in out.iter_mut().zip(c) {
                *o = D::from_acc(o.to_acc() + c.to_acc());
            }
        },
    )
}

/// Reads the operands of a product node: x (as f32 values of `x_dtype`), and from `mats` the
/// packed matrix (row-major `wd`), scales and biases.
fn operands<'a>(
    x: Cow<'a, [f32]>,
    x_dtype: Dtype,
    mats: &[Array],
    p: QuantParams,
    wd: &'a Data,
) -> Result<Operands<'a>> {
    let wq = &mats[0];
    let rows = wq.shape()[wq.ndim() - 2];
    let cols = wq.shape()[wq.ndim() - 1] * 32 / p.bits;
    let count = wq.size() / (rows * (cols * p.bits / 32)).max(1);
    Ok(Operands {
        x,
        x_dtype,
        // SAFETY: row-major data of wq.size() words.
        words: unsafe { std::slice::from_raw_parts(wd.ptr::<u32>(), wq.size()) },
        scales: row_major(&mats[1])?,
        biases: if p.mode == QuantMode::Affine { Some(row_major(&mats[2])?) } else { None },
        rows,
        cols,
        count,
    })
}

/// `quantized_matmul`: inputs x, packed, scales, (biases); output `shape` of `dtype`.
pub fn quantized_matmul(
    inputs: &[Array],
    p: QuantParams,
    transpose: bool,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Data> {
    let (x, wq) = (&inputs[0], &inputs[1]);
    let (xd, wd) = (row_major(x)?, row_major(wq)?);
    let ops = operands(x_f32(&xd, x.size(), x.dtype()), x.dtype(), &inputs[1..], p, &wd)?;
    let k = *x.shape().last().expect("x has an axis");
    if wq.ndim() == 2 {
        let r = x.size() / k.max(1);
        return run_pairs(&ops, p, transpose, &[(0, 0)], r, shape, dtype, None);
    }
    // Batched: the output's batch axes broadcast those of x and of the stored matrices.
    let nd = shape.len();
    let (batch, m) = (&shape[..nd - 2], shape[nd - 2]);
    let flat = |s: &[usize]| broadcast_strides(s, &row_major_strides(s), batch);
    let strides = [flat(&x.shape()[..x.ndim() - 2]), flat(&wq.shape()[..wq.ndim() - 2])];
    let nbatch: usize = batch.iter().product();
    let pairs: Vec<(usize, usize)> = (0..nbatch)
        .map(|b| {
            let [xi, wi] = row_offsets::<2>(batch, &strides, b);
            (xi as usize, wi as usize)
        })
        .collect();
    run_pairs(&ops, p, transpose, &pairs, m, shape, dtype, None)
}

/// A decode product with its input's norm and the residual add after it joined in
/// ([`Op::JoinedMatmul`](crate::primitives::Op::JoinedMatmul) as `backend::cpu::join` plans
/// it): `[rms_norm(x, weight, eps)] @ dequantize(w)ᵀ [+ c]`, bit for bit the ops it stands
/// for. Inputs: x (and the norm's weight if `norm` says it has one), one stored matrix
/// `[N, K]` (packed, scales, biases if affine; not a stack), then c if `add`.
pub fn joined_matmul(
    inputs: &[Array],
    norm: Option<(f32, bool)>,
    add: bool,
    p: QuantParams,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Data> {
    let x = &inputs[0];
    let first = norm.map_or(1, |(_, weight)| 1 + weight as usize);
    let mats = &inputs[first..first + p.mode.matrix_inputs()];
    let wd = row_major(&mats[0])?;
    let xd;
    let xs = match norm {
        Some((eps, weight)) => Cow::Owned(super::super::fast::rms_norm_f32(x, weight.then(|| &inputs[1]), eps)?),
        None => {
            xd = row_major(x)?;
            x_f32(&xd, x.size(), x.dtype())
        }
    };
    let ops = operands(xs, x.dtype(), mats, p, &wd)?;
    let addend = if add { Some(row_major(&inputs[inputs.len() - 1])?) } else { None };
    let r = x.size() / x.shape().last().copied().unwrap_or(1).max(1);
    run_pairs(&ops, p, true, &[(0, 0)], r, shape, dtype, addend.as_ref())
}

/// `gather_qmm`: inputs x, packed, scales, (biases), lhs and rhs indices (uint32, one shape).
pub fn gather_qmm(inputs: &[Array], p: QuantParams, transpose: bool, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (x, wq) = (&inputs[0], &inputs[1]);
    let (lhs, rhs) = (&inputs[inputs.len() - 2], &inputs[inputs.len() - 1]);
    let (xd, wd) = (row_major(x)?, row_major(wq)?);
    let ops = operands(x_f32(&xd, x.size(), x.dtype()), x.dtype(), &inputs[1..], p, &wd)?;
    let nd = x.ndim();
    let (m, k) = (x.shape()[nd - 2], x.shape()[nd - 1]);
    let x_count = x.size() / (m * k).max(1);
    let pairs = crate::backend::cpu::gather_mm::index_pairs("gather_qmm", lhs, rhs, x_count, ops.count)?;
    run_pairs(&ops, p, transpose, &pairs, m, shape, dtype, None)
}
