//! Learning-rate schedules with `mlx.optimizers` semantics: functions of the step counter (a
//! uint64 scalar array) that return the learning rate as a float32 scalar array.
//!
//! An optimizer built with a schedule evaluates it at the step count *before* each update
//! (so the first update uses `schedule(0)`), exactly as MLX does. Schedules are ordinary
//! array functions, so they trace through `fx::compile` with the step as state.
//!
//! ```
//! use ferrox::Array;
//! use ferrox_nn::optim::schedules::{cosine_decay, join_schedules, linear_schedule};
//! // 100 steps of linear warm-up to 1e-3, then cosine decay to 0 over 1000 steps.
//! let warmup = linear_schedule(0.0, 1e-3, 100).unwrap();
//! let decay = cosine_decay(1e-3, 1000, 0.0).unwrap();
//! let lr = join_schedules(vec![warmup, decay], &[100]).unwrap();
//! let at_50 = lr(&Array::scalar(50u64)).unwrap().item::<f32>().unwrap();
//! assert!((at_50 - 5e-4).abs() < 1e-9);
//! ```

use std::sync::Arc;

use ferrox::{self as fx, Array, Error, Result};

/// A learning-rate schedule: the learning rate (float32 scalar) at a step (uint64 scalar).
pub type Schedule = Arc<dyn Fn(&Array) -> Result<Array> + Send + Sync>;

/// `init * decay_rate^step`.
pub fn exponential_decay(init: f64, decay_rate: f64) -> Schedule {
    Arc::new(move |step| fx::multiply(init, &fx::power(decay_rate, step)?))
}

/// `init * decay_rate^(step / step_size)`, the exponent rounded down: the rate drops by
/// `decay_rate` every `step_size` steps.
pub fn step_decay(init: f64, decay_rate: f64, step_size: u64) -> Result<Schedule> {
    if step_size < 1 {
        return Err(Error::invalid("step_decay", "step_size must be at least 1, got 0"));
    }
    let size = to_i64("step_decay", step_size)?;
    Ok(Arc::new(move |step| fx::multiply(init, &fx::power(decay_rate, &fx::floor_divide(step, size)?)?)))
}

/// Half a cosine from `init` at step 0 to `end` at step `decay_steps`, then `end`.
pub fn cosine_decay(init: f64, decay_steps: u64, end: f64) -> Result<Schedule> {
    if decay_steps < 1 {
        return Err(Error::invalid("cosine_decay", "decay_steps must be at least 1, got 0"));
    }
    let n = to_i64("cosine_decay", decay_steps)?;
    let rate = std::f64::consts::PI / decay_steps as f64;
    Ok(Arc::new(move |step| {
        let s = fx::minimum(step, n)?;
        let decay = fx::multiply(&fx::add(&fx::cos(&fx::multiply(rate, &s)?)?, 1.0)?, 0.5)?;
        fx::add(end, &fx::multiply(&decay, init - end)?)
    }))
}

/// A straight line from `init` at step 0 to `end` at step `steps`, then `end`.
pub fn linear_schedule(init: f64, end: f64, steps: u64) -> Result<Schedule> {
    if steps < 1 {
        return Err(Error::invalid("linear_schedule", "steps must be at least 1, got 0"));
    }
    let n = to_i64("linear_schedule", steps)?;
    let slope = (end - init) / steps as f64;
    Ok(Arc::new(move |step| fx::add(&fx::multiply(&fx::minimum(step, n)?, slope)?, init)))
}

/// Runs `schedules[0]` until `boundaries[0]`, then `schedules[1]` (with its step counted
/// from that boundary), and so on: a warm-up followed by a decay, for instance.
/// `boundaries` has one entry fewer than `schedules`.
pub fn join_schedules(schedules: Vec<Schedule>, boundaries: &[u64]) -> Result<Schedule> {
    const OP: &str = "join_schedules";
    if schedules.is_empty() {
        return Err(Error::invalid(OP, "needs at least one schedule"));
    }
    if schedules.len() != boundaries.len() + 1 {
        return Err(Error::invalid(
            OP,
            format!("{} schedules need {} boundaries, got {}", schedules.len(), schedules.len() - 1, boundaries.len()),
        ));
    }
    let boundaries = boundaries.iter().map(|&b| to_i64(OP, b)).collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(move |step| {
        let mut out = schedules[0](step)?;
        for (&b, later) in boundaries.iter().zip(&schedules[1..]) {
            out = fx::where_(&fx::less(step, b)?, &out, &later(&fx::subtract(step, b)?)?)?;
        }
        Ok(out)
    }))
}

fn to_i64(op: &'static str, n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::invalid(op, format!("{n} steps is too many")))
}
