//! Backends: where primitives are evaluated.
//!
//! A backend turns one primitive and its evaluated inputs into the output's [`Data`]. The CPU
//! backend is always present; a GPU backend slots in beside it behind the `cuda` feature.

pub(crate) mod cpu;

use crate::array::{Array, Data, Pending};
use crate::device::Device;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
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
    let backend: &dyn Backend = match p.stream.device {
        Device::Cpu => &cpu::CpuBackend,
        Device::Gpu(i) => {
            return Err(Error::Device(format!("no GPU backend for Gpu({i}) in this build")));
        }
    };
    backend.eval(&p.op, &p.inputs, out.shape(), out.dtype())
}
