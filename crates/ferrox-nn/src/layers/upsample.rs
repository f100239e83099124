//! [`Upsample`]: resizing the spatial axes of channels-last inputs by nearest-neighbour or
//! (multi)linear interpolation, MLX's `nn.Upsample` (without its cubic and antialiased modes).

use ferrox::{self as fx, Array, Error, Result};

use crate::module::UnaryModule;
use crate::Module;

/// How [`Upsample`] fills the new positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpsampleMode {
    /// The nearest input position.
    Nearest,
    /// Linear interpolation along each axis (bilinear in 2-D); `align_corners` maps the corner
    /// samples onto each other instead of the corner pixels' edges.
    Linear {
        /// Whether the first and last samples of input and output coincide.
        align_corners: bool,
    },
}

/// Scales the spatial axes of `[N, spatial..., C]` inputs by `scale_factor` (one per axis, or
/// one for all): output size `floor(scale · size)`.
#[derive(Module, Clone, Debug)]
pub struct Upsample {
    #[module(skip)]
    scale_factor: Vec<f64>,
    #[module(skip)]
    mode: UpsampleMode,
}

impl Upsample {
    /// An upsampler by `scale_factor` (one value, or one per spatial axis).
    pub fn new(scale_factor: &[f64], mode: UpsampleMode) -> Result<Upsample> {
        if scale_factor.is_empty() || scale_factor.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(Error::invalid("Upsample", format!("scale factors {scale_factor:?} must be positive")));
        }
        Ok(Upsample { scale_factor: scale_factor.to_vec(), mode })
    }

    /// The resized `x`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let spatial = x.ndim().saturating_sub(2);
        if spatial == 0 {
            return Err(Error::shape("Upsample", format!("input of shape {:?} must be [N, spatial..., C]", x.shape())));
        }
        let scales: Vec<f64> = match self.scale_factor.len() {
            1 => vec![self.scale_factor[0]; spatial],
            n if n == spatial => self.scale_factor.clone(),
            n => {
                return Err(Error::invalid(
                    "Upsample",
                    format!("{n} scale factors for an input with {spatial} spatial axes {:?}", x.shape()),
                ))
            }
        };
        let mut y = x.clone();
        for (d, &scale) in scales.iter().enumerate() {
            y = self.resize_axis(&y, 1 + d, scale)?;
        }
        Ok(y)
    }

    fn resize_axis(&self, x: &Array, axis: usize, scale: f64) -> Result<Array> {
        let n = x.shape()[axis];
        let m = (scale * n as f64) as usize;
        if m == 0 {
            return Err(Error::invalid("Upsample", format!("scale {scale} leaves axis {axis} of size {n} empty")));
        }
        let ax = axis as isize;
        match self.mode {
            UpsampleMode::Nearest => {
                let ratio = (n as f64 / m as f64) as f32;
                let idx: Vec<u32> = (0..m)
                    .map(|i| {
                        let i = i as f32;
                        if m > n {
                            ((i + 0.5) * ratio - 0.5).round_ties_even().max(0.0) as u32
                        } else {
                            (i * ratio) as u32
                        }
                    })
                    .collect();
                fx::take(x, &Array::from_vec(idx), Some(ax))
            }
            UpsampleMode::Linear { align_corners } => {
                let pos: Vec<f32> = if align_corners {
                    let step = ((n - 1) as f64 / (m.max(2) - 1) as f64) as f32;
                    (0..m).map(|i| i as f32 * step).collect()
                } else {
                    let step = 1.0 / scale;
                    let start = (((m - 1) as f64 * step - n as f64 + 1.0) / 2.0) as f32;
                    (0..m).map(|i| i as f32 * step as f32 - start).collect()
                };
                let pos: Vec<f32> = pos.into_iter().map(|p| p.clamp(0.0, (n - 1) as f32)).collect();
                let left: Vec<u32> = pos.iter().map(|p| p.floor() as u32).collect();
                let right: Vec<u32> = pos.iter().map(|p| p.ceil() as u32).collect();
                let w: Vec<f32> = pos.iter().map(|p| p - p.floor()).collect();
                let mut wshape = vec![1usize; x.ndim()];
                wshape[axis] = m;
                let w = fx::astype(&Array::from_slice(&w, &wshape)?, x.dtype())?;
                let a = fx::take(x, &Array::from_vec(left), Some(ax))?;
                let b = fx::take(x, &Array::from_vec(right), Some(ax))?;
                fx::add(&fx::multiply(&a, &fx::subtract(1.0, &w)?)?, &fx::multiply(&b, &w)?)
            }
        }
    }
}

impl UnaryModule for Upsample {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
