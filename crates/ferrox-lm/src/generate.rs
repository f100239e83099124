//! Text generation: prefill the prompt in chunks, then sample token by token, streaming
//! [`GenerationResponse`]s with text, token, log-probabilities and speed figures, until an
//! end-of-sequence id, a stop string, or `max_tokens`.

use std::time::Instant;

use ferrox::{self as fx, Array, Dtype};

use crate::cache::{maybe_quantize, KvCache, KvQuantization};
use crate::decode_graph::DecodeGraph;
use crate::detokenizer::Detokenizer;
use crate::error::{Error, Result};
use crate::models::{LanguageModel, Logits};
use crate::sample::{greedy_rows, Sampled, Sampler, SamplerConfig};
use crate::tokenizer::Tokenizer;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` were generated.
    Length,
}

impl FinishReason {
    /// `"stop"` or `"length"`, as mlx-lm and the OpenAI API spell them.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Generation settings.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// The most tokens to generate.
    pub max_tokens: usize,
    /// How tokens are chosen.
    pub sampler: SamplerConfig,
    /// Keep at most this many positions in the KV cache (a rotating cache).
    pub max_kv_size: Option<usize>,
    /// The prompt is run through the model this many tokens at a time.
    pub prefill_step_size: usize,
    /// Generation stops when the text contains one of these (which is cut off).
    pub stop: Vec<String>,
    /// Quantize the KV caches (`--kv-bits`), once they hold `start` positions.
    pub kv_quantization: Option<KvQuantization>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            max_kv_size: None,
            prefill_step_size: 2048,
            stop: vec![],
            kv_quantization: None,
        }
    }
}

impl GenerateOptions {
    /// Checks the settings that have no meaning: an empty rotating cache or prefill step (the
    /// sampler checks its own when it is made).
    pub fn validate(&self) -> Result<()> {
        if self.max_kv_size == Some(0) {
            return Err(Error::Invalid("max_kv_size must be at least 1".into()));
        }
        if self.prefill_step_size == 0 {
            return Err(Error::Invalid("prefill_step_size must be at least 1".into()));
        }
        if let Some(q) = &self.kv_quantization {
            q.check_max_kv_size(self.max_kv_size)?;
        }
        Ok(())
    }
}

/// One step of [`stream_generate`].
#[derive(Clone, Debug)]
pub struct GenerationResponse {
    /// The new text this token completed (may be empty while a character is incomplete).
    pub text: String,
    /// The token.
    pub token: u32,
    /// Its log-probability and the top alternatives.
    pub logprobs: Sampled,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Prompt processing speed, tokens per second.
    pub prompt_tps: f64,
    /// Tokens generated so far, this one included.
    pub generation_tokens: usize,
    /// Generation speed so far, tokens per second (tokens over the time since the first).
    pub generation_tps: f64,
    /// Peak memory so far, in GB.
    pub peak_memory: f64,
    /// Set on the last response.
    pub finish_reason: Option<FinishReason>,
}

/// Token id rows (all of one length) as the model's `[B, L]` int32 input.
pub(crate) fn token_rows(rows: &[&[u32]]) -> Result<Array> {
    let n = rows.first().map_or(0, |r| r.len());
    let flat: Vec<i32> = rows.iter().flat_map(|r| r.iter().map(|&t| t as i32)).collect();
    Ok(fx::reshape_usize(&Array::from_vec(flat), &[rows.len(), n])?)
}

/// The logits of running `ids` `[B, L]` (appended to `cache`), of the positions `which` says;
/// the caches are quantized afterwards if `kv` says so (mlx-lm checks `quantized_kv_start`
/// after every pass).
pub(crate) fn forward(
    model: &dyn LanguageModel,
    ids: &Array,
    cache: &mut [KvCache],
    kv: Option<&KvQuantization>,
    which: Logits,
) -> Result<Array> {
    let logits = model.forward_logits(ids, Some(cache), which)?;
    if let Some(q) = kv {
        maybe_quantize(cache, q)?;
    }
    Ok(logits)
}

/// Evaluates the caches (or, before any holds arrays, `logits`), so a prompt run chunk by
/// chunk keeps its graph and memory small.
pub(crate) fn eval_caches(cache: &[KvCache], logits: &Array) -> Result<()> {
    let mut arrays: Vec<&Array> = cache.iter().flat_map(KvCache::arrays).collect();
    if arrays.is_empty() {
        arrays.push(logits);
    }
    Ok(fx::eval(&arrays)?)
}

/// Each row's last-position logits, as f32 on the host.
pub(crate) fn last_rows(logits: &Array) -> Result<Vec<Vec<f32>>> {
    let (l, v) = (logits.shape()[1], logits.shape()[2]);
    let last = fx::slice_axis(logits, 1, l as isize - 1, l as isize)?;
    Ok(fx::astype(&last, Dtype::F32)?.to_vec::<f32>()?.chunks(v.max(1)).map(<[f32]>::to_vec).collect())
}

/// The last-position logits of running `ids` (appended to `cache`), as f32 on the host (the
/// only position whose output head runs).
fn last_logits(
    model: &dyn LanguageModel,
    ids: &[u32],
    cache: &mut [KvCache],
    kv: Option<&KvQuantization>,
) -> Result<Vec<f32>> {
    let logits = forward(model, &token_rows(&[ids])?, cache, kv, Logits::Last)?;
    Ok(last_rows(&logits)?.pop().unwrap_or_default())
}

/// Runs `prompt` through the model into `cache`, `step` tokens at a time (mlx-lm's chunks),
/// and returns its last token's logits, the only ones computed (the output head of a prompt's
/// other positions never runs). As in mlx-lm, the last token runs as a pass of its own, unless
/// that changes nothing ([`KvCache::splits_alike`], no cache quantization): then it runs with
/// the last chunk. If the prompt takes the sequence past the model's
/// [`LanguageModel::switch_length`], the first chunk reaches past it, so every position is
/// computed as one pass over the whole sequence would.
pub fn prefill(model: &dyn LanguageModel, prompt: &[u32], cache: &mut [KvCache], step: usize) -> Result<Vec<f32>> {
    prefill_quantizing(model, prompt, cache, step, None)
}

/// [`prefill`], quantizing the caches after each forward pass as `kv` says (as mlx-lm
/// checks `quantized_kv_start` after each pass).
pub fn prefill_quantizing(
    model: &dyn LanguageModel,
    prompt: &[u32],
    cache: &mut [KvCache],
    step: usize,
    kv: Option<&KvQuantization>,
) -> Result<Vec<f32>> {
    let step = step.max(1);
    if prompt.is_empty() {
        return Err(Error::Invalid("prefill: the prompt is empty".into()));
    }
    // Tokens the first pass must cover to reach past the switch length, if this prompt crosses it.
    let offset = cache.first().map_or(0, KvCache::offset);
    let need = match model.switch_length() {
        Some(n) if offset <= n && offset + prompt.len() > n => n + 1 - offset,
        _ => 0,
    };
    Ok(prefill_rows(model, &[prompt], cache, step, need, kv)?.pop().unwrap_or_default())
}

/// Runs `rows` (token ids of one length, a sequence each) through the model into `cache` in
/// mlx-lm's chunks of `step` columns — the first at least `first` long (the whole prompt if
/// only that reaches so far), the last column alone unless [`last_alone`] says it need not be
/// — evaluating only the caches between chunks. Returns each row's last-position logits (f32,
/// on the host), the only ones computed.
pub(crate) fn prefill_rows(
    model: &dyn LanguageModel,
    rows: &[&[u32]],
    cache: &mut [KvCache],
    step: usize,
    first: usize,
    kv: Option<&KvQuantization>,
) -> Result<Vec<Vec<f32>>> {
    let n = rows.first().map_or(0, |r| r.len());
    let body = n - last_alone(cache, n, kv).min(n);
    let head = if first > body { n } else { step.max(first).min(body) };
    let mut ends: Vec<usize> = std::iter::successors(Some(head), |&e| (e < body).then(|| (e + step).min(body)))
        .chain([n])
        .filter(|&e| e > 0)
        .collect();
    ends.dedup();
    let (mut start, mut logits) = (0, None);
    for end in ends {
        if let Some(l) = &logits {
            eval_caches(cache, l)?;
        }
        let chunk: Vec<&[u32]> = rows.iter().map(|r| &r[start..end]).collect();
        logits = Some(forward(model, &token_rows(&chunk)?, cache, kv, Logits::Last)?);
        start = end;
    }
    last_rows(&logits.ok_or_else(|| Error::Invalid("prefill: the prompt is empty".into()))?)
}

/// How many of a prompt's last `n` tokens run as a pass of their own after the others: 1, as
/// in mlx-lm, unless running it with the others changes nothing (then 0).
fn last_alone(cache: &[KvCache], n: usize, kv: Option<&KvQuantization>) -> usize {
    usize::from(kv.is_some() || !cache.iter().all(|c| c.splits_alike(n)))
}

/// A running generation; iterate it for [`GenerationResponse`]s.
pub struct StreamGenerate<'a> {
    model: &'a dyn LanguageModel,
    emitter: TextEmitter<'a>,
    options: GenerateOptions,
    sampler: Sampler,
    cache: Vec<KvCache>,
    history: Vec<u32>,
    prompt_tokens: usize,
    prompt_tps: f64,
    generated: usize,
    first_token_at: Option<Instant>,
    next_logits: Option<NextLogits>,
    /// Pick tokens with ops where the logits are ([`greedy_rows`]): plain greedy sampling (on
    /// the CPU too: the ops' vectorized reductions beat a host pass over the vocabulary).
    pick_on_device: bool,
    /// Replays recorded decode steps where it can (plain greedy on a GPU).
    graph: DecodeGraph,
    done: bool,
}

/// The logits the next pick reads: on the host, or the model's output `[1, L, V]` as an
/// array (for [`greedy_rows`], which reads back only the pick).
enum NextLogits {
    Host(Vec<f32>),
    Array(Array),
    /// Already picked (by a replayed step).
    Picked(Sampled),
}

/// Turns one sequence's sampled tokens into text: streaming detokenization, and the end on an
/// end-of-sequence id, at `max_tokens`, or at a stop string (cut off; a tail that could begin
/// one is held back until it cannot).
pub(crate) struct TextEmitter<'a> {
    detokenizer: Detokenizer<'a>,
    eos: Vec<u32>,
    stop: Vec<String>,
    max_tokens: usize,
    generated: usize,
    held: String,
}

impl<'a> TextEmitter<'a> {
    /// An emitter for `tokenizer`'s end ids and `options`' stop strings and token limit.
    pub(crate) fn new(tokenizer: &'a Tokenizer, options: &GenerateOptions) -> TextEmitter<'a> {
        TextEmitter {
            detokenizer: tokenizer.detokenizer(),
            eos: tokenizer.eos_token_ids.clone(),
            stop: options.stop.clone(),
            max_tokens: options.max_tokens,
            generated: 0,
            held: String::new(),
        }
    }

    /// The text `token` completes, and why generation ends with it, if it does.
    pub(crate) fn push(&mut self, token: u32) -> Result<(String, Option<FinishReason>)> {
        self.generated += 1;
        let mut finish = None;
        let mut text = String::new();
        if self.eos.contains(&token) {
            finish = Some(FinishReason::Stop);
            text.push_str(&self.detokenizer.finalize()?);
        } else {
            text.push_str(&self.detokenizer.add_token(token)?);
            if self.generated >= self.max_tokens {
                finish = Some(FinishReason::Length);
                text.push_str(&self.detokenizer.finalize()?);
            }
        }
        self.held.push_str(&text);
        let mut out = std::mem::take(&mut self.held);
        if let Some(cut) = self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| out.find(s.as_str())).min() {
            out.truncate(cut);
            finish = Some(FinishReason::Stop);
        } else if finish.is_none() {
            let keep = self.stop.iter().map(|s| partial_suffix(&out, s)).max().unwrap_or(0);
            self.held = out.split_off(out.len() - keep);
        }
        Ok((out, finish))
    }
}

/// Starts generating from `prompt` token ids with fresh caches.
pub fn stream_generate<'a>(
    model: &'a dyn LanguageModel,
    tokenizer: &'a Tokenizer,
    prompt: &[u32],
    options: GenerateOptions,
) -> Result<StreamGenerate<'a>> {
    let cache = model.make_cache(options.max_kv_size);
    stream_generate_with_cache(model, tokenizer, prompt, options, cache)
}

/// Like [`stream_generate`], continuing `cache` (a prompt cache): `prompt` holds only the
/// tokens that follow what the cache already holds.
pub fn stream_generate_with_cache<'a>(
    model: &'a dyn LanguageModel,
    tokenizer: &'a Tokenizer,
    prompt: &[u32],
    options: GenerateOptions,
    cache: Vec<KvCache>,
) -> Result<StreamGenerate<'a>> {
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt is empty: give at least one token".into()));
    }
    if cache.len() != model.num_layers() {
        return Err(Error::Invalid(format!("{} caches for a model of {} layers", cache.len(), model.num_layers())));
    }
    options.validate()?;
    let sampler = Sampler::new(options.sampler.clone())?;
    let pick_on_device = sampler.is_plain_greedy();
    // Recorded decode steps replay on a GPU only (on the CPU a step's ops are the work).
    let on_gpu = fx::default_device() != fx::Device::Cpu;
    let graph =
        DecodeGraph::new(pick_on_device && on_gpu && model.replays_decode() && options.kv_quantization.is_none());
    Ok(StreamGenerate {
        model,
        emitter: TextEmitter::new(tokenizer, &options),
        sampler,
        cache,
        history: prompt.to_vec(),
        prompt_tokens: prompt.len(),
        prompt_tps: 0.0,
        generated: 0,
        first_token_at: None,
        next_logits: None,
        pick_on_device,
        graph,
        done: options.max_tokens == 0,
        options,
    })
}

impl StreamGenerate<'_> {
    /// The caches as they stand (to save as a prompt cache, or to continue a conversation).
    pub fn cache(&self) -> &[KvCache] {
        &self.cache
    }

    /// Takes the caches out, with the tokens this generation added to them (the prompt given
    /// and the generated tokens the model has run).
    pub fn into_parts(self) -> (Vec<KvCache>, Vec<u32>) {
        let mut tokens = self.history;
        if self.next_logits.is_none() && self.generated > 0 {
            tokens.pop(); // the last token was sampled but never run
        }
        (self.cache, tokens)
    }

    fn step(&mut self) -> Result<GenerationResponse> {
        let logits = match self.next_logits.take() {
            Some(l) => l,
            None => {
                let t0 = Instant::now();
                let (step, kv) = (self.options.prefill_step_size, self.options.kv_quantization.as_ref());
                let logits = prefill_quantizing(self.model, &self.history, &mut self.cache, step, kv)?;
                self.prompt_tps = self.prompt_tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                NextLogits::Host(logits)
            }
        };
        let sampled = match logits {
            NextLogits::Host(l) => self.sampler.sample(&l, &self.history)?,
            NextLogits::Array(a) => {
                let l = a.shape()[1];
                let last = fx::slice_axis(&a, 1, l as isize - 1, l as isize)?;
                greedy_rows(&last)?.pop().ok_or_else(|| Error::Invalid("no logits to sample".into()))?
            }
            NextLogits::Picked(s) => s,
        };
        let token = sampled.token;
        self.generated += 1;
        self.history.push(token);
        let first = *self.first_token_at.get_or_insert_with(Instant::now);
        let (out, finish) = self.emitter.push(token)?;
        if finish.is_none() {
            // Run the model on the new token now, so the next call only samples. If it takes
            // the sequence past the model's switch length, run the whole sequence again (when
            // this generation holds all of it), as transformers does.
            let offset = self.cache.first().map_or(0, KvCache::offset);
            let rerun = self.model.switch_length() == Some(offset) && self.history.len() == offset + 1;
            let (step, kv) = (self.options.prefill_step_size, self.options.kv_quantization.as_ref());
            self.next_logits = Some(if rerun {
                self.cache = self.model.make_cache(self.options.max_kv_size);
                NextLogits::Host(prefill_quantizing(self.model, &self.history, &mut self.cache, step, kv)?)
            } else if self.pick_on_device {
                match self.graph.step(self.model, &mut self.cache, &[token])?.and_then(|mut p| p.pop()) {
                    Some(picked) => NextLogits::Picked(picked),
                    None => NextLogits::Array(forward(
                        self.model,
                        &token_rows(&[&[token]])?,
                        &mut self.cache,
                        kv,
                        Logits::All,
                    )?),
                }
            } else {
                NextLogits::Host(last_logits(self.model, &[token], &mut self.cache, kv)?)
            });
        }
        // As mlx-lm counts it: tokens so far over the time since the first one was sampled.
        let generation_tps = self.generated as f64 / first.elapsed().as_secs_f64().max(1e-9);
        self.done = finish.is_some();
        Ok(GenerationResponse {
            text: out,
            token,
            logprobs: sampled,
            prompt_tokens: self.prompt_tokens,
            prompt_tps: self.prompt_tps,
            generation_tokens: self.generated,
            generation_tps,
            peak_memory: fx::peak_memory() as f64 / 1e9,
            finish_reason: finish,
        })
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop` (on a
/// character boundary).
fn partial_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

impl Iterator for StreamGenerate<'_> {
    type Item = Result<GenerationResponse>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.step();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// Generates from a text prompt (encoded as mlx-lm does) and returns the whole text.
pub fn generate(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    prompt: &str,
    options: GenerateOptions,
) -> Result<String> {
    let ids = tokenizer.encode_prompt(prompt)?;
    let mut text = String::new();
    for r in stream_generate(model, tokenizer, &ids, options)? {
        text.push_str(&r?.text);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::partial_suffix;

    #[test]
    fn stop_string_prefixes() {
        assert_eq!(partial_suffix("hello wor", "world"), 3);
        assert_eq!(partial_suffix("hello", "world"), 0);
        assert_eq!(partial_suffix("a<|im", "<|im_end|>"), 4);
        assert_eq!(partial_suffix("é", "éa"), 2);
    }
}
