//! `ferrox cache-prompt`: run a prompt once and save its KV cache (mlx_lm.cache_prompt's
//! file format), for `ferrox generate --prompt-cache-file` to continue.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use ferrox_lm::cache::save_prompt_cache;
use ferrox_lm::generate::prefill;
use ferrox_lm::Result;

use crate::common::{load_model, ModelArgs};
use crate::generate::render_prompt;

/// Save a prompt's KV cache to a file.
#[derive(Args, Debug)]
pub struct CachePromptArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt to cache; `-` reads it from standard input.
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Where to write the cache (safetensors).
    #[arg(long, default_value = "prompt_cache.safetensors")]
    pub prompt_cache_file: PathBuf,
    /// Feed the prompt as it is, without the chat template.
    #[arg(long)]
    pub ignore_chat_template: bool,
    /// Keep at most this many positions (a rotating cache).
    #[arg(long)]
    pub max_kv_size: Option<usize>,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 2048)]
    pub prefill_step_size: usize,
}

pub fn run(args: CachePromptArgs) -> Result<()> {
    let loaded = load_model(&args.model)?;
    // The cached text is the start of a conversation: no assistant cue at its end.
    let prompt = render_prompt(&loaded.tokenizer, &args.prompt, None, true, None)?;
    let text = match loaded.tokenizer.chat_template.as_ref().filter(|_| !args.ignore_chat_template) {
        Some(template) => {
            let msgs = [serde_json::json!({"role": "user", "content": prompt})];
            template.render(&msgs, &ferrox_lm::chat::ChatOptions::default())?
        }
        None => prompt,
    };
    let ids = loaded.tokenizer.encode_prompt(&text)?;
    let mut cache = loaded.model.make_cache(args.max_kv_size);
    let started = std::time::Instant::now();
    prefill(loaded.model.as_ref(), &ids, &mut cache, args.prefill_step_size)?;
    let secs = started.elapsed().as_secs_f64();
    let mut meta = HashMap::new();
    meta.insert("model".to_string(), args.model.model.clone().unwrap_or_else(|| loaded.dir.display().to_string()));
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
