//! Batched generation: several prompts of different lengths decoded together, one forward
//! pass per step for the whole batch.
//!
//! Prompts are padded on the left to one length, and every cache masks each row's padding
//! away ([`KvCache::set_left_padding`]), so a row's queries see only its own tokens. A row's
//! positions are shifted by its padding; rotary embeddings and sliding windows depend only
//! on the distance between positions, so each row computes what it would alone (up to
//! rounding). Each row samples with its own sampler (seed + row index), stops on its own
//! (end id, stop string, `max_tokens`), and leaves the batch when it does, its cache rows
//! dropped ([`KvCache::select_rows`]). Sliding-window layers use standard caches with
//! window masks here (rotating caches hold one position layout for every row).

use std::time::Instant;

use ferrox as fx;

use crate::cache::make_prompt_cache;
use crate::error::{Error, Result};
use crate::generate::{eval_caches, forward, last_rows, token_rows, FinishReason, GenerateOptions, TextEmitter};
use crate::models::LanguageModel;
use crate::sample::{greedy_rows, Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// What [`batch_generate`] returns: each prompt's text, tokens and finish reason, in the
/// prompts' order, and the speed of the whole batch.
#[derive(Clone, Debug)]
pub struct BatchResult {
    /// The generated text of each prompt.
    pub texts: Vec<String>,
    /// The generated tokens of each prompt.
    pub tokens: Vec<Vec<u32>>,
    /// Why each prompt's generation ended.
    pub finish_reasons: Vec<FinishReason>,
    /// Throughput of the batch.
    pub stats: BatchStats,
}

/// Throughput of a batched generation (as mlx-lm's `BatchStats`).
#[derive(Clone, Debug, Default)]
pub struct BatchStats {
    /// Prompt tokens of all prompts (padding not counted).
    pub prompt_tokens: usize,
    /// Prompt tokens per second.
    pub prompt_tps: f64,
    /// Tokens generated over all prompts.
    pub generation_tokens: usize,
    /// Generated tokens per second over all prompts.
    pub generation_tps: f64,
    /// Peak memory, in GB.
    pub peak_memory: f64,
}

/// One step's outcome for every row: logits on the host to sample from, or tokens already
/// picked where the logits are (plain greedy sampling on a GPU).
enum Picks {
    Logits(Vec<Vec<f32>>),
    Tokens(Vec<u32>),
}

/// One prompt's state while it is in the batch.
struct Row<'a> {
    index: usize,
    sampler: Sampler,
    emitter: TextEmitter<'a>,
    history: Vec<u32>,
    text: String,
    tokens: Vec<u32>,
}

/// Generates from each of `prompts` (token ids) at once; see the module docs.
/// `options.max_kv_size` (rotating caches) and `options.kv_quantization` are not supported
/// in a batch.
pub fn batch_generate(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
) -> Result<BatchResult> {
    if prompts.is_empty() {
        return Err(Error::Invalid("batch_generate: no prompts".into()));
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::Invalid(format!("batch_generate: prompt {i} is empty")));
    }
    if options.max_kv_size.is_some() || options.kv_quantization.is_some() {
        return Err(Error::Invalid(
            "batch_generate: max_kv_size (a rotating cache) and kv_bits are not supported in a batch".into(),
        ));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(n) = model.switch_length() {
        if longest + options.max_tokens > n {
            return Err(Error::Invalid(format!(
                "batch_generate: this model computes sequences longer than {n} tokens differently (LongRoPE); \
                 a padded batch cannot cross that length, generate these prompts one by one"
            )));
        }
    }
    let padding: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    let mut cache = make_prompt_cache(model.num_layers(), None);
    for c in &mut cache {
        c.set_left_padding(&padding)?;
    }
    let mut rows: Vec<Row> = prompts
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let config = SamplerConfig {
                seed: options.sampler.seed.map(|s| s.wrapping_add(index as u64)),
                ..options.sampler.clone()
            };
            Ok(Row {
                index,
                sampler: Sampler::new(config)?,
                emitter: TextEmitter::new(tokenizer, options),
                history: p.clone(),
                text: String::new(),
                tokens: Vec::new(),
            })
        })
        .collect::<Result<_>>()?;
    // Any valid id pads (its positions are masked): each row repeats its first token.
    let padded: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&padding)
        .map(|(p, &n)| std::iter::repeat_n(p[0], n).chain(p.iter().copied()).collect())
        .collect();

    // Prefill all but the last column in chunks, then the last column gives the first logits.
    let t0 = Instant::now();
    let step = options.prefill_step_size.max(1);
    let mut start = 0;
    while start + 1 < longest {
        let end = (start + step).min(longest - 1);
        let chunk: Vec<&[u32]> = padded.iter().map(|r| &r[start..end]).collect();
        let logits = forward(model, &token_rows(&chunk)?, &mut cache, None)?;
        eval_caches(&cache, &logits)?;
        start = end;
    }
    // Plain greedy sampling on a GPU picks the tokens there (only the ids come back).
    let on_device = fx::default_device() != fx::Device::Cpu && rows.iter().all(|r| r.sampler.is_plain_greedy());
    let picks = |logits: fx::Array| -> Result<Picks> {
        Ok(if on_device {
            Picks::Tokens(greedy_rows(&logits)?.into_iter().map(|s| s.token).collect())
        } else {
            Picks::Logits(last_rows(&logits)?)
        })
    };
    let last: Vec<&[u32]> = padded.iter().map(|r| &r[longest - 1..]).collect();
    let mut logits = picks(forward(model, &token_rows(&last)?, &mut cache, None)?)?;
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let prompt_tps = prompt_tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);

    let t1 = Instant::now();
    let mut results: Vec<Option<(String, Vec<u32>, FinishReason)>> = vec![None; prompts.len()];
    let mut generated = 0;
    while !rows.is_empty() && options.max_tokens > 0 {
        let mut keep = Vec::with_capacity(rows.len());
        let mut next = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter_mut().enumerate() {
            let token = match &logits {
                Picks::Logits(l) => row.sampler.sample(&l[i], &row.history)?.token,
                Picks::Tokens(t) => t[i],
            };
            generated += 1;
            row.history.push(token);
            row.tokens.push(token);
            let (text, finish) = row.emitter.push(token)?;
            row.text.push_str(&text);
            match finish {
                Some(f) => {
                    results[row.index] = Some((std::mem::take(&mut row.text), std::mem::take(&mut row.tokens), f))
                }
                None => {
                    keep.push(i);
                    next.push(token);
                }
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < rows.len() {
            rows = rows.into_iter().enumerate().filter(|(i, _)| keep.contains(i)).map(|(_, r)| r).collect();
            for c in &mut cache {
                c.select_rows(&keep)?;
            }
        }
        let next: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
        logits = picks(forward(model, &token_rows(&next)?, &mut cache, None)?)?;
    }
    let generation_tps = generated as f64 / t1.elapsed().as_secs_f64().max(1e-9);
    let mut out = BatchResult {
        texts: Vec::with_capacity(prompts.len()),
        tokens: Vec::with_capacity(prompts.len()),
        finish_reasons: Vec::with_capacity(prompts.len()),
        stats: BatchStats {
            prompt_tokens,
            prompt_tps,
            generation_tokens: generated,
            generation_tps,
            peak_memory: fx::peak_memory() as f64 / 1e9,
        },
    };
    for r in results {
        let (text, tokens, finish) = r.unwrap_or((String::new(), Vec::new(), FinishReason::Length));
        out.texts.push(text);
        out.tokens.push(tokens);
        out.finish_reasons.push(finish);
    }
    Ok(out)
}
