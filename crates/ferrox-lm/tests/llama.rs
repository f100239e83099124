//! The tiny random-weight models (models/tiny-llama, tiny-qwen2, tiny-qwen3) against Hugging Face transformers
//! (scripts/make_tiny_models.py): last-position logits, 24 greedy tokens with and without the
//! KV cache, incremental decoding against one full forward pass, chunked prefill.

use std::path::Path;

use ferrox::{self as fx, Array, Dtype};
use ferrox_lm::generate::{prefill, stream_generate, GenerateOptions};
use ferrox_lm::{LanguageModel, Loaded};
use serde_json::Value;

const MODELS: [&str; 3] = ["tiny-llama", "tiny-qwen2", "tiny-qwen3"];

fn tiny(name: &str) -> Loaded {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
    ferrox_lm::load(dir.to_str().unwrap(), None).unwrap()
}

fn reference(name: &str) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let fix = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(fix.join(format!("{name}.json"))).unwrap()).unwrap();
    let ids = |k: &str| j[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let (arrays, _) = fx::load_safetensors(fix.join(format!("{name}.safetensors"))).unwrap();
    (ids("prompt_ids"), ids("greedy"), arrays["logits"].to_vec::<f32>().unwrap())
}

/// Logits `[L, V]` of one full forward pass over `ids`, without a cache.
fn full_forward(model: &dyn LanguageModel, ids: &[u32]) -> Vec<Vec<f32>> {
    let x = fx::reshape_usize(&Array::from_vec(ids.iter().map(|&t| t as i32).collect::<Vec<_>>()), &[1, ids.len()])
        .unwrap();
    let logits = model.forward(&x, None).unwrap();
    let v = logits.shape()[2];
    fx::astype(&logits, Dtype::F32).unwrap().to_vec::<f32>().unwrap().chunks(v).map(<[f32]>::to_vec).collect()
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    diff / want.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

fn argmax(x: &[f32]) -> u32 {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b }) as u32
}

#[test]
fn last_logits_match_transformers() {
    for name in MODELS {
        let m = tiny(name);
        let (prompt, _, want) = reference(name);
        assert_eq!(m.tokenizer.encode_prompt("Once upon a time").unwrap(), prompt);
        let got = full_forward(m.model.as_ref(), &prompt).pop().unwrap();
        let e = rel_err(&got, &want);
        assert!(e < 1e-4, "{name}: relative error {e}");
    }
}

#[test]
fn greedy_without_cache_matches_transformers() {
    for name in MODELS {
        let m = tiny(name);
        let (prompt, greedy, _) = reference(name);
        let mut seq = prompt.clone();
        for _ in 0..greedy.len() {
            let next = argmax(full_forward(m.model.as_ref(), &seq).last().unwrap());
            seq.push(next);
        }
        assert_eq!(&seq[prompt.len()..], &greedy[..], "{name}");
    }
}

#[test]
fn greedy_with_cache_matches_transformers_and_full_forward() {
    for name in MODELS {
        let mut m = tiny(name);
        let (prompt, greedy, _) = reference(name);
        m.tokenizer.eos_token_ids.clear(); // run all 24 steps
        let options = GenerateOptions { max_tokens: greedy.len(), prefill_step_size: 5, ..Default::default() };
        let responses: Vec<_> =
            stream_generate(m.model.as_ref(), &m.tokenizer, &prompt, options).unwrap().map(Result::unwrap).collect();
        let tokens: Vec<u32> = responses.iter().map(|r| r.token).collect();
        assert_eq!(tokens, greedy, "{name}");
        assert_eq!(responses.last().unwrap().finish_reason, Some(ferrox_lm::FinishReason::Length));
        assert_eq!(responses.last().unwrap().generation_tokens, greedy.len());
        let text: String = responses.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(text, m.tokenizer.decode(&greedy, false).unwrap());

        // Incremental decoding: each step's logits equal the full pass's at that position.
        let mut seq = prompt.clone();
        seq.extend(&greedy);
        let full = full_forward(m.model.as_ref(), &seq);
        let mut cache = m.model.make_cache(None);
        let mut step = prefill(m.model.as_ref(), &prompt, &mut cache, 4).unwrap();
        for (i, &t) in greedy.iter().enumerate() {
            let pos = prompt.len() - 1 + i;
            assert!(rel_err(&step, &full[pos]) < 1e-4, "{name}: position {pos}");
            step = prefill(m.model.as_ref(), &[t], &mut cache, 4).unwrap();
        }
        assert_eq!(cache[0].offset(), seq.len());
    }
}

#[test]
fn rotating_cache_matches_full_forward_within_window() {
    for name in MODELS {
        // While the sequence fits in max_kv_size the rotating cache must not change anything.
        let mut m = tiny(name);
        let (prompt, greedy, _) = reference(name);
        m.tokenizer.eos_token_ids.clear();
        let options = GenerateOptions { max_tokens: 10, max_kv_size: Some(64), ..Default::default() };
        let tokens: Vec<u32> = stream_generate(m.model.as_ref(), &m.tokenizer, &prompt, options)
            .unwrap()
            .map(|r| r.unwrap().token)
            .collect();
        assert_eq!(tokens, greedy[..10]);
    }
}

#[test]
fn prompt_cache_reuse_and_stop_strings() {
    use ferrox_lm::cache::PromptCache;
    use ferrox_lm::generate::stream_generate_with_cache;
    let mut m = tiny("tiny-llama");
    let (prompt, greedy, _) = reference("tiny-llama");
    m.tokenizer.eos_token_ids.clear();
    let model = m.model.as_ref();
    // Cache the first half of the prompt, then continue with the whole prompt: only the rest runs,
    // and the greedy continuation is unchanged.
    let mut pc = PromptCache::new(model.make_cache(None));
    let half = &prompt[..prompt.len() / 2];
    prefill(model, half, &mut pc.caches, 16).unwrap();
    pc.tokens = half.to_vec();
    let rest = pc.reuse(&prompt, || model.make_cache(None)).to_vec();
    assert_eq!(rest, prompt[half.len()..]);
    let options = GenerateOptions { max_tokens: 8, ..Default::default() };
    let tokens: Vec<u32> = stream_generate_with_cache(model, &m.tokenizer, &rest, options, pc.caches)
        .unwrap()
        .map(|r| r.unwrap().token)
        .collect();
    assert_eq!(tokens, greedy[..8]);

    // A stop string taken from the reference continuation ends generation there, cut off.
    let text = m.tokenizer.decode(&greedy, false).unwrap();
    let stop: String = text.chars().skip(6).take(3).collect();
    let options = GenerateOptions { max_tokens: 24, stop: vec![stop.clone()], ..Default::default() };
    let responses: Vec<_> =
        stream_generate(model, &m.tokenizer, &prompt, options).unwrap().map(Result::unwrap).collect();
    let out: String = responses.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(responses.last().unwrap().finish_reason, Some(ferrox_lm::FinishReason::Stop));
    assert_eq!(out, text[..text.find(&stop).unwrap()]);
}
