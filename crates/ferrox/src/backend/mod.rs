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

use crate::array::{row_major_strides, Array, Data, Pending};
use crate::device::Device;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::eval::Planned;
use crate::primitives::{BinaryOp, Epilogue, Op, Prologue, QuantOp, QuantParams};

/// The interface every backend implements.
pub trait Backend: Send + Sync {
    /// The device this backend runs on.
    fn device(&self) -> Device;
    /// Evaluates `op` over evaluated `inputs` into an output of `shape` and `dtype`.
    fn eval(&self, op: &Op, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data>;
}

/// The steps that evaluate `order` (pending nodes, inputs before their consumers): on a GPU,
/// a matrix-vector product takes in the norm before it and the SwiGLU after it where nothing
/// else reads what passes between them ([`cuda::join`]); on the CPU, a quantized one takes
/// in the norm before it and the residual add after it ([`cpu::join`]); the nodes joined in
/// drop out, and every other node runs as it is. The graph itself is not changed, so an evaluation that stops at an
/// error leaves every node as it was built.
pub(crate) fn plan(order: Vec<Array>) -> Vec<Planned> {
    #[cfg(feature = "cuda")]
    return cpu::join::plan(cuda::join::plan(order).into_iter());
    #[cfg(not(feature = "cuda"))]
    cpu::join::plan(order.into_iter().map(|node| Planned { node, run_as: None }))
}

/// How a backend evaluates one op over evaluated inputs into an output of a shape and dtype.
pub(crate) type RunOp<'a> = dyn Fn(&Op, &[Array], &[usize], Dtype) -> Result<Data> + 'a;

/// [`Op::JoinedMatmul`] as the ops it joins, one after another, each through `run`: the
/// prologue's op, the product, the epilogue's views and program. What a backend does where it
/// has no kernel for the joined op.
#[allow(clippy::too_many_arguments)]
pub(crate) fn joined_matmul_parts(
    prologue: Option<&Prologue>,
    epilogue: Option<&Epilogue>,
    inputs: &[Array],
    alpha: f64,
    beta: f64,
    quantized: Option<QuantParams>,
    shape: &[usize],
    dtype: Dtype,
    run: &RunOp,
) -> Result<Data> {
    let (pro, rest) = inputs.split_at(prologue.map_or(1, Prologue::inputs));
    let a = match prologue {
        Some(Prologue::RmsNorm { eps, weight }) => {
            let x = &pro[0];
            let op = Op::RmsNorm { eps: *eps, weight: *weight };
            Array::from_data(x.shape().to_vec(), x.dtype(), run(&op, pro, x.shape(), x.dtype())?)
        }
        None => pro[0].clone(),
    };
    let ins: Vec<Array> = std::iter::once(a).chain(rest.iter().cloned()).collect();
    match (epilogue, quantized) {
        (Some(Epilogue::Rope(rope)), _) => {
            // The product's op, its inputs and its columns (a quantized matrix is stored [N, ·]).
            let (op, np, n) = match quantized {
                Some(params) => {
                    let op = Op::Quantized { op: QuantOp::Matmul { transpose: true }, params };
                    (op, 1 + params.mode.matrix_inputs(), ins[1].shape()[0])
                }
                None => (Op::Matmul { alpha, beta: 0.0 }, 2, ins[1].shape()[ins[1].ndim() - 1]),
            };
            rope_parts(rope, (&op, &ins[..np], n), &ins[np..], shape, dtype, run)
        }
        (Some(Epilogue::Halves { .. }), Some(_)) => {
            Err(Error::invalid("eval", "a joined quantized product takes no elementwise epilogue"))
        }
        (None, Some(params)) => {
            // The quantized product, then the addend (the plan joins only beta 1).
            if (beta != 0.0 && beta != 1.0) || alpha != 1.0 {
                return Err(Error::invalid("eval", "a joined quantized product takes no scales"));
            }
            let nw = params.mode.matrix_inputs();
            let op = Op::Quantized { op: QuantOp::Matmul { transpose: true }, params };
            let product = run(&op, &ins[..1 + nw], shape, dtype)?;
            if beta == 0.0 {
                return Ok(product);
            }
            let product = Array::from_data(shape.to_vec(), dtype, product);
            run(&Op::Binary(BinaryOp::Add), &[product, ins[1 + nw].clone()], shape, dtype)
        }
        (None, None) => run(&Op::Matmul { alpha, beta }, &ins, shape, dtype),
        (Some(Epilogue::Halves { graph, lower_first }), None) => {
            // The product has twice the output's columns, in the operands' dtype.
            let (nd, pdt) = (shape.len(), ins[0].dtype());
            let mut full = shape.to_vec();
            full[nd - 1] *= 2;
            let p = Array::from_data(full.clone(), pdt, run(&Op::Matmul { alpha, beta }, &ins, &full, pdt)?);
            let half = |lower: bool| -> Result<Array> {
                let mut start = vec![0; nd];
                start[nd - 1] = if lower { 0 } else { shape[nd - 1] };
                let op = Op::Slice { start, step: vec![1; nd] };
                Ok(Array::from_data(shape.to_vec(), pdt, run(&op, std::slice::from_ref(&p), shape, pdt)?))
            };
            let (lo, hi) = (half(true)?, half(false)?);
            let halves = if *lower_first { [lo, hi] } else { [hi, lo] };
            run(&Op::Fused(graph.clone()), &halves, shape, dtype)
        }
    }
}

/// [`Epilogue::Rope`] as its parts: `product` (the op, its inputs, its `n` columns; one
/// position, `[B, 1, n]`), its heads `[B, n / D, 1, D]` (the same memory: one position), the
/// leading ones of `shape` sliced, and the rope op over them with the inputs `after` the
/// product's.
fn rope_parts(
    rope: &Op,
    (op, ins, n): (&Op, &[Array], usize),
    after: &[Array],
    shape: &[usize],
    dtype: Dtype,
    run: &RunOp,
) -> Result<Data> {
    let Op::RopeWrite { values_from, .. } = rope else {
        return Err(Error::invalid("eval", "a product's rope epilogue holds a rope op"));
    };
    let d = shape[shape.len() - 1];
    let mut full = ins[0].shape().to_vec();
    *full.last_mut().expect("a product's operand has columns") = n;
    if shape.len() != 4
        || shape[2] != 1
        || d == 0
        || !n.is_multiple_of(d)
        || full.iter().product::<usize>() != shape[0] * n
    {
        return Err(Error::invalid("eval", format!("a rope over {shape:?} of a product of {n} columns")));
    }
    let p = run(op, ins, &full, dtype)?;
    if !p.is_row_contiguous(&full) {
        return Err(Error::invalid("eval", "a product's output is not row-major"));
    }
    let heads_shape = [shape[0], n / d, 1, d];
    let heads = Array::from_data(heads_shape.to_vec(), dtype, Data { strides: row_major_strides(&heads_shape), ..p });
    let slice = Op::Slice { start: vec![0; 4], step: vec![1; 4] };
    let x = Array::from_data(shape.to_vec(), dtype, run(&slice, std::slice::from_ref(&heads), shape, dtype)?);
    // The op's inputs: x, the offset (and frequencies), the key cache, then the value rows'
    // source and the value cache.
    let own = after.len() - values_from.is_some() as usize;
    let mut rope_ins: Vec<Array> = std::iter::once(x).chain(after[..own].iter().cloned()).collect();
    if values_from.is_some() {
        rope_ins.extend([heads, after[own].clone()]);
    }
    run(rope, &rope_ins, shape, dtype)
}

/// Runs a pending node on its stream's device.
pub(crate) fn run(p: &Pending, out: &Array) -> Result<Data> {
    match p.stream.device {
        #[cfg(not(feature = "cuda"))]
        Device::Cpu => cpu::CpuBackend.eval(&p.op, &p.inputs, out.shape(), out.dtype()),
        #[cfg(feature = "cuda")]
        Device::Cpu => fallback::on_cpu(&p.op, &p.inputs, out.shape(), out.dtype()),
        #[cfg(feature = "cuda")]
        Device::Gpu(i) => cuda::eval_or_fallback(i, &p.op, &p.inputs, out.shape(), out.dtype()),
        #[cfg(not(feature = "cuda"))]
        Device::Gpu(i) => Err(crate::error::Error::Device(format!("no GPU backend for Gpu({i}) in this build"))),
    }
}

#[cfg(test)]
mod tests {
    use super::cpu::{test_rand, CpuBackend};
    use super::*;
    use crate::primitives::QuantMode;

    fn array(n: &[usize], seed: u64) -> Array {
        let v: Vec<f32> = test_rand(n.iter().product(), seed).iter().map(|x| x * 2.0 - 1.0).collect();
        Array::from_slice(&v, n).unwrap()
    }

    /// A joined quantized product that a backend runs as its parts (having no kernel for it)
    /// is, bit for bit, the ops it stands for: rms_norm, the product with the quantized
    /// matrix, the residual added — with and without the norm's weight and the residual.
    #[test]
    fn joined_quantized_product_runs_as_its_parts() {
        let (x, g, w, r) = (array(&[2, 64], 1), array(&[64], 2), array(&[8, 64], 3), array(&[2, 8], 4));
        let (wq, s, b) = crate::quantize(&w, 32, 4, QuantMode::Affine).unwrap();
        let b = b.unwrap();
        let params = QuantParams { group_size: 32, bits: 4, mode: QuantMode::Affine };
        for (weight, residual) in [(true, true), (false, true), (true, false)] {
            let normed = crate::fast::rms_norm(&x, weight.then_some(&g), 1e-5).unwrap();
            let product = crate::quantized_matmul(&normed, &wq, &s, Some(&b), true, 32, 4, QuantMode::Affine).unwrap();
            let want = if residual { crate::add(&product, &r).unwrap() } else { product };
            let mut inputs = vec![x.clone()];
            if weight {
                inputs.push(g.clone());
            }
            inputs.extend([wq.clone(), s.clone(), b.clone()]);
            if residual {
                inputs.push(r.clone());
            }
            let op = Op::JoinedMatmul {
                prologue: Some(Prologue::RmsNorm { eps: 1e-5, weight }),
                epilogue: None,
                alpha: 1.0,
                beta: if residual { 1.0 } else { 0.0 },
                quantized: Some(params),
            };
            let got = CpuBackend.eval(&op, &inputs, &[2, 8], Dtype::F32).unwrap();
            let got = Array::from_data(vec![2, 8], Dtype::F32, got);
            assert_eq!(
                got.to_vec::<f32>().unwrap(),
                want.to_vec::<f32>().unwrap(),
                "weight {weight}, residual {residual}"
            );
        }
    }
}
