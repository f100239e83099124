//! The layers every architecture takes from its checkpoint by name — linear layers and
//! embedding tables — built dense or quantized as the checkpoint stores them, so no model file
//! knows about quantization.
//!
//! A layer is quantized when the checkpoint's quantization section has an entry for its path
//! (`false`: dense), or else when the checkpoint holds `{path}.scales`; its group size and bits
//! then follow from the tensors' shapes and its mode from the scales' dtype, as mlx-lm reads
//! them. A quantized layer takes `{path}.weight` (packed uint32), `{path}.scales`, and in
//! affine mode `{path}.biases`.

use ferrox::{Dtype, QuantMode};
use ferrox_nn::layers::{
    AnyEmbedding, AnyLinear, Embedding, FusedLinear, Linear, QuantSpec, QuantizedEmbedding, QuantizedLinear,
};

use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// The linear layer `name` of `inp` → `out` features (with a bias `[out]` if `bias`).
pub(crate) fn linear(w: &mut WeightMap, name: &str, out: usize, inp: usize, bias: bool) -> Result<AnyLinear> {
    let spec = stored_spec(w, name, inp)?;
    let bias = if bias { Some(w.take(&format!("{name}.bias"), &[out])?) } else { None };
    Ok(match spec {
        None => Linear::from_weights(w.take(&format!("{name}.weight"), &[out, inp])?, bias)?.into(),
        Some(spec) => {
            let (weight, scales, biases) = take_quantized(w, name, out, inp, spec)?;
            QuantizedLinear::from_parts(weight, scales, biases, bias, spec)?.into()
        }
    })
}

/// Joins `parts` (projections of one input) into `slot` for [`super::LanguageModel::fuse_projections`],
/// unless `slot` already holds their current join; whether they are joined. Parts that cannot
/// be joined (dense and quantized, other bits, a bias on some) leave `slot` empty and the parts
/// as they were.
pub(crate) fn fuse_into<const N: usize>(
    slot: &mut Option<FusedLinear>,
    mut parts: [&mut AnyLinear; N],
) -> Result<bool> {
    if slot.as_ref().is_some_and(|f| f.is_current(&parts.each_ref().map(|p| &**p))) {
        return Ok(true);
    }
    *slot = FusedLinear::fuse(&mut parts)?;
    Ok(slot.is_some())
}

/// The embedding table `name` of `num` rows of `dims`.
pub(crate) fn embedding(w: &mut WeightMap, name: &str, num: usize, dims: usize) -> Result<AnyEmbedding> {
    Ok(match stored_spec(w, name, dims)? {
        None => Embedding::from_weight(w.take(&format!("{name}.weight"), &[num, dims])?)?.into(),
        Some(spec) => {
            let (weight, scales, biases) = take_quantized(w, name, num, dims, spec)?;
            QuantizedEmbedding::from_parts(weight, scales, biases, spec)?.into()
        }
    })
}

/// Takes the packed weight, scales and (affine) biases of the `[rows, cols]` matrix `name`.
fn take_quantized(
    w: &mut WeightMap,
    name: &str,
    rows: usize,
    cols: usize,
    spec: QuantSpec,
) -> Result<(ferrox::Array, ferrox::Array, Option<ferrox::Array>)> {
    let (packed, scale_shape) = spec.shapes(rows, cols);
    let weight = w.take_typed(&format!("{name}.weight"), &packed, Dtype::U32)?;
    if spec.mode == QuantMode::Affine {
        let scales = w.take(&format!("{name}.scales"), &scale_shape)?;
        let biases = w.take(&format!("{name}.biases"), &scale_shape)?;
        Ok((weight, scales, Some(biases)))
    } else {
        Ok((weight, w.take_typed(&format!("{name}.scales"), &scale_shape, Dtype::U8)?, None))
    }
}

/// How the checkpoint stores the layer `name` whose rows have `cols` elements: `None` for a
/// float matrix.
pub(crate) fn stored_spec(w: &WeightMap, name: &str, cols: usize) -> Result<Option<QuantSpec>> {
    if let Some(entry) = w.quantization().and_then(|q| q.layers.get(name)) {
        return Ok(*entry);
    }
    let Some(scales) = w.peek(&format!("{name}.scales")) else { return Ok(None) };
    let packed_cols = w.peek(&format!("{name}.weight")).and_then(|p| p.shape().last().copied());
    let groups = scales.shape().last().copied().unwrap_or(0);
    let (Some(packed_cols), true) = (packed_cols, groups > 0 && cols.is_multiple_of(groups.max(1))) else {
        // Let the tensors' shapes be reported against the global settings.
        return Ok(w.quantization().map(|q| q.default));
    };
    let (group_size, bits) = (cols / groups, packed_cols * 32 / cols.max(1));
    let mode = if scales.dtype() != Dtype::U8 {
        QuantMode::Affine
    } else {
        match (bits, group_size) {
            (4, 16) => QuantMode::Nvfp4,
            (4, 32) => QuantMode::Mxfp4,
            (8, 32) => QuantMode::Mxfp8,
            _ => {
                return Err(Error::Invalid(format!(
                    "{name}: cannot tell how it is quantized ({bits} bits in groups of {group_size} with uint8 scales)"
                )))
            }
        }
    };
    Ok(Some(QuantSpec { group_size, bits, mode }))
}
