//! The small ops around a decode step's quantized products, joined into them on the CPU.
//!
//! Each layer of a decode step normalizes the hidden state before its first products (q/k/v,
//! gate/up) and adds a residual after its last ones (o, down): four small ops a layer whose
//! cost is mostly fixed — a node to walk, a kernel call, a buffer; ~1–2 µs each against
//! ~0.2 µs of arithmetic over a few hundred values. [`plan`] runs a quantized matrix-vector
//! product as [`Op::JoinedMatmul`] with the `rms_norm` of its input computed inside it and the
//! residual `add` of its output done inside it — the same two joins the GPU makes
//! (`backend::cuda::join`) — and the norm's and the product's own steps drop out. The kernel
//! (`quantized::joined_matmul`) computes exactly what the ops would, bit for bit.
//!
//! Only neighbours join: evaluation walks a node's inputs in order, so the norm a product reads
//! comes right before it, and a product comes right before the add that reads it (whichever
//! operand it is: the residual was walked already). A join needs what passes between the two
//! steps to be read by nothing else.

use std::sync::Arc;

use crate::array::{Array, Pending, State};
use crate::device::Device;
use crate::eval::Planned;
use crate::primitives::{BinaryOp, Op, Prologue, QuantOp, QuantParams};

/// The most rows of a product with joins: a decode step's (one per sequence of a batch),
/// those of the matrix-vector kernel.
const JOIN_ROWS: usize = super::quantized::QMV_MAX_ROWS;

/// Joins CPU steps of `steps` (see the module documentation); steps already planned otherwise
/// stay as they are.
pub(crate) fn plan(steps: impl ExactSizeIterator<Item = Planned>) -> Vec<Planned> {
    let mut out: Vec<Planned> = Vec::with_capacity(steps.len());
    for step in steps {
        let joined = match (out.last(), &step.run_as) {
            (Some(prev), None) => join(prev, &step.node),
            _ => None,
        };
        match joined {
            Some(run_as) => {
                out.pop();
                out.push(Planned { node: step.node, run_as: Some(run_as) });
            }
            None => out.push(step),
        }
    }
    out
}

/// `node` computed with the step `prev` before it joined in, if they join.
fn join(prev: &Planned, node: &Array) -> Option<Pending> {
    let st = node.state();
    let State::Pending(p) = &*st else { return None };
    // What passes between the two: held by the plan (`prev`) and read by this node alone.
    if p.stream.device != Device::Cpu || Arc::strong_count(&prev.node.0) != 2 {
        return None;
    }
    let reads = |i: usize| p.inputs.get(i).is_some_and(|x| Arc::ptr_eq(&x.0, &prev.node.0));
    match p.op {
        Op::Binary(BinaryOp::Add) if reads(0) || reads(1) => with_addend(prev, node, p),
        _ if reads(0) => with_norm(prev, p, decode_product(p, node.shape())?),
        _ => None,
    }
}

/// The format of `p` if it is a decode product the kernel joins into: a quantized matrix
/// `[N, K]` (one, not a stack) times x transposed, at most [`JOIN_ROWS`] rows out.
fn decode_product(p: &Pending, shape: &[usize]) -> Option<QuantParams> {
    match p.op {
        Op::Quantized { op: QuantOp::Matmul { transpose: true }, params }
            if p.inputs[1].ndim() == 2 && rows(shape) <= JOIN_ROWS =>
        {
            Some(params)
        }
        _ => None,
    }
}

/// The rows of an output of `shape`.
fn rows(shape: &[usize]) -> usize {
    shape[..shape.len().saturating_sub(1)].iter().product()
}

/// Product `p` over the `rms_norm` step `prev` (its input 0) as one step.
fn with_norm(prev: &Planned, p: &Pending, params: QuantParams) -> Option<Pending> {
    if prev.run_as.is_some() {
        return None;
    }
    let ns = prev.node.state();
    let State::Pending(norm) = &*ns else { return None };
    let Op::RmsNorm { eps, weight } = norm.op else { return None };
    if norm.stream != p.stream || norm.inputs[0].dtype() != prev.node.dtype() {
        return None;
    }
    let inputs = norm.inputs.iter().chain(&p.inputs[1..]).cloned().collect();
    let op = Op::JoinedMatmul {
        prologue: Some(Prologue::RmsNorm { eps, weight }),
        epilogue: None,
        alpha: 1.0,
        beta: 0.0,
        quantized: Some(params),
    };
    Some(Pending { op, inputs, stream: p.stream })
}

/// The `add` `a` (node `node`) of the product step `prev` and a residual of the same shape and
/// dtype, as the product (its norm joined in or not) with the residual as its addend.
fn with_addend(prev: &Planned, node: &Array, a: &Pending) -> Option<Pending> {
    let same = |x: &Array| x.shape() == node.shape() && x.dtype() == node.dtype();
    if !a.inputs.iter().all(same) {
        return None;
    }
    let addend = a.inputs.iter().find(|x| !Arc::ptr_eq(&x.0, &prev.node.0))?;
    let (prologue, quantized, inputs) = match &prev.run_as {
        Some(Pending {
            op: Op::JoinedMatmul { prologue, epilogue: None, beta, quantized: Some(q), .. },
            inputs,
            stream,
        }) if *beta == 0.0 && *stream == a.stream => (prologue.clone(), *q, inputs.clone()),
        Some(_) => return None,
        None => {
            let ps = prev.node.state();
            let State::Pending(pp) = &*ps else { return None };
            let params = decode_product(pp, prev.node.shape())?;
            if pp.stream != a.stream {
                return None;
            }
            (None, params, pp.inputs.clone())
        }
    };
    let inputs = inputs.into_iter().chain(std::iter::once(addend.clone())).collect();
    let op = Op::JoinedMatmul { prologue, epilogue: None, alpha: 1.0, beta: 1.0, quantized: Some(quantized) };
    Some(Pending { op, inputs, stream: a.stream })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::test_rand;
    use crate::primitives::QuantMode;
    use crate::Dtype;

    fn array(n: &[usize], seed: u64, dtype: Dtype) -> Array {
        let v: Vec<f32> = test_rand(n.iter().product(), seed).iter().map(|x| x * 2.0 - 1.0).collect();
        crate::astype(&Array::from_slice(&v, n).unwrap(), dtype).unwrap()
    }

    fn bits(a: &Array) -> Vec<u32> {
        crate::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    /// `residual + rms_norm(x, g) @ dequantize(w)ᵀ` (or with the operands of the add swapped, or
    /// without the norm's weight) evaluates as one joined step, and equals bit for bit the ops
    /// evaluated one by one (each held, so nothing joins); a product that something else holds
    /// does not join.
    #[test]
    fn norm_product_and_add_join_and_match_the_ops() {
        for dtype in [Dtype::Bf16, Dtype::F16, Dtype::F32] {
            for (rows, weight, residual_first) in [(1, true, true), (2, false, false), (4, true, false)] {
                let (x, g) = (array(&[rows, 128], 1, dtype), array(&[128], 2, dtype));
                let r = array(&[rows, 48], 3, dtype);
                let (wq, s, b) = crate::quantize(&array(&[48, 128], 4, dtype), 64, 4, QuantMode::Affine).unwrap();
                crate::eval(&[&x, &g, &r, &wq, &s, b.as_ref().unwrap()]).unwrap();
                let build = || {
                    let n = crate::fast::rms_norm(&x, weight.then_some(&g), 1e-5).unwrap();
                    let p = crate::quantized_matmul(&n, &wq, &s, b.as_ref(), true, 64, 4, QuantMode::Affine).unwrap();
                    let out = if residual_first { crate::add(&r, &p) } else { crate::add(&p, &r) }.unwrap();
                    (n, p, out)
                };
                let (_, _, joined) = build();
                let steps = crate::backend::plan(crate::eval::topological_order(&[&joined]).unwrap());
                assert_eq!(steps.len(), 1, "{dtype} rows {rows}: norm, product and add are one step");
                assert!(matches!(
                    steps[0].run_as,
                    Some(Pending { op: Op::JoinedMatmul { prologue: Some(_), beta, .. }, .. }) if beta == 1.0
                ));
                drop(steps);
                joined.eval().unwrap();
                let (n, p, apart) = build();
                n.eval().unwrap();
                p.eval().unwrap();
                apart.eval().unwrap();
                assert_eq!(bits(&joined), bits(&apart), "{dtype} rows {rows} weight {weight}");
                // A product held elsewhere keeps its own step (and the add its own).
                let (_, p, out) = build();
                let steps = crate::backend::plan(crate::eval::topological_order(&[&out]).unwrap());
                assert_eq!(steps.len(), 2, "{dtype} rows {rows}: the norm joins the product only");
                drop((steps, p));
            }
        }
    }

    /// A product over a stack of quantized matrices (a batched `quantized_matmul`) keeps its
    /// norm apart: the joined kernel takes one matrix.
    #[test]
    fn a_stack_of_matrices_does_not_join() {
        let x = array(&[2, 1, 128], 5, Dtype::Bf16);
        let (wq, s, b) = crate::quantize(&array(&[2, 48, 128], 6, Dtype::Bf16), 64, 4, QuantMode::Affine).unwrap();
        let n = crate::fast::rms_norm(&x, None, 1e-5).unwrap();
        let p = crate::quantized_matmul(&n, &wq, &s, b.as_ref(), true, 64, 4, QuantMode::Affine).unwrap();
        drop(n);
        crate::eval(&[&x, &wq, &s, b.as_ref().unwrap()]).unwrap();
        let steps = crate::backend::plan(crate::eval::topological_order(&[&p]).unwrap());
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| s.run_as.is_none()));
    }
}
