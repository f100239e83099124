//! [`Dropout`]: random zeroing in training mode.

use ferrox::{self as fx, Array, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// In training mode zeroes each element with probability `p` and scales the rest by
/// `1 / (1 - p)`; the identity in evaluation mode. MLX's `nn.Dropout`.
#[derive(Module, Clone, Debug)]
pub struct Dropout {
    #[module(skip)]
    p: f32,
    state: ModuleState,
}

impl Dropout {
    /// Dropout with drop probability `p` in `[0, 1)`.
    pub fn new(p: f32) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("Dropout", format!("the drop probability must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p, state: ModuleState::new() })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// `x` with elements dropped (training) or unchanged (evaluation, or `p == 0`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        if !self.state.training() || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let mask = fx::random::bernoulli(keep, Some(x.shape()), None)?;
        fx::multiply(&fx::where_(&mask, x, 0.0)?, 1.0 / keep)
    }
}

impl UnaryModule for Dropout {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
