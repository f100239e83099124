//! The tiny random-weight models (models/tiny-*: llama, qwen2, qwen3, gemma2, gemma3 and the
//! multimodal gemma3 layout, phi3 with LongRoPE and phi3 with a sliding window, the mixtures of
//! experts mixtral and qwen3-moe, and mixtral as mlx_lm.convert writes it) against Hugging
//! Face transformers (scripts/make_tiny_models.py): last-position logits, 24 greedy tokens with
//! and without the KV cache, incremental decoding against one full forward pass, chunked
//! prefill; for the sliding-window and long-context ones, every position of a prompt longer
//! than the window, prefilled in chunks of several sizes, and LongRoPE's short factors.

use std::path::Path;

use ferrox::{self as fx, Array, Dtype};
use ferrox_lm::generate::{prefill, stream_generate, GenerateOptions};
use ferrox_lm::{LanguageModel, Loaded};
use ferrox_nn::Module;
use serde_json::Value;

const MODELS: [&str; 10] = [
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-gemma3-mm",
    "tiny-phi3",
    "tiny-phi3-swa",
    "tiny-mixtral",
    "tiny-qwen3-moe",
];

/// The models whose references include a prompt longer than their sliding window (8).
const LONG: [&str; 5] = ["tiny-gemma2", "tiny-gemma3", "tiny-gemma3-mm", "tiny-phi3", "tiny-phi3-swa"];

fn tiny(name: &str) -> Loaded {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
    ferrox_lm::load(dir.to_str().unwrap(), None).unwrap()
}

/// [`tiny`] with its projections fused, as the CLI runs it: q/k/v and gate/up of every block
/// (only q/k/v where the feed-forward part is a mixture of experts; nothing for Phi-3, whose
/// checkpoints hold them fused already).
fn tiny_fused(name: &str) -> Loaded {
    let mut m = tiny(name);
    let layers = m.model.num_layers();
    let want = match name {
        "tiny-phi3" | "tiny-phi3-swa" => 0,
        "tiny-mixtral" | "tiny-mixtral-mlx" => layers,
        // mlp_only_layers = [1]: one dense MLP.
        "tiny-qwen3-moe" => layers + 1,
        _ => 2 * layers,
    };
    assert_eq!(m.model.fuse_projections().unwrap(), want, "{name}: groups joined");
    m
}

fn reference(name: &str) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let fix = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(fix.join(format!("{name}.json"))).unwrap()).unwrap();
    let ids = |k: &str| j[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let (arrays, _) = fx::load_safetensors(fix.join(format!("{name}.safetensors"))).unwrap();
    (ids("prompt_ids"), ids("greedy"), arrays["logits"].to_vec::<f32>().unwrap())
}

fn fixture(name: &str) -> (Value, std::collections::HashMap<String, Array>) {
    let fix = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(fix.join(format!("{name}.json"))).unwrap()).unwrap();
    (j, fx::load_safetensors(fix.join(format!("{name}.safetensors"))).unwrap().0)
}

fn ids_of(j: &Value, key: &str) -> Vec<u32> {
    j[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// `[L, V]` rows of a fixture tensor.
fn rows(a: &Array) -> Vec<Vec<f32>> {
    let v = a.shape()[1];
    a.to_vec::<f32>().unwrap().chunks(v).map(<[f32]>::to_vec).collect()
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
    last_logits(tiny);
}

#[test]
fn fused_last_logits_match_transformers() {
    last_logits(tiny_fused);
}

fn last_logits(tiny: fn(&str) -> Loaded) {
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
    greedy_without_cache(tiny);
}

#[test]
fn fused_greedy_without_cache_matches_transformers() {
    greedy_without_cache(tiny_fused);
}

fn greedy_without_cache(tiny: fn(&str) -> Loaded) {
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
    greedy_with_cache(tiny);
}

#[test]
fn fused_greedy_with_cache_matches_transformers_and_full_forward() {
    greedy_with_cache(tiny_fused);
}

fn greedy_with_cache(tiny: fn(&str) -> Loaded) {
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

#[test]
fn long_prompt_matches_transformers_at_every_position() {
    long_prompt(tiny);
}

#[test]
fn fused_long_prompt_matches_transformers_at_every_position() {
    long_prompt(tiny_fused);
}

fn long_prompt(tiny: fn(&str) -> Loaded) {
    for name in LONG {
        let m = tiny(name);
        let (j, arrays) = fixture(name);
        let ids = ids_of(&j, "long_prompt_ids");
        assert!(ids.len() > 8, "{name}: the long prompt must exceed the window");
        let want = rows(&arrays["long_logits"]);
        let model = m.model.as_ref();
        for (pos, got) in full_forward(model, &ids).iter().enumerate() {
            let e = rel_err(got, &want[pos]);
            assert!(e < 1e-4, "{name}: full pass, position {pos}: relative error {e}");
        }
        // Through the per-layer caches (rotating ones of the window for sliding layers), in
        // chunks smaller than, equal to, straddling and larger than the window. (tiny-phi3's
        // LongRoPE uses the short factors while the sequence is within 3 positions: a first
        // forward pass ending there computes with those, and transformers' single pass with
        // the long ones, so its chunks start at 4; `prefill` takes care of that, tested below.)
        let smallest = if name == "tiny-phi3" { 4 } else { 1 };
        for chunk in [1, 3, 8, 5, 20, ids.len()].into_iter().filter(|&c| c >= smallest) {
            let mut cache = model.make_cache(None);
            let mut pos = 0;
            for piece in ids.chunks(chunk) {
                let x = fx::reshape_usize(
                    &Array::from_vec(piece.iter().map(|&t| t as i32).collect::<Vec<_>>()),
                    &[1, piece.len()],
                )
                .unwrap();
                let logits = model.forward(&x, Some(&mut cache)).unwrap();
                let v = logits.shape()[2];
                for got in logits.to_vec::<f32>().unwrap().chunks(v) {
                    let e = rel_err(got, &want[pos]);
                    assert!(e < 1e-4, "{name}: chunks of {chunk}, position {pos}: relative error {e}");
                    pos += 1;
                }
            }
            assert_eq!(cache[0].offset(), ids.len());
        }
    }
}

#[test]
fn longrope_short_factors_within_the_original_context() {
    // tiny-phi3's original context is 3 positions: a 3-token sequence uses the short factors
    // (and a longer one the long factors, checked above and by the greedy references).
    let m = tiny("tiny-phi3");
    let (j, arrays) = fixture("tiny-phi3");
    let ids = ids_of(&j, "short_prompt_ids");
    assert_eq!(ids.len(), 3);
    let want = rows(&arrays["short_logits"]);
    for (pos, got) in full_forward(m.model.as_ref(), &ids).iter().enumerate() {
        let e = rel_err(got, &want[pos]);
        assert!(e < 1e-4, "position {pos}: relative error {e}");
    }
    // One more token and the whole pass switches to the long factors, so the same first 3
    // positions come out differently (as in transformers, which picks by the last position).
    let long = ids_of(&j, "long_prompt_ids");
    assert_eq!(long[..3], ids);
    let four = full_forward(m.model.as_ref(), &long[..4]);
    let d = rel_err(&four[2], &want[2]);
    assert!(d > 1e-3, "{d}");
}

#[test]
fn caches_follow_layer_types() {
    use ferrox_lm::cache::KvCache;
    let kinds = |name: &str, max_kv: Option<usize>| -> String {
        tiny(name)
            .model
            .make_cache(max_kv)
            .iter()
            .map(|c| match c {
                KvCache::Standard(_) => 'S',
                KvCache::Rotating(_) => 'R',
                KvCache::Quantized(_) => 'Q',
                KvCache::BatchRotating(_) => 'B',
            })
            .collect()
    };
    assert_eq!(kinds("tiny-gemma2", None), "RSRS");
    assert_eq!(kinds("tiny-gemma3", None), "RRSR");
    assert_eq!(kinds("tiny-gemma3-mm", None), "RRSR");
    assert_eq!(kinds("tiny-phi3-swa", None), "RR");
    assert_eq!(kinds("tiny-phi3", None), "SS");
    assert_eq!(kinds("tiny-gemma2", Some(64)), "RRRR");
}

#[test]
fn longrope_sequences_crossing_the_original_context_run_again() {
    let mut m = tiny("tiny-phi3");
    m.tokenizer.eos_token_ids.clear();
    let model = m.model.as_ref();
    assert_eq!(model.switch_length(), Some(3));
    let (j, arrays) = fixture("tiny-phi3");
    let long = ids_of(&j, "long_prompt_ids");
    // Prefilled 2 tokens at a time, the first chunk still reaches past the original context,
    // so the last position is transformers' single pass.
    let mut cache = model.make_cache(None);
    let got = prefill(model, &long, &mut cache, 2).unwrap();
    let e = rel_err(&got, rows(&arrays["long_logits"]).last().unwrap());
    assert!(e < 1e-4, "relative error {e}");
    // A 2-token prompt generates past position 3: the switch re-runs the sequence, so every
    // token is what a full pass over the sequence so far (transformers' semantics) picks.
    let prompt = &long[..2];
    let options = GenerateOptions { max_tokens: 10, ..Default::default() };
    let tokens: Vec<u32> =
        stream_generate(model, &m.tokenizer, prompt, options).unwrap().map(|r| r.unwrap().token).collect();
    let mut seq = prompt.to_vec();
    for _ in 0..10 {
        seq.push(argmax(full_forward(model, &seq).last().unwrap()));
    }
    assert_eq!(tokens, seq[2..]);
}

#[test]
fn bfloat16_stays_close_to_float32() {
    // Gemma's norms and soft caps, Phi-3's LongRoPE and the window caches in bfloat16: the last
    // logits of the long prompt, with and without caches, near transformers' float32 ones
    // (bfloat16 keeps 8 bits: errors of 1-5% here).
    for name in LONG {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name);
        let half = ferrox_lm::load(dir.to_str().unwrap(), Some(Dtype::Bf16)).unwrap();
        let (j, arrays) = fixture(name);
        let ids = ids_of(&j, "long_prompt_ids");
        let want = rows(&arrays["long_logits"]).pop().unwrap();
        let full = full_forward(half.model.as_ref(), &ids).pop().unwrap();
        let mut cache = half.model.make_cache(None);
        let cached = prefill(half.model.as_ref(), &ids, &mut cache, 5).unwrap();
        for (how, got) in [("full pass", full), ("cached", cached)] {
            let e = rel_err(&got, &want);
            assert!(e < 0.1, "{name} {how}: relative error {e}");
        }
    }
}

#[test]
fn mlx_lm_layout_loads_like_the_hugging_face_one() {
    // tiny-mixtral-mlx is tiny-mixtral converted by the real mlx_lm.convert: experts stacked
    // under block_sparse_moe.switch_mlp. Same weights, so transformers' references hold.
    mlx_lm_layout(tiny);
    mlx_lm_layout(tiny_fused);
}

fn mlx_lm_layout(tiny: fn(&str) -> Loaded) {
    let mut m = tiny("tiny-mixtral-mlx");
    let (prompt, greedy, want) = reference("tiny-mixtral");
    let got = full_forward(m.model.as_ref(), &prompt).pop().unwrap();
    let e = rel_err(&got, &want);
    assert!(e < 1e-4, "relative error {e}");
    let options = GenerateOptions { max_tokens: greedy.len(), ..Default::default() };
    m.tokenizer.eos_token_ids.clear(); // run all 24 steps
    let tokens: Vec<u32> =
        stream_generate(m.model.as_ref(), &m.tokenizer, &prompt, options).unwrap().map(|r| r.unwrap().token).collect();
    assert_eq!(tokens, greedy);
}

#[test]
fn fused_models_keep_their_parameters_and_save_the_same_files() {
    // Fusing changes how the blocks compute, not what the model holds: the same names, shapes
    // and values, and the same bytes when saved (the parts are views of the joined arrays,
    // written contiguous).
    let dir = std::env::temp_dir().join(format!("ferrox-lm-fused-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in MODELS {
        let (plain, fused) = (tiny(name), tiny_fused(name));
        let (a, b) = (plain.model.parameters(), fused.model.parameters());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{name}: names");
        let files = [dir.join("plain.safetensors"), dir.join("fused.safetensors")];
        fx::save_safetensors(&files[0], a.iter(), None).unwrap();
        fx::save_safetensors(&files[1], b.iter(), None).unwrap();
        assert!(std::fs::read(&files[0]).unwrap() == std::fs::read(&files[1]).unwrap(), "{name}: saved files differ");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_part_replaced_after_fusing_is_used() {
    // Loading other weights into a fused model (as an adapter or a training step would) makes
    // the blocks it touches run unfused, with the new weights: never the stale join.
    let (prompt, _, want) = reference("tiny-llama");
    let mut m = tiny_fused("tiny-llama");
    let key = "model.layers.0.self_attn.k_proj.weight";
    let p = m.model.parameters();
    let original = p[key].clone();
    let mut update = ferrox_nn::Params::new();
    update.insert(key.to_string(), fx::multiply(&original, 3.0).unwrap());
    m.model.update(&update).unwrap();
    let changed = full_forward(m.model.as_ref(), &prompt).pop().unwrap();
    assert!(rel_err(&changed, &want) > 1e-3, "the new k_proj weight was not used");
    update.insert(key.to_string(), original);
    m.model.update(&update).unwrap();
    let back = full_forward(m.model.as_ref(), &prompt).pop().unwrap();
    assert!(rel_err(&back, &want) < 1e-4);
}
