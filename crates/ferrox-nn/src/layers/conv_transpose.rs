//! [`ConvTranspose1d`] and [`ConvTranspose2d`]: transposed (fractionally strided)
//! convolutions, the gradient of a convolution with respect to its input, as layers.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use super::linear::uniform_init;
use crate::module::{ModuleState, UnaryModule};
use crate::Module;

fn check_groups(op: &'static str, in_channels: usize, out_channels: usize, groups: usize) -> Result<()> {
    if groups == 0 || !in_channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!("in_channels={in_channels} and out_channels={out_channels} must be multiples of groups={groups}"),
        ));
    }
    Ok(())
}

/// Transposed 1-D convolution of `[N, L, C_in]` inputs, MLX's `nn.ConvTranspose1d`: `weight`
/// `[C_out, K, C_in / groups]`, optional `bias` `[C_out]`;
/// `L_out = (L − 1)·stride − 2·padding + dilation·(K − 1) + output_padding + 1`.
#[derive(Module, Clone, Debug)]
pub struct ConvTranspose1d {
    /// `[C_out, K, C_in / groups]`.
    pub weight: Array,
    /// `[C_out]`, if the layer has a bias.
    pub bias: Option<Array>,
    #[module(skip)]
    stride: usize,
    #[module(skip)]
    padding: usize,
    #[module(skip)]
    dilation: usize,
    #[module(skip)]
    output_padding: usize,
    #[module(skip)]
    groups: usize,
    state: ModuleState,
}

impl ConvTranspose1d {
    /// A layer with weights uniform in `±1/√(C_in · K)` and a zero bias.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        output_padding: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        check_groups("ConvTranspose1d", in_channels, out_channels, groups)?;
        let fan_in = in_channels * kernel_size;
        let weight = uniform_init(&[out_channels, kernel_size, in_channels / groups], fan_in)?;
        let bias = if bias { Some(fx::zeros(&[out_channels], Dtype::F32)?) } else { None };
        Ok(ConvTranspose1d {
            weight,
            bias,
            stride,
            padding,
            dilation,
            output_padding,
            groups,
            state: ModuleState::new(),
        })
    }

    /// `[N, L, C_in]` → `[N, L_out, C_out]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = fx::conv_transpose1d(
            x,
            &self.weight,
            self.stride,
            self.padding,
            self.dilation,
            self.output_padding,
            self.groups,
        )?;
        match &self.bias {
            Some(b) => fx::add(&y, b),
            None => Ok(y),
        }
    }
}

impl UnaryModule for ConvTranspose1d {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}

/// Transposed 2-D convolution of `[N, H, W, C_in]` inputs, MLX's `nn.ConvTranspose2d`:
/// `weight` `[C_out, KH, KW, C_in / groups]`, optional `bias` `[C_out]`; pairs are
/// (height, width).
#[derive(Module, Clone, Debug)]
pub struct ConvTranspose2d {
    /// `[C_out, KH, KW, C_in / groups]`.
    pub weight: Array,
    /// `[C_out]`, if the layer has a bias.
    pub bias: Option<Array>,
    #[module(skip)]
    stride: (usize, usize),
    #[module(skip)]
    padding: (usize, usize),
    #[module(skip)]
    dilation: (usize, usize),
    #[module(skip)]
    output_padding: (usize, usize),
    #[module(skip)]
    groups: usize,
    state: ModuleState,
}

impl ConvTranspose2d {
    /// A layer with weights uniform in `±1/√(C_in · KH · KW)` and a zero bias.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        output_padding: (usize, usize),
        groups: usize,
        bias: bool,
    ) -> Result<Self> {
        check_groups("ConvTranspose2d", in_channels, out_channels, groups)?;
        let fan_in = in_channels * kernel_size.0 * kernel_size.1;
        let weight = uniform_init(&[out_channels, kernel_size.0, kernel_size.1, in_channels / groups], fan_in)?;
        let bias = if bias { Some(fx::zeros(&[out_channels], Dtype::F32)?) } else { None };
        Ok(ConvTranspose2d {
            weight,
            bias,
            stride,
            padding,
            dilation,
            output_padding,
            groups,
            state: ModuleState::new(),
        })
    }

    /// `[N, H, W, C_in]` → `[N, H_out, W_out, C_out]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = fx::conv_transpose2d(
            x,
            &self.weight,
            self.stride,
            self.padding,
            self.dilation,
            self.output_padding,
            self.groups,
        )?;
        match &self.bias {
            Some(b) => fx::add(&y, b),
            None => Ok(y),
        }
    }
}

impl UnaryModule for ConvTranspose2d {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
