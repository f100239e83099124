//! Backends: where primitives are evaluated.
//!
//! A backend turns one primitive and its evaluated inputs into the output's [`Data`]. The CPU
//! backend is always present; the CUDA backend slots in beside it behind the `cuda` feature.
//! An op the GPU has no kernel for runs on the CPU instead ([`fallback`]): its inputs come to
//! the host by themselves, and its output goes to the device when a GPU kernel reads it.

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "cuda")]
pub mod fallback;

use crate::array::{Array, Data, Pending};
use crate::device::Device;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::Op;

/// The interface every backend implements.
pub trait Backend: Send + Sync {
    /// The device this backend runs on.
    fn device(&self) -> Device;
    /// Evaluates `op` over evaluated `inputs` into an output of `shape` and `dtype`.
    fn eval(&self, op: &Op, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data>;
}

/// Runs a pending node on its stream's device.
pub(crate) fn run(p: &Pending, out: &Array) -> Result<Data> {
    match p.stream.device {
        #[cfg(not(feature = "cuda"))]
        Device::Cpu => cpu::CpuBackend.eval(&p.op, &p.inputs, out.shape(), out.dtype()),
        #[cfg(feature = "cuda")]
        Device::Cpu => fallback::on_cpu(&p.op, &p.inputs, out.shape(), out.dtype()),
        #[cfg(feature = "cuda")]
        Device::Gpu(i) => match cuda::eval(i, &p.op, &p.inputs, out.shape(), out.dtype())? {
            Some(data) => Ok(data),
            None => fallback::run(&p.op, &p.inputs, out.shape(), out.dtype()),
        },
        #[cfg(not(feature = "cuda"))]
        Device::Gpu(i) => Err(crate::error::Error::Device(format!("no GPU backend for Gpu({i}) in this build"))),
    }
}
