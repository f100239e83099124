//! [`Module`]: a tree of named parameters and submodules, MLX's `mlx.nn.Module`.
//!
//! A module holds its parameters as [`Array`] fields and its submodules as fields; the six
//! structural methods (usually written by `#[derive(Module)]`) list them, and everything else —
//! [`Params`] in and out, freezing, train/eval mode, checkpoints — is provided on top. Paths
//! join field names with dots: `layers.0.self_attn.q_proj.weight`.
//!
//! The trait is object safe (`Box<dyn Module>` is a module too), so a layer can be chosen at
//! run time; a field whose layer may be replaced later (LoRA, quantization) is best declared
//! as an enum of the candidates with `#[derive(Module)]`, which keeps the field's path.
//!
//! ```
//! use ferrox::Array;
//! use ferrox_nn::{Module, ModuleState};
//!
//! #[derive(Module)]
//! struct Scale {
//!     w: Array,
//!     state: ModuleState, // required next to array fields: it records which are frozen
//! }
//! let mut s = Scale { w: Array::scalar(2.0f32), state: ModuleState::new() };
//! s.freeze();
//! assert!(s.trainable_parameters().is_empty() && s.parameters().contains_key("w"));
//! ```
//!
//! Without the state field the derive refuses the struct at compile time:
//!
//! ```compile_fail
//! #[derive(ferrox_nn::Module)]
//! struct NoState {
//!     w: ferrox::Array,
//! }
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use ferrox::{Array, Error, Result};

use crate::params::Params;

/// Per-module state that the derive cannot infer from field types: which of the module's own
/// parameters are frozen, which are buffers (saved with the weights but never trained, like
/// BatchNorm's running statistics), and whether it is in training mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleState {
    frozen: BTreeSet<String>,
    buffers: BTreeSet<String>,
    training: bool,
}

impl Default for ModuleState {
    fn default() -> Self {
        ModuleState { frozen: BTreeSet::new(), buffers: BTreeSet::new(), training: true }
    }
}

impl ModuleState {
    /// Nothing frozen, training mode (a fresh module's state).
    pub fn new() -> Self {
        Self::default()
    }

    /// A state whose own parameters `names` are buffers: listed by `parameters()` and saved,
    /// but frozen for good (`unfreeze` leaves them frozen).
    pub fn with_buffers(names: &[&str]) -> Self {
        ModuleState { buffers: names.iter().map(|n| n.to_string()).collect(), ..Self::default() }
    }

    /// Whether the own parameter `name` is frozen (or a buffer).
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.contains(name) || self.buffers.contains(name)
    }

    /// Whether the module is in training mode.
    pub fn training(&self) -> bool {
        self.training
    }
}

/// What a lenient load or update did not match: checkpoint keys the model lacks, and model
/// parameters the checkpoint lacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model parameters the weights did not provide (left as they were).
    pub missing: Vec<String>,
    /// Keys of the weights that name no parameter of the model (ignored).
    pub unexpected: Vec<String>,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Whether `path` matches the glob `pattern`, where `*` stands for any run of characters
/// (dots included): `layers.*.mlp.*`, `*.bias`, `embed_tokens.weight`.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    // Classic greedy wildcard match with backtracking to the last star.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < s.len() {
        if i < p.len() && p[i] != b'*' && p[i] == s[j] {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(st) = star {
            i = st + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// A tree of named parameters and submodules.
///
/// Implement it with `#[derive(Module)]` (see `ferrox_nn_derive`), which writes the six
/// required methods from the struct's fields; the rest is provided. Forward passes are plain
/// inherent methods (`forward(&self, x)`), since layers differ in what they take; layers of one
/// input and one output also implement [`crate::UnaryModule`] so [`crate::layers::Sequential`]
/// can chain them.
pub trait Module {
    /// This module's own parameters (not its submodules'), by local name.
    fn own_params(&self) -> Vec<(String, &Array)>;
    /// [`Module::own_params`], mutably.
    fn own_params_mut(&mut self) -> Vec<(String, &mut Array)>;
    /// The direct submodules, by local name (`q_proj`, `layers.0`).
    fn children(&self) -> Vec<(String, &dyn Module)>;
    /// [`Module::children`], mutably.
    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module)>;
    /// The module's frozen set and training flag; `None` for a container without own
    /// parameters that keeps no state.
    fn state(&self) -> Option<&ModuleState>;
    /// [`Module::state`], mutably.
    fn state_mut(&mut self) -> Option<&mut ModuleState>;

    /// The Rust type name of the module (for [`Module::apply_to_modules`] filters and messages).
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// Calls `f(path, array, frozen)` for every parameter of the tree, in field order.
    fn visit_parameters(&self, f: &mut dyn FnMut(&str, &Array, bool)) {
        fn walk(m: &dyn Module, prefix: &str, f: &mut dyn FnMut(&str, &Array, bool)) {
            for (name, a) in m.own_params() {
                let frozen = m.state().is_some_and(|s| s.is_frozen(&name));
                f(&join(prefix, &name), a, frozen);
            }
            for (name, c) in m.children() {
                walk(c, &join(prefix, &name), f);
            }
        }
        walk(self.as_dyn(), "", f)
    }

    /// Calls `f(path, module)` for this module (path `""`) and every submodule, parents first.
    fn apply_to_modules(&self, f: &mut dyn FnMut(&str, &dyn Module)) {
        fn walk(m: &dyn Module, prefix: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
            f(prefix, m);
            for (name, c) in m.children() {
                walk(c, &join(prefix, &name), f);
            }
        }
        walk(self.as_dyn(), "", f)
    }

    /// Calls `f(path, module)` mutably for this module and every submodule, parents first
    /// (a parent's changes are visible when its children are visited); stops at the first error.
    fn apply_to_modules_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Module) -> Result<()>) -> Result<()> {
        fn walk(
            m: &mut dyn Module,
            prefix: &str,
            f: &mut dyn FnMut(&str, &mut dyn Module) -> Result<()>,
        ) -> Result<()> {
            f(prefix, m)?;
            for (name, c) in m.children_mut() {
                walk(c, &join(prefix, &name), f)?;
            }
            Ok(())
        }
        walk(self.as_dyn_mut(), "", f)
    }

    /// `self` as a trait object (the provided methods walk the tree through it).
    fn as_dyn(&self) -> &dyn Module;
    /// `self` as a mutable trait object.
    fn as_dyn_mut(&mut self) -> &mut dyn Module;

    /// All parameters, by dotted path.
    fn parameters(&self) -> Params {
        let mut out = Params::new();
        self.visit_parameters(&mut |k, a, _| {
            out.insert(k.to_string(), a.clone());
        });
        out
    }

    /// The parameters that are not frozen: what gradients and optimizers see.
    fn trainable_parameters(&self) -> Params {
        let mut out = Params::new();
        self.visit_parameters(&mut |k, a, frozen| {
            if !frozen {
                out.insert(k.to_string(), a.clone());
            }
        });
        out
    }

    /// The number of scalars in all parameters.
    fn num_parameters(&self) -> usize {
        let mut n = 0;
        self.visit_parameters(&mut |_, a, _| n += a.size());
        n
    }

    /// Freezes every parameter of the tree.
    fn freeze(&mut self) {
        set_frozen_where(self.as_dyn_mut(), true, &mut |_, _| true);
    }

    /// Unfreezes every parameter of the tree.
    fn unfreeze(&mut self) {
        set_frozen_where(self.as_dyn_mut(), false, &mut |_, _| true);
    }

    /// Freezes, in this module and every submodule, the parameters whose local name is one of
    /// `keys` (e.g. `["bias"]` freezes all biases). Errors if a key names no parameter.
    fn freeze_keys(&mut self, keys: &[&str]) -> Result<()> {
        set_frozen_by_keys(self.as_dyn_mut(), keys, true)
    }

    /// Unfreezes the parameters whose local name is one of `keys`, throughout the tree.
    fn unfreeze_keys(&mut self, keys: &[&str]) -> Result<()> {
        set_frozen_by_keys(self.as_dyn_mut(), keys, false)
    }

    /// Freezes the parameters whose full path matches the glob `pattern` (`*` matches any
    /// run of characters: `layers.*.self_attn.*`); returns how many matched, and errors if
    /// none did (a mistyped pattern would otherwise freeze nothing silently).
    fn freeze_matching(&mut self, pattern: &str) -> Result<usize> {
        set_frozen_by_pattern(self.as_dyn_mut(), pattern, true)
    }

    /// Unfreezes the parameters whose full path matches `pattern`; see
    /// [`Module::freeze_matching`].
    fn unfreeze_matching(&mut self, pattern: &str) -> Result<usize> {
        set_frozen_by_pattern(self.as_dyn_mut(), pattern, false)
    }

    /// Replaces parameters by path. Every key must name a parameter and every new value must
    /// have its shape (dtype may change); nothing is replaced if any key is wrong. Keys not
    /// given keep their values, so a partial map (e.g. an optimizer's trainable subset) is fine.
    fn update(&mut self, params: &Params) -> Result<()> {
        let report = update_impl(self.as_dyn_mut(), params)?;
        if !report.unexpected.is_empty() {
            return Err(Error::invalid(
                "Module::update",
                format!("keys name no parameter of the module: {}", report.unexpected.join(", ")),
            ));
        }
        Ok(())
    }

    /// [`Module::update`] that skips keys naming no parameter and returns them as
    /// `unexpected` (and the parameters not given as `missing`). Shapes are still checked.
    fn update_lenient(&mut self, params: &Params) -> Result<LoadReport> {
        update_impl(self.as_dyn_mut(), params)
    }

    /// Replaces every parameter `a` (at path `p`) by `f(p, a)`, MLX's `Module.apply`; stops at
    /// the first error. Unlike [`Module::update`] the new values are not checked, so `f` may
    /// change dtypes (or, with care, shapes).
    fn map_parameters(&mut self, f: &mut dyn FnMut(&str, &Array) -> Result<Array>) -> Result<()> {
        self.apply_to_modules_mut(&mut |prefix, m| {
            for (name, slot) in m.own_params_mut() {
                *slot = f(&join(prefix, &name), slot)?;
            }
            Ok(())
        })
    }

    /// Casts every floating-point parameter to `dtype` (integer parameters are left alone),
    /// MLX's `Module.set_dtype`.
    fn set_dtype(&mut self, dtype: ferrox::Dtype) -> Result<()> {
        self.map_parameters(&mut |_, a| if a.dtype().is_float() { ferrox::astype(a, dtype) } else { Ok(a.clone()) })
    }

    /// Sets training mode (`true`) or evaluation mode (`false`) on the whole tree.
    fn train(&mut self, training: bool) {
        let _ = self.apply_to_modules_mut(&mut |_, m| {
            if let Some(s) = m.state_mut() {
                s.training = training;
            }
            Ok(())
        });
    }

    /// Evaluation mode: `train(false)`.
    fn eval_mode(&mut self) {
        self.train(false)
    }

    /// Whether the module is in training mode (a stateless container answers for its first
    /// stateful descendant; a tree with no state at all is always "training").
    fn training(&self) -> bool {
        if let Some(s) = self.state() {
            return s.training;
        }
        let mut found = None;
        self.apply_to_modules(&mut |_, m| {
            if found.is_none() {
                found = m.state().map(|s| s.training);
            }
        });
        found.unwrap_or(true)
    }

    /// Writes all parameters to a safetensors file, keyed by path.
    fn save_weights(&self, path: impl AsRef<Path>) -> Result<()>
    where
        Self: Sized,
    {
        ferrox::save_safetensors(path, self.parameters().iter(), None)
    }

    /// Loads parameters from a safetensors file. Strict: the file's keys must be exactly the
    /// model's (errors list the missing and unexpected ones). Lenient: loads the keys that
    /// match and reports the rest. Shapes must match either way.
    fn load_weights(&mut self, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport>
    where
        Self: Sized,
    {
        let (arrays, _) = ferrox::load_safetensors(path)?;
        self.load_params(arrays.into_iter().collect(), strict)
    }

    /// [`Module::load_weights`] from arrays already in memory.
    fn load_params(&mut self, weights: Params, strict: bool) -> Result<LoadReport> {
        if strict {
            let have = self.parameters();
            let missing: Vec<String> = have.keys().filter(|k| !weights.contains_key(*k)).cloned().collect();
            let unexpected: Vec<String> = weights.keys().filter(|k| !have.contains_key(*k)).cloned().collect();
            if !missing.is_empty() || !unexpected.is_empty() {
                return Err(Error::invalid(
                    "load_weights",
                    format!(
                        "the weights do not fit the model: missing [{}], unexpected [{}] \
                         (load leniently to accept a partial match)",
                        missing.join(", "),
                        unexpected.join(", ")
                    ),
                ));
            }
        }
        update_impl(self.as_dyn_mut(), &weights)
    }
}

/// Sets the frozen flag of every own parameter for which `pick(path, local_name)` holds;
/// returns how many were picked.
fn set_frozen_where(m: &mut dyn Module, frozen: bool, pick: &mut dyn FnMut(&str, &str) -> bool) -> usize {
    let mut count = 0;
    let _ = m.apply_to_modules_mut(&mut |prefix, m| {
        let names: Vec<String> =
            m.own_params().into_iter().map(|(n, _)| n).filter(|n| pick(&join(prefix, n), n)).collect();
        count += names.len();
        if let Some(s) = m.state_mut() {
            for n in names {
                if frozen {
                    s.frozen.insert(n);
                } else {
                    s.frozen.remove(&n);
                }
            }
        }
        Ok(())
    });
    count
}

fn set_frozen_by_keys(m: &mut dyn Module, keys: &[&str], frozen: bool) -> Result<()> {
    let mut seen = BTreeSet::new();
    set_frozen_where(m, frozen, &mut |_, local| {
        let hit = keys.contains(&local);
        if hit {
            seen.insert(local.to_string());
        }
        hit
    });
    let unknown: Vec<&str> = keys.iter().copied().filter(|k| !seen.contains(*k)).collect();
    if !unknown.is_empty() {
        return Err(Error::invalid("freeze", format!("no parameter is named {}", unknown.join(", "))));
    }
    Ok(())
}

fn set_frozen_by_pattern(m: &mut dyn Module, pattern: &str, frozen: bool) -> Result<usize> {
    let n = set_frozen_where(m, frozen, &mut |path, _| path_matches(pattern, path));
    if n == 0 {
        return Err(Error::invalid("freeze", format!("no parameter path matches {pattern:?}")));
    }
    Ok(n)
}

/// Checks every key and shape first, then assigns, so a failed update changes nothing.
fn update_impl(m: &mut dyn Module, params: &Params) -> Result<LoadReport> {
    let have = m.parameters();
    let mut report = LoadReport::default();
    for (k, new) in params {
        match have.get(k) {
            None => report.unexpected.push(k.clone()),
            Some(old) if old.shape() != new.shape() => {
                return Err(Error::shape(
                    "Module::update",
                    format!("{k}: new value of shape {:?} for a parameter of shape {:?}", new.shape(), old.shape()),
                ))
            }
            Some(_) => {}
        }
    }
    report.missing = have.keys().filter(|k| !params.contains_key(*k)).cloned().collect();
    m.apply_to_modules_mut(&mut |prefix, m| {
        for (name, slot) in m.own_params_mut() {
            if let Some(v) = params.get(&join(prefix, &name)) {
                *slot = v.clone();
            }
        }
        Ok(())
    })?;
    Ok(report)
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn own_params(&self) -> Vec<(String, &Array)> {
        (**self).own_params()
    }
    fn own_params_mut(&mut self) -> Vec<(String, &mut Array)> {
        (**self).own_params_mut()
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        (**self).children()
    }
    fn children_mut(&mut self) -> Vec<(String, &mut dyn Module)> {
        (**self).children_mut()
    }
    fn state(&self) -> Option<&ModuleState> {
        (**self).state()
    }
    fn state_mut(&mut self) -> Option<&mut ModuleState> {
        (**self).state_mut()
    }
    fn type_name(&self) -> &'static str {
        (**self).type_name()
    }
    fn as_dyn(&self) -> &dyn Module {
        (**self).as_dyn()
    }
    fn as_dyn_mut(&mut self) -> &mut dyn Module {
        (**self).as_dyn_mut()
    }
}

/// A module of one input and one output (most layers and the activations), so that
/// [`crate::layers::Sequential`] can chain them. `call` takes `&mut self` because some layers
/// update state as they run (BatchNorm's running statistics).
pub trait UnaryModule: Module {
    /// The forward pass.
    fn call(&mut self, x: &Array) -> Result<Array>;
}

impl<M: UnaryModule + ?Sized> UnaryModule for Box<M> {
    fn call(&mut self, x: &Array) -> Result<Array> {
        (**self).call(x)
    }
}
