//! The `"quantization"` section of config.json, as mlx-lm writes it: global `group_size`,
//! `bits` and `mode`, plus per-layer entries keyed by module path — a parameter object for a
//! layer quantized differently, `false` for one left in floating point. mlx-lm writes the same
//! object again as `"quantization_config"` (the Hugging Face name), which is read as an alias.

use std::collections::BTreeMap;

use ferrox::QuantMode;
use ferrox_nn::layers::QuantSpec;
use serde_json::{Map, Value};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// A checkpoint's quantization settings.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantConfig {
    /// The global settings (what a layer without an entry of its own uses).
    pub default: QuantSpec,
    /// Per-layer entries by module path (`model.layers.0.mlp.down_proj`): `Some(spec)` for a
    /// layer quantized with its own settings, `None` for one left in floating point.
    pub layers: BTreeMap<String, Option<QuantSpec>>,
}

/// The keys of the section that are global settings, not layer paths.
const GLOBAL_KEYS: &[&str] = &["group_size", "bits", "mode"];

impl QuantConfig {
    /// Global settings and no per-layer entries.
    pub fn new(default: QuantSpec) -> QuantConfig {
        QuantConfig { default, layers: BTreeMap::new() }
    }

    /// The quantization section of `config`, if it has one: `"quantization"`, else an
    /// MLX-format `"quantization_config"` (or one naming the `mxfp4` / `mxfp8` method). Other
    /// methods (GPTQ, AWQ, bitsandbytes, ...) are an error that says so.
    pub fn from_config(config: &ModelConfig) -> Result<Option<QuantConfig>> {
        let bad = |msg: String| Error::config(&config.path, msg);
        let section = match (config.raw.get("quantization"), config.raw.get("quantization_config")) {
            (Some(q), _) if !q.is_null() => q,
            (_, Some(q)) if !q.is_null() => match q.get("quant_method").and_then(Value::as_str) {
                None => q,
                Some(m @ ("mxfp4" | "mxfp8")) => {
                    let mode = QuantMode::parse(m).map_err(|e| bad(e.to_string()))?;
                    return Ok(Some(QuantConfig::new(QuantSpec::new(None, None, mode))));
                }
                Some(m) => {
                    return Err(bad(format!(
                        "quantization method {m:?} is not supported; ferrox reads MLX-format quantized checkpoints \
                         (convert the original weights with `ferrox convert -q`)"
                    )))
                }
            },
            _ => return Ok(None),
        };
        QuantConfig::parse(section).map(Some).map_err(|e| bad(format!("\"quantization\": {e}")))
    }

    /// Parses the section's JSON object.
    pub fn parse(section: &Value) -> std::result::Result<QuantConfig, String> {
        let obj = section.as_object().ok_or("must be an object")?;
        let default = spec(obj)?;
        let mut layers = BTreeMap::new();
        for (k, v) in obj.iter().filter(|(k, _)| !GLOBAL_KEYS.contains(&k.as_str())) {
            let entry = match v {
                Value::Bool(false) => None,
                Value::Bool(true) => Some(default),
                Value::Object(o) => Some(spec(o).map_err(|e| format!("{k}: {e}"))?),
                // Other scalar settings (a quantization method's name, ...) are not layers.
                _ => continue,
            };
            layers.insert(k.clone(), entry);
        }
        Ok(QuantConfig { default, layers })
    }

    /// The section as mlx-lm writes it: the global settings and every per-layer entry.
    pub fn to_json(&self) -> Value {
        let mut obj = spec_json(self.default);
        for (k, v) in &self.layers {
            obj.insert(k.clone(), v.map_or(Value::Bool(false), |s| Value::Object(spec_json(s))));
        }
        Value::Object(obj)
    }

    /// Renames the per-layer entries whose path starts with `from` to start with `to` (as
    /// [`crate::weights::WeightMap::rename_prefix`] renames the tensors).
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        let renamed = std::mem::take(&mut self.layers)
            .into_iter()
            .map(|(k, v)| match k.strip_prefix(from) {
                Some(rest) => (format!("{to}{rest}"), v),
                None => (k, v),
            })
            .collect();
        self.layers = renamed;
    }
}

/// A spec from an object's `group_size`, `bits` and `mode` (a missing one takes the mode's
/// default, as MLX's `to_quantized` does).
fn spec(obj: &Map<String, Value>) -> std::result::Result<QuantSpec, String> {
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => QuantMode::Affine,
        Some(Value::String(m)) => QuantMode::parse(m).map_err(|e| e.to_string())?,
        Some(v) => return Err(format!("mode must be a string, not {v}")),
    };
    let int = |key: &str| -> std::result::Result<Option<usize>, String> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| format!("{key} must be a positive integer, not {v}"))
            }
        }
    };
    Ok(QuantSpec::new(int("group_size")?, int("bits")?, mode))
}

fn spec_json(s: QuantSpec) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("group_size".into(), s.group_size.into());
    m.insert("bits".into(), s.bits.into());
    m.insert("mode".into(), s.mode.name().into());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> ModelConfig {
        ModelConfig::parse(json, "config.json").unwrap()
    }

    #[test]
    fn reads_mlx_lm_sections() {
        let c = config(
            r#"{"model_type":"llama","quantization":{"group_size":64,"bits":4,"mode":"affine",
                "model.embed_tokens":false,"model.layers.1.mlp.down_proj":{"group_size":64,"bits":6,"mode":"affine"},
                "lm_head":{"bits":8}}}"#,
        );
        let q = QuantConfig::from_config(&c).unwrap().unwrap();
        assert_eq!(q.default, QuantSpec::new(Some(64), Some(4), QuantMode::Affine));
        assert_eq!(q.layers["model.embed_tokens"], None);
        assert_eq!(q.layers["model.layers.1.mlp.down_proj"].unwrap().bits, 6);
        assert_eq!(q.layers["lm_head"], Some(QuantSpec::new(Some(64), Some(8), QuantMode::Affine)));
        // Written back, it parses to the same thing.
        assert_eq!(QuantConfig::parse(&q.to_json()).unwrap(), q);
        // The Hugging Face alias, and older sections without a mode.
        let c = config(r#"{"model_type":"llama","quantization_config":{"group_size":32,"bits":8}}"#);
        assert_eq!(
            QuantConfig::from_config(&c).unwrap().unwrap().default,
            QuantSpec::new(Some(32), Some(8), QuantMode::Affine)
        );
        let c = config(r#"{"model_type":"gpt_oss","quantization_config":{"quant_method":"mxfp4"}}"#);
        assert_eq!(QuantConfig::from_config(&c).unwrap().unwrap().default.mode, QuantMode::Mxfp4);
        assert!(QuantConfig::from_config(&config(r#"{"model_type":"llama"}"#)).unwrap().is_none());
    }

    #[test]
    fn bad_sections_are_errors() {
        let e = |json: &str| QuantConfig::from_config(&config(json)).unwrap_err().to_string();
        let msg = e(r#"{"model_type":"llama","quantization_config":{"quant_method":"gptq","bits":4}}"#);
        assert!(msg.contains("\"gptq\" is not supported"), "{msg}");
        let msg = e(r#"{"model_type":"llama","quantization":{"group_size":64,"bits":4,"mode":"int3"}}"#);
        assert!(msg.contains("unknown quantization mode \"int3\""), "{msg}");
        let msg = e(r#"{"model_type":"llama","quantization":{"group_size":"64"}}"#);
        assert!(msg.contains("group_size must be a positive integer"), "{msg}");
    }

    #[test]
    fn renames_layer_paths() {
        let mut q = QuantConfig::new(QuantSpec::new(None, None, QuantMode::Affine));
        q.layers.insert("language_model.model.layers.0.self_attn.q_proj".into(), None);
        q.rename_prefix("language_model.model.", "model.");
        assert!(q.layers.contains_key("model.layers.0.self_attn.q_proj"));
    }
}
