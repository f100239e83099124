//! [`SwitchLinear`]: a stack of bias-free linear maps, one per expert of a mixture of experts,
//! applied to each token through the experts it was routed to — mlx-lm's `SwitchLinear` and
//! `QuantizedSwitchLinear` in one layer that [`crate::quantize()`] can swap in place.

use ferrox::{self as fx, Array, Error, Result};

use super::QuantSpec;
use crate::module::ModuleState;
use crate::Module;

/// Stacked expert matrices: `weight` is `[experts, out, in]`, or, quantized, the packed
/// `[experts, out, in · bits / 32]` words with their `scales` (and affine `biases`) — MLX's
/// names, so checkpoints map one to one. Quantized, the three are buffers (never trained).
#[derive(Module, Clone, Debug)]
pub struct SwitchLinear {
    /// The experts' matrices (packed when quantized).
    pub weight: Array,
    /// Per-group scales of quantized experts.
    pub scales: Option<Array>,
    /// Per-group biases of affine-quantized experts.
    pub biases: Option<Array>,
    #[module(skip)]
    spec: Option<QuantSpec>,
    state: ModuleState,
}

/// The parameters of quantized experts, all buffers.
const QUANT_BUFFERS: &[&str] = &["weight", "scales", "biases"];

impl SwitchLinear {
    /// The layer over a stacked float `[experts, out, in]` weight.
    pub fn from_weight(weight: Array) -> Result<SwitchLinear> {
        if weight.ndim() != 3 {
            return Err(Error::shape(
                "SwitchLinear",
                format!("the weight is [experts, out, in]; got {:?}", weight.shape()),
            ));
        }
        Ok(SwitchLinear { weight, scales: None, biases: None, spec: None, state: ModuleState::default() })
    }

    /// The layer over already-quantized experts (a checkpoint's): packed `[experts, out, in ·
    /// bits / 32]` uint32 words, `scales` (and `biases` in affine mode) `[experts, out, in /
    /// group_size]`.
    pub fn from_quantized(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        spec: QuantSpec,
    ) -> Result<SwitchLinear> {
        let ok = weight.ndim() == 3
            && weight.dtype() == fx::Dtype::U32
            && scales.ndim() == 3
            && scales.shape()[..2] == weight.shape()[..2]
            && scales.shape()[2] * spec.group_size == weight.shape()[2] * 32 / spec.bits.max(1)
            && biases.as_ref().is_none_or(|b| b.shape() == scales.shape());
        if !ok {
            return Err(Error::shape(
                "SwitchLinear",
                format!(
                    "packed {:?} ({}) with scales {:?} do not form quantized experts of {} bits in groups of {}",
                    weight.shape(),
                    weight.dtype(),
                    scales.shape(),
                    spec.bits,
                    spec.group_size
                ),
            ));
        }
        let state = ModuleState::with_buffers(QUANT_BUFFERS);
        Ok(SwitchLinear { weight, scales: Some(scales), biases, spec: Some(spec), state })
    }

    /// How the experts are quantized, or `None` while dense.
    pub fn spec(&self) -> Option<QuantSpec> {
        self.spec
    }

    /// The dense weight `[experts, out, in]` (dequantized if quantized: the scales' dtype in
    /// affine mode, bfloat16 otherwise).
    pub fn dequantized_weight(&self) -> Result<Array> {
        match (&self.spec, &self.scales) {
            (Some(q), Some(scales)) => {
                fx::dequantize(&self.weight, scales, self.biases.as_ref(), q.group_size, q.bits, q.mode, None)
            }
            _ => Ok(self.weight.clone()),
        }
    }

    /// Quantizes dense experts in place with `spec` (each expert's matrix as
    /// `mlx.core.quantize` quantizes it); quantized ones are left as they are.
    pub fn quantize(&mut self, spec: QuantSpec) -> Result<()> {
        if self.spec.is_none() {
            let (w, s, b) = fx::quantize(&self.weight, spec.group_size, spec.bits, spec.mode)?;
            *self = SwitchLinear::from_quantized(w, s, b, spec)?;
        }
        Ok(())
    }

    /// Replaces quantized experts by the dense ones they stand for.
    pub fn dequantize(&mut self) -> Result<()> {
        if self.spec.is_some() {
            *self = SwitchLinear::from_weight(self.dequantized_weight()?)?;
        }
        Ok(())
    }

    /// `x [..., 1, 1, in]` (or `[..., k, 1, in]`) through the experts `indices [..., k]`:
    /// `[..., k, 1, out]` — `gather_qmm` on the packed words when quantized, `gather_mm` else.
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        match (&self.spec, &self.scales) {
            (Some(q), Some(scales)) => fx::gather_qmm(
                x,
                &self.weight,
                scales,
                self.biases.as_ref(),
                None,
                Some(indices),
                true,
                q.group_size,
                q.bits,
                q.mode,
                false,
            ),
            _ => fx::gather_mm(x, &fx::swapaxes(&self.weight, -1, -2)?, None, Some(indices), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dequantize, quantize};

    #[derive(Module)]
    struct Experts {
        up: SwitchLinear,
    }

    #[test]
    fn quantize_swaps_experts_in_place_and_back() {
        let w = fx::random::normal(&[3, 8, 64], fx::Dtype::F32, 0.0f32, 1.0f32, Some(&fx::random::key(1))).unwrap();
        let mut m = Experts { up: SwitchLinear::from_weight(w.clone()).unwrap() };
        let spec = QuantSpec::new(Some(32), Some(4), fx::QuantMode::Affine);
        assert_eq!(quantize(&mut m, spec, None).unwrap(), 1);
        let p = m.parameters();
        assert_eq!(p["up.weight"].shape(), [3, 8, 8]);
        assert_eq!(p["up.scales"].shape(), [3, 8, 2]);
        // Each expert quantized as mx.quantize quantizes its matrix alone.
        let (w1, s1, b1) = fx::quantize(&fx::slice_axis(&w, 0, 1, 2).unwrap(), 32, 4, fx::QuantMode::Affine).unwrap();
        let got = |a: &Array| fx::slice_axis(a, 0, 1, 2).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(
            fx::slice_axis(&p["up.weight"], 0, 1, 2).unwrap().to_vec::<u32>().unwrap(),
            w1.to_vec::<u32>().unwrap()
        );
        assert_eq!(got(&p["up.scales"]), s1.to_vec::<f32>().unwrap());
        assert_eq!(got(p.get("up.biases").unwrap()), b1.unwrap().to_vec::<f32>().unwrap());
        // The quantized forward pass is gather_mm over the dequantized experts.
        let x = fx::random::normal(&[2, 1, 1, 64], fx::Dtype::F32, 0.0f32, 1.0f32, Some(&fx::random::key(2))).unwrap();
        let idx = Array::from_slice(&[2i32, 0], &[2, 1]).unwrap();
        let want = fx::gather_mm(
            &x,
            &fx::swapaxes(&m.up.dequantized_weight().unwrap(), -1, -2).unwrap(),
            None,
            Some(&idx),
            false,
        )
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
        let y = m.up.forward(&x, &idx).unwrap().to_vec::<f32>().unwrap();
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(dequantize(&mut m).unwrap(), 1);
        assert!(m.up.spec().is_none() && m.up.scales.is_none() && m.up.weight.shape() == [3, 8, 64]);
    }
}
