//! The user-facing op functions, MLX's names and semantics.
//!
//! Each function validates its arguments, works out the output shape and dtype (MLX's
//! promotion rules), and records a primitive; nothing is computed until evaluation.

mod conv;
mod creation;
mod elementwise;
pub mod fast;
mod indexing;
mod linalg;
mod operand;
mod quantized;
pub mod random;
mod reduce;
mod shape_ops;
mod sort;

pub use conv::*;
pub use creation::*;
pub use elementwise::*;
pub use indexing::*;
pub use linalg::*;
pub use operand::{IntoOperand, Operand, Scalar};
pub use quantized::*;
pub use reduce::*;
pub use shape_ops::*;
pub use sort::*;
