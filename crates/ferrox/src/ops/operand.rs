//! Scalars and arrays as operands of binary ops, with MLX's weak typing of scalars.

use crate::array::Array;
use crate::dtype::{promote_types, Dtype};
use crate::error::Result;

/// A Rust number passed where an array is expected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
}

/// An array or a scalar.
///
/// Scalars are weakly typed, as Python numbers are in MLX: `x + 1` keeps `x`'s dtype, `x + 0.5`
/// keeps it if `x` is floating point and gives float32 otherwise.
#[derive(Clone, Debug)]
pub enum Operand {
    /// An array.
    Array(Array),
    /// A scalar.
    Scalar(Scalar),
}

/// What binary ops accept: `&Array`, `Array`, or a Rust number or bool.
pub trait IntoOperand {
    /// Converts to an [`Operand`].
    fn into_operand(self) -> Operand;
}

impl IntoOperand for Operand {
    fn into_operand(self) -> Operand {
        self
    }
}
impl IntoOperand for Array {
    fn into_operand(self) -> Operand {
        Operand::Array(self)
    }
}
impl IntoOperand for &Array {
    fn into_operand(self) -> Operand {
        Operand::Array(self.clone())
    }
}
impl IntoOperand for bool {
    fn into_operand(self) -> Operand {
        Operand::Scalar(Scalar::Bool(self))
    }
}
macro_rules! int_operand {
    ($($t:ty),*) => {$(
        impl IntoOperand for $t {
            fn into_operand(self) -> Operand {
                Operand::Scalar(Scalar::Int(self as i64))
            }
        }
    )*};
}
int_operand!(i8, i16, i32, i64, u8, u16, u32, usize, isize);
impl IntoOperand for f32 {
    fn into_operand(self) -> Operand {
        Operand::Scalar(Scalar::Float(self as f64))
    }
}
impl IntoOperand for f64 {
    fn into_operand(self) -> Operand {
        Operand::Scalar(Scalar::Float(self))
    }
}

impl Scalar {
    /// The dtype this scalar takes on its own.
    pub fn default_dtype(self) -> Dtype {
        match self {
            Scalar::Bool(_) => Dtype::Bool,
            Scalar::Int(_) => Dtype::I32,
            Scalar::Float(_) => Dtype::F32,
        }
    }

    /// The dtype of `scalar op array(dtype)`.
    pub fn with(self, dtype: Dtype) -> Dtype {
        match self {
            Scalar::Float(_) if !dtype.is_float() => Dtype::F32,
            Scalar::Int(_) if dtype == Dtype::Bool => Dtype::I32,
            _ => dtype,
        }
    }

    /// The value as `f64`.
    pub fn as_f64(self) -> f64 {
        match self {
            Scalar::Bool(b) => b as u8 as f64,
            Scalar::Int(i) => i as f64,
            Scalar::Float(f) => f,
        }
    }

    /// A zero-dimensional array of `dtype` holding the value.
    pub fn to_array(self, dtype: Dtype) -> Array {
        match self {
            Scalar::Int(i) if dtype.is_integer() => {
                crate::dispatch_dtype!(dtype, T => Array::scalar(<T as crate::Element>::from_i128(i as i128)))
            }
            _ => crate::dispatch_dtype!(dtype, T => Array::scalar(<T as crate::Element>::from_f64(self.as_f64()))),
        }
    }
}

impl Operand {
    /// The dtype this operand has, or takes on its own.
    pub fn dtype(&self) -> Dtype {
        match self {
            Operand::Array(a) => a.dtype(),
            Operand::Scalar(s) => s.default_dtype(),
        }
    }

    /// The operand as an array (scalars take their own dtype).
    pub fn into_array(self) -> Array {
        match self {
            Operand::Array(a) => a,
            Operand::Scalar(s) => s.to_array(s.default_dtype()),
        }
    }
}

/// Turns operands into arrays of one common dtype (MLX promotion with weak scalars).
pub(crate) fn unify(ops: Vec<Operand>) -> Result<(Vec<Array>, Dtype)> {
    let mut dtype: Option<Dtype> = None;
    for o in &ops {
        if let Operand::Array(a) = o {
            dtype = Some(match dtype {
                None => a.dtype(),
                Some(d) => promote_types(d, a.dtype()),
            });
        }
    }
    let dtype = match dtype {
        Some(mut d) => {
            for o in &ops {
                if let Operand::Scalar(s) = o {
                    d = s.with(d);
                }
            }
            d
        }
        None => ops.iter().map(|o| o.dtype()).reduce(promote_types).unwrap_or(Dtype::F32),
    };
    let arrays = ops
        .into_iter()
        .map(|o| match o {
            Operand::Array(a) => crate::ops::astype(&a, dtype),
            Operand::Scalar(s) => Ok(s.to_array(dtype)),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((arrays, dtype))
}
