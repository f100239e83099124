//! Affine quantized matrices (1–8 bits, groups of 32 or more): dequantize, and
//! `quantized_matmul` — a matrix-vector kernel reading the packed words directly for decode
//! (up to 8 rows of x against the transposed stored matrix), and for prefill the matrix
//! dequantized into a temporary of x's dtype and multiplied on the tensor cores by cuBLAS.
//! `gather_qmm` (MoE experts) with up to 8 rows per x matrix runs the decode kernel with its
//! index pair read on the device. Other formats (mxfp4, nvfp4, mxfp8), gather_qmm with more
//! rows and batched `quantized_matmul` run on the CPU.

use cudarc::driver::LaunchConfig;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{QuantMode, QuantOp, QuantParams};

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::copy;
use super::layout::{ctype, launch, launch_cfg, Arg, Layout};

const SRC: &str = include_str!("kernels/quantized.cu");
/// Rows of x up to which the matrix-vector kernel runs.
const QMV_MAX_ROWS: usize = 8;

fn function(g: &Gpu, t: Dtype, bits: usize, name: &str) -> Result<cudarc::driver::CudaFunction> {
    let c = ctype(t);
    g.function(&format!("quantized {c} {bits}"), name, || {
        format!("{COMMON}\n#define T {c}\n#define BITS {bits}\n{SRC}\n")
    })
}

/// Row-major data of `x` on the device and its address.
fn row_major(g: &Gpu, x: &Array) -> Result<(Data, u64)> {
    let d = x.data()?;
    let d = if d.is_row_contiguous(x.shape()) { d } else { copy(g, x)? };
    let p = device_ptr(g, &d, x.dtype())?;
    Ok((d, p))
}

/// The stored matrix: packed words, scales, biases (each row-major, kept alive), its rows
/// and columns.
struct Stored {
    keep: Vec<Data>,
    w: u64,
    scales: u64,
    biases: u64,
    rows: usize,
    cols: usize,
}

/// The stored matrix of an affine op over `inputs` (packed, scales, biases at 1..4), if the
/// kernels handle it: one matrix, scales and biases of `dtype`, groups of 32 or more.
fn stored(g: &Gpu, inputs: &[Array], p: QuantParams, dtype: Dtype) -> Result<Option<Stored>> {
    stored_batch(g, inputs, p, dtype, false)
}

/// [`stored`], also taking a stack of matrices [..., rows, words] when `batched` (`rows` is
/// then that of one matrix).
fn stored_batch(g: &Gpu, inputs: &[Array], p: QuantParams, dtype: Dtype, batched: bool) -> Result<Option<Stored>> {
    let (wq, s, b) = (&inputs[1], &inputs[2], &inputs[3]);
    if p.mode != QuantMode::Affine
        || !(1..=8).contains(&p.bits)
        || p.group_size < 32
        || !p.group_size.is_multiple_of(32)
        || (wq.ndim() != 2 && !(batched && wq.ndim() > 2))
        || wq.dtype() != Dtype::U32
        || s.dtype() != dtype
        || b.dtype() != dtype
        || !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16)
    {
        return Ok(None);
    }
    let rows = wq.shape()[wq.ndim() - 2];
    let cols = wq.shape()[wq.ndim() - 1] * 32 / p.bits;
    if !cols.is_multiple_of(p.group_size) {
        return Ok(None);
    }
    let (dw, pw) = row_major(g, wq)?;
    let (ds, ps) = row_major(g, s)?;
    let (db, pb) = row_major(g, b)?;
    Ok(Some(Stored { keep: vec![dw, ds, db], w: pw, scales: ps, biases: pb, rows, cols }))
}

/// Dequantizes the stored matrix into a fresh row-major [rows, cols] array of `dtype`.
fn dequantize_into(g: &Gpu, m: &Stored, p: QuantParams, dtype: Dtype) -> Result<Data> {
    let (out, po) = alloc_out(&[m.rows, m.cols], dtype)?;
    let n = m.rows * m.cols / 32;
    if n > 0 {
        let f = function(g, dtype, p.bits, "dequantize")?;
        let args = [
            Arg::U64(po),
            Arg::U64(m.w),
            Arg::U64(m.scales),
            Arg::U64(m.biases),
            Arg::I64(m.rows as i64),
            Arg::I64(m.cols as i64),
            Arg::I64(p.group_size as i64),
        ];
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
            if inputs.len() < 3 {
                return Ok(None);
            }
            let ins = [inputs[0].clone(), inputs[0].clone(), inputs[1].clone(), inputs[2].clone()];
            let Some(m) = stored(g, &ins, p, dtype)? else { return Ok(None) };
            if shape != [m.rows, m.cols] {
                return Ok(None);
            }
            Ok(Some(dequantize_into(g, &m, p, dtype)?))
        }
        QuantOp::Matmul { transpose } => matmul(g, inputs, p, transpose, shape, dtype),
        QuantOp::GatherMatmul { transpose: true, .. } => gather_qmv(g, inputs, p, shape, dtype),
        _ => Ok(None),
    }
}

/// `gather_qmm` with the transpose, for up to 8 rows per x matrix: the decode kernel with the
/// index pair read on the device (blocks over pairs). `None` for more rows.
fn gather_qmv(g: &Gpu, inputs: &[Array], p: QuantParams, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let x = &inputs[0];
    let n_in = inputs.len();
    let (lhs, rhs) = (&inputs[n_in - 2], &inputs[n_in - 1]);
    if x.dtype() != dtype || n_in != 6 || x.ndim() < 2 || lhs.dtype() != Dtype::U32 || rhs.dtype() != Dtype::U32 {
        return Ok(None);
    }
    let Some(m) = stored_batch(g, inputs, p, dtype, true)? else { return Ok(None) };
    let (rows, k) = (x.shape()[x.ndim() - 2], x.shape()[x.ndim() - 1]);
    let n = m.rows;
    let nw = inputs[1].size() / (m.rows * m.cols * p.bits / 32).max(1);
    let nx = x.size() / (rows * k).max(1);
    let pairs = lhs.size();
    if k != m.cols || !(1..=QMV_MAX_ROWS).contains(&rows) || pairs > 65535 || rhs.shape() != lhs.shape() {
        return Ok(None);
    }
    let (out, po) = alloc_out(shape, dtype)?;
    if pairs * n == 0 || nx == 0 || nw == 0 {
        return Ok(if pairs * n == 0 { Some(out) } else { None });
    }
    let (_kx, px) = row_major(g, x)?;
    let (dl, dr) = (lhs.data()?, rhs.data()?);
    let Some(li) = Layout::new(lhs.shape(), &[dl.strides.clone(), dr.strides.clone()]) else { return Ok(None) };
    let (pl, pr) = (device_ptr(g, &dl, Dtype::U32)?, device_ptr(g, &dr, Dtype::U32)?);
    let f = function(g, dtype, p.bits, &format!("gather_qmv_{rows}"))?;
    let args = [
        Arg::U64(po),
        Arg::U64(px),
        Arg::U64(m.w),
        Arg::U64(m.scales),
        Arg::U64(m.biases),
        Arg::I64(n as i64),
        Arg::I64(k as i64),
        Arg::I64(p.group_size as i64),
        Arg::U64(pl),
        Arg::U64(pr),
        Arg::Layout(&li),
        Arg::I64(nx as i64),
        Arg::I64(nw as i64),
    ];
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(4).min(g.sms as usize * 8) as u32, pairs as u32, 1),
        block_dim: (128, 1, 1),
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
    if x.dtype() != dtype || inputs.len() < 4 {
        return Ok(None);
    }
    let Some(m) = stored(g, inputs, p, dtype)? else { return Ok(None) };
    let k = *x.shape().last().unwrap_or(&0);
    let (kk, n) = if transpose { (m.cols, m.rows) } else { (m.rows, m.cols) };
    if k != kk {
        return Ok(None);
    }
    let rows = x.size() / k.max(1);
    if transpose && rows <= QMV_MAX_ROWS {
        let (out, po) = alloc_out(shape, dtype)?;
        if rows * n == 0 {
            return Ok(Some(out));
        }
        let (_kx, px) = row_major(g, x)?;
        let f = function(g, dtype, p.bits, &format!("qmv_{rows}"))?;
        // x staged in shared memory as f32 (one pad word per 32) when it fits in 48 KiB.
        let smem_bytes = rows * (k + k / 32) * 4;
        let staged = smem_bytes <= 48 << 10;
        let smem = if staged { smem_bytes as u32 } else { 0 };
        let args = [
            Arg::U64(po),
            Arg::U64(px),
            Arg::U64(m.w),
            Arg::U64(m.scales),
            Arg::U64(m.biases),
            Arg::I64(n as i64),
            Arg::I64(k as i64),
            Arg::I64(p.group_size as i64),
            Arg::I32(staged as i32),
        ];
        // Four warps per block, one output feature per warp at a time.
        let cfg = LaunchConfig { grid_dim: (g.grid(n, 4), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: smem };
        launch_cfg(g, &f, cfg, &args)?;
        drop(m.keep);
        return Ok(Some(out));
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
