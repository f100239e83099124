//! `ferrox chat`: an interactive conversation (mlx_lm.chat). The history is kept and the KV
//! cache re-used between turns; it reads standard input line by line, so it works under a
//! pipe too.

use std::io::{BufRead, Write};

use clap::Args;
use ferrox_lm::cache::PromptCache;
use ferrox_lm::chat::ChatOptions;
use ferrox_lm::generate::{stream_generate_with_cache, GenerateOptions};
use ferrox_lm::{Error, Result};

use crate::common::{load_model, ModelArgs, SamplingArgs};

/// Chat with a model.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The most tokens per reply.
    #[arg(long, short = 'm', default_value_t = 256)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep at most this many positions in the KV cache.
    #[arg(long)]
    pub max_kv_size: Option<usize>,
    /// A system message that starts the conversation.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Tokens per forward pass while processing each turn's prompt.
    #[arg(long, default_value_t = 2048)]
    pub prefill_step_size: usize,
}

const HELP: &str = "Type a message and press enter. Commands: 'q' quits, 'r' resets the conversation, 'h' shows this.";

pub fn run(args: ChatArgs) -> Result<()> {
    GenerateOptions { max_kv_size: args.max_kv_size, prefill_step_size: args.prefill_step_size, ..Default::default() }
        .validate()?;
    let loaded = load_model(&args.model)?;
    let (model, tokenizer) = (loaded.model.as_ref(), &loaded.tokenizer);
    let template = tokenizer
        .chat_template
        .as_ref()
        .ok_or_else(|| Error::Invalid("this model's tokenizer has no chat template; use `ferrox generate`".into()))?;
    let start = || {
        let mut m = Vec::new();
        if let Some(s) = &args.system_prompt {
            m.push(serde_json::json!({"role": "system", "content": s}));
        }
        m
    };
    let mut messages = start();
    let mut cache = PromptCache::new(model.make_cache(args.max_kv_size));
    println!("[INFO] Starting chat session with {}.", loaded.dir.display());
    println!("[INFO] {HELP}");
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        print!(">> ");
        let _ = out.flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).map_err(|e| Error::Invalid(format!("reading stdin: {e}")))? == 0 {
            println!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "q" => return Ok(()),
            "r" => {
                messages = start();
                cache = PromptCache::new(model.make_cache(args.max_kv_size));
                println!("[INFO] Conversation reset.");
                continue;
            }
            "h" => {
                println!("[INFO] {HELP}");
                continue;
            }
            "" => continue,
            _ => {}
        }
        messages.push(serde_json::json!({"role": "user", "content": line}));
        let prompt = template.render(&messages, &ChatOptions { add_generation_prompt: true, ..Default::default() })?;
        // A rendered template carries its own special tokens (as transformers' tokenize=True).
        let ids = tokenizer.encode(&prompt, false)?;
        let new = cache.reuse(&ids, || model.make_cache(args.max_kv_size)).to_vec();
        let kept = ids.len() - new.len();
        let options = GenerateOptions {
            max_tokens: args.max_tokens,
            sampler: args.sampling.to_config(tokenizer),
            max_kv_size: args.max_kv_size,
            prefill_step_size: args.prefill_step_size,
            ..Default::default()
        };
        let caches = std::mem::take(&mut cache.caches);
        let mut stream = stream_generate_with_cache(model, tokenizer, &new, options, caches)?;
        let mut reply = String::new();
        for r in stream.by_ref() {
            let r = r?;
            print!("{}", r.text);
            let _ = out.flush();
            reply.push_str(&r.text);
        }
        println!();
        let (caches, added) = stream.into_parts();
        cache.caches = caches;
        cache.tokens = ids[..kept].to_vec();
        cache.tokens.extend(added);
        messages.push(serde_json::json!({"role": "assistant", "content": reply}));
    }
}
