//! [`value_and_grad`]: a loss and its gradient with respect to a model's trainable parameters.

use std::cell::RefCell;

use ferrox::{self as fx, Array, Result};

use crate::module::Module;
use crate::params::Params;

/// `(loss_fn(model), ∂loss/∂trainable_parameters)`, MLX's `nn.value_and_grad`.
///
/// The gradient has one entry per trainable (not frozen) parameter, keyed by path; frozen
/// parameters get none. `loss_fn` gets the model mutably so layers that keep running state
/// (BatchNorm) can update it; the parameters it sees are the trace's stand-ins for the real
/// ones, which are put back before this returns (even if `loss_fn` fails).
pub fn value_and_grad<M, F>(model: &mut M, loss_fn: F) -> Result<(Array, Params)>
where
    M: Module + ?Sized,
    F: Fn(&mut M) -> Result<Array>,
{
    let trainable = model.trainable_parameters();
    let keys: Vec<String> = trainable.keys().cloned().collect();
    let leaves: Vec<Array> = trainable.values().cloned().collect();
    let argnums: Vec<usize> = (0..leaves.len()).collect();
    let cell = RefCell::new(&mut *model);
    let result = fx::value_and_grad(
        |xs| {
            let mut m = cell.borrow_mut();
            let traced: Params = keys.iter().cloned().zip(xs.iter().cloned()).collect();
            m.update(&traced)?;
            loss_fn(&mut **m)
        },
        &leaves,
        &argnums,
    );
    model.update(&trainable)?;
    let (value, grads) = result?;
    Ok((value, keys.into_iter().zip(grads).collect()))
}
