//! Matrix products through cuBLAS (`cublasGemmStridedBatchedEx`): f32 (TF32 tensor cores with
//! `FERROX_TF32=1`), f16, bf16 and f64, batched, with broadcast batch axes and transposed
//! operands passed as strides (no copies), and `alpha * a @ b + beta * c`.

use std::ffi::c_void;

use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{DeviceRepr, LaunchConfig};

use crate::array::{Array, Data};
use crate::backend::cpu::iter::collapse;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{Epilogue, Op, Prologue, QuantParams};
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::{cuda_err, Gpu};
use super::elementwise::{copy, copy_strided, SRC as ELEMENTWISE};
use super::index::donated;
use super::layout::{ctype, launch_overlapped, Arg};

/// How cuBLAS (column-major) reads a row-major `rows × cols` view with strides `(rs, cs)`:
/// the operation and leading dimension, or `None` if neither axis is unit-stride.
fn as_blas(rows: usize, cols: usize, rs: isize, cs: isize) -> Option<(cublasOperation_t, i32)> {
    // Row-major X is column-major Xᵀ: unit column stride reads as "no transpose".
    if cols == 1 || cs == 1 {
        let ld = if rows == 1 { cols.max(1) as isize } else { rs };
        return (ld >= cols.max(1) as isize).then_some((cublasOperation_t::CUBLAS_OP_N, ld as i32));
    }
    if rows == 1 || rs == 1 {
        let ld = if cols == 1 { rows.max(1) as isize } else { cs };
        return (ld >= rows.max(1) as isize).then_some((cublasOperation_t::CUBLAS_OP_T, ld as i32));
    }
    None
}

/// One batch stride for batch axes `shape` with `strides` (0 when broadcast), if they collapse.
fn batch_stride(shape: &[usize], strides: &[isize]) -> Option<i64> {
    if shape.iter().product::<usize>() <= 1 {
        return Some(0);
    }
    let (cs, cst) = collapse(shape, &[strides.to_vec()]);
    (cs.len() == 1).then(|| cst[0][0] as i64)
}

/// An operand as cuBLAS takes it: address, op, leading dimension, batch stride.
struct Operand {
    ptr: u64,
    op: cublasOperation_t,
    ld: i32,
    batch: i64,
    _keep: Data,
}

/// Operand `x` viewed as `[batch..., rows, cols]`; copies it to row-major if its strides do
/// not fit cuBLAS, and expanded over the batch axes if even then they do not collapse to one
/// batch stride (a broadcast axis between others: keys [B, H, 1, S, D] against queries
/// [B, H, G, L, D]).
fn operand(g: &Gpu, x: &Array, batch: &[usize], rows: usize, cols: usize) -> Result<Operand> {
    let mut full = batch.to_vec();
    full.extend([rows, cols]);
    let view = |shape: &[usize], d: &Data| -> Option<(cublasOperation_t, i32, i64)> {
        let st = broadcast_strides(shape, &d.strides, &full);
        let nb = batch.len();
        let (op, ld) = as_blas(rows, cols, st[nb], st[nb + 1])?;
        Some((op, ld, batch_stride(batch, &st[..nb])?))
    };
    let d = x.data()?;
    if let Some((op, ld, batch)) = view(x.shape(), &d) {
        return Ok(Operand { ptr: device_ptr(g, &d, x.dtype())?, op, ld, batch, _keep: d });
    }
    let c = copy(g, x)?;
    if let Some((op, ld, batch)) = view(x.shape(), &c) {
        return Ok(Operand { ptr: device_ptr(g, &c, x.dtype())?, op, ld, batch, _keep: c });
    }
    let st = broadcast_strides(x.shape(), &d.strides, &full);
    let wide =
        Array::from_data(full.clone(), x.dtype(), Data { buffer: d.buffer.clone(), offset: d.offset, strides: st });
    let c = copy(g, &wide)?;
    let (op, ld, batch) = view(&full, &c).expect("a row-major matrix of the full batch fits cuBLAS");
    Ok(Operand { ptr: device_ptr(g, &c, x.dtype())?, op, ld, batch, _keep: c })
}

const GEMV_SRC: &str = include_str!("kernels/gemv.cu");
/// The most rows of `a` the matrix-vector kernel takes (GEMV_ROWS in gemv.cu).
const GEMV_ROWS: usize = 8;
/// Threads per block of the matrix-vector kernel: GEMV_SPLIT warps, each a slice of k.
const GEMV_BLOCK: u32 = 128;
/// Threads per block of the tensor-core matrix-vector kernel (GEMV_MMA_SPLIT warps in gemv.cu).
const GEMV_MMA_BLOCK: u32 = 256;
/// Output columns a block of the matrix-vector kernel takes (GEMV_COLS in gemv.cu).
const GEMV_COLS: usize = 2;
/// The same where the kernel normalizes x (GEMV_RMS_COLS in gemv.cu).
const GEMV_RMS_COLS: usize = 4;

/// The left operand of a matrix-vector product as the kernel reads it (gemv.cu, and qmv of
/// quantized.cu).
pub(crate) enum GemvX<'a> {
    /// The rows of `a`, as they are.
    Rows(&'a Array),
    /// `rms_norm(x, weight, eps)`, normalized by the kernel while loading x.
    RmsNorm { x: &'a Array, weight: Option<&'a Array>, eps: f32 },
}

impl GemvX<'_> {
    /// The array the kernel reads (before any normalization).
    pub(crate) fn array(&self) -> &Array {
        match self {
            GemvX::Rows(x) | GemvX::RmsNorm { x, .. } => x,
        }
    }
}

/// The rope epilogue's parameters (`struct GemvRope` of gemv.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GemvRope {
    offset: u64,
    freqs: u64,
    kc: u64,
    vc: u64,
    off_value: i64,
    fs: i64,
    len: i64,
    off64: i32,
    d: i32,
    heads: i32,
    keys_from: i32,
    values_from: i32,
    kv_heads: i32,
    base: f32,
    scale: f32,
}

// SAFETY: a plain #[repr(C)] struct matching the kernel's parameter type.
unsafe impl DeviceRepr for GemvRope {}

impl GemvRope {
    /// Whether a kernel whose blocks (or warp groups) take `cols` columns can compute these
    /// heads from a product of `n` columns over `rows` rows (1 or 2, the joins' rows): its
    /// columns pair within one head, half of them from each half.
    pub(crate) fn fits(&self, n: usize, rows: usize, cols: usize) -> bool {
        let d = self.d as usize;
        rows <= 2 && d > 0 && n.is_multiple_of(d) && (d / 2).is_multiple_of(cols / 2)
    }
}

/// What the matrix-vector kernel makes of its product besides the product itself.
enum GemvJoin<'a> {
    /// Nothing: the product (and its addend).
    Product,
    /// gemv.cu's `glu_epilogue` (this source) over the two halves of the columns.
    Glu(&'a str),
    /// The rotated heads of [`Epilogue::Rope`].
    Rope(&'a GemvRope),
}

/// `alpha * x @ b (+ beta * c)` into the row-major output at `po` with the matrix-vector
/// kernel, when it fits: a decode step's products (a few contiguous rows of x against a
/// weight `b` whose columns are contiguous rows in memory — a Linear layer's transposed weight
/// — shared by every batch), the addend `c` (a residual) read through its strides. One launch
/// with no library overhead, where cuBLAS runs a general product (often two kernels) for one
/// row. x may be normalized by the kernel ([`GemvX`]), and the output may be what `join` makes
/// of the product (no addend then; `shape` is the product's). False (nothing done) otherwise.
#[allow(clippy::too_many_arguments)]
fn gemv(
    g: &Gpu,
    x: &GemvX,
    b: &Array,
    alpha: f64,
    addend: Option<(&Array, f64)>,
    join: &GemvJoin,
    shape: &[usize],
    po: u64,
) -> Result<bool> {
    let a = x.array();
    let dtype = a.dtype();
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16) || b.dtype() != dtype {
        return Ok(false);
    }
    let nd = shape.len();
    let (n, k) = (shape[nd - 1], a.shape()[a.ndim() - 1]);
    let rows = shape[..nd - 1].iter().product::<usize>();
    let chunk = 16 / dtype.size();
    if rows == 0
        || rows > GEMV_ROWS
        || !k.is_multiple_of(chunk)
        || a.shape()[..a.ndim() - 1].iter().product::<usize>() != rows
    {
        return Ok(false);
    }
    let cols = if matches!(x, GemvX::Rows(_)) { GEMV_COLS } else { GEMV_RMS_COLS };
    let joins = match join {
        GemvJoin::Product => true,
        GemvJoin::Glu(_) => addend.is_none() && n.is_multiple_of(2),
        GemvJoin::Rope(r) => addend.is_none() && r.fits(n, rows, cols),
    };
    if !joins {
        return Ok(false);
    }
    let (da, db) = (a.data()?, b.data()?);
    if !da.is_row_contiguous(a.shape()) {
        return Ok(false);
    }
    // b as [k, n], one matrix for every batch: unit stride along k, columns `ws` apart.
    let bn = b.ndim();
    if bn < 2 || b.shape()[..bn - 2].iter().product::<usize>() != 1 {
        return Ok(false);
    }
    let (sk, sn) = (db.strides[bn - 2], db.strides[bn - 1]);
    let ws = if n > 1 { sn } else { k as isize };
    if (sk != 1 && k > 1) || ws < k as isize || !(ws as usize).is_multiple_of(chunk) {
        return Ok(false);
    }
    let (pa, pb) = (device_ptr(g, &da, dtype)?, device_ptr(g, &db, dtype)?);
    if !pa.is_multiple_of(16) || !pb.is_multiple_of(16) {
        return Ok(false);
    }
    // The addend over [rows, n] (address, row and column strides, beta; address 0 for none):
    // its row axes must collapse to one stride.
    let (_kc, pc, cs_r, cs_c, beta) = match addend {
        Some((c, beta)) => {
            let dc = c.data()?;
            if c.dtype() != dtype {
                return Ok(false);
            }
            let st = broadcast_strides(c.shape(), &dc.strides, shape);
            let Some(rs) = batch_stride(&shape[..nd - 1], &st[..nd - 1]) else { return Ok(false) };
            let pc = device_ptr(g, &dc, dtype)?;
            (Some(dc), pc, rs, st[nd - 1] as i64, beta as f32)
        }
        None => (None, 0, 0, 0, 0.0),
    };
    // The norm's weight: a contiguous, aligned vector of k elements (address 0 for none).
    let (_kw, pw, eps, rms) = match x {
        GemvX::Rows(_) => (None, 0, 0.0, ""),
        GemvX::RmsNorm { weight: None, eps, .. } => (None, 0, *eps, "_rms"),
        GemvX::RmsNorm { weight: Some(w), eps, .. } => {
            let dw = w.data()?;
            if w.dtype() != dtype || w.shape() != [k] || (k > 1 && dw.strides[0] != 1) {
                return Ok(false);
            }
            let pw = device_ptr(g, &dw, dtype)?;
            if !pw.is_multiple_of(16) {
                return Ok(false);
            }
            (Some(dw), pw, *eps, "_rms")
        }
    };
    // Three or more rows of f16 / bf16 on the tensor cores (16 columns a block; ~1.85x the
    // FMA kernel's bandwidth at 8 rows, scripts/cuda-bench), else the FMA kernels for 1, 2, 4
    // and 8 rows (fewer rows run the next size up), which also take the joins (a block's
    // columns are then j and j + n / 2: one output column).
    let half = matches!(dtype, Dtype::F16 | Dtype::Bf16);
    let mma = half && rows > 2 && k.is_multiple_of(32) && rms.is_empty() && matches!(join, GemvJoin::Product);
    let rows2 = rows.next_power_of_two();
    let (name, blocks, block) = match join {
        _ if mma => ("gemv_mma".to_string(), n.div_ceil(16), GEMV_MMA_BLOCK),
        GemvJoin::Product => (format!("gemv{rms}_{rows2}"), n.div_ceil(cols), GEMV_BLOCK),
        GemvJoin::Glu(_) => (format!("gemv{rms}_glu_{rows2}"), (n / 2).div_ceil(cols / 2), GEMV_BLOCK),
        GemvJoin::Rope(_) => (format!("gemv{rms}_rope_{rows2}"), n / cols, GEMV_BLOCK),
    };
    let c = ctype(dtype);
    let mma_kind = if half { format!("#define MMA_KIND \"{c}\"\n") } else { String::new() };
    let glu = match join {
        GemvJoin::Glu(src) => Some(*src),
        _ => None,
    };
    let f = match glu {
        // A program's kernels: a module of their own, its join after gemv.cu.
        Some(src) => g.function(&format!("gemv glu {c}\n{src}"), &name, || {
            format!("{COMMON}\n#define T {c}\n{mma_kind}{ELEMENTWISE}\n#define GEMV_GLU\n{GEMV_SRC}\n{src}")
        })?,
        None => {
            g.function(&format!("gemv {c}"), &name, || format!("{COMMON}\n#define T {c}\n{mma_kind}{GEMV_SRC}\n"))?
        }
    };
    let mut args = vec![
        Arg::U64(po),
        Arg::U64(pa),
        Arg::I64(k as i64),
        Arg::U64(pb),
        Arg::I64(ws as i64),
        Arg::I32(rows as i32),
        Arg::I64(n as i64),
        Arg::I64(k as i64),
        Arg::F32(alpha as f32),
        Arg::U64(pc),
        Arg::I64(cs_r),
        Arg::I64(cs_c),
        Arg::F32(beta),
        Arg::U64(pw),
        Arg::F32(eps),
    ];
    if let GemvJoin::Rope(r) = join {
        args.push(Arg::GemvRope(r));
    }
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
    launch_overlapped(g, &f, cfg, &args)?;
    Ok(true)
}

/// [`Op::JoinedMatmul`](crate::primitives::Op::JoinedMatmul): the product of the operand
/// `prologue` computes from the first inputs (or input 0), b and (when beta is not 0) c, made
/// into the output by `epilogue`. The matrix-vector kernel does it all where it takes the
/// product; otherwise the joined ops run one after another.
#[allow(clippy::too_many_arguments)]
pub(crate) fn joined_matmul(
    g: &Gpu,
    ordinal: usize,
    (prologue, epilogue): (Option<&Prologue>, Option<&Epilogue>),
    inputs: &[Array],
    (alpha, beta): (f64, f64),
    quantized: Option<QuantParams>,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let (pro, rest) = inputs.split_at(prologue.map_or(1, Prologue::inputs));
    let x = match prologue {
        Some(Prologue::RmsNorm { eps, weight }) => {
            GemvX::RmsNorm { x: &pro[0], weight: weight.then(|| &pro[1]), eps: *eps }
        }
        None => GemvX::Rows(&pro[0]),
    };
    if let Some(params) = quantized {
        let nw = params.mode.matrix_inputs();
        // The kernel takes the product plain (with a residual: beta 1), or with the rope.
        let plain = epilogue.is_none() && alpha == 1.0 && (beta == 0.0 || beta == 1.0);
        let rope = match epilogue {
            // A quantized matrix is stored [N, ·].
            Some(Epilogue::Rope(rope)) if rest.len() > nw => {
                rope_params(g, rope, &rest[nw..], rest[0].shape()[0], shape, dtype)?
            }
            _ => None,
        };
        if plain || rope.is_some() {
            let rope = rope.as_ref().map(|(r, _keep)| r);
            let addend = plain && beta == 1.0;
            if let Some(out) = super::quantized::joined_qmv(g, &x, rest, params, addend, rope, shape, dtype)? {
                return Ok(Some(out));
            }
        }
    } else if let Some(Epilogue::Rope(rope)) = epilogue {
        let n = rest[0].shape()[rest[0].ndim() - 1];
        if let Some((params, _keep)) = rope_params(g, rope, &rest[1..], n, shape, dtype)? {
            let (out, po) = alloc_out(shape, dtype)?;
            // The product: [B, 1, heads · d].
            let full = [shape[0], 1, n];
            if gemv(g, &x, &rest[0], alpha, None, &GemvJoin::Rope(&params), &full, po)? {
                return Ok(Some(out));
            }
        }
    } else {
        let glu = match epilogue {
            Some(Epilogue::Halves { graph, lower_first }) => super::fused::glu_source(graph, *lower_first, dtype),
            _ => None,
        };
        if epilogue.is_none() || glu.is_some() {
            // The product's shape: the output's, or twice its columns.
            let mut full = shape.to_vec();
            if epilogue.is_some() {
                *full.last_mut().expect("a product has columns") *= 2;
            }
            let (out, po) = alloc_out(shape, dtype)?;
            let addend = rest.get(1).filter(|_| beta != 0.0).map(|c| (c, beta));
            let join = glu.as_deref().map_or(GemvJoin::Product, GemvJoin::Glu);
            if gemv(g, &x, &rest[0], alpha, addend, &join, &full, po)? {
                return Ok(Some(out));
            }
        }
    }
    let run = |op: &Op, ins: &[Array], shape: &[usize], dt: Dtype| super::eval_or_fallback(ordinal, op, ins, shape, dt);
    crate::backend::joined_matmul_parts(prologue, epilogue, inputs, alpha, beta, quantized, shape, dtype, &run)
        .map(Some)
}

/// [`GemvRope`] for `rope` (an [`Op::RopeWrite`]) over a product of `n` columns whose
/// rotated heads are `shape` (`[B, heads, 1, d]`), with the op's other inputs (`after` the
/// product's: offset, frequencies, key cache, value cache), and the data its addresses point
/// into; None where the kernels cannot take them.
fn rope_params(
    g: &Gpu,
    rope: &Op,
    after: &[Array],
    n: usize,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<(GemvRope, Vec<Data>)>> {
    let &Op::RopeWrite { dims, traditional, base, scale, freqs, keys_from, values_from } = rope else {
        return Ok(None);
    };
    let (offset, f) = (&after[0], freqs.then(|| &after[1]));
    let caches = &after[1 + freqs as usize..];
    let Some(angles) = super::fast::rope_angles(g, offset, f, dims)? else { return Ok(None) };
    if shape.len() != 4 || shape[2] != 1 {
        return Ok(None);
    }
    let d = shape[3];
    let ks = caches[0].shape();
    let kv_heads = ks[1];
    let fits = |a: &Array| {
        a.dtype() == dtype
            && a.shape() == ks
            && a.data()
                .is_ok_and(|da| da.offset == 0 && da.is_row_contiguous(ks) && da.buffer.device_memory().is_some())
    };
    let heads = n / d.max(1);
    let in_heads = |from: usize| from + kv_heads <= heads;
    if traditional
        || dims != d
        || shape[1] > heads
        || ks.len() != 4
        || ks[0] != shape[0]
        || ks[3] != d
        || !caches.iter().all(fits)
        || !in_heads(keys_from)
        || values_from.is_some_and(|v| !in_heads(v))
    {
        return Ok(None);
    }
    let mut keep = Vec::new();
    let mut address = |a: &Array| -> Result<u64> {
        let da = a.data()?;
        let p = device_ptr(g, &da, dtype)?;
        keep.push(da);
        Ok(p)
    };
    let kc = address(&caches[0])?;
    let vc = match values_from {
        Some(_) => address(&caches[1])?,
        None => 0,
    };
    let params = GemvRope {
        offset: angles.offset,
        freqs: angles.freqs,
        kc,
        vc,
        off_value: angles.off_value,
        fs: angles.fs,
        len: ks[2] as i64,
        off64: angles.off64,
        d: d as i32,
        heads: shape[1] as i32,
        keys_from: keys_from as i32,
        values_from: values_from.map_or(-1, |v| v as i32),
        kv_heads: kv_heads as i32,
        base,
        scale,
    };
    keep.extend(angles.into_keep());
    Ok(Some((params, keep)))
}

/// `alpha * a @ b + beta * c` over the batch axes of `shape`.
pub(crate) fn matmul(
    g: &Gpu,
    inputs: &[Array],
    alpha: f64,
    beta: f64,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let (dt, compute) = match dtype {
        Dtype::F32 if std::env::var("FERROX_TF32").is_ok_and(|v| v == "1") => {
            (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32)
        }
        Dtype::F32 => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        Dtype::F16 => (cudaDataType::CUDA_R_16F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        Dtype::Bf16 => (cudaDataType::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        Dtype::F64 => (cudaDataType::CUDA_R_64F, cublasComputeType_t::CUBLAS_COMPUTE_64F),
        _ => return Ok(None),
    };
    let (a, b) = (&inputs[0], &inputs[1]);
    if a.dtype() != dtype || b.dtype() != dtype || inputs.get(2).is_some_and(|c| c.dtype() != dtype) {
        return Ok(None);
    }
    let nd = shape.len();
    let (m, n) = (shape[nd - 2], shape[nd - 1]);
    let k = a.shape()[a.ndim() - 1];
    let batch = &shape[..nd - 2];
    let nbatch: usize = batch.iter().product();
    let (out, po) = alloc_out(shape, dtype)?;
    if m * n * nbatch == 0 {
        return Ok(Some(out));
    }
    let addend = inputs.get(2).filter(|_| beta != 0.0).map(|c| (c, beta));
    if gemv(g, &GemvX::Rows(a), b, alpha, addend, &GemvJoin::Product, shape, po)? {
        return Ok(Some(out));
    }
    // The product accumulates onto the addend in the output: the addend's own buffer where
    // nothing else holds it (a residual; as the KV cache's slice_update writes in place), else
    // a (broadcast) copy of it.
    let (out, po, beta) = match addend {
        None => (out, po, 0.0),
        Some((c, beta)) => match donated(c).filter(|_| c.shape() == shape) {
            Some(d) => {
                let p = device_ptr(g, &d, dtype)?;
                (d, p, beta)
            }
            None => {
                let dc = c.data()?;
                let pc = device_ptr(g, &dc, dtype)?;
                let sc = broadcast_strides(c.shape(), &dc.strides, shape);
                if !copy_strided(g, pc, &sc, shape, dtype, po)? {
                    return Ok(None);
                }
                (out, po, beta)
            }
        },
    };
    let oa = operand(g, a, batch, m, k)?;
    let ob = operand(g, b, batch, k, n)?;
    if [m, n, k, nbatch].iter().any(|&v| v > i32::MAX as usize) {
        return Ok(None);
    }
    let mut guard = g.blas.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        *guard = Some(CudaBlas::new(g.stream.clone()).map_err(|e| cuda_err("creating the cuBLAS handle", e))?);
    }
    let handle = *guard.as_ref().unwrap().handle();
    let (a32, b32) = ([alpha as f32], [beta as f32]);
    let (a64, b64) = ([alpha], [beta]);
    let (pa, pb): (*const c_void, *const c_void) = if dtype == Dtype::F64 {
        (a64.as_ptr() as _, b64.as_ptr() as _)
    } else {
        (a32.as_ptr() as _, b32.as_ptr() as _)
    };
    // Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ: cuBLAS's first operand is b.
    // SAFETY: the addresses are live device buffers of the sizes the dimensions describe;
    // alpha and beta are host scalars of the compute type, alive across the call.
    unsafe {
        blas::gemm_strided_batched_ex(
            handle,
            ob.op,
            oa.op,
            n as i32,
            m as i32,
            k as i32,
            pa,
            ob.ptr as *const c_void,
            dt,
            ob.ld,
            ob.batch,
            oa.ptr as *const c_void,
            dt,
            oa.ld,
            oa.batch,
            pb,
            po as *mut c_void,
            dt,
            n as i32,
            (m * n) as i64,
            nbatch as i32,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| cuda_err("cuBLAS gemm", e))?;
    Ok(Some(out))
}
