//! GGUF models (scripts/make_gguf_model_fixture.py): models/tiny-llama converted by llama.cpp's
//! convert_hf_to_gguf.py (f32, q8_0) and re-quantized by gguf-py (q4_0, a mix of q4_1 / f16 /
//! bf16 / q8_0 / q4_0), models/tiny-qwen3 converted to f32, and a SentencePiece vocabulary. The
//! f32 files must give transformers' logits and greedy tokens for the original models; the quantized ones those of transformers
//! running the weights gguf-py dequantizes (so the affine re-packing must be exact); the
//! tokenizers must encode and decode as the original tokenizer.json and sentencepiece do.

use std::path::{Path, PathBuf};

use ferrox::io::GgufFile;
use ferrox::{self as fx, Array, Dtype};
use ferrox_lm::generate::{stream_generate, GenerateOptions};
use ferrox_lm::{LanguageModel, Loaded};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> Loaded {
    ferrox_lm::load(fixtures().join("gguf").join(name).to_str().unwrap(), None).unwrap()
}

fn json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn last_logits(model: &dyn LanguageModel, ids: &[u32]) -> Vec<f32> {
    let x = fx::reshape_usize(&Array::from_vec(ids.iter().map(|&t| t as i32).collect::<Vec<_>>()), &[1, ids.len()])
        .unwrap();
    let logits = fx::astype(&model.forward(&x, None).unwrap(), Dtype::F32).unwrap();
    let v = logits.shape()[2];
    logits.to_vec::<f32>().unwrap()[(ids.len() - 1) * v..].to_vec()
}

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    diff / want.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

/// 24 greedy tokens with the KV cache.
fn greedy(m: &mut Loaded, prompt: &[u32], n: usize) -> Vec<u32> {
    m.tokenizer.eos_token_ids.clear();
    let options = GenerateOptions { max_tokens: n, ..Default::default() };
    stream_generate(m.model.as_ref(), &m.tokenizer, prompt, options).unwrap().map(|r| r.unwrap().token).collect()
}

#[test]
fn f32_ggufs_match_transformers() {
    for (file, model, model_type) in
        [("tiny-llama-f32.gguf", "tiny-llama", "llama"), ("tiny-qwen3-f32.gguf", "tiny-qwen3", "qwen3")]
    {
        let reference = json(fixtures().join(format!("{model}.json")));
        let (arrays, _) = fx::load_safetensors(fixtures().join(format!("{model}.safetensors"))).unwrap();
        let mut m = load(file);
        assert_eq!(m.config.model_type, model_type);
        let prompt = ids(&reference["prompt_ids"]);
        assert_eq!(m.tokenizer.encode_prompt("Once upon a time").unwrap(), prompt, "{file}");
        let e = rel_err(&last_logits(m.model.as_ref(), &prompt), &arrays["logits"].to_vec::<f32>().unwrap());
        assert!(e < 1e-4, "{file}: relative error {e}");
        assert_eq!(greedy(&mut m, &prompt, 24), ids(&reference["greedy"]), "{file}");
    }
}

#[test]
fn quantized_ggufs_match_their_dequantized_weights_in_transformers() {
    let reference = json(fixtures().join("gguf/reference.json"));
    let (arrays, _) = fx::load_safetensors(fixtures().join("gguf/reference.safetensors")).unwrap();
    let prompt = ids(&reference["prompt_ids"]);
    for name in ["q8_0", "q4_0", "mixed"] {
        let mut m = load(&format!("tiny-llama-{name}.gguf"));
        let want = arrays[&format!("{name}.logits")].to_vec::<f32>().unwrap();
        let e = rel_err(&last_logits(m.model.as_ref(), &prompt), &want);
        assert!(e < 1e-4, "{name}: relative error {e}");
        let r = &reference["models"][name];
        // Exact up to the first near-tie (top-1/top-2 log-probability gap < 1e-3).
        let gaps: Vec<f64> = r["gaps"].as_array().unwrap().iter().map(|g| g.as_f64().unwrap()).collect();
        let n = gaps.iter().position(|&g| g < 1e-3).unwrap_or(gaps.len());
        assert!(n >= 20, "{name}: a near-tie at step {n}");
        assert_eq!(greedy(&mut m, &prompt, n), ids(&r["greedy"])[..n], "{name}");
    }
}

#[test]
fn quantized_matrices_stay_quantized() {
    // q8_0 / q4_0 / q4_1 weights become affine triples; the f16 / bf16 ones stay dense.
    let m = load("tiny-llama-mixed.gguf");
    let params = ferrox_nn::Module::parameters(m.model.as_ref());
    for (name, cols, bits) in [
        ("model.layers.0.self_attn.q_proj", 64, 4),
        ("model.layers.0.self_attn.v_proj", 64, 8),
        ("model.layers.1.mlp.down_proj", 128, 4),
        ("model.embed_tokens", 64, 4),
    ] {
        let w = &params[&format!("{name}.weight")];
        assert_eq!((w.dtype(), w.shape()[1]), (Dtype::U32, cols * bits / 32), "{name}");
        assert_eq!(params[&format!("{name}.scales")].shape()[1], cols / 32, "{name}");
        assert_eq!(params[&format!("{name}.biases")].shape()[1], cols / 32, "{name}");
    }
    for name in ["model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.o_proj"] {
        assert_eq!(params[&format!("{name}.weight")].dtype(), Dtype::F32, "{name}");
        assert!(!params.contains_key(&format!("{name}.scales")), "{name}");
    }
}

#[test]
fn bpe_tokenizer_matches_tokenizer_json() {
    let reference = json(fixtures().join("gguf/reference.json"));
    let m = load("tiny-llama-q4_0.gguf");
    let t = &m.tokenizer;
    assert_eq!(t.bos_token.as_deref(), Some("<|begin_of_text|>"));
    assert_eq!(t.eos_token_ids, [3]);
    assert!(t.chat_template.is_some());
    for case in reference["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(t.encode(text, true).unwrap(), want, "{text:?}");
        assert_eq!(t.decode(&want, false).unwrap(), case["decoded"].as_str().unwrap(), "{text:?}");
    }
}

#[test]
fn sentencepiece_vocabulary_matches_sentencepiece() {
    let reference = json(fixtures().join("gguf/reference.json"));
    let path = fixtures().join("gguf/tiny-spm-vocab.gguf");
    let file = GgufFile::open(&path).unwrap();
    let t = ferrox_lm::gguf::load_tokenizer(&file, &path).unwrap();
    for case in reference["spm"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(t.encode(text, true).unwrap(), want, "{text:?}");
        assert_eq!(t.decode(&want, true).unwrap(), case["decoded"].as_str().unwrap(), "{text:?}");
    }
}

#[test]
fn unsupported_files_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("ferrox-lm-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The spm vocabulary file says "llama" but has no hyperparameters.
    let e = ferrox_lm::load(fixtures().join("gguf/tiny-spm-vocab.gguf").to_str().unwrap(), None).err().unwrap();
    assert!(e.to_string().contains("llama.embedding_length is missing"), "{e}");
    // Another architecture: the same bytes with "llama" renamed in place.
    let bytes = std::fs::read(fixtures().join("gguf/tiny-spm-vocab.gguf")).unwrap();
    let at = bytes.windows(5).position(|w| w == b"llama").unwrap();
    let mut other = bytes.clone();
    other[at..at + 5].copy_from_slice(b"mamba");
    let p = dir.join("mamba.gguf");
    std::fs::write(&p, other).unwrap();
    let e = ferrox_lm::load(p.to_str().unwrap(), None).err().unwrap().to_string();
    assert!(e.contains("GGUF architecture \"mamba\" is not supported") && e.contains("qwen3moe"), "{e}");
    // A file that is not GGUF.
    let p = dir.join("notes.txt");
    std::fs::write(&p, "hello").unwrap();
    let e = ferrox_lm::load(p.to_str().unwrap(), None).err().unwrap().to_string();
    assert!(e.contains("not a GGUF file"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
