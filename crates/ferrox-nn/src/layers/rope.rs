//! [`Rope`]: rotary position embeddings and the frequency schedules of long-context models
//! (linear, dynamic NTK, Llama 3, YaRN, LongRoPE/"su"), as mlx-lm's `rope_utils` computes them.
//!
//! Every variant ends in one call of the fused `fx::fast::rope`: the plain one with a `base`,
//! the others with a custom per-pair frequency table (periods: pair `i` turns by
//! `position / freqs[i]`) and, for YaRN and LongRoPE, the rotated features scaled first.

use ferrox::fast::RopeOffset;
use ferrox::{self as fx, Array, Error, Result};

use crate::Module;

/// How a checkpoint stretches its rotary frequencies beyond the trained context
/// (`rope_scaling` in a Hugging Face config).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    Default,
    /// Positions divided by `factor`.
    Linear {
        /// The stretch of the context.
        factor: f32,
    },
    /// Dynamic NTK: the base grows with the sequence length once it passes
    /// `max_position_embeddings`.
    Dynamic {
        /// The stretch of the context.
        factor: f32,
    },
    /// Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        /// The stretch of the context.
        factor: f32,
        /// Wavelengths above `original / low_freq_factor` are scaled fully (default 1).
        low_freq_factor: f32,
        /// Wavelengths below `original / high_freq_factor` are kept (default 4).
        high_freq_factor: f32,
        /// The context the model was pre-trained with (default 8192).
        original_max_position_embeddings: usize,
    },
    /// YaRN: frequencies interpolated by a linear ramp between the `beta_fast` and
    /// `beta_slow` rotation counts, and the rotated features scaled by the mscale ratio.
    Yarn {
        /// The stretch of the context.
        factor: f32,
        /// The context the model was pre-trained with (default 4096).
        original_max_position_embeddings: usize,
        /// Rotation count where interpolation stops (default 32).
        beta_fast: f32,
        /// Rotation count where interpolation starts (default 1).
        beta_slow: f32,
        /// mscale numerator coefficient (default 1).
        mscale: f32,
        /// mscale denominator coefficient (default 0).
        mscale_all_dim: f32,
    },
    /// LongRoPE ("su" scaling, Phi-3): per-pair factors on the periods and a fixed input scale.
    LongRope {
        /// The context the model was pre-trained with.
        original_max_position_embeddings: usize,
        /// Factors for short contexts (kept for completeness; mlx-lm uses the long ones).
        short_factor: Vec<f32>,
        /// One factor per rotated pair (or one for all), multiplying its period.
        long_factor: Vec<f32>,
        /// The input scale; by default `sqrt(1 + ln(s) / ln(original))`, `s` the stretch.
        long_mscale: Option<f32>,
    },
    /// A divisor per rotated pair of the plain frequencies (llama.cpp's `rope_freqs` tensor,
    /// which GGUF files carry for Llama 3's scaling): pair `i` turns by
    /// `position / (base^(2i/dims) · factors[i])`. ferrox's config name: `freq_factors`.
    FreqFactors {
        /// One factor per rotated pair.
        factors: Vec<f32>,
    },
}

impl RopeScaling {
    /// The scaling a Hugging Face `rope_scaling` object describes (`null` → [`RopeScaling::Default`]),
    /// with mlx-lm's defaults for absent fields. The kind is read from `type` or `rope_type`:
    /// `default`, `linear`, `dynamic`, `llama3`, `yarn` (and `deepseek_yarn`, `telechat3-yarn`),
    /// `longrope`, `freq_factors` (with a `factors` list); `mrope` rotates as `default`.
    pub fn from_config(config: &serde_json::Value) -> Result<RopeScaling> {
        if config.is_null() {
            return Ok(RopeScaling::Default);
        }
        let kind = config.get("type").or_else(|| config.get("rope_type")).and_then(|v| v.as_str()).unwrap_or("default");
        let num = |key: &str, default: Option<f64>| -> Result<f64> {
            match config.get(key) {
                Some(v) => v.as_f64().ok_or_else(|| Error::invalid("RopeScaling", format!("{key} must be a number"))),
                None => default.ok_or_else(|| Error::invalid("RopeScaling", format!("{kind} scaling needs {key}"))),
            }
        };
        let list = |key: &str| -> Result<Vec<f32>> {
            match config.get(key) {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_f64().map(|x| x as f32))
                    .collect::<Option<_>>()
                    .ok_or_else(|| Error::invalid("RopeScaling", format!("{key} must be a list of numbers"))),
                Some(v) if v.is_number() => Ok(vec![v.as_f64().unwrap_or(1.0) as f32]),
                _ => Err(Error::invalid("RopeScaling", format!("{kind} scaling needs {key}"))),
            }
        };
        Ok(match kind {
            "default" | "mrope" => RopeScaling::Default,
            "linear" => RopeScaling::Linear { factor: num("factor", None)? as f32 },
            "dynamic" => RopeScaling::Dynamic { factor: num("factor", None)? as f32 },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor", None)? as f32,
                low_freq_factor: num("low_freq_factor", Some(1.0))? as f32,
                high_freq_factor: num("high_freq_factor", Some(4.0))? as f32,
                original_max_position_embeddings: num("original_max_position_embeddings", Some(8192.0))? as usize,
            },
            "yarn" | "deepseek_yarn" | "telechat3-yarn" => RopeScaling::Yarn {
                factor: num("factor", None)? as f32,
                original_max_position_embeddings: num("original_max_position_embeddings", Some(4096.0))? as usize,
                beta_fast: num("beta_fast", Some(32.0))? as f32,
                beta_slow: num("beta_slow", Some(1.0))? as f32,
                mscale: num("mscale", Some(1.0))? as f32,
                mscale_all_dim: num("mscale_all_dim", Some(0.0))? as f32,
            },
            "longrope" => RopeScaling::LongRope {
                original_max_position_embeddings: num("original_max_position_embeddings", None)? as usize,
                short_factor: list("short_factor")?,
                long_factor: list("long_factor")?,
                long_mscale: None,
            },
            "freq_factors" => RopeScaling::FreqFactors { factors: list("factors")? },
            other => return Err(Error::invalid("RopeScaling", format!("unsupported RoPE scaling type {other:?}"))),
        })
    }
}

/// Rotary position embedding over the first `dims` features of the last axis of
/// `[..., L, D]` inputs, MLX's `nn.RoPE` and mlx-lm's scaled variants. Holds no parameters.
#[derive(Module, Clone, Debug)]
pub struct Rope {
    /// The number of rotated features (even).
    #[module(skip)]
    pub dims: usize,
    /// Rotate consecutive pairs (`true`) or the two halves (`false`, the Hugging Face layout).
    #[module(skip)]
    pub traditional: bool,
    #[module(skip)]
    base: f32,
    #[module(skip)]
    scale: f32,
    #[module(skip)]
    freqs: Option<Array>,
    #[module(skip)]
    input_scale: f32,
    #[module(skip)]
    dynamic: Option<(usize, f32)>,
}

/// `base^(2i/dims)` for each pair `i`: the plain periods, computed as float32 like mlx.
fn periods(dims: usize, base: f32) -> Vec<f32> {
    (0..dims / 2).map(|i| base.powf((2 * i) as f32 / dims as f32)).collect()
}

fn yarn_mscale(scale: f32, mscale: f32) -> f32 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

impl Rope {
    /// Plain RoPE with periods `base^(2i/dims)` and positions multiplied by `scale`.
    pub fn new(dims: usize, traditional: bool, base: f32, scale: f32) -> Result<Rope> {
        if dims == 0 || !dims.is_multiple_of(2) {
            return Err(Error::invalid("Rope", format!("dims={dims} must be even and positive")));
        }
        Ok(Rope { dims, traditional, base, scale, freqs: None, input_scale: 1.0, dynamic: None })
    }

    /// RoPE with a custom period per pair (`freqs`, length `dims / 2`), as `fx::fast::rope`
    /// takes them, and the first `dims` features multiplied by `input_scale` first.
    pub fn with_freqs(dims: usize, traditional: bool, freqs: Vec<f32>, input_scale: f32) -> Result<Rope> {
        let mut r = Rope::new(dims, traditional, 0.0, 1.0)?;
        if freqs.len() != dims / 2 {
            return Err(Error::invalid(
                "Rope",
                format!("{} frequencies for dims={dims} (need {})", freqs.len(), dims / 2),
            ));
        }
        r.freqs = Some(Array::from_vec(freqs));
        r.input_scale = input_scale;
        Ok(r)
    }

    /// The variant a checkpoint's `rope_scaling` asks for (mlx-lm's `initialize_rope`).
    /// `max_position_embeddings` is the model's (stretched) context length.
    pub fn from_scaling(
        dims: usize,
        base: f32,
        traditional: bool,
        scaling: &RopeScaling,
        max_position_embeddings: usize,
    ) -> Result<Rope> {
        match scaling {
            RopeScaling::Default => Rope::new(dims, traditional, base, 1.0),
            RopeScaling::Linear { factor } => Rope::new(dims, traditional, base, 1.0 / factor),
            RopeScaling::Dynamic { factor } => {
                let mut r = Rope::new(dims, traditional, base, 1.0)?;
                r.dynamic = Some((max_position_embeddings, *factor));
                Ok(r)
            }
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let old = *original_max_position_embeddings as f32;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                let freqs = periods(dims, base)
                    .into_iter()
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI * f;
                        if wavelen > low_wavelen {
                            f * factor
                        } else if wavelen > high_wavelen {
                            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            f / ((1.0 - smooth) / factor + smooth)
                        } else {
                            f
                        }
                    })
                    .collect();
                Rope::with_freqs(dims, traditional, freqs, 1.0)
            }
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
            } => {
                let orig = *original_max_position_embeddings as f32;
                let correction_dim = |rotations: f32| {
                    dims as f32 * (orig / (rotations * 2.0 * std::f32::consts::PI)).ln() / (2.0 * base.ln())
                };
                let low = correction_dim(*beta_fast).floor().max(0.0);
                let mut high = correction_dim(*beta_slow).ceil().min(dims as f32 - 1.0);
                if low == high {
                    high += 0.001;
                }
                let freqs = periods(dims, base)
                    .into_iter()
                    .enumerate()
                    .map(|(i, extra)| {
                        let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
                        let mask = 1.0 - ramp;
                        let inter = factor * extra;
                        inter * extra / (inter * mask + extra * (1.0 - mask))
                    })
                    .collect();
                let input_scale = yarn_mscale(*factor, *mscale) / yarn_mscale(*factor, *mscale_all_dim);
                Rope::with_freqs(dims, traditional, freqs, input_scale)
            }
            RopeScaling::LongRope { original_max_position_embeddings, long_factor, long_mscale, .. } => {
                let long_factor = match long_factor.as_slice() {
                    [one] => vec![*one; dims / 2],
                    all if all.len() == dims / 2 => all.to_vec(),
                    all => {
                        return Err(Error::invalid(
                            "Rope",
                            format!("long_factor has {} entries for dims={dims} (need {} or 1)", all.len(), dims / 2),
                        ))
                    }
                };
                let freqs = periods(dims, base).into_iter().zip(long_factor).map(|(f, l)| f * l).collect();
                let orig = *original_max_position_embeddings as f32;
                let stretch = max_position_embeddings as f32 / orig;
                let default_scale = if stretch <= 1.0 { 1.0 } else { (1.0 + stretch.ln() / orig.ln()).sqrt() };
                Rope::with_freqs(dims, false, freqs, long_mscale.unwrap_or(default_scale))
            }
            RopeScaling::FreqFactors { factors } => {
                if factors.len() != dims / 2 {
                    return Err(Error::invalid(
                        "Rope",
                        format!("{} frequency factors for dims={dims} (need {})", factors.len(), dims / 2),
                    ));
                }
                let freqs = periods(dims, base).into_iter().zip(factors).map(|(f, d)| f * d).collect();
                Rope::with_freqs(dims, traditional, freqs, 1.0)
            }
        }
    }

    /// The custom period table, if this variant has one.
    pub fn freqs(&self) -> Option<&Array> {
        self.freqs.as_ref()
    }

    /// The factor applied to the rotated features before rotating (YaRN's and LongRoPE's
    /// mscale; 1 otherwise).
    pub fn input_scale(&self) -> f32 {
        self.input_scale
    }

    /// Whether the base depends on the sequence length (dynamic NTK scaling), which then
    /// needs the offset as a number on the host.
    pub fn is_dynamic(&self) -> bool {
        self.dynamic.is_some()
    }

    /// `x` (`[..., L, D]`) with token `l` rotated to position `offset + l`.
    pub fn forward(&self, x: &Array, offset: impl Into<RopeOffset>) -> Result<Array> {
        let offset = offset.into();
        let x = self.scale_input(x)?;
        if let Some((max_pos, factor)) = self.dynamic {
            let RopeOffset::Int(off) = offset else {
                return Err(Error::invalid("Rope", "dynamic NTK scaling needs a known (integer) offset"));
            };
            let len = x.shape()[x.ndim() - 2] + off as usize;
            let seq_len = len.max(max_pos) as f32;
            let d = self.dims as f32;
            let base = self.base * ((factor * seq_len / max_pos as f32) - (factor - 1.0)).powf(d / (d - 2.0));
            return fx::fast::rope(&x, self.dims, self.traditional, Some(base), 1.0, offset, None);
        }
        match &self.freqs {
            Some(f) => fx::fast::rope(&x, self.dims, self.traditional, None, self.scale, offset, Some(f)),
            None => fx::fast::rope(&x, self.dims, self.traditional, Some(self.base), self.scale, offset, None),
        }
    }

    fn scale_input(&self, x: &Array) -> Result<Array> {
        if self.input_scale == 1.0 {
            return Ok(x.clone());
        }
        let d = *x.shape().last().ok_or_else(|| Error::shape("Rope", "needs at least 2 dimensions"))?;
        if self.dims >= d {
            return fx::multiply(x, self.input_scale);
        }
        let scale: Vec<f32> = (0..d).map(|i| if i < self.dims { self.input_scale } else { 1.0 }).collect();
        fx::multiply(x, &fx::astype(&Array::from_vec(scale), x.dtype())?)
    }
}

/// The attention scale with YaRN's `mscale_all_dim` folded in (mlx-lm's `apply_yarn_mscale`):
/// the other half of the mscale ratio that [`Rope::from_scaling`] puts on the rotation.
pub fn yarn_attention_scale(scale: f32, scaling: &RopeScaling) -> f32 {
    match scaling {
        RopeScaling::Yarn { factor, mscale_all_dim, .. } if *mscale_all_dim != 0.0 && *factor > 1.0 => {
            let s = 0.1 * mscale_all_dim * factor.ln() + 1.0;
            scale * s * s
        }
        _ => scale,
    }
}
