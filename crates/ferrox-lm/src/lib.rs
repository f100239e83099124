//! ferrox-lm: the LLM toolkit on ferrox — what mlx-lm is to MLX. Load Hugging Face models,
//! tokenize and render chat templates, sample, keep KV caches, generate.
#![warn(missing_docs)]

pub mod batch;
pub mod cache;
pub mod cache_batch;
pub mod chat;
pub mod config;
pub mod convert;
mod decode_graph;
pub mod detokenizer;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod kv_quant;
pub mod load;
pub mod loader;
pub mod models;
pub mod prompt;
pub mod quant;
pub mod sample;
pub mod tokenizer;
pub mod weights;

pub use batch::{batch_generate, BatchResult, BatchStats};
pub use config::ModelConfig;
pub use error::{Error, Result};
pub use generate::{generate, stream_generate, FinishReason, GenerateOptions, GenerationResponse};
pub use load::{load, Loaded};
pub use models::LanguageModel;
pub use sample::{Sampler, SamplerConfig};
pub use tokenizer::Tokenizer;
