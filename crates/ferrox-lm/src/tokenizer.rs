//! The tokenizer of a model directory: tokenizer.json run by the `tokenizers` crate, the
//! special tokens of tokenizer_config.json, every end-of-sequence id the configs name, and the
//! chat template.

use std::path::Path;

use serde_json::Value;

use crate::chat::ChatTemplate;
use crate::detokenizer::Detokenizer;
use crate::error::{Error, Result};

/// A model's tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The beginning-of-sequence token's text, if the tokenizer has one.
    pub bos_token: Option<String>,
    /// The end-of-sequence token's text, if named.
    pub eos_token: Option<String>,
    /// Every id that ends generation: tokenizer_config.json's eos_token and the
    /// `eos_token_id` (one or a list) of generation_config.json and config.json.
    pub eos_token_ids: Vec<u32>,
    /// The chat template, from tokenizer_config.json or chat_template.jinja, if any.
    pub chat_template: Option<ChatTemplate>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token", &self.bos_token)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

/// Reads a JSON file if it exists (`None` if it does not), with errors naming the file.
pub(crate) fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::config(path, format!("not valid JSON: {e}")))
}

/// A special token as tokenizer_config.json writes it: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The ids of an `eos_token_id` field: a number or a list of numbers.
fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect(),
        _ => vec![],
    }
}

impl Tokenizer {
    /// Loads the tokenizer of the model directory `dir` (tokenizer.json is required;
    /// tokenizer_config.json, generation_config.json, config.json and chat_template.jinja are
    /// read when present).
    pub fn load(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::file(&path, "missing: ferrox needs the model's tokenizer.json"));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let tc = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let bos_token = token_text(tc.get("bos_token"));
        let eos_token = token_text(tc.get("eos_token"));
        let mut eos_token_ids = Vec::new();
        if let Some(id) = eos_token.as_deref().and_then(|t| inner.token_to_id(t)) {
            eos_token_ids.push(id);
        }
        for file in ["generation_config.json", "config.json"] {
            if let Some(v) = read_json(&dir.join(file))? {
                eos_token_ids.extend(ids(v.get("eos_token_id")));
            }
        }
        let mut seen = std::collections::HashSet::new();
        eos_token_ids.retain(|id| seen.insert(*id));

        let mut special = Vec::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            if let Some(t) = token_text(tc.get(key)) {
                special.push((key.to_string(), t));
            }
        }
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::file(&jinja, e))?)
        } else {
            match tc.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: the one called "default".
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                _ => None,
            }
        };
        let chat_template = source.map(|s| ChatTemplate::new(s, special)).transpose()?;
        Ok(Tokenizer { inner, bos_token, eos_token, eos_token_ids, chat_template })
    }

    /// A tokenizer from its parts (a GGUF file's vocabulary builds one: `crate::gguf`);
    /// duplicate end ids are dropped.
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        mut eos_token_ids: Vec<u32>,
        chat_template: Option<ChatTemplate>,
    ) -> Tokenizer {
        let mut seen = std::collections::HashSet::new();
        eos_token_ids.retain(|id| seen.insert(*id));
        Tokenizer { inner, bos_token, eos_token, eos_token_ids, chat_template }
    }

    /// Token ids of `text`; `add_special_tokens` adds what the tokenizer's post-processor adds
    /// (a BOS token, typically).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes a prompt as mlx-lm does: special tokens are added unless the text already
    /// starts with the BOS token (as a rendered chat template does).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let has_bos = self.bos_token.as_deref().is_some_and(|b| !b.is_empty() && text.starts_with(b));
        self.encode(text, !has_bos)
    }

    /// The text of `ids`; special tokens are kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The id of a token's text, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a SentencePiece byte-fallback piece such as `<0xE2>`.
    pub fn is_byte_piece(&self, id: u32) -> bool {
        self.inner.id_to_token(id).is_some_and(|t| {
            let b = t.as_bytes();
            b.len() == 6
                && t.starts_with("<0x")
                && t.ends_with('>')
                && b[3].is_ascii_hexdigit()
                && b[4].is_ascii_hexdigit()
        })
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A streaming detokenizer for this tokenizer.
    pub fn detokenizer(&self) -> Detokenizer<'_> {
        Detokenizer::new(self)
    }
}
