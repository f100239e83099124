//! Quantized matrices, MLX's formats: `quantize`, `dequantize`, `quantized_matmul` and
//! `gather_qmm` (the mixture-of-experts product).
//!
//! A matrix `w` of shape [..., rows, K] is stored as three arrays: the packed elements (uint32,
//! [..., rows, K·bits/32], element i of a row at bits i·bits.. of the row's little-endian bit
//! stream), the per-group scales ([..., rows, K/group_size]) and, in affine mode, the
//! per-group biases (same shape). Affine mode keeps scales and biases in `w`'s dtype and
//! dequantizes to `scale · q + bias`; the floating-point modes (mxfp4, nvfp4, mxfp8) keep one
//! uint8 scale per group (E8M0 or E4M3) and FP4 (E2M1) or FP8 (E4M3) elements.

use crate::array::Array;
use crate::dtype::{promote_types, Dtype};
use crate::error::{Error, Result};
use crate::primitives::{Op, QuantOp, QuantParams, QuantPart};
use crate::shape::broadcast_shapes;

pub use crate::primitives::QuantMode;

use super::{astype, broadcast_to};

impl QuantMode {
    /// The mode named as in MLX: "affine", "mxfp4", "nvfp4" or "mxfp8".
    pub fn parse(name: &str) -> Result<QuantMode> {
        match name {
            "affine" => Ok(QuantMode::Affine),
            "mxfp4" => Ok(QuantMode::Mxfp4),
            "nvfp4" => Ok(QuantMode::Nvfp4),
            "mxfp8" => Ok(QuantMode::Mxfp8),
            _ => Err(Error::invalid(
                "quantize",
                format!("unknown quantization mode {name:?}; use affine, mxfp4, nvfp4 or mxfp8"),
            )),
        }
    }

    /// MLX's name of the mode.
    pub fn name(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
            QuantMode::Nvfp4 => "nvfp4",
            QuantMode::Mxfp8 => "mxfp8",
        }
    }

    /// The default `(group_size, bits)` of the mode (MLX's defaults).
    pub fn defaults(self) -> (usize, usize) {
        match self {
            QuantMode::Affine => (64, 4),
            QuantMode::Mxfp4 => (32, 4),
            QuantMode::Nvfp4 => (16, 4),
            QuantMode::Mxfp8 => (32, 8),
        }
    }

    /// How many arrays store a matrix of this format: packed elements, scales and, if affine,
    /// biases (the inputs of a quantized op after x).
    pub fn matrix_inputs(self) -> usize {
        if self == QuantMode::Affine {
            3
        } else {
            2
        }
    }
}

impl std::str::FromStr for QuantMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<QuantMode> {
        QuantMode::parse(s)
    }
}

/// Checks that `mode` supports `group_size` and `bits`.
fn check_params(op: &'static str, group_size: usize, bits: usize, mode: QuantMode) -> Result<QuantParams> {
    match mode {
        QuantMode::Affine => {
            if ![32, 64, 128].contains(&group_size) {
                return Err(Error::invalid(
                    op,
                    format!("group size {group_size} is not supported; affine mode supports 32, 64 and 128"),
                ));
            }
            if ![1, 2, 3, 4, 5, 6, 8].contains(&bits) {
                return Err(Error::invalid(
                    op,
                    format!("{bits} bits are not supported; affine mode supports 1, 2, 3, 4, 5, 6 and 8"),
                ));
            }
        }
        _ => {
            let (gs, b) = mode.defaults();
            if group_size != gs || bits != b {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{} mode needs group_size={gs} and bits={b}; got group_size={group_size}, bits={bits}",
                        mode.name()
                    ),
                ));
            }
        }
    }
    Ok(QuantParams { group_size, bits, mode })
}

/// Checks the dtypes of scales and biases against the mode; returns the affine scale dtype.
fn check_scales(op: &'static str, scales: &Array, biases: Option<&Array>, mode: QuantMode) -> Result<Option<Dtype>> {
    if mode == QuantMode::Affine {
        let Some(b) = biases else {
            return Err(Error::invalid(op, "affine mode needs biases"));
        };
        if b.shape() != scales.shape() {
            return Err(Error::shape(
                op,
                format!("scales of shape {:?} and biases of shape {:?} must match", scales.shape(), b.shape()),
            ));
        }
        let dt = promote_types(scales.dtype(), b.dtype());
        if !matches!(dt, Dtype::F32 | Dtype::F16 | Dtype::Bf16) {
            return Err(Error::dtype(op, "scales and biases must be float32, float16 or bfloat16", dt));
        }
        Ok(Some(dt))
    } else {
        if biases.is_some() {
            return Err(Error::invalid(op, format!("{} mode has no biases; pass None", mode.name())));
        }
        if scales.dtype() != Dtype::U8 {
            return Err(Error::dtype(op, format!("{} scales must be uint8", mode.name()), scales.dtype()));
        }
        Ok(None)
    }
}

/// Checks the packed matrix against its scales; returns the unpacked length of its rows.
fn check_packed(op: &'static str, wq: &Array, scales: &Array, p: QuantParams) -> Result<usize> {
    if wq.dtype() != Dtype::U32 {
        return Err(Error::dtype(op, "the packed matrix must be uint32", wq.dtype()));
    }
    if wq.ndim() < 2 {
        return Err(Error::shape(
            op,
            format!("the packed matrix must have at least 2 dimensions; got {:?}", wq.shape()),
        ));
    }
    let (ws, ss) = (wq.shape(), scales.shape());
    let cols = ws[ws.len() - 1] * 32 / p.bits;
    let fits = ss.len() == ws.len()
        && ss[..ss.len() - 1] == ws[..ws.len() - 1]
        && (ws[ws.len() - 1] * 32) % p.bits == 0
        && ss[ss.len() - 1] * p.group_size == cols;
    if !fits {
        return Err(Error::shape(
            op,
            format!(
                "packed matrix of shape {ws:?} and scales of shape {ss:?} do not fit group_size={} and bits={} \
                 (scales must be [..., rows, {}])",
                p.group_size,
                p.bits,
                cols / p.group_size
            ),
        ));
    }
    Ok(cols)
}

fn quant(op: QuantOp, params: QuantParams) -> Op {
    Op::Quantized { op, params }
}

/// Quantizes `w` (float32, float16 or bfloat16, at least 2-D, last axis a multiple of
/// `group_size`) along its last axis, as `mlx.core.quantize` does, bit for bit.
///
/// Returns the packed elements (uint32), the scales (`w`'s dtype in affine mode, uint8
/// otherwise) and, in affine mode, the biases. Affine mode: bits 1, 2, 3, 4, 5, 6 or 8, group
/// size 32, 64 or 128; mxfp4: 4 bits, groups of 32; nvfp4: 4 bits, groups of 16; mxfp8: 8
/// bits, groups of 32 ([`QuantMode::defaults`]).
pub fn quantize(w: &Array, group_size: usize, bits: usize, mode: QuantMode) -> Result<(Array, Array, Option<Array>)> {
    let op = "quantize";
    let p = check_params(op, group_size, bits, mode)?;
    if !matches!(w.dtype(), Dtype::F32 | Dtype::F16 | Dtype::Bf16) {
        return Err(Error::dtype(op, "only float32, float16 and bfloat16 matrices can be quantized", w.dtype()));
    }
    let k = *w.shape().last().unwrap_or(&0);
    if w.ndim() < 2 || !k.is_multiple_of(group_size) {
        return Err(Error::shape(
            op,
            format!("the matrix must be at least 2-D with a last axis divisible by {group_size}; got {:?}", w.shape()),
        ));
    }
    let mut packed_shape = w.shape().to_vec();
    *packed_shape.last_mut().unwrap() = k * bits / 32;
    let mut scale_shape = w.shape().to_vec();
    *scale_shape.last_mut().unwrap() = k / group_size;
    let part = |part: QuantPart, shape: &[usize], dtype: Dtype| {
        Array::from_op(shape.to_vec(), dtype, quant(QuantOp::Quantize(part), p), vec![w.clone()])
    };
    let packed = part(QuantPart::Packed, &packed_shape, Dtype::U32);
    if mode == QuantMode::Affine {
        let scales = part(QuantPart::Scales, &scale_shape, w.dtype());
        let biases = part(QuantPart::Biases, &scale_shape, w.dtype());
        Ok((packed, scales, Some(biases)))
    } else {
        Ok((packed, part(QuantPart::Scales, &scale_shape, Dtype::U8), None))
    }
}

/// The float matrix a quantized one stands for (`mlx.core.dequantize`). The result has the
/// scales' dtype in affine mode and bfloat16 in the other modes, unless `dtype` is given.
pub fn dequantize(
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    group_size: usize,
    bits: usize,
    mode: QuantMode,
    dtype: Option<Dtype>,
) -> Result<Array> {
    let op = "dequantize";
    let p = check_params(op, group_size, bits, mode)?;
    let scale_dtype = check_scales(op, scales, biases, mode)?;
    let cols = check_packed(op, wq, scales, p)?;
    let out_dtype = dtype.or(scale_dtype).unwrap_or(Dtype::Bf16);
    if !out_dtype.is_float() {
        return Err(Error::dtype(op, "the output dtype must be floating point", out_dtype));
    }
    let mut shape = wq.shape().to_vec();
    *shape.last_mut().unwrap() = cols;
    let mut inputs = vec![wq.clone(), scales.clone()];
    if let (Some(b), Some(dt)) = (biases, scale_dtype) {
        inputs = vec![wq.clone(), astype(scales, dt)?, astype(b, dt)?];
    }
    // Affine dequantization computes in the scales' dtype, then converts (as MLX does).
    let compute = scale_dtype.unwrap_or(if out_dtype == Dtype::F64 { Dtype::F32 } else { out_dtype });
    let out = Array::from_op(shape, compute, quant(QuantOp::Dequantize, p), inputs);
    astype(&out, out_dtype)
}

/// The operands of a quantized product, checked: the output dtype, the unpacked (K, N) of the
/// stored matrix, and the inputs of the node (x, packed, scales, biases if affine).
fn product_inputs(
    op: &'static str,
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    p: QuantParams,
) -> Result<(Dtype, usize, Vec<Array>)> {
    let scale_dtype = check_scales(op, scales, biases, p.mode)?;
    let cols = check_packed(op, wq, scales, p)?;
    let rows = wq.shape()[wq.ndim() - 2];
    let (k, n) = if transpose { (cols, rows) } else { (rows, cols) };
    let xk = *x.shape().last().ok_or_else(|| Error::shape(op, "x must have at least 1 dimension"))?;
    if xk != k {
        return Err(Error::shape(
            op,
            format!(
                "last axis of x {:?} ({xk}) does not match the quantized matrix ({k}, {n}) of packed shape {:?} \
                 (group_size={}, bits={}, transpose={transpose})",
                x.shape(),
                wq.shape(),
                p.group_size,
                p.bits
            ),
        ));
    }
    let dtype = match scale_dtype {
        Some(sd) => promote_types(x.dtype(), sd),
        None => x.dtype(),
    };
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16) {
        return Err(Error::dtype(op, "x must be float32, float16 or bfloat16", dtype));
    }
    let mut inputs = vec![astype(x, dtype)?, wq.clone()];
    match biases {
        Some(b) => inputs.extend([astype(scales, dtype)?, astype(b, dtype)?]),
        None => inputs.push(scales.clone()),
    }
    Ok((dtype, n, inputs))
}

/// `x @ dequantize(w)ᵀ` (`transpose`) or `x @ dequantize(w)`, without materializing the
/// float matrix (`mlx.core.quantized_matmul`). `x` is [..., K]; a 2-D `w` multiplies every
/// row of `x`, a batched `w` [..., rows, cols] broadcasts its batch axes with those of `x`
/// [..., M, K]. Affine mode computes in the promoted dtype of x, scales and biases; the
/// floating-point modes in x's dtype.
#[allow(clippy::too_many_arguments)]
pub fn quantized_matmul(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    transpose: bool,
    group_size: usize,
    bits: usize,
    mode: QuantMode,
) -> Result<Array> {
    let op = "quantized_matmul";
    let p = check_params(op, group_size, bits, mode)?;
    let (dtype, n, inputs) = product_inputs(op, x, wq, scales, biases, transpose, p)?;
    let shape = if wq.ndim() == 2 {
        let mut s = x.shape().to_vec();
        *s.last_mut().unwrap() = n;
        s
    } else {
        if x.ndim() < 2 {
            return Err(Error::shape(
                op,
                format!("x of shape {:?} must be at least 2-D for a batched matrix", x.shape()),
            ));
        }
        let mut s = broadcast_shapes(&[&x.shape()[..x.ndim() - 2], &wq.shape()[..wq.ndim() - 2]], op)?;
        s.extend([x.shape()[x.ndim() - 2], n]);
        s
    };
    Ok(Array::from_op(shape, dtype, quant(QuantOp::Matmul { transpose }, p), inputs))
}

/// Quantized matmul of gathered matrices (`mlx.core.gather_qmm`): output `[i, ...]` is
/// `x[lhs[i, ...]] @ w[rhs[i, ...]]` (transposed as in [`quantized_matmul`]), where the
/// indices (broadcast together) index the flattened batch axes of `x` [..., M, K] and of the
/// packed matrix; an absent index array means "all, in order". The output is
/// [index shape..., M, N]. With neither index this is [`quantized_matmul`].
/// `sorted_indices` promises sorted rhs indices (a hint; results never depend on it).
#[allow(clippy::too_many_arguments)]
pub fn gather_qmm(
    x: &Array,
    wq: &Array,
    scales: &Array,
    biases: Option<&Array>,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    transpose: bool,
    group_size: usize,
    bits: usize,
    mode: QuantMode,
    sorted_indices: bool,
) -> Result<Array> {
    let op = "gather_qmm";
    if lhs_indices.is_none() && rhs_indices.is_none() {
        return quantized_matmul(x, wq, scales, biases, transpose, group_size, bits, mode);
    }
    let p = check_params(op, group_size, bits, mode)?;
    if x.ndim() < 2 {
        return Err(Error::shape(op, format!("x must be at least 2-D [..., M, K]; got {:?}", x.shape())));
    }
    let (dtype, n, mut inputs) = product_inputs(op, x, wq, scales, biases, transpose, p)?;
    let lhs = super::linalg::batch_indices(op, lhs_indices, x)?;
    let rhs = super::linalg::batch_indices(op, rhs_indices, wq)?;
    let idx_shape = broadcast_shapes(&[lhs.shape(), rhs.shape()], op)?;
    inputs.push(broadcast_to(&lhs, &idx_shape)?);
    inputs.push(broadcast_to(&rhs, &idx_shape)?);
    let mut shape = idx_shape;
    shape.extend([x.shape()[x.ndim() - 2], n]);
    let qop = QuantOp::GatherMatmul { transpose, sorted: sorted_indices && lhs_indices.is_none() };
    Ok(Array::from_op(shape, dtype, quant(qop, p), inputs))
}
