//! Matrix products with quantized matrices, reading the packed words directly.
//!
//! Two kernels. Decode (few rows of x, stored matrix transposed, the LLM layout): each output
//! feature is a dot product of x with one packed row, unpacked group by group in registers,
//! scaled once per group; affine 4- and 8-bit have unpacking loops the compiler vectorizes
//! (4-bit reads x in an order matching the nibbles, so no shuffles are needed). Prefill (many
//! rows): a panel of output features is dequantized into a small f32 buffer and multiplied
//! with `gemm`, panels in parallel. Products of gathered matrices (MoE) group the index pairs
//! by matrix, so each matrix is read once for all the rows that use it.

use std::borrow::Cow;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::array::{row_major_strides, Array};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::primitives::{QuantMode, QuantParams};
use crate::shape::broadcast_strides;

use super::formats::{e8m0_to_f32, fp8_table, unpack_codes, FP4_VALUES};
use super::row_major;
use crate::array::Data;
use crate::backend::cpu::iter::{alloc_out, row_offsets, MutPtr, Ptr};
use crate::backend::cpu::simd::{dispatch, Isa};

/// Up to this many rows of x use the decode kernel.
const QMV_MAX_ROWS: usize = 4;
/// Output features per parallel task of the decode kernel.
const QMV_CHUNK: usize = 16;
/// Target size (f32 elements) of a dequantized panel of the prefill kernel.
const PANEL_ELEMS: usize = 1 << 15;

/// A stored scale (or bias): a float in affine mode, a uint8 code in the other modes.
trait Scale: Copy + Send + Sync {
    /// Its value.
    fn value(self) -> f32;
}
impl Scale for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
}
impl Scale for f16 {
    #[inline(always)]
    fn value(self) -> f32 {
        self.to_f32()
    }
}
impl Scale for bf16 {
    #[inline(always)]
    fn value(self) -> f32 {
        self.to_f32()
    }
}
/// A power-of-two E8M0 scale code (mxfp4, mxfp8).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct E8m0(u8);
impl Scale for E8m0 {
    #[inline(always)]
    fn value(self) -> f32 {
        e8m0_to_f32(self.0)
    }
}
/// An FP8 E4M3 scale code (nvfp4).
#[derive(Clone, Copy)]
#[repr(transparent)]
struct E4m3(u8);
impl Scale for E4m3 {
    #[inline(always)]
    fn value(self) -> f32 {
        fp8_table()[self.0 as usize]
    }
}

/// One quantized matrix [rows, cols], packed along cols, row-major.
struct QMat<'a, S> {
    words: &'a [u32],
    scales: &'a [S],
    biases: Option<&'a [S]>,
    rows: usize,
    cols: usize,
    p: QuantParams,
}

impl<S: Scale> QMat<'_, S> {
    fn words_per_row(&self) -> usize {
        self.cols * self.p.bits / 32
    }

    fn groups_per_row(&self) -> usize {
        self.cols / self.p.group_size
    }

    /// Dequantizes groups `g0..g1` of row `r` into `out` (f32; `codes` is scratch).
    #[inline(always)]
    fn dequant(&self, r: usize, g0: usize, g1: usize, out: &mut [f32], codes: &mut [u8]) {
        let (gs, bits) = (self.p.group_size, self.p.bits);
        let wpg = gs * bits / 32;
        let gpr = self.groups_per_row();
        let words = &self.words[r * self.words_per_row()..];
        let fp8 = fp8_table();
        for (g, o) in (g0..g1).zip(out.chunks_mut(gs)) {
            let s = self.scales[r * gpr + g].value();
            let gw = &words[g * wpg..(g + 1) * wpg];
            match self.p.mode {
                QuantMode::Affine => {
                    let b = self.biases.expect("affine matrices have biases")[r * gpr + g].value();
                    if bits == 4 {
                        let bytes: &[u8] = bytemuck::cast_slice(gw);
                        for (pair, &by) in o.chunks_exact_mut(2).zip(bytes) {
                            pair[0] = (by & 15) as f32 * s + b;
                            pair[1] = (by >> 4) as f32 * s + b;
                        }
                    } else if bits == 8 {
                        let bytes: &[u8] = bytemuck::cast_slice(gw);
                        for (v, &by) in o.iter_mut().zip(bytes) {
                            *v = by as f32 * s + b;
                        }
                    } else {
                        unpack_codes(gw, bits, codes);
                        for (v, &c) in o.iter_mut().zip(codes.iter()) {
                            *v = c as f32 * s + b;
                        }
                    }
                }
                QuantMode::Mxfp8 => {
                    let bytes: &[u8] = bytemuck::cast_slice(gw);
                    for (v, &c) in o.iter_mut().zip(bytes) {
                        *v = fp8[c as usize] * s;
                    }
                }
                QuantMode::Mxfp4 | QuantMode::Nvfp4 => {
                    let bytes: &[u8] = bytemuck::cast_slice(gw);
                    for (pair, &by) in o.chunks_exact_mut(2).zip(bytes) {
                        pair[0] = FP4_VALUES[(by & 15) as usize] * s;
                        pair[1] = FP4_VALUES[(by >> 4) as usize] * s;
                    }
                }
            }
        }
    }
}

/// `y = x @ Wᵀ` (`transpose`) or `x @ W` for `r` rows of `x` (f32, row-major); `y` is [r, N].
fn product<S: Scale>(x: &[f32], r: usize, q: &QMat<S>, transpose: bool, y: &mut [f32]) {
    if r == 0 || y.is_empty() {
        return;
    }
    if transpose && r <= QMV_MAX_ROWS {
        match r {
            1 => qmv::<S, 1>(x, q, y),
            2 => qmv::<S, 2>(x, q, y),
            3 => qmv::<S, 3>(x, q, y),
            _ => qmv::<S, 4>(x, q, y),
        }
    } else {
        panel(x, r, q, transpose, y);
    }
}

/// The decode kernel: `R` rows of x against the transposed stored matrix.
fn qmv<S: Scale, const R: usize>(x: &[f32], q: &QMat<S>, y: &mut [f32]) {
    let (k, n, gs) = (q.cols, q.rows, q.p.group_size);
    let affine = q.p.mode == QuantMode::Affine;
    let fast4 = affine && q.p.bits == 4;
    let fast8 = affine && q.p.bits == 8;
    // Per-group sums of x (the bias term), and for 4 bits x with each 32-element block
    // reordered as its even elements then its odd ones (the low and high nibbles).
    let xsum: Vec<f32> = if affine { x.chunks(gs).map(|c| c.iter().sum()).collect() } else { Vec::new() };
    let xp: Cow<[f32]> = if fast4 {
        let mut v = vec![0f32; x.len()];
        for (d, s) in v.chunks_exact_mut(32).zip(x.chunks_exact(32)) {
            for j in 0..16 {
                d[j] = s[2 * j];
                d[16 + j] = s[2 * j + 1];
            }
        }
        Cow::Owned(v)
    } else {
        Cow::Borrowed(x)
    };
    let mut yt = vec![0f32; n * R];
    let body = |(ci, yc): (usize, &mut [f32])| {
        dispatch(
            #[inline(always)]
            |isa| {
                let mut buf = vec![0f32; gs];
                let mut codes = vec![0u8; gs];
                for (i, out) in yc.chunks_exact_mut(R).enumerate() {
                    let row = ci * QMV_CHUNK + i;
                    if fast4 {
                        dot_q4::<S, R>(isa, q, row, &xp, &xsum, out);
                    } else if fast8 {
                        dot_q8::<S, R>(isa, q, row, x, &xsum, out);
                    } else {
                        dot_generic::<S, R>(isa, q, row, x, &mut buf, &mut codes, out);
                    }
                }
            },
        )
    };
    if n * k >= 1 << 15 {
        yt.par_chunks_mut(QMV_CHUNK * R).enumerate().for_each(body);
    } else {
        yt.chunks_mut(QMV_CHUNK * R).enumerate().for_each(body);
    }
    for (j, v) in yt.chunks_exact(R).enumerate() {
        for m in 0..R {
            y[m * n + j] = v[m];
        }
    }
}

/// Horizontal sum of a 16-lane accumulator.
#[inline(always)]
fn hsum(v: &[f32; 16]) -> f32 {
    let mut s = [0f32; 8];
    for j in 0..8 {
        s[j] = v[j] + v[j + 8];
    }
    (s[0] + s[4]) + (s[1] + s[5]) + ((s[2] + s[6]) + (s[3] + s[7]))
}

/// Affine 4-bit row `row` against `R` rows of the reordered x.
#[inline(always)]
fn dot_q4<S: Scale, const R: usize>(isa: Isa, q: &QMat<S>, row: usize, xp: &[f32], xsum: &[f32], out: &mut [f32]) {
    let (k, gs) = (q.cols, q.p.group_size);
    let groups = k / gs;
    let wpr = q.words_per_row();
    let bytes: &[u8] = bytemuck::cast_slice(&q.words[row * wpr..(row + 1) * wpr]);
    let sc = &q.scales[row * groups..(row + 1) * groups];
    let bi = &q.biases.expect("affine matrices have biases")[row * groups..(row + 1) * groups];
    let mut tot = [[0f32; 16]; R];
    let mut bsum = [0f32; R];
    for g in 0..groups {
        let mut acc = [[0f32; 16]; R];
        for blk in 0..gs / 32 {
            let off = g * gs + blk * 32;
            let by: &[u8; 16] = bytes[off / 2..off / 2 + 16].try_into().unwrap();
            let mut lo = [0f32; 16];
            let mut hi = [0f32; 16];
            for j in 0..16 {
                lo[j] = (by[j] & 15) as f32;
                hi[j] = (by[j] >> 4) as f32;
            }
            for m in 0..R {
                let xr: &[f32; 32] = xp[m * k + off..m * k + off + 32].try_into().unwrap();
                for j in 0..16 {
                    acc[m][j] = isa.mul_add(xr[j], lo[j], acc[m][j]);
                }
                for j in 0..16 {
                    acc[m][j] = isa.mul_add(xr[16 + j], hi[j], acc[m][j]);
                }
            }
        }
        let (s, b) = (sc[g].value(), bi[g].value());
        for m in 0..R {
            for j in 0..16 {
                tot[m][j] = isa.mul_add(s, acc[m][j], tot[m][j]);
            }
            bsum[m] = isa.mul_add(b, xsum[m * groups + g], bsum[m]);
        }
    }
    for m in 0..R {
        out[m] = hsum(&tot[m]) + bsum[m];
    }
}

/// Affine 8-bit row `row` against `R` rows of x.
#[inline(always)]
fn dot_q8<S: Scale, const R: usize>(isa: Isa, q: &QMat<S>, row: usize, x: &[f32], xsum: &[f32], out: &mut [f32]) {
    let (k, gs) = (q.cols, q.p.group_size);
    let groups = k / gs;
    let wpr = q.words_per_row();
    let bytes: &[u8] = bytemuck::cast_slice(&q.words[row * wpr..(row + 1) * wpr]);
    let sc = &q.scales[row * groups..(row + 1) * groups];
    let bi = &q.biases.expect("affine matrices have biases")[row * groups..(row + 1) * groups];
    let mut tot = [[0f32; 16]; R];
    let mut bsum = [0f32; R];
    for g in 0..groups {
        let mut acc = [[0f32; 16]; R];
        for blk in 0..gs / 16 {
            let off = g * gs + blk * 16;
            let by: &[u8; 16] = bytes[off..off + 16].try_into().unwrap();
            let mut v = [0f32; 16];
            for j in 0..16 {
                v[j] = by[j] as f32;
            }
            for m in 0..R {
                let xr: &[f32; 16] = x[m * k + off..m * k + off + 16].try_into().unwrap();
                for j in 0..16 {
                    acc[m][j] = isa.mul_add(xr[j], v[j], acc[m][j]);
                }
            }
        }
        let (s, b) = (sc[g].value(), bi[g].value());
        for m in 0..R {
            for j in 0..16 {
                tot[m][j] = isa.mul_add(s, acc[m][j], tot[m][j]);
            }
            bsum[m] = isa.mul_add(b, xsum[m * groups + g], bsum[m]);
        }
    }
    for m in 0..R {
        out[m] = hsum(&tot[m]) + bsum[m];
    }
}

/// Any format: each group dequantized into `buf`, then dotted with the rows of x.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dot_generic<S: Scale, const R: usize>(
    isa: Isa,
    q: &QMat<S>,
    row: usize,
    x: &[f32],
    buf: &mut [f32],
    codes: &mut [u8],
    out: &mut [f32],
) {
    let (k, gs) = (q.cols, q.p.group_size);
    let mut acc = [[0f32; 16]; R];
    for g in 0..k / gs {
        q.dequant(row, g, g + 1, buf, codes);
        for m in 0..R {
            let xr = &x[m * k + g * gs..m * k + (g + 1) * gs];
            for (wc, xc) in buf.chunks_exact(16).zip(xr.chunks_exact(16)) {
                for j in 0..16 {
                    acc[m][j] = isa.mul_add(xc[j], wc[j], acc[m][j]);
                }
            }
        }
    }
    for m in 0..R {
        out[m] = hsum(&acc[m]);
    }
}

/// The prefill kernel: panels of output features dequantized to f32 and multiplied with
/// `gemm`, panels in parallel.
fn panel<S: Scale>(x: &[f32], r: usize, q: &QMat<S>, transpose: bool, y: &mut [f32]) {
    let gs = q.p.group_size;
    let (k, n) = if transpose { (q.cols, q.rows) } else { (q.rows, q.cols) };
    // Panel width: output features whose f32 rows fit PANEL_ELEMS, a multiple of 8 (of the
    // group size when the panel cuts across groups).
    let unit = if transpose { 8 } else { gs };
    let nb = ((PANEL_ELEMS / k.max(1)) / unit * unit).clamp(unit, 128.max(unit));
    let yp = MutPtr(y.as_mut_ptr());
    let xp = Ptr(x.as_ptr());
    let blocks = n.div_ceil(nb);
    (0..blocks).into_par_iter().for_each_init(
        || (vec![0f32; nb * k], vec![0u8; gs]),
        |(buf, codes), bi| {
            let n0 = bi * nb;
            let w = nb.min(n - n0);
            let (rhs_rs, rhs_cs) = if transpose {
                for j in 0..w {
                    q.dequant(n0 + j, 0, k / gs, &mut buf[j * k..(j + 1) * k], codes);
                }
                (1, k as isize)
            } else {
                for kk in 0..k {
                    q.dequant(kk, n0 / gs, (n0 + w) / gs, &mut buf[kk * w..(kk + 1) * w], codes);
                }
                (w as isize, 1)
            };
            // SAFETY: x is r×k, the panel k×w, and columns n0..n0+w of y belong to this task.
            unsafe {
                gemm::gemm(
                    r,
                    w,
                    k,
                    yp.get().add(n0),
                    1,
                    n as isize,
                    false,
                    xp.get(),
                    1,
                    k as isize,
                    buf.as_ptr(),
                    rhs_cs,
                    rhs_rs,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        },
    );
}

/// The operands of a product, read once: x as f32 rows, and the stored matrices.
struct Operands<'a> {
    x: Cow<'a, [f32]>,
    words: &'a [u32],
    scales: Data,
    biases: Option<Data>,
    /// Rows and cols of one stored matrix, and how many there are.
    rows: usize,
    cols: usize,
    count: usize,
}

/// x converted to f32 (borrowed when it already is).
fn x_f32(d: &Data, size: usize, dtype: Dtype) -> Cow<'_, [f32]> {
    fn conv<T: Element<Acc = f32>>(d: &Data, size: usize) -> Vec<f32> {
        // SAFETY: row-major data of `size` elements.
        let s = unsafe { std::slice::from_raw_parts(d.ptr::<T>(), size) };
        s.par_iter().with_min_len(1 << 14).map(|v| v.to_acc()).collect()
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
                product(x, r, &q, transpose, y)
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
/// ([pairs, m, n] of the output dtype). Pairs that share a stored matrix run as one product.
fn run_pairs(
    ops: &Operands,
    p: QuantParams,
    transpose: bool,
    pairs: &[(usize, usize)],
    m: usize,
    shape: &[usize],
    dtype: Dtype,
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
            Ok(())
        }),
        Dtype::F16 => alloc_out::<f16>(shape, |out| {
            compute(&mut y);
            out.par_iter_mut().zip(&y).for_each(|(o, &v)| *o = f16::from_f32(v));
            Ok(())
        }),
        _ => alloc_out::<bf16>(shape, |out| {
            compute(&mut y);
            out.par_iter_mut().zip(&y).for_each(|(o, &v)| *o = bf16::from_f32(v));
            Ok(())
        }),
    }
}

/// Reads the operands (x, packed, scales, biases) of a product node.
fn operands<'a>(inputs: &[Array], p: QuantParams, xd: &'a Data, wd: &'a Data) -> Result<Operands<'a>> {
    let (x, wq) = (&inputs[0], &inputs[1]);
    let rows = wq.shape()[wq.ndim() - 2];
    let cols = wq.shape()[wq.ndim() - 1] * 32 / p.bits;
    let count = wq.size() / (rows * (cols * p.bits / 32)).max(1);
    Ok(Operands {
        x: x_f32(xd, x.size(), x.dtype()),
        // SAFETY: row-major data of wq.size() words.
        words: unsafe { std::slice::from_raw_parts(wd.ptr::<u32>(), wq.size()) },
        scales: row_major(&inputs[2])?,
        biases: if p.mode == QuantMode::Affine { Some(row_major(&inputs[3])?) } else { None },
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
    let ops = operands(inputs, p, &xd, &wd)?;
    let k = *x.shape().last().expect("x has an axis");
    if wq.ndim() == 2 {
        let r = x.size() / k.max(1);
        return run_pairs(&ops, p, transpose, &[(0, 0)], r, shape, dtype);
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
    run_pairs(&ops, p, transpose, &pairs, m, shape, dtype)
}

/// `gather_qmm`: inputs x, packed, scales, (biases), lhs and rhs indices (uint32, one shape).
pub fn gather_qmm(inputs: &[Array], p: QuantParams, transpose: bool, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (x, wq) = (&inputs[0], &inputs[1]);
    let (lhs, rhs) = (&inputs[inputs.len() - 2], &inputs[inputs.len() - 1]);
    let (xd, wd) = (row_major(x)?, row_major(wq)?);
    let ops = operands(inputs, p, &xd, &wd)?;
    let nd = x.ndim();
    let (m, k) = (x.shape()[nd - 2], x.shape()[nd - 1]);
    let x_count = x.size() / (m * k).max(1);
    let (ld, rd) = (lhs.data()?, rhs.data()?);
    let idx_shape = lhs.shape();
    let strides = [ld.strides.clone(), rd.strides.clone()];
    let (lp, rp) = (Ptr(ld.ptr::<u32>()), Ptr(rd.ptr::<u32>()));
    let pairs = (0..lhs.size())
        .map(|i| {
            let [lo, ro] = row_offsets::<2>(idx_shape, &strides, i);
            // SAFETY: offsets inside each index array's view.
            let (xi, wi) = unsafe { (lp.at(lo) as usize, rp.at(ro) as usize) };
            if xi >= x_count || wi >= ops.count {
                return Err(Error::invalid(
                    "gather_qmm",
                    format!("index pair ({xi}, {wi}) out of range: x has {x_count} matrices, w has {}", ops.count),
                ));
            }
            Ok((xi, wi))
        })
        .collect::<Result<Vec<_>>>()?;
    run_pairs(&ops, p, transpose, &pairs, m, shape, dtype)
}
