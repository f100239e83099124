//! [`GroupNorm`]: normalization over groups of channels (and all positions) per sample.

use ferrox::{self as fx, Array, Dtype, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

/// Group normalization of channels-last inputs `[N, ..., dims]`, MLX's `nn.GroupNorm`: the
/// channels are split into `num_groups` groups, each normalized over its channels and all
/// positions of a sample, then scaled and shifted per channel when affine.
///
/// MLX groups channel `c` into group `c % num_groups`; with `pytorch_compatible` the groups
/// are contiguous runs of channels, as in PyTorch (`c / (dims / num_groups)`).
#[derive(Module, Clone, Debug)]
pub struct GroupNorm {
    /// `[dims]`, ones at first; absent when not affine.
    pub weight: Option<Array>,
    /// `[dims]`, zeros at first; absent when not affine.
    pub bias: Option<Array>,
    #[module(skip)]
    num_groups: usize,
    #[module(skip)]
    dims: usize,
    #[module(skip)]
    eps: f32,
    #[module(skip)]
    pytorch_compatible: bool,
    state: ModuleState,
}

impl GroupNorm {
    /// A group norm of `dims` channels in `num_groups` groups.
    pub fn new(num_groups: usize, dims: usize, eps: f32, affine: bool, pytorch_compatible: bool) -> Result<GroupNorm> {
        if num_groups == 0 || dims == 0 || !dims.is_multiple_of(num_groups) {
            return Err(Error::invalid(
                "GroupNorm",
                format!("dims={dims} must be a positive multiple of num_groups={num_groups}"),
            ));
        }
        if eps <= 0.0 {
            return Err(Error::invalid("GroupNorm", format!("eps must be positive, got {eps}")));
        }
        let weight = if affine { Some(fx::ones(&[dims], Dtype::F32)?) } else { None };
        let bias = if affine { Some(fx::zeros(&[dims], Dtype::F32)?) } else { None };
        Ok(GroupNorm { weight, bias, num_groups, dims, eps, pytorch_compatible, state: ModuleState::new() })
    }

    /// The normalized `x` (`[N, ..., dims]`).
    pub fn forward(&self, x: &Array) -> Result<Array> {
        let shape = x.shape().to_vec();
        if shape.len() < 2 || shape[shape.len() - 1] != self.dims {
            return Err(Error::shape("GroupNorm", format!("input of shape {shape:?} must be [N, ..., {}]", self.dims)));
        }
        let (n, g) = (shape[0] as isize, self.num_groups as isize);
        let y = if self.pytorch_compatible {
            let size = (self.dims / self.num_groups) as isize;
            // [N, P, G, S] -> [N, G, P*S]: each row one group.
            let r = fx::reshape(x, &[n, -1, g, size])?;
            let r = fx::reshape(&fx::transpose(&r, &[0, 2, 1, 3])?, &[n, g, -1])?;
            let r = fx::fast::layer_norm(&r, None, None, self.eps)?;
            let r = fx::transpose(&fx::reshape(&r, &[n, g, -1, size])?, &[0, 2, 1, 3])?;
            fx::reshape_usize(&r, &shape)?
        } else {
            // [N, P*dims/G, G]: channel c falls in column c % G.
            let r = fx::reshape(x, &[n, -1, g])?;
            let mean = fx::mean(&r, Some(&[1]), true)?;
            let var = fx::var(&r, Some(&[1]), true, 0)?;
            let r = fx::multiply(&fx::subtract(&r, &mean)?, &fx::rsqrt(&fx::add(&var, self.eps)?)?)?;
            fx::reshape_usize(&r, &shape)?
        };
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => fx::add(&fx::multiply(&y, w)?, b),
            _ => Ok(y),
        }
    }
}

impl UnaryModule for GroupNorm {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}
