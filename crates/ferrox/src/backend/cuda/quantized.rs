//! Quantized matrices — affine (1–8 bits, groups of 32 or more) and the floating-point
//! formats mxfp4, nvfp4 and mxfp8: dequantize, and `quantized_matmul` — a matrix-vector
//! kernel reading the packed words directly for decode (up to 8 rows of x against the
//! transposed stored matrix), and for prefill the matrix dequantized into a temporary of x's
//! dtype and multiplied on the tensor cores by cuBLAS. `gather_qmm` (MoE experts) with up to
//! 8 rows per x matrix runs the decode kernel with its index pair read on the device; with
//! more rows, without the transpose, or with sorted indices over many rows (a prompt), it and
//! `quantized_matmul` of a stack of matrices run the tiled kernel of [`super::gather_mm`] with
//! a dequantizing tile loader. `quantize` runs a thread a group with the CPU's arithmetic
//! (packed words, scales and biases equal bit for bit).

use cudarc::driver::LaunchConfig;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{QuantMode, QuantOp, QuantParams, QuantPart};

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::copy;
use super::gather_mm::{self, BSide, Dims, Pairs};
use super::layout::{ctype, launch, launch_cfg, launch_overlapped, Arg};
use super::matmul::{GemvRope, GemvX};

const SRC: &str = include_str!("kernels/quantized.cu");
/// Rows of x up to which the matrix-vector kernel runs.
const QMV_MAX_ROWS: usize = 8;
/// Threads of a block of the matrix-vector kernel (QMV_WARPS of quantized.cu).
const QMV_THREADS: u32 = 128;
/// Output features a block of the matrix-vector kernel takes (QMV_WARPS / QMV_SPLIT · QMV_COLS).
const QMV_FEATURES: usize = 8;
/// Output features a warp group of the matrix-vector kernel takes (QMV_COLS).
const QMV_COLS: usize = 4;
/// Threads and output features a block of the long-k kernel takes (`qmv_long_M`:
/// QMV_LONG_WARPS · 32, QMV_LONG_WARPS / QMV_LONG_SPLIT · QMV_LONG_COLS).
const QMV_LONG_THREADS: u32 = 256;
const QMV_LONG_FEATURES: usize = 16;
/// The fewest features a product takes the long-k kernel for (with k at least as long): fewer
/// make too few of its blocks (k / v projections measured slower).
const QMV_LONG_MIN_FEATURES: usize = 2048;
/// Rows (pairs × rows of x) from which `gather_qmm` with sorted indices takes the tiled kernel:
/// enough that runs of rows share their matrix (a prompt's tokens routed to experts), where the
/// matrix-vector kernel would read a matrix once per pair.
const TILED_SORTED_ROWS: usize = 128;

/// FMT of quantized.cu for a format.
fn fmt(mode: QuantMode) -> u32 {
    match mode {
        QuantMode::Affine => 0,
        QuantMode::Mxfp4 => 1,
        QuantMode::Nvfp4 => 2,
        QuantMode::Mxfp8 => 3,
    }
}

/// Kernel `name` of the quantized module for `t` and `p`; `qmv_m` > 0 selects the module of
/// the matrix-vector kernels for up to that many rows (QMV_M of quantized.cu), 0 the one of
/// dequantize, quantize and the tiled product (gather_mm.cu).
fn function(g: &Gpu, t: Dtype, p: QuantParams, name: &str, qmv_m: usize) -> Result<cudarc::driver::CudaFunction> {
    let (c, bits, f) = (ctype(t), p.bits, fmt(p.mode));
    let (m, tiled) = if qmv_m > 0 { (format!("#define QMV_M {qmv_m}\n"), "") } else { (String::new(), gather_mm::SRC) };
    g.function(&format!("quantized {c} {bits} {f} {qmv_m}"), name, || {
        format!("{COMMON}\n#define T {c}\n#define BITS {bits}\n#define FMT {f}\n{m}{SRC}\n{tiled}\n")
    })
}

/// Row-major data of `x` on the device and its address.
fn row_major(g: &Gpu, x: &Array) -> Result<(Data, u64)> {
    let d = x.data()?;
    let d = if d.is_row_contiguous(x.shape()) { d } else { copy(g, x)? };
    let p = device_ptr(g, &d, x.dtype())?;
    Ok((d, p))
}

/// Row-major data of `x` on the device at a 16-byte aligned address (copied if a view starts
/// elsewhere), and that address: the matrix-vector kernels read rows of x as 16-byte vectors.
fn aligned_rows(g: &Gpu, x: &Array) -> Result<(Data, u64)> {
    let (d, p) = row_major(g, x)?;
    if p.is_multiple_of(16) {
        return Ok((d, p));
    }
    let d = copy(g, x)?;
    let p = device_ptr(g, &d, x.dtype())?;
    Ok((d, p))
}

/// The stored matrix: packed words, scales, biases (each row-major, kept alive; no biases in
/// the floating-point formats: address 0), its rows and columns, and its format.
struct Stored {
    _keep: Vec<Data>,
    w: u64,
    scales: u64,
    biases: u64,
    rows: usize,
    cols: usize,
    params: QuantParams,
}

impl Stored {
    /// The kernels' leading arguments: the packed words, scales and biases.
    fn args(&self) -> [Arg<'static>; 3] {
        [Arg::U64(self.w), Arg::U64(self.scales), Arg::U64(self.biases)]
    }

    /// The leading arguments of the matrix-vector kernels (qmv_M, qmv_rms_M, gather_qmv_M):
    /// the output's and x's addresses, these matrices, n, k and the group size.
    fn qmv_args<'a>(&self, out: u64, x: u64, n: usize, k: usize) -> Vec<Arg<'a>> {
        let [w, s, b] = self.args();
        let dims = [n, k, self.params.group_size].map(|v| Arg::I64(v as i64));
        [Arg::U64(out), Arg::U64(x), w, s, b].into_iter().chain(dims).collect()
    }

    /// The product's (k, n): x's last axis and the output's, with or without the transpose.
    fn product_dims(&self, transpose: bool) -> (usize, usize) {
        if transpose {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// The tiled kernel's product of x and these matrices (kept as [N, K] when `transpose`)
    /// over `pairs`, into a fresh output of `shape`.
    fn tiled(&self, g: &Gpu, x: &Array, transpose: bool, pairs: &Pairs, d: &Dims, shape: &[usize]) -> Result<Data> {
        let b = BSide {
            ptrs: [self.w, self.scales, self.biases],
            strides: [0; 3],
            group_size: self.params.group_size,
            trans: transpose,
        };
        let f = function(g, x.dtype(), self.params, "gather_mm_tiled", 0)?;
        gather_mm::tiled(g, &f, x, &b, pairs, d, shape)
    }
}

/// The stored matrix of an op over `inputs` (x, packed, scales, then biases if affine), if
/// the kernels handle it: one matrix (a stack [..., rows, words] when `batched`; `rows` is
/// then that of one matrix), affine scales and biases of `dtype` or uint8 scale codes, groups
/// of 16 or a multiple of 32.
fn stored(g: &Gpu, inputs: &[Array], p: QuantParams, dtype: Dtype, batched: bool) -> Result<Option<Stored>> {
    let (wq, s) = (&inputs[1], &inputs[2]);
    let affine = p.mode == QuantMode::Affine;
    let scales_ok = if affine {
        s.dtype() == dtype && inputs.get(3).is_some_and(|b| b.dtype() == dtype)
    } else {
        s.dtype() == Dtype::U8
    };
    if !scales_ok
        || !(1..=8).contains(&p.bits)
        || !(p.group_size == 16 || (p.group_size >= 32 && p.group_size.is_multiple_of(32)))
        || (wq.ndim() != 2 && !(batched && wq.ndim() > 2))
        || wq.dtype() != Dtype::U32
        || !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16)
    {
        return Ok(None);
    }
    let rows = wq.shape()[wq.ndim() - 2];
    let cols = wq.shape()[wq.ndim() - 1] * 32 / p.bits;
    if !cols.is_multiple_of(p.group_size.max(32)) {
        return Ok(None);
    }
    let (dw, pw) = row_major(g, wq)?;
    let (ds, ps) = row_major(g, s)?;
    let mut keep = vec![dw, ds];
    let pb = if affine {
        let (db, pb) = row_major(g, &inputs[3])?;
        keep.push(db);
        pb
    } else {
        0
    };
    Ok(Some(Stored { _keep: keep, w: pw, scales: ps, biases: pb, rows, cols, params: p }))
}

/// Dequantizes the stored matrix into a fresh row-major [rows, cols] array of `dtype`.
fn dequantize_into(g: &Gpu, m: &Stored, p: QuantParams, dtype: Dtype) -> Result<Data> {
    let (out, po) = alloc_out(&[m.rows, m.cols], dtype)?;
    // A thread per 8 codes.
    let n = m.rows * m.cols / 8;
    if n > 0 {
        let f = function(g, dtype, p, "dequantize", 0)?;
        let [w, s, b] = m.args();
        let args =
            [Arg::U64(po), w, s, b, Arg::I64(m.rows as i64), Arg::I64(m.cols as i64), Arg::I64(p.group_size as i64)];
        launch(g, &f, g.grid(n, 256), 256, &args)?;
    }
    Ok(out)
}

/// Evaluates a quantized op on the GPU, or `None` for what the kernels lack.
pub(crate) fn eval(
    g: &Gpu,
    op: QuantOp,
    p: QuantParams,
    inputs: &[Array],
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    match op {
        QuantOp::Dequantize => {
            // As a product's inputs, with a placeholder for x.
            let ins: Vec<Array> = std::iter::once(inputs[0].clone()).chain(inputs.iter().cloned()).collect();
            if ins.len() < 1 + p.mode.matrix_inputs() {
                return Ok(None);
            }
            let Some(m) = stored(g, &ins, p, dtype, false)? else { return Ok(None) };
            if shape != [m.rows, m.cols] {
                return Ok(None);
            }
            Ok(Some(dequantize_into(g, &m, p, dtype)?))
        }
        QuantOp::Quantize(part) => quantize(g, part, p, &inputs[0], shape, dtype),
        QuantOp::Matmul { transpose } => matmul(g, inputs, p, transpose, shape, dtype),
        QuantOp::GatherMatmul { transpose, sorted } => gather_qmm(g, inputs, p, transpose, sorted, shape, dtype),
    }
}

/// One output (`part`) of quantizing `w` along its last axis, bit for bit as the CPU does it
/// (a thread a group); `None` for a dtype the kernels lack.
fn quantize(
    g: &Gpu,
    part: QuantPart,
    p: QuantParams,
    w: &Array,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    if !matches!(w.dtype(), Dtype::F32 | Dtype::F16 | Dtype::Bf16) || !(1..=8).contains(&p.bits) {
        return Ok(None);
    }
    let (out, po) = alloc_out(shape, dtype)?;
    let groups = w.size() / p.group_size.max(1);
    if groups == 0 {
        return Ok(Some(out));
    }
    let (_kw, pw) = row_major(g, w)?;
    let code = match part {
        QuantPart::Packed => 0,
        QuantPart::Scales => 1,
        QuantPart::Biases => 2,
    };
    let f = function(g, w.dtype(), p, "quantize", 0)?;
    let args = [Arg::U64(po), Arg::U64(pw), Arg::I64(groups as i64), Arg::I32(p.group_size as i32), Arg::I32(code)];
    launch(g, &f, g.grid(groups, 128), 128, &args)?;
    Ok(Some(out))
}

/// `gather_qmm`: the matrix-vector kernel with the index pair read on the device (blocks over
/// pairs) for up to 8 rows per x matrix with the transpose, unless sorted indices promise runs
/// of rows per matrix (a prompt through a mixture of experts); else the tiled kernel.
fn gather_qmm(
    g: &Gpu,
    inputs: &[Array],
    p: QuantParams,
    transpose: bool,
    sorted: bool,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let x = &inputs[0];
    let n_in = inputs.len();
    let (lhs, rhs) = (&inputs[n_in - 2], &inputs[n_in - 1]);
    if x.dtype() != dtype || n_in != 1 + p.mode.matrix_inputs() + 2 || x.ndim() < 2 {
        return Ok(None);
    }
    let Some(m) = stored(g, inputs, p, dtype, true)? else { return Ok(None) };
    let (rows, k) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
    let (kk, n) = m.product_dims(transpose);
    if k != kk {
        return Ok(None);
    }
    let nw = inputs[1].size() / (m.rows * m.cols * p.bits / 32).max(1);
    let nx = x.size() / (rows * k).max(1);
    let pairs = lhs.size();
    let Some(pr) = Pairs::indexed(g, lhs, rhs)? else { return Ok(None) };
    if !transpose || rows > QMV_MAX_ROWS || pairs > 65535 || (sorted && pairs * rows >= TILED_SORTED_ROWS) {
        let dims = Dims { m: rows, k, n, nx, nw };
        return Ok(Some(m.tiled(g, x, transpose, &pr, &dims, shape)?));
    }
    let (out, po) = alloc_out(shape, dtype)?;
    if pairs * n == 0 || nx == 0 || nw == 0 {
        return Ok(if pairs * n == 0 { Some(out) } else { None });
    }
    let (_kx, px) = aligned_rows(g, x)?;
    if m.w % 16 != 0 {
        return Ok(None);
    }
    let mr = rows.next_power_of_two();
    let f = function(g, dtype, p, &format!("gather_qmv_{mr}"), mr)?;
    let mut args = m.qmv_args(po, px, n, k);
    args.extend([
        Arg::U64(pr.lhs),
        Arg::U64(pr.rhs),
        Arg::Layout(&pr.layout),
        Arg::I64(nx as i64),
        Arg::I64(nw as i64),
        Arg::I32(rows as i32),
    ]);
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(QMV_FEATURES) as u32, pairs as u32, 1),
        block_dim: (QMV_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    launch_cfg(g, &f, cfg, &args)?;
    Ok(Some(out))
}

/// `x @ dequantize(w)ᵀ` (or without the transpose) for one stored matrix.
fn matmul(
    g: &Gpu,
    inputs: &[Array],
    p: QuantParams,
    transpose: bool,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let x = &inputs[0];
    if x.dtype() != dtype || inputs.len() != 1 + p.mode.matrix_inputs() {
        return Ok(None);
    }
    if inputs[1].ndim() > 2 {
        return batched_matmul(g, inputs, p, transpose, shape, dtype);
    }
    let Some(m) = stored(g, inputs, p, dtype, false)? else { return Ok(None) };
    let k = *x.shape().last().unwrap_or(&0);
    let kk = m.product_dims(transpose).0;
    if k != kk {
        return Ok(None);
    }
    // Decode: the matrix-vector kernel, where it takes the rows.
    if transpose {
        if let Some(out) = qmv(g, x, &m, None, None, None, shape, dtype)? {
            return Ok(Some(out));
        }
    }
    // Prefill: dequantize, then a cuBLAS product with the matrix (transposed) as a view.
    let wd = dequantize_into(g, &m, p, dtype)?;
    let (wshape, wdata) = if transpose {
        (vec![m.cols, m.rows], Data { strides: vec![1, m.cols as isize], ..wd })
    } else {
        (vec![m.rows, m.cols], wd)
    };
    let w = Array::from_data(wshape, dtype, wdata);
    super::matmul::matmul(g, &[x.clone(), w], 1.0, 0.0, shape, dtype)
}

/// `x @ dequantize(w)ᵀ` for the few rows of a decode step with the matrix-vector kernel
/// (qmv_M; qmv_rms_M with `norm`: x normalized by the kernel as `rms_norm(x, weight, eps)`,
/// and the residual `addend` added before the one rounding; `*_rope_M` with `rope`: the output
/// of `shape` is the product's rotated heads, no addend; `qmv_long_M` for a plain product of
/// 1–2 rows whose k is at least its [`QMV_LONG_MIN_FEATURES`] or more features); `None` where
/// it does not fit.
#[allow(clippy::too_many_arguments)]
fn qmv(
    g: &Gpu,
    x: &Array,
    m: &Stored,
    norm: Option<(Option<&Array>, f32)>,
    addend: Option<&Array>,
    rope: Option<&GemvRope>,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let k = *x.shape().last().unwrap_or(&0);
    let (kk, n) = m.product_dims(true);
    let rows = x.size() / k.max(1);
    let fits = match rope {
        Some(r) => addend.is_none() && r.fits(n, rows, QMV_COLS),
        None => shape.last() == Some(&n),
    };
    if k != kk || rows > QMV_MAX_ROWS || !m.w.is_multiple_of(16) || !fits {
        return Ok(None);
    }
    let (out, po) = alloc_out(shape, dtype)?;
    if rows * n == 0 {
        return Ok(Some(out));
    }
    let (_kx, px) = aligned_rows(g, x)?;
    let mut keep = Vec::new();
    let mut pointer = |a: &Array, align16: bool| -> Result<u64> {
        let (d, p) = if align16 { aligned_rows(g, a)? } else { row_major(g, a)? };
        keep.push(d);
        Ok(p)
    };
    let pc = match addend {
        Some(c) if c.shape() == shape && c.dtype() == dtype => pointer(c, false)?,
        Some(_) => return Ok(None),
        None => 0,
    };
    let (name, pn, eps) = match norm {
        Some((Some(w), eps)) if w.shape() == [k] && w.dtype() == dtype => ("qmv_rms", pointer(w, true)?, eps),
        Some((Some(_), _)) => return Ok(None),
        Some((None, eps)) => ("qmv_rms", 0, eps),
        None => ("qmv", 0, 0.0),
    };
    let mr = rows.next_power_of_two();
    // A plain product of 1–2 rows whose k is long beside its features: more warps split k.
    let long = norm.is_none() && rope.is_none() && rows <= 2 && k >= n && n >= QMV_LONG_MIN_FEATURES;
    let (name, threads, features) = match rope {
        _ if long => ("qmv_long".to_string(), QMV_LONG_THREADS, QMV_LONG_FEATURES),
        Some(_) => (format!("{name}_rope"), QMV_THREADS, QMV_FEATURES),
        None => (name.to_string(), QMV_THREADS, QMV_FEATURES),
    };
    let f = function(g, dtype, m.params, &format!("{name}_{mr}"), mr)?;
    let mut args = m.qmv_args(po, px, n, k);
    args.extend([Arg::I32(rows as i32), Arg::U64(pc), Arg::U64(pn), Arg::F32(eps)]);
    if let Some(r) = rope {
        args.push(Arg::GemvRope(r));
    }
    let cfg =
        LaunchConfig { grid_dim: (n.div_ceil(features) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    launch_overlapped(g, &f, cfg, &args)?;
    Ok(Some(out))
}

/// [`Op::JoinedMatmul`](crate::primitives::Op::JoinedMatmul) of a quantized matrix: the
/// product of `x` (normalized by the kernel for [`GemvX::RmsNorm`]) and the stored matrix
/// whose packed words, scales and (affine) biases begin `rest`, plus, with `addend`, the
/// array after them, or with `rope`, the product's rotated heads (`shape`); `None` where the
/// matrix-vector kernel does not take it (the caller runs the joined ops one after another).
#[allow(clippy::too_many_arguments)]
pub(crate) fn joined_qmv(
    g: &Gpu,
    x: &GemvX,
    rest: &[Array],
    p: QuantParams,
    addend: bool,
    rope: Option<&GemvRope>,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let xa = x.array();
    let nw = p.mode.matrix_inputs();
    let inputs_fit = rope.is_some() || rest.len() == nw + usize::from(addend);
    if xa.dtype() != dtype || !inputs_fit || rest[0].ndim() != 2 {
        return Ok(None);
    }
    let ins: Vec<Array> = std::iter::once(xa.clone()).chain(rest[..nw].iter().cloned()).collect();
    let Some(m) = stored(g, &ins, p, dtype, false)? else { return Ok(None) };
    let norm = match x {
        GemvX::RmsNorm { weight, eps, .. } => Some((*weight, *eps)),
        GemvX::Rows(_) => None,
    };
    qmv(g, xa, &m, norm, addend.then(|| &rest[nw]), rope, shape, dtype)
}

/// `quantized_matmul` of a stack of stored matrices [..., rows, words]: the tiled kernel over
/// the output's batch axes, broadcast from those of x [..., M, K] and of the stack.
fn batched_matmul(
    g: &Gpu,
    inputs: &[Array],
    p: QuantParams,
    transpose: bool,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let (x, wq) = (&inputs[0], &inputs[1]);
    let (xn, wn) = (x.ndim(), wq.ndim());
    if xn < 2 {
        return Ok(None);
    }
    let Some(m) = stored(g, inputs, p, dtype, true)? else { return Ok(None) };
    let nd = shape.len();
    let (rows, k) = (x.shape()[xn - 2], x.shape()[xn - 1]);
    let (kk, n) = m.product_dims(transpose);
    let (xb, wb) = (&x.shape()[..xn - 2], &wq.shape()[..wn - 2]);
    if k != kk {
        return Ok(None);
    }
    let Some(pr) = Pairs::batched(&shape[..nd - 2], xb, wb) else { return Ok(None) };
    let dims = Dims { m: rows, k, n, nx: xb.iter().product(), nw: wb.iter().product() };
    Ok(Some(m.tiled(g, x, transpose, &pr, &dims, shape)?))
}
