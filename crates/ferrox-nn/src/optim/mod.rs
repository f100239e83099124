//! Optimizers, learning-rate schedules and gradient clipping with `mlx.optimizers`
//! semantics.
//!
//! An [`Optimizer`] updates a flat [`Params`] map from a [`Params`] map of gradients with the
//! same keys. A parameter without a gradient is frozen: it is left untouched and gets no
//! optimizer state. Its state — the step counter, the learning rate and each parameter's
//! slots (`m`, `v`, ...) — is itself a flat map of arrays ([`Optimizer::state`]), saved to
//! and loaded from safetensors with the optimizer's name, step and hyper-parameters in the
//! metadata ([`Optimizer::save`], [`Optimizer::load`]) so that training resumes exactly.
//!
//! ```
//! use ferrox::{self as fx, Array};
//! use ferrox_nn::optim::{Adam, AdamConfig, Optimizer};
//! use ferrox_nn::Params;
//! let mut params = Params::new();
//! params.insert("w".into(), Array::from_slice(&[1.0f32, -2.0], &[2]).unwrap());
//! let mut opt = Adam::new(0.1, AdamConfig::default()).unwrap();
//! for _ in 0..3 {
//!     // The gradient of sum(w²).
//!     let grads: Params = [("w".to_string(), fx::multiply(&params["w"], 2.0).unwrap())].into();
//!     opt.update(&mut params, &grads).unwrap();
//!     let state = opt.state();
//!     fx::eval(&params.values().chain(state.values()).collect::<Vec<_>>()).unwrap();
//! }
//! assert!(params["w"].to_vec::<f32>().unwrap()[0] < 1.0);
//! ```

mod adafactor;
mod adam;
mod adaptive;
mod clip;
mod lion;
mod multi;
mod muon;
mod param_wise;
pub mod schedules;
mod sgd;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ferrox::{self as fx, Array, Error, Result};

use crate::Params;

pub use adafactor::{Adafactor, AdafactorConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig, Adamax, AdamaxConfig};
pub use adaptive::{AdaDelta, AdaDeltaConfig, Adagrad, AdagradConfig, RmsProp, RmsPropConfig};
pub use clip::clip_grad_norm;
pub use lion::{Lion, LionConfig};
pub use multi::{Filter, MultiOptimizer};
pub use muon::{Muon, MuonConfig};
pub use param_wise::{ParamWise, Slots, StepContext, UpdateRule};
pub use schedules::Schedule;
pub use sgd::{Sgd, SgdConfig};

/// A learning rate: a constant, or a [`Schedule`] of the step.
#[derive(Clone)]
pub enum LearningRate {
    /// The same rate at every step.
    Constant(f64),
    /// A rate that depends on the step.
    Schedule(Schedule),
}

impl From<f64> for LearningRate {
    fn from(v: f64) -> Self {
        LearningRate::Constant(v)
    }
}

impl From<f32> for LearningRate {
    fn from(v: f32) -> Self {
        LearningRate::Constant(v as f64)
    }
}

impl From<Schedule> for LearningRate {
    fn from(s: Schedule) -> Self {
        LearningRate::Schedule(s)
    }
}

/// The metadata value that marks a safetensors file as optimizer state.
const FORMAT: &str = "ferrox.optimizer.v1";

/// An optimizer: a rule that turns gradients into parameter updates, with state.
///
/// Everything is lazy: [`Optimizer::update`] records the new parameters and state without
/// computing them. Evaluate the state with the parameters after each step (as MLX's
/// `mx.eval(model.parameters(), optimizer.state)`), so that neither grows a graph.
pub trait Optimizer: Send {
    /// The optimizer's name (`"Adam"`), recorded in saved state.
    fn name(&self) -> String;

    /// The updated value of every parameter that has a gradient in `grads` (other
    /// parameters are frozen: no update, no state). Each key of `grads` must be a key of
    /// `params` with the same shape. Advances the step counter by one.
    fn apply_gradients(&mut self, grads: &Params, params: &Params) -> Result<Params>;

    /// Updates `params` in place from `grads`: [`Optimizer::apply_gradients`], written back.
    fn update(&mut self, params: &mut Params, grads: &Params) -> Result<()> {
        let new = self.apply_gradients(grads, params)?;
        params.extend(new);
        Ok(())
    }

    /// Creates the state of every parameter in `params` that has none yet, without updating
    /// anything (updates create it lazily otherwise). Useful before `fx::compile`, so the
    /// state has its final layout from the first call.
    fn init(&mut self, params: &Params) -> Result<()>;

    /// How many updates were applied (a uint64 scalar).
    fn step(&self) -> Array;

    /// The learning rate of the next update (a float32 scalar). With a schedule, the rate
    /// the last update used (or the first one will use) until the next update recomputes it.
    fn learning_rate(&self) -> Array;

    /// Replaces the learning rate (a constant or a schedule) for the updates to come.
    fn set_learning_rate(&mut self, lr: LearningRate) -> Result<()>;

    /// The state as a flat map: `step`, `learning_rate`, and `<param path>.<slot>` for each
    /// parameter's slots (`layers.0.weight.m`).
    fn state(&self) -> Params;

    /// Replaces the state with one that [`Optimizer::state`] returned (of an optimizer of the
    /// same kind). Parameters missing from it get fresh state at their next update.
    fn load_state(&mut self, state: &Params) -> Result<()>;

    /// The hyper-parameters by name (`betas`, `eps`, ...), as text, recorded in saved state.
    fn hyper_parameters(&self) -> BTreeMap<String, String>;

    /// Saves the state to a safetensors file, with the name, step and hyper-parameters in
    /// its metadata. Evaluates the state.
    fn save(&self, path: &Path) -> Result<()> {
        let state = self.state();
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("optimizer".into(), self.name());
        meta.insert("step".into(), self.step().item::<u64>()?.to_string());
        for (k, v) in self.hyper_parameters() {
            meta.insert(format!("hp.{k}"), v);
        }
        fx::save_safetensors(path, &state, Some(&meta))
    }

    /// Loads state that [`Optimizer::save`] wrote. The file must come from an optimizer of
    /// the same name and hyper-parameters (anything else is an error listing the
    /// differences); the learning rate schedule is this optimizer's own.
    fn load(&mut self, path: &Path) -> Result<()> {
        const OP: &str = "Optimizer::load";
        let (arrays, meta) = fx::load_safetensors(path)?;
        let shown = path.display();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(Error::invalid(OP, format!("{shown} is not ferrox optimizer state (no format={FORMAT})")));
        }
        let saved_name = meta.get("optimizer").cloned().unwrap_or_default();
        if saved_name != self.name() {
            return Err(Error::invalid(OP, format!("{shown} holds {saved_name} state, not {} state", self.name())));
        }
        let saved: BTreeMap<String, String> =
            meta.iter().filter_map(|(k, v)| Some((k.strip_prefix("hp.")?.to_string(), v.clone()))).collect();
        let ours = self.hyper_parameters();
        if saved != ours {
            let keys: std::collections::BTreeSet<&String> = saved.keys().chain(ours.keys()).collect();
            let diffs: Vec<String> = keys
                .into_iter()
                .filter(|k| saved.get(*k) != ours.get(*k))
                .map(|k| format!("{k}: saved {:?}, here {:?}", saved.get(k), ours.get(k)))
                .collect();
            return Err(Error::invalid(
                OP,
                format!("{shown} was saved with other hyper-parameters ({})", diffs.join("; ")),
            ));
        }
        self.load_state(&arrays.into_iter().collect())
    }
}
