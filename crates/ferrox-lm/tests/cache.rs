//! KV caches: the standard cache returns exactly what was written; the rotating cache gives
//! attention the same result as full attention under the window-with-sinks mask; prompt-cache
//! files round-trip and load what mlx-lm wrote (scripts/make_lm_fixtures.py).

use std::collections::HashMap;
use std::path::Path;

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array, Dtype};
use ferrox_lm::cache::{load_prompt_cache, save_prompt_cache, KvCache, RotatingCache, StandardCache};
use serde_json::Value;

fn randn(shape: &[usize], seed: u64) -> Array {
    fx::random::normal(shape, Dtype::F32, 0.0, 1.0, Some(&fx::random::key(seed))).unwrap()
}

fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn standard_cache_grows_and_keeps_everything() {
    let mut c = KvCache::Standard(StandardCache::default());
    let mut all_k = Vec::new();
    // A prompt of 300 (past one step of 256), then single tokens.
    for (i, s) in [300usize, 1, 1, 5, 1].into_iter().enumerate() {
        let k = randn(&[1, 2, s, 4], i as u64);
        let v = randn(&[1, 2, s, 4], 100 + i as u64);
        all_k.push(k.clone());
        let (ck, cv) = c.update_and_fetch(&k, &v).unwrap();
        assert_eq!(ck.shape()[2], c.offset());
        assert_eq!(cv.shape(), ck.shape());
    }
    let (ck, _) = c.update_and_fetch(&randn(&[1, 2, 1, 4], 9), &randn(&[1, 2, 1, 4], 10)).unwrap();
    all_k.push(randn(&[1, 2, 1, 4], 9));
    let want = fx::concatenate(&all_k, 2).unwrap();
    assert_eq!(max_diff(&ck, &want), 0.0);
    assert_eq!(c.offset(), 309);
    assert_eq!(c.trim(9), 9);
    assert_eq!(c.offset(), 300);
    // A prompt of exactly one step still leaves the next token room: the buffer is a new one
    // of the cache's own, not the update's array.
    let mut d = KvCache::Standard(StandardCache::default());
    d.update_and_fetch(&randn(&[1, 2, 256, 4], 20), &randn(&[1, 2, 256, 4], 21)).unwrap();
    assert_eq!(d.buffers().unwrap().0.shape()[2], 512);
}

/// Attention of each new query over a rotating cache equals full attention over the whole
/// history with the mask "sink tokens, plus the last (max_size - keep) positions".
#[test]
fn rotating_cache_equals_masked_reference() {
    let (max_size, keep, d) = (8usize, 2usize, 4usize);
    let mut cache = KvCache::Rotating(RotatingCache::new(max_size, keep));
    let total = 20;
    let q = randn(&[1, 2, total, d], 1);
    let k = randn(&[1, 2, total, d], 2);
    let v = randn(&[1, 2, total, d], 3);
    let scale = 0.5;
    for t in 0..total {
        let at = |a: &Array| fx::slice_axis(a, 2, t as isize, t as isize + 1).unwrap();
        let (ck, cv) = cache.update_and_fetch(&at(&k), &at(&v)).unwrap();
        let got = fx::fast::scaled_dot_product_attention(&at(&q), &ck, &cv, scale, SdpaMask::None).unwrap();
        // Reference: all keys up to t, masked.
        let visible: Vec<bool> = (0..=t).map(|j| j < keep || j + (max_size - keep) > t).collect();
        let mask = Array::from_slice(&visible, &[1, t + 1]).unwrap();
        let upto = |a: &Array| fx::slice_axis(a, 2, 0, t as isize + 1).unwrap();
        let want = fx::fast::scaled_dot_product_attention(&at(&q), &upto(&k), &upto(&v), scale, SdpaMask::Array(mask))
            .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "step {t}");
        assert_eq!(cache.len(), (t + 1).min(max_size));
    }
}

/// A multi-token update on a full rotating cache (keep = 0) equals sliding-window attention.
#[test]
fn rotating_cache_prefill_equals_window_mask() {
    let (max_size, d) = (6usize, 4usize);
    let mut cache = KvCache::Rotating(RotatingCache::new(max_size, 0));
    let q = randn(&[1, 1, 14, d], 4);
    let k = randn(&[1, 1, 14, d], 5);
    let v = randn(&[1, 1, 14, d], 6);
    let mut start = 0;
    for s in [5usize, 4, 1, 1, 3] {
        let part = |a: &Array| fx::slice_axis(a, 2, start as isize, (start + s) as isize).unwrap();
        let mask = cache.mask(s, None).unwrap();
        let (ck, cv) = cache.update_and_fetch(&part(&k), &part(&v)).unwrap();
        let got = fx::fast::scaled_dot_product_attention(&part(&q), &ck, &cv, 1.0, mask).unwrap();
        let end = start + s;
        let upto = |a: &Array| fx::slice_axis(a, 2, 0, end as isize).unwrap();
        let window = ferrox_lm::cache::causal_mask(s, start, Some(max_size)).unwrap();
        let want =
            fx::fast::scaled_dot_product_attention(&part(&q), &upto(&k), &upto(&v), 1.0, SdpaMask::Array(window))
                .unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "chunk at {start}");
        start = end;
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// `splits_alike` holds exactly when appending tokens in one update or in two (the last one
/// alone) leaves the same buffers: for a standard cache always, for a rotating one while
/// nothing rotates out.
#[test]
fn splits_alike_means_the_same_buffers() {
    let k = randn(&[1, 2, 7, 4], 11);
    let v = randn(&[1, 2, 7, 4], 12);
    let split = |a: &Array, from: usize, to: usize| fx::slice_axis(a, 2, from as isize, to as isize).unwrap();
    // A standard cache and a rotating one of 7 hold all 7 tokens; one of 6 rotates.
    let fresh = [
        (KvCache::Standard(StandardCache::default()), true),
        (KvCache::Rotating(RotatingCache::new(7, 2)), true),
        (KvCache::Rotating(RotatingCache::new(6, 2)), false),
    ];
    for (cache, expect) in fresh {
        // 3 tokens first, then 4 more: in one update, or 3 then the last alone.
        let mut whole = cache.clone();
        whole.update_and_fetch(&split(&k, 0, 3), &split(&v, 0, 3)).unwrap();
        let mut parts = whole.clone();
        let alike = whole.splits_alike(4);
        let (wk, _) = whole.update_and_fetch(&split(&k, 3, 7), &split(&v, 3, 7)).unwrap();
        parts.update_and_fetch(&split(&k, 3, 6), &split(&v, 3, 6)).unwrap();
        let (pk, _) = parts.update_and_fetch(&split(&k, 6, 7), &split(&v, 6, 7)).unwrap();
        let same = wk.shape() == pk.shape() && max_diff(&wk, &pk) == 0.0;
        assert_eq!((alike, same), (expect, expect), "{cache:?}");
    }
}

#[test]
fn loads_mlx_lm_prompt_cache_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mlx_prompt_cache.json")).unwrap()).unwrap();
    let (mut caches, meta) = load_prompt_cache(dir.join("mlx_prompt_cache.safetensors")).unwrap();
    assert_eq!(meta.get("model").map(String::as_str), Some("tiny"));
    assert_eq!(caches.len(), 3);
    assert!(caches[2].is_empty());
    assert_eq!(caches[0].offset(), 5);
    assert_eq!(caches[1].offset(), 9);
    // Continuing both caches with one zero token shows their contents in attention order.
    let check = |caches: &mut Vec<KvCache>| {
        let z = |d| fx::zeros(&[1, 2, 1, d], Dtype::F32).unwrap();
        let (k, v) = caches[0].update_and_fetch(&z(4), &z(3)).unwrap();
        let k0 = fx::slice_axis(&k, 2, 0, 5).unwrap();
        assert_eq!(k0.to_vec::<f32>().unwrap(), floats(&want["std_keys"]));
        assert_eq!(fx::slice_axis(&v, 2, 0, 5).unwrap().to_vec::<f32>().unwrap(), floats(&want["std_values"]));
        caches[0].trim(1);
    };
    check(&mut caches);
    let tmp = std::env::temp_dir().join(format!("ferrox-pc-{}.safetensors", std::process::id()));
    let meta: HashMap<String, String> = [("model".to_string(), "tiny".to_string())].into();
    save_prompt_cache(&tmp, &caches, &meta).unwrap();
    let (mut again, meta2) = load_prompt_cache(&tmp).unwrap();
    assert_eq!(meta2, meta);
    check(&mut again);
    assert_eq!(again[1].offset(), 9);
    assert!(again[2].is_empty());
    // The rotating cache's buffer is mlx-lm's, slot for slot, and survives the round trip.
    let (rk, rv) = caches[1].buffers().unwrap();
    assert_eq!(rk.to_vec::<f32>().unwrap(), floats(&want["rot_keys"]));
    assert_eq!(rv.to_vec::<f32>().unwrap(), floats(&want["rot_values"]));
    let z = fx::zeros(&[1, 2, 1, 4], Dtype::F32).unwrap();
    let (a, _) = caches[1].clone().update_and_fetch(&z, &z).unwrap();
    let (b, _) = again[1].update_and_fetch(&z, &z).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    assert_eq!(
        a.shape().to_vec(),
        want["rot_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>()
    );
    std::fs::remove_file(&tmp).ok();
}

fn kv_fixture() -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    serde_json::from_str(&std::fs::read_to_string(dir.join("kv_quant.json")).unwrap()).unwrap()
}

#[test]
fn quantized_cache_generates_as_mlx_lm_does() {
    // mlx_lm's greedy tokens for tiny-qwen3-moe with a 4-bit and an 8-bit cache quantized from
    // the start, and a 4-bit one quantized once it holds 8 positions (after the second prefill
    // chunk of 5): the 4-bit runs part from the float ones, so the quantization is visible.
    use ferrox_lm::cache::KvQuantization;
    use ferrox_lm::generate::{stream_generate, GenerateOptions};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-qwen3-moe");
    let mut m = ferrox_lm::load(dir.to_str().unwrap(), None).unwrap();
    m.tokenizer.eos_token_ids.clear();
    let want = kv_fixture();
    let prompt: Vec<u32> = want["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    for run in want["runs"].as_array().unwrap() {
        let get = |k: &str| run[k].as_u64().unwrap() as usize;
        let greedy: Vec<u32> = run["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let options = GenerateOptions {
            max_tokens: greedy.len(),
            prefill_step_size: 5,
            kv_quantization: Some(KvQuantization::new(get("bits"), get("group_size"), get("start")).unwrap()),
            ..Default::default()
        };
        let mut stream = stream_generate(m.model.as_ref(), &m.tokenizer, &prompt, options).unwrap();
        let tokens: Vec<u32> = stream.by_ref().map(|r| r.unwrap().token).collect();
        assert_eq!(tokens, greedy, "{run}");
        assert!(stream.cache().iter().all(|c| matches!(c, KvCache::Quantized(_))));
    }
    assert!(KvQuantization::new(7, 32, 0).is_err());
    assert!(KvQuantization::new(4, 48, 0).is_err());
}

#[test]
fn quantized_prompt_cache_loads_from_mlx_lm_and_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let want = kv_fixture();
    let (caches, _) = load_prompt_cache(dir.join("mlx_quant_cache.safetensors")).unwrap();
    assert!(matches!(caches[0], KvCache::Quantized(_)));
    assert_eq!(caches[0].offset(), 7);
    let z = fx::zeros(&[1, 2, 1, 32], Dtype::F32).unwrap();
    let fetch = |mut c: KvCache| {
        let (k, v) = c.update_and_fetch(&z, &z).unwrap();
        let first = |a: &Array| fx::slice_axis(a, 2, 0, 7).unwrap().to_vec::<f32>().unwrap();
        (first(&k), first(&v))
    };
    let (k, v) = fetch(caches[0].clone());
    assert_eq!(k, floats(&want["cache_keys"]));
    assert_eq!(v, floats(&want["cache_values"]));
    let tmp = std::env::temp_dir().join(format!("ferrox-qpc-{}.safetensors", std::process::id()));
    save_prompt_cache(&tmp, &caches, &HashMap::new()).unwrap();
    let (again, _) = load_prompt_cache(&tmp).unwrap();
    std::fs::remove_file(&tmp).ok();
    assert_eq!(fetch(again[0].clone()), (k, v));
}

#[test]
fn inconsistent_prompt_cache_files_are_errors() {
    // A standard cache of 3 positions (in a buffer of 256) saved, then its offset (tensor
    // `0.2`) or its values replaced: loading names the layer and what is wrong.
    let mut c = KvCache::Standard(StandardCache::default());
    c.update_and_fetch(&randn(&[1, 2, 3, 4], 1), &randn(&[1, 2, 3, 4], 2)).unwrap();
    let good = std::env::temp_dir().join(format!("ferrox-good-{}.safetensors", std::process::id()));
    save_prompt_cache(&good, &[c], &HashMap::new()).unwrap();
    let (arrays, meta) = fx::load_safetensors(&good).unwrap();
    let bad = std::env::temp_dir().join(format!("ferrox-bad-{}.safetensors", std::process::id()));
    let cases = [
        ("0.2", Array::scalar(1000i32), "offset 1000 but only 256"),
        ("0.1", randn(&[1, 3, 8, 4], 3), "not [B, H, S, D] alike"),
    ];
    for (name, replacement, message) in cases {
        let mut changed = arrays.clone();
        changed.insert(name.to_string(), replacement);
        fx::save_safetensors(&bad, changed.iter().map(|(k, v)| (k.as_str(), v)), Some(&meta)).unwrap();
        let e = load_prompt_cache(&bad).unwrap_err().to_string();
        assert!(e.contains("layer 0") && e.contains(message), "{e}");
    }
    assert!(load_prompt_cache(&good).is_ok());
    std::fs::remove_file(&good).ok();
    std::fs::remove_file(&bad).ok();
}
