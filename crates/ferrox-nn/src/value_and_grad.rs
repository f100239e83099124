//! [`value_and_grad`]: a loss and its gradient with respect to a model's trainable parameters.

use std::cell::RefCell;

use ferrox::{self as fx, Array, Result, Tree};

use crate::module::Module;
use crate::params::Params;

/// `(loss_fn(model), ∂loss/∂trainable_parameters)`, MLX's `nn.value_and_grad`.
///
/// The gradient has one entry per trainable (not frozen) parameter, keyed by path; frozen
/// parameters get none and are not traced. `loss_fn` gets the model mutably so layers that keep
/// running state (BatchNorm) can update it; the parameters it sees are the trace's stand-ins
/// for the real ones, which are put back before this returns (even if `loss_fn` fails).
pub fn value_and_grad<M, F>(model: &mut M, loss_fn: F) -> Result<(Array, Params)>
where
    M: Module + ?Sized,
    F: Fn(&mut M) -> Result<Array>,
{
    let ((value, _), grads) = value_and_grad_with_aux(model, |m| Ok((loss_fn(m)?, Vec::new())))?;
    Ok((value, grads))
}

/// [`value_and_grad`] for a loss that also returns auxiliary arrays (a token count, the
/// accuracy), which come back as they are, not differentiated: `((loss, aux), grads)`.
pub fn value_and_grad_with_aux<M, F>(model: &mut M, loss_fn: F) -> Result<((Array, Vec<Array>), Params)>
where
    M: Module + ?Sized,
    F: Fn(&mut M) -> Result<(Array, Vec<Array>)>,
{
    let trainable = model.trainable_parameters();
    let keys: Vec<String> = trainable.keys().cloned().collect();
    let leaves = Tree::List(trainable.values().cloned().map(Tree::Leaf).collect());
    let cell = RefCell::new(&mut *model);
    let result = fx::value_and_grad_tree(
        |tree| {
            let mut m = cell.borrow_mut();
            let traced: Params = keys.iter().cloned().zip(tree.leaves()).collect();
            m.update(&traced)?;
            loss_fn(&mut **m)
        },
        &leaves,
    );
    model.update(&trainable)?;
    let (value, grads) = result?;
    Ok((value, keys.into_iter().zip(grads.leaves()).collect()))
}
