//! Tokenizer, chat template and streaming detokenizer against Hugging Face's own output
//! (scripts/make_tiny_models.py).

use std::path::{Path, PathBuf};

use ferrox_lm::chat::ChatOptions;
use ferrox_lm::tokenizer::Tokenizer;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn tiny() -> Tokenizer {
    Tokenizer::load(&root().join("models/tiny-llama")).unwrap()
}

#[test]
fn special_tokens_and_encoding() {
    let t = tiny();
    let f = fixture("tiny-llama.json");
    let want: Vec<u32> = f["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(t.encode_prompt(f["prompt"].as_str().unwrap()).unwrap(), want);
    assert_eq!(t.bos_token.as_deref(), Some("<|begin_of_text|>"));
    // tokenizer_config's eos (<|im_end|> = 3) and generation_config's list [3, 1], once each.
    assert_eq!(t.eos_token_ids, vec![3, 1]);
    // A prompt that already starts with BOS gets no second one.
    let ids = t.encode_prompt("<|begin_of_text|>Once").unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 1);
}

#[test]
fn chat_template_renders_as_transformers() {
    let t = tiny();
    let template = t.chat_template.as_ref().expect("the tiny model has a chat template");
    for case in fixture("chat.json").as_array().unwrap() {
        let options = ChatOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            tools: case.get("tools").and_then(Value::as_array).cloned(),
            continue_final_message: case.get("continue_final_message").and_then(Value::as_bool).unwrap_or(false),
            ..Default::default()
        };
        let got = template.render(case["messages"].as_array().unwrap(), &options).unwrap();
        assert_eq!(got, case["expected"].as_str().unwrap());
    }
    let bad = serde_json::json!([{"role": "robot", "content": "hi"}]);
    let e = template.render(bad.as_array().unwrap(), &ChatOptions::default()).unwrap_err().to_string();
    assert!(e.contains("Unknown role: robot"), "{e}");
}

#[test]
fn template_from_tokenizer_config() {
    // The template may live in tokenizer_config.json instead of chat_template.jinja.
    let dir = std::env::temp_dir().join(format!("ferrox-lm-tc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root().join("models/tiny-llama/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<|begin_of_text|>"}, "eos_token": "<|eot|>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0]['content'] }}{% if add_generation_prompt %}>{% endif %}"}]}"#,
    )
    .unwrap();
    let t = Tokenizer::load(&dir).unwrap();
    assert_eq!(t.eos_token_ids, vec![4]);
    let msgs = serde_json::json!([{"role": "user", "content": "hi"}]);
    let out = t
        .chat_template
        .unwrap()
        .render(msgs.as_array().unwrap(), &ChatOptions { add_generation_prompt: true, ..Default::default() })
        .unwrap();
    assert_eq!(out, "<|begin_of_text|>hi>");
    let e = Tokenizer::load(Path::new("/nonexistent")).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn streaming_detokenizer_equals_decode() {
    let bpe = tiny();
    let spm = Tokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer_spm")).unwrap();
    let cases = fixture("detok.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let t = if case["tokenizer"] == "bpe" { &bpe } else { &spm };
        let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let mut d = t.detokenizer();
        let mut streamed = String::new();
        for &id in &ids {
            let piece = d.add_token(id).unwrap();
            // A piece never ends inside a character; only the final flush may hold U+FFFD at the end.
            assert!(!piece.ends_with('\u{FFFD}') || t.decode(&ids, false).unwrap().contains('\u{FFFD}'));
            streamed.push_str(&piece);
        }
        streamed.push_str(&d.finalize().unwrap());
        assert_eq!(streamed, case["text"].as_str().unwrap(), "{} {:?}", case["tokenizer"], ids);
        assert_eq!(d.text(), streamed);
    }
}
