//! The architectures, one file each, and the registry that picks one by `model_type`.
//!
//! A model takes token ids `[B, L]` and per-layer [`KvCache`]s and returns logits `[B, L, V]`.
//! It is built from checkpoint tensors through a [`WeightMap`], so a checkpoint that does not
//! fit is reported tensor by tensor, and it is a ferrox-nn [`Module`], so its parameters can be
//! listed, replaced (LoRA, quantization) and saved under their checkpoint names.

pub mod attention;
pub mod gemma2;
pub mod gemma3;
pub(crate) mod layers;
pub mod llama;
pub mod mixtral;
pub mod moe;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_moe;

use ferrox::{self as fx, Array};
use ferrox_nn::layers::{Rope, RopeScaling};
use ferrox_nn::Module;

use crate::cache::{make_prompt_cache, KvCache};
use crate::config::{ModelConfig, RopeConfig};
use crate::error::{Error, Result};
use crate::quant::QuantConfig;
use crate::weights::WeightMap;

/// A causal language model.
pub trait LanguageModel: Module + Send + Sync {
    /// Logits for token ids `[B, L]` (int32): `[B, L, vocab]`, or `[B, 1, vocab]` for the last
    /// position only (`which`), the final norm and output head then run on that position alone
    /// (a prompt's other positions need only what they leave in the caches). With caches (one
    /// per layer), the ids continue what the caches hold and are appended to them; without,
    /// they are the whole sequence.
    fn forward_logits(&self, ids: &Array, cache: Option<&mut [KvCache]>, which: Logits) -> Result<Array>;

    /// Logits `[B, L, vocab]` of every position ([`LanguageModel::forward_logits`]).
    fn forward(&self, ids: &Array, cache: Option<&mut [KvCache]>) -> Result<Array> {
        self.forward_logits(ids, cache, Logits::All)
    }

    /// The number of layers (and caches).
    fn num_layers(&self) -> usize;

    /// A sequence length past which this model computes every position differently, from the
    /// first on (LongRoPE switches from its short to its long factors), or `None`. A sequence
    /// that grows past it must be run again from its start, as transformers does; prefill and
    /// generation see to that ([`crate::generate::prefill`]).
    fn switch_length(&self) -> Option<usize> {
        None
    }

    /// Whether a decode step can be recorded and replayed (the `decode_graph` module): the
    /// model takes rope's position from [`KvCache::rope_offset`] and its mask from
    /// [`KvCache::mask`], so nothing in its step depends on the position on the host.
    fn replays_decode(&self) -> bool {
        false
    }

    /// Joins, for inference, the projections of each block that read the same input — q/k/v,
    /// and gate/up of a dense MLP — into one matrix product each (ferrox-nn's
    /// [`ferrox_nn::layers::FusedLinear`]), so a block runs 2 products where it ran 5: each
    /// product costs a launch (GPU) or a fixed set-up (CPU) whatever its size, which dominates a
    /// one-token decode step of a small model. The parts keep their names and hold views of
    /// the joined weights, so parameters, saving and layer replacement are as before (a part
    /// replaced afterwards makes its block run unfused again). Projections that cannot be
    /// joined (quantized differently, say) stay separate. Returns the number of groups joined;
    /// the default joins nothing (Phi-3's checkpoints already store `qkv_proj` / `gate_up_proj`).
    fn fuse_projections(&mut self) -> Result<usize> {
        Ok(0)
    }

    /// Fresh caches for this model: rotating ones of `max_kv_size` positions if given.
    fn make_cache(&self, max_kv_size: Option<usize>) -> Vec<KvCache> {
        make_prompt_cache(self.num_layers(), max_kv_size)
    }
}

/// Which positions a forward pass computes logits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every position.
    All,
    /// The last position only.
    Last,
}

impl Logits {
    /// The positions of hidden states `h` `[B, L, hidden]` the output head takes.
    pub fn pick(self, h: &Array) -> Result<Array> {
        let l = h.shape()[1] as isize;
        Ok(match self {
            Logits::All => h.clone(),
            Logits::Last => fx::slice_axis(h, 1, l - 1, l)?,
        })
    }
}

/// The `model_type`s ferrox can load.
pub const SUPPORTED: &[&str] =
    &["llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3", "gemma3_text", "phi3"];

/// Builds the architecture `config` names from checkpoint `weights`; every tensor must be used
/// and have its expected shape. Layers are built quantized where config.json's quantization
/// section and the checkpoint say so (`models/layers.rs`).
pub fn build(config: &ModelConfig, mut weights: WeightMap) -> Result<Box<dyn LanguageModel>> {
    weights.set_quantization(QuantConfig::from_config(config)?);
    match config.model_type.as_str() {
        "llama" | "mistral" => Ok(Box::new(llama::Model::build(config, weights)?)),
        "qwen2" => Ok(Box::new(qwen2::build(config, weights)?)),
        "qwen3" => Ok(Box::new(qwen3::build(config, weights)?)),
        "mixtral" => Ok(Box::new(mixtral::build(config, weights)?)),
        "qwen3_moe" => Ok(Box::new(qwen3_moe::build(config, weights)?)),
        "gemma2" => Ok(Box::new(gemma2::build(config, weights)?)),
        "gemma3" | "gemma3_text" => Ok(Box::new(gemma3::build(config, weights)?)),
        "phi3" => Ok(Box::new(phi3::build(config, weights)?)),
        other => Err(Error::UnsupportedModel { model_type: other.to_string(), supported: SUPPORTED.to_vec() }),
    }
}

/// The rotary embedding a config describes, over `dims` features.
pub(crate) fn rope_layer(
    config: &ModelConfig,
    rope: &RopeConfig,
    dims: usize,
    traditional: bool,
    max_position_embeddings: usize,
) -> Result<Rope> {
    let scaling = RopeScaling::from_config(&rope.scaling).map_err(|e| Error::config(&config.path, e))?;
    Ok(Rope::from_scaling(dims, rope.theta as f32, traditional, &scaling, max_position_embeddings)?)
}
