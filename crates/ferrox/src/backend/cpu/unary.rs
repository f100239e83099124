//! Elementwise functions of one array.

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::UnaryOp;

use super::iter::{alloc_out, map1, operand, Ptr};
use super::math::{erf_f32, exp_f32, sigmoid_f32, tanh_f32};
use super::simd::Isa;

/// Float math on the compute types `f32` and `f64`.
pub trait FloatMath: Acc {
    /// Applies a float unary op; `isa` is the instruction set the calling loop runs under.
    /// Kernels call it with a constant `op` so that the `match` folds away.
    fn unary(self, op: UnaryOp, isa: Isa) -> Self;
}

/// `e^x` in f64 (libm).
#[inline(always)]
fn exp_f64(x: f64, _: Isa) -> f64 {
    x.exp()
}

/// `erf` in f64 (libm).
#[inline(always)]
fn erf_f64(x: f64, _: Isa) -> f64 {
    libm::erf(x)
}

/// `tanh` in f64 (std).
#[inline(always)]
fn tanh_f64(x: f64, _: Isa) -> f64 {
    x.tanh()
}

/// The logistic function in f64, without overflow for either sign.
#[inline(always)]
fn sigmoid_f64(x: f64, _: Isa) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

macro_rules! float_math {
    ($t:ident, $erf:path, $exp:path, $sigmoid:path, $tanh:path) => {
        impl FloatMath for $t {
            #[inline(always)]
            fn unary(self, op: UnaryOp, isa: Isa) -> $t {
                use UnaryOp::*;
                let x = self;
                match op {
                    Exp => $exp(x, isa),
                    Expm1 => x.exp_m1(),
                    Log => x.ln(),
                    Log1p => x.ln_1p(),
                    Log2 => x.log2(),
                    Log10 => x.log10(),
                    Sqrt => x.sqrt(),
                    Rsqrt => 1.0 / x.sqrt(),
                    Reciprocal => 1.0 / x,
                    Sin => x.sin(),
                    Cos => x.cos(),
                    Tan => x.tan(),
                    ArcSin => x.asin(),
                    ArcCos => x.acos(),
                    ArcTan => x.atan(),
                    Sinh => x.sinh(),
                    Cosh => x.cosh(),
                    Tanh => $tanh(x, isa),
                    ArcSinh => x.asinh(),
                    ArcCosh => x.acosh(),
                    ArcTanh => x.atanh(),
                    Sigmoid => $sigmoid(x, isa),
                    Erf => $erf(x, isa),
                    ErfInv => erfinv_f64(x as f64) as $t,
                    Floor => x.floor(),
                    Ceil => x.ceil(),
                    Round => x.round_ties_even(),
                    Abs => x.abs(),
                    Negative => -x,
                    Sign => Acc::sign(x),
                    Square => x * x,
                    LogicalNot | IsNan | IsInf | IsFinite | BitwiseInvert => {
                        unreachable!("predicate reached the float kernel")
                    }
                }
            }
        }
    };
}
float_math!(f32, erf_f32, exp_f32, sigmoid_f32, tanh_f32);
float_math!(f64, erf_f64, exp_f64, sigmoid_f64, tanh_f64);

/// The inverse error function, to double precision: Giles' single-precision approximation
/// refined by two Newton steps on erf.
pub fn erfinv_f64(y: f64) -> f64 {
    if y.is_nan() || !(-1.0..=1.0).contains(&y) {
        return f64::NAN;
    }
    if y == 1.0 {
        return f64::INFINITY;
    }
    if y == -1.0 {
        return f64::NEG_INFINITY;
    }
    let w = -((1.0 - y) * (1.0 + y)).ln();
    let mut x = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p * y
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p * y
    };
    // Newton on erf(x) - y = 0; erf'(x) = 2/sqrt(pi) exp(-x^2).
    for _ in 0..2 {
        let err = libm::erf(x) - y;
        x -= err / (std::f64::consts::FRAC_2_SQRT_PI * (-x * x).exp());
    }
    x
}

/// Maps `f` over the input at `p` with strides `s` (broadcast to `shape`) into a new row-major
/// array of `shape`.
fn map_new<T: Element, O: Element>(
    p: Ptr<T>,
    s: Vec<isize>,
    shape: &[usize],
    f: impl Fn(T, Isa) -> O + Sync + Send,
) -> Result<Data> {
    alloc_out::<O>(shape, |out| {
        map1(p, s, shape, out, f);
        Ok(())
    })
}

/// Expands to a `match` on `$op` with one arm per listed variant, each instantiating `$body`
/// with `$c` bound to that variant as a constant, so every op gets its own loop.
macro_rules! per_op {
    ($op:expr, $c:ident => $body:expr, [$($v:ident),* $(,)?], $other:expr) => {
        match $op {
            $(UnaryOp::$v => {
                const $c: UnaryOp = UnaryOp::$v;
                $body
            })*
            _ => $other,
        }
    };
}

/// [`per_op!`] over every op of [`FloatMath::unary`]: one loop per float op, for the plain
/// kernel here and the fused block interpreter alike.
macro_rules! per_float_op {
    ($op:expr, $c:ident => $body:expr) => {
        per_op!(
            $op,
            $c => $body,
            [
                Exp, Expm1, Log, Log1p, Log2, Log10, Sqrt, Rsqrt, Reciprocal, Sin, Cos, Tan, ArcSin,
                ArcCos, ArcTan, Sinh, Cosh, Tanh, ArcSinh, ArcCosh, ArcTanh, Sigmoid, Erf, ErfInv,
                Floor, Ceil, Round, Abs, Negative, Sign, Square,
            ],
            unreachable!("unary float op {:?}", $op)
        )
    };
}
pub(super) use {per_float_op, per_op};

/// Evaluates a unary op into an output of `dtype`.
pub fn eval(op: UnaryOp, x: &Array, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let d = x.data()?;
    let xs = x.shape();
    let in_dtype = x.dtype();
    use UnaryOp::*;
    match op {
        IsNan | IsInf | IsFinite | LogicalNot => crate::dispatch_dtype!(in_dtype, T => {
            let (p, s) = operand::<T>(&d, xs, shape);
            per_op!(op, OP => map_new::<T, bool>(p, s, shape, #[inline(always)] |v: T, _| {
                let f = Element::to_f64(v);
                match OP {
                    IsNan => f.is_nan(),
                    IsInf => f.is_infinite(),
                    IsFinite => f.is_finite(),
                    _ => f == 0.0,
                }
            }), [IsNan, IsInf, IsFinite, LogicalNot], unreachable!())
        }),
        Abs | Negative | Sign | Square | BitwiseInvert | Floor | Ceil | Round if !dtype.is_float() => {
            crate::dispatch_dtype!(dtype, T => {
                let (p, s) = operand::<T>(&d, xs, shape);
                per_op!(op, OP => map_new::<T, T>(p, s, shape, #[inline(always)] |v: T, _| {
                    let a = v.to_acc();
                    T::from_acc(match OP {
                        Abs => Acc::abs(a),
                        Negative => Acc::neg(a),
                        Sign => Acc::sign(a),
                        Square => Acc::mul(a, a),
                        BitwiseInvert => Acc::bit_not(a),
                        _ => a, // floor/ceil/round of an integer
                    })
                }), [Abs, Negative, Sign, Square, BitwiseInvert], map_new::<T, T>(p, s, shape, #[inline(always)] |v: T, _| v))
            })
        }
        _ => crate::dispatch_float!(dtype, T => {
            let (p, s) = operand::<T>(&d, xs, shape);
            per_float_op!(
                op,
                OP => map_new::<T, T>(p, s, shape, #[inline(always)] |v: T, isa| T::from_acc(v.to_acc().unary(OP, isa)))
            )
        }, unreachable!("unary float op on {dtype}")),
    }
}
