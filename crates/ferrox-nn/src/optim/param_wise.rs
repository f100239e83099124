//! [`ParamWise`]: the optimizer machinery shared by every rule that updates each parameter
//! on its own (all of MLX's optimizers): the step counter, the learning rate or schedule,
//! per-parameter state, frozen keys and the state map.

use std::collections::{BTreeMap, BTreeSet};

use ferrox::{self as fx, Array, Dtype, Error, Result};

use super::{LearningRate, Optimizer, Schedule};
use crate::Params;

/// One parameter's optimizer state, by slot name (`m`, `v`, ...).
pub type Slots = BTreeMap<String, Array>;

/// What a rule sees of the optimizer at an update.
pub struct StepContext<'a> {
    /// The learning rate (float32 scalar).
    pub learning_rate: &'a Array,
    /// The step counter, already advanced for this update: 1 at the first (uint64 scalar).
    pub step: &'a Array,
}

/// The per-parameter rule of an optimizer: its state slots and its update. Implement it
/// (with a config struct holding the hyper-parameters) to make a new optimizer,
/// [`ParamWise<YourRule>`].
pub trait UpdateRule: Send {
    /// The optimizer's name (`"Adam"`).
    const NAME: &'static str;
    /// Every slot name the rule may create.
    const SLOTS: &'static [&'static str];

    /// Checks the hyper-parameters; an error names the bad one.
    fn validate(&self) -> Result<()>;

    /// Fresh state for `param`.
    fn init(&self, param: &Array) -> Result<Slots>;

    /// The updated parameter, replacing the slots in `state` with their new values.
    fn apply(&self, grad: &Array, param: &Array, state: &mut Slots, ctx: &StepContext) -> Result<Array>;

    /// The hyper-parameters by name, as text (floats in Rust's round-trip `{:?}` form).
    fn hyper_parameters(&self) -> Vec<(&'static str, String)>;
}

/// The slot `name` of `state` (an error if a loaded state lacks it).
pub(crate) fn slot<'a>(state: &'a Slots, name: &str) -> Result<&'a Array> {
    state.get(name).ok_or_else(|| Error::invalid("optimizer", format!("the state has no slot {name:?}")))
}

/// The learning rate in `dtype` (the gradient's).
pub(crate) fn lr_as(ctx: &StepContext, dtype: Dtype) -> Result<Array> {
    fx::astype(ctx.learning_rate, dtype)
}

/// `a * x + b * y` with scalar coefficients: the moving-average update of every rule.
pub(crate) fn blend(a: f64, x: &Array, b: f64, y: &Array) -> Result<Array> {
    fx::add(&fx::multiply(a, x)?, &fx::multiply(b, y)?)
}

/// An optimizer that applies an [`UpdateRule`] to each parameter that has a gradient.
pub struct ParamWise<R> {
    rule: R,
    schedule: Option<Schedule>,
    learning_rate: Array,
    step: Array,
    state: BTreeMap<String, Slots>,
    /// Parameters whose state was loaded and not yet checked against the parameter.
    unchecked: BTreeSet<String>,
}

impl<R: UpdateRule> ParamWise<R> {
    /// An optimizer with learning rate `lr` (a number or a schedule) and the
    /// hyper-parameters in `rule` (its `Default` is MLX's defaults).
    pub fn new(lr: impl Into<LearningRate>, rule: R) -> Result<Self> {
        rule.validate()?;
        let mut opt = ParamWise {
            rule,
            schedule: None,
            learning_rate: Array::scalar(0.0f32),
            step: Array::scalar(0u64),
            state: BTreeMap::new(),
            unchecked: BTreeSet::new(),
        };
        opt.set_learning_rate(lr.into())?;
        Ok(opt)
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &R {
        &self.rule
    }

    /// Checks loaded `slots` of parameter `key` against what the rule would create for `param`.
    fn check_loaded(&self, key: &str, param: &Array, slots: &Slots) -> Result<()> {
        let fresh = self.rule.init(param)?;
        let names = |s: &Slots| s.keys().cloned().collect::<Vec<_>>();
        if names(&fresh) != names(slots) {
            return Err(Error::invalid(
                "optimizer",
                format!(
                    "the loaded state of {key:?} has slots {:?}, {} needs {:?}",
                    names(slots),
                    R::NAME,
                    names(&fresh)
                ),
            ));
        }
        for (name, a) in slots {
            let want = &fresh[name];
            if a.shape() != want.shape() {
                return Err(Error::shape(
                    "optimizer",
                    format!(
                        "the loaded slot {name} of {key:?} has shape {:?}, the parameter needs {:?}",
                        a.shape(),
                        want.shape()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl<R: UpdateRule> Optimizer for ParamWise<R> {
    fn name(&self) -> String {
        R::NAME.to_string()
    }

    fn apply_gradients(&mut self, grads: &Params, params: &Params) -> Result<Params> {
        for (key, g) in grads {
            let p = params.get(key).ok_or_else(|| {
                Error::invalid("optimizer", format!("there is a gradient for {key:?} but no such parameter"))
            })?;
            if p.shape() != g.shape() {
                return Err(Error::shape(
                    "optimizer",
                    format!("the gradient of {key:?} has shape {:?}, the parameter {:?}", g.shape(), p.shape()),
                ));
            }
            if let (true, Some(slots)) = (self.unchecked.contains(key), self.state.get(key)) {
                self.check_loaded(key, p, slots)?;
            }
        }
        for key in grads.keys() {
            self.unchecked.remove(key);
        }
        if let Some(s) = &self.schedule {
            self.learning_rate = fx::astype(&s(&self.step)?, Dtype::F32)?;
        }
        self.step = fx::add(&self.step, 1)?;
        let ctx = StepContext { learning_rate: &self.learning_rate, step: &self.step };
        let mut out = Params::new();
        for (key, g) in grads {
            let p = &params[key];
            let slots = match self.state.entry(key.clone()) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.rule.init(p)?),
            };
            out.insert(key.clone(), self.rule.apply(g, p, slots, &ctx)?);
        }
        Ok(out)
    }

    fn init(&mut self, params: &Params) -> Result<()> {
        for (key, p) in params {
            if !self.state.contains_key(key) {
                self.state.insert(key.clone(), self.rule.init(p)?);
            }
        }
        Ok(())
    }

    fn step(&self) -> Array {
        self.step.clone()
    }

    fn learning_rate(&self) -> Array {
        self.learning_rate.clone()
    }

    fn set_learning_rate(&mut self, lr: LearningRate) -> Result<()> {
        match lr {
            LearningRate::Constant(v) => {
                self.schedule = None;
                self.learning_rate = Array::scalar(v as f32);
            }
            LearningRate::Schedule(s) => {
                self.learning_rate = fx::astype(&s(&self.step)?, Dtype::F32)?;
                self.schedule = Some(s);
            }
        }
        Ok(())
    }

    fn state(&self) -> Params {
        let mut out = Params::new();
        out.insert("step".into(), self.step.clone());
        out.insert("learning_rate".into(), self.learning_rate.clone());
        for (key, slots) in &self.state {
            for (name, a) in slots {
                out.insert(format!("{key}.{name}"), a.clone());
            }
        }
        out
    }

    fn load_state(&mut self, state: &Params) -> Result<()> {
        const OP: &str = "load_state";
        let step = state.get("step").ok_or_else(|| Error::invalid(OP, "the state has no \"step\""))?;
        if step.size() != 1 || step.dtype().is_float() {
            return Err(Error::invalid(OP, format!("\"step\" must be an integer scalar, got {:?}", step.shape())));
        }
        let mut slots: BTreeMap<String, Slots> = BTreeMap::new();
        for (k, a) in state {
            if k == "step" || k == "learning_rate" {
                continue;
            }
            let parsed = k.rsplit_once('.').filter(|(_, slot)| R::SLOTS.contains(slot));
            let Some((param, slot)) = parsed else {
                return Err(Error::invalid(
                    OP,
                    format!("{k:?} is not {} state (slots are {:?}, keyed <param>.<slot>)", R::NAME, R::SLOTS),
                ));
            };
            slots.entry(param.to_string()).or_default().insert(slot.to_string(), a.clone());
        }
        self.step = fx::reshape_usize(&fx::astype(step, Dtype::U64)?, &[])?;
        if let Some(lr) = state.get("learning_rate") {
            self.learning_rate = fx::reshape_usize(&fx::astype(lr, Dtype::F32)?, &[])?;
        }
        self.unchecked = slots.keys().cloned().collect();
        self.state = slots;
        Ok(())
    }

    fn hyper_parameters(&self) -> BTreeMap<String, String> {
        self.rule.hyper_parameters().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}
