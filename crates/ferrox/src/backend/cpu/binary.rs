//! Elementwise functions of two arrays, and `where`.

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::element::{Acc, Element};
use crate::error::Result;
use crate::primitives::BinaryOp;

use super::iter::{alloc_out, map2, map3, operand};

/// `log(exp(a) + exp(b))` without overflow.
#[inline(always)]
pub(super) fn logaddexp<A: Acc>(a: A, b: A) -> A {
    let (x, y) = (a.as_f64(), b.as_f64());
    if x.is_nan() || y.is_nan() {
        return A::of_f64(f64::NAN);
    }
    let (hi, lo) = if x >= y { (x, y) } else { (y, x) };
    // Both −∞ (the log of two zeros) or +∞ present: the larger is the answer; computing
    // `lo - hi` would give ∞ − ∞ = NaN.
    if lo == f64::NEG_INFINITY || hi == f64::INFINITY {
        return A::of_f64(hi);
    }
    A::of_f64(hi + (lo - hi).exp().ln_1p())
}

/// Expands to a `match` on the binary op `$op` with one arm per arithmetic op (output dtype =
/// input dtype), each instantiating `$body` with `$f` bound to that op's function of two
/// accumulator values of type `$A`; `$other` for the comparisons. Every kernel that computes
/// binary arithmetic (the plain kernels here, the fused block interpreter) goes through this
/// one table, so they agree bit for bit.
macro_rules! per_arith_op {
    ($op:expr, $A:ty, $f:ident => $body:expr, $other:expr) => {{
        use $crate::backend::cpu::binary::logaddexp;
        use $crate::backend::cpu::simd::inline_always;
        use $crate::element::Acc;
        match $op {
            BinaryOp::Add => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::add(x, y),
                );
                $body
            }
            BinaryOp::Subtract => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::sub(x, y),
                );
                $body
            }
            BinaryOp::Multiply => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::mul(x, y),
                );
                $body
            }
            BinaryOp::Divide => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::div(x, y),
                );
                $body
            }
            BinaryOp::FloorDivide => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::floor_div(x, y),
                );
                $body
            }
            BinaryOp::Remainder => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::rem(x, y),
                );
                $body
            }
            BinaryOp::Power => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::pow(x, y),
                );
                $body
            }
            BinaryOp::Maximum => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::max(x, y),
                );
                $body
            }
            BinaryOp::Minimum => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::min(x, y),
                );
                $body
            }
            BinaryOp::LogAddExp => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| logaddexp(x, y),
                );
                $body
            }
            BinaryOp::ArcTan2 => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| -> $A { Acc::of_f64(Acc::as_f64(x).atan2(Acc::as_f64(y))) },
                );
                $body
            }
            BinaryOp::BitwiseAnd => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::bit_and(x, y),
                );
                $body
            }
            BinaryOp::BitwiseOr => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::bit_or(x, y),
                );
                $body
            }
            BinaryOp::BitwiseXor => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::bit_xor(x, y),
                );
                $body
            }
            BinaryOp::LeftShift => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::shl(x, y),
                );
                $body
            }
            BinaryOp::RightShift => {
                let $f = inline_always(
                    #[inline(always)]
                    |x: $A, y: $A| Acc::shr(x, y),
                );
                $body
            }
            _ => $other,
        }
    }};
}
pub(super) use per_arith_op;

/// Evaluates a binary op; both inputs have one dtype, the output has `dtype`.
pub fn eval(op: BinaryOp, a: &Array, b: &Array, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (da, db) = (a.data()?, b.data()?);
    let in_dtype = a.dtype();
    crate::dispatch_dtype!(in_dtype, T => {
        let (pa, sa) = operand::<T>(&da, a.shape(), shape);
        let (pb, sb) = operand::<T>(&db, b.shape(), shape);
        macro_rules! arith {
            ($f:expr) => {
                alloc_out::<T>(shape, |out| {
                    map2(pa, sa, pb, sb, shape, out, #[inline(always)] |x: T, y: T, _| T::from_acc($f(x.to_acc(), y.to_acc())));
                    Ok(())
                })
            };
        }
        macro_rules! compare {
            ($f:expr) => {
                alloc_out::<bool>(shape, |out| {
                    map2(pa, sa, pb, sb, shape, out, #[inline(always)] |x: T, y: T, _| $f(x.to_acc(), y.to_acc()));
                    Ok(())
                })
            };
        }
        type A = <T as Element>::Acc;
        debug_assert!(dtype == in_dtype || dtype == Dtype::Bool);
        use BinaryOp::*;
        per_arith_op!(op, A, f => arith!(f), match op {
            Equal => compare!(|x: A, y: A| x == y),
            NotEqual => compare!(|x: A, y: A| x != y),
            // Through PartialOrd's methods: `A` may be bool, where clippy flags `<` and `>`.
            Less => compare!(|x: A, y: A| x.lt(&y)),
            LessEqual => compare!(|x: A, y: A| x.le(&y)),
            Greater => compare!(|x: A, y: A| x.gt(&y)),
            GreaterEqual => compare!(|x: A, y: A| x.ge(&y)),
            LogicalAnd => compare!(|x: A, y: A| x != A::ZERO && y != A::ZERO),
            LogicalOr => compare!(|x: A, y: A| x != A::ZERO || y != A::ZERO),
            _ => unreachable!("{op:?} is arithmetic"),
        })
    })
}

/// `where(cond, x, y)`.
pub fn select(cond: &Array, x: &Array, y: &Array, shape: &[usize], dtype: Dtype) -> Result<Data> {
    let (dc, dx, dy) = (cond.data()?, x.data()?, y.data()?);
    crate::dispatch_dtype!(dtype, T => {
        let c = operand::<bool>(&dc, cond.shape(), shape);
        let a = operand::<T>(&dx, x.shape(), shape);
        let b = operand::<T>(&dy, y.shape(), shape);
        alloc_out::<T>(shape, |out| {
            map3(c, a, b, shape, out, |c: bool, a: T, b: T| if c { a } else { b });
            Ok(())
        })
    })
}
