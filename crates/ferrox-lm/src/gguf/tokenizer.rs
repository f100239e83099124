//! The tokenizer a GGUF file's `tokenizer.ggml.*` entries describe, built as a
//! `tokenizers::Tokenizer` (written as tokenizer.json and parsed) so that detokenizing and
//! chat templates work as for any model directory.
//!
//! - `gpt2` (byte-level BPE): `tokens` and `merges` make the BPE model; `tokenizer.ggml.pre`
//!   picks the pre-tokenizer's split regexes as llama.cpp's (`gpt2`, `default`,
//!   `llama-bpe`/`llama3`, `qwen2`, `smollm`; others are an error naming them), followed by
//!   the byte-level mapping;
//!   Llama 3's vocabulary is looked up whole before merging (`ignore_merges`), as llama.cpp
//!   does for it.
//! - `llama` (SentencePiece): a BPE model with byte fallback whose merges are every split of a
//!   token into two tokens, ranked by the merged token's score — SentencePiece's BPE picks
//!   the pair whose merge scores highest, which is the same order. A normalizer replaces
//!   spaces by `▁` and prepends one to each stretch of text between added tokens
//!   (`add_space_prefix`, default on), as llama.cpp does (it prefixes a space after every
//!   special or user-defined token, where SentencePiece itself would not); decoding undoes
//!   both. (A Metaspace pre-tokenizer would not prepend to text that starts with a space,
//!   unlike both.)
//! - Token types: control (3) and unknown (2) tokens are special added tokens (skipped when
//!   decoding with `skip_special_tokens`), user-defined ones (4) are added tokens matched in
//!   the text before it is tokenized.
//! - `add_bos_token` / `add_eos_token` (defaults: BOS for SentencePiece, none for BPE) become
//!   the post-processor; `bos_token_id`, `eos_token_id` and `eot_token_id` / `eom_token_id`
//!   (which also end generation) name the special tokens; `tokenizer.chat_template` is the
//!   chat template.

use std::collections::HashMap;
use std::path::Path;

use ferrox::io::{GgufFile, GgufValue};
use serde_json::{json, Value};

use crate::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// GPT-2's pre-tokenizer regex (`tokenizer.ggml.pre` `gpt2`).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's (`llama-bpe`).
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's (`qwen2`).
const QWEN2: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regexes (applied in turn, each to the pieces the one before left, as llama.cpp
/// does) of a `tokenizer.ggml.pre` value, and whether whole words are looked up before
/// merging.
fn pre_tokenizer(pre: &str) -> Option<(&'static [&'static str], bool)> {
    Some(match pre {
        "gpt2" => (&[GPT2], false),
        // llama.cpp's fallback for BPE vocabularies it does not recognize.
        "default" => (&[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"], false),
        "smollm" => (&[r"\p{N}", GPT2], false),
        "llama-bpe" | "llama3" => (&[LLAMA3], true),
        "qwen2" => (&[QWEN2], false),
        _ => return None,
    })
}

const CONTROL: i64 = 3;
const UNKNOWN: i64 = 2;
const USER_DEFINED: i64 = 4;

/// Reads `tokenizer.*` entries with errors naming the file.
struct Meta<'a> {
    file: &'a GgufFile,
    path: &'a Path,
}

impl Meta<'_> {
    fn get(&self, key: &str) -> Option<&GgufValue> {
        self.file.metadata.get(key)
    }

    fn bad(&self, msg: impl std::fmt::Display) -> Error {
        Error::Tokenizer(format!("{}: GGUF metadata: {msg}", self.path.display()))
    }

    fn list(&self, key: &str) -> Result<Option<&[GgufValue]>> {
        self.get(key).map(|v| v.as_array().ok_or_else(|| self.bad(format_args!("{key} is not an array")))).transpose()
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(items) = self.list(key)? else { return Ok(None) };
        items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| self.bad(format_args!("{key} holds a non-string"))))
            .collect::<Result<_>>()
            .map(Some)
    }

    fn id(&self, key: &str) -> Option<u32> {
        self.get(key).and_then(GgufValue::as_u64).map(|v| v as u32)
    }
}

/// The tokenizer `file` (read from `path`, named in messages) describes.
pub fn load_tokenizer(file: &GgufFile, path: &Path) -> Result<Tokenizer> {
    let m = Meta { file, path };
    let model = m
        .get("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| m.bad("no tokenizer.ggml.model: this file carries no tokenizer"))?;
    let tokens = m.strings("tokenizer.ggml.tokens")?.ok_or_else(|| m.bad("no tokenizer.ggml.tokens"))?;
    let types: Vec<i64> = match m.list("tokenizer.ggml.token_type")? {
        Some(t) => t.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let spm = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(m.bad(format_args!(
                "tokenizer model {other:?} is not supported (gpt2 byte-level BPE and llama SentencePiece are)"
            )))
        }
    };
    if types.len() != tokens.len() {
        return Err(m.bad(format_args!("{} token types for {} tokens", types.len(), tokens.len())));
    }
    let add_bos = m.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(spm);
    let add_eos = m.get("tokenizer.ggml.add_eos_token").and_then(GgufValue::as_bool).unwrap_or(false);
    let bos = m.id("tokenizer.ggml.bos_token_id");
    let eos = m.id("tokenizer.ggml.eos_token_id");
    let text_of = |id: Option<u32>| id.and_then(|i| tokens.get(i as usize)).map(|t| t.to_string());

    let mut vocab = serde_json::Map::new();
    for (i, t) in tokens.iter().enumerate() {
        // A duplicated piece keeps its first id.
        vocab.entry(t.to_string()).or_insert(i.into());
    }
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| matches!(ty, CONTROL | UNKNOWN | USER_DEFINED))
        .map(|(i, (t, &ty))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": ty != USER_DEFINED})
        })
        .collect();
    let mut json = if spm {
        let scores: Vec<f64> = match m.list("tokenizer.ggml.scores")? {
            Some(s) => s.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
            None => return Err(m.bad("a SentencePiece vocabulary needs tokenizer.ggml.scores")),
        };
        let prefix = m.get("tokenizer.ggml.add_space_prefix").and_then(GgufValue::as_bool).unwrap_or(true);
        let unk = types.iter().position(|&t| t == UNKNOWN).map(|i| tokens[i]);
        spm_json(&tokens, &types, &scores, vocab, unk, prefix)
    } else {
        let pre = m.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
        let (regexes, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| {
            m.bad(format_args!(
                "BPE pre-tokenizer {pre:?} is not supported (gpt2, default, smollm, llama-bpe, llama3, qwen2 are)"
            ))
        })?;
        let merges =
            m.strings("tokenizer.ggml.merges")?.ok_or_else(|| m.bad("a BPE vocabulary needs tokenizer.ggml.merges"))?;
        let mut pretokenizers: Vec<Value> = regexes
            .iter()
            .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        pretokenizers
            .push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
        let merges: Vec<Value> = merges
            .iter()
            .map(|s| {
                s.split_once(' ')
                    .map(|(a, b)| json!([a, b]))
                    .ok_or_else(|| m.bad(format_args!("merge {s:?} is not two tokens")))
            })
            .collect::<Result<_>>()?;
        json!({
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": ignore_merges, "vocab": Value::Object(vocab), "merges": merges},
        })
    };
    json["version"] = "1.0".into();
    json["truncation"] = Value::Null;
    json["padding"] = Value::Null;
    json["added_tokens"] = Value::Array(added);
    json["post_processor"] = post_processor(
        add_bos.then(|| bos.zip(text_of(bos))).flatten(),
        add_eos.then(|| eos.zip(text_of(eos))).flatten(),
    );
    let inner: tokenizers::Tokenizer =
        json.to_string().parse().map_err(|e| m.bad(format_args!("cannot build the tokenizer: {e}")))?;

    let eos_token_ids: Vec<u32> =
        ["eos", "eot", "eom"].iter().filter_map(|k| m.id(&format!("tokenizer.ggml.{k}_token_id"))).collect();
    let (bos_token, eos_token) = (text_of(bos), text_of(eos));
    let special: Vec<(String, String)> = [("bos_token", &bos_token), ("eos_token", &eos_token)]
        .into_iter()
        .chain([
            ("unk_token", &text_of(m.id("tokenizer.ggml.unknown_token_id"))),
            ("pad_token", &text_of(m.id("tokenizer.ggml.padding_token_id"))),
        ])
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect();
    let chat_template = match m.get("tokenizer.chat_template") {
        Some(v) => Some(ChatTemplate::new(
            v.as_str().ok_or_else(|| m.bad("tokenizer.chat_template is not a string"))?.to_string(),
            special,
        )?),
        None => None,
    };
    Ok(Tokenizer::from_parts(inner, bos_token, eos_token, eos_token_ids, chat_template))
}

/// A SentencePiece vocabulary as a byte-fallback BPE tokenizer.json (see the module docs).
fn spm_json(
    tokens: &[&str],
    types: &[i64],
    scores: &[f64],
    vocab: serde_json::Map<String, Value>,
    unk: Option<&str>,
    prefix: bool,
) -> Value {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().rev().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        if matches!(types[i], CONTROL | UNKNOWN | USER_DEFINED) {
            continue;
        }
        for (cut, _) in t.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&t[..cut]), ids.get(&t[cut..])) {
                merges.push((scores.get(i).copied().unwrap_or(0.0), i, l, r));
            }
        }
    }
    // Highest-scoring merged piece first; ties by the merged piece's id, then the split.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<Value> = merges.iter().map(|&(_, _, l, r)| json!([tokens[l], tokens[r]])).collect();
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let mut normalizers = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"})];
    if prefix {
        normalizers.insert(0, json!({"type": "Prepend", "prepend": "▁"}));
    }
    json!({
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": Value::Object(vocab), "merges": merges},
    })
}

/// A post-processor adding `bos` before and `eos` after a sequence (`(id, text)` each).
fn post_processor(bos: Option<(u32, String)>, eos: Option<(u32, String)>) -> Value {
    let special = |(_, t): &(u32, String)| json!({"SpecialToken": {"id": t, "type_id": 0}});
    let seq = |s: &str| json!({"Sequence": {"id": s, "type_id": 0}});
    let wrap =
        |s: &str| -> Vec<Value> { bos.iter().map(special).chain([seq(s)]).chain(eos.iter().map(special)).collect() };
    let mut pair = wrap("A");
    pair.extend(wrap("B"));
    let specials: serde_json::Map<String, Value> =
        bos.iter().chain(eos.iter()).map(|(id, t)| (t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}))).collect();
    json!({"type": "TemplateProcessing", "single": wrap("A"), "pair": pair, "special_tokens": specials})
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{PreTokenizedString, PreTokenizer, PreTokenizerWrapper};

    /// The pieces each named pre-tokenizer's regexes cut a text into (before byte mapping).
    fn pieces(pre: &str, text: &str) -> Vec<String> {
        let (regexes, _) = pre_tokenizer(pre).unwrap();
        let splits: Vec<Value> = regexes
            .iter()
            .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
            .collect();
        let p: PreTokenizerWrapper =
            serde_json::from_value(json!({"type": "Sequence", "pretokenizers": splits})).unwrap();
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        s.get_splits(tokenizers::OffsetReferential::Original, tokenizers::OffsetType::Byte)
            .into_iter()
            .map(|(t, _, _)| t.to_string())
            .collect()
    }

    #[test]
    fn pre_tokenizers_split_as_llama_cpp() {
        assert_eq!(pieces("gpt2", "I'll pay 12345!"), ["I", "'ll", " pay", " 12345", "!"]);
        assert_eq!(pieces("llama-bpe", "I'll pay 12345!"), ["I", "'ll", " pay", " ", "123", "45", "!"]);
        assert_eq!(pieces("qwen2", "pay 123"), ["pay", " ", "1", "2", "3"]);
        assert_eq!(pieces("smollm", "pay 123"), ["pay", " ", "1", "2", "3"]);
        assert_eq!(pieces("default", "a+b 1234"), ["a", "+", "b", " ", "123", "4"]);
        assert!(pre_tokenizer("deepseek-llm").is_none());
    }
}
