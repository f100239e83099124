//! The Rust types behind each [`Dtype`], and the arithmetic kernels compute in.
//!
//! Every element type names an accumulator type ([`Element::Acc`]) that kernels compute in:
//! float16 and bfloat16 compute in `f32`, signed integers in `i64`, unsigned integers in `u64`
//! (results wrap back to the narrow type, as NumPy's do), `f32`/`f64`/`bool` in themselves.
//! One generic kernel per op then serves all thirteen dtypes.

use crate::dtype::Dtype;
use half::{bf16, f16};

/// A Rust type that stores the elements of one [`Dtype`].
pub trait Element: Copy + Send + Sync + Default + PartialEq + std::fmt::Debug + 'static {
    /// The dtype this type stores.
    const DTYPE: Dtype;
    /// The type kernels compute in.
    type Acc: Acc;
    /// Widens to the compute type.
    fn to_acc(self) -> Self::Acc;
    /// Narrows from the compute type (wrapping for integers, rounding for floats).
    fn from_acc(a: Self::Acc) -> Self;
    /// The value as `f64` (exact for all but 64-bit integers beyond 2^53).
    fn to_f64(self) -> f64;
    /// From `f64`: rounds for floats, truncates toward zero and saturates for integers,
    /// `!= 0` for bool.
    fn from_f64(v: f64) -> Self;
    /// The value as a 128-bit integer (floats truncate).
    fn to_i128(self) -> i128;
    /// From a 128-bit integer, wrapping to the width of the type.
    fn from_i128(v: i128) -> Self;

    /// Converts to another element type with NumPy's `astype` semantics.
    #[inline(always)]
    fn cast<U: Element>(self) -> U {
        if Self::DTYPE.is_float() || U::DTYPE.is_float() {
            U::from_f64(self.to_f64())
        } else if U::DTYPE == Dtype::Bool {
            U::from_i128((self.to_i128() != 0) as i128)
        } else {
            U::from_i128(self.to_i128())
        }
    }
}

/// The arithmetic a compute type supports. Integer types implement the float-only functions
/// through `f64`; ops never send integers there (they cast to a float dtype first).
pub trait Acc: Copy + Send + Sync + PartialOrd + PartialEq + Default + std::fmt::Debug + 'static {
    /// The additive identity.
    const ZERO: Self;
    /// The multiplicative identity.
    const ONE: Self;
    /// The smallest value (−∞ for floats).
    const MIN: Self;
    /// The largest value (+∞ for floats).
    const MAX: Self;
    /// True for `f32` and `f64`.
    const FLOAT: bool;
    /// From `f64` (see [`Element::from_f64`]).
    fn of_f64(v: f64) -> Self;
    /// As `f64`.
    fn as_f64(self) -> f64;
    /// `a + b` (wrapping for integers, `or` for bool).
    fn add(self, b: Self) -> Self;
    /// `a - b` (wrapping for integers, `xor` for bool).
    fn sub(self, b: Self) -> Self;
    /// `a * b` (wrapping for integers, `and` for bool).
    fn mul(self, b: Self) -> Self;
    /// `a / b`; integer division truncates, and division by zero gives zero.
    fn div(self, b: Self) -> Self;
    /// Floor division, as Python's `//`.
    fn floor_div(self, b: Self) -> Self;
    /// Remainder with the sign of the divisor, as Python's `%`.
    fn rem(self, b: Self) -> Self;
    /// `a ** b`.
    fn pow(self, b: Self) -> Self;
    /// The larger; NaN if either is NaN.
    fn max(self, b: Self) -> Self;
    /// The smaller; NaN if either is NaN.
    fn min(self, b: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Negation (wrapping).
    fn neg(self) -> Self;
    /// −1, 0 or 1 (NaN stays NaN).
    fn sign(self) -> Self;
    /// True if NaN.
    fn is_nan(self) -> bool;
    /// Bitwise and (logical for bool); floats are an error before this is reached.
    fn bit_and(self, b: Self) -> Self;
    /// Bitwise or.
    fn bit_or(self, b: Self) -> Self;
    /// Bitwise xor.
    fn bit_xor(self, b: Self) -> Self;
    /// Bitwise not.
    fn bit_not(self) -> Self;
    /// Left shift.
    fn shl(self, b: Self) -> Self;
    /// Arithmetic (signed) or logical (unsigned) right shift.
    fn shr(self, b: Self) -> Self;
    /// Float-only math through a function of `f64` (used by integer types only).
    #[inline(always)]
    fn map_f64(self, f: impl Fn(f64) -> f64) -> Self {
        Self::of_f64(f(self.as_f64()))
    }
}

macro_rules! float_acc {
    ($t:ty) => {
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const MIN: Self = <$t>::NEG_INFINITY;
            const MAX: Self = <$t>::INFINITY;
            const FLOAT: bool = true;
            #[inline(always)]
            fn of_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn add(self, b: Self) -> Self {
                self + b
            }
            #[inline(always)]
            fn sub(self, b: Self) -> Self {
                self - b
            }
            #[inline(always)]
            fn mul(self, b: Self) -> Self {
                self * b
            }
            #[inline(always)]
            fn div(self, b: Self) -> Self {
                self / b
            }
            #[inline(always)]
            fn floor_div(self, b: Self) -> Self {
                (self / b).floor()
            }
            #[inline(always)]
            fn rem(self, b: Self) -> Self {
                let r = self % b;
                if r != 0.0 && ((r < 0.0) != (b < 0.0)) {
                    r + b
                } else {
                    r
                }
            }
            /// Small integer exponents go by multiplication, as a branch on the exponent's
            /// value (so the result is the same whatever the layout): exact for 0, 1, 2 and
            /// −1, within about an ulp of `powf` for 3 and 4, and many times faster (the x³
            /// of the tanh GELU, the x² of variances).
            #[inline(always)]
            fn pow(self, b: Self) -> Self {
                if b == 2.0 {
                    self * self
                } else if b == 3.0 {
                    self * self * self
                } else if b == 4.0 {
                    let s = self * self;
                    s * s
                } else if b == 1.0 {
                    self
                } else if b == 0.0 {
                    1.0
                } else if b == -1.0 {
                    1.0 / self
                } else {
                    self.powf(b)
                }
            }
            #[inline(always)]
            fn max(self, b: Self) -> Self {
                if self.is_nan() || b.is_nan() {
                    <$t>::NAN
                } else if self > b {
                    self
                } else {
                    b
                }
            }
            #[inline(always)]
            fn min(self, b: Self) -> Self {
                if self.is_nan() || b.is_nan() {
                    <$t>::NAN
                } else if self < b {
                    self
                } else {
                    b
                }
            }
            #[inline(always)]
            fn abs(self) -> Self {
                self.abs()
            }
            #[inline(always)]
            fn neg(self) -> Self {
                -self
            }
            #[inline(always)]
            fn sign(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    self
                }
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                self.is_nan()
            }
            fn bit_and(self, _: Self) -> Self {
                unreachable!("bitwise op on a float reached a kernel")
            }
            fn bit_or(self, _: Self) -> Self {
                unreachable!("bitwise op on a float reached a kernel")
            }
            fn bit_xor(self, _: Self) -> Self {
                unreachable!("bitwise op on a float reached a kernel")
            }
            fn bit_not(self) -> Self {
                unreachable!("bitwise op on a float reached a kernel")
            }
            fn shl(self, _: Self) -> Self {
                unreachable!("bitwise op on a float reached a kernel")
            }
            fn shr(self, _: Self) -> Self {
                unreachable!("bitwise op on a float reached a kernel")
            }
        }
    };
}
float_acc!(f32);
float_acc!(f64);

macro_rules! int_acc {
    ($t:ty, $signed:expr) => {
        impl Acc for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            const FLOAT: bool = false;
            #[inline(always)]
            fn of_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn as_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn add(self, b: Self) -> Self {
                self.wrapping_add(b)
            }
            #[inline(always)]
            fn sub(self, b: Self) -> Self {
                self.wrapping_sub(b)
            }
            #[inline(always)]
            fn mul(self, b: Self) -> Self {
                self.wrapping_mul(b)
            }
            #[inline(always)]
            fn div(self, b: Self) -> Self {
                if b == 0 {
                    0
                } else {
                    self.wrapping_div(b)
                }
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn floor_div(self, b: Self) -> Self {
                if b == 0 {
                    return 0;
                }
                let q = self.wrapping_div(b);
                if $signed && (self % b != 0) && ((self < 0) != (b < 0)) {
                    q.wrapping_sub(1)
                } else {
                    q
                }
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn rem(self, b: Self) -> Self {
                if b == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(b);
                if $signed && r != 0 && ((r < 0) != (b < 0)) {
                    r.wrapping_add(b)
                } else {
                    r
                }
            }
            #[inline(always)]
            fn pow(self, b: Self) -> Self {
                #[allow(unused_comparisons)]
                if b < 0 {
                    // Integer to a negative power: 1/x^n truncated, as NumPy-free MLX computes.
                    return match self {
                        1 => 1,
                        _ => 0,
                    };
                }
                let mut base = self;
                let mut e = b;
                let mut acc: $t = 1;
                while e > 0 {
                    if e & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                acc
            }
            #[inline(always)]
            fn max(self, b: Self) -> Self {
                if self > b {
                    self
                } else {
                    b
                }
            }
            #[inline(always)]
            fn min(self, b: Self) -> Self {
                if self < b {
                    self
                } else {
                    b
                }
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn abs(self) -> Self {
                if self < 0 {
                    (0 as $t).wrapping_sub(self)
                } else {
                    self
                }
            }
            #[inline(always)]
            fn neg(self) -> Self {
                (0 as $t).wrapping_sub(self)
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn sign(self) -> Self {
                if self > 0 {
                    1
                } else if self < 0 {
                    (0 as $t).wrapping_sub(1)
                } else {
                    0
                }
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                false
            }
            #[inline(always)]
            fn bit_and(self, b: Self) -> Self {
                self & b
            }
            #[inline(always)]
            fn bit_or(self, b: Self) -> Self {
                self | b
            }
            #[inline(always)]
            fn bit_xor(self, b: Self) -> Self {
                self ^ b
            }
            #[inline(always)]
            fn bit_not(self) -> Self {
                !self
            }
            #[inline(always)]
            fn shl(self, b: Self) -> Self {
                if (b as u64) >= 64 {
                    0
                } else {
                    self.wrapping_shl(b as u32)
                }
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn shr(self, b: Self) -> Self {
                if (b as u64) >= 64 {
                    if self < 0 {
                        (0 as $t).wrapping_sub(1)
                    } else {
                        0
                    }
                } else {
                    self.wrapping_shr(b as u32)
                }
            }
        }
    };
}
int_acc!(i64, true);
int_acc!(u64, false);

impl Acc for bool {
    const ZERO: Self = false;
    const ONE: Self = true;
    const MIN: Self = false;
    const MAX: Self = true;
    const FLOAT: bool = false;
    fn of_f64(v: f64) -> Self {
        v != 0.0
    }
    fn as_f64(self) -> f64 {
        self as u8 as f64
    }
    fn add(self, b: Self) -> Self {
        self | b
    }
    fn sub(self, b: Self) -> Self {
        self ^ b
    }
    fn mul(self, b: Self) -> Self {
        self & b
    }
    fn div(self, b: Self) -> Self {
        self & b
    }
    fn floor_div(self, b: Self) -> Self {
        self & b
    }
    fn rem(self, _: Self) -> Self {
        false
    }
    fn pow(self, b: Self) -> Self {
        self | !b
    }
    fn max(self, b: Self) -> Self {
        self | b
    }
    fn min(self, b: Self) -> Self {
        self & b
    }
    fn abs(self) -> Self {
        self
    }
    fn neg(self) -> Self {
        self
    }
    fn sign(self) -> Self {
        self
    }
    fn is_nan(self) -> bool {
        false
    }
    fn bit_and(self, b: Self) -> Self {
        self & b
    }
    fn bit_or(self, b: Self) -> Self {
        self | b
    }
    fn bit_xor(self, b: Self) -> Self {
        self ^ b
    }
    fn bit_not(self) -> Self {
        !self
    }
    fn shl(self, b: Self) -> Self {
        self & !b
    }
    fn shr(self, b: Self) -> Self {
        self & !b
    }
}

macro_rules! int_element {
    ($t:ty, $dt:expr, $acc:ty) => {
        impl Element for $t {
            const DTYPE: Dtype = $dt;
            type Acc = $acc;
            #[inline(always)]
            fn to_acc(self) -> $acc {
                self as $acc
            }
            #[inline(always)]
            fn from_acc(a: $acc) -> Self {
                a as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_i128(self) -> i128 {
                self as i128
            }
            #[inline(always)]
            fn from_i128(v: i128) -> Self {
                v as $t
            }
        }
    };
}
int_element!(u8, Dtype::U8, u64);
int_element!(u16, Dtype::U16, u64);
int_element!(u32, Dtype::U32, u64);
int_element!(u64, Dtype::U64, u64);
int_element!(i8, Dtype::I8, i64);
int_element!(i16, Dtype::I16, i64);
int_element!(i32, Dtype::I32, i64);
int_element!(i64, Dtype::I64, i64);

impl Element for bool {
    const DTYPE: Dtype = Dtype::Bool;
    type Acc = bool;
    #[inline(always)]
    fn to_acc(self) -> bool {
        self
    }
    #[inline(always)]
    fn from_acc(a: bool) -> Self {
        a
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    #[inline(always)]
    fn to_i128(self) -> i128 {
        self as i128
    }
    #[inline(always)]
    fn from_i128(v: i128) -> Self {
        v != 0
    }
}

impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
    type Acc = f32;
    #[inline(always)]
    fn to_acc(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_acc(a: f32) -> Self {
        a
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_i128(self) -> i128 {
        self as i128
    }
    #[inline(always)]
    fn from_i128(v: i128) -> Self {
        v as f32
    }
}

impl Element for f64 {
    const DTYPE: Dtype = Dtype::F64;
    type Acc = f64;
    #[inline(always)]
    fn to_acc(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_acc(a: f64) -> Self {
        a
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_i128(self) -> i128 {
        self as i128
    }
    #[inline(always)]
    fn from_i128(v: i128) -> Self {
        v as f64
    }
}

macro_rules! half_element {
    ($t:ty, $dt:expr) => {
        impl Element for $t {
            const DTYPE: Dtype = $dt;
            type Acc = f32;
            #[inline(always)]
            fn to_acc(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn from_acc(a: f32) -> Self {
                <$t>::from_f32(a)
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self.to_f64()
            }
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
            #[inline(always)]
            fn to_i128(self) -> i128 {
                self.to_f32() as i128
            }
            #[inline(always)]
            fn from_i128(v: i128) -> Self {
                <$t>::from_f64(v as f64)
            }
        }
    };
}
half_element!(f16, Dtype::F16);

/// bfloat16 to f32 (exact), branch-free so that loops over it vectorize; a NaN comes back as a
/// quiet NaN with its payload, bit for bit as `half::bf16::to_f32`.
#[inline(always)]
pub fn bf16_to_f32(v: bf16) -> f32 {
    let b = v.to_bits() as u32;
    // Bit 15 of (b & 0x7FFF) + 0x7F is set exactly for the NaN encodings (above 0x7F80); moved
    // to bit 6 it is the quiet bit. Integer arithmetic only: this vectorizes better than a select.
    let quiet = (((b & 0x7FFF) + 0x7F) & 0x8000) >> 9;
    f32::from_bits((b | quiet) << 16)
}

/// A half or single float widened to f32 for a product that is summed (dot products, matrix
/// products): as `to_acc`, except that bf16 skips the NaN quieting (a plain shift of the bits,
/// which leaves a NaN a NaN, and so the sum NaN), two instructions a vector fewer in the
/// kernels' inner loops.
#[inline(always)]
pub fn widen_for_sum<T: Element<Acc = f32>>(v: T) -> f32 {
    if T::DTYPE == Dtype::Bf16 {
        // SAFETY: T is bf16, two bytes.
        let bits: u16 = unsafe { std::mem::transmute_copy(&v) };
        f32::from_bits((bits as u32) << 16)
    } else {
        v.to_acc()
    }
}

/// f32 to bfloat16, rounding to nearest with ties to even, branch-free so that loops over it
/// vectorize; overflow rounds to infinity and a NaN stays a (quiet) NaN, bit for bit as
/// `half::bf16::from_f32`.
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> bf16 {
    let b = v.to_bits();
    // Adding 0x7FFF plus the lowest kept bit carries into the kept bits exactly when the
    // dropped half is above one half, or equal to it with an odd kept part.
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    let nan = ((b >> 16) | 0x0040) as u16;
    bf16::from_bits(if b & 0x7FFF_FFFF > 0x7F80_0000 { nan } else { rounded })
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    type Acc = f32;
    #[inline(always)]
    fn to_acc(self) -> f32 {
        bf16_to_f32(self)
    }
    #[inline(always)]
    fn from_acc(a: f32) -> Self {
        f32_to_bf16(a)
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        bf16_to_f32(self) as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        // Not through f32: rounding twice could differ from rounding once.
        bf16::from_f64(v)
    }
    #[inline(always)]
    fn to_i128(self) -> i128 {
        bf16_to_f32(self) as i128
    }
    #[inline(always)]
    fn from_i128(v: i128) -> Self {
        bf16::from_f64(v as f64)
    }
}

/// Runs `$body` with the type alias `$T` bound to the element type of `$dtype`.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {{
        use $crate::Dtype as __D;
        match $dtype {
            __D::Bool => {
                type $T = bool;
                $body
            }
            __D::U8 => {
                type $T = u8;
                $body
            }
            __D::U16 => {
                type $T = u16;
                $body
            }
            __D::U32 => {
                type $T = u32;
                $body
            }
            __D::U64 => {
                type $T = u64;
                $body
            }
            __D::I8 => {
                type $T = i8;
                $body
            }
            __D::I16 => {
                type $T = i16;
                $body
            }
            __D::I32 => {
                type $T = i32;
                $body
            }
            __D::I64 => {
                type $T = i64;
                $body
            }
            __D::F16 => {
                type $T = ::half::f16;
                $body
            }
            __D::Bf16 => {
                type $T = ::half::bf16;
                $body
            }
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
        }
    }};
}

/// Like [`dispatch_dtype!`] for the four float dtypes; other dtypes run `$other`.
#[macro_export]
#[doc(hidden)]
macro_rules! dispatch_float {
    ($dtype:expr, $T:ident => $body:expr, $other:expr) => {{
        use $crate::Dtype as __D;
        match $dtype {
            __D::F16 => {
                type $T = ::half::f16;
                $body
            }
            __D::Bf16 => {
                type $T = ::half::bf16;
                $body
            }
            __D::F32 => {
                type $T = f32;
                $body
            }
            __D::F64 => {
                type $T = f64;
                $body
            }
            _ => $other,
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_to_f32_matches_half_exhaustively() {
        for bits in 0..=u16::MAX {
            let v = bf16::from_bits(bits);
            assert_eq!(bf16_to_f32(v).to_bits(), v.to_f32().to_bits(), "bf16 bits {bits:#06x}");
        }
    }

    #[test]
    fn f32_to_bf16_matches_half() {
        let check = |x: f32| {
            assert_eq!(f32_to_bf16(x).to_bits(), bf16::from_f32(x).to_bits(), "f32 bits {:#010x}", x.to_bits());
        };
        // A stride through all bit patterns: normals, subnormals, infinities, NaNs (both signs).
        for i in 0..(u32::MAX / 61) {
            check(f32::from_bits(i.wrapping_mul(61).wrapping_add(i >> 7)));
        }
        // Every rounding case around each bf16 value: exact, ties (even and odd kept part),
        // just below and just above a tie, the largest dropped part; plus every exponent's
        // subnormal/normal/overflow boundary and the NaN/infinity encodings.
        for hi in 0..=u16::MAX as u32 {
            for lo in [0u32, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x4000, 0xC000] {
                check(f32::from_bits(hi << 16 | lo));
            }
        }
        for x in [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, f32::MAX, f32::MIN] {
            check(x);
        }
        check(f32::from_bits(0x7F80_0001)); // a signalling NaN becomes quiet, not infinity
        check(f32::from_bits(0x7F7F_FFFF)); // rounds up to infinity
    }
}
