//! Gemma 2, and the Gemma decoder Gemma 3 shares ([`Spec`]): embeddings scaled by
//! √hidden, RMSNorms that scale by `1 + weight`, a norm before and after both the attention and
//! the GELU-tanh gated MLP, attention scaled by `query_pre_attn_scalar^-½` with optionally
//! soft-capped scores, sliding-window layers between global ones (each with its own cache),
//! tied embeddings and optionally soft-capped logits.

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array, Dtype};
use ferrox_nn::layers::activations::{gelu, gelu_approx};
use ferrox_nn::layers::{AnyEmbedding, AnyLinear, FusedLinear, Rope};
use ferrox_nn::{Module, ModuleState};
use serde::Deserialize;

use super::attention::{attention, layer_masks, Reach};
use super::layers::fuse_into;
use super::llama::{embedding, linear};
use super::{rope_layer, LanguageModel, Logits};
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// The config.json fields Gemma 2 reads, with transformers' defaults.
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
    /// Attention scores are scaled by `query_pre_attn_scalar^-½` (not `head_dim^-½`).
    #[serde(default = "d_query_scalar")]
    pub query_pre_attn_scalar: f32,
    /// Window of the sliding-window layers (`null`: every layer is global).
    #[serde(default = "d_window")]
    pub sliding_window: Option<usize>,
    /// `sliding_attention` or `full_attention` per layer; by default they alternate, starting
    /// with a sliding one.
    #[serde(default)]
    pub layer_types: Option<Vec<String>>,
    /// Attention scores become `cap · tanh(scores / cap)`.
    #[serde(default = "d_attn_cap")]
    pub attn_logit_softcapping: Option<f32>,
    /// Output logits become `cap · tanh(logits / cap)`.
    #[serde(default = "d_final_cap")]
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
    256000
}
fn d_max_positions() -> usize {
    8192
}
fn d_query_scalar() -> f32 {
    256.0
}
fn d_window() -> Option<usize> {
    Some(4096)
}
fn d_attn_cap() -> Option<f32> {
    Some(50.0)
}
fn d_final_cap() -> Option<f32> {
    Some(30.0)
}
fn d_true() -> bool {
    true
}
fn d_act() -> String {
    "gelu_pytorch_tanh".into()
}

/// A Gemma-family model's shape and settings, as gemma2.rs and gemma3.rs read them from their
/// configs. Checkpoint tensors are named `model.*` and `lm_head.weight`.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// The attention scale, `query_pre_attn_scalar^-½`.
    pub scale: f32,
    /// Attention score soft-capping.
    pub attn_softcap: Option<f32>,
    /// Output logit soft-capping.
    pub final_softcap: Option<f32>,
    /// Biases on the attention projections.
    pub attention_bias: bool,
    /// RMSNorm over each head's queries and keys before the rotation (Gemma 3).
    pub qk_norm: bool,
    /// The exact GELU instead of its tanh approximation.
    pub exact_gelu: bool,
    /// Whether the output head reuses the embedding table.
    pub tie_word_embeddings: bool,
    /// Each layer's reach and rotary embedding.
    pub layers: Vec<(Reach, Rope)>,
}

/// Gemma's RMSNorm: `x / rms(x) · (1 + weight)`, computed in float32 and cast back to the
/// input's dtype (promoted with the weight's); `weight` is the checkpoint's, zeros being the
/// identity.
#[derive(Module, Clone, Debug)]
pub struct GemmaNorm {
    weight: Array,
    #[module(skip)]
    eps: f32,
    state: ModuleState,
}

impl GemmaNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        let scale = fx::add(&fx::astype(&self.weight, Dtype::F32)?, 1.0)?;
        // The promoted dtype of x and the weight (as mlx-lm): the same as x's in a model of one
        // dtype, float32 for the bfloat16 rows of an fp-quantized embedding in a float32 model.
        let dtype = fx::promote_types(x.dtype(), self.weight.dtype());
        Ok(fx::astype(&fx::fast::rms_norm(x, Some(&scale), self.eps)?, dtype)?)
    }
}

/// Attention with rotary embeddings over grouped key/value heads, a window or not.
#[derive(Module, Clone, Debug)]
pub struct Attention {
    q_proj: AnyLinear,
    k_proj: AnyLinear,
    v_proj: AnyLinear,
    o_proj: AnyLinear,
    q_norm: Option<GemmaNorm>,
    k_norm: Option<GemmaNorm>,
    #[module(skip)]
    rope: Rope,
    #[module(skip)]
    heads: (usize, usize, usize),
    #[module(skip)]
    scale: f32,
    #[module(skip)]
    softcap: Option<f32>,
    /// q/k/v as one product, once [`LanguageModel::fuse_projections`] joined them.
    #[module(skip)]
    qkv: Option<FusedLinear>,
}

/// The gated MLP: `down(gelu(gate(x)) * up(x))`.
#[derive(Module, Clone, Debug)]
pub struct Mlp {
    gate_proj: AnyLinear,
    up_proj: AnyLinear,
    down_proj: AnyLinear,
    #[module(skip)]
    exact_gelu: bool,
    /// gate/up as one product, once [`LanguageModel::fuse_projections`] joined them.
    #[module(skip)]
    gate_up: Option<FusedLinear>,
}

/// One decoder block: normed attention and MLP, each normed again before the residual add.
#[derive(Module, Clone, Debug)]
pub struct Block {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: GemmaNorm,
    post_attention_layernorm: GemmaNorm,
    pre_feedforward_layernorm: GemmaNorm,
    post_feedforward_layernorm: GemmaNorm,
}

/// The embedding, the blocks and the final norm (`model.*` in checkpoints).
#[derive(Module, Clone, Debug)]
pub struct Backbone {
    embed_tokens: AnyEmbedding,
    layers: Vec<Block>,
    norm: GemmaNorm,
}

/// A Gemma-family causal language model.
#[derive(Module, Clone, Debug)]
pub struct Model {
    model: Backbone,
    /// The output head, unless tied to the embeddings.
    lm_head: Option<AnyLinear>,
    #[module(skip)]
    reaches: Vec<Reach>,
    #[module(skip)]
    final_softcap: Option<f32>,
}

/// `sliding_attention` / `full_attention` per layer as reaches; `window` `None` makes every
/// layer global.
pub(crate) fn reaches(config: &ModelConfig, types: &[String], window: Option<usize>) -> Result<Vec<Reach>> {
    types
        .iter()
        .map(|t| match (t.as_str(), window) {
            ("sliding_attention", Some(w)) if w > 0 => Ok(Reach::Window(w)),
            ("sliding_attention", Some(_)) => Err(Error::config(&config.path, "sliding_window must be at least 1")),
            ("sliding_attention", None) | ("full_attention", _) => Ok(Reach::Global),
            (other, _) => Err(Error::config(
                &config.path,
                format!("layer type {other:?} is not supported (sliding_attention, full_attention)"),
            )),
        })
        .collect()
}

/// `cap · tanh(x / cap)`.
fn softcap(x: &Array, cap: f32) -> Result<Array> {
    Ok(fx::multiply(&fx::tanh(&fx::divide(x, cap)?)?, cap)?)
}

fn gemma_norm(w: &mut WeightMap, name: &str, dims: usize, eps: f32) -> Result<GemmaNorm> {
    Ok(GemmaNorm { weight: w.take(&format!("{name}.weight"), &[dims])?, eps, state: ModuleState::new() })
}

/// Builds a Gemma 2 model from its checkpoint.
pub fn build(config: &ModelConfig, weights: WeightMap) -> Result<Model> {
    let a: Args = config.args()?;
    let types = a.layer_types.clone().unwrap_or_else(|| {
        (0..a.num_hidden_layers)
            .map(|i| if i % 2 == 0 { "sliding_attention" } else { "full_attention" }.to_string())
            .collect()
    });
    let rope = rope_layer(config, &config.rope()?, a.head_dim, false, a.max_position_embeddings)?;
    let layers = reaches(config, &types, a.sliding_window)?.into_iter().map(|r| (r, rope.clone())).collect();
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
        qk_norm: false,
        exact_gelu: exact_gelu(config, &a.hidden_activation)?,
        tie_word_embeddings: a.tie_word_embeddings,
        layers,
    };
    Model::build_spec(config, &spec, weights, a.num_hidden_layers)
}

/// Whether the activation named is the exact GELU (`gelu`) rather than the tanh approximation
/// (`gelu_pytorch_tanh`, `gelu_new`, `gelu_fast` are all that).
pub(crate) fn exact_gelu(config: &ModelConfig, name: &str) -> Result<bool> {
    match name {
        "gelu" => Ok(true),
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(false),
        other => Err(Error::config(&config.path, format!("hidden_activation {other:?} is not supported"))),
    }
}

impl Model {
    /// Builds the model `spec` describes from checkpoint tensors named `model.*` (rotary
    /// `inv_freq` buffers and a tied duplicate `lm_head.weight` are ignored); `layers` is the
    /// config's layer count, which `spec.layers` must match.
    pub fn build_spec(config: &ModelConfig, s: &Spec, mut w: WeightMap, layers: usize) -> Result<Model> {
        let (h, hd, heads, kv_heads) = (s.hidden_size, s.head_dim, s.num_heads, s.num_kv_heads);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || s.layers.len() != layers {
            return Err(Error::config(
                &config.path,
                format!(
                    "{heads} attention heads, {kv_heads} key/value heads and {} layer types for {layers} layers \
                     do not fit",
                    s.layers.len()
                ),
            ));
        }
        let names: Vec<String> = w.names().filter(|n| n.ends_with("rotary_emb.inv_freq")).map(str::to_string).collect();
        for n in names {
            w.remove(&n);
        }
        if s.tie_word_embeddings {
            w.remove("lm_head.weight");
        }
        let (i, eps, bias) = (s.intermediate_size, s.eps, s.attention_bias);
        let mut blocks = Vec::with_capacity(layers);
        for (l, (_, rope)) in s.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let head_norm = |w: &mut WeightMap, name: &str| -> Result<Option<GemmaNorm>> {
                if s.qk_norm {
                    gemma_norm(w, &format!("{p}.self_attn.{name}"), hd, eps).map(Some)
                } else {
                    Ok(None)
                }
            };
            blocks.push(Block {
                self_attn: Attention {
                    q_proj: linear(&mut w, &format!("{p}.self_attn.q_proj"), heads * hd, h, bias)?,
                    k_proj: linear(&mut w, &format!("{p}.self_attn.k_proj"), kv_heads * hd, h, bias)?,
                    v_proj: linear(&mut w, &format!("{p}.self_attn.v_proj"), kv_heads * hd, h, bias)?,
                    o_proj: linear(&mut w, &format!("{p}.self_attn.o_proj"), h, heads * hd, bias)?,
                    q_norm: head_norm(&mut w, "q_norm")?,
                    k_norm: head_norm(&mut w, "k_norm")?,
                    rope: rope.clone(),
                    heads: (heads, kv_heads, hd),
                    scale: s.scale,
                    softcap: s.attn_softcap,
                    qkv: None,
                },
                mlp: Mlp {
                    gate_proj: linear(&mut w, &format!("{p}.mlp.gate_proj"), i, h, false)?,
                    up_proj: linear(&mut w, &format!("{p}.mlp.up_proj"), i, h, false)?,
                    down_proj: linear(&mut w, &format!("{p}.mlp.down_proj"), h, i, false)?,
                    exact_gelu: s.exact_gelu,
                    gate_up: None,
                },
                input_layernorm: gemma_norm(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
                post_attention_layernorm: gemma_norm(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
                pre_feedforward_layernorm: gemma_norm(&mut w, &format!("{p}.pre_feedforward_layernorm"), h, eps)?,
                post_feedforward_layernorm: gemma_norm(&mut w, &format!("{p}.post_feedforward_layernorm"), h, eps)?,
            });
        }
        let embed_tokens = embedding(&mut w, "model.embed_tokens", s.vocab_size, h)?;
        let norm = gemma_norm(&mut w, "model.norm", h, eps)?;
        let lm_head =
            if s.tie_word_embeddings { None } else { Some(linear(&mut w, "lm_head", s.vocab_size, h, false)?) };
        w.finish()?;
        Ok(Model {
            model: Backbone { embed_tokens, layers: blocks, norm },
            lm_head,
            reaches: s.layers.iter().map(|(r, _)| *r).collect(),
            final_softcap: s.final_softcap,
        })
    }
}

impl Attention {
    fn forward(&self, x: &Array, mask: &SdpaMask, cache: Option<&mut KvCache>) -> Result<Array> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let (heads, kv_heads, hd) = self.heads;
        let split = |y: Array, n: usize, norm: Option<&GemmaNorm>| -> Result<Array> {
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
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let q = self.rope.forward(&q, offset)?;
        let k = self.rope.forward(&k, offset)?;
        let (k, v) = match cache {
            Some(c) => c.update_and_fetch(&k, &v)?,
            None => (k, v),
        };
        let o = attention(&q, &k, &v, self.scale, self.softcap, mask)?;
        let o = fx::reshape_usize(&fx::transpose(&o, &[0, 2, 1, 3])?, &[b, l, heads * hd])?;
        Ok(self.o_proj.forward(&o)?)
    }

    /// Joins q/k/v into one product; whether they could be joined.
    fn fuse(&mut self) -> Result<bool> {
        fuse_into(&mut self.qkv, [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj])
    }
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let [g, up] = FusedLinear::project(self.gate_up.as_ref(), [&self.gate_proj, &self.up_proj], x)?;
        let act = if self.exact_gelu { gelu(&g)? } else { gelu_approx(&g)? };
        Ok(self.down_proj.forward(&fx::multiply(&act, &up)?)?)
    }

    /// Joins gate/up into one product; whether they could be joined.
    fn fuse(&mut self) -> Result<bool> {
        fuse_into(&mut self.gate_up, [&mut self.gate_proj, &mut self.up_proj])
    }
}

impl Block {
    fn forward(&self, x: &Array, mask: &SdpaMask, cache: Option<&mut KvCache>) -> Result<Array> {
        let a = self.self_attn.forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = fx::add(x, &self.post_attention_layernorm.forward(&a)?)?;
        let m = self.mlp.forward(&self.pre_feedforward_layernorm.forward(&h)?)?;
        Ok(fx::add(&h, &self.post_feedforward_layernorm.forward(&m)?)?)
    }
}

impl LanguageModel for Model {
    fn forward_logits(&self, ids: &Array, mut cache: Option<&mut [KvCache]>, which: Logits) -> Result<Array> {
        if ids.ndim() != 2 {
            return Err(Error::Invalid(format!("model input must be token ids [B, L], got shape {:?}", ids.shape())));
        }
        let masks = layer_masks(&self.reaches, ids.shape()[1], cache.as_deref())?;
        let emb = self.model.embed_tokens.forward(ids)?;
        // √hidden in the embeddings' dtype, as transformers rounds it.
        let scale = fx::astype(&Array::from_vec(vec![(emb.shape()[2] as f32).sqrt()]), emb.dtype())?;
        let mut h = fx::multiply(&emb, &scale)?;
        for (i, layer) in self.model.layers.iter().enumerate() {
            h = layer.forward(&h, &masks[i], cache.as_deref_mut().map(|c| &mut c[i]))?;
        }
        let h = self.model.norm.forward(&which.pick(&h)?)?;
        let logits = match &self.lm_head {
            Some(head) => head.forward(&h)?,
            None => self.model.embed_tokens.as_linear(&h)?,
        };
        match self.final_softcap {
            Some(cap) => softcap(&logits, cap),
            None => Ok(logits),
        }
    }

    fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    fn fuse_projections(&mut self) -> Result<usize> {
        let mut joined = 0;
        for layer in &mut self.model.layers {
            joined += usize::from(layer.self_attn.fuse()?) + usize::from(layer.mlp.fuse()?);
        }
        Ok(joined)
    }

    fn make_cache(&self, max_kv_size: Option<usize>) -> Vec<KvCache> {
        self.reaches.iter().map(|r| r.make_cache(max_kv_size)).collect()
    }
}
