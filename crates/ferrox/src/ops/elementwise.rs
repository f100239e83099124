//! Elementwise ops: unary math, binary arithmetic and comparisons, `where`, casts.

use crate::array::Array;
use crate::dtype::{Dtype, Kind};
use crate::error::{Error, Result};
use crate::primitives::{BinaryOp, Op, UnaryOp};
use crate::shape::broadcast_shapes;

use super::operand::{unify, IntoOperand};

/// Converts to `dtype` (a no-op if it already is).
pub fn astype(a: &Array, dtype: Dtype) -> Result<Array> {
    if a.dtype() == dtype {
        return Ok(a.clone());
    }
    Ok(Array::from_op(a.shape().to_vec(), dtype, Op::AsType, vec![a.clone()]))
}

/// Reinterprets the bytes as `dtype` (a bit cast). With a different element size the last
/// axis changes length so the bytes per row stay the same.
pub fn view(a: &Array, dtype: Dtype) -> Result<Array> {
    let (si, so) = (a.dtype().size(), dtype.size());
    let mut shape = a.shape().to_vec();
    if si != so {
        let Some(last) = shape.last_mut() else {
            return Err(Error::invalid("view", format!("cannot view a scalar of {} as {dtype}", a.dtype())));
        };
        if (*last * si) % so != 0 {
            return Err(Error::shape(
                "view",
                format!("the last axis of {:?} ({} bytes) is not a whole number of {dtype}", a.shape(), *last * si),
            ));
        }
        *last = *last * si / so;
    }
    Ok(Array::from_op(shape, dtype, Op::BitCast, vec![a.clone()]))
}

/// The same values, blocking gradients.
pub fn stop_gradient(a: &Array) -> Result<Array> {
    Ok(Array::from_op(a.shape().to_vec(), a.dtype(), Op::StopGradient, vec![a.clone()]))
}

fn unary(op: UnaryOp, a: &Array) -> Result<Array> {
    use UnaryOp::*;
    let name = unary_name(op);
    let (input, dtype) = match op {
        IsNan | IsInf | IsFinite | LogicalNot => (a.clone(), Dtype::Bool),
        BitwiseInvert => {
            if a.dtype().is_float() {
                return Err(Error::dtype(name, "needs integer or boolean input", a.dtype()));
            }
            (a.clone(), a.dtype())
        }
        Abs | Negative | Sign | Square | Floor | Ceil | Round => {
            if a.dtype() == Dtype::Bool && matches!(op, Negative | Sign) {
                return Err(Error::dtype(name, "is not defined for booleans", a.dtype()));
            }
            (a.clone(), a.dtype())
        }
        _ => {
            let d = a.dtype().to_float();
            (astype(a, d)?, d)
        }
    };
    Ok(Array::from_op(a.shape().to_vec(), dtype, Op::Unary(op), vec![input]))
}

fn unary_name(op: UnaryOp) -> &'static str {
    use UnaryOp::*;
    match op {
        Abs => "abs",
        Negative => "negative",
        Sign => "sign",
        Exp => "exp",
        Expm1 => "expm1",
        Log => "log",
        Log1p => "log1p",
        Log2 => "log2",
        Log10 => "log10",
        Sqrt => "sqrt",
        Rsqrt => "rsqrt",
        Square => "square",
        Reciprocal => "reciprocal",
        Sin => "sin",
        Cos => "cos",
        Tan => "tan",
        ArcSin => "arcsin",
        ArcCos => "arccos",
        ArcTan => "arctan",
        Sinh => "sinh",
        Cosh => "cosh",
        Tanh => "tanh",
        ArcSinh => "arcsinh",
        ArcCosh => "arccosh",
        ArcTanh => "arctanh",
        Sigmoid => "sigmoid",
        Erf => "erf",
        ErfInv => "erfinv",
        Floor => "floor",
        Ceil => "ceil",
        Round => "round",
        LogicalNot => "logical_not",
        IsNan => "isnan",
        IsInf => "isinf",
        IsFinite => "isfinite",
        BitwiseInvert => "bitwise_invert",
    }
}

macro_rules! unary_fns {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(a: &Array) -> Result<Array> {
            unary(UnaryOp::$op, a)
        }
    )*};
}

unary_fns! {
    /// Absolute value.
    abs => Abs;
    /// `-a`.
    negative => Negative;
    /// −1, 0 or 1 by the sign of each element.
    sign => Sign;
    /// `e^a`.
    exp => Exp;
    /// `e^a − 1`, accurate near 0.
    expm1 => Expm1;
    /// Natural logarithm.
    log => Log;
    /// `log(1 + a)`, accurate near 0.
    log1p => Log1p;
    /// Base-2 logarithm.
    log2 => Log2;
    /// Base-10 logarithm.
    log10 => Log10;
    /// Square root.
    sqrt => Sqrt;
    /// `1 / sqrt(a)`.
    rsqrt => Rsqrt;
    /// `a * a`.
    square => Square;
    /// `1 / a`.
    reciprocal => Reciprocal;
    /// Sine.
    sin => Sin;
    /// Cosine.
    cos => Cos;
    /// Tangent.
    tan => Tan;
    /// Inverse sine.
    arcsin => ArcSin;
    /// Inverse cosine.
    arccos => ArcCos;
    /// Inverse tangent.
    arctan => ArcTan;
    /// Hyperbolic sine.
    sinh => Sinh;
    /// Hyperbolic cosine.
    cosh => Cosh;
    /// Hyperbolic tangent.
    tanh => Tanh;
    /// Inverse hyperbolic sine.
    arcsinh => ArcSinh;
    /// Inverse hyperbolic cosine.
    arccosh => ArcCosh;
    /// Inverse hyperbolic tangent.
    arctanh => ArcTanh;
    /// `1 / (1 + e^-a)`.
    sigmoid => Sigmoid;
    /// The error function.
    erf => Erf;
    /// The inverse error function.
    erfinv => ErfInv;
    /// Round down.
    floor => Floor;
    /// Round up.
    ceil => Ceil;
    /// `a == 0`.
    logical_not => LogicalNot;
    /// True where NaN.
    isnan => IsNan;
    /// True where ±∞.
    isinf => IsInf;
    /// True where neither NaN nor ±∞.
    isfinite => IsFinite;
    /// Bitwise not (integers and bool).
    bitwise_invert => BitwiseInvert;
}

/// Rounds to `decimals` places, half to even.
pub fn round(a: &Array, decimals: i32) -> Result<Array> {
    if decimals == 0 || !a.dtype().is_float() {
        return unary(UnaryOp::Round, a);
    }
    let s = 10f64.powi(decimals);
    divide(&unary(UnaryOp::Round, &multiply(a, s)?)?, s)
}

fn binary(op: BinaryOp, name: &'static str, a: impl IntoOperand, b: impl IntoOperand) -> Result<Array> {
    let (mut arrays, mut dtype) = unify(vec![a.into_operand(), b.into_operand()])?;
    use BinaryOp::*;
    match op {
        Divide | ArcTan2 | LogAddExp if !dtype.is_float() => {
            dtype = Dtype::F32;
            arrays = arrays.iter().map(|x| astype(x, dtype)).collect::<Result<_>>()?;
        }
        BitwiseAnd | BitwiseOr | BitwiseXor | LeftShift | RightShift if dtype.kind() == Kind::Float => {
            return Err(Error::dtype(name, "needs integer or boolean inputs", dtype));
        }
        _ => {}
    }
    let b = arrays.pop().unwrap();
    let a = arrays.pop().unwrap();
    let shape = broadcast_shapes(&[a.shape(), b.shape()], name)?;
    let out_dtype = if op.is_comparison() { Dtype::Bool } else { dtype };
    Ok(Array::from_op(shape, out_dtype, Op::Binary(op), vec![a, b]))
}

macro_rules! binary_fns {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(a: impl IntoOperand, b: impl IntoOperand) -> Result<Array> {
            binary(BinaryOp::$op, stringify!($name), a, b)
        }
    )*};
}

binary_fns! {
    /// `a + b`.
    add => Add;
    /// `a - b`.
    subtract => Subtract;
    /// `a * b`.
    multiply => Multiply;
    /// `a / b` (true division: integers give float32).
    divide => Divide;
    /// `floor(a / b)`, Python's `//`.
    floor_divide => FloorDivide;
    /// Remainder with the sign of `b`, Python's `%`.
    remainder => Remainder;
    /// `a ** b`.
    power => Power;
    /// Elementwise maximum (NaN propagates).
    maximum => Maximum;
    /// Elementwise minimum (NaN propagates).
    minimum => Minimum;
    /// `log(e^a + e^b)`, stable.
    logaddexp => LogAddExp;
    /// The angle of the point (b, a), i.e. `atan(a / b)` in the right quadrant.
    arctan2 => ArcTan2;
    /// `a == b`.
    equal => Equal;
    /// `a != b`.
    not_equal => NotEqual;
    /// `a < b`.
    less => Less;
    /// `a <= b`.
    less_equal => LessEqual;
    /// `a > b`.
    greater => Greater;
    /// `a >= b`.
    greater_equal => GreaterEqual;
    /// Logical and of truth values.
    logical_and => LogicalAnd;
    /// Logical or of truth values.
    logical_or => LogicalOr;
    /// Bitwise and.
    bitwise_and => BitwiseAnd;
    /// Bitwise or.
    bitwise_or => BitwiseOr;
    /// Bitwise xor.
    bitwise_xor => BitwiseXor;
    /// `a << b`.
    left_shift => LeftShift;
    /// `a >> b`.
    right_shift => RightShift;
}

/// `cond ? x : y` elementwise, broadcasting all three.
pub fn where_(cond: impl IntoOperand, x: impl IntoOperand, y: impl IntoOperand) -> Result<Array> {
    let cond = astype(&cond.into_operand().into_array(), Dtype::Bool)?;
    let (mut xy, dtype) = unify(vec![x.into_operand(), y.into_operand()])?;
    let y = xy.pop().unwrap();
    let x = xy.pop().unwrap();
    let shape = broadcast_shapes(&[cond.shape(), x.shape(), y.shape()], "where")?;
    Ok(Array::from_op(shape, dtype, Op::Select, vec![cond, x, y]))
}

/// Limits values to `[min, max]`; either bound may be `None`.
pub fn clip(a: &Array, min: Option<impl IntoOperand>, max: Option<impl IntoOperand>) -> Result<Array> {
    if min.is_none() && max.is_none() {
        return Err(Error::invalid("clip", "at least one of min and max must be given"));
    }
    let mut out = a.clone();
    if let Some(lo) = min {
        out = maximum(&out, lo)?;
    }
    if let Some(hi) = max {
        out = minimum(&out, hi)?;
    }
    Ok(out)
}

/// `|a - b| <= atol + rtol * |b|` elementwise; NaNs compare equal if `equal_nan`.
pub fn isclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    let diff = abs(&subtract(a, b)?)?;
    let tol = add(&multiply(&abs(b)?, rtol)?, atol)?;
    // Infinities are close only to themselves (`equal` covers that): with one infinite
    // operand `diff` and `tol` are both ∞ and `diff <= tol` would hold. NaN is never equal,
    // and `diff <= tol` is false for it.
    let finite = logical_and(&isfinite(a)?, &isfinite(b)?)?;
    let close = logical_or(&logical_and(&less_equal(&diff, &tol)?, &finite)?, &equal(a, b)?)?;
    if equal_nan {
        logical_or(&close, &logical_and(&isnan(a)?, &isnan(b)?)?)
    } else {
        Ok(close)
    }
}

/// True (a bool scalar) if every element pair is [`isclose`].
pub fn allclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    super::all(&isclose(a, b, rtol, atol, equal_nan)?, None, false)
}

/// True (a bool scalar) if the shapes match and every element is equal.
pub fn array_equal(a: &Array, b: &Array, equal_nan: bool) -> Result<Array> {
    if a.shape() != b.shape() {
        return Ok(Array::scalar(false));
    }
    let eq = equal(a, b)?;
    let eq = if equal_nan && (a.dtype().is_float() || b.dtype().is_float()) {
        logical_or(&eq, &logical_and(&isnan(a)?, &isnan(b)?)?)?
    } else {
        eq
    };
    super::all(&eq, None, false)
}
