//! [`BatchNorm`]: normalization over the batch (and positions) per channel, with running
//! statistics for evaluation.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// Batch normalization of channels-last inputs `[N, C]`, `[N, L, C]` or `[N, H, W, C]`,
/// MLX's `nn.BatchNorm`. In training mode it normalizes with the batch's mean and (biased)
/// variance over all axes but the last and, when tracking, moves the running statistics by
/// `momentum` towards the batch mean and unbiased variance; in evaluation mode it uses the
/// running statistics. `running_mean` / `running_var` are buffers: saved with the weights,
/// never trained.
#[derive(Module, Clone, Debug)]
pub struct BatchNorm {
    /// `[C]`, ones at first; absent when not affine.
    pub weight: Option<Array>,
    /// `[C]`, zeros at first; absent when not affine.
    pub bias: Option<Array>,
    /// `[C]`, zeros at first; absent when not tracking running statistics.
    pub running_mean: Option<Array>,
    /// `[C]`, ones at first; absent when not tracking running statistics.
    pub running_var: Option<Array>,
    #[module(skip)]
    eps: f32,
    #[module(skip)]
    momentum: f32,
    state: ModuleState,
}

impl BatchNorm {
    /// A batch norm of `num_features` channels (MLX's defaults: eps 1e-5, momentum 0.1).
    pub fn new(num_features: usize, eps: f32, momentum: f32, affine: bool, track_running_stats: bool) -> Result<Self> {
        if eps <= 0.0 {
            return Err(Error::invalid("BatchNorm", format!("eps must be positive, got {eps}")));
        }
        let c = [num_features];
        let (weight, bias) =
            if affine { (Some(fx::ones(&c, Dtype::F32)?), Some(fx::zeros(&c, Dtype::F32)?)) } else { (None, None) };
        let (running_mean, running_var) = if track_running_stats {
            (Some(fx::zeros(&c, Dtype::F32)?), Some(fx::ones(&c, Dtype::F32)?))
        } else {
            (None, None)
        };
        let state = ModuleState::with_buffers(&["running_mean", "running_var"]);
        Ok(BatchNorm { weight, bias, running_mean, running_var, eps, momentum, state })
    }

    /// The normalized `x`; in training mode also updates the running statistics.
    pub fn forward(&mut self, x: &Array) -> Result<Array> {
        if !(2..=4).contains(&x.ndim()) {
            return Err(Error::shape(
                "BatchNorm",
                format!("input of shape {:?} must have 2 to 4 dimensions", x.shape()),
            ));
        }
        let axes: Vec<isize> = (0..x.ndim() as isize - 1).collect();
        let count: usize = x.shape()[..x.ndim() - 1].iter().product();
        let training = self.state.training();
        if training && count < 2 {
            return Err(Error::invalid("BatchNorm", "training needs more than one value per channel"));
        }
        let (mean, var) = match (&self.running_mean, &self.running_var) {
            (Some(rm), Some(rv)) if !training => (rm.clone(), rv.clone()),
            _ => (fx::mean(x, Some(&axes), false)?, fx::var(x, Some(&axes), false, 0)?),
        };
        if training {
            if let (Some(rm), Some(rv)) = (&self.running_mean, &self.running_var) {
                let m = self.momentum;
                let unbiased = fx::var(x, Some(&axes), false, 1)?;
                let new_mean = fx::add(&fx::multiply(rm, 1.0 - m)?, &fx::multiply(&fx::stop_gradient(&mean)?, m)?)?;
                let new_var = fx::add(&fx::multiply(rv, 1.0 - m)?, &fx::multiply(&fx::stop_gradient(&unbiased)?, m)?)?;
                self.running_mean = Some(new_mean);
                self.running_var = Some(new_var);
            }
        }
        let y = fx::multiply(&fx::subtract(x, &mean)?, &fx::rsqrt(&fx::add(&var, self.eps)?)?)?;
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => fx::add(&fx::multiply(&y, w)?, b),
            _ => Ok(y),
        }
    }
}

impl UnaryModule for BatchNorm {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
