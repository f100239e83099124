//! Loss functions with `mlx.nn.losses` semantics: the same argument meanings, defaults
//! (documented on each function) and formulas, so a training script ports line by line.
//!
//! Every loss is an ordinary composition of ferrox ops, so it is lazy and differentiable.
//! Where MLX takes several keyword arguments, the Rust function takes an options struct
//! with MLX's defaults (`..Default::default()`); otherwise the arguments are positional.
//!
//! ```
//! use ferrox::{self as fx, Array};
//! use ferrox_nn::losses::{cross_entropy, CrossEntropyOptions, Reduction};
//! let logits = Array::from_slice(&[2.0f32, -1.0, 0.5, 0.0, 3.0, -2.0], &[2, 3]).unwrap();
//! let targets = Array::from_slice(&[0i32, 1], &[2]).unwrap();
//! let opts = CrossEntropyOptions { reduction: Reduction::Mean, ..Default::default() };
//! let loss = cross_entropy(&logits, &targets, &opts).unwrap();
//! assert!((loss.item::<f32>().unwrap() - 0.14815).abs() < 1e-4);
//! ```

use ferrox::{self as fx, Array, Error, Result};

/// How the per-element losses are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The unreduced losses.
    #[default]
    None,
    /// Their mean over every element.
    Mean,
    /// Their sum over every element.
    Sum,
}

impl Reduction {
    /// Applies the reduction to `loss`.
    pub fn apply(self, loss: Array) -> Result<Array> {
        match self {
            Reduction::None => Ok(loss),
            Reduction::Mean => fx::mean(&loss, None, false),
            Reduction::Sum => fx::sum(&loss, None, false),
        }
    }
}

fn same_shape(op: &'static str, what: &str, a: &Array, b: &Array) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(op, format!("{what}: shapes {:?} and {:?} differ", a.shape(), b.shape())));
    }
    Ok(())
}

/// Multiplies `loss` by `weights`, which must have exactly its shape.
fn weighted(op: &'static str, loss: Array, weights: Option<&Array>) -> Result<Array> {
    match weights {
        None => Ok(loss),
        Some(w) => {
            same_shape(op, "weights must have the shape of the unreduced loss", w, &loss)?;
            fx::multiply(&loss, w)
        }
    }
}

/// Options of [`cross_entropy`]; the defaults are MLX's.
#[derive(Clone, Debug)]
pub struct CrossEntropyOptions {
    /// Per-element weights, of the shape of the unreduced loss (default none).
    pub weights: Option<Array>,
    /// The class axis of the logits (default -1).
    pub axis: isize,
    /// Label smoothing in `[0, 1)` (default 0).
    pub label_smoothing: f64,
    /// Reduction (default [`Reduction::None`]).
    pub reduction: Reduction,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions { weights: None, axis: -1, label_smoothing: 0.0, reduction: Reduction::None }
    }
}

/// Cross entropy between `logits` (unnormalized) and `targets`.
///
/// `targets` are either class indices (an integer array: the shape of `logits` less `axis`)
/// or probabilities (the shape of `logits`). With label smoothing `s`, the loss is
/// `logsumexp(x) - (1 - s) * score - s * mean(x)` along the class axis, where `score` is
/// the target logit (or the target-weighted sum of the logits).
pub fn cross_entropy(logits: &Array, targets: &Array, opts: &CrossEntropyOptions) -> Result<Array> {
    const OP: &str = "cross_entropy";
    let s = opts.label_smoothing;
    if !(0.0..1.0).contains(&s) {
        return Err(Error::invalid(OP, format!("label_smoothing must be in [0, 1), got {s}")));
    }
    let axis = opts.axis;
    let probs = targets.ndim() == logits.ndim();
    let expected: Vec<usize> = if probs {
        logits.shape().to_vec()
    } else {
        let ax = normalize_axis(OP, axis, logits.ndim())?;
        let mut shape = logits.shape().to_vec();
        shape.remove(ax);
        shape
    };
    if targets.shape() != expected.as_slice() {
        return Err(Error::shape(
            OP,
            format!(
                "targets of shape {:?} fit neither class indices ({expected:?}) nor probabilities ({:?}) \
                 for logits of shape {:?}",
                targets.shape(),
                logits.shape(),
                logits.shape()
            ),
        ));
    }
    if !probs && targets.dtype().is_float() {
        return Err(Error::dtype(OP, "class-index targets must be integers", targets.dtype()));
    }
    // Shift by the (constant) maximum for stability; the loss is invariant to it.
    let peak = fx::stop_gradient(&fx::max(logits, Some(&[axis]), true)?)?;
    let x = fx::subtract(logits, &peak)?;
    let score = if probs {
        fx::sum(&fx::multiply(&x, targets)?, Some(&[axis]), false)?
    } else {
        let idx = fx::expand_dims(targets, &[axis])?;
        fx::squeeze(&fx::take_along_axis(&x, &idx, Some(axis))?, Some(&[axis]))?
    };
    let lse = fx::logsumexp(&x, Some(&[axis]), false)?;
    let loss = if s > 0.0 {
        let kept = fx::multiply(&score, 1.0 - s)?;
        let spread = fx::multiply(&fx::mean(&x, Some(&[axis]), false)?, -s)?;
        fx::add(&fx::subtract(&lse, &kept)?, &spread)?
    } else {
        fx::subtract(&lse, &score)?
    };
    opts.reduction.apply(weighted(OP, loss, opts.weights.as_ref())?)
}

fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a >= ndim as isize {
        return Err(Error::invalid(op, format!("axis {axis} is out of range for {ndim} dimensions")));
    }
    Ok(a as usize)
}

/// Options of [`binary_cross_entropy`]; the defaults are MLX's.
#[derive(Clone, Debug)]
pub struct BinaryCrossEntropyOptions {
    /// Per-element weights, of the shape of the inputs (default none).
    pub weights: Option<Array>,
    /// Whether the inputs are logits (default true) or probabilities.
    pub with_logits: bool,
    /// Reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
}

impl Default for BinaryCrossEntropyOptions {
    fn default() -> Self {
        BinaryCrossEntropyOptions { weights: None, with_logits: true, reduction: Reduction::Mean }
    }
}

/// Binary cross entropy of `inputs` (logits, or probabilities if `with_logits` is false)
/// against `targets` in `[0, 1]` of the same shape.
///
/// From logits: `log(1 + e^x) - x * t`. From probabilities: `-(t log p + (1 - t) log(1 - p))`
/// with each logarithm clipped below at -100, as MLX and PyTorch do.
pub fn binary_cross_entropy(inputs: &Array, targets: &Array, opts: &BinaryCrossEntropyOptions) -> Result<Array> {
    const OP: &str = "binary_cross_entropy";
    same_shape(OP, "inputs and targets", inputs, targets)?;
    let loss = if opts.with_logits {
        fx::subtract(&fx::logaddexp(0.0, inputs)?, &fx::multiply(inputs, targets)?)?
    } else {
        let log_p = fx::maximum(&fx::log(inputs)?, -100.0)?;
        let log_q = fx::maximum(&fx::log(&fx::subtract(1.0, inputs)?)?, -100.0)?;
        let pos = fx::multiply(targets, &log_p)?;
        let neg = fx::multiply(&fx::subtract(1.0, targets)?, &log_q)?;
        fx::negative(&fx::add(&pos, &neg)?)?
    };
    opts.reduction.apply(weighted(OP, loss, opts.weights.as_ref())?)
}

/// Negative log likelihood: `-inputs[target]` along `axis`, for `inputs` that are
/// log-probabilities and integer class `targets` (the shape of `inputs` less `axis`).
///
/// MLX's defaults: `axis = -1`, `reduction = None`.
pub fn nll_loss(inputs: &Array, targets: &Array, axis: isize, reduction: Reduction) -> Result<Array> {
    const OP: &str = "nll_loss";
    let ax = normalize_axis(OP, axis, inputs.ndim())?;
    let mut expected = inputs.shape().to_vec();
    expected.remove(ax);
    if targets.shape() != expected.as_slice() {
        return Err(Error::shape(
            OP,
            format!("targets of shape {:?} must have shape {expected:?} (the inputs' less the axis)", targets.shape()),
        ));
    }
    let idx = fx::expand_dims(targets, &[axis])?;
    let picked = fx::squeeze(&fx::take_along_axis(inputs, &idx, Some(axis))?, Some(&[axis]))?;
    reduction.apply(fx::negative(&picked)?)
}

/// Mean squared error: `(predictions - targets)²`. MLX's default reduction: `Mean`.
pub fn mse_loss(predictions: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    same_shape("mse_loss", "predictions and targets", predictions, targets)?;
    reduction.apply(fx::square(&fx::subtract(predictions, targets)?)?)
}

/// Mean absolute error: `|predictions - targets|`. MLX's default reduction: `Mean`.
pub fn l1_loss(predictions: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    same_shape("l1_loss", "predictions and targets", predictions, targets)?;
    reduction.apply(fx::abs(&fx::subtract(predictions, targets)?)?)
}

/// Smooth L1: `0.5 d² / beta` where `d = |predictions - targets| < beta`, else `d - 0.5 beta`.
///
/// MLX's defaults: `beta = 1`, `reduction = Mean`.
pub fn smooth_l1_loss(predictions: &Array, targets: &Array, beta: f64, reduction: Reduction) -> Result<Array> {
    const OP: &str = "smooth_l1_loss";
    same_shape(OP, "predictions and targets", predictions, targets)?;
    if beta <= 0.0 {
        return Err(Error::invalid(OP, format!("beta must be positive, got {beta}")));
    }
    let d = fx::abs(&fx::subtract(predictions, targets)?)?;
    let quadratic = fx::divide(&fx::multiply(&fx::square(&d)?, 0.5)?, beta)?;
    let linear = fx::subtract(&d, 0.5 * beta)?;
    reduction.apply(fx::where_(&fx::less(&d, beta)?, &quadratic, &linear)?)
}

/// Huber loss: `0.5 e²` for `|e| <= delta`, `delta (|e| - 0.5 delta)` beyond, with
/// `e = inputs - targets`.
///
/// MLX's defaults: `delta = 1`, `reduction = None`.
pub fn huber_loss(inputs: &Array, targets: &Array, delta: f64, reduction: Reduction) -> Result<Array> {
    let e = fx::abs(&fx::subtract(inputs, targets)?)?;
    let inner = fx::minimum(&e, delta)?;
    let outer = fx::subtract(&e, &inner)?;
    let loss = fx::add(&fx::multiply(&fx::square(&inner)?, 0.5)?, &fx::multiply(&outer, delta)?)?;
    reduction.apply(loss)
}

/// Kullback–Leibler divergence `Σ exp(t) (t - x)` along `axis`, where both `inputs` (x) and
/// `targets` (t) are log-probabilities.
///
/// MLX's defaults: `axis = -1`, `reduction = None`.
pub fn kl_div_loss(inputs: &Array, targets: &Array, axis: isize, reduction: Reduction) -> Result<Array> {
    let terms = fx::multiply(&fx::exp(targets)?, &fx::subtract(targets, inputs)?)?;
    reduction.apply(fx::sum(&terms, Some(&[axis]), false)?)
}

/// Cosine similarity of `x1` and `x2` along `axis`: `x1·x2 / max(|x1| |x2|, eps)`. As in MLX
/// this is the similarity itself (larger is more alike), not `1 -` it.
///
/// MLX's defaults: `axis = 1`, `eps = 1e-8`, `reduction = None`.
pub fn cosine_similarity_loss(x1: &Array, x2: &Array, axis: isize, eps: f64, reduction: Reduction) -> Result<Array> {
    let ord = fx::NormOrd::Default;
    let n1 = fx::norm(x1, ord, Some(&[axis]), false)?;
    let n2 = fx::norm(x2, ord, Some(&[axis]), false)?;
    let dot = fx::sum(&fx::multiply(x1, x2)?, Some(&[axis]), false)?;
    reduction.apply(fx::divide(&dot, &fx::maximum(&fx::multiply(&n1, &n2)?, eps)?)?)
}

/// Hinge loss `max(1 - inputs * targets, 0)` for targets in {-1, 1}. MLX's default
/// reduction: `None`.
pub fn hinge_loss(inputs: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    reduction.apply(fx::maximum(&fx::subtract(1.0, &fx::multiply(inputs, targets)?)?, 0.0)?)
}

/// Log-cosh loss `log(cosh(inputs - targets))`, computed stably as
/// `logaddexp(e, -e) - log 2`. MLX's default reduction: `None`.
pub fn log_cosh_loss(inputs: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    let e = fx::subtract(inputs, targets)?;
    let loss = fx::subtract(&fx::logaddexp(&e, &fx::negative(&e)?)?, std::f64::consts::LN_2)?;
    reduction.apply(loss)
}

/// Margin ranking loss `max(0, margin - targets * (inputs1 - inputs2))` for targets in
/// {-1, 1}; all three arrays have one shape.
///
/// MLX's defaults: `margin = 0`, `reduction = None`.
pub fn margin_ranking_loss(
    inputs1: &Array,
    inputs2: &Array,
    targets: &Array,
    margin: f64,
    reduction: Reduction,
) -> Result<Array> {
    const OP: &str = "margin_ranking_loss";
    same_shape(OP, "inputs1 and inputs2", inputs1, inputs2)?;
    same_shape(OP, "inputs and targets", inputs1, targets)?;
    let diff = fx::subtract(inputs1, inputs2)?;
    let loss = fx::maximum(&fx::add(&fx::negative(&fx::multiply(targets, &diff)?)?, margin)?, 0.0)?;
    reduction.apply(loss)
}

/// Options of [`gaussian_nll_loss`]; the defaults are MLX's.
#[derive(Clone, Debug)]
pub struct GaussianNllOptions {
    /// Add the constant `0.5 log(2π)` (default false).
    pub full: bool,
    /// Lower bound of the variances, for stability (default 1e-6).
    pub eps: f64,
    /// Reduction (default [`Reduction::Mean`]).
    pub reduction: Reduction,
}

impl Default for GaussianNllOptions {
    fn default() -> Self {
        GaussianNllOptions { full: false, eps: 1e-6, reduction: Reduction::Mean }
    }
}

/// Negative Gaussian log likelihood of `targets` under means `inputs` and variances `vars`
/// (all one shape): `0.5 (log v + (t − μ)² / v)` with `v = max(vars, eps)`.
pub fn gaussian_nll_loss(inputs: &Array, targets: &Array, vars: &Array, opts: &GaussianNllOptions) -> Result<Array> {
    const OP: &str = "gaussian_nll_loss";
    same_shape(OP, "inputs and targets", inputs, targets)?;
    same_shape(OP, "inputs and vars", inputs, vars)?;
    let v = fx::maximum(vars, opts.eps)?;
    let sq = fx::divide(&fx::square(&fx::subtract(targets, inputs)?)?, &v)?;
    let mut loss = fx::multiply(&fx::add(&fx::log(&v)?, &sq)?, 0.5)?;
    if opts.full {
        loss = fx::add(&loss, 0.5 * (2.0 * std::f64::consts::PI).ln())?;
    }
    opts.reduction.apply(loss)
}

/// Options of [`triplet_loss`]; the defaults are MLX's.
#[derive(Clone, Debug)]
pub struct TripletOptions {
    /// The axis of the embeddings (default -1).
    pub axis: isize,
    /// The order of the distance norm (default 2).
    pub p: i32,
    /// The margin between positive and negative distances (default 1).
    pub margin: f64,
    /// Added inside the norm's root, for a finite gradient at 0 (default 1e-6).
    pub eps: f64,
    /// Reduction (default [`Reduction::None`]).
    pub reduction: Reduction,
}

impl Default for TripletOptions {
    fn default() -> Self {
        TripletOptions { axis: -1, p: 2, margin: 1.0, eps: 1e-6, reduction: Reduction::None }
    }
}

/// Triplet margin loss `max(d(a, p) − d(a, n) + margin, 0)`, where
/// `d(x, y) = (Σ |x − y|^p + eps)^(1/p)` along `axis`.
pub fn triplet_loss(anchors: &Array, positives: &Array, negatives: &Array, opts: &TripletOptions) -> Result<Array> {
    let dist = |other: &Array| -> Result<Array> {
        let powered = fx::power(&fx::abs(&fx::subtract(anchors, other)?)?, opts.p)?;
        let s = fx::add(&fx::sum(&powered, Some(&[opts.axis]), false)?, opts.eps)?;
        fx::power(&s, 1.0 / opts.p as f64)
    };
    let gap = fx::add(&fx::subtract(&dist(positives)?, &dist(negatives)?)?, opts.margin)?;
    opts.reduction.apply(fx::maximum(&gap, 0.0)?)
}
