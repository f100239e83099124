//! Muon: momentum SGD whose matrix updates are orthogonalized by a Newton–Schulz iteration.

use ferrox::{self as fx, Array, Error, Result};

use super::param_wise::{blend, lr_as, slot, ParamWise, Slots, StepContext, UpdateRule};

/// Hyper-parameters of [`Muon`]; the defaults are MLX's.
#[derive(Clone, Debug, PartialEq)]
pub struct MuonConfig {
    /// Momentum μ (default 0.95).
    pub momentum: f64,
    /// L2 penalty λ added to the gradient (default 0.01).
    pub weight_decay: f64,
    /// Nesterov momentum (default true).
    pub nesterov: bool,
    /// Newton–Schulz iterations (default 5).
    pub ns_steps: usize,
}

impl Default for MuonConfig {
    fn default() -> Self {
        MuonConfig { momentum: 0.95, weight_decay: 0.01, nesterov: true, ns_steps: 5 }
    }
}

/// Muon, as MLX's `optimizers.Muon`: `g ← g + λp`, `v ← μv + (1 − μ)g`, the update
/// `(1 − μ)g + μv` (Nesterov) or `v`; a parameter of two or more axes (flattened to
/// `[rows, rest]`) has its update replaced by the nearest semi-orthogonal matrix (a quintic
/// Newton–Schulz iteration) and its step scaled by `√max(1, rows / cols)` of its last two
/// axes; vectors take the plain momentum step.
pub type Muon = ParamWise<MuonConfig>;

/// The quintic Newton–Schulz iteration's coefficients (Keller Jordan's tuned values, MLX's).
const NS: (f64, f64, f64) = (3.4445, -4.7750, 2.0315);

/// Approximately orthogonalizes the 2-D `x`: `steps` iterations of `X ← aX + (bA + cA²)X`
/// with `A = XXᵀ`, from `x` scaled to unit Frobenius norm, on the wide orientation.
fn orthogonalize(x: &Array, steps: usize) -> Result<Array> {
    let tall = x.shape()[0] > x.shape()[1];
    let mut x = if tall { x.t() } else { x.clone() };
    let norm = fx::norm(&x, fx::NormOrd::Default, None, true)?;
    x = fx::divide(&x, &fx::add(&norm, 1e-7)?)?;
    let (a, b, c) = NS;
    for _ in 0..steps {
        let gram = fx::matmul(&x, &x.t())?;
        let poly = fx::addmm(&fx::multiply(&gram, b)?, &gram, &gram, c, 1.0)?;
        x = fx::addmm(&fx::multiply(&x, a)?, &poly, &x, 1.0, 1.0)?;
    }
    Ok(if tall { x.t() } else { x })
}

impl UpdateRule for MuonConfig {
    const NAME: &'static str = "Muon";
    const SLOTS: &'static [&'static str] = &["v"];

    fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(Error::invalid("Muon", format!("momentum must be in [0, 1), got {}", self.momentum)));
        }
        Ok(())
    }

    fn init(&self, param: &Array) -> Result<Slots> {
        Ok([("v".to_string(), fx::zeros_like(param)?)].into())
    }

    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array> {
        let g = if self.weight_decay != 0.0 {
            fx::add(grad, &fx::multiply(self.weight_decay, param)?)?
        } else {
            grad.clone()
        };
        let mu = self.momentum;
        let v = blend(mu, slot(state, "v")?, 1.0 - mu, &g)?;
        let mut update = if self.nesterov { blend(1.0 - mu, &g, mu, &v)? } else { v.clone() };
        state.insert("v".into(), v);
        let mut lr = lr_as(ctx, grad.dtype())?;
        let shape = update.shape().to_vec();
        if shape.len() >= 2 {
            let flat = fx::reshape_usize(&update, &[shape[0], update.size() / shape[0].max(1)])?;
            update = fx::reshape_usize(&orthogonalize(&flat, self.ns_steps)?, &shape)?;
            let (rows, cols) = (shape[shape.len() - 2] as f64, shape[shape.len() - 1] as f64);
            lr = fx::multiply(&lr, (rows / cols).max(1.0).sqrt())?;
        }
        fx::subtract(param, &fx::multiply(&lr, &update)?)
    }

    fn hyper_parameters(&self) -> Vec<(&'static str, String)> {
        vec![
            ("momentum", format!("{:?}", self.momentum)),
            ("weight_decay", format!("{:?}", self.weight_decay)),
            ("nesterov", self.nesterov.to_string()),
            ("ns_steps", self.ns_steps.to_string()),
        ]
    }
}
