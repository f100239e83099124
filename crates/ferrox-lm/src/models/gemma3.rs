//! Gemma 3 (text): the Gemma 2 decoder ([`super::gemma2::Spec`]) with an RMSNorm over each
//! head's queries and keys, a repeating pattern of sliding-window and global layers, a rope base
//! of its own for the sliding layers (`rope_local_base_freq`) and rope scaling for the global
//! ones, and no soft-capping by default. Loads `gemma3_text` checkpoints and the text model of
//! multimodal `gemma3` ones (config under `text_config`, tensors under `language_model.model.`;
//! the vision tower and projector are skipped).

use serde::Deserialize;
use serde_json::Value;

use super::gemma2::{exact_gelu, reaches, Model, Spec};
use super::rope_layer;
use crate::config::{ModelConfig, RopeConfig};
use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// The config.json (or `text_config`) fields Gemma 3 reads, with transformers' defaults.
#[derive(Clone, Debug, Deserialize)]
pub struct Args {
    /// Width of the residual stream.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Number of decoder blocks.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Width of the MLP.
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    /// Query heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads.
    #[serde(default = "d_kv_heads")]
    pub num_key_value_heads: usize,
    /// Per-head width.
    #[serde(default = "d_head_dim")]
    pub head_dim: usize,
    /// RMSNorm epsilon.
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Longest trained context (for rope scaling).
    #[serde(default = "d_max_positions")]
    pub max_position_embeddings: usize,
    /// Attention scores are scaled by `query_pre_attn_scalar^-½`.
    #[serde(default = "d_query_scalar")]
    pub query_pre_attn_scalar: f32,
    /// Window of the sliding-window layers (`null`: every layer is global).
    #[serde(default = "d_window")]
    pub sliding_window: Option<usize>,
    /// `sliding_attention` or `full_attention` per layer; by default every
    /// `sliding_window_pattern`-th layer is global.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// One layer in this many is global (when `layer_types` is absent).
    #[serde(default = "d_pattern")]
    pub sliding_window_pattern: usize,
    /// The rope base of the sliding layers (transformers 4 layout).
    #[serde(default = "d_local_base")]
    pub rope_local_base_freq: f64,
    /// Attention score soft-capping.
    #[serde(default)]
    pub attn_logit_softcapping: Option<f32>,
    /// Output logit soft-capping.
    #[serde(default)]
    pub final_logit_softcapping: Option<f32>,
    /// Biases on the attention projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the output head reuses the embedding table.
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
    /// The MLP's activation.
    #[serde(default = "d_act")]
    pub hidden_activation: String,
    /// Bidirectional attention (EmbeddingGemma), which a causal language model cannot use.
    #[serde(default)]
    pub use_bidirectional_attention: Option<bool>,
}

fn d_hidden() -> usize {
    2304
}
fn d_layers() -> usize {
    26
}
fn d_intermediate() -> usize {
    9216
}
fn d_heads() -> usize {
    8
}
fn d_kv_heads() -> usize {
    4
}
fn d_head_dim() -> usize {
    256
}
fn d_eps() -> f32 {
    1e-6
}
fn d_vocab() -> usize {
    262208
}
fn d_max_positions() -> usize {
    131072
}
fn d_query_scalar() -> f32 {
    256.0
}
fn d_window() -> Option<usize> {
    Some(4096)
}
fn d_pattern() -> usize {
    6
}
fn d_local_base() -> f64 {
    10000.0
}
fn d_true() -> bool {
    true
}
fn d_act() -> String {
    "gelu_pytorch_tanh".into()
}

/// The global layers' rope base when a config names none.
const GLOBAL_BASE: f64 = 1_000_000.0;

/// Where checkpoints keep the text model: multimodal layouts nest it; these become `model.` /
/// `lm_head.`.
const PREFIXES: [(&str, &str); 3] =
    [("language_model.model.", "model."), ("model.language_model.", "model."), ("language_model.lm_head.", "lm_head.")];

/// Parts of multimodal checkpoints the text model does not use.
const SKIPPED: [&str; 4] =
    ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."];

/// The rope of the global and of the sliding layers: per layer type (transformers 5), or
/// `rope_theta` / `rope_scaling` for the global ones and `rope_local_base_freq` for the sliding
/// ones (transformers 4).
fn ropes(text: &ModelConfig, a: &Args) -> Result<(RopeConfig, RopeConfig)> {
    let local_default = RopeConfig { theta: a.rope_local_base_freq, scaling: Value::Null };
    if let Some(global) = text.layer_type_rope("full_attention")? {
        return Ok((global, text.layer_type_rope("sliding_attention")?.unwrap_or(local_default)));
    }
    let mut global = text.rope()?;
    let named = |key: &str| text.raw.get(key).and_then(|v| v.get("rope_theta")).is_some();
    if text.raw.get("rope_theta").is_none() && !named("rope_parameters") && !named("rope_scaling") {
        global.theta = GLOBAL_BASE;
    }
    Ok((global, local_default))
}

/// Each layer's type: `layer_types`, or every `sliding_window_pattern`-th layer global.
fn layer_types(a: &Args) -> Vec<String> {
    a.layer_types.clone().unwrap_or_else(|| {
        (0..a.num_hidden_layers)
            .map(|i| {
                if (i + 1) % a.sliding_window_pattern == 0 { "full_attention" } else { "sliding_attention" }.to_string()
            })
            .collect()
    })
}

/// Builds a Gemma 3 text model from a `gemma3_text` or `gemma3` checkpoint.
pub fn build(config: &ModelConfig, mut w: WeightMap) -> Result<Model> {
    let text = if config.model_type == "gemma3" {
        config.nested("text_config", "gemma3_text").unwrap_or_else(|| ModelConfig {
            model_type: "gemma3_text".into(),
            raw: Value::Object(Default::default()),
            path: config.path.clone(),
        })
    } else {
        config.clone()
    };
    let a: Args = text.args()?;
    if a.use_bidirectional_attention == Some(true) {
        return Err(Error::config(&config.path, "use_bidirectional_attention: an embedding model, not a causal LM"));
    }
    if a.sliding_window_pattern == 0 {
        return Err(Error::config(&config.path, "sliding_window_pattern must be at least 1"));
    }
    let types = layer_types(&a);
    let (global, local) = ropes(&text, &a)?;
    let global = rope_layer(&text, &global, a.head_dim, false, a.max_position_embeddings)?;
    let local = rope_layer(&text, &local, a.head_dim, false, a.max_position_embeddings)?;
    let layers = reaches(&text, &types, a.sliding_window)?
        .into_iter()
        .zip(&types)
        .map(|(r, t)| (r, if t == "full_attention" { global.clone() } else { local.clone() }))
        .collect();
    for (from, to) in PREFIXES {
        w.rename_prefix(from, to);
    }
    for prefix in SKIPPED {
        w.remove_prefix(prefix);
    }
    let spec = Spec {
        hidden_size: a.hidden_size,
        intermediate_size: a.intermediate_size,
        num_heads: a.num_attention_heads,
        num_kv_heads: a.num_key_value_heads,
        head_dim: a.head_dim,
        vocab_size: a.vocab_size,
        eps: a.rms_norm_eps,
        scale: a.query_pre_attn_scalar.powf(-0.5),
        attn_softcap: a.attn_logit_softcapping,
        final_softcap: a.final_logit_softcapping,
        attention_bias: a.attention_bias,
        qk_norm: true,
        exact_gelu: exact_gelu(&text, &a.hidden_activation)?,
        tie_word_embeddings: a.tie_word_embeddings,
        layers,
    };
    Model::build_spec(&text, &spec, w, a.num_hidden_layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::attention::Reach;

    #[test]
    fn transformers4_layout_pattern_and_ropes() {
        let c = ModelConfig::parse(
            r#"{"model_type":"gemma3_text","num_hidden_layers":7,"sliding_window":512,"sliding_window_pattern":3,
                "rope_scaling":{"rope_type":"linear","factor":8.0},"rope_local_base_freq":20000.0,
                "hidden_size":8,"intermediate_size":8,"num_attention_heads":2,"num_key_value_heads":1,
                "head_dim":4,"vocab_size":10}"#,
            "c",
        )
        .unwrap();
        let a: Args = c.args().unwrap();
        let (global, local) = ropes(&c, &a).unwrap();
        assert_eq!(global.theta, GLOBAL_BASE);
        assert_eq!(global.scaling["factor"], 8.0);
        assert_eq!(local.theta, 20000.0);
        assert!(local.scaling.is_null());
        // An empty checkpoint is missing 13 tensors per layer (q/k norms included) plus the
        // embedding and the final norm.
        let e = build(&c, WeightMap::new(Default::default())).err().unwrap().to_string();
        assert!(e.contains("missing 93 tensor(s)") && e.contains("self_attn.q_norm.weight"), "{e}");
        let r = reaches(&c, &layer_types(&a), a.sliding_window).unwrap();
        let g = Reach::Global;
        let w = Reach::Window(512);
        assert_eq!(r, [w, w, g, w, w, g, w]);
    }

    #[test]
    fn bad_layer_types() {
        let c = ModelConfig::parse(
            r#"{"model_type":"gemma3_text","num_hidden_layers":2,"layer_types":["x","y"],"hidden_size":8,
                "intermediate_size":8,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":4,"vocab_size":10}"#,
            "c",
        )
        .unwrap();
        let e = build(&c, WeightMap::new(Default::default())).err().unwrap().to_string();
        assert!(e.contains("layer type \"x\""), "{e}");
    }
}
