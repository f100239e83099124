//! The CUDA backend (feature `cuda`): NVIDIA GPUs through `cudarc`, which loads libcuda,
//! NVRTC and cuBLAS at run time — building needs no CUDA toolkit, and the same binary runs
//! where there is no GPU (then [`device_count`] is 0 and everything runs on the CPU).
//!
//! - [`context`]: the device, its one stream (all work is ordered on it), cuBLAS.
//! - [`alloc`]: device memory — a caching, stream-ordered pool (`cuMemAllocAsync`, never
//!   managed memory) counted in `active_memory` and friends; uploads and downloads.
//! - [`graph`]: recording a step's work as a CUDA graph and replaying it ([`crate::Replay`]).
//! - [`compile`]: `.cu` sources compiled by NVRTC for the device's architecture at first use,
//!   cached on disk.
//! - [`fused`]: `compile`'s fused programs as one generated kernel each.
//! - [`join`]: the work before and after a matrix-vector product joined into its kernel.
//! - [`elementwise`], [`reduce`], [`matmul`], [`gather_mm`], [`fast`], [`index`], [`scatter`], [`sort`],
//!   [`random`], [`conv`], [`attention`], [`quantized`]: the kernels.
//!
//! An op this backend has no kernel for (or a dtype or layout it does not handle) returns
//! `None` from [`eval`]; the dispatcher then runs it on the CPU ([`super::fallback`]).

pub(crate) mod alloc;
mod attention;
pub(crate) mod compile;
pub(crate) mod context;
mod conv;
mod elementwise;
mod fast;
mod fused;
mod gather_mm;
pub(crate) mod graph;
mod index;
pub(crate) mod join;
mod layout;
mod matmul;
mod quantized;
mod random;
mod reduce;
mod scatter;
mod sort;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::Op;

pub(crate) use alloc::with_device_pool;
pub use context::{device_count, device_name, synchronize};
pub use join::joined_products;

/// Evaluates `op` on GPU `ordinal`, on the CPU where the GPU has no kernel for it.
pub(crate) fn eval_or_fallback(
    ordinal: usize,
    op: &Op,
    inputs: &[Array],
    shape: &[usize],
    dtype: Dtype,
) -> Result<Data> {
    match eval(ordinal, op, inputs, shape, dtype)? {
        Some(data) => Ok(data),
        None => super::fallback::run(op, inputs, shape, dtype),
    }
}

/// Evaluates `op` on GPU `ordinal`, or `None` if there is no kernel for it (the caller falls
/// back to the CPU).
pub(crate) fn eval(ordinal: usize, op: &Op, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let gpu = context::gpu(ordinal)?;
    gpu.bind()?;
    let x = inputs.first();
    Ok(match op {
        // Views and pass-throughs move no bytes: the CPU backend's bookkeeping serves.
        Op::Broadcast | Op::Transpose(_) | Op::Slice { .. } | Op::AsStrided { .. } | Op::StopGradient => {
            Some(super::fallback::on_cpu(op, inputs, shape, dtype)?)
        }
        Op::Checkpoint(_) => Some(inputs.last().expect("the forward result is the last input").data()?),
        Op::Load(src) => Some(src.load()?),
        Op::Reshape => Some(elementwise::reshape(gpu, x.unwrap(), shape)?),
        Op::BitCast => elementwise::bitcast(gpu, x.unwrap(), shape, dtype)?,
        Op::Copy => Some(elementwise::copy(gpu, x.unwrap())?),
        Op::AsType => elementwise::astype(gpu, x.unwrap(), dtype)?,
        Op::Unary(u) => elementwise::unary(gpu, *u, x.unwrap(), shape, dtype)?,
        Op::Binary(b) => elementwise::binary(gpu, *b, &inputs[0], &inputs[1], shape, dtype)?,
        Op::Select => elementwise::select(gpu, &inputs[0], &inputs[1], &inputs[2], shape, dtype)?,
        Op::Reduce { op, axes } => reduce::reduce(gpu, *op, x.unwrap(), axes, shape, dtype)?,
        Op::ArgReduce { op, axis } => reduce::arg_reduce(gpu, *op, x.unwrap(), *axis, shape)?,
        Op::Scan { op, axis, reverse, inclusive } => {
            if dtype != x.unwrap().dtype() {
                None
            } else {
                reduce::scan(gpu, *op, x.unwrap(), *axis, *reverse, *inclusive)?
            }
        }
        Op::Matmul { alpha, beta } => matmul::matmul(gpu, inputs, *alpha, *beta, shape, dtype)?,
        Op::JoinedMatmul { prologue, epilogue, alpha, beta, quantized } => matmul::joined_matmul(
            gpu,
            ordinal,
            (prologue.as_ref(), epilogue.as_ref()),
            inputs,
            (*alpha, *beta),
            *quantized,
            shape,
            dtype,
        )?,
        Op::GatherMm { .. } => gather_mm::gather_mm(gpu, inputs, shape, dtype)?,
        Op::Arange { start, step } => index::arange(gpu, *start, *step, shape, dtype)?,
        Op::Gather { axes, slice_sizes } => index::gather(gpu, inputs, axes, slice_sizes, shape, dtype)?,
        Op::TakeAlongAxis(axis) => index::take_along_axis(gpu, &inputs[0], &inputs[1], *axis, shape, dtype)?,
        Op::SliceUpdate { start, step } => index::slice_update(gpu, &inputs[0], &inputs[1], start, step)?,
        Op::Scatter { axes, mode } => scatter::scatter(gpu, inputs, axes, *mode, shape, dtype)?,
        Op::PutAlongAxis { axis, mode } => scatter::put_along_axis(gpu, inputs, *axis, *mode, shape, dtype)?,
        Op::Sort { kind, axis } => sort::sort(gpu, *kind, x.unwrap(), *axis, shape)?,
        Op::Conv(p) => conv::conv(gpu, inputs, p, shape, dtype)?,
        Op::RandomBits => random::random_bits(gpu, x.unwrap(), shape, dtype)?,
        Op::Concatenate(axis) => index::concatenate(gpu, inputs, *axis, shape, dtype)?,
        Op::Attention { scale, mask } => attention::attention(gpu, inputs, *scale, *mask, shape)?,
        Op::AttentionVjp { scale, mask } => attention::attention_vjp(gpu, inputs, *scale, *mask, shape)?,
        Op::Quantized { op, params } => quantized::eval(gpu, *op, *params, inputs, shape, dtype)?,
        Op::Fused(graph) => fused::fused(gpu, ordinal, graph, inputs, shape, dtype)?,
        Op::LogSumExp => fast::logsumexp(gpu, x.unwrap(), shape)?,
        Op::Softmax { .. } => fast::softmax(gpu, x.unwrap(), shape)?,
        Op::RmsNorm { eps, weight } => fast::rms_norm(gpu, &inputs[0], weight.then(|| &inputs[1]), *eps, shape)?,
        Op::NormVjp { eps, weight, centered } => {
            let w = weight.then(|| &inputs[1]);
            fast::norm_vjp(gpu, &inputs[0], w, &inputs[inputs.len() - 1], *eps, *centered, shape)?
        }
        Op::LayerNorm { eps, weight, bias } => {
            let w = weight.then(|| &inputs[1]);
            let b = bias.then(|| &inputs[1 + *weight as usize]);
            fast::layer_norm(gpu, &inputs[0], w, b, *eps, shape)?
        }
        Op::Rope { dims, traditional, base, scale, freqs } => {
            let f = freqs.then(|| &inputs[2]);
            fast::rope(gpu, &inputs[0], &inputs[1], f, None, *dims, *traditional, *base, *scale, shape)?
        }
        Op::RopeWrite { dims, traditional, base, scale, freqs, keys_from, values_from } => {
            let f = freqs.then(|| &inputs[2]);
            let caches = &inputs[2 + *freqs as usize..];
            let values = values_from.map(|from| (&caches[1], from, &caches[2]));
            let writes = fast::CacheWrites { keys: &caches[0], keys_from: *keys_from, values };
            let out =
                fast::rope(gpu, &inputs[0], &inputs[1], f, Some(&writes), *dims, *traditional, *base, *scale, shape)?;
            // The caches are written: running it elsewhere would lose that.
            Some(out.ok_or_else(|| crate::error::Error::invalid("rope", "a joined KV-cache write the GPU cannot run"))?)
        }
        Op::Written => Some(inputs[0].data()?),
    })
}
