//! [`WeightMap`]: hands checkpoint tensors to the model being built, by name and expected
//! shape, and reports every missing, unexpected or wrongly-shaped tensor at once.

use std::collections::HashMap;

use ferrox::{self as fx, Array, Dtype};

use crate::error::{Error, Result};
use crate::quant::QuantConfig;

/// Checkpoint tensors by name, taken one by one while a model is built, and the checkpoint's
/// quantization settings (which decide whether a layer is built dense or quantized:
/// `models/layers.rs`).
pub struct WeightMap {
    map: HashMap<String, Array>,
    quant: Option<QuantConfig>,
    missing: Vec<String>,
    mismatched: Vec<String>,
}

impl WeightMap {
    /// Wraps a checkpoint's tensors.
    pub fn new(map: HashMap<String, Array>) -> WeightMap {
        WeightMap { map, quant: None, missing: Vec::new(), mismatched: Vec::new() }
    }

    /// Sets the checkpoint's quantization section (config.json's `"quantization"`).
    pub fn set_quantization(&mut self, quant: Option<QuantConfig>) {
        self.quant = quant;
    }

    /// The checkpoint's quantization section, if it has one.
    pub fn quantization(&self) -> Option<&QuantConfig> {
        self.quant.as_ref()
    }

    /// The tensor `name`, without taking it (to read its shape or dtype).
    pub fn peek(&self, name: &str) -> Option<&Array> {
        self.map.get(name)
    }

    /// Removes `name` (used by architectures to drop tensors they ignore, such as a
    /// duplicated `lm_head.weight` of tied embeddings or rotary `inv_freq` buffers).
    pub fn remove(&mut self, name: &str) -> Option<Array> {
        self.map.remove(name)
    }

    /// Whether the checkpoint has `name` (not yet taken).
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// Renames every tensor whose name starts with `from` to start with `to` instead (a
    /// checkpoint layout that nests the model differently, such as a multimodal wrapper's
    /// `language_model.model.`), and the per-layer quantization entries with them. Returns how
    /// many tensors were renamed.
    pub fn rename_prefix(&mut self, from: &str, to: &str) -> usize {
        if let Some(q) = &mut self.quant {
            q.rename_prefix(from, to);
        }
        let names: Vec<String> = self.map.keys().filter(|n| n.starts_with(from)).cloned().collect();
        for n in &names {
            if let Some(a) = self.map.remove(n) {
                self.map.insert(format!("{to}{}", &n[from.len()..]), a);
            }
        }
        names.len()
    }

    /// Removes every tensor whose name starts with `prefix` (parts of a checkpoint the model
    /// does not use, such as a vision tower). Returns how many were removed.
    pub fn remove_prefix(&mut self, prefix: &str) -> usize {
        let before = self.map.len();
        self.map.retain(|n, _| !n.starts_with(prefix));
        before - self.map.len()
    }

    /// Names not yet taken.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Takes the tensor `name`, which must have `shape`. A missing or mis-shaped tensor is
    /// recorded (and a lazy placeholder of the right shape returned, so building goes on and
    /// every problem is reported by [`WeightMap::finish`]).
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Array> {
        match self.map.remove(name) {
            Some(a) if a.shape() == shape => return Ok(a),
            Some(a) => self.mismatched.push(format!("{name}: expected {shape:?}, got {:?}", a.shape())),
            None => self.missing.push(name.to_string()),
        }
        Ok(fx::zeros(shape, ferrox::Dtype::F32)?)
    }

    /// [`WeightMap::take`] for a tensor that must also have `dtype` (packed quantized weights
    /// are uint32, the scales of the floating-point formats uint8); the placeholder of a
    /// missing or mismatched one has that dtype.
    pub fn take_typed(&mut self, name: &str, shape: &[usize], dtype: Dtype) -> Result<Array> {
        match self.map.get(name) {
            Some(a) if a.shape() == shape && a.dtype() != dtype => {
                self.mismatched.push(format!("{name}: expected {dtype:?}, got {:?}", a.dtype()));
                self.map.remove(name);
                Ok(fx::zeros(shape, dtype)?)
            }
            _ => {
                // The tensor itself, or take's float placeholder replaced by one of `dtype`.
                let a = self.take(name, shape)?;
                Ok(if a.dtype() == dtype { a } else { fx::zeros(shape, dtype)? })
            }
        }
    }

    /// Takes `name` if the checkpoint has it (an optional bias).
    pub fn take_optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Array>> {
        if self.map.contains_key(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Succeeds if every tensor was found with its shape and none is left over; otherwise
    /// one [`Error::Weights`] lists them all.
    pub fn finish(self) -> Result<()> {
        let mut unexpected: Vec<String> = self.map.into_keys().collect();
        let (mut missing, mut mismatched) = (self.missing, self.mismatched);
        if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
            return Ok(());
        }
        unexpected.sort();
        missing.sort();
        mismatched.sort();
        Err(Error::Weights { missing, unexpected, mismatched })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_and_remove_prefixes() {
        let a = Array::from_slice(&[1.0f32], &[1]).unwrap();
        let names = ["language_model.model.norm.weight", "vision_tower.x", "vision_tower.y", "lm_head.weight"];
        let mut w = WeightMap::new(names.iter().map(|n| (n.to_string(), a.clone())).collect());
        assert_eq!(w.rename_prefix("language_model.model.", "model."), 1);
        assert_eq!(w.remove_prefix("vision_tower."), 2);
        let mut left: Vec<&str> = w.names().collect();
        left.sort();
        assert_eq!(left, ["lm_head.weight", "model.norm.weight"]);
    }

    #[test]
    fn lists_every_problem() {
        let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let map: HashMap<String, Array> =
            [("a".to_string(), a.clone()), ("b".to_string(), a.clone()), ("x".to_string(), a)].into();
        let mut w = WeightMap::new(map);
        assert_eq!(w.take("a", &[2]).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(w.take("b", &[3]).unwrap().shape(), [3]);
        assert_eq!(w.take("c", &[4, 1]).unwrap().shape(), [4, 1]);
        assert!(w.take_optional("d", &[1]).unwrap().is_none());
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("missing 1 tensor(s): c"), "{e}");
        assert!(e.contains("unexpected 1 tensor(s): x"), "{e}");
        assert!(e.contains("b: expected [3], got [2]"), "{e}");
    }
}
