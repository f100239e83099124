//! Llama (2, 3, 3.1, 3.2) and Mistral: pre-norm decoder blocks of grouped-query attention with
//! rotary embeddings (Llama 3 frequency scaling included) and a SwiGLU MLP; the output head
//! may be tied to the embeddings. Qwen2, Qwen3, Mixtral and Qwen3-MoE are this block with
//! small changes ([`Variant`]; the mixtures of experts replace the MLP with a
//! [`SparseMoe`]), built from their own files.

use ferrox::fast::{RopeOffset, SdpaMask};
use ferrox::{self as fx, Array};
use ferrox_nn::layers::activations::swiglu;
use ferrox_nn::layers::{AnyEmbedding, AnyLinear, FusedLinear, RmsNorm, Rope};
use ferrox_nn::Module;
use serde::Deserialize;

use super::layers::fuse_into;
use super::moe::{load_sparse_moe, SparseMoe, MIXTRAL_EXPERTS, QWEN_EXPERTS};
use super::{rope_layer, LanguageModel, Logits};
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// The config.json fields Llama reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Args {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest trained context (used by dynamic rope scaling).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Biases on q/k/v/o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Whether the output head reuses the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Experts of a sparse block (Mixtral's name).
    #[serde(default)]
    pub num_local_experts: Option<usize>,
    /// Experts of a sparse block (Qwen3-MoE's name).
    #[serde(default)]
    pub num_experts: Option<usize>,
    /// Experts routed to per token.
    #[serde(default)]
    pub num_experts_per_tok: Option<usize>,
    /// Width of each expert's MLP (Qwen3-MoE; Mixtral's experts use intermediate_size).
    #[serde(default)]
    pub moe_intermediate_size: Option<usize>,
    /// Every this many layers is sparse (Qwen3-MoE).
    #[serde(default = "one")]
    pub decoder_sparse_step: usize,
    /// Layers that keep a dense MLP (Qwen3-MoE).
    #[serde(default)]
    pub mlp_only_layers: Vec<usize>,
    /// Renormalize the chosen experts' probabilities (Qwen3-MoE; Mixtral always does).
    #[serde(default)]
    pub norm_topk_prob: bool,
}

fn one() -> usize {
    1
}

fn default_max_positions() -> usize {
    4096
}

/// Where a Llama-family architecture departs from Llama.
#[derive(Clone, Copy, Debug, Default)]
pub struct Variant {
    /// Biases on q/k/v whatever `attention_bias` says (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm over each head's queries and keys before the rotation (Qwen3).
    pub qk_norm: bool,
    /// Sparse mixture-of-experts blocks, and whose.
    pub moe: Option<MoeStyle>,
}

/// Which family's mixture of experts a model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoeStyle {
    /// Every layer sparse, under `block_sparse_moe`, experts `w1`/`w3`/`w2`, probabilities
    /// always renormalized over the chosen experts.
    Mixtral,
    /// Sparse layers under `mlp` (every `decoder_sparse_step`-th, except `mlp_only_layers`),
    /// Qwen expert names, renormalized when `norm_topk_prob`.
    Qwen3,
}

/// Attention with rotary embeddings over grouped key/value heads.
#[derive(Module, Clone, Debug)]
pub struct Attention {
    q_proj: AnyLinear,
    k_proj: AnyLinear,
    v_proj: AnyLinear,
    o_proj: AnyLinear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    #[module(skip)]
    rope: Rope,
    #[module(skip)]
    heads: (usize, usize, usize),
    /// q/k/v as one product, once [`LanguageModel::fuse_projections`] joined them.
    #[module(skip)]
    qkv: Option<FusedLinear>,
}

/// The SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Clone, Debug)]
pub struct Mlp {
    gate_proj: AnyLinear,
    up_proj: AnyLinear,
    down_proj: AnyLinear,
    /// gate/up as one product, once [`LanguageModel::fuse_projections`] joined them.
    #[module(skip)]
    gate_up: Option<FusedLinear>,
}

/// The feed-forward part of a block under the name `mlp`: dense, or sparse (Qwen3-MoE).
#[derive(Module, Clone, Debug)]
pub enum FeedForward {
    /// The SwiGLU MLP.
    Dense(Mlp),
    /// A mixture of experts.
    Sparse(SparseMoe),
}

/// One pre-norm decoder block.
#[derive(Module, Clone, Debug)]
pub struct Block {
    self_attn: Attention,
    mlp: Option<FeedForward>,
    /// Mixtral's name for its sparse feed-forward block.
    block_sparse_moe: Option<SparseMoe>,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

/// The embedding, the blocks and the final norm (`model.*` in checkpoints).
#[derive(Module, Clone, Debug)]
pub struct Backbone {
    embed_tokens: AnyEmbedding,
    layers: Vec<Block>,
    norm: RmsNorm,
}

/// A Llama-family causal language model.
#[derive(Module, Clone, Debug)]
pub struct Model {
    model: Backbone,
    /// The output head, unless tied to the embeddings.
    lm_head: Option<AnyLinear>,
}

pub(crate) use super::layers::{embedding, linear};

fn norm(w: &mut WeightMap, name: &str, dims: usize, eps: f32) -> Result<RmsNorm> {
    let mut n = RmsNorm::new(dims, eps)?;
    n.weight = w.take(&format!("{name}.weight"), &[dims])?;
    Ok(n)
}

impl Model {
    /// Builds the model `config` describes from checkpoint tensors (Hugging Face or mlx-lm
    /// names; rotary `inv_freq` buffers and a tied duplicate `lm_head.weight` are ignored).
    pub fn build(config: &ModelConfig, w: WeightMap) -> Result<Model> {
        Model::build_variant(config, w, Variant::default())
    }

    /// [`Model::build`] for a Llama-family architecture that differs by `variant`.
    pub fn build_variant(config: &ModelConfig, mut w: WeightMap, variant: Variant) -> Result<Model> {
        let a: Args = config.args()?;
        let heads = a.num_attention_heads;
        let kv_heads = a.num_key_value_heads.unwrap_or(heads);
        if heads == 0
            || kv_heads == 0
            || (!a.hidden_size.is_multiple_of(heads) && a.head_dim.is_none())
            || !heads.is_multiple_of(kv_heads)
        {
            return Err(Error::config(
                &config.path,
                format!(
                    "{heads} attention heads, {kv_heads} key/value heads and hidden_size {} do not fit",
                    a.hidden_size
                ),
            ));
        }
        let hd = a.head_dim.unwrap_or(a.hidden_size / heads);
        let rope = rope_layer(config, &config.rope()?, hd, false, a.max_position_embeddings)?;
        let names: Vec<String> = w.names().filter(|n| n.ends_with("rotary_emb.inv_freq")).map(str::to_string).collect();
        for n in names {
            w.remove(&n);
        }
        if a.tie_word_embeddings {
            w.remove("lm_head.weight");
        }
        let (h, i, eps) = (a.hidden_size, a.intermediate_size, a.rms_norm_eps);
        let moe_size = match variant.moe {
            None => (0, 0),
            Some(_) => {
                let experts = a.num_local_experts.or(a.num_experts).unwrap_or(0);
                (experts, a.num_experts_per_tok.unwrap_or(0))
            }
        };
        if a.decoder_sparse_step == 0 {
            return Err(Error::config(&config.path, "decoder_sparse_step must be at least 1"));
        }
        let mut layers = Vec::with_capacity(a.num_hidden_layers);
        for l in 0..a.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let (ab, mb) = (a.attention_bias, a.mlp_bias);
            let qkv = ab || variant.qkv_bias;
            let head_norm = |w: &mut WeightMap, name: &str| -> Result<Option<RmsNorm>> {
                if variant.qk_norm {
                    norm(w, &format!("{p}.self_attn.{name}"), hd, eps).map(Some)
                } else {
                    Ok(None)
                }
            };
            let dense = |w: &mut WeightMap| -> Result<Mlp> {
                Ok(Mlp {
                    gate_proj: linear(w, &format!("{p}.mlp.gate_proj"), i, h, mb)?,
                    up_proj: linear(w, &format!("{p}.mlp.up_proj"), i, h, mb)?,
                    down_proj: linear(w, &format!("{p}.mlp.down_proj"), h, i, mb)?,
                    gate_up: None,
                })
            };
            let (mlp, block_sparse_moe) = match variant.moe {
                None => (Some(FeedForward::Dense(dense(&mut w)?)), None),
                Some(MoeStyle::Mixtral) => {
                    let name = format!("{p}.block_sparse_moe");
                    (None, Some(load_sparse_moe(&mut w, &name, MIXTRAL_EXPERTS, moe_size, (h, i), true)?))
                }
                Some(MoeStyle::Qwen3) if !a.mlp_only_layers.contains(&l) && (l + 1) % a.decoder_sparse_step == 0 => {
                    let inter = a.moe_intermediate_size.unwrap_or(i);
                    let sparse = load_sparse_moe(
                        &mut w,
                        &format!("{p}.mlp"),
                        QWEN_EXPERTS,
                        moe_size,
                        (h, inter),
                        a.norm_topk_prob,
                    )?;
                    (Some(FeedForward::Sparse(sparse)), None)
                }
                Some(MoeStyle::Qwen3) => (Some(FeedForward::Dense(dense(&mut w)?)), None),
            };
            layers.push(Block {
                mlp,
                block_sparse_moe,
                self_attn: Attention {
                    q_proj: linear(&mut w, &format!("{p}.self_attn.q_proj"), heads * hd, h, qkv)?,
                    k_proj: linear(&mut w, &format!("{p}.self_attn.k_proj"), kv_heads * hd, h, qkv)?,
                    v_proj: linear(&mut w, &format!("{p}.self_attn.v_proj"), kv_heads * hd, h, qkv)?,
                    o_proj: linear(&mut w, &format!("{p}.self_attn.o_proj"), h, heads * hd, ab)?,
                    q_norm: head_norm(&mut w, "q_norm")?,
                    k_norm: head_norm(&mut w, "k_norm")?,
                    rope: rope.clone(),
                    heads: (heads, kv_heads, hd),
                    qkv: None,
                },
                input_layernorm: norm(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
                post_attention_layernorm: norm(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
            });
        }
        let embed_tokens = embedding(&mut w, "model.embed_tokens", a.vocab_size, h)?;
        let norm = norm(&mut w, "model.norm", h, eps)?;
        let lm_head =
            if a.tie_word_embeddings { None } else { Some(linear(&mut w, "lm_head", a.vocab_size, h, false)?) };
        w.finish()?;
        Ok(Model { model: Backbone { embed_tokens, layers, norm }, lm_head })
    }
}

impl Attention {
    /// `residual` + the attention output of `x` (the residual joins the output projection).
    fn forward(&self, x: &Array, mask: &SdpaMask, cache: Option<&mut KvCache>, residual: &Array) -> Result<Array> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let (heads, kv_heads, hd) = self.heads;
        let offset = cache.as_ref().map_or(RopeOffset::Int(0), |c| c.rope_offset());
        let (q, k, v) = match self.joined_heads(x)? {
            // q, k and v as heads of one output: one rope call turns q's and k's heads.
            Some(y) => {
                let heads_of = |a: &Array, from: usize, to: usize| fx::slice_axis(a, 1, from as isize, to as isize);
                let qk = self.rope.forward(&heads_of(&y, 0, heads + kv_heads)?, offset)?;
                (
                    heads_of(&qk, 0, heads)?,
                    heads_of(&qk, heads, heads + kv_heads)?,
                    heads_of(&y, heads + kv_heads, heads + 2 * kv_heads)?,
                )
            }
            None => {
                let split = |y: Array, n: usize, norm: Option<&RmsNorm>| -> Result<Array> {
                    let mut y = fx::reshape_usize(&y, &[b, l, n, hd])?;
                    if let Some(norm) = norm {
                        y = norm.forward(&y)?;
                    }
                    Ok(fx::transpose(&y, &[0, 2, 1, 3])?)
                };
                let [q, k, v] = FusedLinear::project(self.qkv.as_ref(), [&self.q_proj, &self.k_proj, &self.v_proj], x)?;
                let q = split(q, heads, self.q_norm.as_ref())?;
                let k = split(k, kv_heads, self.k_norm.as_ref())?;
                let v = split(v, kv_heads, None)?;
                (self.rope.forward(&q, offset.clone())?, self.rope.forward(&k, offset)?, v)
            }
        };
        let (k, v) = match cache {
            Some(c) => c.update_and_fetch(&k, &v)?,
            None => (k, v),
        };
        let o = fx::fast::scaled_dot_product_attention(&q, &k, &v, (hd as f32).powf(-0.5), mask.clone())?;
        let o = fx::reshape_usize(&fx::transpose(&o, &[0, 2, 1, 3])?, &[b, l, heads * hd])?;
        Ok(self.o_proj.forward_add(&o, residual)?)
    }

    /// The joined q/k/v product of `x` as heads `[B, q heads + 2 · kv heads, L, head dim]` (a
    /// view), when the projections are fused and q and k have no norms between product and rope.
    fn joined_heads(&self, x: &Array) -> Result<Option<Array>> {
        let Some(f) = &self.qkv else { return Ok(None) };
        if self.q_norm.is_some() || self.k_norm.is_some() || !f.is_current(&[&self.q_proj, &self.k_proj, &self.v_proj])
        {
            return Ok(None);
        }
        let (heads, kv_heads, hd) = self.heads;
        let y = f.joined().forward(x)?;
        let y = fx::reshape_usize(&y, &[x.shape()[0], x.shape()[1], heads + 2 * kv_heads, hd])?;
        Ok(Some(fx::transpose(&y, &[0, 2, 1, 3])?))
    }

    /// Joins q/k/v into one product; whether they could be joined.
    fn fuse(&mut self) -> Result<bool> {
        fuse_into(&mut self.qkv, [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj])
    }
}

impl Mlp {
    /// `residual` + the block's output for `x` (the residual joins the down projection).
    fn forward_add(&self, x: &Array, residual: &Array) -> Result<Array> {
        let [gate, up] = FusedLinear::project(self.gate_up.as_ref(), [&self.gate_proj, &self.up_proj], x)?;
        Ok(self.down_proj.forward_add(&swiglu(&gate, &up)?, residual)?)
    }

    /// Joins gate/up into one product; whether they could be joined.
    fn fuse(&mut self) -> Result<bool> {
        fuse_into(&mut self.gate_up, [&mut self.gate_proj, &mut self.up_proj])
    }
}

impl Block {
    fn forward(&self, x: &Array, mask: &SdpaMask, cache: Option<&mut KvCache>) -> Result<Array> {
        let h = self.self_attn.forward(&self.input_layernorm.forward(x)?, mask, cache, x)?;
        let n = self.post_attention_layernorm.forward(&h)?;
        match (&self.mlp, &self.block_sparse_moe) {
            (Some(FeedForward::Dense(m)), _) => m.forward_add(&n, &h),
            (Some(FeedForward::Sparse(m)), _) | (None, Some(m)) => Ok(fx::add(&h, &m.forward(&n)?)?),
            (None, None) => Err(Error::Invalid("a decoder block without a feed-forward part".into())),
        }
    }
}

impl LanguageModel for Model {
    fn forward_logits(&self, ids: &Array, mut cache: Option<&mut [KvCache]>, which: Logits) -> Result<Array> {
        if ids.ndim() != 2 {
            return Err(Error::Invalid(format!("model input must be token ids [B, L], got shape {:?}", ids.shape())));
        }
        let l = ids.shape()[1];
        let mut h = self.model.embed_tokens.forward(ids)?;
        let mask = match cache.as_deref() {
            Some([first, ..]) => first.mask(l, None)?,
            _ if l > 1 => SdpaMask::Causal,
            _ => SdpaMask::None,
        };
        if let Some(c) = cache.as_deref() {
            if c.len() != self.model.layers.len() {
                return Err(Error::Invalid(format!("{} caches for {} layers", c.len(), self.model.layers.len())));
            }
        }
        for (i, layer) in self.model.layers.iter().enumerate() {
            h = layer.forward(&h, &mask, cache.as_deref_mut().map(|c| &mut c[i]))?;
        }
        let h = self.model.norm.forward(&which.pick(&h)?)?;
        Ok(match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.embed_tokens.as_linear(&h)?,
        })
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    fn fuse_projections(&mut self) -> Result<usize> {
        let mut joined = 0;
        for layer in &mut self.model.layers {
            joined += usize::from(layer.self_attn.fuse()?);
            // The experts of a sparse block stay as they are (one gather_mm per projection).
            if let Some(FeedForward::Dense(mlp)) = &mut layer.mlp {
                joined += usize::from(mlp.fuse()?);
            }
        }
        Ok(joined)
    }

    fn replays_decode(&self) -> bool {
        let dense = |b: &Block| matches!(b.mlp, Some(FeedForward::Dense(_))) && b.block_sparse_moe.is_none();
        self.model.layers.iter().all(|b| dense(b) && !b.self_attn.rope.is_dynamic())
    }
}
