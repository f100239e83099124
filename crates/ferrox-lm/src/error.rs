//! The error type of the LLM toolkit: every failure names the file, the field or the tensor
//! involved, and what to do about it where that is known.

use std::path::PathBuf;

/// Everything that can go wrong while loading, tokenizing or generating.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An array operation failed (shapes, dtypes, memory, a malformed safetensors file...).
    #[error(transparent)]
    Array(#[from] ferrox::Error),
    /// A file or directory that could not be read or written.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A config file (config.json, tokenizer_config.json, ...) that does not parse or lacks a
    /// field the model needs.
    #[error("{path}: {msg}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A `model_type` no architecture here implements.
    #[error("model_type {model_type:?} is not supported; supported: {}", supported.join(", "))]
    UnsupportedModel {
        /// The config's model_type.
        model_type: String,
        /// The model types that are supported.
        supported: Vec<&'static str>,
    },
    /// Checkpoint tensors that do not match what the model expects.
    #[error("{}", weights_message(missing, unexpected, mismatched))]
    Weights {
        /// Names the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Names in the checkpoint that the model has no place for.
        unexpected: Vec<String>,
        /// `name: expected [..], got [..]` for tensors of the wrong shape.
        mismatched: Vec<String>,
    },
    /// A model id that could not be resolved through the Hugging Face hub or its cache.
    #[error("hub: {0}")]
    Hub(String),
    /// Tokenizer files that could not be loaded, or text that could not be encoded/decoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template that failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// Any other invalid argument (a sampling parameter out of range, an empty prompt...).
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::File`] for `path`.
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Error {
        Error::File { path: path.into(), msg: msg.to_string() }
    }
    /// A [`Error::Config`] for `path`.
    pub fn config(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Error {
        Error::Config { path: path.into(), msg: msg.to_string() }
    }
}

fn weights_message(missing: &[String], unexpected: &[String], mismatched: &[String]) -> String {
    const SHOWN: usize = 20;
    let list = |v: &[String]| {
        let mut s = v.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > SHOWN {
            s.push_str(&format!(", ... ({} more)", v.len() - SHOWN));
        }
        s
    };
    let mut parts = vec!["the checkpoint does not match the model".to_string()];
    if !missing.is_empty() {
        parts.push(format!("missing {} tensor(s): {}", missing.len(), list(missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected {} tensor(s): {}", unexpected.len(), list(unexpected)));
    }
    if !mismatched.is_empty() {
        parts.push(format!("wrong shape for {} tensor(s): {}", mismatched.len(), list(mismatched)));
    }
    parts.join("; ")
}
