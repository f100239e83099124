//! Random numbers, counter-based and reproducible from a key, as in MLX and JAX.
//!
//! A key is a uint32 array of shape `[2]` (see [`key`]). Every sampler takes an optional key;
//! the same key always gives the same numbers, and [`split`] derives independent keys from one.
//! Without a key a sampler draws the next key of a process-wide sequence, which [`seed`]
//! resets: each draw splits the current key in two, keeps the first half as the new state and
//! uses the second, as MLX's default key sequence does.
//!
//! Underneath every sampler is [`bits`], the Threefry-2x32 stream laid out as MLX lays it out,
//! and the samplers transform those bits with MLX's formulas, so a key gives MLX's numbers
//! (bit for bit for [`bits`] and [`split`]; to the last float ulp for the rest).
//!
//! ```
//! use ferrox::{random, Dtype};
//! let k = random::key(0);
//! let a = random::normal(&[3], Dtype::F32, 0.0, 1.0, Some(&k)).unwrap();
//! let b = random::normal(&[3], Dtype::F32, 0.0, 1.0, Some(&k)).unwrap();
//! assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
//! ```

use std::cell::RefCell;
use std::sync::Mutex;

use crate::array::Array;
use crate::dtype::{promote_types, Dtype};
use crate::error::{Error, Result};
use crate::primitives::Op;
use crate::shape::{broadcast_shapes, normalize_axis};

use super::{
    abs, add, argmax, astype, concatenate, cumsum, divide, equal, erf, erfinv, exp, expand_dims, isinf, less,
    less_equal, log, log1p, max, maximum, minimum, multiply, negative, reshape_usize, sign, slice_axis, subtract, sum,
    where_, IntoOperand, Operand, Scalar,
};

/// The state of the default key sequence (a key); `None` until first used or seeded.
static STATE: Mutex<Option<Array>> = Mutex::new(None);

thread_local! {
    /// While `compile` traces a function on this thread, the sequence's state lives here
    /// instead of in [`STATE`], so other threads drawing numbers meanwhile neither see the
    /// tracer nor lose their draws when the trace ends.
    static TRACE_STATE: RefCell<Option<Array>> = const { RefCell::new(None) };
}

fn key_words(seed: u64) -> [u32; 2] {
    [(seed >> 32) as u32, seed as u32]
}

/// Runs `f` on the state of the default key sequence, atomically: this thread's trace-local
/// state while `compile` traces, else the global one (seeded from the clock if never seeded).
/// `f` returns the new state with its result.
fn with_state<R>(f: impl FnOnce(&Array) -> Result<(R, Option<Array>)>) -> Result<R> {
    let traced = TRACE_STATE.with(|t| t.borrow().clone());
    if let Some(current) = traced {
        let (r, new) = f(&current)?;
        if let Some(new) = new {
            TRACE_STATE.with(|t| *t.borrow_mut() = Some(new));
        }
        return Ok(r);
    }
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let current = state.get_or_insert_with(clock_key).clone();
    let (r, new) = f(&current)?;
    if let Some(new) = new {
        *state = Some(new);
    }
    Ok(r)
}

/// Resets the default key sequence to start from `key(seed)`.
///
/// Samplers called without a key draw from this sequence, so after `seed(s)` they give the
/// same numbers as MLX after `mx.random.seed(s)`.
pub fn seed(seed: u64) {
    let _ = with_state(|_| Ok(((), Some(key(seed)))));
}

/// The current state of the default key sequence: the key the next draw splits (seeded from
/// the clock if never seeded). `compile` threads it through compiled functions.
pub fn state() -> Array {
    with_state(|s| Ok((s.clone(), None))).expect("reading the state cannot fail")
}

/// Replaces the state of the default key sequence with `key` (a uint32 array of shape [2]).
pub fn set_state(key: Array) -> Result<()> {
    check_key(&key, "set_state")?;
    with_state(|_| Ok(((), Some(key))))
}

/// Updates the state of the default key sequence atomically: `f` maps the current state to a
/// result and the new state (a compiled function's replay).
pub(crate) fn update_state<R>(f: impl FnOnce(&Array) -> Result<(R, Array)>) -> Result<R> {
    with_state(|s| f(s).map(|(r, new)| (r, Some(new))))
}

/// Runs `f` with this thread's default key sequence starting at `initial` and kept apart from
/// the global one (see [`TRACE_STATE`]); returns `f`'s result and the final state.
pub(crate) fn with_trace_state<R>(initial: Array, f: impl FnOnce() -> R) -> (R, Array) {
    let outer = TRACE_STATE.with(|t| t.replace(Some(initial)));
    let r = f();
    let last = TRACE_STATE.with(|t| t.replace(outer)).expect("the trace state is set");
    (r, last)
}

fn clock_key() -> Array {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    key(ms)
}

/// The next key of the default sequence: the state is split in two (lazily, like any op);
/// the first half becomes the new state and the second is returned.
fn next_key() -> Result<Array> {
    with_state(|current| {
        let pair = split(current, 2)?;
        let next = reshape_usize(&slice_axis(&pair, 0, 0, 1)?, &[2])?;
        Ok((reshape_usize(&slice_axis(&pair, 0, 1, 2)?, &[2])?, Some(next)))
    })
}

/// A key from a seed: the uint32 array `[seed >> 32, seed & 0xffffffff]` of shape `[2]`.
pub fn key(seed: u64) -> Array {
    Array::from_vec(key_words(seed).to_vec())
}

fn check_key(key: &Array, op: &'static str) -> Result<()> {
    if key.dtype() != Dtype::U32 {
        return Err(Error::dtype(op, "a key must be uint32 (make one with random::key)", key.dtype()));
    }
    if key.shape() != [2] {
        return Err(Error::shape(op, format!("a key must have shape [2], got {:?}", key.shape())));
    }
    Ok(())
}

fn key_or_next(key: Option<&Array>, op: &'static str) -> Result<Array> {
    match key {
        Some(k) => {
            check_key(k, op)?;
            Ok(k.clone())
        }
        None => next_key(),
    }
}

/// Raw random bits of `shape`: `width` bytes per element (1, 2 or 4 give uint8, uint16 or
/// uint32), from `key` or, if `None`, the next key of the default sequence.
pub fn bits(shape: &[usize], width: usize, key: Option<&Array>) -> Result<Array> {
    let dtype = match width {
        1 => Dtype::U8,
        2 => Dtype::U16,
        4 => Dtype::U32,
        _ => return Err(Error::invalid("bits", format!("the width must be 1, 2 or 4 bytes, got {width}"))),
    };
    let key = key_or_next(key, "bits")?;
    Ok(Array::from_op(shape.to_vec(), dtype, Op::RandomBits, vec![key]))
}

/// Splits `key` into `num` new keys, an array of shape `[num, 2]`; row `i` is a key.
pub fn split(key: &Array, num: usize) -> Result<Array> {
    check_key(key, "split")?;
    bits(&[num, 2], 4, Some(key))
}

/// A scalar or array operand as an array of `dtype`.
fn operand_as(x: Operand, dtype: Dtype) -> Result<Array> {
    match x {
        Operand::Array(a) => astype(&a, dtype),
        Operand::Scalar(s) => Ok(s.to_array(dtype)),
    }
}

/// `v` as a float32 scalar array.
fn f32_scalar(v: f32) -> Array {
    Array::scalar(v)
}

/// The largest value below 1 in `dtype`, as float32 (uniform samples lie in `[0, this]`).
fn below_one(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F16 => half::f16::from_bits(half::f16::ONE.to_bits() - 1).to_f32(),
        Dtype::Bf16 => half::bf16::from_bits(half::bf16::ONE.to_bits() - 1).to_f32(),
        _ => f32::from_bits(1.0f32.to_bits() - 1),
    }
}

fn check_float(dtype: Dtype, op: &'static str) -> Result<()> {
    if !dtype.is_float() {
        return Err(Error::dtype(op, "needs a floating-point dtype", dtype));
    }
    Ok(())
}

/// Uniform samples in `[low, high)` of `shape` and floating-point `dtype`.
///
/// `low` and `high` are scalars or arrays that broadcast to `shape`. Each sample is a uint32
/// of random bits divided by `2^32 - 1` (clamped below 1), scaled to the range.
pub fn uniform(
    low: impl IntoOperand,
    high: impl IntoOperand,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_float(dtype, "uniform")?;
    let lo = operand_as(low.into_operand(), dtype)?;
    let hi = operand_as(high.into_operand(), dtype)?;
    let range = subtract(&hi, &lo)?;
    let out_shape = broadcast_shapes(&[shape, range.shape()], "uniform")?;
    if out_shape != shape {
        return Err(Error::shape(
            "uniform",
            format!("bounds of shape {:?} do not broadcast to the sample shape {shape:?}", range.shape()),
        ));
    }
    let b = bits(shape, 4, key)?;
    let u = divide(&b, f32_scalar(u32::MAX as f32))?;
    let u = astype(&minimum(&u, f32_scalar(below_one(dtype)))?, dtype)?;
    add(&multiply(&range, &u)?, &lo)
}

/// Normal samples of `shape` and floating-point `dtype` with mean `loc` and standard deviation
/// `scale` (scalars or arrays that broadcast to `shape`).
///
/// Computed as `loc + scale * sqrt(2) * erfinv(u)` with `u` uniform in (-1, 1).
pub fn normal(
    shape: &[usize],
    dtype: Dtype,
    loc: impl IntoOperand,
    scale: impl IntoOperand,
    key: Option<&Array>,
) -> Result<Array> {
    check_float(dtype, "normal")?;
    let loc = operand_as(loc.into_operand(), dtype)?;
    let scale = operand_as(scale.into_operand(), dtype)?;
    let out_shape = broadcast_shapes(&[shape, loc.shape(), scale.shape()], "normal")?;
    if out_shape != shape {
        return Err(Error::shape(
            "normal",
            format!(
                "loc {:?} and scale {:?} do not broadcast to the sample shape {shape:?}",
                loc.shape(),
                scale.shape()
            ),
        ));
    }
    let low = f32_scalar(f32::from_bits((-1.0f32).to_bits() - 1));
    let u = uniform(&low, 1.0f32, shape, Dtype::F32, key)?;
    let applied_scale = multiply(Scalar::Float(std::f64::consts::SQRT_2).to_array(dtype), &scale)?;
    let samples = astype(&erfinv(&u)?, dtype)?;
    add(&loc, &multiply(&applied_scale, &samples)?)
}

/// Random integers in `[low, high)` of `shape` and integer `dtype`.
///
/// `low` and `high` are scalars or arrays that broadcast to `shape`; scalar bounds must satisfy
/// `low < high`. Samples are the floor of a float32 uniform in the range, clamped to it.
pub fn randint(
    low: impl IntoOperand,
    high: impl IntoOperand,
    shape: &[usize],
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    if dtype.is_float() {
        return Err(Error::dtype("randint", "needs an integer or boolean dtype", dtype));
    }
    let (low, high) = (low.into_operand(), high.into_operand());
    if let (Operand::Scalar(l), Operand::Scalar(h)) = (&low, &high) {
        if l.as_f64() >= h.as_f64() {
            return Err(Error::invalid("randint", format!("low ({}) must be below high ({})", l.as_f64(), h.as_f64())));
        }
    }
    let u = uniform(low.clone(), high.clone(), shape, Dtype::F32, key)?;
    let out = astype(&super::floor(&u)?, dtype)?;
    // The bounds may not be exact in float32, so the floor can land one outside: clamp.
    let hi = match high {
        Operand::Scalar(Scalar::Int(h)) => Scalar::Int(h - 1).to_array(dtype),
        Operand::Scalar(s) => Scalar::Float(s.as_f64() - 1.0).to_array(dtype),
        Operand::Array(a) => astype(&subtract(&a, 1)?, dtype)?,
    };
    let lo = operand_as(low, dtype)?;
    maximum(&minimum(&out, &hi)?, &lo)
}

/// Booleans that are true with probability `p` (a float scalar or array), of `shape` (the
/// shape of `p` if `None`; `p` must broadcast to it).
pub fn bernoulli(p: impl IntoOperand, shape: Option<&[usize]>, key: Option<&Array>) -> Result<Array> {
    let p = match p.into_operand() {
        Operand::Array(a) if !a.dtype().is_float() => {
            return Err(Error::dtype("bernoulli", "the probability must be a float", a.dtype()));
        }
        Operand::Array(a) => a,
        Operand::Scalar(s) => Scalar::Float(s.as_f64()).to_array(Dtype::F32),
    };
    let shape = shape.unwrap_or(p.shape()).to_vec();
    let out_shape = broadcast_shapes(&[&shape, p.shape()], "bernoulli")?;
    if out_shape != shape {
        return Err(Error::shape(
            "bernoulli",
            format!("the probability of shape {:?} does not broadcast to {shape:?}", p.shape()),
        ));
    }
    // p scaled to [0, next float above 2^32 - 1], so p >= 1 is always and p <= 0 never true.
    let upper = f32_scalar(f32::from_bits((u32::MAX as f32).to_bits() + 1));
    less(&bits(&shape, 4, key)?, &multiply(&p, &upper)?)
}

/// Samples of the standard Gumbel distribution, `-log(-log(u))` for `u` uniform in [0, 1).
pub fn gumbel(shape: &[usize], dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    check_float(dtype, "gumbel")?;
    let u = uniform(0.0, 1.0, shape, dtype, key)?;
    negative(&log(&negative(&log(&u)?)?)?)
}

/// Normal samples truncated to `[lower, upper]` (scalars or arrays), of `shape` (the
/// broadcast shape of the bounds if `None`) and floating-point `dtype`.
///
/// Inverse-CDF sampling: a uniform between the normal CDF of the bounds, mapped back through
/// `sqrt(2) * erfinv`, then clipped to the bounds against rounding.
pub fn truncated_normal(
    lower: impl IntoOperand,
    upper: impl IntoOperand,
    shape: Option<&[usize]>,
    dtype: Dtype,
    key: Option<&Array>,
) -> Result<Array> {
    check_float(dtype, "truncated_normal")?;
    let (lower, upper) = (lower.into_operand(), upper.into_operand());
    if let (Operand::Scalar(l), Operand::Scalar(u)) = (&lower, &upper) {
        if l.as_f64() > u.as_f64() {
            return Err(Error::invalid(
                "truncated_normal",
                format!("lower ({}) must not exceed upper ({})", l.as_f64(), u.as_f64()),
            ));
        }
    }
    let lower = operand_as(lower, dtype)?;
    let upper = operand_as(upper, dtype)?;
    let shape = match shape {
        Some(s) => s.to_vec(),
        None => broadcast_shapes(&[lower.shape(), upper.shape()], "truncated_normal")?,
    };
    let sqrt2 = Scalar::Float(std::f64::consts::SQRT_2).to_array(dtype);
    let a = erf(&divide(&lower, &sqrt2)?)?;
    let b = erf(&divide(&upper, &sqrt2)?)?;
    let u = uniform(&a, &b, &shape, dtype, key)?;
    let out = multiply(&sqrt2, &erfinv(&u)?)?;
    maximum(&minimum(&upper, &out)?, &lower)
}

/// Samples of the Laplace distribution with location `loc` and scale `scale`.
pub fn laplace(shape: &[usize], dtype: Dtype, loc: f64, scale: f64, key: Option<&Array>) -> Result<Array> {
    check_float(dtype, "laplace")?;
    let low = f32_scalar(f32::from_bits((-1.0f32).to_bits() - 1));
    let u = uniform(&low, 1.0f32, shape, Dtype::F32, key)?;
    // Inverse CDF: sign(u) * log(1 - |u|).
    let minus_one = Scalar::Float(-1.0).to_array(dtype);
    let s = multiply(&sign(&u)?, &log1p(&multiply(&minus_one, &abs(&u)?)?)?)?;
    let mut s = astype(&s, dtype)?;
    if scale != 1.0 {
        s = multiply(Scalar::Float(scale).to_array(dtype), &s)?;
    }
    if loc != 0.0 {
        s = add(Scalar::Float(loc).to_array(dtype), &s)?;
    }
    Ok(s)
}

/// Most elements of the comparison matrix built at once by the inverse-CDF sampler.
const SEARCH_CHUNK: usize = 1 << 22;

/// For each element of `u`, the number of elements of the sorted 1-D `cdf` that are `<= u`
/// (searchsorted, side "right"), uint32 of `u`'s shape.
fn count_at_or_below(cdf: &Array, u: &Array) -> Result<Array> {
    let n = cdf.size();
    let m = u.size();
    let flat = reshape_usize(u, &[m, 1])?;
    let row = reshape_usize(cdf, &[1, n])?;
    let per = (SEARCH_CHUNK / n.max(1)).max(1);
    let mut parts = Vec::new();
    let mut start = 0;
    while start < m {
        let stop = (start + per).min(m);
        let chunk =
            if start == 0 && stop == m { flat.clone() } else { slice_axis(&flat, 0, start as isize, stop as isize)? };
        parts.push(sum(&less_equal(&row, &chunk)?, Some(&[1isize][..]), false)?);
        start = stop;
    }
    let counts = if parts.len() == 1 { parts.pop().unwrap() } else { concatenate(&parts, 0)? };
    reshape_usize(&astype(&counts, Dtype::U32)?, u.shape())
}

/// Categorical samples from one distribution by inverting its CDF (what MLX does for a single
/// distribution with a sample shape).
fn categorical_inverse_cdf(logits: &Array, shape: &[usize], key: Option<&Array>) -> Result<Array> {
    let dtype = promote_types(logits.dtype(), Dtype::F32);
    let x = astype(logits, dtype)?;
    let m = max(&x, None, false)?;
    // exp(x - m) is NaN when m is infinite; then the mass is uniform over the maximal entries.
    let w = where_(&isinf(&m)?, &astype(&equal(&x, &m)?, dtype)?, &exp(&subtract(&x, &m)?)?)?;
    let cdf = cumsum(&w, Some(0), false, false)?;
    let u = multiply(&uniform(0.0, 1.0, shape, Dtype::F32, key)?, &sum(&w, None, false)?)?;
    subtract(&count_at_or_below(&cdf, &u)?, Array::scalar(1u32))
}

fn categorical_impl(logits: &Array, axis: usize, shape: &[usize], key: Option<&Array>) -> Result<Array> {
    let n = logits.shape()[axis];
    if n > 0 && logits.size() == n && !shape.is_empty() {
        return categorical_inverse_cdf(&reshape_usize(logits, &[n])?, shape, key);
    }
    // Gumbel-max: argmax(logits + gumbel noise) along the category axis.
    let mut gumbel_shape = shape.to_vec();
    let offset = axis + shape.len() + 1 - logits.ndim();
    gumbel_shape.insert(offset, n);
    let g = gumbel(&gumbel_shape, Dtype::F32, key)?;
    argmax(&add(&g, logits)?, Some(offset as isize), false)
}

/// Samples category indices (uint32) from unnormalized log-probabilities `logits` along
/// `axis`.
///
/// Without `num_samples` the output has the shape of `logits` less `axis`, one sample per
/// distribution; with it, `num_samples` samples per distribution in a new last axis.
pub fn categorical(logits: &Array, axis: isize, num_samples: Option<usize>, key: Option<&Array>) -> Result<Array> {
    let axis = normalize_axis(axis, logits.ndim(), "categorical")?;
    match num_samples {
        None => {
            let mut shape = logits.shape().to_vec();
            shape.remove(axis);
            categorical_impl(logits, axis, &shape, key)
        }
        Some(ns) => {
            let expanded = expand_dims(logits, &[-1])?;
            let mut shape = expanded.shape().to_vec();
            shape.remove(axis);
            *shape.last_mut().expect("expanded logits have at least 2 axes") = ns;
            categorical_impl(&expanded, axis, &shape, key)
        }
    }
}

/// Like [`categorical`], with an explicit output `shape`, which must be a broadcast of the
/// shape of `logits` less `axis`.
pub fn categorical_with_shape(logits: &Array, axis: isize, shape: &[usize], key: Option<&Array>) -> Result<Array> {
    let axis = normalize_axis(axis, logits.ndim(), "categorical")?;
    let mut reduced = logits.shape().to_vec();
    reduced.remove(axis);
    if broadcast_shapes(&[shape, &reduced], "categorical")? != shape {
        return Err(Error::shape(
            "categorical",
            format!("the shape {shape:?} is not a broadcast of the logits' shape less the axis, {reduced:?}"),
        ));
    }
    categorical_impl(logits, axis, shape, key)
}

/// A random permutation of `0..n` (uint32): the argsort of random bits, as MLX does.
pub fn permutation(n: usize, key: Option<&Array>) -> Result<Array> {
    crate::ops::argsort(&bits(&[n], 4, key)?, Some(0))
}

/// `x` with its entries along `axis` randomly permuted.
pub fn permutation_of(x: &Array, axis: isize, key: Option<&Array>) -> Result<Array> {
    let ax = crate::shape::normalize_axis(axis, x.ndim(), "permutation")?;
    let perm = permutation(x.shape()[ax], key)?;
    crate::ops::take(x, &perm, Some(ax as isize))
}
