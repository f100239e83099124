//! Prompt-cache files written by the real `mlx_lm.cache_prompt` (a standard, a rotating and a
//! quantized cache; scripts/check_prompt_cache_mlx.py, which also checks files written by
//! `ferrox cache-prompt` in mlx-lm) continue in ferrox exactly as in mlx-lm: the same cached
//! and follow-up token ids, the same cache contents as ferrox's own prefill, and mlx-lm's
//! greedy tokens.

use std::path::Path;

use ferrox::Array;
use ferrox_lm::cache::{load_prompt_cache, KvCache, KvQuantization};
use ferrox_lm::generate::{prefill_quantizing, stream_generate_with_cache, GenerateOptions};
use ferrox_lm::prompt::{encode_cached_prompt, encode_user_prompt, UserPrompt};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn max_diff(a: &Array, b: &Array) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn mlx_lm_prompt_caches_continue_as_in_mlx_lm() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("tests/fixtures/mlx_cache_prompt");
    for case in ["kvcache", "rotating", "quantized"] {
        let want: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join(format!("{case}.json"))).unwrap()).unwrap();
        let model = root.join("../../models").join(want["model"].as_str().unwrap());
        let mut m = ferrox_lm::load(model.to_str().unwrap(), None).unwrap();
        let flags: Vec<&str> = want["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let flag = |name: &str| flags.iter().position(|f| *f == name).map(|i| flags[i + 1].parse::<usize>().unwrap());

        // The tokens mlx-lm caches, and those it feeds after the cache for the next prompt.
        let cached = encode_cached_prompt(&m.tokenizer, want["prompt"].as_str().unwrap(), false).unwrap();
        assert_eq!(cached, ids(&want["cached_ids"]), "{case}: cached tokens");
        let request =
            UserPrompt { prompt: want["query"].as_str().unwrap().into(), continues_cache: true, ..Default::default() };
        let suffix = encode_user_prompt(&m.tokenizer, &request).unwrap();
        assert_eq!(suffix, ids(&want["suffix_ids"]), "{case}: follow-up tokens");

        let (caches, meta) = load_prompt_cache(fixtures.join(format!("{case}.safetensors"))).unwrap();
        assert_eq!(meta.get("model"), want.get("model").and_then(Value::as_str).map(str::to_string).as_ref());
        assert_eq!(meta.get("tokenizer_config").map(String::as_str), Some(r#"{"trust_remote_code": false}"#));
        assert_eq!(caches.len(), m.model.num_layers());
        assert!(caches.iter().all(|c| c.offset() == cached.len()), "{case}");
        let kv = flag("--kv-bits")
            .map(|b| KvQuantization::new(b, flag("--kv-group-size").unwrap(), flag("--quantized-kv-start").unwrap()))
            .transpose()
            .unwrap();
        match (case, &caches[0]) {
            ("kvcache", KvCache::Standard(_))
            | ("rotating", KvCache::Rotating(_))
            | ("quantized", KvCache::Quantized(_)) => {}
            (_, other) => panic!("{case}: loaded {other:?}"),
        }

        // ferrox's own prefill of the same tokens holds the same keys and values, slot for slot.
        let mut ours = m.model.make_cache(flag("--max-kv-size"));
        prefill_quantizing(m.model.as_ref(), &cached, &mut ours, 2048, kv.as_ref()).unwrap();
        for (layer, (a, b)) in ours.iter().zip(&caches).enumerate() {
            match (a.buffers(), b.buffers()) {
                (Some((ak, av)), Some((bk, bv))) => {
                    assert!(max_diff(ak, bk) < 1e-4 && max_diff(av, bv) < 1e-4, "{case}: layer {layer}");
                }
                _ => assert!(matches!((a, b), (KvCache::Quantized(_), KvCache::Quantized(_))), "{case}"),
            }
        }

        // mlx-lm's greedy continuation (end ids ignored, as its generate_step does).
        m.tokenizer.eos_token_ids.clear();
        let greedy = ids(&want["greedy"]);
        let options = GenerateOptions { max_tokens: greedy.len(), kv_quantization: kv, ..Default::default() };
        let tokens: Vec<u32> = stream_generate_with_cache(m.model.as_ref(), &m.tokenizer, &suffix, options, caches)
            .unwrap()
            .map(|r| r.unwrap().token)
            .collect();
        assert_eq!(tokens, greedy, "{case}");
    }
}
