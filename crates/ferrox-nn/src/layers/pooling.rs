//! Max and average pooling over sliding windows of channels-last inputs, MLX's
//! `nn.MaxPool1d/2d` and `nn.AvgPool1d/2d`.

use ferrox::{self as fx, Array, Error, PadMode, Result};

use crate::module::UnaryModule;
use crate::Module;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reduce {
    Max,
    Mean,
}

/// The shared window machinery: pad, view the windows as extra axes, reduce over them.
#[derive(Clone, Debug)]
struct Pool {
    reduce: Reduce,
    kernel: Vec<usize>,
    stride: Vec<usize>,
    padding: Vec<usize>,
}

impl Pool {
    fn new(
        op: &'static str,
        reduce: Reduce,
        kernel: Vec<usize>,
        stride: Option<Vec<usize>>,
        padding: Vec<usize>,
    ) -> Result<Pool> {
        let stride = stride.unwrap_or_else(|| kernel.clone());
        if kernel.iter().chain(&stride).any(|&v| v == 0) {
            return Err(Error::invalid(op, format!("kernel_size {kernel:?} and stride {stride:?} must be positive")));
        }
        Ok(Pool { reduce, kernel, stride, padding })
    }

    fn forward(&self, op: &'static str, x: &Array) -> Result<Array> {
        let n = self.kernel.len();
        if x.ndim() != n + 2 {
            return Err(Error::shape(
                op,
                format!("input of shape {:?} must have {} dimensions [N, ..., C]", x.shape(), n + 2),
            ));
        }
        let x = if self.padding.iter().any(|&p| p > 0) {
            let mut widths = vec![(0, 0)];
            widths.extend(self.padding.iter().map(|&p| (p, p)));
            widths.push((0, 0));
            let fill = if self.reduce == Reduce::Max { f64::NEG_INFINITY } else { 0.0 };
            fx::pad(x, &widths, PadMode::Constant, fill)?
        } else {
            x.clone()
        };
        let shape = x.shape().to_vec();
        let elem: Vec<isize> = ferrox::array::row_major_strides(&shape);
        let mut out_shape = vec![shape[0]];
        let mut strides = vec![elem[0]];
        for i in 0..n {
            let size = shape[1 + i];
            if size < self.kernel[i] {
                return Err(Error::shape(
                    op,
                    format!("spatial axis {i} of size {size} (padded) is smaller than the window {}", self.kernel[i]),
                ));
            }
            out_shape.push((size - self.kernel[i]) / self.stride[i] + 1);
            strides.push(elem[1 + i] * self.stride[i] as isize);
        }
        for i in 0..n {
            out_shape.push(self.kernel[i]);
            strides.push(elem[1 + i]);
        }
        out_shape.push(shape[n + 1]);
        strides.push(1);
        let windows = fx::as_strided(&x, &out_shape, &strides, 0)?;
        let axes: Vec<isize> = (0..n as isize).map(|i| -(n as isize) - 1 + i).collect();
        match self.reduce {
            Reduce::Max => fx::max(&windows, Some(&axes), false),
            Reduce::Mean => fx::mean(&windows, Some(&axes), false),
        }
    }
}

macro_rules! pool_layers {
    ($($(#[$doc:meta])* $name:ident, $reduce:ident, $arg:ty, $to_vec:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Module, Clone, Debug)]
        pub struct $name {
            #[module(skip)]
            pool: Pool,
        }

        impl $name {
            /// A pooling layer; `stride` defaults to the kernel size, `padding` pads both sides
            /// (with −∞ for max pooling, zeros — which count in the average — for average pooling).
            pub fn new(kernel_size: $arg, stride: Option<$arg>, padding: $arg) -> Result<Self> {
                let v = $to_vec;
                let pool = Pool::new(stringify!($name), Reduce::$reduce, v(kernel_size), stride.map(v), v(padding))?;
                Ok($name { pool })
            }

            /// Pools `x` of shape `[N, spatial..., C]`.
            pub fn forward(&self, x: &Array) -> Result<Array> {
                self.pool.forward(stringify!($name), x)
            }
        }

        impl UnaryModule for $name {
            fn call(&mut self, x: &Array) -> Result<Array> {
                self.forward(x)
            }
        }
    )*};
}

pool_layers! {
    /// Maximum over windows of `[N, L, C]` inputs.
    MaxPool1d, Max, usize, |k: usize| vec![k];
    /// Maximum over windows of `[N, H, W, C]` inputs; pairs are (height, width).
    MaxPool2d, Max, (usize, usize), |k: (usize, usize)| vec![k.0, k.1];
    /// Mean over windows of `[N, L, C]` inputs.
    AvgPool1d, Mean, usize, |k: usize| vec![k];
    /// Mean over windows of `[N, H, W, C]` inputs; pairs are (height, width).
    AvgPool2d, Mean, (usize, usize), |k: (usize, usize)| vec![k.0, k.1];
}
