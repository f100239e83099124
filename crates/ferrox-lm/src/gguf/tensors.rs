//! A GGUF file's tensors under the checkpoint names ferrox's models take (Hugging Face's and
//! mlx-lm's), quantized ones kept quantized where that is exact.
//!
//! Names: `token_embd` → `model.embed_tokens`, `output_norm` → `model.norm`, `output` →
//! `lm_head`, and per block `blk.N.` → `model.layers.N.` with `attn_{q,k,v,output}` →
//! `self_attn.{q,k,v,o}_proj`, `attn_{q,k}_norm` → `self_attn.{q,k}_norm`, `attn_norm` →
//! `input_layernorm`, `ffn_norm` → `post_attention_layernorm`, `ffn_{gate,up,down}` →
//! `mlp.{gate,up,down}_proj`; mixtures of experts: `ffn_gate_inp` → the router
//! (`block_sparse_moe.gate` for Mixtral, `mlp.gate` for Qwen3-MoE) and the stacked
//! `ffn_{gate,up,down}_exps` → `….switch_mlp.{gate,up,down}_proj`. A tensor with no mapping
//! keeps its GGUF name, so the model build reports it as unexpected.
//!
//! Rotary layout: llama.cpp's converter reorders the rows of Llama's (and Mixtral's) query and
//! key projections, head by head, so that the two halves HF rotates together become adjacent
//! pairs (ggml's "normal" rope). The loader puts the rows back (an exact permutation, also of
//! packed quantized rows, scales and biases), so the model is the Hugging Face one and runs
//! with ferrox's usual rotation. Qwen files are not reordered.
//!
//! Types: f32 / f16 / bf16 load as the model dtype. q8_0, q4_0, q4_1, q4_K and q5_K matrices
//! become MLX affine quantization with groups of 32 (`weight` packed, `scales`, `biases`:
//! [`ferrox::io::GgufFile::affine`]), exactly, and run through the quantized layers. q6_K
//! (sub-blocks of 16, a group size MLX's affine format lacks) is dequantized to the model
//! dtype, as is any quantized vector (norms). A type ferrox cannot decode is an error naming
//! the tensor and its type.

use std::collections::HashMap;

use ferrox::io::{GgmlType, GgufFile};
use ferrox::{self as fx, Array, Dtype};

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// The ferrox name of a per-block GGUF tensor kind for `model_type`, without `.weight`.
fn block_name(kind: &str, model_type: &str) -> Option<String> {
    let moe = if model_type == "mixtral" { "block_sparse_moe" } else { "mlp" };
    Some(match kind {
        "attn_q" => "self_attn.q_proj".into(),
        "attn_k" => "self_attn.k_proj".into(),
        "attn_v" => "self_attn.v_proj".into(),
        "attn_output" => "self_attn.o_proj".into(),
        "attn_q_norm" => "self_attn.q_norm".into(),
        "attn_k_norm" => "self_attn.k_norm".into(),
        "attn_norm" => "input_layernorm".into(),
        "ffn_norm" => "post_attention_layernorm".into(),
        "ffn_gate" => "mlp.gate_proj".into(),
        "ffn_up" => "mlp.up_proj".into(),
        "ffn_down" => "mlp.down_proj".into(),
        "ffn_gate_inp" => format!("{moe}.gate"),
        "ffn_gate_exps" => format!("{moe}.switch_mlp.gate_proj"),
        "ffn_up_exps" => format!("{moe}.switch_mlp.up_proj"),
        "ffn_down_exps" => format!("{moe}.switch_mlp.down_proj"),
        _ => return None,
    })
}

/// `(ferrox module path, parameter)` of GGUF tensor `name` (`blk.3.attn_q.weight` →
/// `("model.layers.3.self_attn.q_proj", "weight")`), or `None` for one without a mapping.
pub fn ferrox_name(name: &str, model_type: &str) -> Option<(String, String)> {
    let (stem, param) = name.rsplit_once('.')?;
    let module = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, kind) = rest.split_once('.')?;
            layer.parse::<usize>().ok()?;
            format!("model.layers.{layer}.{}", block_name(kind, model_type)?)
        }
    };
    Some((module, param.to_string()))
}

/// Puts back the rows llama.cpp's converter interleaved for its rotation: within each of
/// `heads` blocks of rows, rows `2i` and `2i + 1` return to `i` and `i + rows/2`.
fn unpermute(a: &Array, heads: usize) -> Result<Array> {
    let shape = a.shape().to_vec();
    let rows = shape[0];
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::Invalid(format!("cannot split {rows} rows into {heads} rotary heads")));
    }
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(&shape[1..]);
    let x = fx::reshape_usize(a, &split)?;
    Ok(fx::reshape_usize(&fx::swapaxes(&x, 1, 2)?, &shape)?)
}

/// Every tensor of `file` for the model `config` describes, by ferrox name, in `dtype` (see
/// the module docs for names, the rotary layout and types). `rope_freqs.weight` is left out:
/// the config holds it.
pub fn load_tensors(file: &GgufFile, config: &ModelConfig, dtype: Dtype) -> Result<HashMap<String, Array>> {
    let heads = config.raw["num_attention_heads"].as_u64().unwrap_or(0) as usize;
    let kv_heads = config.raw["num_key_value_heads"].as_u64().unwrap_or(heads as u64) as usize;
    // Only llama.cpp's "llama" architecture (Llama, Mistral, Mixtral) is reordered.
    let permuted = matches!(config.model_type.as_str(), "llama" | "mistral" | "mixtral");
    let mut out = HashMap::new();
    for (name, info) in &file.tensors {
        if name == "rope_freqs.weight" {
            continue;
        }
        let Some((module, param)) = ferrox_name(name, &config.model_type) else {
            out.insert(name.clone(), file.array(name, Some(dtype)).or_else(|_| file.array(name, None))?);
            continue;
        };
        let rope_heads = match (permuted, module.rsplit('.').next()) {
            (true, Some("q_proj")) => Some(heads),
            (true, Some("k_proj")) => Some(kv_heads),
            _ => None,
        };
        let fix = |a: Array| rope_heads.map_or(Ok(a.clone()), |h| unpermute(&a, h));
        let exact_affine =
            matches!(info.ggml_type, GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K | GgmlType::Q5K);
        if exact_affine && param == "weight" && info.shape.len() >= 2 {
            let (packed, scales, biases, _) = file.affine(name, dtype)?;
            out.insert(format!("{module}.weight"), fix(packed)?);
            out.insert(format!("{module}.scales"), fix(scales)?);
            out.insert(format!("{module}.biases"), fix(biases)?);
        } else {
            out.insert(format!("{module}.{param}"), fix(file.array(name, Some(dtype))?)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_ferrox() {
        let n = |s: &str, t: &str| ferrox_name(s, t).map(|(m, p)| format!("{m}.{p}"));
        assert_eq!(n("blk.3.attn_q.weight", "llama").unwrap(), "model.layers.3.self_attn.q_proj.weight");
        assert_eq!(n("blk.0.attn_k.bias", "qwen2").unwrap(), "model.layers.0.self_attn.k_proj.bias");
        assert_eq!(n("blk.1.ffn_norm.weight", "llama").unwrap(), "model.layers.1.post_attention_layernorm.weight");
        assert_eq!(n("blk.1.ffn_gate_inp.weight", "mixtral").unwrap(), "model.layers.1.block_sparse_moe.gate.weight");
        assert_eq!(
            n("blk.1.ffn_down_exps.weight", "qwen3_moe").unwrap(),
            "model.layers.1.mlp.switch_mlp.down_proj.weight"
        );
        assert_eq!(n("token_embd.weight", "llama").unwrap(), "model.embed_tokens.weight");
        assert_eq!(n("output.weight", "llama").unwrap(), "lm_head.weight");
        assert!(n("blk.x.attn_q.weight", "llama").is_none());
        assert!(n("blk.0.ssm_conv1d.weight", "llama").is_none());
    }

    #[test]
    fn unpermute_inverts_the_converters_interleave() {
        // Two heads of four rows: the converter writes each head's rows as 0, 2, 1, 3.
        let gguf = Array::from_slice(&[0.0f32, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0], &[8, 1]).unwrap();
        let hf = unpermute(&gguf, 2).unwrap();
        assert_eq!(hf.to_vec::<f32>().unwrap(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert!(unpermute(&gguf, 3).is_err());
    }
}
