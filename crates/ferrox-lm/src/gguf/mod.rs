//! Models from GGUF files (llama.cpp's format): the architecture's arguments from the file's
//! metadata ([`config`]), its tensors under ferrox's names, quantized ones kept quantized
//! where MLX's affine format holds them exactly ([`tensors`]), and the tokenizer its
//! `tokenizer.ggml.*` entries describe ([`tokenizer`]). The core reader is
//! [`ferrox::io::GgufFile`]; this module only translates.
//!
//! Supported: the GGUF architectures `llama` (Llama, Mistral; Mixtral when it has experts),
//! `qwen2`, `qwen3` and `qwen3moe`.

pub mod config;
pub mod tensors;
pub mod tokenizer;

use std::path::Path;

use ferrox::io::{GgmlType, GgufFile};
use ferrox::Dtype;

use crate::error::Result;
use crate::load::Loaded;
use crate::models;
use crate::weights::WeightMap;

pub use config::model_config;
pub use tensors::load_tensors;
pub use tokenizer::load_tokenizer;

/// Whether `path` is a GGUF file (a file whose first four bytes are `GGUF`).
pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file() && std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// The dtype a GGUF model computes in unless told otherwise: float16 or bfloat16 when the
/// token embedding is stored so, else float32 (quantized files keep their scales exact in
/// float32).
pub fn default_dtype(file: &GgufFile) -> Dtype {
    match file.tensors.get("token_embd.weight").map(|t| t.ggml_type) {
        Some(GgmlType::F16) => Dtype::F16,
        Some(GgmlType::Bf16) => Dtype::Bf16,
        _ => Dtype::F32,
    }
}

/// Loads the model and tokenizer a GGUF file describes, computing in `dtype` (by default
/// [`default_dtype`]).
pub fn load_gguf_model(path: &Path, dtype: Option<Dtype>) -> Result<Loaded> {
    let file = GgufFile::open(path)?;
    let dtype = dtype.unwrap_or_else(|| default_dtype(&file));
    let config = model_config(&file, path, dtype)?;
    let weights = load_tensors(&file, &config, dtype)?;
    let model = models::build(&config, WeightMap::new(weights))?;
    let tokenizer = load_tokenizer(&file, path)?;
    Ok(Loaded { model, tokenizer, config, dir: path.to_path_buf() })
}
