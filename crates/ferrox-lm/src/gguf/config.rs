//! A GGUF file's metadata as the config.json its architecture reads: `{arch}.block_count` →
//! `num_hidden_layers`, `{arch}.embedding_length` → `hidden_size`, and so on (the table is
//! [`model_config`]'s body), so that the model files need not know where their arguments
//! came from.
//!
//! Rotary scaling: `{arch}.rope.scaling.type` `linear` and `yarn` become the matching
//! `rope_scaling` objects; a `rope_freqs.weight` tensor (llama.cpp's per-pair frequency
//! divisors, which its converter writes for Llama 3's scaling instead of the parameters)
//! becomes `{"rope_type": "freq_factors", "factors": [...]}`.

use std::path::Path;

use ferrox::io::{GgufFile, GgufValue};
use ferrox::Dtype;
use serde_json::{json, Map, Value};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The GGUF architectures ferrox builds, and the `model_type` each becomes (`llama` with
/// experts becomes `mixtral`).
pub const ARCHITECTURES: &[(&str, &str)] =
    &[("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("qwen3moe", "qwen3_moe")];

/// Reads typed metadata of one architecture (`{arch}.{key}`), with errors naming the file.
struct Meta<'a> {
    file: &'a GgufFile,
    arch: &'a str,
    path: &'a Path,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.file.metadata.get(&format!("{}.{key}", self.arch))
    }

    fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::config(self.path, format!("GGUF metadata: {msg}"))
    }

    fn uint(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(GgufValue::Array(_)) => {
                Err(self.bad(format_args!("{}.{key} differs per layer, which ferrox does not support", self.arch)))
            }
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.bad(format_args!("{}.{key} is not an unsigned integer: {v:?}", self.arch))),
        }
    }

    fn required(&self, key: &str) -> Result<usize> {
        self.uint(key)?.ok_or_else(|| self.bad(format_args!("{}.{key} is missing", self.arch)))
    }

    fn float(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.bad(format_args!("{}.{key} is not a number: {v:?}", self.arch))))
            .transpose()
    }
}

/// The config a GGUF file's metadata describes (`path` is the file, for messages), with
/// `dtype` as its `torch_dtype`. An architecture ferrox does not build is an error naming it.
pub fn model_config(file: &GgufFile, path: &Path, dtype: Dtype) -> Result<ModelConfig> {
    let arch = file
        .metadata
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| Error::config(path, "GGUF metadata: no general.architecture string"))?;
    let Some(&(_, mut model_type)) = ARCHITECTURES.iter().find(|(a, _)| *a == arch) else {
        return Err(Error::config(
            path,
            format!(
                "GGUF architecture {arch:?} is not supported; supported: {}",
                ARCHITECTURES.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    let m = Meta { file, arch, path };
    let hidden = m.required("embedding_length")?;
    let heads = m.required("attention.head_count")?;
    let vocab = match m.uint("vocab_size")? {
        Some(v) => v,
        None => file
            .tensors
            .get("token_embd.weight")
            .map(|t| t.shape[0])
            .ok_or_else(|| m.bad("no vocab_size and no token_embd.weight"))?,
    };
    let mut c = Map::new();
    c.insert("hidden_size".into(), hidden.into());
    c.insert("num_hidden_layers".into(), m.required("block_count")?.into());
    c.insert("num_attention_heads".into(), heads.into());
    c.insert("num_key_value_heads".into(), m.uint("attention.head_count_kv")?.unwrap_or(heads).into());
    if let Some(hd) = m.uint("attention.key_length")? {
        c.insert("head_dim".into(), hd.into());
    }
    let eps = m.float("attention.layer_norm_rms_epsilon")?.ok_or_else(|| m.bad("no rms norm epsilon"))?;
    c.insert("rms_norm_eps".into(), eps.into());
    c.insert("vocab_size".into(), vocab.into());
    if let Some(n) = m.uint("context_length")? {
        c.insert("max_position_embeddings".into(), n.into());
    }
    c.insert("rope_theta".into(), m.float("rope.freq_base")?.unwrap_or(10000.0).into());
    if let Some(s) = rope_scaling(&m)? {
        c.insert("rope_scaling".into(), s);
    }
    c.insert("tie_word_embeddings".into(), (!file.tensors.contains_key("output.weight")).into());
    c.insert("attention_bias".into(), file.tensors.contains_key("blk.0.attn_q.bias").into());
    let experts = m.uint("expert_count")?.unwrap_or(0);
    if let Some(n) = m.uint("feed_forward_length")? {
        c.insert("intermediate_size".into(), n.into());
    }
    if experts > 0 {
        let used = m.required("expert_used_count")?;
        c.insert("num_experts_per_tok".into(), used.into());
        if model_type == "llama" {
            model_type = "mixtral";
            c.insert("num_local_experts".into(), experts.into());
        } else {
            c.insert("num_experts".into(), experts.into());
            let inter = m.uint("expert_feed_forward_length")?.or(m.uint("feed_forward_length")?);
            let inter = inter.ok_or_else(|| m.bad("no expert_feed_forward_length"))?;
            c.insert("moe_intermediate_size".into(), inter.into());
            c.entry("intermediate_size").or_insert(inter.into());
            // Layers without a router keep a dense MLP.
            let layers = m.required("block_count")?;
            let dense: Vec<usize> =
                (0..layers).filter(|l| !file.tensors.contains_key(&format!("blk.{l}.ffn_gate_inp.weight"))).collect();
            c.insert("mlp_only_layers".into(), json!(dense));
            let norm = m.get("expert_weights_norm").and_then(GgufValue::as_bool).unwrap_or(true);
            c.insert("norm_topk_prob".into(), norm.into());
        }
    }
    if !c.contains_key("intermediate_size") {
        return Err(m.bad(format_args!("{arch}.feed_forward_length is missing")));
    }
    c.insert("model_type".into(), model_type.into());
    c.insert("torch_dtype".into(), dtype_name(dtype).into());
    ModelConfig::parse(&Value::Object(c).to_string(), path)
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F16 => "float16",
        Dtype::Bf16 => "bfloat16",
        _ => "float32",
    }
}

/// The `rope_scaling` object the metadata (or a `rope_freqs.weight` tensor) asks for.
fn rope_scaling(m: &Meta<'_>) -> Result<Option<Value>> {
    if m.file.tensors.contains_key("rope_freqs.weight") {
        let factors = m.file.array("rope_freqs.weight", Some(Dtype::F32))?.to_vec::<f32>()?;
        return Ok(Some(json!({"rope_type": "freq_factors", "factors": factors})));
    }
    let kind = m.get("rope.scaling.type").and_then(GgufValue::as_str).unwrap_or("none");
    let factor = m.float("rope.scaling.factor")?;
    let original = m.uint("rope.scaling.original_context_length")?;
    Ok(match kind {
        "none" => None,
        "linear" => factor.filter(|&f| f != 1.0).map(|f| json!({"rope_type": "linear", "factor": f})),
        "yarn" => {
            let mut y =
                json!({"rope_type": "yarn", "factor": factor.ok_or_else(|| m.bad("yarn scaling without factor"))?});
            if let Some(o) = original {
                y["original_max_position_embeddings"] = o.into();
            }
            for (key, name) in
                [("rope.scaling.yarn_beta_fast", "beta_fast"), ("rope.scaling.yarn_beta_slow", "beta_slow")]
            {
                if let Some(v) = m.float(key)? {
                    y[name] = v.into();
                }
            }
            Some(y)
        }
        other => return Err(m.bad(format_args!("rope scaling type {other:?} is not supported (none, linear, yarn)"))),
    })
}
