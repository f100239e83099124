//! [`SinusoidalPositionalEncoding`]: fixed sine/cosine features of positions.

use ferrox::{self as fx, Array, Error, Result};

use crate::module::UnaryModule;
use crate::Module;

/// Sine and cosine features of (real-valued) positions, MLX's
/// `nn.SinusoidalPositionalEncoding`: `dims / 2` frequencies spaced geometrically from
/// `max_freq` down to `min_freq`, output `[..., dims]` = `[sin(x·σ), cos(x·σ)] · scale`
/// (cosines first with `cos_first`; frequencies times 2π with `full_turns`).
#[derive(Module, Clone, Debug)]
pub struct SinusoidalPositionalEncoding {
    #[module(skip)]
    sigmas: Array,
    #[module(skip)]
    scale: f32,
    #[module(skip)]
    cos_first: bool,
}

impl SinusoidalPositionalEncoding {
    /// An encoding of `dims` features (even); `scale` defaults to `√(2/dims)`. MLX's defaults
    /// are `min_freq = 1e-4`, `max_freq = 1`.
    pub fn new(
        dims: usize,
        min_freq: f32,
        max_freq: f32,
        scale: Option<f32>,
        cos_first: bool,
        full_turns: bool,
    ) -> Result<Self> {
        if dims == 0 || !dims.is_multiple_of(2) {
            return Err(Error::invalid(
                "SinusoidalPositionalEncoding",
                format!("dims={dims} must be positive and even"),
            ));
        }
        let half = dims / 2;
        let (lo, hi) = ((min_freq as f64).ln(), (max_freq as f64).ln());
        let turn = if full_turns { 2.0 * std::f64::consts::PI } else { 1.0 };
        let sigmas: Vec<f32> = (0..half)
            .map(|i| {
                let one_zero = if half == 1 { 1.0 } else { 1.0 - i as f64 / (half - 1) as f64 };
                ((one_zero * (hi - lo) + lo).exp() * turn) as f32
            })
            .collect();
        let scale = scale.unwrap_or((2.0 / dims as f32).sqrt());
        Ok(SinusoidalPositionalEncoding { sigmas: Array::from_vec(sigmas), scale, cos_first })
    }

    /// The features of positions `x` (any shape `S` → `[S..., dims]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = fx::multiply(&fx::expand_dims(x, &[-1])?, &self.sigmas)?;
        let (s, c) = (fx::sin(&y)?, fx::cos(&y)?);
        let y = if self.cos_first { fx::concatenate(&[c, s], -1)? } else { fx::concatenate(&[s, c], -1)? };
        if self.scale == 1.0 {
            Ok(y)
        } else {
            fx::multiply(&y, self.scale)
        }
    }
}

impl UnaryModule for SinusoidalPositionalEncoding {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
