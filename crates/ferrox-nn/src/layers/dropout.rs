//! [`Dropout`]: random zeroing in training mode; [`Dropout2d`] and [`Dropout3d`] drop whole
//! channels.

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

/// Channel dropout of `[N, H, W, C]` (or `[H, W, C]`) inputs, MLX's `nn.Dropout2d`: in training
/// mode each channel of each sample is zeroed with probability `p` (the survivors scaled by
/// `1 / (1 - p)`), as suits convolutional features whose neighbours are correlated.
#[derive(Module, Clone, Debug)]
pub struct Dropout2d {
    #[module(skip)]
    p: f32,
    state: ModuleState,
}

/// Channel dropout of `[N, D, H, W, C]` (or `[D, H, W, C]`) inputs, MLX's `nn.Dropout3d`.
#[derive(Module, Clone, Debug)]
pub struct Dropout3d {
    #[module(skip)]
    p: f32,
    state: ModuleState,
}

/// Zeroes whole channels: the mask has size 1 on the `spatial` axes before the channel axis.
fn channel_dropout(op: &'static str, x: &Array, p: f32, training: bool, spatial: usize) -> Result<Array> {
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let nd = x.ndim();
    if nd != spatial + 1 && nd != spatial + 2 {
        return Err(Error::shape(
            op,
            format!(
                "input of shape {:?} must have {} or {} dimensions (channels last)",
                x.shape(),
                spatial + 1,
                spatial + 2
            ),
        ));
    }
    let mut mask_shape = x.shape().to_vec();
    for d in &mut mask_shape[nd - 1 - spatial..nd - 1] {
        *d = 1;
    }
    let keep = 1.0 - p;
    let mask = fx::random::bernoulli(keep, Some(&mask_shape), None)?;
    fx::multiply(&fx::where_(&mask, x, 0.0)?, 1.0 / keep)
}

macro_rules! channel_dropouts {
    ($($name:ident, $spatial:literal;)*) => {$(
        impl $name {
            /// Channel dropout with drop probability `p` in `[0, 1)`.
            pub fn new(p: f32) -> Result<$name> {
                if !(0.0..1.0).contains(&p) {
                    return Err(Error::invalid(stringify!($name), format!("the drop probability must be in [0, 1), got {p}")));
                }
                Ok($name { p, state: ModuleState::new() })
            }

            /// `x` with channels dropped (training) or unchanged (evaluation).
            pub fn forward(&self, x: &Array) -> Result<Array> {
                channel_dropout(stringify!($name), x, self.p, self.state.training(), $spatial)
            }
        }

        impl UnaryModule for $name {
            fn call(&mut self, x: &Array) -> Result<Array> {
                self.forward(x)
            }
        }
    )*};
}

channel_dropouts! {
    Dropout2d, 2;
    Dropout3d, 3;
}
