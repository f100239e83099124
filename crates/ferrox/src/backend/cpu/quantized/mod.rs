//! Quantized ops ([`Op::Quantized`](crate::primitives::Op::Quantized)): quantization,
//! dequantization, and matrix products that read packed matrices directly.

mod formats;
#[cfg(test)]
mod kernel_tests;
mod lanes;
mod panel;
mod qmm;
mod qmm_bf16;
mod qmm_i16;
mod qmv;
mod qmv_bf16;
mod qmv_i16;
mod quantize;
mod view;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{QuantOp, QuantParams};

/// Runs `$body` with `$T` the element type of `$dtype` (float32, float16 or bfloat16),
/// else evaluates `$other`.
macro_rules! dispatch_f32_f16_bf16 {
    ($dtype:expr, $T:ident => $body:expr, $other:expr) => {{
        match $dtype {
            $crate::Dtype::F32 => {
                type $T = f32;
                $body
            }
            $crate::Dtype::F16 => {
                type $T = ::half::f16;
                $body
            }
            $crate::Dtype::Bf16 => {
                type $T = ::half::bf16;
                $body
            }
            _ => $other,
        }
    }};
}
use dispatch_f32_f16_bf16;

/// The array as row-major data (a copy only if it is not already).
fn row_major(x: &Array) -> Result<Data> {
    let d = x.data()?;
    if d.is_row_contiguous(x.shape()) {
        Ok(d)
    } else {
        super::copy::copy(x)
    }
}

pub use qmm::joined_matmul;
pub(super) use qmv::QMV_MAX_ROWS;

/// Evaluates one quantized op.
pub fn eval(op: QuantOp, p: QuantParams, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
    match op {
        QuantOp::Quantize(part) => quantize::quantize(&inputs[0], part, p, shape),
        QuantOp::Dequantize => quantize::dequantize(inputs, p, shape, dtype),
        QuantOp::Matmul { transpose } => qmm::quantized_matmul(inputs, p, transpose, shape, dtype),
        QuantOp::GatherMatmul { transpose, .. } => qmm::gather_qmm(inputs, p, transpose, shape, dtype),
    }
}
