//! The layers of `mlx.nn`, one idea per file; each is a [`crate::Module`] built by
//! `#[derive(Module)]`, with an inherent `forward`, and the one-input ones are also
//! [`crate::UnaryModule`]s for [`Sequential`].

pub mod activations;
mod attention;
mod batch_norm;
mod conv;
mod conv_transpose;
mod dropout;
mod embedding;
mod group_norm;
mod identity;
mod layer_norm;
mod linear;
mod pooling;
mod positional;
mod rms_norm;
mod rope;
mod sequential;
mod transformer;

pub use activations::{
    Celu, Elu, Gelu, GeluApprox, Glu, HardTanh, Hardswish, LeakyRelu, LogSigmoid, LogSoftmax, Mish, Relu, Relu6, Selu,
    Sigmoid, Silu, Softmax, Softplus, Softsign, Tanh,
};
pub use attention::MultiHeadAttention;
pub use batch_norm::BatchNorm;
pub use conv::{Conv1d, Conv2d};
pub use conv_transpose::{ConvTranspose1d, ConvTranspose2d};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use group_norm::GroupNorm;
pub use identity::Identity;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use pooling::{AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d};
pub use positional::SinusoidalPositionalEncoding;
pub use rms_norm::RmsNorm;
pub use rope::{yarn_attention_scale, Rope, RopeScaling};
pub use sequential::Sequential;
pub use transformer::{
    Activation, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
};
