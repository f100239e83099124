//! Parameter initializers with `mlx.nn.init` semantics.
//!
//! MLX's initializers are closures applied to an array; here each is a function of the
//! target shape that returns a fresh array. The random ones draw from `key`, or from the
//! global sequence when `key` is `None` — and since ferrox's random bits are MLX's, after
//! `fx::random::seed(s)` they give exactly the arrays MLX gives after `mx.random.seed(s)`.
//!
//! Fans follow MLX: for a weight of shape `[out, ..., in]`, `fan_in` is the last axis and
//! `fan_out` the first, each times the product of the axes in between (the receptive
//! field of a convolution).
//!
//! ```
//! use ferrox::{self as fx, Dtype};
//! use ferrox_nn::init;
//! let key = fx::random::key(0);
//! let w = init::glorot_uniform(&[64, 32], 1.0, Dtype::F32, Some(&key)).unwrap();
//! let limit = (6.0f32 / 96.0).sqrt();
//! assert!(w.to_vec::<f32>().unwrap().iter().all(|x| x.abs() <= limit));
//! ```

use ferrox::{self as fx, Array, Dtype, Error, Result};

/// Which fan the He initializers scale by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanMode {
    /// The number of inputs (MLX's default): keeps the forward activations' variance.
    #[default]
    FanIn,
    /// The number of outputs: keeps the gradients' variance.
    FanOut,
}

/// `value` everywhere.
pub fn constant(shape: &[usize], value: f64, dtype: Dtype) -> Result<Array> {
    fx::full(shape, value, dtype)
}

/// Normal samples with mean `mean` and standard deviation `std` (MLX's defaults: 0 and 1).
pub fn normal(shape: &[usize], mean: f64, std: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    fx::random::normal(shape, dtype, mean, std, key)
}

/// Uniform samples in `[low, high)` (MLX's defaults: 0 and 1).
pub fn uniform(shape: &[usize], low: f64, high: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    fx::random::uniform(low, high, shape, dtype, key)
}

/// The identity matrix; `shape` must be square and two-dimensional.
pub fn identity(shape: &[usize], dtype: Dtype) -> Result<Array> {
    match shape {
        [n, m] if n == m => fx::identity(*n, dtype),
        _ => Err(Error::shape("init::identity", format!("needs a square matrix shape, got {shape:?}"))),
    }
}

/// `(fan_in, fan_out)` of a weight of `shape` (at least two axes), as MLX computes them.
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::shape(
            "init",
            format!("Glorot and He initialization need at least 2 dimensions, got shape {shape:?}"),
        ));
    }
    let receptive: usize = shape[1..shape.len() - 1].iter().product();
    Ok((shape[shape.len() - 1] * receptive, shape[0] * receptive))
}

/// Glorot (Xavier) normal: standard deviation `gain * sqrt(2 / (fan_in + fan_out))`.
pub fn glorot_normal(shape: &[usize], gain: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let (fan_in, fan_out) = fans(shape)?;
    let std = gain * (2.0 / (fan_in + fan_out) as f64).sqrt();
    fx::random::normal(shape, dtype, 0.0, std, key)
}

/// Glorot (Xavier) uniform: samples in `±gain * sqrt(6 / (fan_in + fan_out))`.
pub fn glorot_uniform(shape: &[usize], gain: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let (fan_in, fan_out) = fans(shape)?;
    let limit = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
    fx::random::uniform(-limit, limit, shape, dtype, key)
}

fn fan(shape: &[usize], mode: FanMode) -> Result<usize> {
    let (fan_in, fan_out) = fans(shape)?;
    Ok(match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    })
}

/// He (Kaiming) normal: standard deviation `gain / sqrt(fan)`, the fan chosen by `mode`.
/// (MLX's defaults: `FanIn`, gain 1; PyTorch's ReLU gain is `sqrt(2)`.)
pub fn he_normal(shape: &[usize], mode: FanMode, gain: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let std = gain / (fan(shape, mode)? as f64).sqrt();
    fx::random::normal(shape, dtype, 0.0, std, key)
}

/// He (Kaiming) uniform: samples in `±gain * sqrt(3 / fan)`, the fan chosen by `mode`.
pub fn he_uniform(shape: &[usize], mode: FanMode, gain: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    let limit = gain * (3.0 / fan(shape, mode)? as f64).sqrt();
    fx::random::uniform(-limit, limit, shape, dtype, key)
}

/// A sparse matrix (2-D `shape`): normal samples with mean `mean` and standard deviation
/// `std`, with a fraction `sparsity` of each row (rounded up) set to zero at random columns.
///
/// Draws, as MLX does, uniform numbers whose per-row order picks the zeroed columns, then the
/// normal samples; with a `key` the two draws use its two halves (`fx::random::split`).
pub fn sparse(shape: &[usize], sparsity: f64, mean: f64, std: f64, dtype: Dtype, key: Option<&Array>) -> Result<Array> {
    const OP: &str = "init::sparse";
    let &[rows, cols] = shape else {
        return Err(Error::shape(OP, format!("needs a 2-D shape, got {shape:?}")));
    };
    if !(0.0..=1.0).contains(&sparsity) {
        return Err(Error::invalid(OP, format!("sparsity must be in [0, 1], got {sparsity}")));
    }
    let keys = match key {
        Some(k) => {
            let halves = fx::random::split(k, 2)?;
            let half = |i: u32| fx::take(&halves, &Array::scalar(i), Some(0));
            Some((half(0)?, half(1)?))
        }
        None => None,
    };
    let (k_order, k_values) = match &keys {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let order = fx::argsort(&fx::random::uniform(0.0, 1.0, shape, Dtype::F32, k_order)?, Some(1))?;
    let values = fx::random::normal(shape, dtype, mean, std, k_values)?;
    let zeros = (sparsity * cols as f64).ceil() as usize;
    if zeros == 0 {
        return Ok(values);
    }
    let picked = fx::slice_axis(&order, 1, 0, zeros as isize)?;
    fx::put_along_axis(&values, &picked, &fx::zeros(&[rows, zeros], dtype)?, Some(1))
}

pub use glorot_normal as xavier_normal;
pub use glorot_uniform as xavier_uniform;
pub use he_normal as kaiming_normal;
pub use he_uniform as kaiming_uniform;
