//! [`Identity`]: a placeholder layer that returns its input.

use ferrox::{Array, Result};

use crate::module::UnaryModule;
use crate::Module;

/// Returns its input unchanged, MLX's `nn.Identity` (e.g. to switch a block off in a
/// [`super::Sequential`] without renumbering its neighbours).
#[derive(Module, Clone, Copy, Debug, Default)]
pub struct Identity;

impl Identity {
    /// `x` itself.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(x.clone())
    }
}

impl UnaryModule for Identity {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
