//! The fast path for fused programs of float arithmetic in one dtype (f32, f64, bf16 or
//! f16): a block interpreter.
//!
//! The output is walked in blocks of at most [`BLOCK`] elements along its last (collapsed)
//! axis. For each block every step runs one tight loop — a float unary op or binary
//! arithmetic, under the best instruction set — from the inputs (read in place when
//! contiguous, as one value when broadcast along the block, gathered otherwise) or earlier
//! steps' blocks into its own block; the last step writes the output directly. Intermediates
//! never leave the L1/L2 cache, and nothing is allocated per block.
//!
//! Every step computes exactly what the plain kernel computes — the same per-op tables
//! ([`per_float_op!`], [`per_arith_op!`]) under the same dispatched instruction set, in the
//! dtype's compute type (f32 for bf16 and f16) and rounded to the dtype after each step — so
//! the results are bit for bit those of the unfused ops.

use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::element::Element;
use crate::error::Result;
use crate::memory::Buffer;
use crate::primitives::{BinaryOp, FusedGraph, FusedSlot, Op, UnaryOp};

use super::binary::per_arith_op;
use super::iter::{collapse, MutPtr, Ptr};
use super::simd::dispatch;
use super::unary::{per_float_op, per_op, FloatMath};

/// Elements per block: the blocks of a few dozen steps stay in a core's L1/L2 cache, and
/// per-block overhead (a `match` per step) is small against the loop over the block.
const BLOCK: usize = 1024;

/// Below this many elements along the last axis, blocks would be too short to pay for the
/// per-step dispatch; the generic tiled path runs those.
const MIN_ROW: usize = 128;

/// Up to this many output elements the blocks run one after another on the calling thread:
/// waking another thread costs more than a few blocks take (a decode step's SwiGLU, 1 536
/// elements, took ~8 µs split over two threads).
const SERIAL_MAX: usize = 16 * BLOCK;

/// Inputs whose block offsets live on the stack (more take a small allocation per block).
const MAX_INLINE_INPUTS: usize = 16;

/// Whether [`eval`] runs `g`: every step a float unary op or binary arithmetic producing
/// `dtype` (a float) from operands of `dtype`, and the output's rows long enough.
pub fn supports(g: &FusedGraph, inputs: &[Array], shape: &[usize], dtype: Dtype) -> bool {
    use BinaryOp::*;
    use UnaryOp::*;
    if !matches!(dtype, Dtype::F32 | Dtype::F64 | Dtype::Bf16 | Dtype::F16) || shape.last().is_none_or(|&n| n < MIN_ROW)
    {
        return false;
    }
    let arith = |b: BinaryOp| {
        matches!(
            b,
            Add | Subtract
                | Multiply
                | Divide
                | FloorDivide
                | Remainder
                | Power
                | Maximum
                | Minimum
                | LogAddExp
                | ArcTan2
        )
    };
    let steps_ok = g.steps.iter().all(|(op, _, dt)| {
        *dt == dtype
            && match op {
                Op::Unary(u) => !matches!(u, LogicalNot | IsNan | IsInf | IsFinite | BitwiseInvert),
                Op::Binary(b) => arith(*b),
                _ => false,
            }
    });
    steps_ok && inputs.iter().all(|x| x.dtype() == dtype)
}

/// Where a step reads an operand.
#[derive(Clone, Copy)]
enum Src {
    Input(usize),
    Step(usize),
}

/// An operand over one block: a run of values, or one value for the whole block.
#[derive(Clone, Copy)]
enum Operand<'a, T> {
    Run(&'a [T]),
    Splat(T),
}

/// Evaluates the fused program `g` (see [`supports`]) over `inputs` into a row-major output
/// of `shape` and `dtype`.
pub fn eval(g: &FusedGraph, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
    match dtype {
        Dtype::F32 => run::<f32>(g, inputs, shape),
        Dtype::F64 => run::<f64>(g, inputs, shape),
        Dtype::Bf16 => run::<half::bf16>(g, inputs, shape),
        Dtype::F16 => run::<half::f16>(g, inputs, shape),
        _ => unreachable!("fused block interpreter on {dtype}"),
    }
}

fn run<T>(g: &FusedGraph, inputs: &[Array], shape: &[usize]) -> Result<Data>
where
    T: Element + Default + Send + Sync,
    T::Acc: FloatMath,
{
    let size: usize = shape.iter().product();
    let mut buffer = Buffer::alloc(size * std::mem::size_of::<T>())?;
    if size == 0 {
        return Ok(Data::contiguous(buffer, shape));
    }
    let datas: Vec<Data> = inputs.iter().map(|x| x.data()).collect::<Result<_>>()?;
    let ptrs: Vec<Ptr<T>> = datas.iter().map(|d| Ptr(d.ptr::<T>())).collect();
    // Collapse the output with every input's broadcast strides: rows run along the last axis.
    let mut strides: Vec<Vec<isize>> =
        inputs.iter().zip(&datas).map(|(x, d)| crate::shape::broadcast_strides(x.shape(), &d.strides, shape)).collect();
    strides.push(row_major_strides(shape));
    let (cs, cst) = collapse(shape, &strides);
    let inner = *cs.last().unwrap();
    let outer = &cs[..cs.len() - 1];
    let inner_strides: Vec<isize> = cst[..inputs.len()].iter().map(|s| *s.last().unwrap()).collect();
    let steps: Vec<(Op, Src, Src)> = g
        .steps
        .iter()
        .map(|(op, slots, _)| {
            let src = |s: &FusedSlot| match *s {
                FusedSlot::Input(i) => Src::Input(i),
                FusedSlot::Step(i) => Src::Step(i),
            };
            (op.clone(), src(&slots[0]), slots.get(1).map_or(Src::Step(0), src))
        })
        .collect();
    let nsteps = steps.len();
    let n_in = inputs.len();

    let out = MutPtr(buffer.as_bytes_mut().as_mut_ptr() as *mut T);
    let blocks_per_row = inner.div_ceil(BLOCK);
    // Per block: registers for every step, then a gather block for every input.
    let scratch = || vec![T::default(); (nsteps + n_in) * BLOCK];
    let body = |scratch: &mut Vec<T>, blk: usize| {
        let (row, c0) = (blk / blocks_per_row, (blk % blocks_per_row) * BLOCK);
        let len = BLOCK.min(inner - c0);
        // SAFETY: blocks cover disjoint ranges of the `size`-element output.
        let out_blk = unsafe { std::slice::from_raw_parts_mut(out.get().add(row * inner + c0), len) };
        // Each input's element offset at the start of this block.
        let mut base = [0isize; MAX_INLINE_INPUTS];
        let mut base_vec;
        let base: &mut [isize] = if n_in <= MAX_INLINE_INPUTS {
            &mut base[..n_in]
        } else {
            base_vec = vec![0isize; n_in];
            &mut base_vec
        };
        let mut rest = row;
        for ax in (0..outer.len()).rev() {
            let i = (rest % outer[ax]) as isize;
            rest /= outer[ax];
            for (b, s) in base.iter_mut().zip(&cst) {
                *b += i * s[ax];
            }
        }
        for (b, &st) in base.iter_mut().zip(&inner_strides) {
            *b += c0 as isize * st;
        }
        let base: &[isize] = base;
        let (regs, gathered) = scratch.split_at_mut(nsteps * BLOCK);
        // Inputs strided along the row are gathered into their scratch block first.
        for (j, (&p, &st)) in ptrs.iter().zip(&inner_strides).enumerate() {
            if st != 0 && st != 1 {
                for (k, d) in gathered[j * BLOCK..j * BLOCK + len].iter_mut().enumerate() {
                    // SAFETY: inside input j's view (this row, column c0 + k).
                    *d = unsafe { p.at(base[j] + k as isize * st) };
                }
            }
        }
        let gathered: &[T] = gathered;
        let input = |j: usize| -> Operand<'_, T> {
            let p = ptrs[j];
            match inner_strides[j] {
                // SAFETY: inside input j's view.
                0 => Operand::Splat(unsafe { p.at(base[j]) }),
                // SAFETY: `len` contiguous elements of input j's view.
                1 => Operand::Run(unsafe { std::slice::from_raw_parts(p.get().offset(base[j]), len) }),
                _ => Operand::Run(&gathered[j * BLOCK..j * BLOCK + len]),
            }
        };
        for (i, (op, a, b)) in steps.iter().enumerate() {
            let (done, now) = regs.split_at_mut(i * BLOCK);
            let done: &[T] = done;
            let operand = |s: Src| match s {
                Src::Input(j) => input(j),
                Src::Step(j) => Operand::Run(&done[j * BLOCK..j * BLOCK + len]),
            };
            let dst: &mut [T] = if i + 1 == nsteps { &mut *out_blk } else { &mut now[..len] };
            match op {
                Op::Unary(u) => unary_block(*u, operand(*a), dst),
                Op::Binary(bop) => binary_block(*bop, operand(*a), operand(*b), dst),
                _ => unreachable!("checked by supports"),
            }
        }
    };
    let blocks = (size / inner) * blocks_per_row;
    if size <= SERIAL_MAX {
        let mut s = scratch();
        (0..blocks).for_each(|blk| body(&mut s, blk));
    } else {
        (0..blocks).into_par_iter().for_each_init(scratch, body);
    }
    Ok(Data::contiguous(buffer, shape))
}

/// One float unary op over a block, in `T`'s compute type.
fn unary_block<T: Element>(op: UnaryOp, x: Operand<'_, T>, out: &mut [T])
where
    T::Acc: FloatMath,
{
    match x {
        Operand::Splat(v) => {
            let r = dispatch(
                #[inline(always)]
                |isa| T::from_acc(v.to_acc().unary(op, isa)),
            );
            out.fill(r);
        }
        Operand::Run(xs) => per_float_op!(
            op,
            OP => dispatch(
                #[inline(always)]
                |isa| {
                    for (o, &v) in out.iter_mut().zip(xs) {
                        *o = T::from_acc(v.to_acc().unary(OP, isa));
                    }
                },
            )
        ),
    }
}

/// One binary arithmetic op over a block, in `T`'s compute type.
fn binary_block<T: Element>(op: BinaryOp, a: Operand<'_, T>, b: Operand<'_, T>, out: &mut [T]) {
    per_arith_op!(
        op,
        T::Acc,
        f => binary_loop(a, b, out, #[inline(always)] |x: T, y: T| T::from_acc(f(x.to_acc(), y.to_acc()))),
        unreachable!("{op:?} is not arithmetic")
    )
}

/// `out[k] = f(a[k], b[k])` over a block, one loop per operand shape, under the best ISA.
#[inline(always)]
fn binary_loop<T: Copy>(a: Operand<'_, T>, b: Operand<'_, T>, out: &mut [T], f: impl Fn(T, T) -> T) {
    match (a, b) {
        (Operand::Run(x), Operand::Run(y)) => dispatch(
            #[inline(always)]
            |_| {
                for ((o, &x), &y) in out.iter_mut().zip(x).zip(y) {
                    *o = f(x, y);
                }
            },
        ),
        (Operand::Run(x), Operand::Splat(y)) => dispatch(
            #[inline(always)]
            |_| {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = f(x, y);
                }
            },
        ),
        (Operand::Splat(x), Operand::Run(y)) => dispatch(
            #[inline(always)]
            |_| {
                for (o, &y) in out.iter_mut().zip(y) {
                    *o = f(x, y);
                }
            },
        ),
        (Operand::Splat(x), Operand::Splat(y)) => out.fill(f(x, y)),
    }
}
