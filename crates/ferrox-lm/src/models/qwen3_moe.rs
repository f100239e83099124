//! Qwen3-MoE: the Qwen3 block (q/k norms) whose MLP is, on sparse layers, a mixture of
//! `num_experts` experts of width `moe_intermediate_size`, `num_experts_per_tok` per token.

use super::llama::{Model, MoeStyle, Variant};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::WeightMap;

/// Builds a Qwen3-MoE model from its checkpoint (Hugging Face per-expert or mlx-lm stacked
/// `switch_mlp` layout).
pub fn build(config: &ModelConfig, weights: WeightMap) -> Result<Model> {
    Model::build_variant(config, weights, Variant { qk_norm: true, moe: Some(MoeStyle::Qwen3), ..Variant::default() })
}
