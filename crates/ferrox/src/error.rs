//! The one error type of the crate.

use crate::dtype::Dtype;

/// Everything that can go wrong in ferrox. Messages name the op and the shapes and dtypes
/// involved, so the user can see what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Shapes that do not fit together (broadcasting, matmul, concatenate, ...).
    #[error("[{op}] {msg}")]
    Shape {
        /// The op that refused its inputs.
        op: &'static str,
        /// What was wrong, with the shapes.
        msg: String,
    },
    /// A dtype the op does not support.
    #[error("[{op}] {msg} (got {dtype})")]
    Dtype {
        /// The op that refused its inputs.
        op: &'static str,
        /// What the op wanted.
        msg: String,
        /// The dtype it got.
        dtype: Dtype,
    },
    /// Any other invalid argument (an axis out of range, a bad parameter).
    #[error("[{op}] {msg}")]
    Invalid {
        /// The op that refused its arguments.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// An allocation beyond the memory limit, or one the system refused.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A file that could not be read or written, or a malformed file.
    #[error("{0}")]
    Io(String),
    /// A device that is not present, or a backend failure.
    #[error("device error: {0}")]
    Device(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A shape error for `op`.
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Error {
        Error::Shape { op, msg: msg.into() }
    }
    /// An invalid-argument error for `op`.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Error {
        Error::Invalid { op, msg: msg.into() }
    }
    /// A dtype error for `op`.
    pub fn dtype(op: &'static str, msg: impl Into<String>, dtype: Dtype) -> Error {
        Error::Dtype { op, msg: msg.into(), dtype }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}
