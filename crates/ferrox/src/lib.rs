//! ferrox: lazy, composable n-dimensional arrays for Rust — MLX's `mlx.core`, on the CPU
//! and (with the `cuda` feature) NVIDIA GPUs.
//!
//! ```
//! use ferrox::{self as fx, Array};
//! let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
//! let b = fx::matmul(&a, &a.t()).unwrap(); // lazy: nothing computed yet
//! assert_eq!(b.to_vec::<f32>().unwrap(), vec![5.0, 11.0, 11.0, 25.0]);
//! ```
#![warn(missing_docs)]

pub mod array;
pub mod backend;
pub mod device;
pub mod dtype;
pub mod element;
pub mod error;
pub mod eval;
pub mod io;
mod linger;
pub mod memory;
pub mod ops;
pub mod primitives;
mod print;
pub mod profile;
pub mod replay;
pub mod shape;
pub mod transforms;

pub use array::Array;
pub use device::{default_device, set_default_device, with_device, with_stream, Device, Stream};
pub use dtype::{promote_types, Dtype};
pub use element::Element;
pub use error::{Error, Result};
pub use eval::{async_eval, eval};
pub use io::{load, load_gguf, load_npy, load_npz, load_safetensors, save, save_npy, save_npz, save_safetensors};
pub use memory::{
    active_memory, cache_memory, clear_cache, peak_memory, reset_peak_memory, set_cache_limit, set_memory_limit,
};
pub use ops::*;
pub use replay::{Replay, Started};
pub use transforms::{
    checkpoint, compile, grad, jvp, set_compile_enabled, value_and_grad, value_and_grad_tree, vjp, vmap, vmap_call,
    Compiled, StateCell, Tree,
};
