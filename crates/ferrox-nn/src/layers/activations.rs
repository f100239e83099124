//! The activation functions of `mlx.nn`, as functions and as parameterless modules (for
//! [`super::Sequential`]). Each is built from core ops, so gradients come from their rules.

use ferrox::{self as fx, Array, Error, Result};

use crate::module::{ModuleState, UnaryModule};
use crate::Module;

const SELU_ALPHA: f64 = 1.673_263_242_354_377_3;
const SELU_SCALE: f64 = 1.050_700_987_355_480_5;

/// `max(x, 0)`.
pub fn relu(x: &Array) -> Result<Array> {
    fx::maximum(x, 0.0)
}

/// `min(max(x, 0), 6)`.
pub fn relu6(x: &Array) -> Result<Array> {
    fx::minimum(&fx::maximum(x, 0.0)?, 6.0)
}

/// `x` where positive, `negative_slope * x` elsewhere (MLX's default slope is 0.01).
pub fn leaky_relu(x: &Array, negative_slope: f32) -> Result<Array> {
    fx::where_(&fx::greater(x, 0.0)?, x, &fx::multiply(x, negative_slope)?)
}

/// `x` where positive, `alpha * (eˣ − 1)` elsewhere.
pub fn elu(x: &Array, alpha: f32) -> Result<Array> {
    fx::where_(&fx::greater(x, 0.0)?, x, &fx::multiply(&fx::expm1(x)?, alpha)?)
}

/// Scaled ELU with the self-normalizing constants (α ≈ 1.6733, scale ≈ 1.0507).
pub fn selu(x: &Array) -> Result<Array> {
    let neg = fx::multiply(&fx::expm1(x)?, SELU_ALPHA)?;
    fx::multiply(&fx::where_(&fx::greater(x, 0.0)?, x, &neg)?, SELU_SCALE)
}

/// `max(x, 0) + alpha * (e^(min(x, 0) / alpha) − 1)`.
pub fn celu(x: &Array, alpha: f32) -> Result<Array> {
    let neg = fx::multiply(&fx::expm1(&fx::divide(&fx::minimum(x, 0.0)?, alpha)?)?, alpha)?;
    fx::add(&fx::maximum(x, 0.0)?, &neg)
}

/// The exact GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
pub fn gelu(x: &Array) -> Result<Array> {
    let cdf = fx::multiply(&fx::add(&fx::erf(&fx::multiply(x, std::f64::consts::FRAC_1_SQRT_2)?)?, 1.0)?, 0.5)?;
    fx::multiply(x, &cdf)
}

/// GELU by its tanh approximation, `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_approx(x: &Array) -> Result<Array> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    // x³ as x²·x: a general power would go through powf.
    let cube = fx::multiply(&fx::square(x)?, x)?;
    let inner = fx::multiply(&fx::add(x, &fx::multiply(&cube, 0.044715)?)?, c)?;
    fx::multiply(&fx::multiply(x, 0.5)?, &fx::add(&fx::tanh(&inner)?, 1.0)?)
}

/// GELU by the sigmoid approximation `x · σ(1.702 x)` (MLX's `gelu_fast_approx`).
pub fn gelu_fast_approx(x: &Array) -> Result<Array> {
    fx::multiply(x, &fx::sigmoid(&fx::multiply(x, 1.702)?)?)
}

/// `x · σ(x)` (swish).
pub fn silu(x: &Array) -> Result<Array> {
    fx::multiply(x, &fx::sigmoid(x)?)
}

/// `silu(gate) · x`, the gate of SwiGLU feed-forward blocks; compiled once for the process
/// (shapeless, as mlx-lm compiles its `swiglu`), so it runs as one fused kernel that reads
/// each input once. Bit for bit `silu(gate) * x`.
pub fn swiglu(gate: &Array, x: &Array) -> Result<Array> {
    type Program = fn(&[Array]) -> Result<Vec<Array>>;
    static COMPILED: std::sync::OnceLock<fx::Compiled<Program>> = std::sync::OnceLock::new();
    let program: Program = |a| Ok(vec![fx::multiply(&silu(&a[0])?, &a[1])?]);
    let f = COMPILED.get_or_init(|| fx::compile(program).shapeless(true));
    Ok(f.call(&[gate.clone(), x.clone()])?.remove(0))
}

/// `x · tanh(softplus(x))`.
pub fn mish(x: &Array) -> Result<Array> {
    fx::multiply(x, &fx::tanh(&softplus(x)?)?)
}

/// `log(1 + eˣ)`, stable for large |x|.
pub fn softplus(x: &Array) -> Result<Array> {
    fx::logaddexp(x, 0.0)
}

/// `x / (1 + |x|)`.
pub fn softsign(x: &Array) -> Result<Array> {
    fx::divide(x, &fx::add(&fx::abs(x)?, 1.0)?)
}

/// `x · relu6(x + 3) / 6`.
pub fn hardswish(x: &Array) -> Result<Array> {
    fx::divide(&fx::multiply(x, &relu6(&fx::add(x, 3.0)?)?)?, 6.0)
}

/// `x` limited to `[min, max]` (MLX's defaults −1 and 1).
pub fn hard_tanh(x: &Array, min: f32, max: f32) -> Result<Array> {
    fx::minimum(&fx::maximum(x, min)?, max)
}

/// `1 / (1 + e⁻ˣ)`.
pub fn sigmoid(x: &Array) -> Result<Array> {
    fx::sigmoid(x)
}

/// Hyperbolic tangent.
pub fn tanh(x: &Array) -> Result<Array> {
    fx::tanh(x)
}

/// `log σ(x) = −softplus(−x)`.
pub fn log_sigmoid(x: &Array) -> Result<Array> {
    fx::negative(&softplus(&fx::negative(x)?)?)
}

/// Softmax over `axis`.
pub fn softmax(x: &Array, axis: isize) -> Result<Array> {
    fx::softmax(x, Some(&[axis]), false)
}

/// `x − logsumexp(x)` over `axis`.
pub fn log_softmax(x: &Array, axis: isize) -> Result<Array> {
    fx::subtract(x, &fx::logsumexp(x, Some(&[axis]), true)?)
}

/// `max(x, 0) + alpha · min(x, 0)`, `alpha` broadcast against `x` (one per channel, last axis).
pub fn prelu(x: &Array, alpha: &Array) -> Result<Array> {
    fx::add(&fx::maximum(x, 0.0)?, &fx::multiply(alpha, &fx::minimum(x, 0.0)?)?)
}

/// [`prelu`] with a learned slope per channel (or one shared), MLX's `nn.PReLU`.
#[derive(Module, Clone, Debug)]
pub struct Prelu {
    /// `[num_parameters]`, 0.25 at first.
    pub weight: Array,
    state: ModuleState,
}

impl Prelu {
    /// `num_parameters` slopes (1, or the channel count), all `init` (MLX: 0.25).
    pub fn new(num_parameters: usize, init: f32) -> Result<Prelu> {
        Ok(Prelu { weight: fx::full(&[num_parameters], init, ferrox::Dtype::F32)?, state: ModuleState::new() })
    }

    /// Applies the activation.
    pub fn forward(&self, x: &Array) -> Result<Array> {
        prelu(x, &self.weight)
    }
}

impl UnaryModule for Prelu {
    fn call(&mut self, x: &Array) -> Result<Array> {
        self.forward(x)
    }
}

/// Gated linear unit: `a · σ(b)` for the two halves `a`, `b` of `x` along `axis`.
pub fn glu(x: &Array, axis: isize) -> Result<Array> {
    let n = x.dim(axis)?;
    if n % 2 != 0 {
        return Err(Error::shape("glu", format!("axis {axis} of shape {:?} must have an even size", x.shape())));
    }
    let half = (n / 2) as isize;
    let a = fx::slice_axis(x, axis, 0, half)?;
    let b = fx::slice_axis(x, axis, half, 2 * half)?;
    fx::multiply(&a, &fx::sigmoid(&b)?)
}

macro_rules! activation_modules {
    ($($(#[$doc:meta])* $name:ident => |$x:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Module, Clone, Copy, Debug, Default)]
        pub struct $name;

        impl $name {
            /// Applies the activation.
            pub fn forward(&self, $x: &Array) -> Result<Array> {
                $body
            }
        }

        impl UnaryModule for $name {
            fn call(&mut self, x: &Array) -> Result<Array> {
                self.forward(x)
            }
        }
    )*};
}

activation_modules! {
    /// [`relu`] as a module.
    Relu => |x| relu(x);
    /// [`relu6`] as a module.
    Relu6 => |x| relu6(x);
    /// [`selu`] as a module.
    Selu => |x| selu(x);
    /// [`silu`] as a module.
    Silu => |x| silu(x);
    /// [`mish`] as a module.
    Mish => |x| mish(x);
    /// [`softplus`] as a module.
    Softplus => |x| softplus(x);
    /// [`softsign`] as a module.
    Softsign => |x| softsign(x);
    /// [`hardswish`] as a module.
    Hardswish => |x| hardswish(x);
    /// [`hard_tanh`] on `[-1, 1]` as a module.
    HardTanh => |x| hard_tanh(x, -1.0, 1.0);
    /// [`sigmoid`] as a module.
    Sigmoid => |x| sigmoid(x);
    /// [`tanh`] as a module.
    Tanh => |x| tanh(x);
    /// [`log_sigmoid`] as a module.
    LogSigmoid => |x| log_sigmoid(x);
    /// [`softmax`] over the last axis as a module.
    Softmax => |x| softmax(x, -1);
    /// [`log_softmax`] over the last axis as a module.
    LogSoftmax => |x| log_softmax(x, -1);
}

/// The three GELU formulas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeluApprox {
    /// [`gelu`], with erf.
    #[default]
    None,
    /// [`gelu_approx`], with tanh.
    Precise,
    /// [`gelu_fast_approx`], with a sigmoid.
    Fast,
}

macro_rules! configured_modules {
    ($($(#[$doc:meta])* $name:ident { $(#[$fdoc:meta])* $field:ident: $ty:ty = $default:expr } => |$s:ident, $x:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Module, Clone, Copy, Debug)]
        pub struct $name {
            $(#[$fdoc])*
            #[module(skip)]
            pub $field: $ty,
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $field: $default }
            }
        }

        impl $name {
            /// Applies the activation.
            pub fn forward(&self, $x: &Array) -> Result<Array> {
                let $s = self;
                $body
            }
        }

        impl UnaryModule for $name {
            fn call(&mut self, x: &Array) -> Result<Array> {
                self.forward(x)
            }
        }
    )*};
}

configured_modules! {
    /// [`leaky_relu`] as a module (default slope 0.01).
    LeakyRelu { /// The slope for negative inputs.
        negative_slope: f32 = 0.01 } => |s, x| leaky_relu(x, s.negative_slope);
    /// [`elu`] as a module (default α = 1).
    Elu { /// The scale of the negative branch.
        alpha: f32 = 1.0 } => |s, x| elu(x, s.alpha);
    /// [`celu`] as a module (default α = 1).
    Celu { /// The scale of the negative branch.
        alpha: f32 = 1.0 } => |s, x| celu(x, s.alpha);
    /// GELU as a module, by the chosen formula.
    Gelu { /// Which formula.
        approx: GeluApprox = GeluApprox::None } => |s, x| match s.approx {
            GeluApprox::None => gelu(x),
            GeluApprox::Precise => gelu_approx(x),
            GeluApprox::Fast => gelu_fast_approx(x),
        };
    /// [`glu`] as a module (default axis −1).
    Glu { /// The axis split in two.
        axis: isize = -1 } => |s, x| glu(x, s.axis);
}
