//! Loading a whole model: directory or hub id → config, weights, architecture, tokenizer.

use std::path::PathBuf;

use ferrox::Dtype;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::loader::{load_weights, resolve_model_dir};
use crate::models::{self, LanguageModel};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightMap;

/// A loaded model with its tokenizer and config.
pub struct Loaded {
    /// The model.
    pub model: Box<dyn LanguageModel>,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its config.json.
    pub config: ModelConfig,
    /// The local directory (or GGUF file) it came from.
    pub dir: PathBuf,
}

/// Loads a model directory or hub id ([`resolve_model_dir`]): config.json, the weights (cast
/// to `dtype` if given), and the tokenizer. A GGUF file loads through
/// [`crate::gguf::load_gguf_model`].
pub fn load(model: &str, dtype: Option<Dtype>) -> Result<Loaded> {
    let path = std::path::Path::new(model);
    if crate::gguf::is_gguf(path) {
        return crate::gguf::load_gguf_model(path, dtype);
    }
    let dir = resolve_model_dir(model)?;
    let config = ModelConfig::load(dir.join("config.json"))?;
    // Check the architecture before touching the weights.
    if !models::SUPPORTED.contains(&config.model_type.as_str()) {
        return Err(Error::UnsupportedModel {
            model_type: config.model_type.clone(),
            supported: models::SUPPORTED.to_vec(),
        });
    }
    let weights = load_weights(&dir, dtype)?;
    let model = models::build(&config, WeightMap::new(weights))?;
    let tokenizer = Tokenizer::load(&dir)?;
    Ok(Loaded { model, tokenizer, config, dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrox::{self as fx, Array};

    #[test]
    fn unsupported_and_broken_models() {
        let d = std::env::temp_dir().join(format!("ferrox-lm-load-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.json"), r#"{"model_type": "gpt9"}"#).unwrap();
        let e = load(d.to_str().unwrap(), None).err().unwrap().to_string();
        assert!(e.contains("\"gpt9\" is not supported") && e.contains("llama") && e.contains("gemma3_text"), "{e}");
        std::fs::write(d.join("config.json"), r#"{"model_type": "llama", "hidden_size": 8}"#).unwrap();
        let a = Array::from_slice(&[1.0f32], &[1]).unwrap();
        fx::save_safetensors(d.join("model.safetensors"), [("x", &a)], None).unwrap();
        let e = load(d.to_str().unwrap(), None).err().unwrap().to_string();
        assert!(e.contains("config.json") && e.contains("missing field"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
