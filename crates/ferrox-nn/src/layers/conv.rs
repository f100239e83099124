//! [`Conv1d`] and [`Conv2d`]: channels-last convolutions with learned kernels.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use super::linear::uniform_init;
use crate::module::{ModuleState, UnaryModule};
use crate::Module;

fn check_channels(op: &'static str, in_channels: usize, out_channels: usize, groups: usize) -> Result<()> {
    if groups == 0 || !in_channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        return Err(Error::invalid(
            op,
            format!("in_channels={in_channels} and out_channels={out_channels} must be multiples of groups={groups}"),
        ));
    }
    Ok(())
}

/// 1-D convolution of `[N, L, C_in]` inputs, MLX's `nn.Conv1d`: `weight`
/// `[C_out, K, C_in / groups]`, optional `bias` `[C_out]`.
#[derive(Module, Clone, Debug)]
pub struct Conv1d {
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
    groups: usize,
    state: ModuleState,
}

impl Conv1d {
    /// A layer with weights uniform in `±1/√(C_in/groups · K)` and a zero bias.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
        groups: usize,
        bias: bool,
    ) -> Result<Conv1d> {
        check_channels("Conv1d", in_channels, out_channels, groups)?;
        let fan_in = in_channels / groups * kernel_size;
        let weight = uniform_init(&[out_channels, kernel_size, in_channels / groups], fan_in)?;
        let bias = if bias { Some(fx::zeros(&[out_channels], Dtype::F32)?) } else { None };
        Ok(Conv1d { weight, bias, stride, padding, dilation, groups, state: ModuleState::new() })
    }

    /// `[N, L, C_in]` → `[N, L_out, C_out]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = fx::conv1d(x, &self.weight, self.stride, self.padding, self.dilation, self.groups)?;
        match &self.bias {
            Some(b) => fx::add(&y, b),
            None => Ok(y),
        }
    }
}

impl UnaryModule for Conv1d {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}

/// 2-D convolution of `[N, H, W, C_in]` inputs, MLX's `nn.Conv2d`: `weight`
/// `[C_out, KH, KW, C_in / groups]`, optional `bias` `[C_out]`. Pairs are (height, width).
#[derive(Module, Clone, Debug)]
pub struct Conv2d {
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
    groups: usize,
    state: ModuleState,
}

impl Conv2d {
    /// A layer with weights uniform in `±1/√(C_in/groups · KH · KW)` and a zero bias.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel_size: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
        groups: usize,
        bias: bool,
    ) -> Result<Conv2d> {
        check_channels("Conv2d", in_channels, out_channels, groups)?;
        let fan_in = in_channels / groups * kernel_size.0 * kernel_size.1;
        let weight = uniform_init(&[out_channels, kernel_size.0, kernel_size.1, in_channels / groups], fan_in)?;
        let bias = if bias { Some(fx::zeros(&[out_channels], Dtype::F32)?) } else { None };
        Ok(Conv2d { weight, bias, stride, padding, dilation, groups, state: ModuleState::new() })
    }

    /// `[N, H, W, C_in]` → `[N, H_out, W_out, C_out]`.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let y = fx::conv2d(x, &self.weight, self.stride, self.padding, self.dilation, self.groups)?;
        match &self.bias {
            Some(b) => fx::add(&y, b),
            None => Ok(y),
        }
    }
}

impl UnaryModule for Conv2d {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
