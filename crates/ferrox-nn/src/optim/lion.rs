//! Lion: the sign of an interpolated momentum.

use ferrox::{self as fx, Array, Error, Result};

use super::param_wise::{blend, lr_as, slot, ParamWise, Slots, StepContext, UpdateRule};

/// Hyper-parameters of [`Lion`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct LionConfig {
    /// (β₁, β₂): the interpolation for the update and the momentum decay (default (0.9, 0.99)).
    pub betas: (f64, f64),
    /// Decoupled weight decay λ (default 0).
    pub weight_decay: f64,
}

impl Default for LionConfig {
    fn default() -> Self {
        LionConfig { betas: (0.9, 0.99), weight_decay: 0.0 }
    }
}

/// Lion: `c = β₁m + (1 − β₁)g`, `m ← β₂m + (1 − β₂)g`, `p ← p·(1 − lr·λ) − lr·sign(c)`.
/// MLX's `optimizers.Lion`.
pub type Lion = ParamWise<LionConfig>;

impl UpdateRule for LionConfig {
    const NAME: &'static str = "Lion";
    const SLOTS: &'static [&'static str] = &["m"];

    fn validate(&self) -> Result<()> {
        for (i, b) in [self.betas.0, self.betas.1].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid("Lion", format!("beta{} must be in [0, 1), got {b}", i + 1)));
            }
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        Ok([("m".to_string(), fx::zeros_like(param)?)].into())
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let lr = lr_as(ctx, grad.dtype())?;
        let (b1, b2) = self.betas;
        let m = slot(state, "m")?;
        let c = blend(b1, m, 1.0 - b1, grad)?;
        let m_new = blend(b2, m, 1.0 - b2, grad)?;
        state.insert("m".into(), m_new);
        let p = if self.weight_decay > 0.0 {
            fx::multiply(&fx::subtract(1.0, &fx::multiply(&lr, self.weight_decay)?)?, param)?
        } else {
            param.clone()
        };
        fx::subtract(&p, &fx::multiply(&lr, &fx::sign(&c)?)?)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![("betas", format!("{:?}", self.betas)), ("weight_decay", format!("{:?}", self.weight_decay))]
    }
}
