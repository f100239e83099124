//! Mixtral: the Llama block with its MLP replaced by a sparse mixture of experts
//! (`block_sparse_moe`: a router over `num_local_experts` SwiGLU experts, `num_experts_per_tok`
//! of them per token, their probabilities renormalized over the chosen ones).

use super::llama::{Model, MoeStyle, Variant};
use crate::config::ModelConfig;
use crate::error::Result;
use crate::weights::WeightMap;

/// Builds a Mixtral model from its checkpoint (Hugging Face per-expert or mlx-lm stacked
/// `switch_mlp` layout).
pub fn build(config: &ModelConfig, weights: WeightMap) -> Result<Model> {
    Model::build_variant(config, weights, Variant { moe: Some(MoeStyle::Mixtral), ..Variant::default() })
}
