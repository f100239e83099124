//! [`Sequential`]: layers applied one after another.

use ferrox::{Array, Result};

use crate::module::UnaryModule;
use crate::Module;

/// A chain of one-input layers, MLX's `nn.Sequential`; parameters are named `layers.0.weight`,
/// `layers.1.bias`, … as in MLX. Its layers are `Send + Sync`, so a model holding one can be
/// shared across threads.
#[derive(Module, Default)]
pub struct Sequential {
    /// The layers, applied in order.
    pub layers: Vec<Box<dyn UnaryModule + Send + Sync>>,
}

impl Sequential {
    /// An empty chain (the identity).
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// The chain with `layer` appended.
    pub fn with(mut self, layer: impl UnaryModule + Send + Sync + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// `x` through every layer in order.
    pub fn forward(&mut self, x: &Array) -> Result<Array> {
        let mut y = x.clone();
        for layer in &mut self.layers {
            y = layer.call(&y)?;
        }
        Ok(y)
    }
}

impl UnaryModule for Sequential {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
