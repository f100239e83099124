//! [`Linear`]: `y = x Wᵀ + b`.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// An affine map `y = x Wᵀ + b` with `weight` `[output_dims, input_dims]` and an optional
/// `bias` `[output_dims]`, MLX's `nn.Linear` (and its checkpoint names).
#[derive(Module, Clone, Debug)]
pub struct Linear {
    /// `[output_dims, input_dims]`.
    pub weight: Array,
    /// `[output_dims]`, if the layer has a bias.
    pub bias: Option<Array>,
    state: ModuleState,
}

/// Uniform samples in `[-k, k]`, `k = 1/sqrt(fan_in)`: MLX's default for linear and conv layers.
pub(crate) fn uniform_init(shape: &[usize], fan_in: usize) -> Result<Array> {
    let k = 1.0 / (fan_in.max(1) as f64).sqrt();
    fx::random::uniform(-k, k, shape, Dtype::F32, None)
}

impl Linear {
    /// A layer with weights (and bias) drawn uniformly from `[-1/√input_dims, 1/√input_dims]`.
    pub fn new(input_dims: usize, output_dims: usize, bias: bool) -> Result<Linear> {
        let weight = uniform_init(&[output_dims, input_dims], input_dims)?;
        let bias = if bias { Some(uniform_init(&[output_dims], input_dims)?) } else { None };
        Ok(Linear { weight, bias, state: ModuleState::new() })
    }

    /// A layer with the given weight `[out, in]` and bias `[out]`.
    pub fn from_weights(weight: Array, bias: Option<Array>) -> Result<Linear> {
        if weight.ndim() != 2 {
            return Err(Error::shape("Linear", format!("weight of shape {:?} must be [out, in]", weight.shape())));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::shape(
                    "Linear",
                    format!(
                        "bias of shape {:?} must be [{}] for weight {:?}",
                        b.shape(),
                        weight.shape()[0],
                        weight.shape()
                    ),
                ));
            }
        }
        Ok(Linear { weight, bias, state: ModuleState::new() })
    }

    /// The size of the input's last axis.
    pub fn input_dims(&self) -> usize {
        self.weight.shape()[1]
    }

    /// The size of the output's last axis.
    pub fn output_dims(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `x Wᵀ + b` over the last axis of `x` (`[..., input_dims]` → `[..., output_dims]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let wt = self.weight.t();
        match &self.bias {
            Some(b) => fx::addmm(b, x, &wt, 1.0, 1.0),
            None => fx::matmul(x, &wt),
        }
    }
}

impl Linear {
    /// `residual + x Wᵀ + b`: without a bias, one product with the residual as its addend
    /// ([`fx::addmm`]: a residual connection in one kernel, rounded once).
    pub fn forward_add(&self, x: &Array, residual: &Array) -> Result<Array> {
        match &self.bias {
            Some(_) => fx::add(residual, &self.forward(x)?),
            None => fx::addmm(residual, x, &self.weight.t(), 1.0, 1.0),
        }
    }
}

impl UnaryModule for Linear {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
