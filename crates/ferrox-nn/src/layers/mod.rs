//! The layers of `mlx.nn`, one idea per file; each is a [`crate::Module`] built by
//! `#[derive(Module)]`, with an inherent `forward`, and the one-input ones are also
//! [`crate::UnaryModule`]s for [`Sequential`].

pub mod activations;
mod alibi;
mod attention;
mod batch_norm;
mod conv;
mod conv_transpose;
mod dropout;
mod embedding;
mod fused_linear;
mod group_norm;
mod identity;
mod instance_norm;
mod layer_norm;
mod linear;
mod pooling;
mod positional;
mod quantized;
mod recurrent;
mod rms_norm;
mod rope;
mod sequential;
mod switch_linear;
mod transformer;
mod upsample;

pub use activations::{
    Celu, Elu, Gelu, GeluApprox, Glu, HardTanh, Hardswish, LeakyRelu, LogSigmoid, LogSoftmax, Mish, Prelu, Relu, Relu6,
    Selu, Sigmoid, Silu, Softmax, Softplus, Softsign, Tanh,
};
pub use alibi::Alibi;
pub use attention::MultiHeadAttention;
pub use batch_norm::BatchNorm;
pub use conv::{Conv1d, Conv2d};
pub use conv_transpose::{ConvTranspose1d, ConvTranspose2d};
pub use dropout::{Dropout, Dropout2d, Dropout3d};
pub use embedding::Embedding;
pub use fused_linear::FusedLinear;
pub use group_norm::GroupNorm;
pub use identity::Identity;
pub use instance_norm::InstanceNorm;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use pooling::{AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d};
pub use positional::SinusoidalPositionalEncoding;
pub use quantized::{AnyEmbedding, AnyLinear, QuantSpec, QuantizedEmbedding, QuantizedLinear};
pub use recurrent::{Gru, Lstm, Rnn};
pub use rms_norm::RmsNorm;
pub use rope::{yarn_attention_scale, Rope, RopeScaling};
pub use sequential::Sequential;
pub use switch_linear::SwitchLinear;
pub use transformer::{
    Activation, Transformer, TransformerDecoder, TransformerDecoderLayer, TransformerEncoder, TransformerEncoderLayer,
};
pub use upsample::{Upsample, UpsampleMode};
