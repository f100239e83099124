//! [`RmsNorm`]: root-mean-square normalization over the last axis.

use ferrox::{self as fx, Array, Dtype, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// `x / sqrt(mean(x²) + eps) * weight` over the last axis, MLX's `nn.RMSNorm` (fused kernel).
#[derive(Module, Clone, Debug)]
pub struct RmsNorm {
    /// `[dims]`, ones at first.
    pub weight: Array,
    /// Added to the mean square.
    #[module(skip)]
    pub eps: f32,
    state: ModuleState,
}

impl RmsNorm {
    /// A norm over `dims` features (weight ones).
    pub fn new(dims: usize, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm { weight: fx::ones(&[dims], Dtype::F32)?, eps, state: ModuleState::new() })
    }

    /// The normalized `x` (`[..., dims]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        fx::fast::rms_norm(x, Some(&self.weight), self.eps)
    }
}

impl UnaryModule for RmsNorm {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
