//! [`MultiHeadAttention`]: projected scaled dot-product attention over several heads.

use ferrox::fast::SdpaMask;
use ferrox::{self as fx, Array, Dtype, Error, Result};

use super::Linear;
use crate::Module;

/// Multi-head attention, MLX's `nn.MultiHeadAttention`: queries, keys and values are
/// projected (`query_proj`, `key_proj`, `value_proj`), split into `num_heads` heads, attended
/// with scale `1/√head_dim`, merged and projected by `out_proj`.
#[derive(Module, Clone, Debug)]
pub struct MultiHeadAttention {
    /// Queries → `[.., dims]`.
    pub query_proj: Linear,
    /// Keys → `[.., dims]`.
    pub key_proj: Linear,
    /// Values → `[.., value_dims]`.
    pub value_proj: Linear,
    /// Merged heads → output.
    pub out_proj: Linear,
    #[module(skip)]
    num_heads: usize,
}

impl MultiHeadAttention {
    /// Attention of model width `dims` in `num_heads` heads, every input and output of width
    /// `dims` (MLX's defaults); `bias` adds biases to the four projections.
    pub fn new(dims: usize, num_heads: usize, bias: bool) -> Result<Self> {
        Self::with_dims(dims, num_heads, dims, dims, dims, dims, dims, bias)
    }

    /// Attention with each width given: the query/key/value inputs, the projected values and
    /// the output.
    #[allow(clippy::too_many_arguments)]
    pub fn with_dims(
        dims: usize,
        num_heads: usize,
        query_input_dims: usize,
        key_input_dims: usize,
        value_input_dims: usize,
        value_dims: usize,
        value_output_dims: usize,
        bias: bool,
    ) -> Result<Self> {
        if num_heads == 0 || !dims.is_multiple_of(num_heads) || !value_dims.is_multiple_of(num_heads) {
            return Err(Error::invalid(
                "MultiHeadAttention",
                format!("dims={dims} and value_dims={value_dims} must be multiples of num_heads={num_heads}"),
            ));
        }
        Ok(MultiHeadAttention {
            query_proj: Linear::new(query_input_dims, dims, bias)?,
            key_proj: Linear::new(key_input_dims, dims, bias)?,
            value_proj: Linear::new(value_input_dims, value_dims, bias)?,
            out_proj: Linear::new(value_dims, value_output_dims, bias)?,
            num_heads,
        })
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    fn heads(&self, x: &Array) -> Result<Array> {
        // [B, L, D] -> [B, H, L, D/H]
        let y = fx::unflatten(x, -1, &[self.num_heads as isize, -1])?;
        fx::transpose(&y, &[0, 2, 1, 3])
    }

    /// Attends `queries` `[B, L, Dq]` to `keys` `[B, S, Dk]` / `values` `[B, S, Dv]`; `mask`
    /// broadcasts to `[B, heads, L, S]` (additive if float, keep/drop if bool).
    pub fn forward(&self, queries: &Array, keys: &Array, values: &Array, mask: Option<&Array>) -> Result<Array> {
        for (a, what) in [(queries, "queries"), (keys, "keys"), (values, "values")] {
            if a.ndim() != 3 {
                return Err(Error::shape(
                    "MultiHeadAttention",
                    format!("{what} of shape {:?} must be [B, L, D]", a.shape()),
                ));
            }
        }
        let q = self.heads(&self.query_proj.forward(queries)?)?;
        let k = self.heads(&self.key_proj.forward(keys)?)?;
        let v = self.heads(&self.value_proj.forward(values)?)?;
        let scale = 1.0 / (q.shape()[3] as f32).sqrt();
        let mask = match mask {
            Some(m) => SdpaMask::Array(m.clone()),
            None => SdpaMask::None,
        };
        let o = fx::fast::scaled_dot_product_attention(&q, &k, &v, scale, mask)?;
        let o = fx::flatten(&fx::transpose(&o, &[0, 2, 1, 3])?, -2, -1)?;
        self.out_proj.forward(&o)
    }

    /// `[n, n]` additive causal mask: 0 on and below the diagonal, the dtype's lowest value
    /// above it (MLX's `create_additive_causal_mask`).
    pub fn create_additive_causal_mask(n: usize, dtype: Dtype) -> Result<Array> {
        let above = fx::logical_not(&fx::tri(n, None, 0, Dtype::Bool)?)?;
        let low = match dtype {
            Dtype::F16 => -65504.0,
            Dtype::Bf16 => -3.389_531_4e38,
            Dtype::F64 => f64::MIN,
            _ => f32::MIN as f64,
        };
        fx::where_(&above, &fx::full(&[], low, dtype)?, &fx::zeros(&[], dtype)?)
    }
}
