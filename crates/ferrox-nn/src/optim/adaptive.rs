//! The per-coordinate adaptive rules before Adam: RMSprop, Adagrad and AdaDelta.

use ferrox::{self as fx, Array, Error, Result};

use super::param_wise::{blend, lr_as, slot, ParamWise, Slots, StepContext, UpdateRule};

fn zeros_for(param: &Array, names: &[&str]) -> Result<Slots> {
    names.iter().map(|n| Ok((n.to_string(), fx::zeros_like(param)?))).collect()
}

/// `p − lr · g / (√v + eps)`.
fn scaled_step(param: &Array, lr: &Array, grad: &Array, v: &Array, eps: f64) -> Result<Array> {
    let denom = fx::add(&fx::sqrt(v)?, eps)?;
    fx::subtract(param, &fx::divide(&fx::multiply(lr, grad)?, &denom)?)
}

/// Hyper-parameters of [`RmsProp`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Smoothing constant α of the squared-gradient average (default 0.99).
    pub alpha: f64,
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig { alpha: 0.99, eps: 1e-8 }
    }
}

/// RMSprop: `v ← αv + (1 − α)g²`, `p ← p − lr·g / (√v + eps)`. MLX's `optimizers.RMSprop`.
pub type RmsProp = ParamWise<RmsPropConfig>;

impl UpdateRule for RmsPropConfig {
    const NAME: &'static str = "RMSprop";
    const SLOTS: &'static [&'static str] = &["v"];

    fn validate(&self) -> Result<()> {
        if self.alpha < 0.0 {
            return Err(Error::invalid("RMSprop", format!("alpha must be >= 0, got {}", self.alpha)));
        }
        if self.eps <= 0.0 {
            return Err(Error::invalid("RMSprop", format!("eps must be > 0, got {}", self.eps)));
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        zeros_for(param, Self::SLOTS)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let v = blend(self.alpha, slot(state, "v")?, 1.0 - self.alpha, &fx::square(grad)?)?;
        let out = scaled_step(param, &lr, grad, &v, self.eps)?;
        state.insert("v".into(), v);
        Ok(out)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![("alpha", format!("{:?}", self.alpha)), ("eps", format!("{:?}", self.eps))]
    }
}

/// Hyper-parameters of [`Adagrad`]; the default is MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        AdagradConfig { eps: 1e-8 }
    }
}

/// Adagrad: `v ← v + g²`, `p ← p − lr·g / (√v + eps)`. MLX's `optimizers.Adagrad`.
pub type Adagrad = ParamWise<AdagradConfig>;

impl UpdateRule for AdagradConfig {
    const NAME: &'static str = "Adagrad";
    const SLOTS: &'static [&'static str] = &["v"];

    fn validate(&self) -> Result<()> {
        if self.eps <= 0.0 {
            return Err(Error::invalid("Adagrad", format!("eps must be > 0, got {}", self.eps)));
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        zeros_for(param, Self::SLOTS)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let v = fx::add(slot(state, "v")?, &fx::square(grad)?)?;
        let out = scaled_step(param, &lr, grad, &v, self.eps)?;
        state.insert("v".into(), v);
        Ok(out)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![("eps", format!("{:?}", self.eps))]
    }
}

/// Hyper-parameters of [`AdaDelta`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaDeltaConfig {
    /// Decay ρ of both running averages (default 0.9).
    pub rho: f64,
    /// Added inside both square roots (default 1e-6).
    pub eps: f64,
}

impl Default for AdaDeltaConfig {
    fn default() -> Self {
        AdaDeltaConfig { rho: 0.9, eps: 1e-6 }
    }
}

/// AdaDelta: `v ← ρv + (1 − ρ)g²`, `Δ = √(u + eps) / √(v + eps) · g`,
/// `u ← ρu + (1 − ρ)Δ²`, `p ← p − lr·Δ`. MLX's `optimizers.AdaDelta`.
pub type AdaDelta = ParamWise<AdaDeltaConfig>;

impl UpdateRule for AdaDeltaConfig {
    const NAME: &'static str = "AdaDelta";
    const SLOTS: &'static [&'static str] = &["u", "v"];

    fn validate(&self) -> Result<()> {
        if self.rho < 0.0 {
            return Err(Error::invalid("AdaDelta", format!("rho must be >= 0, got {}", self.rho)));
        }
        if self.eps <= 0.0 {
            return Err(Error::invalid("AdaDelta", format!("eps must be > 0, got {}", self.eps)));
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        zeros_for(param, Self::SLOTS)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let v = blend(self.rho, slot(state, "v")?, 1.0 - self.rho, &fx::square(grad)?)?;
        let u_old = slot(state, "u")?;
        let ratio = fx::divide(&fx::sqrt(&fx::add(u_old, self.eps)?)?, &fx::sqrt(&fx::add(&v, self.eps)?)?)?;
        let delta = fx::multiply(&ratio, grad)?;
        let u = blend(self.rho, u_old, 1.0 - self.rho, &fx::square(&delta)?)?;
        state.insert("v".into(), v);
        state.insert("u".into(), u);
        fx::subtract(param, &fx::multiply(&lr, &delta)?)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![("rho", format!("{:?}", self.rho)), ("eps", format!("{:?}", self.eps))]
    }
}
