//! Elementwise kernels (unary, binary, select, astype) and copies, over strided and
//! broadcast inputs; the output is always a fresh row-major array.

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{BinaryOp, UnaryOp};
use crate::shape::{broadcast_strides, reshape_strides};

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::layout::{ctype, launch, launch_overlapped_1d, Arg, Layout};

/// The elementwise kernels and the functions they compute with (also the fused kernels').
pub(super) const SRC: &str = include_str!("kernels/elementwise.cu");
const BLOCK: u32 = 256;

/// How the unary kernel of an op computes on element type `t`.
pub(super) enum UnaryKernel {
    /// `from_acc(f(to_acc(x)))` with `f` a function of elementwise.cu on the compute type.
    Func(&'static str),
    /// A bool from an expression of `x`, the value as f64.
    Predicate(&'static str),
    /// The value itself (integer floor, ceil and round).
    Identity,
}

/// The unary kernel of `op` for element type `t`, or `None` if there is none.
pub(super) fn unary_kernel(op: UnaryOp, t: Dtype) -> Option<UnaryKernel> {
    use UnaryKernel::*;
    use UnaryOp::*;
    let float = t.is_float();
    let math = match op {
        IsNan => return Some(Predicate("x != x")),
        IsInf => return Some(Predicate("x == 1.0 / 0.0 || x == -1.0 / 0.0")),
        IsFinite => return Some(Predicate("x - x == 0.0")),
        LogicalNot => return Some(Predicate("x == 0.0")),
        Abs => return Some(Func("op_Abs")),
        Negative => return Some(Func("op_Negative")),
        Sign => return Some(Func("op_Sign")),
        Square => return Some(Func(if float { "op_Square" } else { "op_ISquare" })),
        BitwiseInvert => return (!float).then_some(Func("op_BitwiseInvert")),
        Floor | Ceil | Round if !float => return Some(Identity),
        Exp => "op_Exp",
        Expm1 => "op_Expm1",
        Log => "op_Log",
        Log1p => "op_Log1p",
        Log2 => "op_Log2",
        Log10 => "op_Log10",
        Sqrt => "op_Sqrt",
        Rsqrt => "op_Rsqrt",
        Reciprocal => "op_Reciprocal",
        Sin => "op_Sin",
        Cos => "op_Cos",
        Tan => "op_Tan",
        ArcSin => "op_ArcSin",
        ArcCos => "op_ArcCos",
        ArcTan => "op_ArcTan",
        Sinh => "op_Sinh",
        Cosh => "op_Cosh",
        Tanh => "op_Tanh",
        ArcSinh => "op_ArcSinh",
        ArcCosh => "op_ArcCosh",
        ArcTanh => "op_ArcTanh",
        Sigmoid => "op_Sigmoid",
        Erf => "op_Erf",
        ErfInv => "op_ErfInv",
        Floor => "op_Floor",
        Ceil => "op_Ceil",
        Round => "op_Round",
    };
    // The rest are float math.
    float.then_some(Func(math))
}

const ARITH: [&str; 11] = [
    "Add",
    "Subtract",
    "Multiply",
    "Divide",
    "FloorDivide",
    "Remainder",
    "Power",
    "Maximum",
    "Minimum",
    "LogAddExp",
    "ArcTan2",
];
const INT_ARITH: [&str; 5] = ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "LeftShift", "RightShift"];
const COMPARE: [&str; 8] =
    ["Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual", "LogicalAnd", "LogicalOr"];

/// Whether `op` has a binary kernel for element type `t`: `Some(true)` for a comparison
/// (bool output), `Some(false)` for arithmetic, `None` if it has none.
pub(super) fn binary_kernel(op: BinaryOp, t: Dtype) -> Option<bool> {
    let name = format!("{op:?}");
    if COMPARE.contains(&name.as_str()) {
        Some(true)
    } else {
        (ARITH.contains(&name.as_str()) || (!t.is_float() && INT_ARITH.contains(&name.as_str()))).then_some(false)
    }
}

/// The source of one family's kernels for element type `t`.
fn source(family: &str, t: Dtype) -> String {
    let mut s = format!("{COMMON}\n#define T {}\n{SRC}\n", ctype(t));
    let float = t.is_float();
    match family {
        "unary" => {
            // The "unary" module of a dtype instantiates every op unary_kernel takes for it.
            for op in UnaryOp::ALL {
                match unary_kernel(op, t) {
                    Some(UnaryKernel::Func(f)) => s += &format!("UNARY({op:?}, {f})\n"),
                    Some(UnaryKernel::Predicate(e)) => s += &format!("PREDICATE({op:?}, {e})\n"),
                    Some(UnaryKernel::Identity) => s += &format!("IDENTITY({op:?})\n"),
                    None => {}
                }
            }
        }
        "binary" => {
            for op in ARITH {
                s += &format!("ARITH({op})\n");
            }
            if !float {
                for op in INT_ARITH {
                    s += &format!("ARITH({op})\n");
                }
            }
            for op in COMPARE {
                s += &format!("COMPARE({op})\n");
            }
        }
        "cast" => {
            for d in Dtype::ALL {
                s += &format!("CAST({})\n", ctype(d));
            }
        }
        _ => {} // "copy": select and copy need no instantiation
    }
    s
}

/// Runs kernel `name` of `family` for element type `t`: output address first, then inputs,
/// then the layout; `runs`: whether the kernel takes runs of elements ([`Layout::threads`]).
fn run(g: &Gpu, family: &str, t: Dtype, name: &str, ptrs: &[u64], layout: &Layout, runs: bool) -> Result<()> {
    if layout.n() == 0 {
        return Ok(());
    }
    let f = g.function(&format!("{family} {}", ctype(t)), name, || source(family, t))?;
    let mut args: Vec<Arg> = ptrs.iter().map(|&p| Arg::U64(p)).collect();
    args.push(Arg::Layout(layout));
    launch_overlapped_1d(g, &f, g.grid(layout.threads(runs), BLOCK), BLOCK, &args)
}

/// Device address and broadcast strides of input `x` viewed as `shape`.
fn operand(g: &Gpu, x: &Array, shape: &[usize]) -> Result<(u64, Vec<isize>)> {
    let d = x.data()?;
    let ptr = device_ptr(g, &d, x.dtype())?;
    Ok((ptr, broadcast_strides(x.shape(), &d.strides, shape)))
}

/// A unary op; `None` for an op the kernels lack for this dtype or too many axes.
pub(crate) fn unary(g: &Gpu, op: UnaryOp, x: &Array, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let name = format!("{op:?}");
    let t = x.dtype();
    let Some(kernel) = unary_kernel(op, t) else { return Ok(None) };
    if !matches!(kernel, UnaryKernel::Predicate(_)) && dtype != t {
        return Ok(None);
    }
    let (ip, is) = operand(g, x, shape)?;
    let Some(layout) = Layout::new(shape, &[is]) else { return Ok(None) };
    let (out, op_) = alloc_out(shape, dtype)?;
    let runs = matches!(kernel, UnaryKernel::Func(_));
    run(g, "unary", t, &format!("unary_{name}"), &[op_, ip], &layout, runs)?;
    Ok(Some(out))
}

/// A binary op over inputs of one dtype (output: that dtype, or bool for comparisons).
pub(crate) fn binary(
    g: &Gpu,
    op: BinaryOp,
    a: &Array,
    b: &Array,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let name = format!("{op:?}");
    let t = a.dtype();
    let Some(compare) = binary_kernel(op, t) else { return Ok(None) };
    if b.dtype() != t {
        return Ok(None);
    }
    let (pa, sa) = operand(g, a, shape)?;
    let (pb, sb) = operand(g, b, shape)?;
    let Some(layout) = Layout::new(shape, &[sa, sb]) else { return Ok(None) };
    let (out, po) = alloc_out(shape, dtype)?;
    run(g, "binary", t, &format!("binary_{name}"), &[po, pa, pb], &layout, !compare)?;
    Ok(Some(out))
}

/// `where(cond, x, y)`.
pub(crate) fn select(g: &Gpu, c: &Array, x: &Array, y: &Array, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    if c.dtype() != Dtype::Bool || x.dtype() != dtype || y.dtype() != dtype {
        return Ok(None);
    }
    let (pc, sc) = operand(g, c, shape)?;
    let (px, sx) = operand(g, x, shape)?;
    let (py, sy) = operand(g, y, shape)?;
    let Some(layout) = Layout::new(shape, &[sc, sx, sy]) else { return Ok(None) };
    let (out, po) = alloc_out(shape, dtype)?;
    run(g, "copy", dtype, "select", &[po, pc, px, py], &layout, false)?;
    Ok(Some(out))
}

/// Converts `x` to `dtype` (row-major output).
pub(crate) fn astype(g: &Gpu, x: &Array, dtype: Dtype) -> Result<Option<Data>> {
    let shape = x.shape();
    let (ip, is) = operand(g, x, shape)?;
    let Some(layout) = Layout::new(shape, &[is]) else { return Ok(None) };
    let (out, po) = alloc_out(shape, dtype)?;
    run(g, "cast", x.dtype(), &format!("cast_{}", ctype(dtype)), &[po, ip], &layout, false)?;
    Ok(Some(out))
}

/// `x` converted to `dtype` on the device, as a new array (for kernels that take one dtype
/// where an op's inputs may have another); `None` past the kernels' axis limit.
pub(crate) fn astype_array(g: &Gpu, x: &Array, dtype: Dtype) -> Result<Option<Array>> {
    Ok(astype(g, x, dtype)?.map(|d| Array::from_data(x.shape().to_vec(), dtype, d)))
}

/// The unsigned type of a dtype's size: copies move bits.
pub(crate) fn bits_type(d: Dtype) -> Dtype {
    match d.size() {
        1 => Dtype::U8,
        2 => Dtype::U16,
        4 => Dtype::U32,
        _ => Dtype::U64,
    }
}

/// A row-major copy of `x` (the data itself if it already is one, as on the CPU). Falls back
/// to the CPU past the kernels' axis limit.
pub(crate) fn copy(g: &Gpu, x: &Array) -> Result<Data> {
    let d = x.data()?;
    let shape = x.shape();
    if d.is_row_contiguous(shape) && d.offset == 0 && d.buffer.nbytes() == x.nbytes() {
        return Ok(d);
    }
    let ip = device_ptr(g, &d, x.dtype())?;
    let (out, po) = alloc_out(shape, x.dtype())?;
    if !copy_strided(g, ip, &d.strides, shape, x.dtype(), po)? {
        return crate::backend::fallback::run(&crate::primitives::Op::Copy, std::slice::from_ref(x), shape, x.dtype());
    }
    Ok(out)
}

/// Copies the strided view at `src` (element strides `strides` over `shape`) to the row-major
/// array at `dst`; false (nothing done) past the kernels' axis limit.
pub(crate) fn copy_strided(
    g: &Gpu,
    src: u64,
    strides: &[isize],
    shape: &[usize],
    dtype: Dtype,
    dst: u64,
) -> Result<bool> {
    copy_view(g, src, strides, shape, dtype, dst, &row_major_strides(shape))
}

/// Copies the strided view at `src` to the strided view at `dst` (element strides over
/// `shape`; the destination's elements distinct); false (nothing done) past the kernels'
/// axis limit.
pub(crate) fn copy_view(
    g: &Gpu,
    src: u64,
    src_strides: &[isize],
    shape: &[usize],
    dtype: Dtype,
    dst: u64,
    dst_strides: &[isize],
) -> Result<bool> {
    let Some(layout) = Layout::new(shape, &[src_strides.to_vec(), dst_strides.to_vec()]) else { return Ok(false) };
    run(g, "copy", bits_type(dtype), "copy", &[dst, src], &layout, true)?;
    Ok(true)
}

/// Runs kernel `name` of the copy family (module `copy <dtype>`) over `n` items with `args`.
pub(crate) fn run_copy_family(g: &Gpu, t: Dtype, name: &str, n: usize, args: &[Arg]) -> Result<()> {
    let f = g.function(&format!("copy {}", ctype(t)), name, || source("copy", t))?;
    launch(g, &f, g.grid(n, BLOCK), BLOCK, args)
}

/// Reshape: a view where the strides allow, else a copy.
pub(crate) fn reshape(g: &Gpu, x: &Array, shape: &[usize]) -> Result<Data> {
    let d = x.data()?;
    match reshape_strides(x.shape(), &d.strides, shape) {
        Some(st) => Ok(Data { buffer: d.buffer.clone(), offset: d.offset, strides: st }),
        None => Ok(Data { strides: row_major_strides(shape), ..copy(g, x)? }),
    }
}

/// Reinterprets the bytes of `x` as `dtype` (a view, after a copy if `x` is not contiguous).
pub(crate) fn bitcast(g: &Gpu, x: &Array, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let d = x.data()?;
    let (si, so) = (x.dtype().size(), dtype.size());
    if si == so {
        return Ok(Some(d));
    }
    let d = if d.is_row_contiguous(x.shape()) && (d.offset * si) % so == 0 { d } else { copy(g, x)? };
    Ok(Some(Data { buffer: d.buffer.clone(), offset: d.offset * si / so, strides: row_major_strides(shape) }))
}
