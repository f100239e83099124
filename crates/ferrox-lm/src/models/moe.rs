//! Sparse mixtures of experts (Mixtral, Qwen3-MoE): a router picks `top_k` experts per
//! token and the token's output is their SwiGLU outputs weighted by the router's scores.
//!
//! Experts are stored stacked, `[experts, out, in]` per projection (mlx-lm's `switch_mlp`
//! layout), and applied with [`fx::gather_mm`]: each token's rows go to its experts' matrices
//! without a loop over experts or tokens and without copying any expert. Checkpoints in
//! three layouts load into this one form ([`load_switch_glu`]): mlx-lm's stacked
//! `switch_mlp.{gate,up,down}_proj`, Hugging Face's per-expert `experts.{e}.*` (Mixtral's
//! `w1`/`w3`/`w2` or Qwen's `gate_proj`/`up_proj`/`down_proj`), and transformers 5's fused
//! `experts.gate_up_proj` / `experts.down_proj`. Quantized experts (mlx-community's
//! quantized mixtures: `weight`, `scales`, `biases` stacked per expert) run through
//! [`fx::gather_qmm`], which reads the packed words directly; [`SwitchLinear`] (ferrox-nn) is
//! quantizable in place, so `quantize(model)` and `ferrox convert -q` quantize experts too.

use ferrox::{self as fx, Array, Dtype, QuantMode};
use ferrox_nn::layers::activations::swiglu;
use ferrox_nn::layers::{AnyLinear, SwitchLinear};
use ferrox_nn::Module;

use super::layers::{linear, stored_spec};
use crate::error::{Error, Result};
use crate::weights::WeightMap;

/// The stacked experts `name` (`[experts, out, in]`), dense or quantized as stored.
fn switch_linear(w: &mut WeightMap, name: &str, [experts, out, inp]: [usize; 3]) -> Result<SwitchLinear> {
    let Some(spec) = stored_spec(w, name, inp)? else {
        return Ok(SwitchLinear::from_weight(w.take(&format!("{name}.weight"), &[experts, out, inp])?)?);
    };
    let (packed, scale_shape) = spec.shapes(out, inp);
    let weight = w.take_typed(&format!("{name}.weight"), &[experts, packed[0], packed[1]], Dtype::U32)?;
    let scale_shape = [experts, scale_shape[0], scale_shape[1]];
    let (scales, biases) = if spec.mode == QuantMode::Affine {
        (w.take(&format!("{name}.scales"), &scale_shape)?, Some(w.take(&format!("{name}.biases"), &scale_shape)?))
    } else {
        (w.take_typed(&format!("{name}.scales"), &scale_shape, Dtype::U8)?, None)
    };
    Ok(SwitchLinear::from_quantized(weight, scales, biases, spec)?)
}

/// The experts' SwiGLU: `down(silu(gate(x)) * up(x))` through each token's experts.
#[derive(Module, Clone, Debug)]
pub struct SwitchGlu {
    gate_proj: SwitchLinear,
    up_proj: SwitchLinear,
    down_proj: SwitchLinear,
}

impl SwitchGlu {
    /// `x [..., hidden]` through the experts `indices [..., k]`: `[..., k, hidden]`.
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        let x = fx::expand_dims(x, &[-2, -3])?;
        let g = self.gate_proj.forward(&x, indices)?;
        let act = swiglu(&g, &self.up_proj.forward(&x, indices)?)?;
        let y = self.down_proj.forward(&act, indices)?;
        Ok(fx::squeeze(&y, Some(&[-2]))?)
    }
}

/// A router and its experts.
#[derive(Module, Clone, Debug)]
pub struct SparseMoe {
    gate: AnyLinear,
    switch_mlp: SwitchGlu,
    #[module(skip)]
    top_k: usize,
    #[module(skip)]
    normalize: bool,
}

impl SparseMoe {
    /// `x [..., hidden]`: the sum over the `top_k` experts with the highest router
    /// probability (softmax in float32) of their outputs times that probability,
    /// renormalized over the chosen experts when `normalize`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let logits = self.gate.forward(x)?;
        let probs = fx::softmax(&fx::astype(&logits, Dtype::F32)?, Some(&[-1]), true)?;
        let e = probs.shape()[probs.ndim() - 1];
        let k = self.top_k;
        let inds = fx::argpartition(&probs, e - k, Some(-1))?;
        let inds = fx::stop_gradient(&fx::slice_axis(&inds, -1, (e - k) as isize, e as isize)?)?;
        let mut scores = fx::take_along_axis(&probs, &inds, Some(-1))?;
        if self.normalize {
            scores = fx::divide(&scores, &fx::sum(&scores, Some(&[-1]), true)?)?;
        }
        let y = self.switch_mlp.forward(x, &inds)?;
        let weighted = fx::multiply(&y, &fx::astype(&fx::expand_dims(&scores, &[-1])?, y.dtype())?)?;
        Ok(fx::sum(&weighted, Some(&[-2]), false)?)
    }
}

/// The names a checkpoint gives the experts' three projections.
#[derive(Clone, Copy, Debug)]
pub struct ExpertNames {
    /// Hugging Face names of the gate, up and down projections of expert `e`
    /// (`experts.{e}.{name}.weight`).
    pub hf: [&'static str; 3],
}

/// Mixtral's per-expert names: w1 (gate), w3 (up), w2 (down).
pub const MIXTRAL_EXPERTS: ExpertNames = ExpertNames { hf: ["w1", "w3", "w2"] };
/// Qwen's per-expert names.
pub const QWEN_EXPERTS: ExpertNames = ExpertNames { hf: ["gate_proj", "up_proj", "down_proj"] };

/// Loads the experts under `prefix` (e.g. `model.layers.0.block_sparse_moe`) in any of the
/// three layouts the module docs list, into the stacked form.
pub fn load_switch_glu(
    w: &mut WeightMap,
    prefix: &str,
    names: ExpertNames,
    experts: usize,
    hidden: usize,
    inter: usize,
) -> Result<SwitchGlu> {
    let shapes = [[experts, inter, hidden], [experts, inter, hidden], [experts, hidden, inter]];
    let stacked = ["gate_proj", "up_proj", "down_proj"];
    let layers: Vec<SwitchLinear> = if w.contains(&format!("{prefix}.switch_mlp.gate_proj.weight")) {
        stacked
            .iter()
            .zip(shapes)
            .map(|(n, s)| switch_linear(w, &format!("{prefix}.switch_mlp.{n}"), s))
            .collect::<Result<_>>()?
    } else {
        hf_experts(w, prefix, names, shapes)?
            .into_iter()
            .map(|a| Ok(SwitchLinear::from_weight(a)?))
            .collect::<Result<_>>()?
    };
    let [gate_proj, up_proj, down_proj]: [SwitchLinear; 3] =
        layers.try_into().map_err(|_| Error::Invalid("three expert projections expected".into()))?;
    Ok(SwitchGlu { gate_proj, up_proj, down_proj })
}

/// The experts' three matrices from Hugging Face's layouts (per expert, or transformers 5's
/// fused `gate_up_proj`), stacked `[experts, out, in]`.
fn hf_experts(w: &mut WeightMap, prefix: &str, names: ExpertNames, shapes: [[usize; 3]; 3]) -> Result<Vec<Array>> {
    let [experts, inter, hidden] = shapes[0];
    if w.contains(&format!("{prefix}.experts.gate_up_proj")) {
        let gate_up = w.take(&format!("{prefix}.experts.gate_up_proj"), &[experts, 2 * inter, hidden])?;
        let halves = fx::split(&gate_up, fx::SplitAt::Sections(2), 1)?;
        let down = w.take(&format!("{prefix}.experts.down_proj"), &shapes[2])?;
        Ok(vec![halves[0].clone(), halves[1].clone(), down])
    } else {
        names
            .hf
            .iter()
            .zip(shapes)
            .map(|(n, s)| {
                let per: Vec<Array> = (0..experts)
                    .map(|e| w.take(&format!("{prefix}.experts.{e}.{n}.weight"), &s[1..]))
                    .collect::<Result<_>>()?;
                Ok(fx::stack(&per, 0)?)
            })
            .collect()
    }
}

/// Loads a router (`{prefix}.gate.weight`, `[experts, hidden]`) and its experts.
pub fn load_sparse_moe(
    w: &mut WeightMap,
    prefix: &str,
    names: ExpertNames,
    (experts, top_k): (usize, usize),
    (hidden, inter): (usize, usize),
    normalize: bool,
) -> Result<SparseMoe> {
    if top_k == 0 || top_k > experts {
        return Err(Error::Invalid(format!("{top_k} experts per token out of {experts}")));
    }
    let gate = linear(w, &format!("{prefix}.gate"), experts, hidden, false)?;
    let switch_mlp = load_switch_glu(w, prefix, names, experts, hidden, inter)?;
    Ok(SparseMoe { gate, switch_mlp, top_k, normalize })
}
