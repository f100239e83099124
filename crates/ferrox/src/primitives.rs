//! The primitive ops a graph node can hold.
//!
//! Op functions (in `ops/`) validate their arguments, work out the output shape and dtype,
//! and record one of these; backends evaluate them. A composite op (linspace, var, einsum, ...)
//! records the primitives it is made of.

use std::sync::Arc;

/// Elementwise functions of one array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Abs,
    Negative,
    Sign,
    Exp,
    Expm1,
    Log,
    Log1p,
    Log2,
    Log10,
    Sqrt,
    Rsqrt,
    Square,
    Reciprocal,
    Sin,
    Cos,
    Tan,
    ArcSin,
    ArcCos,
    ArcTan,
    Sinh,
    Cosh,
    Tanh,
    ArcSinh,
    ArcCosh,
    ArcTanh,
    Sigmoid,
    Erf,
    ErfInv,
    Floor,
    Ceil,
    Round,
    LogicalNot,
    IsNan,
    IsInf,
    IsFinite,
    BitwiseInvert,
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 36] = {
        use UnaryOp::*;
        [
            Abs,
            Negative,
            Sign,
            Exp,
            Expm1,
            Log,
            Log1p,
            Log2,
            Log10,
            Sqrt,
            Rsqrt,
            Square,
            Reciprocal,
            Sin,
            Cos,
            Tan,
            ArcSin,
            ArcCos,
            ArcTan,
            Sinh,
            Cosh,
            Tanh,
            ArcSinh,
            ArcCosh,
            ArcTanh,
            Sigmoid,
            Erf,
            ErfInv,
            Floor,
            Ceil,
            Round,
            LogicalNot,
            IsNan,
            IsInf,
            IsFinite,
            BitwiseInvert,
        ]
    };
}

/// Elementwise functions of two arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Subtract,
    Multiply,
    Divide,
    FloorDivide,
    Remainder,
    Power,
    Maximum,
    Minimum,
    LogAddExp,
    ArcTan2,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    LogicalAnd,
    LogicalOr,
    BitwiseAnd,
    BitwiseOr,
    BitwiseXor,
    LeftShift,
    RightShift,
}

impl BinaryOp {
    /// True for the ops whose output is `bool` whatever the input dtype.
    pub fn is_comparison(self) -> bool {
        use BinaryOp::*;
        matches!(self, Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual | LogicalAnd | LogicalOr)
    }
}

/// Reductions over axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    All,
    Any,
}

/// Reductions to an index along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ArgReduceOp {
    ArgMax,
    ArgMin,
}

/// Cumulative reductions along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ScanOp {
    Sum,
    Prod,
    Max,
    Min,
}

/// How scatter combines an update with what is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ScatterMode {
    Assign,
    Add,
    Prod,
    Max,
    Min,
}

/// How the sorting family orders or selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortKind {
    /// Full sort (values).
    Sort,
    /// Full sort (indices, uint32).
    ArgSort,
    /// Partial sort around `kth` (values).
    Partition(usize),
    /// Partial sort around `kth` (indices, uint32).
    ArgPartition(usize),
}

/// Where the data of a lazily loaded array comes from.
pub trait LazySource: Send + Sync + std::fmt::Debug {
    /// Produces the data, laid out row-major.
    fn load(&self) -> crate::error::Result<crate::array::Data>;
}

/// Convolution geometry (spatial axes only).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvParams {
    /// Step of the window over the (dilated, padded) input.
    pub stride: Vec<usize>,
    /// Zero padding before each spatial axis.
    pub padding_lo: Vec<usize>,
    /// Zero padding after each spatial axis.
    pub padding_hi: Vec<usize>,
    /// Spacing of kernel taps.
    pub kernel_dilation: Vec<usize>,
    /// Spacing of input elements (a transposed convolution dilates its input).
    pub input_dilation: Vec<usize>,
    /// Channel groups.
    pub groups: usize,
    /// Correlate with the spatially flipped kernel (true convolution).
    pub flip: bool,
}

/// The mask of scaled dot-product attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMask {
    /// No mask.
    None,
    /// Query i sees keys up to i + S − L (aligned to the end of the keys); L ≤ S
    /// (`scaled_dot_product_attention` computes the queries that see no key apart).
    Causal,
    /// An extra input array: additive (float) or keep/drop (bool).
    Array,
}

/// The quantization formats of MLX (`mode=` in `mlx.core.quantize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantMode {
    /// Per-group scale and bias in the weights' dtype; unsigned integers of 1-8 bits.
    Affine,
    /// OCP microscaling FP4 (E2M1 elements), a power-of-two (E8M0) scale per 32.
    Mxfp4,
    /// NVIDIA FP4 (E2M1 elements), an FP8 (E4M3) scale per 16.
    Nvfp4,
    /// OCP microscaling FP8 (E4M3 elements), a power-of-two (E8M0) scale per 32.
    Mxfp8,
}

/// How a quantized matrix is stored: `group_size` consecutive elements of a row share a
/// scale (and, in affine mode, a bias); each element takes `bits` bits, packed little-endian
/// into uint32 words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantParams {
    /// Elements per scale.
    pub group_size: usize,
    /// Bits per element.
    pub bits: usize,
    /// The format.
    pub mode: QuantMode,
}

/// Which quantized computation an [`Op::Quantized`] node performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantOp {
    /// One output of quantizing input 0 (quantization has three outputs; a node holds one).
    Quantize(QuantPart),
    /// The float matrix of inputs packed, scales and (affine) biases.
    Dequantize,
    /// `x @ dequantize(w)ᵀ` (or without the transpose): inputs x, packed, scales, (biases).
    Matmul {
        /// Multiply by the transpose of the stored matrix (rows are output features).
        transpose: bool,
    },
    /// Matmul of gathered matrices: inputs x, packed, scales, (biases), lhs and rhs indices
    /// (uint32, broadcast to one shape) into the flattened batch axes of x and of w.
    GatherMatmul {
        /// As in `Matmul`.
        transpose: bool,
        /// The caller promises sorted rhs indices (a hint).
        sorted: bool,
    },
}

/// The outputs of quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantPart {
    /// The packed elements (uint32).
    Packed,
    /// The per-group scales.
    Scales,
    /// The per-group biases (affine mode).
    Biases,
}

/// A primitive op. Shapes and dtypes of the output live on the node; parameters live here.
#[derive(Clone, Debug)]
pub enum Op {
    /// `start + i * step` along a single axis.
    Arange {
        /// First value.
        start: f64,
        /// Step between values.
        step: f64,
    },
    /// Elementwise function of one input.
    Unary(UnaryOp),
    /// Elementwise function of two inputs (broadcast together to the output shape).
    Binary(BinaryOp),
    /// `where(cond, x, y)`: inputs cond, x, y broadcast together to the output shape.
    Select,
    /// Converts to the output dtype.
    AsType,
    /// Reinterprets the bytes as the output dtype (same total size of the last axis).
    BitCast,
    /// Broadcasts the input to the output shape (a view).
    Broadcast,
    /// Permutes the axes (a view).
    Transpose(Vec<usize>),
    /// Reshapes: a view where the strides allow, else a copy.
    Reshape,
    /// A strided window: element i on each axis is `start + i * step` (a view).
    Slice {
        /// First index on each axis.
        start: Vec<usize>,
        /// Step on each axis (may be negative).
        step: Vec<isize>,
    },
    /// An arbitrary strided view of the input's data.
    AsStrided {
        /// Strides in elements.
        strides: Vec<isize>,
        /// Offset in elements from the input's first element.
        offset: usize,
    },
    /// A row-major copy.
    Copy,
    /// The input unchanged, but opaque to differentiation.
    StopGradient,
    /// Reduction over `axes` (kept as size 1 in the output).
    Reduce {
        /// What to reduce with.
        op: ReduceOp,
        /// Axes to reduce.
        axes: Vec<usize>,
    },
    /// Index of the max/min along `axis` (kept as size 1), uint32.
    ArgReduce {
        /// Max or min.
        op: ArgReduceOp,
        /// The axis.
        axis: usize,
    },
    /// Cumulative reduction along `axis`.
    Scan {
        /// What to accumulate.
        op: ScanOp,
        /// The axis.
        axis: usize,
        /// Accumulate from the end.
        reverse: bool,
        /// Include the element itself (else the identity comes first).
        inclusive: bool,
    },
    /// `alpha * a @ b + beta * c`: inputs a, b and, when beta is not 0, c (broadcast to the output).
    Matmul {
        /// Scale of the product.
        alpha: f64,
        /// Scale of the addend.
        beta: f64,
    },
    /// [`Op::Matmul`] with the work of its producer and consumer joined in: `a` is computed
    /// from the first inputs by `prologue` (else it is input 0), followed by b (with
    /// `quantized`, the packed matrix, its scales and, if affine, biases) and, when beta is not
    /// 0, c; `epilogue` (if any) maps the product to the output. Never built by an op:
    /// evaluation makes it from producers whose only reader is the product and consumers that
    /// alone read it (`backend::plan`: on a GPU stream, and for quantized products on the
    /// CPU), so a decode step's matrix-vector product normalizes its own input, adds the
    /// residual, or (GPU) applies SwiGLU to its own output, instead of a kernel of its own
    /// writing a few kilobytes for the next.
    JoinedMatmul {
        /// How `a` is computed, if it is.
        prologue: Option<Prologue>,
        /// What the output is made of the product, if not the product.
        epilogue: Option<Epilogue>,
        /// Scale of the product.
        alpha: f64,
        /// Scale of the addend.
        beta: f64,
        /// The right operand is a quantized matrix of this format, stored `[N, K]` as a
        /// Linear layer keeps it: the product is `a @ dequantize(w)ᵀ` ([`QuantOp::Matmul`] with
        /// the transpose; alpha is then 1).
        quantized: Option<QuantParams>,
    },
    /// [`Op::Rope`] over one position that also writes a KV cache in place. Never built by an
    /// op: evaluation makes it on a GPU stream from a decode step's rope and the
    /// `put_along_axis` writes of its keys (and values) at the rope's position into caches
    /// nothing else holds (`backend::plan`), so one kernel does the work of three. Inputs:
    /// rope's (x `[B, H, 1, D]`, the offset, the frequencies if `freqs`), the key cache `[B,
    /// Hk, S, D]`, then, with `values_from`, the source of the value rows `[B, H', 1, D]` and
    /// the value cache. Rotated heads `keys_from..keys_from + Hk` go to the key cache, source
    /// heads `values_from..values_from + Hk` to the value cache, at position `offset`
    /// (wrapped as `put_along_axis` wraps it). The output is rope's.
    RopeWrite {
        /// How many leading features rotate.
        dims: usize,
        /// Rotate consecutive pairs (else the two halves).
        traditional: bool,
        /// Frequency base (unused with custom frequencies).
        base: f32,
        /// Position scale.
        scale: f32,
        /// Custom frequencies are input 2.
        freqs: bool,
        /// The first rotated head that goes to the key cache.
        keys_from: usize,
        /// The first source head that goes to the value cache, if values are written.
        values_from: Option<usize>,
    },
    /// Input 0 as it is: a buffer an earlier op of the same evaluation wrote in place (a KV
    /// cache an [`Op::RopeWrite`] wrote, standing for its `put_along_axis`). Made only by
    /// evaluation's plan, as `RopeWrite` is.
    Written,
    /// Matmul of gathered matrices (`gather_mm`): inputs a [..., M, K], b [..., K, N] and
    /// lhs / rhs indices (uint32, one shape) into the flattened batch axes of a and of b;
    /// output [index shape..., M, N], entry i being `a[lhs[i]] @ b[rhs[i]]`.
    GatherMm {
        /// The caller promises sorted rhs indices (a hint; results never depend on it).
        sorted: bool,
    },
    /// Joins the inputs along `axis`.
    Concatenate(usize),
    /// Writes `update` (input 1) into a copy of input 0 at a strided window.
    SliceUpdate {
        /// First index on each axis.
        start: Vec<usize>,
        /// Step on each axis.
        step: Vec<isize>,
    },
    /// NumPy fancy indexing: inputs a, then one index array per axis in `axes` (broadcast
    /// together). Output: index shape + `slice_sizes`.
    Gather {
        /// Axes the index arrays index.
        axes: Vec<usize>,
        /// Size of the slice taken at each index (1 on indexed axes).
        slice_sizes: Vec<usize>,
    },
    /// Inverse of Gather: inputs a, updates, index arrays. Updates have shape index shape +
    /// slice shape.
    Scatter {
        /// Axes the index arrays index.
        axes: Vec<usize>,
        /// How updates combine.
        mode: ScatterMode,
    },
    /// `take_along_axis`: inputs a and indices (same rank, broadcast except along axis).
    TakeAlongAxis(usize),
    /// `put_along_axis` / scatter along an axis: inputs a, indices, values.
    PutAlongAxis {
        /// The axis.
        axis: usize,
        /// How values combine.
        mode: ScatterMode,
    },
    /// Sort, argsort, partition or argpartition along an axis.
    Sort {
        /// Which of the four.
        kind: SortKind,
        /// The axis.
        axis: usize,
    },
    /// Random bits from a key (input 0, uint32 of shape [2]), Threefry-2x32, counter based.
    RandomBits,
    /// Softmax along the last axis.
    Softmax {
        /// Compute in float32 for half-precision inputs.
        precise: bool,
    },
    /// log(sum(exp(x))) along the last axis, stable (output keeps the axis as size 1).
    LogSumExp,
    /// RMS normalization over the last axis: inputs x and, optionally, weight.
    RmsNorm {
        /// Added to the mean square.
        eps: f32,
        /// A weight input is present.
        weight: bool,
    },
    /// Layer normalization over the last axis: inputs x, then optional weight and bias.
    LayerNorm {
        /// Added to the variance.
        eps: f32,
        /// A weight input is present.
        weight: bool,
        /// A bias input is present.
        bias: bool,
    },
    /// The input gradient of `rms_norm` (`centered` false) or `layer_norm` (`centered` true)
    /// over the last axis, one pass per row: inputs x, the weight if present, and the
    /// cotangent of the output (shaped like x); the output is shaped like x. The weight's and
    /// bias's gradients are ordinary reductions.
    NormVjp {
        /// Added to the mean square / variance.
        eps: f32,
        /// A weight input is present.
        weight: bool,
        /// Layer norm (subtract the mean) rather than RMS norm.
        centered: bool,
    },
    /// Rotary position embedding on the last axis of x (input 0; positions along axis -2).
    /// Input 1 is the position offset (int32 scalar); input 2, if present, custom frequencies.
    Rope {
        /// How many leading features rotate.
        dims: usize,
        /// Rotate consecutive pairs (else the two halves).
        traditional: bool,
        /// Frequency base (unused with custom frequencies).
        base: f32,
        /// Position scale.
        scale: f32,
        /// Custom frequencies are input 2.
        freqs: bool,
    },
    /// softmax(q kᵀ · scale + mask) v over inputs q [B, Hq, L, D], k and v [B, Hkv, S, D],
    /// and the mask array if `mask` is `Array`.
    Attention {
        /// Scale of the scores.
        scale: f32,
        /// Which mask.
        mask: AttentionMask,
    },
    /// The gradients of [`Op::Attention`] with these parameters: inputs q, k, v, the mask
    /// array if `mask` is `Array`, and the cotangent of the attention's output; the output is
    /// dq, dk and dv flattened one after the other.
    AttentionVjp {
        /// Scale of the scores.
        scale: f32,
        /// Which mask.
        mask: AttentionMask,
    },
    /// General convolution: inputs x [N, spatial..., Cin] and w [Cout, kernel..., Cin/groups].
    Conv(ConvParams),
    /// Quantization, dequantization and matrix products with quantized matrices.
    Quantized {
        /// The computation.
        op: QuantOp,
        /// The storage format.
        params: QuantParams,
    },
    /// Data produced by a loader when first needed (memory-mapped files).
    Load(Arc<dyn LazySource>),
    /// A chain of elementwise ops fused by `compile`, evaluated in cache-sized tiles.
    Fused(Arc<FusedGraph>),
    /// Output `output` of a checkpointed function: the last input passed through; the other
    /// inputs are the function's inputs, from which reverse mode recomputes it.
    Checkpoint(Arc<CheckpointFn>),
}

/// How an [`Op::JoinedMatmul`] computes its left operand.
#[derive(Clone, Debug)]
pub enum Prologue {
    /// `rms_norm(x, weight, eps)` over the last axis: inputs x and, if `weight`, the weight.
    RmsNorm {
        /// Added to the mean square.
        eps: f32,
        /// A weight input is present.
        weight: bool,
    },
}

impl Prologue {
    /// How many of the node's inputs are the prologue's (the ones before b; without a
    /// prologue, a alone).
    pub fn inputs(&self) -> usize {
        match self {
            Prologue::RmsNorm { weight, .. } => 1 + *weight as usize,
        }
    }
}

/// What an [`Op::JoinedMatmul`] makes of its product.
#[derive(Clone, Debug)]
pub enum Epilogue {
    /// `compile`'s elementwise program of two inputs over the product's two halves of columns
    /// (the output has half the columns): a SwiGLU block's `silu(gate) · up` over a joined
    /// gate/up projection.
    Halves {
        /// The program.
        graph: Arc<FusedGraph>,
        /// The program's first input is the lower half (else the upper).
        lower_first: bool,
    },
    /// A decode step's rope and KV-cache writes over the product's output seen as heads
    /// `[B, H, 1, D]` (one position: the product's `H · D` columns): this [`Op::RopeWrite`]
    /// with the product's heads as both its x (the leading ones) and its value rows' source.
    /// The output is the op's; the inputs after the product's are the op's own after x and the
    /// source: the offset, the frequencies if any, the key cache, the value cache if it
    /// writes values.
    Rope(Box<Op>),
}

/// A function of arrays to arrays, shareable across threads (what `checkpoint` wraps).
pub type ArrayFn = Arc<dyn Fn(&[crate::array::Array]) -> crate::error::Result<Vec<crate::array::Array>> + Send + Sync>;

/// The function a [`Op::Checkpoint`] node recomputes in reverse mode.
pub struct CheckpointFn {
    /// The checkpointed function.
    pub f: ArrayFn,
    /// Which of its outputs the node is.
    pub output: usize,
}

impl std::fmt::Debug for CheckpointFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckpointFn({:p}, output {})", Arc::as_ptr(&self.f), self.output)
    }
}

/// Where a step of a [`FusedGraph`] takes an operand from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedSlot {
    /// Input `i` of the fused node.
    Input(usize),
    /// The result of step `i`.
    Step(usize),
}

/// The program of a fused node: steps in dependency order, each an elementwise primitive
/// (unary, binary, select, astype) over earlier steps or the node's inputs, of the shape the
/// inputs broadcast to; the last step is the result. The last step may instead be a
/// [`Op::Reduce`] of the step before it (an elementwise prologue feeding a reduction), which
/// then gives the node's shape.
#[derive(Debug)]
pub struct FusedGraph {
    /// `(op, operands, output dtype)` of each step.
    pub steps: Vec<(Op, Vec<FusedSlot>, crate::dtype::Dtype)>,
}

impl FusedGraph {
    /// The reduction that ends the program, if it ends in one: its op and axes.
    pub fn reduction(&self) -> Option<(ReduceOp, &[usize])> {
        match self.steps.last() {
            Some((Op::Reduce { op, axes }, _, _)) => Some((*op, axes)),
            _ => None,
        }
    }

    /// The elementwise part of a program that ends in a reduction (all but its last step).
    pub fn prologue(&self) -> FusedGraph {
        FusedGraph { steps: self.steps[..self.steps.len() - 1].to_vec() }
    }

    /// The shape of the node over inputs of `input_shapes`: the shape they broadcast to, with
    /// the reduced axes (if any) kept as size 1.
    pub fn output_shape(&self, input_shapes: &[&[usize]]) -> crate::error::Result<Vec<usize>> {
        let mut shape = crate::shape::broadcast_shapes(input_shapes, "fused")?;
        if let Some((_, axes)) = self.reduction() {
            for &a in axes {
                shape[a] = 1;
            }
        }
        Ok(shape)
    }

    /// Records the program as ordinary (unfused) ops over `inputs`, one array per step.
    pub fn expand(&self, inputs: &[crate::array::Array]) -> crate::error::Result<Vec<crate::array::Array>> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|a| a.shape()).collect();
        let full = crate::shape::broadcast_shapes(&shapes, "fused")?;
        let mut vals: Vec<crate::array::Array> = Vec::with_capacity(self.steps.len());
        for (op, slots, dtype) in &self.steps {
            let ins: Vec<crate::array::Array> = slots
                .iter()
                .map(|s| match *s {
                    FusedSlot::Input(i) => inputs[i].clone(),
                    FusedSlot::Step(i) => vals[i].clone(),
                })
                .collect();
            let shape = match op {
                Op::Reduce { axes, .. } => {
                    let mut s = ins[0].shape().to_vec();
                    axes.iter().for_each(|&a| s[a] = 1);
                    s
                }
                _ => full.clone(),
            };
            vals.push(crate::array::Array::from_op(shape, *dtype, op.clone(), ins));
        }
        Ok(vals)
    }
}
