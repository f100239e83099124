//! `ferrox generate`: mlx_lm.generate's flags, streaming output and closing statistics.

use std::io::{Read, Write};

use clap::Args;
use ferrox_lm::cache::{load_prompt_cache, KvCache, KvQuantization};
use ferrox_lm::chat::ChatOptions;
use ferrox_lm::generate::{stream_generate_with_cache, GenerateOptions};
use ferrox_lm::{Error, Result, SamplerConfig};

use crate::common::{load_model, ModelArgs, SamplingArgs};

/// Generate text from a prompt.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt; `-` reads it from standard input.
    #[arg(long, short = 'p', default_value = "Once upon a time")]
    pub prompt: String,
    /// A system message put before the prompt (with the chat template).
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// The most tokens to generate.
    #[arg(long, short = 'm', default_value_t = 100)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Feed the prompt to the model as it is, without the chat template.
    #[arg(long)]
    pub ignore_chat_template: bool,
    /// Extra chat-template variables as a JSON object, e.g. '{"enable_thinking": false}'.
    #[arg(long)]
    pub chat_template_config: Option<String>,
    /// Keep at most this many positions in the KV cache (a rotating cache keeping 4 sink tokens).
    #[arg(long)]
    pub max_kv_size: Option<usize>,
    /// Quantize the KV cache to this many bits (2-6 or 8; affine, as mlx-lm does).
    #[arg(long)]
    pub kv_bits: Option<usize>,
    /// Group size of the KV-cache quantization.
    #[arg(long, default_value_t = 64)]
    pub kv_group_size: usize,
    /// Quantize the KV cache only after this many positions.
    #[arg(long, default_value_t = 5000)]
    pub quantized_kv_start: usize,
    /// A prompt cache (from `ferrox cache-prompt` or mlx_lm.cache_prompt) the prompt continues.
    #[arg(long)]
    pub prompt_cache_file: Option<std::path::PathBuf>,
    /// Tokens per forward pass while processing the prompt.
    #[arg(long, default_value_t = 2048)]
    pub prefill_step_size: usize,
    /// Stop when the output contains this text (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Also stop on these tokens (repeatable).
    #[arg(long)]
    pub extra_eos_token: Vec<String>,
    /// Print the prompt, separators and statistics (`--verbose false` prints only the text).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verbose: bool,
}

/// The prompt text (stdin for `-`), with the chat template applied unless disabled.
pub fn render_prompt(
    tokenizer: &ferrox_lm::Tokenizer,
    prompt: &str,
    system: Option<&str>,
    ignore_template: bool,
    template_config: Option<&str>,
) -> Result<String> {
    let prompt = if prompt == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Invalid(format!("reading the prompt from stdin: {e}")))?;
        s
    } else {
        prompt.replace("\\n", "\n").replace("\\t", "\t")
    };
    let Some(template) = tokenizer.chat_template.as_ref().filter(|_| !ignore_template) else {
        return Ok(prompt);
    };
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(serde_json::json!({"role": "system", "content": s}));
    }
    messages.push(serde_json::json!({"role": "user", "content": prompt}));
    let extra = match template_config {
        Some(s) => match serde_json::from_str(s) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(Error::Invalid(format!("--chat-template-config must be a JSON object, got {s:?}"))),
        },
        None => Default::default(),
    };
    template.render(&messages, &ChatOptions { add_generation_prompt: true, tools: None, extra })
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let kv_quantization =
        args.kv_bits.map(|b| KvQuantization::new(b, args.kv_group_size, args.quantized_kv_start)).transpose()?;
    let mut loaded = load_model(&args.model)?;
    for t in &args.extra_eos_token {
        let id = loaded
            .tokenizer
            .token_to_id(t)
            .ok_or_else(|| Error::Invalid(format!("--extra-eos-token {t:?} is not a token")))?;
        loaded.tokenizer.eos_token_ids.push(id);
    }
    let text = render_prompt(
        &loaded.tokenizer,
        &args.prompt,
        args.system_prompt.as_deref(),
        args.ignore_chat_template,
        args.chat_template_config.as_deref(),
    )?;
    let mut ids = loaded.tokenizer.encode_prompt(&text)?;
    let cache: Vec<KvCache> = match &args.prompt_cache_file {
        Some(path) => {
            let (cache, _meta) = load_prompt_cache(path)?;
            if cache.len() != loaded.model.num_layers() {
                return Err(Error::Invalid(format!(
                    "{}: {} layers cached, the model has {}",
                    path.display(),
                    cache.len(),
                    loaded.model.num_layers()
                )));
            }
            // mlx-lm's convention: the cached prompt's tokens are not repeated; the new prompt
            // is what follows them (without a second BOS).
            let bos = loaded.tokenizer.bos_token.as_deref().and_then(|b| loaded.tokenizer.token_to_id(b));
            if bos.is_some() && bos == ids.first().copied() && cache[0].offset() > 0 {
                ids.remove(0);
            }
            cache
        }
        None => loaded.model.make_cache(args.max_kv_size),
    };
    let sampler: SamplerConfig = args.sampling.to_config(&loaded.tokenizer);
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampler,
        max_kv_size: args.max_kv_size,
        prefill_step_size: args.prefill_step_size,
        stop: args.stop.clone(),
        kv_quantization,
    };
    if args.verbose {
        println!("==========");
    }
    let mut out = std::io::stdout();
    let mut last = None;
    for r in stream_generate_with_cache(loaded.model.as_ref(), &loaded.tokenizer, &ids, options, cache)? {
        let r = r?;
        print!("{}", r.text);
        let _ = out.flush();
        last = Some(r);
    }
    println!();
    if args.verbose {
        println!("==========");
        if let Some(r) = last {
            println!("Prompt: {} tokens, {:.3} tokens-per-sec", r.prompt_tokens, r.prompt_tps);
            println!("Generation: {} tokens, {:.3} tokens-per-sec", r.generation_tokens, r.generation_tps);
            println!("Peak memory: {:.3} GB", r.peak_memory);
        } else {
            println!("No text generated for this prompt");
        }
    }
    Ok(())
}
