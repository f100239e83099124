//! [`LayerNorm`]: mean/variance normalization over the last axis.

use ferrox::{self as fx, Array, Dtype, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last axis, MLX's `nn.LayerNorm`
/// (fused kernel). `weight` and `bias` exist when the norm is affine (bias optional).
#[derive(Module, Clone, Debug)]
pub struct LayerNorm {
    /// `[dims]`, ones at first; absent when not affine.
    pub weight: Option<Array>,
    /// `[dims]`, zeros at first; absent when not affine or built without a bias.
    pub bias: Option<Array>,
    /// Added to the variance.
    #[module(skip)]
    pub eps: f32,
    state: ModuleState,
}

impl LayerNorm {
    /// A norm over `dims` features; `affine` adds a learned weight, and `bias` a learned bias.
    pub fn new(dims: usize, eps: f32, affine: bool, bias: bool) -> Result<LayerNorm> {
        let weight = if affine { Some(fx::ones(&[dims], Dtype::F32)?) } else { None };
        let bias = if affine && bias { Some(fx::zeros(&[dims], Dtype::F32)?) } else { None };
        Ok(LayerNorm { weight, bias, eps, state: ModuleState::new() })
    }

    /// The normalized `x` (`[..., dims]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        fx::fast::layer_norm(x, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

impl UnaryModule for LayerNorm {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
