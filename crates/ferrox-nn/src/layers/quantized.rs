//! Quantized layers, MLX's `nn.QuantizedLinear` and `nn.QuantizedEmbedding`, and the
//! replaceable fields [`AnyLinear`] / [`AnyEmbedding`] that hold either a dense layer or its
//! quantized form under the same checkpoint name.
//!
//! A quantized layer keeps MLX's parameter names — `weight` (the packed uint32 matrix),
//! `scales`, `biases` (affine mode only) and `bias` (a linear layer's additive bias) — so an
//! mlx-community checkpoint maps onto it tensor for tensor. Its parameters are buffers: listed
//! and saved, never trained (as MLX freezes them for good).

use ferrox::{self as fx, Array, Dtype, Error, QuantMode, Result};

use crate::layers::{Embedding, Linear};
use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// How a matrix is quantized: MLX's `group_size`, `bits` and `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantSpec {
    /// Elements sharing one scale (and bias).
    pub group_size: usize,
    /// Bits per element.
    pub bits: usize,
    /// The format: affine, mxfp4, nvfp4 or mxfp8.
    pub mode: QuantMode,
}

impl QuantSpec {
    /// The spec of `mode` with its defaults filled in where `group_size` or `bits` is `None`
    /// (affine 64/4, mxfp4 32/4, nvfp4 16/4, mxfp8 32/8, as MLX).
    pub fn new(group_size: Option<usize>, bits: Option<usize>, mode: QuantMode) -> QuantSpec {
        let (g, b) = mode.defaults();
        QuantSpec { group_size: group_size.unwrap_or(g), bits: bits.unwrap_or(b), mode }
    }

    /// The shapes `(packed, scales)` of a matrix `[rows, cols]` quantized with this spec.
    pub fn shapes(&self, rows: usize, cols: usize) -> ([usize; 2], [usize; 2]) {
        ([rows, cols * self.bits / 32], [rows, cols / self.group_size.max(1)])
    }

    /// Whether a matrix whose rows have `cols` elements can be quantized with this spec (MLX
    /// needs whole groups).
    pub fn fits(&self, cols: usize) -> bool {
        self.group_size > 0 && cols.is_multiple_of(self.group_size)
    }

    fn quantize(&self, w: &Array) -> Result<(Array, Array, Option<Array>)> {
        fx::quantize(w, self.group_size, self.bits, self.mode)
    }
}

/// The parameter names of a quantized layer, all buffers.
const QUANT_BUFFERS: &[&str] = &["weight", "scales", "biases", "bias"];

/// Checks that `packed`, `scales` and `biases` form a quantized `[rows, cols]` matrix under
/// `spec`; returns `cols` (the unpacked width).
fn check_parts(
    layer: &'static str,
    packed: &Array,
    scales: &Array,
    biases: Option<&Array>,
    spec: QuantSpec,
) -> Result<usize> {
    if packed.ndim() != 2 || packed.dtype() != Dtype::U32 {
        return Err(Error::shape(
            layer,
            format!("packed weight must be a 2-D uint32 matrix; got {:?} {:?}", packed.dtype(), packed.shape()),
        ));
    }
    if spec.bits == 0 || !(packed.shape()[1] * 32).is_multiple_of(spec.bits) {
        return Err(Error::invalid(layer, format!("{} bits do not divide the packed rows", spec.bits)));
    }
    let (rows, cols) = (packed.shape()[0], packed.shape()[1] * 32 / spec.bits);
    let (_, scale_shape) = spec.shapes(rows, cols);
    if !spec.fits(cols) || scales.shape() != scale_shape {
        return Err(Error::shape(
            layer,
            format!(
                "scales of shape {:?} do not fit a [{rows}, {cols}] matrix in groups of {} \
                 (packed weight {:?}, {} bits)",
                scales.shape(),
                spec.group_size,
                packed.shape(),
                spec.bits
            ),
        ));
    }
    match (spec.mode, biases) {
        (QuantMode::Affine, None) => return Err(Error::invalid(layer, "affine mode needs biases")),
        (QuantMode::Affine, Some(b)) if b.shape() != scales.shape() => {
            return Err(Error::shape(
                layer,
                format!("biases of shape {:?} must match scales {:?}", b.shape(), scales.shape()),
            ))
        }
        (m, Some(_)) if m != QuantMode::Affine => {
            return Err(Error::invalid(layer, format!("{} mode has no biases", m.name())))
        }
        _ => {}
    }
    Ok(cols)
}

/// `y = x Wᵀ + b` with `W` stored quantized, MLX's `nn.QuantizedLinear`.
#[derive(Module, Clone, Debug)]
pub struct QuantizedLinear {
    /// The packed matrix, uint32 `[output_dims, input_dims · bits / 32]`.
    pub weight: Array,
    /// Per-group scales `[output_dims, input_dims / group_size]`.
    pub scales: Array,
    /// Per-group biases (affine mode only), like `scales`.
    pub biases: Option<Array>,
    /// The additive bias `[output_dims]`, if the layer has one.
    pub bias: Option<Array>,
    #[module(skip)]
    spec: QuantSpec,
    state: ModuleState,
}

impl QuantizedLinear {
    /// A layer with MLX's default initialization (uniform in `±1/√input_dims`), quantized.
    pub fn new(input_dims: usize, output_dims: usize, bias: bool, spec: QuantSpec) -> Result<QuantizedLinear> {
        QuantizedLinear::from_linear(&Linear::new(input_dims, output_dims, bias)?, spec)
    }

    /// Quantizes a dense layer's weight (its bias stays as it is).
    pub fn from_linear(linear: &Linear, spec: QuantSpec) -> Result<QuantizedLinear> {
        let (weight, scales, biases) = spec.quantize(&linear.weight)?;
        QuantizedLinear::from_parts(weight, scales, biases, linear.bias.clone(), spec)
    }

    /// A layer over already-quantized tensors (a checkpoint's), checked against each other.
    pub fn from_parts(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        bias: Option<Array>,
        spec: QuantSpec,
    ) -> Result<QuantizedLinear> {
        check_parts("QuantizedLinear", &weight, &scales, biases.as_ref(), spec)?;
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::shape(
                    "QuantizedLinear",
                    format!("bias of shape {:?} must be [{}]", b.shape(), weight.shape()[0]),
                ));
            }
        }
        let state = ModuleState::with_buffers(QUANT_BUFFERS);
        Ok(QuantizedLinear { weight, scales, biases, bias, spec, state })
    }

    /// How the weight is quantized.
    pub fn spec(&self) -> QuantSpec {
        self.spec
    }

    /// The size of the input's last axis.
    pub fn input_dims(&self) -> usize {
        self.weight.shape()[1] * 32 / self.spec.bits
    }

    /// The size of the output's last axis.
    pub fn output_dims(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The weight as a float matrix `[output_dims, input_dims]` (the scales' dtype in affine
    /// mode, bfloat16 otherwise, as `mlx.core.dequantize`).
    pub fn dequantized_weight(&self) -> Result<Array> {
        let QuantSpec { group_size, bits, mode } = self.spec;
        fx::dequantize(&self.weight, &self.scales, self.biases.as_ref(), group_size, bits, mode, None)
    }

    /// The dense layer this one approximates (for `--dequantize`).
    pub fn to_linear(&self) -> Result<Linear> {
        Linear::from_weights(self.dequantized_weight()?, self.bias.clone())
    }

    /// `x Wᵀ + b` over the last axis of `x`, without materializing `W`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let QuantSpec { group_size, bits, mode } = self.spec;
        let y =
            fx::quantized_matmul(x, &self.weight, &self.scales, self.biases.as_ref(), true, group_size, bits, mode)?;
        match &self.bias {
            Some(b) => fx::add(&y, b),
            None => Ok(y),
        }
    }
}

impl UnaryModule for QuantizedLinear {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}

/// An embedding table stored quantized, MLX's `nn.QuantizedEmbedding`: rows are dequantized
/// as they are looked up, and [`QuantizedEmbedding::as_linear`] is a quantized product (a tied
/// output head).
#[derive(Module, Clone, Debug)]
pub struct QuantizedEmbedding {
    /// The packed table, uint32 `[num_embeddings, dims · bits / 32]`.
    pub weight: Array,
    /// Per-group scales `[num_embeddings, dims / group_size]`.
    pub scales: Array,
    /// Per-group biases (affine mode only), like `scales`.
    pub biases: Option<Array>,
    #[module(skip)]
    spec: QuantSpec,
    state: ModuleState,
}

impl QuantizedEmbedding {
    /// A table drawn from `N(0, 1/dims)` (MLX's default), quantized.
    pub fn new(num_embeddings: usize, dims: usize, spec: QuantSpec) -> Result<QuantizedEmbedding> {
        QuantizedEmbedding::from_embedding(&Embedding::new(num_embeddings, dims)?, spec)
    }

    /// Quantizes a dense table.
    pub fn from_embedding(embedding: &Embedding, spec: QuantSpec) -> Result<QuantizedEmbedding> {
        let (weight, scales, biases) = spec.quantize(&embedding.weight)?;
        QuantizedEmbedding::from_parts(weight, scales, biases, spec)
    }

    /// A table over already-quantized tensors (a checkpoint's), checked against each other.
    pub fn from_parts(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        spec: QuantSpec,
    ) -> Result<QuantizedEmbedding> {
        check_parts("QuantizedEmbedding", &weight, &scales, biases.as_ref(), spec)?;
        let state = ModuleState::with_buffers(QUANT_BUFFERS);
        Ok(QuantizedEmbedding { weight, scales, biases, spec, state })
    }

    /// How the table is quantized.
    pub fn spec(&self) -> QuantSpec {
        self.spec
    }

    /// The number of rows.
    pub fn num_embeddings(&self) -> usize {
        self.weight.shape()[0]
    }

    /// The width of a row.
    pub fn dims(&self) -> usize {
        self.weight.shape()[1] * 32 / self.spec.bits
    }

    /// The dense table this one approximates (for `--dequantize`).
    pub fn to_embedding(&self) -> Result<Embedding> {
        let QuantSpec { group_size, bits, mode } = self.spec;
        let w = fx::dequantize(&self.weight, &self.scales, self.biases.as_ref(), group_size, bits, mode, None)?;
        Embedding::from_weight(w)
    }

    /// The dequantized rows at integer `ids` (any shape `S` → `[S..., dims]`).
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        if !ids.dtype().is_integer() {
            return Err(Error::dtype("QuantizedEmbedding", "ids must be integers", ids.dtype()));
        }
        let flat = fx::reshape_usize(ids, &[ids.size()])?;
        let rows = |a: &Array| fx::take(a, &flat, Some(0));
        let biases = self.biases.as_ref().map(rows).transpose()?;
        let QuantSpec { group_size, bits, mode } = self.spec;
        let out =
            fx::dequantize(&rows(&self.weight)?, &rows(&self.scales)?, biases.as_ref(), group_size, bits, mode, None)?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.dims());
        fx::reshape_usize(&out, &shape)
    }

    /// `x @ tableᵀ` as a quantized product (`[..., dims]` → `[..., num_embeddings]`).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        let QuantSpec { group_size, bits, mode } = self.spec;
        fx::quantized_matmul(x, &self.weight, &self.scales, self.biases.as_ref(), true, group_size, bits, mode)
    }
}

impl UnaryModule for QuantizedEmbedding {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}

/// A linear layer that is dense or quantized, under one checkpoint name: declare a field
/// with this type and [`crate::quantize()`] can replace it in place.
#[derive(Module, Clone, Debug)]
pub enum AnyLinear {
    /// A float weight.
    Dense(Linear),
    /// A quantized weight.
    Quantized(QuantizedLinear),
}

impl AnyLinear {
    /// `x Wᵀ + b`, whichever form the layer has.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            AnyLinear::Dense(l) => l.forward(x),
            AnyLinear::Quantized(l) => l.forward(x),
        }
    }

    /// `residual + x Wᵀ + b` ([`Linear::forward_add`] for a dense layer: one product).
    pub fn forward_add(&self, x: &Array, residual: &Array) -> Result<Array> {
        match self {
            AnyLinear::Dense(l) => l.forward_add(x, residual),
            AnyLinear::Quantized(l) => fx::add(residual, &l.forward(x)?),
        }
    }

    /// The size of the input's last axis.
    pub fn input_dims(&self) -> usize {
        match self {
            AnyLinear::Dense(l) => l.input_dims(),
            AnyLinear::Quantized(l) => l.input_dims(),
        }
    }

    /// The size of the output's last axis.
    pub fn output_dims(&self) -> usize {
        match self {
            AnyLinear::Dense(l) => l.output_dims(),
            AnyLinear::Quantized(l) => l.output_dims(),
        }
    }

    /// The additive bias, if the layer has one.
    pub fn bias(&self) -> Option<&Array> {
        match self {
            AnyLinear::Dense(l) => l.bias.as_ref(),
            AnyLinear::Quantized(l) => l.bias.as_ref(),
        }
    }

    /// One layer whose output is the outputs of `parts` side by side (`[..., out₀ + out₁ +
    /// ...]`), for layers that read the same input: the weights (for a quantized layer the
    /// packed weight, scales and biases, which are all per output row) and the additive biases
    /// are concatenated along the output axis, so `joined(x)[..., off_i..off_i + out_i]` equals
    /// `parts[i](x)`.
    ///
    /// `None` (and nothing computed) when the parts cannot be one layer: none at all, dense
    /// and quantized ones mixed, another group size, bit width or mode, another input width,
    /// an additive bias on some but not all, or arrays of different dtypes. The result is lazy.
    pub fn concat_outputs(parts: &[&AnyLinear]) -> Result<Option<AnyLinear>> {
        let Some(first) = parts.first() else { return Ok(None) };
        let inputs = first.input_dims();
        if parts.iter().any(|p| p.input_dims() != inputs) {
            return Ok(None);
        }
        let Some(bias) = join_optional_rows(&parts.iter().map(|p| p.bias()).collect::<Vec<_>>())? else {
            return Ok(None);
        };
        let dense: Option<Vec<&Linear>> = parts
            .iter()
            .map(|p| match p {
                AnyLinear::Dense(l) => Some(l),
                AnyLinear::Quantized(_) => None,
            })
            .collect();
        if let Some(dense) = dense {
            let Some(weight) = join_rows(&dense.iter().map(|l| &l.weight).collect::<Vec<_>>())? else {
                return Ok(None);
            };
            return Ok(Some(Linear::from_weights(weight, bias)?.into()));
        }
        let quantized: Option<Vec<&QuantizedLinear>> = parts
            .iter()
            .map(|p| match p {
                AnyLinear::Quantized(l) => Some(l),
                AnyLinear::Dense(_) => None,
            })
            .collect();
        let Some(quantized) = quantized else { return Ok(None) };
        let spec = quantized[0].spec;
        if quantized.iter().any(|l| l.spec != spec) {
            return Ok(None);
        }
        let weight = join_rows(&quantized.iter().map(|l| &l.weight).collect::<Vec<_>>())?;
        let scales = join_rows(&quantized.iter().map(|l| &l.scales).collect::<Vec<_>>())?;
        let biases = join_optional_rows(&quantized.iter().map(|l| l.biases.as_ref()).collect::<Vec<_>>())?;
        let (Some(weight), Some(scales), Some(biases)) = (weight, scales, biases) else { return Ok(None) };
        Ok(Some(QuantizedLinear::from_parts(weight, scales, biases, bias, spec)?.into()))
    }
}

/// `arrays` concatenated along their first axis, or `None` if their dtypes or their other
/// axes differ.
fn join_rows(arrays: &[&Array]) -> Result<Option<Array>> {
    let Some(first) = arrays.first() else { return Ok(None) };
    let fits =
        |a: &&Array| a.dtype() == first.dtype() && a.ndim() == first.ndim() && a.shape()[1..] == first.shape()[1..];
    if first.ndim() == 0 || !arrays.iter().all(fits) {
        return Ok(None);
    }
    let owned: Vec<Array> = arrays.iter().map(|&a| a.clone()).collect();
    fx::concatenate(&owned, 0).map(Some)
}

/// [`join_rows`] of optional arrays: `Some(None)` when all are absent, `None` when only some
/// are (or they do not join).
fn join_optional_rows(arrays: &[Option<&Array>]) -> Result<Option<Option<Array>>> {
    if arrays.iter().all(Option::is_none) {
        return Ok(Some(None));
    }
    match arrays.iter().copied().collect::<Option<Vec<&Array>>>() {
        Some(present) => Ok(join_rows(&present)?.map(Some)),
        None => Ok(None),
    }
}

impl From<Linear> for AnyLinear {
    fn from(l: Linear) -> AnyLinear {
        AnyLinear::Dense(l)
    }
}

impl From<QuantizedLinear> for AnyLinear {
    fn from(l: QuantizedLinear) -> AnyLinear {
        AnyLinear::Quantized(l)
    }
}

impl UnaryModule for AnyLinear {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}

/// An embedding table that is dense or quantized, under one checkpoint name (see [`AnyLinear`]).
#[derive(Module, Clone, Debug)]
pub enum AnyEmbedding {
    /// A float table.
    Dense(Embedding),
    /// A quantized table.
    Quantized(QuantizedEmbedding),
}

impl AnyEmbedding {
    /// The rows at integer `ids`.
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        match self {
            AnyEmbedding::Dense(e) => e.forward(ids),
            AnyEmbedding::Quantized(e) => e.forward(ids),
        }
    }

    /// `x @ tableᵀ` (a tied output head).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            AnyEmbedding::Dense(e) => e.as_linear(x),
            AnyEmbedding::Quantized(e) => e.as_linear(x),
        }
    }
}

impl From<Embedding> for AnyEmbedding {
    fn from(e: Embedding) -> AnyEmbedding {
        AnyEmbedding::Dense(e)
    }
}

impl From<QuantizedEmbedding> for AnyEmbedding {
    fn from(e: QuantizedEmbedding) -> AnyEmbedding {
        AnyEmbedding::Quantized(e)
    }
}

impl UnaryModule for AnyEmbedding {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
