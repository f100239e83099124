//! Replays the NumPy-float64 reference fixtures (tests/fixtures/ops_numpy.json, made by
//! scripts/make_op_fixtures.py) through ferrox.
//!
//! Each case names an op, its parameters and inputs (with an optional layout — transpose,
//! strided slice, broadcast — applied before the op so kernels see non-contiguous data) and
//! the expected outputs, computed by NumPy in float64 and rounded to the dtype MLX produces.
//! Outputs must match in dtype and shape; values within per-dtype tolerances (integers and
//! bools exactly, NaN where NaN is expected, infinities exactly).
//!
//! Cases marked `"error": true` are inputs MLX refuses; ferrox must return an error.
//!
//! Set `FERROX_CASE=substring` to run only the cases whose name contains it.

use ferrox::{self as fx, Array, Dtype, NormOrd, Operand, PadMode, Scalar, SplitAt};
use serde_json::Value;

type R<T> = std::result::Result<T, String>;

/// The fixture file, read at run time so regenerating it needs no rebuild.
fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ops_numpy.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Reading values and arguments.

fn num(v: &Value) -> R<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("bad number {n}")),
        Value::Bool(b) => Ok(*b as u8 as f64),
        Value::String(s) => match s.as_str() {
            "nan" => Ok(f64::NAN),
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            _ => Err(format!("bad number string {s:?}")),
        },
        _ => Err(format!("expected a number, got {v}")),
    }
}

fn int(v: &Value) -> R<i64> {
    match v {
        Value::Bool(b) => Ok(*b as i64),
        _ => v.as_i64().ok_or_else(|| format!("expected an integer, got {v}")),
    }
}

fn arg<'a>(args: &'a Value, key: &str) -> R<&'a Value> {
    args.get(key).ok_or_else(|| format!("missing argument {key:?}"))
}

fn arg_f64(args: &Value, key: &str) -> R<f64> {
    num(arg(args, key)?)
}

fn arg_i64(args: &Value, key: &str) -> R<i64> {
    int(arg(args, key)?)
}

fn arg_bool(args: &Value, key: &str) -> R<bool> {
    arg(args, key)?.as_bool().ok_or_else(|| format!("argument {key:?} is not a bool"))
}

fn ints(v: &Value) -> R<Vec<i64>> {
    v.as_array().ok_or_else(|| format!("expected a list, got {v}"))?.iter().map(int).collect()
}

fn arg_isizes(args: &Value, key: &str) -> R<Vec<isize>> {
    Ok(ints(arg(args, key)?)?.into_iter().map(|x| x as isize).collect())
}

fn arg_usizes(args: &Value, key: &str) -> R<Vec<usize>> {
    Ok(ints(arg(args, key)?)?.into_iter().map(|x| x as usize).collect())
}

/// `null` (or absent) → `None`, else a list of axes.
fn arg_axes(args: &Value, key: &str) -> R<Option<Vec<isize>>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(ints(v)?.into_iter().map(|x| x as isize).collect())),
    }
}

/// `null` (or absent) → `None`, else one axis.
fn arg_axis(args: &Value, key: &str) -> R<Option<isize>> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(int(v)? as isize)),
    }
}

fn arg_dtype(args: &Value, key: &str) -> R<Dtype> {
    let name = arg(args, key)?.as_str().ok_or_else(|| format!("argument {key:?} is not a string"))?;
    Dtype::from_name(name).ok_or_else(|| format!("unknown dtype {name}"))
}

fn scalar(v: &Value) -> R<Scalar> {
    Ok(match v {
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) if n.is_i64() => Scalar::Int(n.as_i64().unwrap()),
        _ => Scalar::Float(num(v)?),
    })
}

// ---------------------------------------------------------------------------------------------
// Building inputs.

/// The stored base values: `data`, or `gen` (value[i] = ((i * mul) % mod) * scale + offset).
fn base_values(spec: &Value, n: usize) -> R<Vec<f64>> {
    if let Some(g) = spec.get("gen") {
        let (mul, modulus) = (arg_i64(g, "mul")?, arg_i64(g, "mod")?);
        let (scale, offset) = (arg_f64(g, "scale")?, arg_f64(g, "offset")?);
        return Ok((0..n as i64).map(|i| ((i * mul) % modulus) as f64 * scale + offset).collect());
    }
    let data = arg(spec, "data")?.as_array().ok_or("data is not a list")?;
    if data.len() != n {
        return Err(format!("data has {} values for {n} elements", data.len()));
    }
    data.iter().map(num).collect()
}

fn array_input(spec: &Value) -> R<Array> {
    let dtype = arg_dtype(spec, "dtype")?;
    let shape = arg_usizes(spec, "shape")?;
    let vals = base_values(spec, shape.iter().product())?;
    let base = if dtype == Dtype::Bool {
        Array::from_slice(&vals.iter().map(|&v| v != 0.0).collect::<Vec<_>>(), &shape)
    } else if dtype.is_integer() {
        Array::from_slice(&vals.iter().map(|&v| v as i64).collect::<Vec<_>>(), &shape)
    } else {
        Array::from_slice(&vals, &shape)
    }
    .map_err(|e| e.to_string())?;
    let x = fx::astype(&base, dtype).map_err(|e| e.to_string())?;
    x.eval().map_err(|e| e.to_string())?;
    let mut x = x;
    if let Some(layout) = spec.get("layout") {
        for step in layout.as_array().ok_or("layout is not a list")? {
            let kind = step[0].as_str().ok_or("layout step has no name")?;
            let isz = |i: usize| -> R<Vec<isize>> { Ok(ints(&step[i])?.into_iter().map(|v| v as isize).collect()) };
            x = match kind {
                "transpose" => fx::transpose(&x, &isz(1)?.into_iter().map(|v| v as usize).collect::<Vec<_>>()),
                "slice" => fx::slice(&x, &isz(1)?, &isz(2)?, &isz(3)?),
                "broadcast" => fx::broadcast_to(&x, &isz(1)?.into_iter().map(|v| v as usize).collect::<Vec<_>>()),
                other => return Err(format!("unknown layout step {other}")),
            }
            .map_err(|e| format!("layout {kind}: {e}"))?;
        }
    }
    Ok(x)
}

fn operand(spec: &Value) -> R<Option<Operand>> {
    if spec.is_null() {
        return Ok(None);
    }
    if let Some(s) = spec.get("scalar") {
        return Ok(Some(Operand::Scalar(scalar(s)?)));
    }
    Ok(Some(Operand::Array(array_input(spec)?)))
}

/// The inputs of a case, all of which must be arrays (not scalars or absent).
struct Inputs(Vec<Option<Operand>>);

impl Inputs {
    fn op(&self, i: usize) -> R<Operand> {
        self.0.get(i).cloned().flatten().ok_or_else(|| format!("input {i} is missing"))
    }

    fn arr(&self, i: usize) -> R<Array> {
        match self.op(i)? {
            Operand::Array(a) => Ok(a),
            Operand::Scalar(_) => Err(format!("input {i} should be an array")),
        }
    }

    fn arrays(&self) -> R<Vec<Array>> {
        (0..self.0.len()).map(|i| self.arr(i)).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Running an op.

fn unary(name: &str) -> Option<fn(&Array) -> fx::Result<Array>> {
    Some(match name {
        "abs" => fx::abs,
        "negative" => fx::negative,
        "sign" => fx::sign,
        "exp" => fx::exp,
        "expm1" => fx::expm1,
        "log" => fx::log,
        "log1p" => fx::log1p,
        "log2" => fx::log2,
        "log10" => fx::log10,
        "sqrt" => fx::sqrt,
        "rsqrt" => fx::rsqrt,
        "square" => fx::square,
        "reciprocal" => fx::reciprocal,
        "sin" => fx::sin,
        "cos" => fx::cos,
        "tan" => fx::tan,
        "arcsin" => fx::arcsin,
        "arccos" => fx::arccos,
        "arctan" => fx::arctan,
        "sinh" => fx::sinh,
        "cosh" => fx::cosh,
        "tanh" => fx::tanh,
        "arcsinh" => fx::arcsinh,
        "arccosh" => fx::arccosh,
        "arctanh" => fx::arctanh,
        "sigmoid" => fx::sigmoid,
        "erf" => fx::erf,
        "erfinv" => fx::erfinv,
        "floor" => fx::floor,
        "ceil" => fx::ceil,
        "logical_not" => fx::logical_not,
        "isnan" => fx::isnan,
        "isinf" => fx::isinf,
        "isfinite" => fx::isfinite,
        "bitwise_invert" => fx::bitwise_invert,
        _ => return None,
    })
}

fn binary(name: &str) -> Option<fn(Operand, Operand) -> fx::Result<Array>> {
    Some(match name {
        "add" => fx::add,
        "subtract" => fx::subtract,
        "multiply" => fx::multiply,
        "divide" => fx::divide,
        "floor_divide" => fx::floor_divide,
        "remainder" => fx::remainder,
        "power" => fx::power,
        "maximum" => fx::maximum,
        "minimum" => fx::minimum,
        "logaddexp" => fx::logaddexp,
        "arctan2" => fx::arctan2,
        "equal" => fx::equal,
        "not_equal" => fx::not_equal,
        "less" => fx::less,
        "less_equal" => fx::less_equal,
        "greater" => fx::greater,
        "greater_equal" => fx::greater_equal,
        "logical_and" => fx::logical_and,
        "logical_or" => fx::logical_or,
        "bitwise_and" => fx::bitwise_and,
        "bitwise_or" => fx::bitwise_or,
        "bitwise_xor" => fx::bitwise_xor,
        "left_shift" => fx::left_shift,
        "right_shift" => fx::right_shift,
        _ => return None,
    })
}

type Reduction = fn(&Array, Option<&[isize]>, bool) -> fx::Result<Array>;

fn reduction(name: &str) -> Option<Reduction> {
    Some(match name {
        "sum" => fx::sum,
        "prod" => fx::prod,
        "max" => fx::max,
        "min" => fx::min,
        "all" => fx::all,
        "any" => fx::any,
        "mean" => fx::mean,
        "logsumexp" => fx::logsumexp,
        _ => return None,
    })
}

type ScanFn = fn(&Array, Option<isize>, bool, bool) -> fx::Result<Array>;

fn scan(name: &str) -> Option<ScanFn> {
    Some(match name {
        "cumsum" => fx::cumsum,
        "cumprod" => fx::cumprod,
        "cummax" => fx::cummax,
        "cummin" => fx::cummin,
        _ => return None,
    })
}

fn norm_ord(v: &Value) -> R<NormOrd> {
    Ok(match v {
        Value::Null => NormOrd::Default,
        Value::String(s) if s == "fro" => NormOrd::Fro,
        Value::String(s) if s == "inf" => NormOrd::Inf,
        Value::String(s) if s == "-inf" => NormOrd::NegInf,
        _ => NormOrd::P(num(v)?),
    })
}

/// Runs op `name` with `args` on `inp`; ferrox errors become `Err` with the message.
fn run(name: &str, args: &Value, inp: &Inputs) -> R<Vec<Array>> {
    let fx_err = |e: fx::Error| format!("ferrox error: {e}");
    let one = |r: fx::Result<Array>| r.map(|a| vec![a]).map_err(fx_err);
    if let Some(f) = unary(name) {
        return one(f(&inp.arr(0)?));
    }
    if let Some(f) = binary(name) {
        return one(f(inp.op(0)?, inp.op(1)?));
    }
    if let Some(f) = reduction(name) {
        return one(f(&inp.arr(0)?, arg_axes(args, "axes")?.as_deref(), arg_bool(args, "keepdims")?));
    }
    if let Some(f) = scan(name) {
        let (rev, incl) = (arg_bool(args, "reverse")?, arg_bool(args, "inclusive")?);
        return one(f(&inp.arr(0)?, arg_axis(args, "axis")?, rev, incl));
    }
    let shape = || arg_usizes(args, "shape");
    let dtype = || arg_dtype(args, "dtype");
    let k = || Ok::<isize, String>(arg_i64(args, "k")? as isize);
    let m = || -> R<Option<usize>> { Ok(arg_axis(args, "m")?.map(|v| v as usize)) };
    match name {
        // creation
        "zeros" => one(fx::zeros(&shape()?, dtype()?)),
        "ones" => one(fx::ones(&shape()?, dtype()?)),
        "full" => match args.get("value") {
            Some(v) => one(fx::full(&shape()?, Operand::Scalar(scalar(v)?), dtype()?)),
            None => one(fx::full(&shape()?, &inp.arr(0)?, dtype()?)),
        },
        "zeros_like" => one(fx::zeros_like(&inp.arr(0)?)),
        "ones_like" => one(fx::ones_like(&inp.arr(0)?)),
        "full_like" => one(fx::full_like(&inp.arr(0)?, inp.op(1)?)),
        "arange" => one(fx::arange(arg_f64(args, "start")?, arg_f64(args, "stop")?, arg_f64(args, "step")?, dtype()?)),
        "linspace" => {
            one(fx::linspace(arg_f64(args, "start")?, arg_f64(args, "stop")?, arg_i64(args, "num")? as usize, dtype()?))
        }
        "eye" => one(fx::eye(arg_i64(args, "n")? as usize, m()?, k()?, dtype()?)),
        "identity" => one(fx::identity(arg_i64(args, "n")? as usize, dtype()?)),
        "tri" => one(fx::tri(arg_i64(args, "n")? as usize, m()?, k()?, dtype()?)),
        "tril" => one(fx::tril(&inp.arr(0)?, k()?)),
        "triu" => one(fx::triu(&inp.arr(0)?, k()?)),
        // elementwise extras
        "round" => one(fx::round(&inp.arr(0)?, args.get("decimals").map(int).transpose()?.unwrap_or(0) as i32)),
        "where" => one(fx::where_(inp.op(0)?, inp.op(1)?, inp.op(2)?)),
        "clip" => one(fx::clip(&inp.arr(0)?, inp.0.get(1).cloned().flatten(), inp.0.get(2).cloned().flatten())),
        "isclose" | "allclose" => {
            let (rtol, atol, eq) = (arg_f64(args, "rtol")?, arg_f64(args, "atol")?, arg_bool(args, "equal_nan")?);
            let f = if name == "isclose" { fx::isclose } else { fx::allclose };
            one(f(&inp.arr(0)?, &inp.arr(1)?, rtol, atol, eq))
        }
        "array_equal" => one(fx::array_equal(&inp.arr(0)?, &inp.arr(1)?, arg_bool(args, "equal_nan")?)),
        "astype" => one(fx::astype(&inp.arr(0)?, dtype()?)),
        "view" => one(fx::view(&inp.arr(0)?, dtype()?)),
        // reductions with extra parameters
        "var" | "std" => {
            let f = if name == "var" { fx::var } else { fx::std };
            let ddof = arg_i64(args, "ddof")? as usize;
            one(f(&inp.arr(0)?, arg_axes(args, "axes")?.as_deref(), arg_bool(args, "keepdims")?, ddof))
        }
        "argmax" | "argmin" => {
            let f = if name == "argmax" { fx::argmax } else { fx::argmin };
            one(f(&inp.arr(0)?, arg_axis(args, "axis")?, arg_bool(args, "keepdims")?))
        }
        "softmax" => one(fx::softmax(&inp.arr(0)?, arg_axes(args, "axes")?.as_deref(), arg_bool(args, "precise")?)),
        // linalg
        "matmul" => one(fx::matmul(&inp.arr(0)?, &inp.arr(1)?)),
        "addmm" => {
            let (alpha, beta) = (arg_f64(args, "alpha")?, arg_f64(args, "beta")?);
            one(fx::addmm(&inp.arr(0)?, &inp.arr(1)?, &inp.arr(2)?, alpha, beta))
        }
        "inner" => one(fx::inner(&inp.arr(0)?, &inp.arr(1)?)),
        "outer" => one(fx::outer(&inp.arr(0)?, &inp.arr(1)?)),
        "tensordot" => {
            one(fx::tensordot(&inp.arr(0)?, &inp.arr(1)?, &arg_isizes(args, "axes_a")?, &arg_isizes(args, "axes_b")?))
        }
        "norm" => one(fx::norm(
            &inp.arr(0)?,
            norm_ord(arg(args, "ord")?)?,
            arg_axes(args, "axes")?.as_deref(),
            arg_bool(args, "keepdims")?,
        )),
        // shape ops
        "reshape" => one(fx::reshape(&inp.arr(0)?, &arg_isizes(args, "shape")?)),
        "flatten" => one(fx::flatten(&inp.arr(0)?, arg_i64(args, "start")? as isize, arg_i64(args, "end")? as isize)),
        "unflatten" => one(fx::unflatten(&inp.arr(0)?, arg_i64(args, "axis")? as isize, &arg_isizes(args, "shape")?)),
        "squeeze" => one(fx::squeeze(&inp.arr(0)?, arg_axes(args, "axes")?.as_deref())),
        "expand_dims" => one(fx::expand_dims(&inp.arr(0)?, &arg_isizes(args, "axes")?)),
        "transpose" => one(fx::transpose(&inp.arr(0)?, &arg_usizes(args, "perm")?)),
        "swapaxes" => {
            one(fx::swapaxes(&inp.arr(0)?, arg_i64(args, "axis1")? as isize, arg_i64(args, "axis2")? as isize))
        }
        "moveaxis" => {
            one(fx::moveaxis(&inp.arr(0)?, arg_i64(args, "source")? as isize, arg_i64(args, "destination")? as isize))
        }
        "concatenate" => one(fx::concatenate(&inp.arrays()?, arg_i64(args, "axis")? as isize)),
        "stack" => one(fx::stack(&inp.arrays()?, arg_i64(args, "axis")? as isize)),
        "split" => {
            let at = match args.get("sections") {
                Some(s) => SplitAt::Sections(int(s)? as usize),
                None => SplitAt::Indices(arg_usizes(args, "indices")?),
            };
            fx::split(&inp.arr(0)?, at, arg_i64(args, "axis")? as isize).map_err(fx_err)
        }
        "repeat" => one(fx::repeat(&inp.arr(0)?, arg_i64(args, "repeats")? as usize, arg_axis(args, "axis")?)),
        "tile" => one(fx::tile(&inp.arr(0)?, &arg_usizes(args, "reps")?)),
        "pad" => {
            let widths = arg(args, "widths")?
                .as_array()
                .ok_or("widths is not a list")?
                .iter()
                .map(|w| ints(w).map(|p| (p[0] as usize, p[1] as usize)))
                .collect::<R<Vec<_>>>()?;
            let mode = match arg(args, "mode")?.as_str() {
                Some("constant") => PadMode::Constant,
                Some("edge") => PadMode::Edge,
                other => return Err(format!("unknown pad mode {other:?}")),
            };
            one(fx::pad(&inp.arr(0)?, &widths, mode, Operand::Scalar(scalar(arg(args, "value")?)?)))
        }
        "broadcast_to" => one(fx::broadcast_to(&inp.arr(0)?, &shape()?)),
        "slice" => one(fx::slice(
            &inp.arr(0)?,
            &arg_isizes(args, "start")?,
            &arg_isizes(args, "stop")?,
            &arg_isizes(args, "step")?,
        )),
        "slice_update" => one(fx::slice_update(
            &inp.arr(0)?,
            &inp.arr(1)?,
            &arg_isizes(args, "start")?,
            &arg_isizes(args, "stop")?,
            &arg_isizes(args, "step")?,
        )),
        "as_strided" => one(fx::as_strided(
            &inp.arr(0)?,
            &shape()?,
            &arg_isizes(args, "strides")?,
            arg_i64(args, "offset")? as usize,
        )),
        _ => Err(format!("the test does not know op {name:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing.

/// Default (rtol, atol) by output dtype; integers and bools compare exactly.
fn default_tol(dtype: Dtype) -> (f64, f64) {
    match dtype {
        Dtype::F64 => (1e-10, 1e-12),
        Dtype::F32 => (1e-5, 1e-6),
        Dtype::F16 => (1e-2, 1e-3),
        Dtype::Bf16 => (1e-2, 1e-2),
        _ => (0.0, 0.0),
    }
}

fn check_output(got: &Array, want: &Value, case: &Value) -> R<()> {
    let dtype = arg_dtype(want, "dtype")?;
    if got.dtype() != dtype {
        return Err(format!("dtype {} but expected {dtype}", got.dtype()));
    }
    let (mut rtol, mut atol) = default_tol(dtype);
    let mut got = got.clone();
    if let Some(axes) = case.get("sum_output") {
        let axes: Vec<isize> = ints(axes)?.into_iter().map(|v| v as isize).collect();
        got = fx::astype(&got, Dtype::F64).and_then(|g| fx::sum(&g, Some(&axes), false)).map_err(|e| e.to_string())?;
        if !dtype.is_float() {
            (rtol, atol) = default_tol(Dtype::F64);
        }
    }
    rtol = case.get("rtol").map(num).transpose()?.unwrap_or(rtol);
    atol = case.get("atol").map(num).transpose()?.unwrap_or(atol);
    let shape = arg_usizes(want, "shape")?;
    if got.shape() != shape.as_slice() {
        return Err(format!("shape {:?} but expected {shape:?}", got.shape()));
    }
    let data = arg(want, "data")?.as_array().ok_or("expected data is not a list")?;
    let exact = !got.dtype().is_float();
    let values: Vec<f64> = if exact {
        got.to_vec::<i64>().map_err(|e| e.to_string())?.into_iter().map(|v| v as f64).collect()
    } else {
        got.to_vec::<f64>().map_err(|e| e.to_string())?
    };
    let mut bad = Vec::new();
    for (i, (g, w)) in values.iter().zip(data).enumerate() {
        let w = num(w)?;
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || exact {
            *g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        if !ok {
            bad.push(format!("[{i}] got {g} want {w}"));
        }
    }
    if !bad.is_empty() {
        let n = bad.len();
        bad.truncate(6);
        return Err(format!(
            "{n} of {} values differ (rtol {rtol:e}, atol {atol:e}): {}",
            values.len(),
            bad.join(", ")
        ));
    }
    Ok(())
}

fn run_case(case: &Value) -> R<()> {
    let name = arg(case, "op")?.as_str().ok_or("op is not a string")?;
    let null = Value::Null;
    let args = case.get("args").unwrap_or(&null);
    let specs = arg(case, "inputs")?.as_array().ok_or("inputs is not a list")?;
    let inputs = Inputs(specs.iter().map(operand).collect::<R<_>>()?);
    if case.get("error").and_then(Value::as_bool) == Some(true) {
        // MLX refuses these inputs: ferrox must return an error (not panic, not a value).
        return match run(name, args, &inputs) {
            Err(e) if e.starts_with("ferrox error") => Ok(()),
            Err(e) => Err(e),
            Ok(outs) => match fx::eval(&outs.iter().collect::<Vec<_>>()) {
                Err(_) => Ok(()),
                Ok(()) => Err("expected an error, got a result".into()),
            },
        };
    }
    let outs = run(name, args, &inputs)?;
    let wants = arg(case, "outputs")?.as_array().ok_or("outputs is not a list")?;
    if outs.len() != wants.len() {
        return Err(format!("{} outputs but expected {}", outs.len(), wants.len()));
    }
    for (k, (got, want)) in outs.iter().zip(wants).enumerate() {
        check_output(got, want, case).map_err(|e| if wants.len() > 1 { format!("output {k}: {e}") } else { e })?;
    }
    Ok(())
}

#[test]
fn ops_match_numpy_float64() {
    let doc = load();
    let cases = doc["cases"].as_array().expect("the fixture has a list of cases");
    let filter = std::env::var("FERROX_CASE").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        ran += 1;
        let result = std::panic::catch_unwind(|| run_case(case)).unwrap_or_else(|p| {
            Err(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| { p.downcast_ref::<&str>().map(|s| s.to_string()).unwrap_or_default() })
            ))
        });
        if let Err(e) = result {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(ran > 0, "no case matched FERROX_CASE={filter:?}");
    if !failures.is_empty() {
        let n = failures.len();
        failures.truncate(200);
        panic!("{n} of {ran} cases failed:\n{}", failures.join("\n"));
    }
    eprintln!("{ran} cases passed");
}
