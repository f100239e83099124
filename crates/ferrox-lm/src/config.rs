//! config.json: the model type, the dtype the weights were saved in, and the per-architecture
//! arguments each model file deserializes for itself (unknown fields are ignored).

use std::path::{Path, PathBuf};

use ferrox::Dtype;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// A parsed config.json. Architectures read their own arguments from it with [`ModelConfig::args`].
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The `model_type` field (`llama`, `qwen3`, ...).
    pub model_type: String,
    /// The whole JSON object, for the architecture to read its arguments from.
    pub raw: Value,
    /// Where it was read from, for messages.
    pub path: PathBuf,
}

impl ModelConfig {
    /// Reads and parses `path` (a config.json). A missing file, bad JSON, or a missing
    /// `model_type` is an error naming the file.
    pub fn load(path: impl AsRef<Path>) -> Result<ModelConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        ModelConfig::parse(&text, path)
    }

    /// Parses config.json text; `path` is only used in messages.
    pub fn parse(text: &str, path: impl Into<PathBuf>) -> Result<ModelConfig> {
        let path = path.into();
        let raw: Value =
            serde_json::from_str(text).map_err(|e| Error::config(&path, format!("not valid JSON: {e}")))?;
        if !raw.is_object() {
            return Err(Error::config(&path, "not a JSON object"));
        }
        let model_type = match raw.get("model_type") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(Error::config(&path, "no \"model_type\" string: cannot tell which architecture this is")),
        };
        Ok(ModelConfig { model_type, raw, path })
    }

    /// Deserializes the architecture's arguments from the config (fields it does not name are
    /// ignored). A missing or mistyped field is an error naming the file and the field.
    pub fn args<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.raw)
            .map_err(|e| Error::config(&self.path, format!("{e} (for model_type {:?})", self.model_type)))
    }

    /// The dtype the weights are stored in (`torch_dtype`, or `dtype` as transformers 5 writes
    /// it), if the config names one ferrox knows.
    pub fn dtype(&self) -> Option<Dtype> {
        let name = self.raw.get("torch_dtype").or_else(|| self.raw.get("dtype"))?.as_str()?;
        parse_dtype(name).ok()
    }

    /// Rotary-embedding settings, wherever this config keeps them: `rope_theta` and
    /// `rope_scaling` at the top level (transformers 4) or a `rope_parameters` object
    /// (transformers 5).
    pub fn rope(&self) -> Result<RopeConfig> {
        let mut rope = RopeConfig { theta: 10000.0, scaling: Value::Null };
        if let Some(t) = self.raw.get("rope_theta").and_then(Value::as_f64) {
            rope.theta = t;
        }
        for key in ["rope_scaling", "rope_parameters"] {
            if let Some(v) = self.raw.get(key).filter(|v| !v.is_null()) {
                self.read_rope(key, v, &mut rope)?;
            }
        }
        Ok(rope)
    }

    /// The rotary settings of the layers of `layer_type` (`full_attention`,
    /// `sliding_attention`) where transformers 5 keeps them per layer type
    /// (`rope_parameters: {"full_attention": {...}, ...}`); `None` if this config does not.
    pub fn layer_type_rope(&self, layer_type: &str) -> Result<Option<RopeConfig>> {
        let Some(v) = self.raw.get("rope_parameters").and_then(|p| p.get(layer_type)).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let mut rope = RopeConfig { theta: 10000.0, scaling: Value::Null };
        self.read_rope(&format!("rope_parameters.{layer_type}"), v, &mut rope)?;
        Ok(Some(rope))
    }

    /// Takes the base and (non-default) scaling from the rope object `v`, found at `key`.
    fn read_rope(&self, key: &str, v: &Value, rope: &mut RopeConfig) -> Result<()> {
        if !v.is_object() {
            return Err(Error::config(&self.path, format!("field {key:?} must be an object")));
        }
        if let Some(t) = v.get("rope_theta").and_then(Value::as_f64) {
            rope.theta = t;
        }
        let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str).unwrap_or("default");
        if kind != "default" {
            rope.scaling = v.clone();
        }
        Ok(())
    }

    /// The config object nested under `key` (a multimodal checkpoint's `text_config`) as a
    /// config of its own: its `model_type`, or `default_type` if it names none. `None` if
    /// there is no such object.
    pub fn nested(&self, key: &str, default_type: &str) -> Option<ModelConfig> {
        let raw = self.raw.get(key).filter(|v| v.is_object())?.clone();
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or(default_type).to_string();
        Some(ModelConfig { model_type, raw, path: self.path.clone() })
    }
}

/// Parses a dtype name as configs and the command line spell it: `float32`/`f32`,
/// `bfloat16`/`bf16`, `float16`/`f16`.
pub fn parse_dtype(name: &str) -> Result<Dtype> {
    Ok(match name {
        "float32" | "f32" => Dtype::F32,
        "bfloat16" | "bf16" => Dtype::Bf16,
        "float16" | "f16" | "half" => Dtype::F16,
        _ => return Err(Error::Invalid(format!("unknown dtype {name:?}; use float32, bfloat16 or float16"))),
    })
}

/// The rotary-embedding base and scaling of a config.
#[derive(Clone, Debug)]
pub struct RopeConfig {
    /// The frequency base θ.
    pub theta: f64,
    /// The `rope_scaling` / `rope_parameters` object when it asks for scaling, else null
    /// (ferrox-nn's `RopeScaling::from_config` reads it).
    pub scaling: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_are_clear_errors() {
        let e = ModelConfig::parse("{not json", "c.json").unwrap_err().to_string();
        assert!(e.contains("c.json") && e.contains("not valid JSON"), "{e}");
        let e = ModelConfig::parse("{\"hidden_size\": 4}", "c.json").unwrap_err().to_string();
        assert!(e.contains("model_type"), "{e}");
        let e = ModelConfig::load("/nonexistent/config.json").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/config.json"), "{e}");
    }

    #[test]
    fn rope_from_both_layouts() {
        let old = ModelConfig::parse(
            r#"{"model_type":"llama","rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0}}"#,
            "c",
        )
        .unwrap();
        let r = old.rope().unwrap();
        assert_eq!(r.theta, 500000.0);
        assert_eq!(r.scaling["factor"], 8.0);
        let new = ModelConfig::parse(
            r#"{"model_type":"llama","rope_parameters":{"rope_type":"default","rope_theta":1000.0},"torch_dtype":"bfloat16"}"#,
            "c",
        )
        .unwrap();
        let r = new.rope().unwrap();
        assert_eq!(r.theta, 1000.0);
        assert!(r.scaling.is_null());
        assert_eq!(new.dtype(), Some(Dtype::Bf16));
    }

    #[test]
    fn per_layer_type_rope_and_nested_configs() {
        let c = ModelConfig::parse(
            r#"{"model_type":"gemma3","text_config":{"hidden_size":8,"rope_parameters":{
                "full_attention":{"rope_type":"linear","factor":8.0,"rope_theta":1000000.0},
                "sliding_attention":{"rope_type":"default","rope_theta":10000.0}}}}"#,
            "c",
        )
        .unwrap();
        assert!(c.nested("vision_config", "x").is_none());
        let t = c.nested("text_config", "gemma3_text").unwrap();
        assert_eq!(t.model_type, "gemma3_text");
        let full = t.layer_type_rope("full_attention").unwrap().unwrap();
        assert_eq!((full.theta, full.scaling["factor"].as_f64()), (1e6, Some(8.0)));
        let local = t.layer_type_rope("sliding_attention").unwrap().unwrap();
        assert_eq!(local.theta, 1e4);
        assert!(local.scaling.is_null());
        assert!(c.layer_type_rope("full_attention").unwrap().is_none());
    }
}
