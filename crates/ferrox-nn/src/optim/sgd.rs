//! Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay.

use ferrox::{self as fx, Array, Error, Result};

use super::param_wise::{lr_as, slot, ParamWise, Slots, StepContext, UpdateRule};

/// Hyper-parameters of [`Sgd`]; the defaults are MLX's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SgdConfig {
    /// Momentum strength μ (default 0: plain SGD).
    pub momentum: f64,
    /// L2 penalty λ added to the gradient (default 0).
    pub weight_decay: f64,
    /// Dampening τ of the momentum (default 0).
    pub dampening: f64,
    /// Nesterov momentum (default off; needs momentum > 0 and no dampening).
    pub nesterov: bool,
}

/// SGD: `g ← g + λp`, `v ← μv + (1 − τ)g`, `p ← p − lr·(Nesterov ? g + μv : v)`
/// (with no momentum, `p ← p − lr·g`). MLX's `optimizers.SGD`.
pub type Sgd = ParamWise<SgdConfig>;

impl UpdateRule for SgdConfig {
    const NAME: &'static str = "SGD";
    const SLOTS: &'static [&'static str] = &["v"];

    fn validate(&self) -> Result<()> {
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid("SGD", "Nesterov momentum needs momentum > 0 and zero dampening"));
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        Ok([("v".to_string(), fx::zeros_like(param)?)].into())
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let g = if self.weight_decay != 0.0 {
            fx::add(grad, &fx::multiply(self.weight_decay, param)?)?
        } else {
            grad.clone()
        };
        if self.momentum <= 0.0 {
            return fx::subtract(param, &fx::multiply(&lr, &g)?);
        }
        let decayed = fx::multiply(self.momentum, slot(state, "v")?)?;
        let incoming = if self.dampening > 0.0 { fx::multiply(1.0 - self.dampening, &g)? } else { g.clone() };
        let v = fx::add(&decayed, &incoming)?;
        let step = if self.nesterov { fx::add(&g, &fx::multiply(self.momentum, &v)?)? } else { v.clone() };
        state.insert("v".into(), v);
        fx::subtract(param, &fx::multiply(&lr, &step)?)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![
            ("momentum", format!("{:?}", self.momentum)),
            ("weight_decay", format!("{:?}", self.weight_decay)),
            ("dampening", format!("{:?}", self.dampening)),
            ("nesterov", self.nesterov.to_string()),
        ]
    }
}
