//! Batched generation equals generating each prompt alone (which the model tests check
//! against transformers): prompts of different lengths, left padding masked in every layer
//! kind (global, sliding-window, mixture of experts), rows stopping on their own; with
//! rotating (`max_kv_size`) and quantized (`kv_bits`) caches too.

use std::path::Path;

use ferrox_lm::generate::{stream_generate, GenerateOptions};
use ferrox_lm::{batch_generate, FinishReason, Loaded};

fn tiny(name: &str) -> Loaded {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
    ferrox_lm::load(dir.to_str().unwrap(), None).unwrap()
}

const PROMPTS: [&str; 3] =
    ["Once upon a time", "The fox", "In winter the river froze, and the fox and the crow walked on the ice together."];

fn alone(m: &Loaded, prompt: &[u32], options: &GenerateOptions) -> (Vec<u32>, String, FinishReason) {
    let responses: Vec<_> =
        stream_generate(m.model.as_ref(), &m.tokenizer, prompt, options.clone()).unwrap().map(Result::unwrap).collect();
    let text = responses.iter().map(|r| r.text.as_str()).collect();
    (responses.iter().map(|r| r.token).collect(), text, responses.last().unwrap().finish_reason.unwrap())
}

/// Generates `PROMPTS` with `model` as one batch and one by one under `options`, and checks
/// that every row's tokens, text and finish reason agree.
fn check_batch(name: &str, options: &GenerateOptions, texts: &[&str]) -> Vec<Vec<u32>> {
    let mut m = tiny(name);
    let prompts: Vec<Vec<u32>> = texts.iter().map(|p| m.tokenizer.encode_prompt(p).unwrap()).collect();
    // Make the first prompt's 4th greedy token an end id, so that row stops early while
    // the others go on (and leave the batch at different steps).
    m.tokenizer.eos_token_ids.clear();
    let (first, _, _) = alone(&m, &prompts[0], options);
    m.tokenizer.eos_token_ids = vec![first[3]];
    let batch = batch_generate(m.model.as_ref(), &m.tokenizer, &prompts, options).unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let (tokens, text, finish) = alone(&m, p, options);
        assert_eq!(batch.tokens[i], tokens, "{name}: prompt {i}, {options:?}");
        assert_eq!(batch.texts[i], text, "{name}: prompt {i}");
        assert_eq!(batch.finish_reasons[i], finish, "{name}: prompt {i}");
    }
    assert_eq!(batch.finish_reasons[0], FinishReason::Stop);
    assert_eq!(batch.tokens[0].len(), 4);
    assert_eq!(batch.stats.prompt_tokens, prompts.iter().map(Vec::len).sum::<usize>());
    assert_eq!(batch.stats.generation_tokens, batch.tokens.iter().map(Vec::len).sum::<usize>());
    batch.tokens
}

#[test]
fn batch_equals_one_by_one() {
    // tiny-gemma2 has sliding-window layers (window 8, shorter than the long prompt).
    for name in ["tiny-llama", "tiny-gemma2", "tiny-qwen3-moe"] {
        check_batch(name, &GenerateOptions { max_tokens: 16, prefill_step_size: 5, ..Default::default() }, &PROMPTS);
    }
}

#[test]
fn batch_with_rotating_caches_equals_one_by_one() {
    // 12 positions with 4 sink tokens: the long prompt (about 25 tokens) rotates during its
    // chunked prefill, the short ones (4 and 3 tokens: fewer than the sinks) while decoding.
    // The sliding layers of tiny-gemma2, tiny-gemma3 and tiny-phi3-swa keep their own rotating
    // caches of 8.
    for name in ["tiny-llama", "tiny-gemma2", "tiny-gemma3", "tiny-phi3-swa"] {
        let options =
            GenerateOptions { max_tokens: 16, prefill_step_size: 5, max_kv_size: Some(12), ..Default::default() };
        check_batch(name, &options, &PROMPTS);
    }
}

#[test]
fn batch_with_quantized_caches_equals_one_by_one() {
    // Quantized from the start (tiny-qwen3-moe's heads of 32 hold one group); the prompts run
    // in one pass, so every row's positions are quantized at the same point as alone.
    use ferrox_lm::cache::KvQuantization;
    let quantized = |bits| GenerateOptions {
        max_tokens: 16,
        kv_quantization: Some(KvQuantization::new(bits, 32, 0).unwrap()),
        ..Default::default()
    };
    // Prompts of one length (no padding) agree token for token at 4 bits, where quantizing
    // changes the greedy tokens.
    let same = ["Once upon a time", "A fox ran far away.", "The crow sat down on ice"];
    let tokens = check_batch("tiny-qwen3-moe", &quantized(4), &same);
    let plain = GenerateOptions { max_tokens: 16, ..Default::default() };
    assert_ne!(tokens[0], check_batch("tiny-qwen3-moe", &plain, &same)[0], "4-bit keys change these tokens");
    // Padded rows sit at shifted positions: rotary embeddings turn their keys differently before
    // they are quantized, so they agree to within quantization error — token for token at 8 bits.
    check_batch("tiny-qwen3-moe", &quantized(8), &PROMPTS);
}

#[test]
fn bad_batches_are_errors() {
    let m = tiny("tiny-llama");
    let options = GenerateOptions::default();
    let e = batch_generate(m.model.as_ref(), &m.tokenizer, &[], &options).unwrap_err();
    assert!(e.to_string().contains("no prompts"), "{e}");
    let e = batch_generate(m.model.as_ref(), &m.tokenizer, &[vec![1], vec![]], &options).unwrap_err();
    assert!(e.to_string().contains("prompt 1 is empty"), "{e}");
}
