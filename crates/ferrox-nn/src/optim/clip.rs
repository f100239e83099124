//! Gradient clipping by global norm.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::Params;

/// Scales `grads` so that their global 2-norm (over every array together) is at most
/// `max_norm`; returns the clipped gradients and the norm before clipping.
///
/// As in MLX: the scale is `min(max_norm / (norm + 1e-6), 1)`, float16 gradients are
/// squared in float32 for the norm, and each clipped gradient keeps its dtype.
pub fn clip_grad_norm(grads: &Params, max_norm: f64) -> Result<(Params, Array)> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::invalid("clip_grad_norm", format!("max_norm must be >= 0, got {max_norm}")));
    }
    let mut squared: Option<Array> = None;
    for g in grads.values() {
        let g = if g.dtype() == Dtype::F16 { fx::astype(g, Dtype::F32)? } else { g.clone() };
        let s = fx::sum(&fx::square(&g)?, None, false)?;
        squared = Some(match squared {
            None => s,
            Some(acc) => fx::add(&acc, &s)?,
        });
    }
    let total = fx::sqrt(&squared.unwrap_or_else(|| Array::scalar(0.0f32)))?;
    let scale = fx::minimum(&fx::divide(max_norm, &fx::add(&total, 1e-6)?)?, 1.0)?;
    let clipped = grads
        .iter()
        .map(|(k, g)| {
            let scaled = fx::multiply(g, &scale)?;
            let scaled = if g.dtype().is_float() { fx::astype(&scaled, g.dtype())? } else { scaled };
            Ok((k.clone(), scaled))
        })
        .collect::<Result<Params>>()?;
    Ok((clipped, total))
}
