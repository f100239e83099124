//! `ferrox cache-prompt`: run a prompt once and save its KV cache (mlx_lm.cache_prompt's
//! file format), for `ferrox generate --prompt-cache-file` (or mlx_lm.generate) to continue.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use ferrox_lm::cache::save_prompt_cache;
use ferrox_lm::generate::prefill_quantizing;
use ferrox_lm::prompt::encode_cached_prompt;
use ferrox_lm::Result;

use crate::common::{load_model, KvQuantArgs, ModelArgs};

/// Save a prompt's KV cache to a file.
#[derive(Args, Debug)]
pub struct CachePromptArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt to cache; `-` reads it from standard input. With a chat template it becomes
    /// the start of a user message that `generate --prompt-cache-file --prompt ...` continues.
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Where to write the cache (safetensors).
    #[arg(long, default_value = "prompt_cache.safetensors")]
    pub prompt_cache_file: PathBuf,
    /// Feed the prompt as it is, without the chat template.
    #[arg(long)]
    pub ignore_chat_template: bool,
    /// Keep at most this many positions (a rotating cache keeping 4 sink tokens).
    #[arg(long)]
    pub max_kv_size: Option<usize>,
    #[command(flatten)]
    pub kv: KvQuantArgs,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 2048)]
    pub prefill_step_size: usize,
}

pub fn run(args: CachePromptArgs) -> Result<()> {
    let kv = args.kv.quantization()?;
    if let Some(q) = &kv {
        q.check_max_kv_size(args.max_kv_size)?;
    }
    let loaded = load_model(&args.model)?;
    // As mlx_lm.cache_prompt: standard input for `-`, else the text as given (no escapes).
    let prompt = if args.prompt == "-" { crate::generate::read_prompt("-")? } else { args.prompt.clone() };
    let ids = encode_cached_prompt(&loaded.tokenizer, &prompt, args.ignore_chat_template)?;
    if ids.is_empty() {
        return Err(ferrox_lm::Error::Invalid("the prompt encodes to no tokens".into()));
    }
    let mut cache = loaded.model.make_cache(args.max_kv_size);
    let started = std::time::Instant::now();
    prefill_quantizing(loaded.model.as_ref(), &ids, &mut cache, args.prefill_step_size, kv.as_ref())?;
    let secs = started.elapsed().as_secs_f64();
    // The metadata mlx_lm.cache_prompt writes: the model, and the tokenizer settings that
    // mlx_lm.generate reads back.
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), args.model.model.clone().unwrap_or_else(|| loaded.dir.display().to_string()));
    meta.insert("tokenizer_config".to_string(), r#"{"trust_remote_code": false}"#.to_string());
    save_prompt_cache(&args.prompt_cache_file, &cache, &meta)?;
    println!(
        "Cached {} prompt tokens ({:.3} tokens-per-sec) to {}",
        ids.len(),
        ids.len() as f64 / secs.max(1e-9),
        args.prompt_cache_file.display()
    );
    println!("Peak memory: {:.3} GB", ferrox::peak_memory() as f64 / 1e9);
    Ok(())
}
