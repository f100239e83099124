//! Text generation: prefill the prompt in chunks, then sample token by token, streaming
//! [`GenerationResponse`]s with text, token, log-probabilities and speed figures, until an
//! end-of-sequence id, a stop string, or `max_tokens`.

use std::time::Instant;

use ferrox::{self as fx, Array, Dtype};

use crate::cache::KvCache;
use crate::detokenizer::Detokenizer;
use crate::error::{Error, Result};
use crate::models::LanguageModel;
use crate::sample::{Sampled, Sampler, SamplerConfig};
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
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            sampler: SamplerConfig::default(),
            max_kv_size: None,
            prefill_step_size: 2048,
            stop: vec![],
        }
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

/// The last-position logits of running `ids` (appended to `cache`) as f32 on the host.
fn last_logits(model: &dyn LanguageModel, ids: &[u32], cache: &mut [KvCache]) -> Result<Vec<f32>> {
    let x = Array::from_vec(ids.iter().map(|&t| t as i32).collect::<Vec<_>>());
    let x = fx::reshape_usize(&x, &[1, ids.len()])?;
    let logits = model.forward(&x, Some(cache))?;
    let l = logits.shape()[1];
    let last = fx::slice_axis(&logits, 1, l as isize - 1, l as isize)?;
    Ok(fx::astype(&last, Dtype::F32)?.to_vec::<f32>()?)
}

/// Runs `prompt` through the model into `cache`, `step` tokens at a time, except its last
/// token; returns that token's logits after running it too. If the prompt takes the sequence
/// past the model's [`LanguageModel::switch_length`], the first chunk reaches past it, so every
/// position is computed as one pass over the whole sequence would.
pub fn prefill(model: &dyn LanguageModel, prompt: &[u32], cache: &mut [KvCache], step: usize) -> Result<Vec<f32>> {
    let step = step.max(1);
    let Some(split) = prompt.len().checked_sub(1) else {
        return Err(Error::Invalid("prefill: the prompt is empty".into()));
    };
    let (body, last) = prompt.split_at(split);
    // Tokens the first pass must cover to reach past the switch length, if this prompt crosses it.
    let offset = cache.first().map_or(0, KvCache::offset);
    let need = match model.switch_length() {
        Some(n) if offset <= n && offset + prompt.len() > n => n + 1 - offset,
        _ => 0,
    };
    if need > body.len() {
        return last_logits(model, prompt, cache); // only the whole prompt reaches past it
    }
    let (head, tail) = body.split_at(step.max(need).min(body.len()));
    for chunk in std::iter::once(head).filter(|c| !c.is_empty()).chain(tail.chunks(step)) {
        let x = fx::reshape_usize(
            &Array::from_vec(chunk.iter().map(|&t| t as i32).collect::<Vec<_>>()),
            &[1, chunk.len()],
        )?;
        let logits = model.forward(&x, Some(cache))?;
        // Evaluate the caches chunk by chunk so the graph (and memory) stays small.
        let mut arrays: Vec<&Array> = cache.iter().filter_map(|c| c.buffers()).flat_map(|(k, v)| [k, v]).collect();
        if arrays.is_empty() {
            arrays.push(&logits);
        }
        fx::eval(&arrays)?;
    }
    last_logits(model, last, cache)
}

/// A running generation; iterate it for [`GenerationResponse`]s.
pub struct StreamGenerate<'a> {
    model: &'a dyn LanguageModel,
    detokenizer: Detokenizer<'a>,
    eos: Vec<u32>,
    options: GenerateOptions,
    sampler: Sampler,
    cache: Vec<KvCache>,
    history: Vec<u32>,
    prompt_tokens: usize,
    prompt_tps: f64,
    generated: usize,
    first_token_at: Option<Instant>,
    next_logits: Option<Vec<f32>>,
    /// Text held back because it might be the start of a stop string.
    held: String,
    done: bool,
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
    let sampler = Sampler::new(options.sampler.clone())?;
    Ok(StreamGenerate {
        model,
        detokenizer: tokenizer.detokenizer(),
        eos: tokenizer.eos_token_ids.clone(),
        sampler,
        cache,
        history: prompt.to_vec(),
        prompt_tokens: prompt.len(),
        prompt_tps: 0.0,
        generated: 0,
        first_token_at: None,
        next_logits: None,
        held: String::new(),
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
                let logits = prefill(self.model, &self.history, &mut self.cache, self.options.prefill_step_size)?;
                self.prompt_tps = self.prompt_tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                logits
            }
        };
        let sampled = self.sampler.sample(&logits, &self.history)?;
        let token = sampled.token;
        self.generated += 1;
        self.history.push(token);
        let first = *self.first_token_at.get_or_insert_with(Instant::now);
        let mut finish = None;
        let mut text = String::new();
        if self.eos.contains(&token) {
            finish = Some(FinishReason::Stop);
            text.push_str(&self.detokenizer.finalize()?);
        } else {
            text.push_str(&self.detokenizer.add_token(token)?);
            if self.generated >= self.options.max_tokens {
                finish = Some(FinishReason::Length);
                text.push_str(&self.detokenizer.finalize()?);
            }
        }
        // Stop strings: cut at the first one; hold back a tail that could begin one.
        self.held.push_str(&text);
        let mut out = std::mem::take(&mut self.held);
        if let Some(cut) = self.options.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| out.find(s.as_str())).min()
        {
            out.truncate(cut);
            finish = Some(FinishReason::Stop);
        } else if finish.is_none() {
            let keep = self.options.stop.iter().map(|s| partial_suffix(&out, s)).max().unwrap_or(0);
            self.held = out.split_off(out.len() - keep);
        }
        if finish.is_none() {
            // Run the model on the new token now, so the next call only samples. If it takes
            // the sequence past the model's switch length, run the whole sequence again (when
            // this generation holds all of it), as transformers does.
            let offset = self.cache.first().map_or(0, KvCache::offset);
            let rerun = self.model.switch_length() == Some(offset) && self.history.len() == offset + 1;
            self.next_logits = Some(if rerun {
                self.cache = self.model.make_cache(self.options.max_kv_size);
                prefill(self.model, &self.history, &mut self.cache, self.options.prefill_step_size)?
            } else {
                last_logits(self.model, &[token], &mut self.cache)?
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
