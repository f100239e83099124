//! [`checkpoint`]: a module's forward pass whose intermediates reverse mode recomputes instead
//! of storing (MLX's `nn.utils.checkpoint`).

use ferrox::{self as fx, Array, Result};

use crate::module::Module;

/// `f(module, inputs)`, checkpointed: the backward pass reruns it rather than keeping its
/// intermediates, trading one more forward pass for memory. The module's parameters are
/// passed to the core `fx::checkpoint` as inputs (not captured), so inside
/// [`crate::value_and_grad`] they still get their gradients.
pub fn checkpoint<M, F>(module: &M, inputs: &[Array], f: F) -> Result<Vec<Array>>
where
    M: Module + Clone + Send + Sync + 'static,
    F: Fn(&M, &[Array]) -> Result<Vec<Array>> + Send + Sync + 'static,
{
    let params = module.parameters();
    let keys: Vec<String> = params.keys().cloned().collect();
    let n = inputs.len();
    let template = module.clone();
    let run = fx::checkpoint(move |xs: &[Array]| {
        let mut m = template.clone();
        m.update(&keys.iter().cloned().zip(xs[n..].iter().cloned()).collect())?;
        f(&m, &xs[..n])
    });
    let mut all = inputs.to_vec();
    all.extend(params.into_values());
    run(&all)
}
