//! [`Alibi`]: attention with linear biases — a fixed per-head penalty proportional to the
//! distance between query and key positions, added to the attention scores.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::Module;

/// MLX's `nn.ALiBi`: adds `−slope_h · |i − j|` to the scores of head `h`, query `i` (at
/// position `offset + i`) and key `j`. Holds no parameters.
#[derive(Module, Clone, Copy, Debug, Default)]
pub struct Alibi;

impl Alibi {
    /// The head slopes: a geometric sequence from `2^(−8/n)` for a power-of-two `n`, and for
    /// other counts the slopes of the power of two below, then every other slope of twice that.
    pub fn slopes(num_heads: usize) -> Vec<f32> {
        fn pow2(n: usize) -> Vec<f64> {
            let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
            (0..n).map(|i| start * start.powi(i as i32)).collect()
        }
        if num_heads == 0 {
            return Vec::new();
        }
        let p = 1usize << num_heads.ilog2();
        let mut s = pow2(p);
        if p != num_heads {
            s.extend(pow2(2 * p).into_iter().step_by(2).take(num_heads - p));
        }
        s.into_iter().map(|v| v as f32).collect()
    }

    /// The bias `[1, num_heads, q_len, k_len]` for queries at positions `offset..offset+q_len`.
    pub fn matrix(q_len: usize, k_len: usize, num_heads: usize, offset: usize, dtype: Dtype) -> Result<Array> {
        let q = fx::arange(offset as f64, (offset + q_len) as f64, 1.0, Dtype::F32)?;
        let k = fx::arange(0.0, k_len as f64, 1.0, Dtype::F32)?;
        let dist = fx::negative(&fx::abs(&fx::subtract(&fx::expand_dims(&q, &[1])?, &fx::expand_dims(&k, &[0])?)?)?)?;
        let slopes = fx::reshape_usize(&Array::from_vec(Self::slopes(num_heads)), &[1, num_heads, 1, 1])?;
        fx::astype(&fx::multiply(&fx::expand_dims(&dist, &[0, 1])?, &slopes)?, dtype)
    }

    /// `scores` `[B, H, L, S]` plus the bias (and `mask`, if given).
    pub fn forward(&self, scores: &Array, offset: usize, mask: Option<&Array>) -> Result<Array> {
        if scores.ndim() != 4 {
            return Err(Error::shape("Alibi", format!("scores of shape {:?} must be [B, H, L, S]", scores.shape())));
        }
        let s = scores.shape();
        let mut bias = Self::matrix(s[2], s[3], s[1], offset, scores.dtype())?;
        if let Some(m) = mask {
            bias = fx::add(&bias, m)?;
        }
        fx::add(scores, &bias)
    }
}
