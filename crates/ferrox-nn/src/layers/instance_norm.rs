//! [`InstanceNorm`]: normalization of each channel of each sample over its positions.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// Instance normalization of channels-last inputs `[N, ..., C]`, MLX's `nn.InstanceNorm`: each
/// channel of each sample is normalized over all its positions, then scaled and shifted per
/// channel when affine.
#[derive(Module, Clone, Debug)]
pub struct InstanceNorm {
    /// `[C]`, ones at first; absent when not affine (MLX's default).
    pub weight: Option<Array>,
    /// `[C]`, zeros at first; absent when not affine.
    pub bias: Option<Array>,
    #[module(skip)]
    eps: f32,
    state: ModuleState,
}

impl InstanceNorm {
    /// An instance norm of `dims` channels (MLX's defaults: eps 1e-5, not affine).
    pub fn new(dims: usize, eps: f32, affine: bool) -> Result<InstanceNorm> {
        let (weight, bias) = if affine {
            (Some(fx::ones(&[dims], Dtype::F32)?), Some(fx::zeros(&[dims], Dtype::F32)?))
        } else {
            (None, None)
        };
        Ok(InstanceNorm { weight, bias, eps, state: ModuleState::new() })
    }

    /// The normalized `x` (`[N, ..., C]`, at least one position axis).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        if x.ndim() < 3 {
            return Err(Error::shape("InstanceNorm", format!("input of shape {:?} must be [N, ..., C]", x.shape())));
        }
        let axes: Vec<isize> = (1..x.ndim() as isize - 1).collect();
        let mean = fx::mean(x, Some(&axes), true)?;
        let var = fx::var(x, Some(&axes), true, 0)?;
        let y = fx::multiply(&fx::subtract(x, &mean)?, &fx::rsqrt(&fx::add(&var, self.eps)?)?)?;
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => fx::add(&fx::multiply(&y, w)?, b),
            _ => Ok(y),
        }
    }
}

impl UnaryModule for InstanceNorm {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
