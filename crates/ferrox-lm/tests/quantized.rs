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

const CASES: [&str; 9] = [
    "tiny-llama-4bit",
    "tiny-qwen3-mixed_3_6",
    "tiny-qwen2-mixed_4_6",
    "tiny-llama-mixed_2_6-bf16",
    "tiny-gemma2-mxfp4",
    "tiny-phi3-8bit",
    "tiny-phi3-swa-nvfp4",
    "tiny-mixtral-4bit",
    "tiny-qwen3-moe-8bit",
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
fn fused_mlx_lm_quantized_checkpoints_match_mlx_lm() {
    // The same checkpoints with q/k/v and gate/up joined (packed weights, scales and biases
    // concatenated by rows): the same parameters under the same names, mlx-lm's logits and
    // greedy tokens. Projections quantized differently stay apart: the mixed recipes give
    // some layers' v_proj more bits than q_proj and k_proj.
    for case in CASES {
        let dir = case_dir(case);
        let mut model = build(&dir);
        let before = model.parameters().keys().cloned().collect::<Vec<_>>();
        let joined = model.fuse_projections().unwrap();
        let layers = model.num_layers();
        let want = match case {
            "tiny-phi3-8bit" | "tiny-phi3-swa-nvfp4" => 0,
            "tiny-mixtral-4bit" => layers,
            "tiny-qwen3-moe-8bit" => layers + 1,
            // The recipes give layer 1's v_proj 6 bits, its q_proj and k_proj fewer.
            "tiny-qwen3-mixed_3_6" | "tiny-qwen2-mixed_4_6" | "tiny-llama-mixed_2_6-bf16" => 2 * layers - 1,
            _ => 2 * layers,
        };
        assert_eq!(joined, want, "{case}: groups joined");
        assert_eq!(model.parameters().keys().cloned().collect::<Vec<_>>(), before, "{case}: parameter names");
        let bf16 = case.ends_with("bf16");
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

// `ferrox convert` (scripts/check_convert_mlx.py recorded what real mlx-lm computes with the
// output of `ferrox convert` for each case; the test converts the same model again and checks
// its own output against that).

use ferrox::QuantMode;
use ferrox_lm::convert::{convert, ConvertOptions, Recipe};

fn tiny_model(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name).to_str().unwrap().to_string()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrox-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn quantized(
    group_size: Option<usize>,
    bits: Option<usize>,
    mode: Option<QuantMode>,
    recipe: Option<Recipe>,
) -> ConvertOptions {
    ConvertOptions { quantize: true, group_size, bits, mode, recipe, ..Default::default() }
}

#[test]
fn ferrox_converted_checkpoints_give_mlx_lm_logits() {
    let cases = [
        ("tiny-llama-4bit", "tiny-llama", quantized(None, None, None, None)),
        ("tiny-qwen3-mixed_3_6", "tiny-qwen3", quantized(None, None, None, Some(Recipe::Mixed3_6))),
        ("tiny-qwen2-mixed_2_6-g32", "tiny-qwen2", quantized(Some(32), None, None, Some(Recipe::Mixed2_6))),
        ("tiny-gemma2-mxfp4", "tiny-gemma2", quantized(None, None, Some(QuantMode::Mxfp4), None)),
        ("tiny-phi3-swa-8bit", "tiny-phi3-swa", quantized(Some(32), Some(8), None, None)),
        ("tiny-phi3-nvfp4", "tiny-phi3", quantized(None, None, Some(QuantMode::Nvfp4), None)),
        ("tiny-llama-bf16", "tiny-llama", ConvertOptions { dtype: Some(Dtype::Bf16), ..Default::default() }),
        ("tiny-mixtral-4bit", "tiny-mixtral", quantized(None, None, None, None)),
        ("tiny-qwen3-moe-4bit", "tiny-qwen3-moe", quantized(Some(32), None, None, None)),
    ];
    let fix = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ferrox_convert");
    for (case, source, opts) in cases {
        // The tiny model with the config.json the script gave mlx-lm (transformers 4's rope
        // layout, a wide sliding window).
        let src = scratch(&format!("{case}-source"));
        std::fs::create_dir_all(&src).unwrap();
        for f in std::fs::read_dir(tiny_model(source)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, src.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::copy(fix.join(format!("{case}.config.json")), src.join("config.json")).unwrap();
        let dst = scratch(case);
        convert(src.to_str().unwrap(), &dst, &opts, &mut |_, _, _| {}).unwrap();
        std::fs::remove_dir_all(&src).unwrap();
        let model = build(&dst);
        let (tol, min_gap) = if case.ends_with("bf16") { (0.1, 0.25) } else { (1e-4, 0.01) };
        check_against_reference(model.as_ref(), &fix.join(format!("{case}.safetensors")), tol, min_gap, case);
        std::fs::remove_dir_all(&dst).unwrap();
    }
}

#[test]
fn convert_writes_shards_index_config_and_tokenizer() {
    let dst = scratch("shards");
    let mut calls = 0;
    let opts = ConvertOptions { max_shard_bytes: Some(20_000), ..quantized(None, None, None, Some(Recipe::Mixed4_6)) };
    let report = convert(&tiny_model("tiny-llama"), &dst, &opts, &mut |done, total, _| {
        calls += 1;
        assert!(done <= total);
    })
    .unwrap();
    assert!(report.shards.len() > 1, "{:?}", report.shards);
    assert!(report.shards[0].ends_with(format!("model-00001-of-{:05}.safetensors", report.shards.len())));
    // 4 or 6 bits plus a 32-bit scale and bias per 64 weights, some layers at 6: between 4.5 and 6.5.
    assert!((4.5..6.5).contains(&report.bits_per_weight), "{}", report.bits_per_weight);
    assert_eq!(report.quantized_layers, 15);
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dst.join(f)).unwrap()).unwrap()
    };
    let index = read("model.safetensors.index.json");
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(map.len(), build(&dst).parameters().len());
    assert_eq!(calls, map.len());
    let config = read("config.json");
    assert_eq!(config["quantization"], config["quantization_config"]);
    assert_eq!(config["quantization"]["model.layers.1.mlp.down_proj"]["bits"], 6);
    assert_eq!(config["quantization"]["model.layers.0.mlp.down_proj"]["bits"], 4);
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
        assert!(dst.join(f).is_file(), "{f} not copied");
    }
    // The output loads with its tokenizer, as any model directory.
    assert!(ferrox_lm::load(dst.to_str().unwrap(), None).is_ok());
    // Dequantizing gives a dense model of the original names, close to the quantized one.
    let dense = scratch("dense");
    convert(
        dst.to_str().unwrap(),
        &dense,
        &ConvertOptions { dequantize: true, ..Default::default() },
        &mut |_, _, _| {},
    )
    .unwrap();
    let config = read_json(&dense.join("config.json"));
    assert!(config.get("quantization").is_none() && config.get("quantization_config").is_none());
    let (q, d) = (build(&dst), build(&dense));
    assert!(!d.parameters().keys().any(|k| k.ends_with(".scales")));
    let x = fx::reshape_usize(&Array::from_vec(vec![1i32, 5, 9]), &[1, 3]).unwrap();
    let (a, b) = (logits_f32(&q.forward(&x, None).unwrap()), logits_f32(&d.forward(&x, None).unwrap()));
    assert!(rel_err(&b, &a) < 1e-5, "dequantized logits differ: {}", rel_err(&b, &a));
    std::fs::remove_dir_all(&dst).unwrap();
    std::fs::remove_dir_all(&dense).unwrap();
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn convert_errors_are_clear() {
    let src = tiny_model("tiny-llama");
    let q = quantized(None, None, None, None);
    let e =
        |src: &str, dst: &Path, o: &ConvertOptions| convert(src, dst, o, &mut |_, _, _| {}).unwrap_err().to_string();
    let msg = e("/no/such/model", &scratch("x"), &q);
    assert!(msg.contains("/no/such/model") && msg.contains("no such directory"), "{msg}");
    let exists = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(e(&src, exists, &q).contains("already exists"));
    assert!(e(&src, &scratch("x"), &quantized(None, Some(7), None, None)).contains("7 bits are not supported"));
    assert!(e(&src, &scratch("x"), &quantized(Some(16), None, None, None)).contains("group size 16 is not supported"));
    let msg = e(&src, &scratch("x"), &quantized(Some(64), Some(4), Some(QuantMode::Mxfp8), None));
    assert!(msg.contains("mxfp8 mode needs group_size=32 and bits=8"), "{msg}");
    assert!(QuantMode::parse("int4").unwrap_err().to_string().contains("unknown quantization mode"));
}
