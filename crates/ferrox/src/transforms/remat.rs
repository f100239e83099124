//! `checkpoint`: trade compute for memory in reverse mode.
//!
//! A checkpointed function's outputs are marked with an [`Op::Checkpoint`] node over its
//! inputs and its forward result. The node passes the result through unchanged, but its
//! gradient rule runs the function again on the inputs and differentiates that fresh
//! computation, so the backward graph holds on to the inputs only: the forward pass's
//! intermediates are freed as soon as the forward pass is done with them.

use std::sync::Arc;

use crate::array::Array;
use crate::error::Result;
use crate::primitives::{CheckpointFn, Op};

/// Wraps `f` so that reverse mode recomputes its intermediates instead of storing them.
/// Values are unchanged; gradients are the same, computed with one more forward pass of `f`
/// per output.
///
/// ```
/// use ferrox::{self as fx, Array};
/// let block = fx::checkpoint(|a: &[Array]| Ok(vec![fx::tanh(&fx::matmul(&a[0], &a[1])?)?]));
/// let x = Array::from_slice(&[0.5f32, -1.0], &[1, 2]).unwrap();
/// let w = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let loss = |a: &[Array]| fx::sum(&block(a)?[0], None, false);
/// let g = fx::grad(loss, &[x, w], &[1]).unwrap();
/// assert_eq!(g[0].shape(), &[2, 2]);
/// ```
pub fn checkpoint<F>(f: F) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + Send + Sync + 'static,
{
    let f: crate::primitives::ArrayFn = Arc::new(f);
    move |inputs: &[Array]| {
        let outputs = f(inputs)?;
        Ok(outputs
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let mut ins = inputs.to_vec();
                ins.push(o.clone());
                let op = Op::Checkpoint(Arc::new(CheckpointFn { f: f.clone(), output: i }));
                Array::from_op(o.shape().to_vec(), o.dtype(), op, ins)
            })
            .collect())
    }
}
