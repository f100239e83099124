//! [`quantize()`] and [`dequantize()`]: swap a model's dense layers for quantized ones (and
//! back) in place, MLX's `nn.quantize`.
//!
//! The layers that can be swapped are the fields declared as [`AnyLinear`] or
//! [`AnyEmbedding`]: the walk ([`Module::apply_to_modules_mut`]) meets such a field as the enum
//! and assigns the other variant, so the layer keeps its path and its checkpoint names become
//! `weight`, `scales`, `biases` (and `bias`), as in MLX.
//!
//! ```
//! use ferrox_nn::layers::{AnyLinear, Linear, QuantSpec};
//! use ferrox_nn::{quantize, Module, Quantize};
//!
//! #[derive(Module)]
//! struct Mlp {
//!     up: AnyLinear,
//!     down: AnyLinear,
//! }
//! let mut m = Mlp {
//!     up: Linear::new(64, 128, false).unwrap().into(),
//!     down: Linear::new(128, 64, true).unwrap().into(),
//! };
//! let spec = QuantSpec::new(Some(64), Some(4), ferrox::QuantMode::Affine);
//! // Quantize every layer but `down`.
//! let n = quantize(&mut m, spec, Some(&mut |path: &str, _: &dyn ferrox_nn::Quantizable| {
//!     if path == "down" { Quantize::No } else { Quantize::Yes }
//! }))
//! .unwrap();
//! assert_eq!(n, 1);
//! assert!(m.parameters().contains_key("up.scales") && m.parameters().contains_key("down.weight"));
//! ```

use ferrox::{Array, Error, Result};

use crate::layers::{AnyEmbedding, AnyLinear, QuantSpec, QuantizedEmbedding, QuantizedLinear, SwitchLinear};
use crate::Module;

/// What a [`quantize()`] predicate decides for one layer (MLX's `bool` or parameter dict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantize {
    /// Leave the layer dense.
    No,
    /// Quantize with the spec given to [`quantize()`].
    Yes,
    /// Quantize with this spec instead.
    With(QuantSpec),
}

impl From<bool> for Quantize {
    fn from(yes: bool) -> Quantize {
        if yes {
            Quantize::Yes
        } else {
            Quantize::No
        }
    }
}

/// A layer that [`quantize()`] and [`dequantize()`] can swap between its dense and quantized
/// forms.
pub trait Quantizable: Module {
    /// The float weight `[rows, cols]` while the layer is dense; `None` once quantized.
    fn dense_weight(&self) -> Option<&Array>;
    /// How the layer is quantized, or `None` while dense.
    fn quant_spec(&self) -> Option<QuantSpec>;
    /// Replaces a dense layer by its quantized form (a quantized one is left as it is).
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()>;
    /// Replaces a quantized layer by the dense layer it approximates.
    fn dequantize(&mut self) -> Result<()>;
}

impl Quantizable for AnyLinear {
    fn dense_weight(&self) -> Option<&Array> {
        match self {
            AnyLinear::Dense(l) => Some(&l.weight),
            AnyLinear::Quantized(_) => None,
        }
    }
    fn quant_spec(&self) -> Option<QuantSpec> {
        match self {
            AnyLinear::Dense(_) => None,
            AnyLinear::Quantized(q) => Some(q.spec()),
        }
    }
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()> {
        if let AnyLinear::Dense(l) = self {
            *self = AnyLinear::Quantized(QuantizedLinear::from_linear(l, spec)?);
        }
        Ok(())
    }
    fn dequantize(&mut self) -> Result<()> {
        if let AnyLinear::Quantized(q) = self {
            *self = AnyLinear::Dense(q.to_linear()?);
        }
        Ok(())
    }
}

impl Quantizable for AnyEmbedding {
    fn dense_weight(&self) -> Option<&Array> {
        match self {
            AnyEmbedding::Dense(e) => Some(&e.weight),
            AnyEmbedding::Quantized(_) => None,
        }
    }
    fn quant_spec(&self) -> Option<QuantSpec> {
        match self {
            AnyEmbedding::Dense(_) => None,
            AnyEmbedding::Quantized(q) => Some(q.spec()),
        }
    }
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()> {
        if let AnyEmbedding::Dense(e) = self {
            *self = AnyEmbedding::Quantized(QuantizedEmbedding::from_embedding(e, spec)?);
        }
        Ok(())
    }
    fn dequantize(&mut self) -> Result<()> {
        if let AnyEmbedding::Quantized(q) = self {
            *self = AnyEmbedding::Dense(q.to_embedding()?);
        }
        Ok(())
    }
}

/// Mixture-of-experts stacks: the dense weight is `[experts, rows, cols]`, each expert's
/// matrix quantized on its own.
impl Quantizable for SwitchLinear {
    fn dense_weight(&self) -> Option<&Array> {
        self.spec().is_none().then_some(&self.weight)
    }
    fn quant_spec(&self) -> Option<QuantSpec> {
        self.spec()
    }
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()> {
        SwitchLinear::quantize(self, spec)
    }
    fn dequantize(&mut self) -> Result<()> {
        SwitchLinear::dequantize(self)
    }
}

/// The module as a swappable layer, if it is one.
pub fn as_quantizable(m: &mut dyn Module) -> Option<&mut dyn Quantizable> {
    if m.as_any().is::<AnyLinear>() {
        return m.as_any_mut().downcast_mut::<AnyLinear>().map(|l| l as &mut dyn Quantizable);
    }
    if m.as_any().is::<SwitchLinear>() {
        return m.as_any_mut().downcast_mut::<SwitchLinear>().map(|l| l as &mut dyn Quantizable);
    }
    m.as_any_mut().downcast_mut::<AnyEmbedding>().map(|e| e as &mut dyn Quantizable)
}

/// The per-layer predicate of [`quantize()`]: given a layer's path and the (dense) layer,
/// whether and how to quantize it.
pub type QuantPredicate<'a> = &'a mut dyn FnMut(&str, &dyn Quantizable) -> Quantize;

/// Quantizes, in place, every dense [`AnyLinear`] / [`AnyEmbedding`] of `model` that
/// `predicate` accepts (all of them without one) with `spec`, or with the spec the predicate
/// returns; layers already quantized are left alone. Returns how many layers were quantized.
/// A chosen layer whose rows are not a whole number of groups is an error naming its path
/// (leave it out with the predicate: [`QuantSpec::fits`]); layers before it stay quantized.
pub fn quantize(model: &mut dyn Module, spec: QuantSpec, mut predicate: Option<QuantPredicate>) -> Result<usize> {
    let mut count = 0;
    model.apply_to_modules_mut(&mut |path, m| {
        let Some(layer) = as_quantizable(m) else { return Ok(()) };
        let Some(w) = layer.dense_weight() else { return Ok(()) };
        let cols = *w.shape().last().unwrap_or(&0);
        let chosen = match predicate.as_mut().map_or(Quantize::Yes, |p| p(path, &*layer)) {
            Quantize::No => return Ok(()),
            Quantize::Yes => spec,
            Quantize::With(s) => s,
        };
        if !chosen.fits(cols) {
            return Err(Error::invalid(
                "quantize",
                format!("{path}: rows of {cols} elements are not a whole number of groups of {}", chosen.group_size),
            ));
        }
        layer.quantize_with(chosen).map_err(|e| Error::invalid("quantize", format!("{path}: {e}")))?;
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// Replaces every quantized [`AnyLinear`] / [`AnyEmbedding`] of `model` by the dense layer it
/// approximates (MLX's `dequantize_model`); returns how many were replaced.
pub fn dequantize(model: &mut dyn Module) -> Result<usize> {
    let mut count = 0;
    model.apply_to_modules_mut(&mut |_, m| {
        if let Some(layer) = as_quantizable(m).filter(|l| l.quant_spec().is_some()) {
            layer.dequantize()?;
            count += 1;
        }
        Ok(())
    })?;
    Ok(count)
}
