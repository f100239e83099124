//! The CPU backend: rayon-parallel kernels over strided data.

mod binary;
mod conv;
mod copy;
mod iter;
mod matmul;
mod reduce;
mod unary;

use crate::array::{Array, Data};
use crate::device::Device;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::Op;

use super::Backend;

/// The CPU backend.
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn eval(&self, op: &Op, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
        let x = inputs.first();
        match op {
            Op::Arange { start, step } => copy::arange(*start, *step, shape, dtype),
            Op::Unary(u) => unary::eval(*u, x.unwrap(), shape, dtype),
            Op::Binary(b) => binary::eval(*b, &inputs[0], &inputs[1], shape, dtype),
            Op::Select => binary::select(&inputs[0], &inputs[1], &inputs[2], shape, dtype),
            Op::AsType => copy::astype(x.unwrap(), dtype),
            Op::BitCast => copy::bitcast(x.unwrap(), shape, dtype),
            Op::Broadcast => copy::broadcast(x.unwrap(), shape),
            Op::Transpose(perm) => copy::transpose(x.unwrap(), perm),
            Op::Reshape => copy::reshape(x.unwrap(), shape),
            Op::Slice { start, step } => copy::slice(x.unwrap(), start, step, shape),
            Op::AsStrided { strides, offset } => copy::as_strided(x.unwrap(), shape, strides, *offset, dtype),
            Op::Copy => copy::copy(x.unwrap()),
            Op::StopGradient => x.unwrap().data(),
            Op::Reduce { op, axes } => reduce::reduce(*op, x.unwrap(), axes, shape, dtype),
            Op::ArgReduce { op, axis } => reduce::arg_reduce(*op, x.unwrap(), *axis, shape),
            Op::Scan { op, axis, reverse, inclusive } => reduce::scan(*op, x.unwrap(), *axis, *reverse, *inclusive),
            Op::Matmul { alpha, beta } => matmul::matmul(inputs, *alpha, *beta, shape, dtype),
            Op::Conv(p) => conv::conv(inputs, p, shape, dtype),
            Op::Concatenate(axis) => copy::concatenate(inputs, *axis, shape, dtype),
            Op::SliceUpdate { start, step } => copy::slice_update(&inputs[0], &inputs[1], start, step),
            Op::Load(src) => src.load(),
            _ => Err(crate::Error::invalid("eval", format!("{op:?} has no CPU kernel yet"))),
        }
    }
}
