//! Qwen2 (and Qwen2.5): the Llama block with biases on the query, key and value projections.

use super::llama::{Model, Variant};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::WeightMap;

/// Builds a Qwen2 model from its checkpoint.
pub fn build(config: &ModelConfig, weights: WeightMap) -> Result<Model> {
    Model::build_variant(config, weights, Variant { qkv_bias: true, ..Variant::default() })
}
