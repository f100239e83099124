//! ferrox-nn: neural-network modules, losses, initializers and optimizers on ferrox —
//! MLX's `mlx.nn` and `mlx.optimizers` in Rust.
//!
//! Parameters travel as [`Params`]: a flat map from dotted paths
//! (`layers.0.self_attn.q_proj.weight`) to arrays. Modules produce and consume it, the
//! optimizers update it, and `load_weights` / `save_weights` map it to safetensors keys.
#![warn(missing_docs)]

pub mod init;
pub mod losses;
pub mod optim;
pub mod params;

pub use params::Params;
