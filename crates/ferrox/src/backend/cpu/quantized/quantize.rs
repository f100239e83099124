//! Quantization and dequantization, group by group, with MLX's arithmetic (its CPU backend's
//! order of operations and roundings), so that packed outputs match bit for bit.

use rayon::prelude::*;

use crate::array::{Array, Data};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::primitives::{QuantMode, QuantParams, QuantPart};

use super::formats::{e8m0_to_f32, f32_to_fp4, f32_to_fp8, fp8_table, pack_codes, unpack_codes, FP4_VALUES};
use super::{dispatch_f32_f16_bf16, row_major};
use crate::backend::cpu::iter::alloc_out;

/// Groups per parallel task.
const GROUPS_PER_TASK: usize = 256;

/// Rounds `v` to the precision of `T` (what an op computing in `T` stores).
#[inline(always)]
fn in_t<T: Element<Acc = f32>>(v: f32) -> f32 {
    T::from_acc(v).to_acc()
}

/// One group quantized: the codes, and the scale and bias (affine, as f32 before storing) or
/// the scale code (floating-point modes).
struct Group {
    scale: f32,
    bias: f32,
    scale_code: u8,
}

/// Affine quantization of one group: the scale spans min..max over `2^bits − 1` steps. From 2
/// bits on it is nudged so the edge of larger magnitude is exactly representable (it becomes
/// the bias, and the scale takes its sign); 1 bit keeps min as the bias (MLX 0.32).
fn affine_group<T: Element<Acc = f32>>(w: &[T], bits: usize, codes: Option<&mut [u8]>) -> Group {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for v in w {
        let v = v.to_acc();
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let (scale, bias) = if bits == 1 { ((hi - lo).max(1e-7), lo) } else { nudged(lo, hi, n_bins) };
    if let Some(codes) = codes {
        for (c, v) in codes.iter_mut().zip(w) {
            *c = ((v.to_acc() - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u8;
        }
    }
    Group { scale, bias, scale_code: 0 }
}

/// The scale and bias of a group spanning `lo..hi` in `n_bins` steps, for 2 bits or more.
fn nudged(lo: f32, hi: f32, n_bins: f32) -> (f32, f32) {
    let from_min = lo.abs() > hi.abs();
    let mut scale = ((hi - lo) / n_bins).max(1e-7);
    if !from_min {
        scale = -scale;
    }
    let edge = if from_min { lo } else { hi };
    let q0 = (edge / scale).round_ties_even();
    let mut bias = 0.0;
    if q0 != 0.0 {
        scale = edge / q0;
        bias = edge;
    }
    (scale, bias)
}

/// Floating-point quantization of one group, as MLX 0.32 does it: the scale is
/// max|w| / (6 or 448), rounded up to a power of two (E8M0, mx modes) or to the nearest E4M3
/// value (nvfp4); elements are divided by it and rounded to the nearest FP4 (E2M1) or FP8
/// (E4M3) value, ties to even. All in float32 (bit-exact with MLX for float32 weights).
fn fp_group<T: Element<Acc = f32>>(w: &[T], mode: QuantMode, codes: Option<&mut [u8]>) -> Group {
    let maxval = if mode == QuantMode::Mxfp8 { 448.0 } else { 6.0 };
    let amax = w.iter().fold(0f32, |m, v| m.max(v.to_acc().abs()));
    let scale = amax / maxval;
    let (scale_code, divisor) = if mode == QuantMode::Nvfp4 {
        let code = f32_to_fp8(scale);
        (code, fp8_table()[code as usize])
    } else {
        let e = if scale == 0.0 { 0 } else { (scale.log2().ceil() as i32).clamp(-127, 127) };
        ((e + 127) as u8, 2f32.powi(e))
    };
    if let Some(codes) = codes {
        for (c, v) in codes.iter_mut().zip(w) {
            // A scale that rounded to zero zeroes the group.
            let q = if divisor == 0.0 { 0.0 } else { v.to_acc() / divisor };
            *c = if mode == QuantMode::Mxfp8 { f32_to_fp8(q) } else { f32_to_fp4(q) };
        }
    }
    Group { scale: 0.0, bias: 0.0, scale_code }
}

/// One output of quantizing `w` along its last axis.
pub fn quantize(w: &Array, part: QuantPart, p: QuantParams, shape: &[usize]) -> Result<Data> {
    let d = row_major(w)?;
    dispatch_f32_f16_bf16!(w.dtype(), T => {
        // SAFETY: row-major data of w.size() elements.
        let ws = unsafe { std::slice::from_raw_parts(d.ptr::<T>(), w.size()) };
        quantize_typed::<T>(ws, part, p, shape)
    }, Err(Error::dtype("quantize", "only float32, float16 and bfloat16 can be quantized", w.dtype())))
}

fn quantize_typed<T: Element<Acc = f32>>(w: &[T], part: QuantPart, p: QuantParams, shape: &[usize]) -> Result<Data> {
    let gs = p.group_size;
    let group = |g: &[T], codes: Option<&mut [u8]>| match p.mode {
        QuantMode::Affine => affine_group(g, p.bits, codes),
        mode => fp_group(g, mode, codes),
    };
    match part {
        QuantPart::Packed => {
            let wpg = gs * p.bits / 32;
            alloc_out::<u32>(shape, |out| {
                out.par_chunks_mut(wpg * GROUPS_PER_TASK).zip(w.par_chunks(gs * GROUPS_PER_TASK)).for_each(
                    |(o, wc)| {
                        let mut codes = vec![0u8; gs];
                        for (og, g) in o.chunks_mut(wpg).zip(wc.chunks(gs)) {
                            group(g, Some(&mut codes));
                            pack_codes(&codes, p.bits, og);
                        }
                    },
                );
                Ok(())
            })
        }
        QuantPart::Scales if p.mode != QuantMode::Affine => alloc_out::<u8>(shape, |out| {
            out.par_chunks_mut(GROUPS_PER_TASK).zip(w.par_chunks(gs * GROUPS_PER_TASK)).for_each(|(o, wc)| {
                for (s, g) in o.iter_mut().zip(wc.chunks(gs)) {
                    *s = group(g, None).scale_code;
                }
            });
            Ok(())
        }),
        QuantPart::Scales | QuantPart::Biases => alloc_out::<T>(shape, |out| {
            out.par_chunks_mut(GROUPS_PER_TASK).zip(w.par_chunks(gs * GROUPS_PER_TASK)).for_each(|(o, wc)| {
                for (s, g) in o.iter_mut().zip(wc.chunks(gs)) {
                    let q = group(g, None);
                    *s = T::from_acc(if part == QuantPart::Scales { q.scale } else { q.bias });
                }
            });
            Ok(())
        }),
    }
}

/// The float matrix of `inputs` (packed, scales, biases if affine), computed in `T` (the
/// output dtype) as MLX does: affine `q · scale + bias`, floating-point `value · scale`.
pub fn dequantize(inputs: &[Array], p: QuantParams, shape: &[usize], dtype: crate::Dtype) -> Result<Data> {
    let wd = row_major(&inputs[0])?;
    let sd = row_major(&inputs[1])?;
    let n = shape.iter().product::<usize>();
    let groups = n / p.group_size;
    // SAFETY: row-major data of each input's size.
    let words = unsafe { std::slice::from_raw_parts(wd.ptr::<u32>(), inputs[0].size()) };
    dispatch_f32_f16_bf16!(dtype, T => {
        if p.mode == QuantMode::Affine {
            let bd = row_major(&inputs[2])?;
            // SAFETY: as above; scales and biases have the output dtype.
            let (s, b) = unsafe {
                (std::slice::from_raw_parts(sd.ptr::<T>(), groups), std::slice::from_raw_parts(bd.ptr::<T>(), groups))
            };
            dequantize_typed::<T, T>(words, s, Some(b), p, shape, |v| v.to_acc())
        } else {
            // SAFETY: as above; uint8 scale codes.
            let s = unsafe { std::slice::from_raw_parts(sd.ptr::<u8>(), groups) };
            let decode: fn(u8) -> f32 = if p.mode == QuantMode::Nvfp4 { |c| fp8_table()[c as usize] } else { e8m0_to_f32 };
            dequantize_typed::<T, u8>(words, s, None, p, shape, decode)
        }
    }, Err(Error::dtype("dequantize", "the output must be floating point", dtype)))
}

fn dequantize_typed<T: Element<Acc = f32>, S: Copy + Sync>(
    words: &[u32],
    scales: &[S],
    biases: Option<&[S]>,
    p: QuantParams,
    shape: &[usize],
    decode: impl Fn(S) -> f32 + Sync,
) -> Result<Data> {
    let gs = p.group_size;
    let wpg = gs * p.bits / 32;
    let fp8 = fp8_table();
    alloc_out::<T>(shape, |out| {
        out.par_chunks_mut(gs * GROUPS_PER_TASK).enumerate().for_each(|(task, o)| {
            let mut codes = vec![0u8; gs];
            for (i, og) in o.chunks_mut(gs).enumerate() {
                let g = task * GROUPS_PER_TASK + i;
                unpack_codes(&words[g * wpg..(g + 1) * wpg], p.bits, &mut codes);
                let scale = in_t::<T>(decode(scales[g]));
                match (p.mode, biases) {
                    (QuantMode::Affine, Some(b)) => {
                        let bias = decode(b[g]);
                        for (v, &c) in og.iter_mut().zip(&codes) {
                            *v = T::from_acc(in_t::<T>(c as f32 * scale) + bias);
                        }
                    }
                    (QuantMode::Mxfp8, _) => {
                        for (v, &c) in og.iter_mut().zip(&codes) {
                            *v = T::from_acc(in_t::<T>(fp8[c as usize]) * scale);
                        }
                    }
                    _ => {
                        for (v, &c) in og.iter_mut().zip(&codes) {
                            *v = T::from_acc(FP4_VALUES[c as usize] * scale);
                        }
                    }
                }
            }
        });
        Ok(())
    })
}
