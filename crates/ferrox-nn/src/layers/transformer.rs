//! Transformer encoder and decoder layers and stacks, MLX's `nn.TransformerEncoder(Layer)` and
//! `nn.TransformerDecoder(Layer)`.

use ferrox::{self as fx, Array, Result};

use super::activations::relu;
use super::{Dropout, LayerNorm, Linear, MultiHeadAttention};
use crate::Module;

/// An activation applied inside the feed-forward block.
pub type Activation = fn(&Array) -> Result<Array>;

/// The feed-forward block `linear2(dropout(act(linear1(x))))`.
fn mlp(linear1: &Linear, linear2: &Linear, drop: &Dropout, act: Activation, x: &Array) -> Result<Array> {
    linear2.forward(&drop.forward(&act(&linear1.forward(x)?)?)?)
}

/// Self-attention and a feed-forward block, each with a residual connection and a LayerNorm
/// before (`norm_first`, the default) or after it.
#[derive(Module, Clone, Debug)]
pub struct TransformerEncoderLayer {
    /// The self-attention.
    pub attention: MultiHeadAttention,
    /// The norm of the attention branch.
    pub ln1: LayerNorm,
    /// The norm of the feed-forward branch.
    pub ln2: LayerNorm,
    /// `dims → mlp_dims`.
    pub linear1: Linear,
    /// `mlp_dims → dims`.
    pub linear2: Linear,
    /// After the attention.
    pub dropout1: Dropout,
    /// After the activation.
    pub dropout2: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    norm_first: bool,
}

impl TransformerEncoderLayer {
    /// A layer of width `dims` with `num_heads` heads, a feed-forward width `mlp_dims`
    /// (default `4 · dims`), dropout `dropout` and ReLU.
    pub fn new(dims: usize, num_heads: usize, mlp_dims: Option<usize>, dropout: f32, norm_first: bool) -> Result<Self> {
        let mlp_dims = mlp_dims.unwrap_or(4 * dims);
        Ok(TransformerEncoderLayer {
            attention: MultiHeadAttention::new(dims, num_heads, false)?,
            ln1: LayerNorm::new(dims, 1e-5, true, true)?,
            ln2: LayerNorm::new(dims, 1e-5, true, true)?,
            linear1: Linear::new(dims, mlp_dims, true)?,
            linear2: Linear::new(mlp_dims, dims, true)?,
            dropout1: Dropout::new(dropout)?,
            dropout2: Dropout::new(dropout)?,
            activation: relu,
            norm_first,
        })
    }

    /// The layer with another feed-forward activation (e.g. `activations::gelu`).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// `x` `[B, L, dims]` through the layer; `mask` as for [`MultiHeadAttention::forward`].
    pub fn forward(&self, x: &Array, mask: Option<&Array>) -> Result<Array> {
        let ff = |y: &Array| mlp(&self.linear1, &self.linear2, &self.dropout2, self.activation, y);
        if self.norm_first {
            let y = self.ln1.forward(x)?;
            let x = fx::add(x, &self.dropout1.forward(&self.attention.forward(&y, &y, &y, mask)?)?)?;
            fx::add(&x, &ff(&self.ln2.forward(&x)?)?)
        } else {
            let y = self.dropout1.forward(&self.attention.forward(x, x, x, mask)?)?;
            let x = self.ln1.forward(&fx::add(x, &y)?)?;
            self.ln2.forward(&fx::add(&x, &ff(&x)?)?)
        }
    }
}

/// Self-attention, cross-attention to a `memory`, and a feed-forward block, each with a
/// residual connection and a LayerNorm before (`norm_first`) or after it.
#[derive(Module, Clone, Debug)]
pub struct TransformerDecoderLayer {
    /// The self-attention.
    pub self_attention: MultiHeadAttention,
    /// The attention to the memory.
    pub cross_attention: MultiHeadAttention,
    /// The norm of the self-attention branch.
    pub ln1: LayerNorm,
    /// The norm of the cross-attention branch.
    pub ln2: LayerNorm,
    /// The norm of the feed-forward branch.
    pub ln3: LayerNorm,
    /// `dims → mlp_dims`.
    pub linear1: Linear,
    /// `mlp_dims → dims`.
    pub linear2: Linear,
    /// After the self-attention.
    pub dropout1: Dropout,
    /// After the cross-attention.
    pub dropout2: Dropout,
    /// After the activation.
    pub dropout3: Dropout,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    norm_first: bool,
}

impl TransformerDecoderLayer {
    /// A layer of width `dims`; arguments as for [`TransformerEncoderLayer::new`].
    pub fn new(dims: usize, num_heads: usize, mlp_dims: Option<usize>, dropout: f32, norm_first: bool) -> Result<Self> {
        let mlp_dims = mlp_dims.unwrap_or(4 * dims);
        Ok(TransformerDecoderLayer {
            self_attention: MultiHeadAttention::new(dims, num_heads, false)?,
            cross_attention: MultiHeadAttention::new(dims, num_heads, false)?,
            ln1: LayerNorm::new(dims, 1e-5, true, true)?,
            ln2: LayerNorm::new(dims, 1e-5, true, true)?,
            ln3: LayerNorm::new(dims, 1e-5, true, true)?,
            linear1: Linear::new(dims, mlp_dims, true)?,
            linear2: Linear::new(mlp_dims, dims, true)?,
            dropout1: Dropout::new(dropout)?,
            dropout2: Dropout::new(dropout)?,
            dropout3: Dropout::new(dropout)?,
            activation: relu,
            norm_first,
        })
    }

    /// The layer with another feed-forward activation.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// `x` `[B, L, dims]` attending to itself (`x_mask`) and to `memory` `[B, S, dims]`
    /// (`memory_mask`).
    pub fn forward(
        &self,
        x: &Array,
        memory: &Array,
        x_mask: Option<&Array>,
        memory_mask: Option<&Array>,
    ) -> Result<Array> {
        let ff = |y: &Array| mlp(&self.linear1, &self.linear2, &self.dropout3, self.activation, y);
        if self.norm_first {
            let y = self.ln1.forward(x)?;
            let x = fx::add(x, &self.dropout1.forward(&self.self_attention.forward(&y, &y, &y, x_mask)?)?)?;
            let y = self.ln2.forward(&x)?;
            let c = self.cross_attention.forward(&y, memory, memory, memory_mask)?;
            let x = fx::add(&x, &self.dropout2.forward(&c)?)?;
            fx::add(&x, &ff(&self.ln3.forward(&x)?)?)
        } else {
            let y = self.dropout1.forward(&self.self_attention.forward(x, x, x, x_mask)?)?;
            let x = self.ln1.forward(&fx::add(x, &y)?)?;
            let c = self.dropout2.forward(&self.cross_attention.forward(&x, memory, memory, memory_mask)?)?;
            let x = self.ln2.forward(&fx::add(&x, &c)?)?;
            self.ln3.forward(&fx::add(&x, &ff(&x)?)?)
        }
    }
}

/// A stack of [`TransformerEncoderLayer`]s and a final LayerNorm `ln`.
#[derive(Module, Clone, Debug)]
pub struct TransformerEncoder {
    /// The layers.
    pub layers: Vec<TransformerEncoderLayer>,
    /// The final norm.
    pub ln: LayerNorm,
}

impl TransformerEncoder {
    /// `num_layers` layers; the other arguments as for [`TransformerEncoderLayer::new`].
    pub fn new(
        num_layers: usize,
        dims: usize,
        num_heads: usize,
        mlp_dims: Option<usize>,
        dropout: f32,
        norm_first: bool,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| TransformerEncoderLayer::new(dims, num_heads, mlp_dims, dropout, norm_first))
            .collect::<Result<_>>()?;
        Ok(TransformerEncoder { layers, ln: LayerNorm::new(dims, 1e-5, true, true)? })
    }

    /// `x` through every layer, then the norm.
    pub fn forward(&self, x: &Array, mask: Option<&Array>) -> Result<Array> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, mask)?;
        }
        self.ln.forward(&x)
    }
}

/// A stack of [`TransformerDecoderLayer`]s and a final LayerNorm `ln`.
#[derive(Module, Clone, Debug)]
pub struct TransformerDecoder {
    /// The layers.
    pub layers: Vec<TransformerDecoderLayer>,
    /// The final norm.
    pub ln: LayerNorm,
}

impl TransformerDecoder {
    /// `num_layers` layers; the other arguments as for [`TransformerDecoderLayer::new`].
    pub fn new(
        num_layers: usize,
        dims: usize,
        num_heads: usize,
        mlp_dims: Option<usize>,
        dropout: f32,
        norm_first: bool,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| TransformerDecoderLayer::new(dims, num_heads, mlp_dims, dropout, norm_first))
            .collect::<Result<_>>()?;
        Ok(TransformerDecoder { layers, ln: LayerNorm::new(dims, 1e-5, true, true)? })
    }

    /// `x` through every layer (attending to `memory`), then the norm.
    pub fn forward(
        &self,
        x: &Array,
        memory: &Array,
        x_mask: Option<&Array>,
        memory_mask: Option<&Array>,
    ) -> Result<Array> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, memory, x_mask, memory_mask)?;
        }
        self.ln.forward(&x)
    }
}
