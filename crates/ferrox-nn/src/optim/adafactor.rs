//! Adafactor: Adam-like steps with a factored (row × column) second moment, so a matrix's
//! state is O(rows + columns) instead of O(rows × columns).

use ferrox::{self as fx, Array, Error, Result};

use super::param_wise::{blend, slot, ParamWise, Slots, StepContext, UpdateRule};

/// Hyper-parameters of [`Adafactor`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct AdafactorConfig {
    /// (ε₁, ε₂): added to the squared gradient, and the floor of the parameter scale
    /// (default (1e-30, 1e-3)).
    pub eps: (f64, f64),
    /// Updates are scaled down to at most this root mean square (default 1).
    pub clip_threshold: f64,
    /// The second-moment decay is `1 − tᵈ` for this `d` (default -0.8).
    pub decay_rate: f64,
    /// First-moment decay; `None` (the default) keeps no first moment.
    pub beta_1: Option<f64>,
    /// Decoupled weight decay (default 0).
    pub weight_decay: f64,
    /// Scale the step by the parameter's root mean square (default true).
    pub scale_parameter: bool,
    /// Use the relative step `min(1e-2, 1/√t)` instead of the learning rate (default true:
    /// the optimizer's learning rate is then unused).
    pub relative_step: bool,
    /// With `relative_step`, warm up as `min(1e-6·t, 1/√t)` (default false).
    pub warmup_init: bool,
}

impl Default for AdafactorConfig {
    fn default() -> Self {
        AdafactorConfig {
            eps: (1e-30, 1e-3),
            clip_threshold: 1.0,
            decay_rate: -0.8,
            beta_1: None,
            weight_decay: 0.0,
            scale_parameter: true,
            relative_step: true,
            warmup_init: false,
        }
    }
}

/// Adafactor (Shazeer & Stern, 2018), as MLX's `optimizers.Adafactor`: parameters of two or
/// more axes keep row and column averages of the squared gradient over the last two axes.
pub type Adafactor = ParamWise<AdafactorConfig>;

fn rms(a: &Array) -> Result<Array> {
    fx::sqrt(&fx::mean(&fx::square(a)?, None, false)?)
}

impl AdafactorConfig {
    /// The step size: the relative step or the learning rate, times the parameter scale.
    fn step_size(&self, ctx: &StepContext, param_rms: &Array) -> Result<Array> {
        let base = if self.relative_step {
            let cap = fx::rsqrt(ctx.step)?;
            if self.warmup_init {
                fx::minimum(&fx::multiply(1e-6, ctx.step)?, &cap)?
            } else {
                fx::minimum(1e-2, &cap)?
            }
        } else {
            ctx.learning_rate.clone()
        };
        let base = fx::astype(&base, param_rms.dtype())?;
        if self.scale_parameter {
            fx::multiply(&fx::maximum(self.eps.1, param_rms)?, &base)
        } else {
            Ok(base)
        }
    }
}

impl UpdateRule for AdafactorConfig {
    const NAME: &'static str = "Adafactor";
    const SLOTS: &'static [&'static str] = &["exp_avg", "exp_avg_sq", "exp_avg_sq_col", "exp_avg_sq_row"];

    fn validate(&self) -> Result<()> {
        if self.clip_threshold <= 0.0 {
            return Err(Error::invalid(
                "Adafactor",
                format!("clip_threshold must be > 0, got {}", self.clip_threshold),
            ));
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        let mut s = Slots::new();
        let shape = param.shape();
        if shape.len() >= 2 {
            let n = shape.len();
            let mut col = shape[..n - 2].to_vec();
            col.push(shape[n - 1]);
            s.insert("exp_avg_sq_row".into(), fx::zeros(&shape[..n - 1], param.dtype())?);
            s.insert("exp_avg_sq_col".into(), fx::zeros(&col, param.dtype())?);
        } else {
            s.insert("exp_avg_sq".into(), fx::zeros_like(param)?);
        }
        if self.beta_1.is_some() {
            s.insert("exp_avg".into(), fx::zeros_like(param)?);
        }
        Ok(s)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let param_rms = rms(param)?;
        let step_size = self.step_size(ctx, &param_rms)?;
        let beta_2 = fx::subtract(1.0, &fx::astype(&fx::power(ctx.step, self.decay_rate)?, param_rms.dtype())?)?;
        let keep = fx::subtract(1.0, &beta_2)?;
        let sq = fx::add(&fx::square(grad)?, self.eps.0)?;
        let mut update = if grad.ndim() >= 2 {
            let row = fx::add(
                &fx::multiply(&beta_2, slot(state, "exp_avg_sq_row")?)?,
                &fx::multiply(&keep, &fx::mean(&sq, Some(&[-1]), false)?)?,
            )?;
            let col = fx::add(
                &fx::multiply(&beta_2, slot(state, "exp_avg_sq_col")?)?,
                &fx::multiply(&keep, &fx::mean(&sq, Some(&[-2]), false)?)?,
            )?;
            let r = fx::rsqrt(&fx::divide(&row, &fx::mean(&row, Some(&[-1]), true)?)?)?;
            let c = fx::rsqrt(&col)?;
            let approx = fx::multiply(&fx::expand_dims(&r, &[-1])?, &fx::expand_dims(&c, &[-2])?)?;
            state.insert("exp_avg_sq_row".into(), row);
            state.insert("exp_avg_sq_col".into(), col);
            fx::multiply(&approx, grad)?
        } else {
            let v = fx::add(&fx::multiply(&beta_2, slot(state, "exp_avg_sq")?)?, &fx::multiply(&keep, &sq)?)?;
            let u = fx::multiply(&fx::rsqrt(&v)?, grad)?;
            state.insert("exp_avg_sq".into(), v);
            u
        };
        update = fx::divide(&update, &fx::maximum(1.0, &fx::divide(&rms(&update)?, self.clip_threshold)?)?)?;
        update = fx::multiply(&step_size, &update)?;
        if let Some(b1) = self.beta_1 {
            let avg = blend(b1, slot(state, "exp_avg")?, 1.0 - b1, &update)?;
            state.insert("exp_avg".into(), avg.clone());
            update = avg;
        }
        let p = if self.weight_decay != 0.0 {
            fx::add(param, &fx::multiply(param, &fx::multiply(-self.weight_decay, &step_size)?)?)?
        } else {
            param.clone()
        };
        fx::subtract(&p, &update)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![
            ("eps", format!("{:?}", self.eps)),
            ("clip_threshold", format!("{:?}", self.clip_threshold)),
            ("decay_rate", format!("{:?}", self.decay_rate)),
            ("beta_1", format!("{:?}", self.beta_1)),
            ("weight_decay", format!("{:?}", self.weight_decay)),
            ("scale_parameter", self.scale_parameter.to_string()),
            ("relative_step", self.relative_step.to_string()),
            ("warmup_init", self.warmup_init.to_string()),
        ]
    }
}
