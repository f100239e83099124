//! [`MultiOptimizer`]: different optimizers for different parameters, routed by path.

use std::collections::BTreeMap;

use ferrox::{Array, Error, Result};

use super::{LearningRate, Optimizer};
use crate::Params;

/// Chooses parameters by their dotted path and gradient.
pub type Filter = Box<dyn Fn(&str, &Array) -> bool + Send + Sync>;

/// Routes each gradient to the first optimizer whose filter accepts it, the last optimizer
/// taking everything else (MLX's `optimizers.MultiOptimizer`).
///
/// ```
/// use ferrox_nn::optim::{Adam, AdamConfig, MultiOptimizer, Optimizer, Sgd, SgdConfig};
/// // Biases with plain SGD, everything else with Adam.
/// let sgd = Sgd::new(0.1, SgdConfig::default()).unwrap();
/// let adam = Adam::new(1e-3, AdamConfig::default()).unwrap();
/// let biases = |path: &str, _: &ferrox::Array| path.ends_with(".bias");
/// let opt = MultiOptimizer::new(vec![Box::new(sgd), Box::new(adam)], vec![Box::new(biases)]).unwrap();
/// assert_eq!(opt.name(), "MultiOptimizer[SGD,Adam]");
/// ```
pub struct MultiOptimizer {
    optimizers: Vec<Box<dyn Optimizer>>,
    filters: Vec<Filter>,
}

const PREFIX: &str = "states.";

impl MultiOptimizer {
    /// `optimizers[i]` takes the parameters that `filters[i]` accepts (and no earlier filter
    /// did); the last optimizer, which has no filter, takes the rest. So `filters` has one
    /// entry fewer than `optimizers`.
    pub fn new(optimizers: Vec<Box<dyn Optimizer>>, filters: Vec<Filter>) -> Result<Self> {
        if optimizers.is_empty() || filters.len() + 1 != optimizers.len() {
            return Err(Error::invalid(
                "MultiOptimizer",
                format!(
                    "{} optimizers need {} filters, got {}",
                    optimizers.len(),
                    optimizers.len().max(1) - 1,
                    filters.len()
                ),
            ));
        }
        Ok(MultiOptimizer { optimizers, filters })
    }

    /// `arrays` split by the optimizer that takes each path.
    fn split(&self, arrays: &Params) -> Vec<Params> {
        let mut parts = vec![Params::new(); self.optimizers.len()];
        for (k, a) in arrays {
            let i = self.filters.iter().position(|f| f(k, a)).unwrap_or(self.filters.len());
            parts[i].insert(k.clone(), a.clone());
        }
        parts
    }
}

impl Optimizer for MultiOptimizer {
    fn name(&self) -> String {
        let names: Vec<String> = self.optimizers.iter().map(|o| o.name()).collect();
        format!("MultiOptimizer[{}]", names.join(","))
    }

    fn apply_gradients(&mut self, grads: &Params, params: &Params) -> Result<Params> {
        let parts = self.split(grads);
        let mut out = Params::new();
        for (opt, part) in self.optimizers.iter_mut().zip(&parts) {
            out.extend(opt.apply_gradients(part, params)?);
        }
        Ok(out)
    }

    fn init(&mut self, params: &Params) -> Result<()> {
        let parts = self.split(params);
        self.optimizers.iter_mut().zip(&parts).try_for_each(|(o, p)| o.init(p))
    }

    /// The first optimizer's step count (every optimizer steps on every update).
    fn step(&self) -> Array {
        self.optimizers[0].step()
    }

    /// The first optimizer's learning rate.
    fn learning_rate(&self) -> Array {
        self.optimizers[0].learning_rate()
    }

    /// Sets the learning rate of every optimizer.
    fn set_learning_rate(&mut self, lr: LearningRate) -> Result<()> {
        self.optimizers.iter_mut().try_for_each(|o| o.set_learning_rate(lr.clone()))
    }

    /// Each optimizer's state under `states.<i>.`.
    fn state(&self) -> Params {
        let mut out = Params::new();
        for (i, o) in self.optimizers.iter().enumerate() {
            out.extend(o.state().into_iter().map(|(k, v)| (format!("{PREFIX}{i}.{k}"), v)));
        }
        out
    }

    fn load_state(&mut self, state: &Params) -> Result<()> {
        let mut parts = vec![Params::new(); self.optimizers.len()];
        for (k, v) in state {
            let parsed = k
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split_once('.'))
                .and_then(|(i, key)| Some((i.parse::<usize>().ok()?, key)))
                .filter(|(i, _)| *i < parts.len());
            let Some((i, key)) = parsed else {
                return Err(Error::invalid(
                    "load_state",
                    format!("{k:?} is not state of a MultiOptimizer of {} optimizers", parts.len()),
                ));
            };
            parts[i].insert(key.to_string(), v.clone());
        }
        for (o, p) in self.optimizers.iter_mut().zip(&parts) {
            o.load_state(p)?;
        }
        Ok(())
    }

    /// Each optimizer's name and hyper-parameters under `<i>.`.
    fn hyper_parameters(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (i, o) in self.optimizers.iter().enumerate() {
            out.insert(format!("{i}.optimizer"), o.name());
            out.extend(o.hyper_parameters().into_iter().map(|(k, v)| (format!("{i}.{k}"), v)));
        }
        out
    }
}
