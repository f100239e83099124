//! Converting a model (a Hugging Face directory or hub id) to a new directory in the MLX
//! layout, mlx-lm's `convert`: cast to a dtype, quantize (uniformly or with a mixed-precision
//! recipe) or dequantize, then write sharded safetensors with their index, config.json with
//! the quantization section, and the tokenizer files.
//!
//! The model is built first (so only what the architecture uses is written, under its
//! checkpoint names) and quantized in place with [`ferrox_nn::quantize`]; the output loads in
//! ferrox and in mlx-lm alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ferrox::{self as fx, Dtype, QuantMode};
use ferrox_nn::layers::QuantSpec;
use ferrox_nn::{Module, Quantizable, Quantize};
use serde_json::{Map, Value};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::loader::{load_weights, resolve_model_dir};
use crate::models::{self, LanguageModel};
use crate::quant::QuantConfig;
use crate::weights::WeightMap;

/// The largest shard written, in bytes (5 GiB, as mlx-lm).
pub const MAX_SHARD_BYTES: usize = 5 << 30;

/// The files copied next to the weights when the source has them (tokenizer, chat template,
/// generation settings).
const COPIED: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// mlx-lm's mixed-precision recipes: most layers at the low bit width; the value and MLP-down
/// projections of the first and last eighth of the layers and of every third layer between,
/// and the output head, at the high one (the choice llama.cpp's Q4_K_M makes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// 2 and 6 bits.
    Mixed2_6,
    /// 3 and 4 bits.
    Mixed3_4,
    /// 3 and 6 bits.
    Mixed3_6,
    /// 4 and 6 bits.
    Mixed4_6,
}

impl Recipe {
    /// The recipes' names, as mlx-lm's `--quant-predicate` takes them.
    pub const NAMES: &'static [&'static str] = &["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"];

    /// The recipe named `name` (`mixed_2_6`, ...).
    pub fn parse(name: &str) -> Result<Recipe> {
        Ok(match name {
            "mixed_2_6" => Recipe::Mixed2_6,
            "mixed_3_4" => Recipe::Mixed3_4,
            "mixed_3_6" => Recipe::Mixed3_6,
            "mixed_4_6" => Recipe::Mixed4_6,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown quantization recipe {name:?}; use one of {}",
                    Recipe::NAMES.join(", ")
                )))
            }
        })
    }

    /// The (low, high) bit widths.
    pub fn bits(self) -> (usize, usize) {
        match self {
            Recipe::Mixed2_6 => (2, 6),
            Recipe::Mixed3_4 => (3, 4),
            Recipe::Mixed3_6 => (3, 6),
            Recipe::Mixed4_6 => (4, 6),
        }
    }

    /// The bits of the layer at `path`, in a model of `num_layers` blocks whose paths carry
    /// the block index as their `index_at`-th component.
    fn layer_bits(self, path: &str, num_layers: usize, index_at: usize) -> usize {
        let (low, high) = self.bits();
        let index = path.split('.').nth(index_at).and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
        let eighth = num_layers / 8;
        let more =
            index < eighth || index >= 7 * num_layers / 8 || (index as isize - eighth as isize).rem_euclid(3) == 2;
        let sensitive = ["v_proj", "v_a_proj", "v_b_proj", "down_proj"].iter().any(|k| path.contains(k));
        if (sensitive && more) || path.contains("lm_head") {
            high
        } else {
            low
        }
    }
}

/// What [`convert`] does besides copying.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Quantize the linear layers and embeddings.
    pub quantize: bool,
    /// Group size (default: the mode's, 64 for affine).
    pub group_size: Option<usize>,
    /// Bits per weight (default: the mode's, 4 for affine).
    pub bits: Option<usize>,
    /// The quantization format (default affine).
    pub mode: Option<QuantMode>,
    /// A mixed-precision recipe instead of one bit width (affine only).
    pub recipe: Option<Recipe>,
    /// The dtype of the floating-point parameters (default: the config's `torch_dtype`).
    pub dtype: Option<Dtype>,
    /// Turn a quantized model back into floating point.
    pub dequantize: bool,
    /// The largest shard in bytes (default [`MAX_SHARD_BYTES`]).
    pub max_shard_bytes: Option<usize>,
}

/// What [`convert`] wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    /// The safetensors files, in order.
    pub shards: Vec<PathBuf>,
    /// The number of layers quantized.
    pub quantized_layers: usize,
    /// Stored bits per model weight (scales and biases included), as mlx-lm reports it.
    pub bits_per_weight: f64,
}

/// Progress of the writing: `(bytes written, total bytes, tensor name)` after each tensor.
pub type ProgressFn<'a> = &'a mut dyn FnMut(u64, u64, &str);

/// Converts the model at `src` (a directory or hub id) into the new directory `dst`.
pub fn convert(src: &str, dst: &Path, opts: &ConvertOptions, progress: ProgressFn) -> Result<ConvertReport> {
    let spec = check_options(opts)?;
    if dst.exists() {
        return Err(Error::file(dst, "already exists; delete it or choose another output path"));
    }
    let dir = resolve_model_dir(src)?;
    let config = ModelConfig::load(dir.join("config.json"))?;
    let mut model = models::build(&config, WeightMap::new(load_weights(&dir, None)?))?;
    let mut raw = config.raw.clone();

    if let Some(dtype) = opts.dtype.or_else(|| config.dtype()) {
        model.set_dtype(dtype)?;
    }
    let mut quantized_layers = 0;
    if let Some(spec) = spec {
        let section = quantize_model(model.as_mut(), &config, spec, opts.recipe)?;
        quantized_layers = section.1;
        raw["quantization"] = section.0.to_json();
    }
    if opts.dequantize {
        ferrox_nn::dequantize(model.as_dyn_mut())?;
        let obj = raw.as_object_mut().expect("config.json is an object");
        obj.remove("quantization");
        obj.remove("quantization_config");
    }
    let bits_per_weight = bits_per_weight(model.as_dyn());
    let params = model.parameters();
    drop(model);

    std::fs::create_dir_all(dst).map_err(|e| Error::file(dst, e))?;
    let shards = write_shards(dst, params, opts.max_shard_bytes.unwrap_or(MAX_SHARD_BYTES), progress)?;
    write_config(&dst.join("config.json"), raw)?;
    for name in COPIED {
        let from = dir.join(name);
        if from.is_file() {
            std::fs::copy(&from, dst.join(name)).map_err(|e| Error::file(&from, e))?;
        }
    }
    Ok(ConvertReport { shards, quantized_layers, bits_per_weight })
}

/// Checks the options against each other; the quantization spec if quantizing.
fn check_options(opts: &ConvertOptions) -> Result<Option<QuantSpec>> {
    if opts.quantize && opts.dequantize {
        return Err(Error::Invalid("choose either quantize or dequantize, not both".into()));
    }
    if !opts.quantize {
        if opts.recipe.is_some() || opts.bits.is_some() || opts.group_size.is_some() || opts.mode.is_some() {
            return Err(Error::Invalid("quantization settings given without --quantize (-q)".into()));
        }
        return Ok(None);
    }
    let mode = opts.mode.unwrap_or(QuantMode::Affine);
    if opts.recipe.is_some() && mode != QuantMode::Affine {
        return Err(Error::Invalid(format!("the mixed recipes quantize in affine mode, not {}", mode.name())));
    }
    let spec = QuantSpec::new(opts.group_size, opts.bits, mode);
    // The core's checks, on a one-group matrix: unsupported bits or group sizes fail here.
    fx::quantize(&fx::zeros(&[1, spec.group_size], Dtype::F32)?, spec.group_size, spec.bits, mode)?;
    if let Some(r) = opts.recipe {
        for bits in [r.bits().0, r.bits().1] {
            fx::quantize(&fx::zeros(&[1, spec.group_size], Dtype::F32)?, spec.group_size, bits, mode)?;
        }
    }
    Ok(Some(spec))
}

/// Quantizes `model` in place; returns the config section to write and the number of layers
/// quantized. A model that was already partly quantized keeps its section, and every newly
/// quantized layer gets an entry of its own (as mlx-lm does); otherwise layers quantized with
/// other settings than the global ones (a recipe's) get one.
fn quantize_model(
    model: &mut dyn LanguageModel,
    config: &ModelConfig,
    spec: QuantSpec,
    recipe: Option<Recipe>,
) -> Result<(QuantConfig, usize)> {
    let existing = QuantConfig::from_config(config)?;
    let fine_grained = existing.is_some();
    let mut section = existing.unwrap_or_else(|| QuantConfig::new(spec));
    let num_layers = model.num_layers();
    let index_at = recipe.map(|_| block_index_position(model.as_dyn())).transpose()?;
    let mut predicate = |path: &str, layer: &dyn Quantizable| -> Quantize {
        let cols = layer.dense_weight().and_then(|w| w.shape().last().copied()).unwrap_or(0);
        if !spec.fits(cols) {
            return Quantize::No;
        }
        let chosen = match (recipe, index_at) {
            (Some(r), Some(at)) => QuantSpec { bits: r.layer_bits(path, num_layers, at), ..spec },
            _ => match architecture_override(&config.model_type, path) {
                Some(fixed) => {
                    section.layers.insert(path.to_string(), Some(fixed));
                    return Quantize::With(fixed);
                }
                None => spec,
            },
        };
        if recipe.is_some() || fine_grained {
            section.layers.insert(path.to_string(), Some(chosen));
        }
        Quantize::With(chosen)
    };
    let n = ferrox_nn::quantize(model.as_dyn_mut(), spec, Some(&mut predicate))?;
    Ok((section, n))
}

/// The settings an architecture fixes for some layers when no recipe is given (mlx-lm's
/// per-model `quant_predicate`): Qwen3-MoE's routers (`mlp.gate`) at 8 bits in groups of 64.
fn architecture_override(model_type: &str, path: &str) -> Option<QuantSpec> {
    match model_type {
        "qwen3_moe" if path.ends_with("mlp.gate") => Some(QuantSpec::new(Some(64), Some(8), QuantMode::Affine)),
        _ => None,
    }
}

/// Which component of a layer path is the block index (`model.layers.3.mlp.down_proj` → 2),
/// found from the first MLP down projection, as mlx-lm's recipes find it.
fn block_index_position(model: &dyn Module) -> Result<usize> {
    let mut found = None;
    model.apply_to_modules(&mut |path, _| {
        if found.is_none() && path.contains("down_proj") {
            found = path.split('.').position(|c| c.parse::<usize>().is_ok());
        }
    });
    found.ok_or_else(|| Error::Invalid("the mixed recipes need a model with numbered MLP down_proj layers".into()))
}

/// Stored bits per model weight: all parameter bits over the number of weights the model
/// stands for (a quantized matrix counts its unpacked elements; scales and biases count none).
fn bits_per_weight(model: &dyn Module) -> f64 {
    let (mut bits, mut weights) = (0usize, 0usize);
    model.apply_to_modules(&mut |_, m| {
        let any = m.as_any();
        let spec = any
            .downcast_ref::<ferrox_nn::layers::AnyLinear>()
            .and_then(|l| l.quant_spec())
            .or_else(|| any.downcast_ref::<ferrox_nn::layers::AnyEmbedding>().and_then(|e| e.quant_spec()))
            .or_else(|| any.downcast_ref::<ferrox_nn::layers::SwitchLinear>().and_then(|e| e.spec()));
        for (name, a) in m.own_params() {
            bits += a.nbytes() * 8;
            weights += match (spec, name.as_str()) {
                (Some(s), "weight") => a.size() * 32 / s.bits,
                (Some(_), "scales" | "biases") => 0,
                _ => a.size(),
            };
        }
    });
    bits as f64 / weights.max(1) as f64
}

/// Writes `params` as `model.safetensors` or `model-0000i-of-0000n.safetensors` shards of at
/// most `max_bytes` each (a larger tensor gets a shard of its own), and the index.
fn write_shards(
    dst: &Path,
    mut params: ferrox_nn::Params,
    max_bytes: usize,
    progress: ProgressFn,
) -> Result<Vec<PathBuf>> {
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut size = 0;
    for (name, a) in &params {
        if groups.is_empty() || (size + a.nbytes() > max_bytes && size > 0) {
            groups.push(Vec::new());
            size = 0;
        }
        groups.last_mut().expect("a group").push(name.clone());
        size += a.nbytes();
    }
    let total: usize = params.values().map(|a| a.nbytes()).sum();
    let n = groups.len();
    let file_name = |i: usize| {
        if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        }
    };
    let metadata: HashMap<String, String> = [("format".to_string(), "mlx".to_string())].into();
    let (mut done, mut weight_map, mut shards) = (0u64, Map::new(), Vec::new());
    for (i, names) in groups.into_iter().enumerate() {
        // Take the shard's tensors out of the map so their memory goes once written.
        let shard: Vec<(String, fx::Array)> =
            names.iter().map(|k| (k.clone(), params.remove(k).expect("grouped names are in the map"))).collect();
        for (k, a) in &shard {
            fx::eval(&[a])?;
            done += a.nbytes() as u64;
            progress(done, total as u64, k);
            weight_map.insert(k.clone(), Value::String(file_name(i)));
        }
        let path = dst.join(file_name(i));
        fx::save_safetensors(&path, shard.iter().map(|(k, a)| (k.as_str(), a)), Some(&metadata))?;
        shards.push(path);
    }
    let mut sorted: Vec<(String, Value)> = weight_map.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": Map::from_iter(sorted),
    });
    let path = dst.join("model.safetensors.index.json");
    let text = serde_json::to_string_pretty(&index).expect("JSON values serialize");
    std::fs::write(&path, text).map_err(|e| Error::file(&path, e))?;
    Ok(shards)
}

/// Writes config.json with its keys sorted, the quantization section repeated as
/// `quantization_config` (the Hugging Face name), without `_name_or_path` (as mlx-lm).
fn write_config(path: &Path, raw: Value) -> Result<()> {
    let Value::Object(obj) = raw else { unreachable!("config.json is an object") };
    let mut entries: Vec<(String, Value)> = obj.into_iter().filter(|(k, _)| k != "_name_or_path").collect();
    if let Some(q) = entries.iter().find(|(k, _)| k == "quantization").map(|(_, v)| v.clone()) {
        entries.retain(|(k, _)| k != "quantization_config");
        entries.push(("quantization_config".into(), q));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let text = serde_json::to_string_pretty(&Value::Object(Map::from_iter(entries))).expect("JSON values serialize");
    std::fs::write(path, text).map_err(|e| Error::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_follow_mlx_lm() {
        // 16 blocks: the first two and last two, and every third from block 4, get more bits.
        let r = Recipe::Mixed3_6;
        let bits = |p: &str| r.layer_bits(p, 16, 2);
        let more: Vec<usize> = (0..16).filter(|i| bits(&format!("model.layers.{i}.mlp.down_proj")) == 6).collect();
        assert_eq!(more, [0, 1, 4, 7, 10, 13, 14, 15]);
        assert_eq!(bits("model.layers.4.self_attn.v_proj"), 6);
        assert_eq!(bits("model.layers.4.self_attn.q_proj"), 3);
        assert_eq!(bits("lm_head"), 6);
        assert_eq!(bits("model.embed_tokens"), 3);
        assert!(Recipe::parse("mixed_5_7").unwrap_err().to_string().contains("mixed_2_6, mixed_3_4"));
    }

    #[test]
    fn bad_options_are_errors() {
        let e = |o: ConvertOptions| check_options(&o).unwrap_err().to_string();
        let q = ConvertOptions { quantize: true, ..Default::default() };
        assert!(e(ConvertOptions { dequantize: true, ..q.clone() }).contains("either quantize or dequantize"));
        assert!(e(ConvertOptions { bits: Some(7), ..q.clone() }).contains("7 bits are not supported"));
        assert!(e(ConvertOptions { group_size: Some(48), ..q.clone() }).contains("group size 48 is not supported"));
        let mx = ConvertOptions { mode: Some(QuantMode::Mxfp4), recipe: Some(Recipe::Mixed2_6), ..q.clone() };
        assert!(e(mx).contains("affine mode"));
        assert!(e(ConvertOptions { bits: Some(4), ..Default::default() }).contains("without --quantize"));
        let ok = check_options(&ConvertOptions { mode: Some(QuantMode::Nvfp4), ..q }).unwrap().unwrap();
        assert_eq!((ok.group_size, ok.bits), (16, 4));
    }
}
