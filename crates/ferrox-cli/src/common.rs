//! Flags shared by the model commands: which model, which dtype, how to sample.

use std::path::PathBuf;

use clap::Args;
use ferrox_lm::cache::KvQuantization;
use ferrox_lm::config::parse_dtype;
use ferrox_lm::{Loaded, Result, SamplerConfig, Tokenizer};

/// The model to load.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model directory (Hugging Face layout), a Hugging Face hub id, or a GGUF file
    /// (llama.cpp's: llama, mistral, mixtral, qwen2, qwen3, qwen3moe). Defaults to the tiny
    /// random-weight Llama the repository ships (models/tiny-llama): it runs everywhere, and
    /// its text is gibberish.
    #[arg(long)]
    pub model: Option<String>,
    /// Cast the weights to this dtype: float32, bfloat16 or float16.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Keep every projection its own matrix product. By default the projections of a block
    /// that read the same input (q/k/v, gate/up) are joined into one product each, which
    /// makes decoding faster and computes the same values.
    #[arg(long)]
    pub no_fuse: bool,
}

/// The bundled tiny model: `models/tiny-llama` under the current directory, else in the
/// source tree this binary was built from.
fn default_model() -> String {
    let local = PathBuf::from("models/tiny-llama");
    if local.is_dir() {
        return local.display().to_string();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-llama").display().to_string()
}

/// Loads the model the flags name, for inference (generate, chat, bench, cache-prompt): its
/// projections fused unless `--no-fuse` ([`ferrox_lm::LanguageModel::fuse_projections`]).
pub fn load_model(args: &ModelArgs) -> Result<Loaded> {
    let dtype = args.dtype.as_deref().map(parse_dtype).transpose()?;
    let model = args.model.clone().unwrap_or_else(default_model);
    let mut loaded = ferrox_lm::load(&model, dtype)?;
    if !args.no_fuse {
        loaded.model.fuse_projections()?;
    }
    Ok(loaded)
}

/// mlx-lm's KV-cache quantization flags.
#[derive(Args, Debug, Clone)]
pub struct KvQuantArgs {
    /// Quantize the KV cache to this many bits (2-6 or 8; affine, as mlx-lm does).
    #[arg(long)]
    pub kv_bits: Option<usize>,
    /// Group size of the KV-cache quantization.
    #[arg(long, default_value_t = 64)]
    pub kv_group_size: usize,
    /// Quantize the KV cache only once it holds this many positions.
    #[arg(long, default_value_t = 5000)]
    pub quantized_kv_start: usize,
}

impl KvQuantArgs {
    /// The quantization the flags ask for (`None` without --kv-bits).
    pub fn quantization(&self) -> Result<Option<KvQuantization>> {
        self.kv_bits.map(|b| KvQuantization::new(b, self.kv_group_size, self.quantized_kv_start)).transpose()
    }
}

/// mlx-lm's sampling flags.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temp: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Drop tokens less likely than min-p times the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Tokens min-p always keeps.
    #[arg(long, default_value_t = 1)]
    pub min_tokens_to_keep: usize,
    /// XTC: the chance per step of removing the top choices...
    #[arg(long, default_value_t = 0.0)]
    pub xtc_probability: f32,
    /// ...above this probability (all but the least likely of them).
    #[arg(long, default_value_t = 0.0)]
    pub xtc_threshold: f32,
    /// Multiplicative penalty on recently seen tokens (> 1 discourages repeats).
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    /// How many recent tokens the repetition penalty looks at.
    #[arg(long, default_value_t = 20)]
    pub repetition_context_size: usize,
    /// Subtracted from the logit of any recently seen token (negative: encouraged).
    #[arg(long, allow_negative_numbers = true)]
    pub presence_penalty: Option<f32>,
    /// Subtracted from a token's logit per recent occurrence (negative: encouraged).
    #[arg(long, allow_negative_numbers = true)]
    pub frequency_penalty: Option<f32>,
    /// Random seed: the same seed gives the same text (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    /// The sampler settings (XTC spares the end-of-sequence tokens and the newline).
    pub fn to_config(&self, tokenizer: &Tokenizer) -> SamplerConfig {
        let mut xtc_special_tokens = tokenizer.eos_token_ids.clone();
        xtc_special_tokens.extend(tokenizer.encode("\n", false).unwrap_or_default());
        SamplerConfig {
            temp: self.temp,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            min_tokens_to_keep: self.min_tokens_to_keep,
            xtc_probability: self.xtc_probability,
            xtc_threshold: self.xtc_threshold,
            xtc_special_tokens,
            repetition_penalty: self.repetition_penalty,
            repetition_context_size: self.repetition_context_size,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed: Some(self.seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
            })),
            ..SamplerConfig::default()
        }
    }
}
