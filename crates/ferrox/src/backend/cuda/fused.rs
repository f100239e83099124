//! `compile`'s fused programs ([`Op::Fused`]) on the GPU: one kernel generated from the
//! program, compiled by NVRTC and cached like every other kernel, that reads each input once
//! (strided and broadcast) and writes only the result.
//!
//! Each step keeps its value in its own dtype and computes exactly as the unfused kernel of
//! its op does (elementwise.cu's functions, the same conversions), so the fused result is bit
//! for bit that of the unfused ops. A program ending in a reduction runs its elementwise part
//! fused, then the reduction kernel. A program the generator cannot take — more than four
//! inputs, or a step with no GPU kernel — runs step by step through the backend's kernels.

use std::fmt::Write;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::{BinaryOp, FusedGraph, FusedSlot, Op, UnaryOp};
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr};
use super::context::Gpu;
use super::elementwise::{binary_kernel, unary_kernel, UnaryKernel, SRC as ELEMENTWISE};
use super::layout::{ctype, launch_overlapped_1d, Arg, Layout};

const BLOCK: u32 = 256;
/// The most inputs a generated kernel reads (the operands of one [`Layout`]).
const MAX_INPUTS: usize = 4;

/// Evaluates the fused program `graph` over `inputs` into `shape` and `dtype` on the GPU.
pub(crate) fn fused(
    g: &Gpu,
    ordinal: usize,
    graph: &FusedGraph,
    inputs: &[Array],
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    if let Some((op, axes)) = graph.reduction() {
        let prologue = graph.prologue();
        let (_, _, pdt) = &prologue.steps[prologue.steps.len() - 1];
        let full = crate::shape::broadcast_shapes(&inputs.iter().map(|a| a.shape()).collect::<Vec<_>>(), "fused")?;
        let Some(d) = fused(g, ordinal, &prologue, inputs, &full, *pdt)? else { return Ok(None) };
        let x = Array::from_data(full, *pdt, d);
        return super::reduce::reduce(g, op, &x, axes, shape, dtype);
    }
    if let Some(body) = kernel_body(graph, inputs) {
        return generated(g, &body, inputs, shape, dtype);
    }
    step_by_step(ordinal, graph, inputs, shape)
}

/// The generated kernel's body (its loop over output elements), or `None` if a step has no
/// GPU kernel or there are too many inputs.
fn kernel_body(graph: &FusedGraph, inputs: &[Array]) -> Option<String> {
    if inputs.len() > MAX_INPUTS {
        return None;
    }
    let steps = element_steps(graph, &inputs.iter().map(|a| a.dtype()).collect::<Vec<_>>())?;
    let last = graph.steps.len() - 1;
    let n = inputs.len();
    // Rows whose last axis is unit-stride or broadcast in every input: a run of ELEMS
    // elements a thread, each input's run loaded before any is used (common.cuh, rows_fit,
    // load_run / store_run); else one element a thread.
    let t_out = ctype(graph.steps[last].2);
    let mut b = format!("  if (rows_fit<{n}>(l)) {{\n    GRID_LOOP(q, l.n / ELEMS) {{\n      i64 o[{n}];\n");
    let _ = writeln!(b, "      offsets<{n}>(l, q * ELEMS, o);");
    for (i, x) in inputs.iter().enumerate() {
        let t = ctype(x.dtype());
        let _ = writeln!(b, "      const Run<{t}> v{i} = load_run(in{i} + o[{i}], last_stride(l, {i}));");
    }
    let _ = writeln!(b, "      Run<{t_out}> r;\n#pragma unroll\n      for (int u = 0; u < ELEMS; ++u) {{");
    for (i, x) in inputs.iter().enumerate() {
        let _ = writeln!(b, "      const {t} x{i} = v{i}.v[u];", t = ctype(x.dtype()));
    }
    let _ = write!(
        b,
        "{steps}      r.v[u] = s{last};\n      }}\n      store_run(out + q * ELEMS, r);\n    }}\n    return;\n  }}\n"
    );
    let _ = write!(b, "  GRID_LOOP(i, l.n) {{\n    i64 o[{n}];\n    offsets<{n}>(l, i, o);\n");
    for (i, x) in inputs.iter().enumerate() {
        let _ = writeln!(b, "    const {t} x{i} = in{i}[o[{i}]];", t = ctype(x.dtype()));
    }
    let _ = write!(b, "{steps}    out[i] = s{last};\n  }}\n");
    Some(b)
}

/// The steps of `graph` on one element's inputs x0, x1, ... (of dtypes `inputs`): lines
/// computing s0, s1, ..., the last one the result; `None` if a step has no GPU kernel.
fn element_steps(graph: &FusedGraph, inputs: &[Dtype]) -> Option<String> {
    let dt = |s: &FusedSlot, steps: &[(Op, Vec<FusedSlot>, Dtype)]| match *s {
        FusedSlot::Input(i) => inputs[i],
        FusedSlot::Step(i) => steps[i].2,
    };
    let name = |s: &FusedSlot| match *s {
        FusedSlot::Input(i) => format!("x{i}"),
        FusedSlot::Step(i) => format!("s{i}"),
    };
    let mut steps = String::new();
    for (k, (op, slots, out)) in graph.steps.iter().enumerate() {
        let src = dt(&slots[0], &graph.steps);
        let expr = match op {
            Op::Unary(u) => unary_expr(*u, src, *out, &name(&slots[0]))?,
            Op::Binary(bop) => {
                if dt(&slots[1], &graph.steps) != src {
                    return None;
                }
                binary_expr(*bop, src, *out, &name(&slots[0]), &name(&slots[1]))?
            }
            Op::Select => {
                if src != Dtype::Bool || dt(&slots[1], &graph.steps) != *out || dt(&slots[2], &graph.steps) != *out {
                    return None;
                }
                format!("{} ? {} : {}", name(&slots[0]), name(&slots[1]), name(&slots[2]))
            }
            Op::AsType => format!("cast<{}, {}>({})", ctype(src), ctype(*out), name(&slots[0])),
            _ => return None,
        };
        let _ = writeln!(steps, "      const {t} s{k} = {expr};", t = ctype(*out));
    }
    Some(steps)
}

/// `glu_epilogue` of the matrix-vector kernel (gemv.cu, a `GEMV_GLU` module): `graph` (two
/// inputs) over the product's values of its lower and upper halves of columns, the first input
/// the lower one when `lower_first`; `None` where the program has no GPU kernel, ends in a
/// reduction, or its inputs or result are not of `dtype` (the product's).
pub(crate) fn glu_source(graph: &FusedGraph, lower_first: bool, dtype: Dtype) -> Option<String> {
    if graph.steps.last().map(|s| s.2) != Some(dtype) || graph.reduction().is_some() {
        return None;
    }
    let dtypes = [dtype, dtype];
    let steps = element_steps(graph, &dtypes)?;
    let t = ctype(dtype);
    let (x0, x1) = if lower_first { ("lower", "upper") } else { ("upper", "lower") };
    Some(format!(
        "__device__ {t} glu_epilogue({t} lower, {t} upper) {{\n      const {t} x0 = {x0};\n      const {t} x1 = {x1};\n{steps}  return s{};\n}}\n",
        graph.steps.len() - 1
    ))
}

/// A unary step on value `v` of dtype `src` as the unfused kernel computes it, or `None` if
/// there is none.
fn unary_expr(op: UnaryOp, src: Dtype, out: Dtype, v: &str) -> Option<String> {
    let t = ctype(src);
    Some(match unary_kernel(op, src)? {
        UnaryKernel::Func(f) if out == src => format!("from_acc<{t}>((acc_t<{t}>){f}(to_acc<{t}>({v})))"),
        UnaryKernel::Predicate(e) if out == Dtype::Bool => {
            format!("[&] {{ double x = to_f64<{t}>({v}); return (bool)({e}); }}()")
        }
        UnaryKernel::Identity if out == src => v.to_string(),
        _ => return None,
    })
}

/// A binary step on values `a` and `b` of dtype `src` as the unfused kernel computes it, or
/// `None` if there is none.
fn binary_expr(op: BinaryOp, src: Dtype, out: Dtype, a: &str, b: &str) -> Option<String> {
    let compare = binary_kernel(op, src)?;
    let t = ctype(src);
    let f = format!("op_{op:?}<acc_t<{t}>>(to_acc<{t}>({a}), to_acc<{t}>({b}))");
    if compare {
        (out == Dtype::Bool).then_some(f)
    } else {
        (out == src).then(|| format!("from_acc<{t}>({f})"))
    }
}

/// Compiles (once) and runs the kernel of `body`.
fn generated(g: &Gpu, body: &str, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let mut datas = Vec::with_capacity(inputs.len());
    let mut strides = Vec::with_capacity(inputs.len());
    for x in inputs {
        let d = x.data()?;
        strides.push(broadcast_strides(x.shape(), &d.strides, shape));
        datas.push(d);
    }
    let Some(layout) = Layout::new(shape, &strides) else { return Ok(None) };
    let (out, po) = alloc_out(shape, dtype)?;
    if layout.n() == 0 {
        return Ok(Some(out));
    }
    let mut signature = format!("{}* __restrict__ out", ctype(dtype));
    for (i, x) in inputs.iter().enumerate() {
        let _ = write!(signature, ", const {}* __restrict__ in{i}", ctype(x.dtype()));
    }
    let module = format!("fused {signature}\n{body}");
    let f = g.function(&module, "fused", || {
        format!(
            "{}\n#define T float\n{ELEMENTWISE}\nextern \"C\" __global__ void fused({signature}, Layout l) {{\nOVERLAPPED_START();\n{body}}}\n",
            super::compile::COMMON
        )
    })?;
    let mut args = vec![Arg::U64(po)];
    for (x, d) in inputs.iter().zip(&datas) {
        args.push(Arg::U64(device_ptr(g, d, x.dtype())?));
    }
    args.push(Arg::Layout(&layout));
    launch_overlapped_1d(g, &f, g.grid(layout.threads(true), BLOCK), BLOCK, &args)?;
    Ok(Some(out))
}

/// The program one step at a time, each through the backend (a GPU kernel, or the CPU where
/// the GPU has none).
fn step_by_step(ordinal: usize, graph: &FusedGraph, inputs: &[Array], shape: &[usize]) -> Result<Option<Data>> {
    let mut vals: Vec<Array> = Vec::with_capacity(graph.steps.len());
    for (op, slots, dtype) in &graph.steps {
        let ins: Vec<Array> = slots
            .iter()
            .map(|s| match *s {
                FusedSlot::Input(i) => inputs[i].clone(),
                FusedSlot::Step(i) => vals[i].clone(),
            })
            .collect();
        let d = super::eval_or_fallback(ordinal, op, &ins, shape, *dtype)?;
        vals.push(Array::from_data(shape.to_vec(), *dtype, d));
    }
    Ok(Some(vals.pop().expect("a fused program has a step").data()?))
}
