//! The CPU backend: rayon-parallel kernels over strided data.

mod attention_kernels;
mod attention_vjp;
mod bf16_gemm;
mod binary;
mod conv;
pub(crate) mod copy;
mod decode_attention;
mod decode_gemv;
mod f32_gemm;
mod fast;
mod fused;
mod fused_block;
mod gather_mm;
mod index;
pub(crate) mod iter;
pub(crate) mod join;
mod math;
mod matmul;
mod quantized;
pub(crate) mod random;
mod reduce;
mod simd;
mod sort;
mod unary;

use crate::array::{Array, Data};
use crate::device::Device;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{Op, Prologue};

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
            Op::JoinedMatmul { prologue, epilogue: None, alpha, beta, quantized: Some(params) }
                if *alpha == 1.0
                    && (*beta == 0.0 || *beta == 1.0)
                    && matches!(inputs[0].dtype(), Dtype::F32 | Dtype::F16 | Dtype::Bf16)
                    && inputs[prologue.as_ref().map_or(1, Prologue::inputs)].ndim() == 2 =>
            {
                let norm = prologue.as_ref().map(|Prologue::RmsNorm { eps, weight }| (*eps, *weight));
                quantized::joined_matmul(inputs, norm, *beta == 1.0, *params, shape, dtype)
            }
            Op::JoinedMatmul { prologue, epilogue, alpha, beta, quantized } => {
                let run = |op: &Op, ins: &[Array], shape: &[usize], dt: Dtype| self.eval(op, ins, shape, dt);
                let (prologue, epilogue) = (prologue.as_ref(), epilogue.as_ref());
                let (a, b, q) = (*alpha, *beta, *quantized);
                crate::backend::joined_matmul_parts(prologue, epilogue, inputs, a, b, q, shape, dtype, &run)
            }
            Op::RopeWrite { .. } | Op::Written => {
                Err(crate::error::Error::invalid("eval", format!("{op:?} is planned only on a GPU")))
            }
            Op::GatherMm { .. } => gather_mm::gather_mm(inputs, shape, dtype),
            Op::Conv(p) => conv::conv(inputs, p, shape, dtype),
            Op::Concatenate(axis) => copy::concatenate(inputs, *axis, shape, dtype),
            Op::SliceUpdate { start, step } => copy::slice_update(&inputs[0], &inputs[1], start, step),
            Op::Sort { kind, axis } => sort::sort(*kind, x.unwrap(), *axis, shape),
            Op::Gather { axes, slice_sizes } => index::gather(inputs, axes, slice_sizes, shape, dtype),
            Op::Scatter { axes, mode } => index::scatter(inputs, axes, *mode, shape, dtype),
            Op::TakeAlongAxis(axis) => index::take_along_axis(&inputs[0], &inputs[1], *axis, shape, dtype),
            Op::PutAlongAxis { axis, mode } => index::put_along_axis(inputs, *axis, *mode, shape, dtype),
            Op::Softmax { .. } => fast::softmax(x.unwrap(), shape),
            Op::LogSumExp => fast::logsumexp(x.unwrap(), shape),
            Op::RmsNorm { eps, weight } => fast::rms_norm(&inputs[0], weight.then(|| &inputs[1]), *eps, shape),
            Op::NormVjp { eps, weight, centered } => {
                let g = &inputs[inputs.len() - 1];
                fast::norm_vjp(&inputs[0], weight.then(|| &inputs[1]), g, *eps, *centered, shape)
            }
            Op::LayerNorm { eps, weight, bias } => {
                let w = weight.then(|| &inputs[1]);
                let b = bias.then(|| &inputs[1 + *weight as usize]);
                fast::layer_norm(&inputs[0], w, b, *eps, shape)
            }
            Op::Rope { dims, traditional, base, scale, freqs } => {
                fast::rope(&inputs[0], &inputs[1], freqs.then(|| &inputs[2]), *dims, *traditional, *base, *scale, shape)
            }
            Op::Attention { scale, mask } => fast::attention(inputs, *scale, *mask, shape),
            Op::AttentionVjp { scale, mask } => attention_vjp::attention_vjp(inputs, *scale, *mask, shape),
            Op::Load(src) => src.load(),
            Op::Quantized { op, params } => quantized::eval(*op, *params, inputs, shape, dtype),
            Op::Fused(g) => fused::eval(g, inputs, shape, dtype),
            Op::Checkpoint(_) => inputs.last().expect("the forward result is the last input").data(),
            Op::RandomBits => random::random_bits(x.unwrap(), shape, dtype),
        }
    }
}

/// Below this many stored elements a matrix-vector kernel runs on one thread.
const FEATURE_PAR_MIN_ELEMS: usize = 1 << 16;

/// Runs `task(j0, j1)` over ranges covering the `n` output features of a matrix of `n × cols`
/// stored elements: one range on one thread when it is small, else a few ranges per thread
/// (for balance), each a multiple of 4 features.
fn for_feature_ranges(n: usize, cols: usize, task: impl Fn(usize, usize) + Sync) {
    let threads = rayon::current_num_threads();
    if n * cols < FEATURE_PAR_MIN_ELEMS || threads == 1 {
        task(0, n);
    } else {
        let chunk = n.div_ceil(threads * 4).next_multiple_of(4);
        use rayon::prelude::*;
        (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| task(c * chunk, n.min((c + 1) * chunk)));
    }
}

#[cfg(test)]
/// True (after saying so) when this CPU lacks AVX512-BF16, so the bf16 kernels' tests skip.
pub(crate) fn skip_without_bf16() -> bool {
    let skip = !bf16_gemm::cpu_supported();
    if skip {
        eprintln!("skipped: this CPU has no AVX512-BF16");
    }
    skip
}

#[cfg(test)]
/// Asserts that `got` is the sum of `terms` within f32 summation error (1e-6 of Σ|term|).
pub(crate) fn assert_sum_close(got: f32, terms: impl Iterator<Item = f64> + Clone, what: impl std::fmt::Display) {
    let (want, mag): (f64, f64) = (terms.clone().sum(), terms.map(f64::abs).sum());
    assert!((got as f64 - want).abs() <= 1e-6 * mag, "{what}: {got} vs {want}");
}

#[cfg(test)]
/// Pseudo-random bf16 values in [-1, 1), as bits (the bf16 kernels' tests).
pub(crate) fn test_bf16_bits(n: usize, seed: u64) -> Vec<u16> {
    test_rand(n, seed).iter().map(|v| half::bf16::from_f32(v * 2.0 - 1.0).to_bits()).collect()
}

#[cfg(test)]
/// A deterministic pseudo-random sequence in [0, 1).
pub(crate) fn test_rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}
