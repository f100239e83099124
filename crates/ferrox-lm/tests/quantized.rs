//! Checkpoints quantized by the real `mlx_lm.convert` (affine 4-bit, the mixed_2_6 / 3_6 / 4_6
//! recipes, mxfp4, nvfp4, 8-bit; scripts/make_mlx_quant_fixtures.py) load into the right
//! quantized layers — every checkpoint tensor under its own name — and give mlx-lm's logits
//! and greedy tokens.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ferrox::{self as fx, Array, Dtype};
use ferrox_lm::loader::load_weights;
use ferrox_lm::models::{self, LanguageModel};
use ferrox_lm::weights::WeightMap;
use ferrox_lm::ModelConfig;
use ferrox_nn::Module;

const CASES: [&str; 7] = [
    "tiny-llama-4bit",
    "tiny-qwen3-mixed_3_6",
    "tiny-qwen2-mixed_4_6",
    "tiny-llama-mixed_2_6-bf16",
    "tiny-gemma2-mxfp4",
    "tiny-phi3-8bit",
    "tiny-phi3-swa-nvfp4",
];

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlx_quant").join(case)
}

/// The model in `dir` (config.json + safetensors), built as ferrox-lm's loader builds it.
pub fn build(dir: &Path) -> Box<dyn LanguageModel> {
    let config = ModelConfig::load(dir.join("config.json")).unwrap();
    models::build(&config, WeightMap::new(load_weights(dir, None).unwrap())).unwrap()
}

fn logits_f32(a: &Array) -> Vec<f32> {
    fx::astype(a, Dtype::F32).unwrap().to_vec::<f32>().unwrap()
}

fn argmax(x: &[f32]) -> i32 {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b }) as i32
}

/// Greedy decoding through the KV cache: `n` tokens after `prompt`.
pub fn greedy(model: &dyn LanguageModel, prompt: &[i32], n: usize) -> Vec<i32> {
    let mut cache = model.make_cache(None);
    let mut x = fx::reshape_usize(&Array::from_vec(prompt.to_vec()), &[1, prompt.len()]).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let logits = model.forward(&x, Some(&mut cache)).unwrap();
        let l = logits.shape()[1];
        let v = logits.shape()[2] as isize;
        let last = fx::slice(&logits, &[0, l as isize - 1, 0], &[1, l as isize, v], &[1, 1, 1]).unwrap();
        let t = argmax(&logits_f32(&last));
        out.push(t);
        x = fx::reshape_usize(&Array::from_vec(vec![t]), &[1, 1]).unwrap();
    }
    out
}

/// The largest difference relative to the largest reference magnitude.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    diff / want.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

/// Checks logits (every position) and greedy tokens (exactly, up to the first step whose
/// reference top-1/top-2 gap is below `min_gap`) against `reference.safetensors` in `dir`.
pub fn check_against_reference(model: &dyn LanguageModel, reference: &Path, tol: f32, min_gap: f32, what: &str) {
    let (r, _) = fx::load_safetensors(reference).unwrap();
    let prompt = r["prompt"].to_vec::<i32>().unwrap();
    let x = fx::reshape_usize(&Array::from_vec(prompt.clone()), &[1, prompt.len()]).unwrap();
    let got = logits_f32(&model.forward(&x, None).unwrap());
    let want = r["logits"].to_vec::<f32>().unwrap();
    let err = rel_err(&got, &want);
    assert!(err < tol, "{what}: logits relative error {err}");
    let want_tokens = r["greedy"].to_vec::<i32>().unwrap();
    let gaps = r["gaps"].to_vec::<f32>().unwrap();
    let sure = gaps.iter().position(|&g| g < min_gap).unwrap_or(gaps.len());
    assert!(sure >= 3, "{what}: the reference has a near-tie at step {sure}");
    let tokens = greedy(model, &prompt, want_tokens.len());
    assert_eq!(tokens[..sure], want_tokens[..sure], "{what}: greedy tokens (compared up to step {sure})");
}

#[test]
fn mlx_lm_quantized_checkpoints_match_mlx_lm() {
    for case in CASES {
        let dir = case_dir(case);
        let model = build(&dir);
        // Every checkpoint tensor became the parameter of the same name.
        let (ckpt, _) = fx::load_safetensors(dir.join("model.safetensors")).unwrap();
        let want: BTreeSet<&String> = ckpt.keys().collect();
        let params = model.parameters();
        assert_eq!(params.keys().collect::<BTreeSet<_>>(), want, "{case}: parameter names");
        assert!(params.keys().any(|k| k.ends_with(".scales")), "{case}: nothing quantized");
        let bf16 = case.ends_with("bf16");
        // bfloat16 keeps 8 bits: errors of a few percent, as in tests/llama.rs.
        let (tol, min_gap) = if bf16 { (0.1, 0.25) } else { (1e-4, 0.01) };
        check_against_reference(model.as_ref(), &dir.join("reference.safetensors"), tol, min_gap, case);
    }
}

#[test]
fn per_layer_settings_decide_each_layer() {
    // The mixed recipe keeps layer 1's v_proj at 6 bits and layer 0's at 3; down_proj (96 inputs,
    // not whole groups of 64) stays in floating point.
    let model = build(&case_dir("tiny-qwen3-mixed_3_6"));
    let p = model.parameters();
    let packed = |name: &str| p[&format!("model.layers.{name}.weight")].shape()[1];
    assert_eq!(packed("0.self_attn.v_proj"), 64 * 3 / 32);
    assert_eq!(packed("1.self_attn.v_proj"), 64 * 6 / 32);
    assert_eq!(p["model.layers.0.mlp.down_proj.weight"].dtype(), Dtype::F32);
    assert!(!p.contains_key("model.layers.0.mlp.down_proj.scales"));
}

#[test]
fn broken_quantized_checkpoints_are_clear_errors() {
    let dir = case_dir("tiny-llama-4bit");
    let config = ModelConfig::load(dir.join("config.json")).unwrap();
    // A missing scale tensor and a packed weight of the wrong dtype are both reported.
    let mut w = load_weights(&dir, None).unwrap();
    w.remove("model.layers.0.self_attn.q_proj.scales");
    let q = w["model.layers.1.mlp.up_proj.weight"].clone();
    w.insert("model.layers.1.mlp.up_proj.weight".into(), fx::astype(&q, Dtype::F32).unwrap());
    let e = models::build(&config, WeightMap::new(w)).err().unwrap().to_string();
    assert!(e.contains("model.layers.1.mlp.up_proj.weight: expected U32, got F32"), "{e}");
    assert!(e.contains("unexpected") && e.contains("model.layers.0.self_attn.q_proj.biases"), "{e}");
    // A quantization method ferrox does not read.
    let mut raw = config.raw.clone();
    raw.as_object_mut().unwrap().remove("quantization");
    raw["quantization_config"] = serde_json::json!({"quant_method": "awq", "bits": 4});
    let c = ModelConfig::parse(&raw.to_string(), "config.json").unwrap();
    let e = models::build(&c, WeightMap::new(load_weights(&dir, None).unwrap())).err().unwrap().to_string();
    assert!(e.contains("\"awq\" is not supported"), "{e}");
}
