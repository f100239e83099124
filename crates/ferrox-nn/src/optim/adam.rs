//! Adam and its variants: AdamW (decoupled weight decay) and Adamax (infinity norm).

use ferrox::{self as fx, Array, Error, Result};

use super::param_wise::{blend, lr_as, slot, ParamWise, Slots, StepContext, UpdateRule};

fn check_betas(op: &'static str, betas: (f64, f64)) -> Result<()> {
    for (i, b) in [betas.0, betas.1].into_iter().enumerate() {
        if !(0.0..1.0).contains(&b) {
            return Err(Error::invalid(op, format!("beta{} must be in [0, 1), got {b}", i + 1)));
        }
    }
    Ok(())
}

fn moments(param: &Array) -> Result<Slots> {
    Ok([("m".to_string(), fx::zeros_like(param)?), ("v".to_string(), fx::zeros_like(param)?)].into())
}

/// Hyper-parameters of [`Adam`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Decay rates (β₁, β₂) of the first and second moments (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Divide the moments by `1 − βᵗ` (default off, as in MLX).
    pub bias_correction: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { betas: (0.9, 0.999), eps: 1e-8, bias_correction: false }
    }
}

/// Adam: `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`, `p ← p − lr·m / (√v + eps)`; with
/// bias correction `p ← p − lr/(1 − β₁ᵗ)·m / (√v/√(1 − β₂ᵗ) + eps)`. MLX's `optimizers.Adam`.
pub type Adam = ParamWise<AdamConfig>;

impl AdamConfig {
    fn step(&self, grad: &Array, param: &Array, lr: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let (b1, b2) = self.betas;
        let m = blend(b1, slot(state, "m")?, 1.0 - b1, grad)?;
        let v = blend(b2, slot(state, "v")?, 1.0 - b2, &fx::square(grad)?)?;
        state.insert("m".into(), m.clone());
        state.insert("v".into(), v.clone());
        let dtype = grad.dtype();
        if self.bias_correction {
            let c1 = fx::astype(&fx::divide(lr, &fx::subtract(1.0, &fx::power(b1, ctx.step)?)?)?, dtype)?;
            let c2 = fx::astype(&fx::rsqrt(&fx::subtract(1.0, &fx::power(b2, ctx.step)?)?)?, dtype)?;
            let denom = fx::add(&fx::multiply(&fx::sqrt(&v)?, &c2)?, self.eps)?;
            fx::subtract(param, &fx::divide(&fx::multiply(&c1, &m)?, &denom)?)
        } else {
            let denom = fx::add(&fx::sqrt(&v)?, self.eps)?;
            fx::subtract(param, &fx::divide(&fx::multiply(lr, &m)?, &denom)?)
        }
    }

    fn check(&self, op: &'static str) -> Result<()> {
        check_betas(op, self.betas)?;
        if self.eps < 0.0 {
            return Err(Error::invalid(op, format!("eps must be >= 0, got {}", self.eps)));
        }
        Ok(())
    }

    fn hyper(&self) -> Vec<(&'static str, String)> {
        vec![
            ("betas", format!("{:?}", self.betas)),
            ("eps", format!("{:?}", self.eps)),
            ("bias_correction", self.bias_correction.to_string()),
        ]
    }
}

impl UpdateRule for AdamConfig {
    const NAME: &'static str = "Adam";
    const SLOTS: &'static [&'static str] = &["m", "v"];

    fn validate(&self) -> Result<()> {
        self.check("Adam")
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        moments(param)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        self.step(grad, param, &lr, state, ctx)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        self.hyper()
    }
}

/// Hyper-parameters of [`AdamW`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Adam's hyper-parameters.
    pub adam: AdamConfig,
    /// Decoupled weight decay λ (default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { adam: AdamConfig::default(), weight_decay: 0.01 }
    }
}

/// AdamW: `p ← p·(1 − lr·λ)`, then an Adam step. MLX's `optimizers.AdamW`.
pub type AdamW = ParamWise<AdamWConfig>;

impl UpdateRule for AdamWConfig {
    const NAME: &'static str = "AdamW";
    const SLOTS: &'static [&'static str] = &["m", "v"];

    fn validate(&self) -> Result<()> {
        self.adam.check("AdamW")
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        moments(param)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let shrunk = fx::multiply(param, &fx::subtract(1.0, &fx::multiply(&lr, self.weight_decay)?)?)?;
        self.adam.step(grad, &shrunk, &lr, state, ctx)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        let mut h = self.adam.hyper();
        h.push(("weight_decay", format!("{:?}", self.weight_decay)));
        h
    }
}

/// Hyper-parameters of [`Adamax`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamaxConfig {
    /// Decay rates (β₁, β₂) (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
}

impl Default for AdamaxConfig {
    fn default() -> Self {
        AdamaxConfig { betas: (0.9, 0.999), eps: 1e-8 }
    }
}

/// Adamax: `m ← β₁m + (1 − β₁)g`, `v ← max(β₂v, |g|)`, `p ← p − lr·m / (v + eps)`. MLX's
/// `optimizers.Adamax`.
pub type Adamax = ParamWise<AdamaxConfig>;

impl UpdateRule for AdamaxConfig {
    const NAME: &'static str = "Adamax";
    const SLOTS: &'static [&'static str] = &["m", "v"];

    fn validate(&self) -> Result<()> {
        AdamConfig { betas: self.betas, eps: self.eps, bias_correction: false }.check("Adamax")
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        moments(param)
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let (b1, b2) = self.betas;
        let m = blend(b1, slot(state, "m")?, 1.0 - b1, grad)?;
        let v = fx::maximum(&fx::multiply(b2, slot(state, "v")?)?, &fx::abs(grad)?)?;
        let out = fx::subtract(param, &fx::divide(&fx::multiply(&lr, &m)?, &fx::add(&v, self.eps)?)?)?;
        state.insert("m".into(), m);
        state.insert("v".into(), v);
        Ok(out)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![("betas", format!("{:?}", self.betas)), ("eps", format!("{:?}", self.eps))]
    }
}
