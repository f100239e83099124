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
//!
//! With `max_kv_size`, rotating caches are needed after all: the rows are then prefilled one
//! by one and stacked for decoding ([`crate::cache_batch`]), still at the shifted positions.
//! With `kv_quantization`, the padded standard caches become quantized ones (padding kept)
//! once the batch holds `start` positions, padding included. A padded row's keys are rotated
//! to shifted positions before they are quantized, so its quantization error differs from
//! that of the same prompt alone: rows without padding agree with one-by-one generation token
//! for token, padded ones to within quantization error.

use std::time::Instant;

use ferrox as fx;

use crate::cache::{make_prompt_cache, BatchRotatingCache, KvCache};
use crate::decode_graph::DecodeGraph;
use crate::error::{Error, Result};
use crate::generate::{
    forward, last_rows, prefill, prefill_rows, token_rows, FinishReason, GenerateOptions, TextEmitter,
};
use crate::models::{LanguageModel, Logits};
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
/// With `options.max_kv_size` the rows are prefilled one by one into rotating caches and then
/// decoded together ([`crate::cache_batch`]); with `options.kv_quantization` the caches are
/// quantized once the batch (padding included) holds `start` positions.
pub fn batch_generate(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
) -> Result<BatchResult> {
    options.validate()?;
    if prompts.is_empty() {
        return Err(Error::Invalid("batch_generate: no prompts".into()));
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::Invalid(format!("batch_generate: prompt {i} is empty")));
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
    let t0 = Instant::now();
    let (mut cache, first) = match options.max_kv_size {
        None => padded_prefill(model, prompts, &padding, options)?,
        Some(m) => rowwise_prefill(model, prompts, &padding, m, options)?,
    };
    let mut logits = Picks::Logits(first);
    // Plain greedy sampling picks the tokens with ops (only the ids come back).
    let on_device = rows.iter().all(|r| r.sampler.is_plain_greedy());
    let picks = |logits: fx::Array| -> Result<Picks> {
        Ok(if on_device {
            Picks::Tokens(greedy_rows(&logits)?.into_iter().map(|s| s.token).collect())
        } else {
            Picks::Logits(last_rows(&logits)?)
        })
    };
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let prompt_tps = prompt_tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);

    let kv = options.kv_quantization.as_ref();
    // Greedy steps on a GPU replay a recorded step where they can.
    let on_gpu = fx::default_device() != fx::Device::Cpu;
    let mut graph = DecodeGraph::new(on_device && on_gpu && model.replays_decode() && kv.is_none());
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
        if let Some(p) = graph.step(model, &mut cache, &next)? {
            logits = Picks::Tokens(p.into_iter().map(|s| s.token).collect());
            continue;
        }
        let next: Vec<&[u32]> = next.iter().map(std::slice::from_ref).collect();
        logits = picks(forward(model, &token_rows(&next)?, &mut cache, kv, Logits::All)?)?;
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

/// Runs the left-padded prompts through the model as one batch into standard caches that mask
/// each row's padding; returns the caches and each row's last logits.
fn padded_prefill(
    model: &dyn LanguageModel,
    prompts: &[Vec<u32>],
    padding: &[usize],
    options: &GenerateOptions,
) -> Result<(Vec<KvCache>, Vec<Vec<f32>>)> {
    let mut cache = make_prompt_cache(model.num_layers(), None);
    for c in &mut cache {
        c.set_left_padding(padding)?;
    }
    // Any valid id pads (its positions are masked): each row repeats its first token.
    let padded: Vec<Vec<u32>> = prompts
        .iter()
        .zip(padding)
        .map(|(p, &n)| std::iter::repeat_n(p[0], n).chain(p.iter().copied()).collect())
        .collect();
    let rows: Vec<&[u32]> = padded.iter().map(Vec::as_slice).collect();
    let kv = options.kv_quantization.as_ref();
    let logits = prefill_rows(model, &rows, &mut cache, options.prefill_step_size.max(1), 0, kv)?;
    Ok((cache, logits))
}

/// Runs each prompt alone into rotating caches of `max_kv_size` positions (numbered from the
/// row's padding, so all rows end at one position), then stacks them into one batch cache per
/// layer ([`BatchRotatingCache`]); returns the caches and each row's last logits.
fn rowwise_prefill(
    model: &dyn LanguageModel,
    prompts: &[Vec<u32>],
    padding: &[usize],
    max_kv_size: usize,
    options: &GenerateOptions,
) -> Result<(Vec<KvCache>, Vec<Vec<f32>>)> {
    let mut layers: Vec<Vec<KvCache>> = (0..model.num_layers()).map(|_| Vec::new()).collect();
    let mut logits = Vec::with_capacity(prompts.len());
    for (p, &pad) in prompts.iter().zip(padding) {
        let mut row = model.make_cache(Some(max_kv_size));
        for c in &mut row {
            c.set_start(pad)?;
        }
        logits.push(prefill(model, p, &mut row, options.prefill_step_size)?);
        for (layer, c) in layers.iter_mut().zip(row) {
            layer.push(c);
        }
    }
    let cache = layers
        .into_iter()
        .map(|rows| Ok(KvCache::BatchRotating(BatchRotatingCache::merge(rows)?)))
        .collect::<Result<_>>()?;
    Ok((cache, logits))
}
