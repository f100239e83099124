//! [`Embedding`]: a lookup table of vectors, usable backwards as a tied output head.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// A table `weight` `[num_embeddings, dims]`; `forward` maps integer ids to rows, and
/// [`Embedding::as_linear`] multiplies by the table's transpose (tied input/output
/// embeddings). MLX's `nn.Embedding`.
#[derive(Module, Clone, Debug)]
pub struct Embedding {
    /// `[num_embeddings, dims]`.
    pub weight: Array,
    state: ModuleState,
}

impl Embedding {
    /// A table drawn from `N(0, 1/dims)`.
    pub fn new(num_embeddings: usize, dims: usize) -> Result<Embedding> {
        let scale = (1.0 / dims.max(1) as f64).sqrt();
        let weight = fx::random::normal(&[num_embeddings, dims], Dtype::F32, 0.0, scale, None)?;
        Ok(Embedding { weight, state: ModuleState::new() })
    }

    /// A layer over the given table `[num_embeddings, dims]`.
    pub fn from_weight(weight: Array) -> Result<Embedding> {
        if weight.ndim() != 2 {
            return Err(Error::shape("Embedding", format!("weight of shape {:?} must be [num, dims]", weight.shape())));
        }
        Ok(Embedding { weight, state: ModuleState::new() })
    }

    /// The rows of the table at integer `ids` (any shape `S` → `[S..., dims]`).
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        if !ids.dtype().is_integer() {
            return Err(Error::dtype("Embedding", "ids must be integers", ids.dtype()));
        }
        fx::take(&self.weight, ids, Some(0))
    }

    /// `x @ weightᵀ`: scores against every row (`[..., dims]` → `[..., num_embeddings]`).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        fx::matmul(x, &self.weight.t())
    }
}

impl UnaryModule for Embedding {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
