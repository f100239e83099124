//! ferrox-nn: neural-network modules, losses, initializers and optimizers on ferrox —
//! MLX's `mlx.nn` and `mlx.optimizers` in Rust.
//!
//! Parameters travel as [`Params`]: a flat map from dotted paths
//! (`layers.0.self_attn.q_proj.weight`) to arrays. Modules produce and consume it, the
//! optimizers update it, and `load_weights` / `save_weights` map it to safetensors keys.
//!
//! ```
//! use ferrox::{self as fx};
//! use ferrox_nn::{layers::Linear, Module};
//!
//! #[derive(Module)]
//! struct Mlp {
//!     layers: Vec<Linear>,
//! }
//!
//! let mut mlp = Mlp { layers: vec![Linear::new(4, 8, true).unwrap(), Linear::new(8, 2, true).unwrap()] };
//! assert!(mlp.parameters().contains_key("layers.1.bias"));
//! let x = fx::ones(&[3, 4], fx::Dtype::F32).unwrap();
//! let (loss, grads) = ferrox_nn::value_and_grad(&mut mlp, |m| {
//!     let h = fx::maximum(&m.layers[0].forward(&x)?, 0.0)?;
//!     fx::sum(&m.layers[1].forward(&h)?, None, false)
//! })
//! .unwrap();
//! assert_eq!(grads.len(), 4);
//! assert_eq!(loss.size(), 1);
//! ```
#![warn(missing_docs)]

pub mod init;
pub mod losses;
pub mod optim;
// The derive names `::ferrox_nn::…`; this lets the crate derive its own layers.
extern crate self as ferrox_nn;

mod checkpoint;
pub mod layers;
pub mod module;
pub mod params;
mod quantize;
mod value_and_grad;

pub use checkpoint::checkpoint;
pub use ferrox_nn_derive::Module;
pub use module::{path_matches, LoadReport, Module, ModuleState, UnaryModule};
pub use params::Params;
pub use quantize::{as_quantizable, dequantize, quantize, QuantPredicate, Quantizable, Quantize};
pub use value_and_grad::{value_and_grad, value_and_grad_with_aux};

/// What `#[derive(Module)]` expands to refers to these.
#[doc(hidden)]
pub mod __derive {
    pub use ferrox::Array;
}
