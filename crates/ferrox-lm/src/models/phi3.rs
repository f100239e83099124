//! Phi-3 (and Phi-3.5, Phi-4-mini): the Llama block with the query, key and value projections
//! fused into one `qkv_proj` and the MLP's gate and up projections into one `gate_up_proj`;
//! rotary embeddings over all or part of each head, with LongRoPE ("su") scaling: short
//! factors while the sequence fits the original context, long ones beyond it, and an attention
//! factor on the rotated features. A `sliding_window`, if set, applies to every layer.

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array};
use ferrox_nn::layers::activations::swiglu;
use ferrox_nn::layers::{AnyEmbedding, AnyLinear, RmsNorm, Rope, RopeScaling};
use ferrox_nn::Module;
use serde::Deserialize;
use serde_json::Value;

use super::attention::{layer_masks, Reach};
use super::llama::{embedding, linear};
use super::{rope_layer, LanguageModel, Logits};
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// The config.json fields Phi-3 reads.
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
    /// Key/value heads; defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to hidden_size / num_attention_heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "d_eps")]
    pub rms_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The (stretched) context length.
    #[serde(default = "d_max_positions")]
    pub max_position_embeddings: usize,
    /// The context the model was pre-trained with (LongRoPE switches factors past it).
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
    /// Whether the output head reuses the embedding table.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Every layer attends to at most this many positions.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// The fraction of each head that is rotated (transformers 4 layout; 5 keeps it in
    /// `rope_parameters`).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    /// The MLP's activation (`silu`).
    #[serde(default = "d_act")]
    pub hidden_act: String,
}

fn d_eps() -> f32 {
    1e-5
}
fn d_max_positions() -> usize {
    4096
}
fn d_act() -> String {
    "silu".into()
}

/// Phi-3's rotary embedding: one rope, or LongRoPE's pair, picked by the sequence length.
#[derive(Clone, Debug)]
enum PhiRope {
    /// The same rotation at every length.
    Single(Rope),
    /// `short` while the sequence has at most `original` positions, `long` beyond (as
    /// transformers chooses per forward pass by the last position).
    Long { short: Rope, long: Rope, original: usize },
}

impl PhiRope {
    /// The rope for a forward pass whose last token is at position `end - 1`.
    fn pick(&self, end: usize) -> &Rope {
        match self {
            PhiRope::Single(r) => r,
            PhiRope::Long { short, original, .. } if end <= *original => short,
            PhiRope::Long { long, .. } => long,
        }
    }
}

/// Attention over grouped key/value heads from one fused projection.
#[derive(Module, Clone, Debug)]
pub struct Attention {
    qkv_proj: AnyLinear,
    o_proj: AnyLinear,
    #[module(skip)]
    heads: (usize, usize, usize),
}

/// The SwiGLU MLP from one fused projection: `down(silu(gate) * up)`, `[gate, up] = gate_up(x)`.
#[derive(Module, Clone, Debug)]
pub struct Mlp {
    gate_up_proj: AnyLinear,
    down_proj: AnyLinear,
}

/// One pre-norm decoder block.
#[derive(Module, Clone, Debug)]
pub struct Block {
    self_attn: Attention,
    mlp: Mlp,
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

/// A Phi-3 causal language model.
#[derive(Module, Clone, Debug)]
pub struct Model {
    model: Backbone,
    /// The output head, unless tied to the embeddings.
    lm_head: Option<AnyLinear>,
    #[module(skip)]
    rope: PhiRope,
    #[module(skip)]
    reaches: Vec<Reach>,
}

fn norm(w: &mut WeightMap, name: &str, dims: usize, eps: f32) -> Result<RmsNorm> {
    let mut n = RmsNorm::new(dims, eps)?;
    n.weight = w.take(&format!("{name}.weight"), &[dims])?;
    Ok(n)
}

/// The fraction of each head that is rotated: in `rope_parameters` / `rope_scaling`, or at the
/// top level, else all of it.
fn partial_rotary_factor(config: &ModelConfig, a: &Args) -> f64 {
    ["rope_parameters", "rope_scaling"]
        .iter()
        .find_map(|k| config.raw.get(*k).and_then(|v| v.get("partial_rotary_factor")).and_then(Value::as_f64))
        .or(a.partial_rotary_factor)
        .unwrap_or(1.0)
}

/// The rope `config` asks for over `dims` features.
fn phi_rope(config: &ModelConfig, a: &Args, dims: usize) -> Result<PhiRope> {
    let rope = config.rope()?;
    let kind = rope.scaling.get("rope_type").or_else(|| rope.scaling.get("type")).and_then(Value::as_str);
    // transformers reads "su" and "yarn" as LongRoPE for Phi-3.
    if !matches!(kind, Some("longrope" | "su" | "yarn")) {
        return Ok(PhiRope::Single(rope_layer(config, &rope, dims, false, a.max_position_embeddings)?));
    }
    let bad = |m: String| Error::config(&config.path, m);
    let original = rope
        .scaling
        .get("original_max_position_embeddings")
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .or(a.original_max_position_embeddings)
        .ok_or_else(|| bad("LongRoPE scaling needs original_max_position_embeddings".into()))?;
    let mut object = rope.scaling.clone();
    object["rope_type"] = "longrope".into();
    object["original_max_position_embeddings"] = original.into();
    let (short_factor, long_factor) = match RopeScaling::from_config(&object).map_err(|e| bad(e.to_string()))? {
        RopeScaling::LongRope { short_factor, long_factor, .. } => (short_factor, long_factor),
        other => return Err(bad(format!("expected LongRoPE scaling, read {other:?}"))),
    };
    // The attention factor: given, or from the stretch (`factor`, else the context ratio).
    let stretch =
        object.get("factor").and_then(Value::as_f64).unwrap_or(a.max_position_embeddings as f64 / original as f64);
    let attention_factor = match object.get("attention_factor").and_then(Value::as_f64) {
        Some(f) => f,
        None if stretch <= 1.0 => 1.0,
        None => (1.0 + stretch.ln() / (original as f64).ln()).sqrt(),
    };
    let make = |factors: Vec<f32>| -> Result<Rope> {
        let scaling = RopeScaling::LongRope {
            original_max_position_embeddings: original,
            short_factor: Vec::new(),
            long_factor: factors,
            long_mscale: Some(attention_factor as f32),
        };
        Ok(Rope::from_scaling(dims, rope.theta as f32, false, &scaling, a.max_position_embeddings)?)
    };
    Ok(PhiRope::Long { short: make(short_factor)?, long: make(long_factor)?, original })
}

/// Builds a Phi-3 model from its checkpoint.
pub fn build(config: &ModelConfig, mut w: WeightMap) -> Result<Model> {
    let a: Args = config.args()?;
    let heads = a.num_attention_heads;
    let kv_heads = a.num_key_value_heads.unwrap_or(heads);
    if heads == 0
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || (a.head_dim.is_none() && !a.hidden_size.is_multiple_of(heads))
    {
        return Err(Error::config(
            &config.path,
            format!("{heads} attention heads, {kv_heads} key/value heads and hidden_size {} do not fit", a.hidden_size),
        ));
    }
    if a.hidden_act != "silu" {
        return Err(Error::config(&config.path, format!("hidden_act {:?} is not supported (silu)", a.hidden_act)));
    }
    let hd = a.head_dim.unwrap_or(a.hidden_size / heads);
    let rotated = (hd as f64 * partial_rotary_factor(config, &a)) as usize;
    let rope = phi_rope(config, &a, rotated)?;
    let reach = match a.sliding_window {
        Some(0) => return Err(Error::config(&config.path, "sliding_window must be at least 1")),
        Some(n) => Reach::Window(n),
        None => Reach::Global,
    };
    let names: Vec<String> = w.names().filter(|n| n.ends_with("rotary_emb.inv_freq")).map(str::to_string).collect();
    for n in names {
        w.remove(&n);
    }
    if a.tie_word_embeddings {
        w.remove("lm_head.weight");
    }
    let (h, i, eps) = (a.hidden_size, a.intermediate_size, a.rms_norm_eps);
    let mut layers = Vec::with_capacity(a.num_hidden_layers);
    for l in 0..a.num_hidden_layers {
        let p = format!("model.layers.{l}");
        layers.push(Block {
            self_attn: Attention {
                qkv_proj: linear(&mut w, &format!("{p}.self_attn.qkv_proj"), (heads + 2 * kv_heads) * hd, h, false)?,
                o_proj: linear(&mut w, &format!("{p}.self_attn.o_proj"), h, heads * hd, false)?,
                heads: (heads, kv_heads, hd),
            },
            mlp: Mlp {
                gate_up_proj: linear(&mut w, &format!("{p}.mlp.gate_up_proj"), 2 * i, h, false)?,
                down_proj: linear(&mut w, &format!("{p}.mlp.down_proj"), h, i, false)?,
            },
            input_layernorm: norm(&mut w, &format!("{p}.input_layernorm"), h, eps)?,
            post_attention_layernorm: norm(&mut w, &format!("{p}.post_attention_layernorm"), h, eps)?,
        });
    }
    let embed_tokens = embedding(&mut w, "model.embed_tokens", a.vocab_size, h)?;
    let norm = norm(&mut w, "model.norm", h, eps)?;
    let lm_head = if a.tie_word_embeddings { None } else { Some(linear(&mut w, "lm_head", a.vocab_size, h, false)?) };
    w.finish()?;
    Ok(Model {
        model: Backbone { embed_tokens, layers, norm },
        lm_head,
        rope,
        reaches: vec![reach; a.num_hidden_layers],
    })
}

impl Attention {
    fn forward(&self, x: &Array, rope: &Rope, mask: &SdpaMask, cache: Option<&mut KvCache>) -> Result<Array> {
        let (b, l) = (x.shape()[0], x.shape()[1]);
        let (heads, kv_heads, hd) = self.heads;
        let qkv = self.qkv_proj.forward(x)?;
        let part = |start: usize, n: usize| -> Result<Array> {
            let y = fx::slice_axis(&qkv, 2, (start * hd) as isize, ((start + n) * hd) as isize)?;
            Ok(fx::transpose(&fx::reshape_usize(&y, &[b, l, n, hd])?, &[0, 2, 1, 3])?)
        };
        let (q, k, v) = (part(0, heads)?, part(heads, kv_heads)?, part(heads + kv_heads, kv_heads)?);
        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let q = rope.forward(&q, offset)?;
        let k = rope.forward(&k, offset)?;
        let (k, v) = match cache {
            Some(c) => c.update_and_fetch(&k, &v)?,
            None => (k, v),
        };
        let o = fx::fast::scaled_dot_product_attention(&q, &k, &v, (hd as f32).powf(-0.5), mask.clone())?;
        let o = fx::reshape_usize(&fx::transpose(&o, &[0, 2, 1, 3])?, &[b, l, heads * hd])?;
        Ok(self.o_proj.forward(&o)?)
    }
}

impl Mlp {
    fn forward(&self, x: &Array) -> Result<Array> {
        let gu = self.gate_up_proj.forward(x)?;
        let i = gu.shape()[2] / 2;
        let g = fx::slice_axis(&gu, 2, 0, i as isize)?;
        let up = fx::slice_axis(&gu, 2, i as isize, (2 * i) as isize)?;
        Ok(self.down_proj.forward(&swiglu(&g, &up)?)?)
    }
}

impl Block {
    fn forward(&self, x: &Array, rope: &Rope, mask: &SdpaMask, cache: Option<&mut KvCache>) -> Result<Array> {
        let h = fx::add(x, &self.self_attn.forward(&self.input_layernorm.forward(x)?, rope, mask, cache)?)?;
        Ok(fx::add(&h, &self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?)?)
    }
}

impl LanguageModel for Model {
    fn forward_logits(&self, ids: &Array, mut cache: Option<&mut [KvCache]>, which: Logits) -> Result<Array> {
        if ids.ndim() != 2 {
            return Err(Error::Invalid(format!("model input must be token ids [B, L], got shape {:?}", ids.shape())));
        }
        let l = ids.shape()[1];
        let masks = layer_masks(&self.reaches, l, cache.as_deref())?;
        let offset = cache.as_deref().and_then(<[KvCache]>::first).map_or(0, KvCache::offset);
        let rope = self.rope.pick(offset + l);
        let mut h = self.model.embed_tokens.forward(ids)?;
        for (i, layer) in self.model.layers.iter().enumerate() {
            h = layer.forward(&h, rope, &masks[i], cache.as_deref_mut().map(|c| &mut c[i]))?;
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

    fn switch_length(&self) -> Option<usize> {
        match &self.rope {
            PhiRope::Long { original, .. } => Some(*original),
            PhiRope::Single(_) => None,
        }
    }

    fn make_cache(&self, max_kv_size: Option<usize>) -> Vec<KvCache> {
        self.reaches.iter().map(|r| r.make_cache(max_kv_size)).collect()
    }
}
