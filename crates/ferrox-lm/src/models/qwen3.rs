//! Qwen3: the Llama block with an RMSNorm over each head's queries and keys before the
//! rotation, and an explicit head_dim.

use super::llama::{Model, Variant};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::WeightMap;

/// Builds a Qwen3 model from its checkpoint.
pub fn build(config: &ModelConfig, weights: WeightMap) -> Result<Model> {
    Model::build_variant(config, weights, Variant { qk_norm: true, ..Variant::default() })
}
