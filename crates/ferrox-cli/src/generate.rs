//! `ferrox generate`: mlx_lm.generate's flags, streaming output and closing statistics.

use std::io::{Read, Write};

use clap::Args;
use ferrox_lm::cache::{load_prompt_cache, KvCache};
use ferrox_lm::generate::{stream_generate_with_cache, GenerateOptions};
use ferrox_lm::prompt::{encode_user_prompt, UserPrompt};
use ferrox_lm::{Error, Result, SamplerConfig};

use crate::common::{load_model, KvQuantArgs, ModelArgs, SamplingArgs};

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
    /// The start of the assistant's reply, for the model to continue (with the chat template).
    #[arg(long)]
    pub prefill_response: Option<String>,
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
    #[command(flatten)]
    pub kv: KvQuantArgs,
    /// A prompt cache (from `ferrox cache-prompt` or mlx_lm.cache_prompt) the prompt continues.
    #[arg(long)]
    pub prompt_cache_file: Option<std::path::PathBuf>,
    /// Tokens per forward pass while processing the prompt.
    #[arg(long, default_value_t = 2048)]
    pub prefill_step_size: usize,
    /// Stop when the output contains this text (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Also stop on these tokens (one or more, or the flag repeated).
    #[arg(long, num_args = 1..)]
    pub extra_eos_token: Vec<String>,
    /// Print the prompt, separators and statistics (`--verbose false` prints only the text).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verbose: bool,
}

/// The prompt text: standard input for `-`, else the argument with `\\n` and `\\t` turned into
/// a newline and a tab (as mlx_lm.generate does).
pub fn read_prompt(prompt: &str) -> Result<String> {
    if prompt == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Invalid(format!("reading the prompt from stdin: {e}")))?;
        return Ok(s);
    }
    Ok(prompt.replace("\\n", "\n").replace("\\t", "\t"))
}

/// `--chat-template-config`: a JSON object of template variables.
fn template_config(s: Option<&str>) -> Result<serde_json::Map<String, serde_json::Value>> {
    match s {
        Some(s) => match serde_json::from_str(s) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            _ => Err(Error::Invalid(format!("--chat-template-config must be a JSON object, got {s:?}"))),
        },
        None => Ok(Default::default()),
    }
}

pub fn run(mut args: GenerateArgs) -> Result<()> {
    let kv_quantization = args.kv.quantization()?;
    // A prompt cache names the model that made it; it is the default model here.
    let prompt_cache = args.prompt_cache_file.as_ref().map(load_prompt_cache).transpose()?;
    if let Some((cache, meta)) = &prompt_cache {
        if args.model.model.is_none() {
            args.model.model = meta.get("model").cloned();
        }
        if let Some(KvCache::Quantized(q)) = cache.first() {
            let (group_size, bits) = q.quantization();
            if args.kv.kv_bits.is_some_and(|b| b != bits) || args.kv.kv_group_size != group_size {
                return Err(Error::Invalid(format!(
                    "the prompt cache is quantized to {bits} bits in groups of {group_size}; \
                     --kv-bits / --kv-group-size say {:?} / {}",
                    args.kv.kv_bits, args.kv.kv_group_size
                )));
            }
        }
    }
    let mut loaded = load_model(&args.model)?;
    for t in &args.extra_eos_token {
        let id = loaded
            .tokenizer
            .token_to_id(t)
            .ok_or_else(|| Error::Invalid(format!("--extra-eos-token {t:?} is not a token")))?;
        loaded.tokenizer.eos_token_ids.push(id);
    }
    let request = UserPrompt {
        prompt: read_prompt(&args.prompt)?,
        system: args.system_prompt.clone(),
        prefill_response: args.prefill_response.clone(),
        ignore_chat_template: args.ignore_chat_template,
        template_config: template_config(args.chat_template_config.as_deref())?,
        continues_cache: prompt_cache.is_some(),
    };
    let ids = encode_user_prompt(&loaded.tokenizer, &request)?;
    let cache: Vec<KvCache> = match prompt_cache {
        Some((cache, _)) => {
            let path = args.prompt_cache_file.as_ref().expect("a cache was loaded from it");
            if cache.len() != loaded.model.num_layers() {
                return Err(Error::Invalid(format!(
                    "{}: {} layers cached, the model has {}",
                    path.display(),
                    cache.len(),
                    loaded.model.num_layers()
                )));
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
