//! Element types and MLX's type-promotion rules.

use std::fmt;

/// The element type of an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// Booleans, one byte each.
    Bool,
    /// Unsigned 8-bit integers.
    U8,
    /// Unsigned 16-bit integers.
    U16,
    /// Unsigned 32-bit integers.
    U32,
    /// Unsigned 64-bit integers.
    U64,
    /// Signed 8-bit integers.
    I8,
    /// Signed 16-bit integers.
    I16,
    /// Signed 32-bit integers.
    I32,
    /// Signed 64-bit integers.
    I64,
    /// IEEE half precision.
    F16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    Bf16,
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

/// The broad family a dtype belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `bool`.
    Bool,
    /// Unsigned integers.
    Unsigned,
    /// Signed integers.
    Signed,
    /// Floating point.
    Float,
}

impl Dtype {
    /// Every dtype, in promotion order within each kind.
    pub const ALL: [Dtype; 13] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::U16,
        Dtype::U32,
        Dtype::U64,
        Dtype::I8,
        Dtype::I16,
        Dtype::I32,
        Dtype::I64,
        Dtype::F16,
        Dtype::Bf16,
        Dtype::F32,
        Dtype::F64,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 4,
            Dtype::U64 | Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// The family of this dtype.
    pub fn kind(self) -> Kind {
        match self {
            Dtype::Bool => Kind::Bool,
            Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => Kind::Unsigned,
            Dtype::I8 | Dtype::I16 | Dtype::I32 | Dtype::I64 => Kind::Signed,
            Dtype::F16 | Dtype::Bf16 | Dtype::F32 | Dtype::F64 => Kind::Float,
        }
    }

    /// True for the floating-point dtypes.
    pub fn is_float(self) -> bool {
        self.kind() == Kind::Float
    }

    /// True for signed and unsigned integers (not bool).
    pub fn is_integer(self) -> bool {
        matches!(self.kind(), Kind::Signed | Kind::Unsigned)
    }

    /// The name MLX and NumPy use: `float32`, `int8`, `bfloat16`, ...
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Parses a dtype name as [`Dtype::name`] writes it (also `f32`, `bf16`, ... short forms).
    pub fn from_name(name: &str) -> Option<Dtype> {
        Some(match name {
            "bool" => Dtype::Bool,
            "uint8" | "u8" => Dtype::U8,
            "uint16" | "u16" => Dtype::U16,
            "uint32" | "u32" => Dtype::U32,
            "uint64" | "u64" => Dtype::U64,
            "int8" | "i8" => Dtype::I8,
            "int16" | "i16" => Dtype::I16,
            "int32" | "i32" => Dtype::I32,
            "int64" | "i64" => Dtype::I64,
            "float16" | "f16" => Dtype::F16,
            "bfloat16" | "bf16" => Dtype::Bf16,
            "float32" | "f32" => Dtype::F32,
            "float64" | "f64" => Dtype::F64,
            _ => return None,
        })
    }

    /// The dtype a floating-point op (exp, mean, divide, ...) produces from this one:
    /// floats stay as they are, everything else becomes `float32`, as in MLX.
    pub fn to_float(self) -> Dtype {
        if self.is_float() {
            self
        } else {
            Dtype::F32
        }
    }

    fn signed_of_size(size: usize) -> Dtype {
        match size {
            1 => Dtype::I8,
            2 => Dtype::I16,
            4 => Dtype::I32,
            _ => Dtype::I64,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The dtype two operands are computed in, by MLX's promotion table.
///
/// Booleans give way to anything; integers of one signedness widen; an unsigned and a signed
/// integer meet in the next signed size that holds both (uint64 with a signed integer gives
/// float32); any float beats any integer; float16 with bfloat16 gives float32.
pub fn promote_types(a: Dtype, b: Dtype) -> Dtype {
    use Kind::*;
    if a == b {
        return a;
    }
    match (a.kind(), b.kind()) {
        (Bool, _) => b,
        (_, Bool) => a,
        (Float, Float) => {
            if a.size() == 2 && b.size() == 2 {
                Dtype::F32
            } else if a.size() >= b.size() {
                a
            } else {
                b
            }
        }
        (Float, _) => a,
        (_, Float) => b,
        (Unsigned, Unsigned) | (Signed, Signed) => {
            if a.size() >= b.size() {
                a
            } else {
                b
            }
        }
        (Unsigned, Signed) => promote_mixed(a, b),
        (Signed, Unsigned) => promote_mixed(b, a),
    }
}

fn promote_mixed(unsigned: Dtype, signed: Dtype) -> Dtype {
    if unsigned.size() < signed.size() {
        signed
    } else if unsigned == Dtype::U64 {
        Dtype::F32
    } else {
        Dtype::signed_of_size(unsigned.size() * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_matches_mlx_table() {
        use Dtype::*;
        assert_eq!(promote_types(U8, I8), I16);
        assert_eq!(promote_types(U32, I8), I64);
        assert_eq!(promote_types(U64, I64), F32);
        assert_eq!(promote_types(U8, I32), I32);
        assert_eq!(promote_types(F16, Bf16), F32);
        assert_eq!(promote_types(Bf16, I64), Bf16);
        assert_eq!(promote_types(F32, F64), F64);
        assert_eq!(promote_types(Bool, U16), U16);
        assert_eq!(promote_types(I16, I32), I32);
    }
}
