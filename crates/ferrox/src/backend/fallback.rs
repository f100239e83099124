//! The one way an op without a GPU kernel still runs on a GPU stream: on the CPU backend.
//!
//! The inputs are brought to the host (a download for those only on the device), the CPU
//! kernel runs with the CPU as the current stream (so arrays a kernel builds for itself stay
//! on the host), and the output stays on the host until a GPU kernel reads it (an upload).
//! Each op that falls back is counted, so [`fallbacks`] tells which ops still need a kernel.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::array::{Array, Data};
use crate::device::{default_stream, with_stream, Device};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::Op;

use super::cpu::CpuBackend;
use super::Backend;

static COUNTS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// The name of an op's variant, with its dtype: "Sort(f32)".
fn op_name(op: &Op, dtype: Dtype) -> String {
    let dbg = format!("{op:?}");
    let end = dbg.find(|c: char| !c.is_alphanumeric()).unwrap_or(dbg.len());
    format!("{}({dtype})", &dbg[..end])
}

/// Runs `op` on the CPU backend for a GPU stream, and records that it did.
pub(crate) fn run(op: &Op, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
    *COUNTS.lock().unwrap_or_else(|e| e.into_inner()).entry(op_name(op, dtype)).or_default() += 1;
    if std::env::var_os("FERROX_LOG_FALLBACK").is_some() {
        eprintln!("ferrox: {} ran on the CPU (no GPU kernel)", op_name(op, dtype));
    }
    for x in inputs {
        if let Some(d) = ready_data(x) {
            d.buffer.ensure_host()?;
        }
    }
    on_cpu(op, inputs, shape, dtype)
}

/// Runs `op` on the CPU backend with the CPU as the current stream.
pub(crate) fn on_cpu(op: &Op, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
    with_stream(default_stream(Device::Cpu), || CpuBackend.eval(op, inputs, shape, dtype))
}

/// The data of an evaluated array (inputs of a node being run are evaluated).
fn ready_data(x: &Array) -> Option<Data> {
    match &*x.state() {
        crate::array::State::Ready(d) => Some(d.clone()),
        crate::array::State::Pending(_) => None,
    }
}

/// The ops that ran on the CPU for a GPU stream since the start, by name and dtype, with how
/// many times each did.
pub fn fallbacks() -> Vec<(String, usize)> {
    COUNTS.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, &v)| (k.clone(), v)).collect()
}
