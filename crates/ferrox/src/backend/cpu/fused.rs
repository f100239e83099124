//! Fused elementwise programs (made by `compile`), evaluated tile by tile, and elementwise
//! prologues fused into the reduction that reads them. Programs of float
//! arithmetic in one dtype take the faster block interpreter of `fused_block` instead.
//!
//! The output is cut into tiles of about [`TILE`] elements that are contiguous in the output.
//! Each tile runs the whole program with the ordinary elementwise kernels over views of the
//! inputs, so intermediates stay in cache instead of streaming through memory, and the
//! results are bit for bit those of the unfused ops. Tiles run in parallel.

use rayon::prelude::*;

use crate::array::{row_major_strides, Array, Data};
use crate::backend::Backend;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::memory::Buffer;
use crate::primitives::{FusedGraph, FusedSlot, Op, ReduceOp};
use crate::shape::broadcast_shapes;

use super::{reduce, CpuBackend};

/// Elements per tile: a few intermediates of this size fit in a core's L2 cache, and the
/// kernels run each tile on one thread (below their parallel threshold) while tiles spread
/// over the threads.
const TILE: usize = 1 << 14;

/// One tile: a run of `len` indices on `axis`, from `start`, at the fixed indices `outer` of
/// the axes before it; every axis after it whole.
struct Tile {
    outer: Vec<usize>,
    start: usize,
    len: usize,
}

/// Cuts `shape` into tiles of at most `capacity` elements (or one row of the last axis) that
/// are contiguous in row-major order: the tile axis is the first whose trailing axes hold at
/// most `capacity` elements.
fn plan(shape: &[usize], capacity: usize) -> (usize, Vec<Tile>) {
    if shape.is_empty() {
        return (0, vec![Tile { outer: vec![], start: 0, len: 1 }]);
    }
    let n = shape.len();
    let mut axis = n - 1;
    let mut inner = 1usize;
    while axis > 0 && inner * shape[axis] <= capacity {
        inner *= shape[axis];
        axis -= 1;
    }
    let rows = (capacity / inner).max(1);
    let outer_shape = &shape[..axis];
    let outer_count: usize = outer_shape.iter().product();
    let mut tiles = Vec::new();
    for o in 0..outer_count {
        let mut outer = vec![0; axis];
        let mut rem = o;
        for k in (0..axis).rev() {
            outer[k] = rem % outer_shape[k];
            rem /= outer_shape[k];
        }
        let mut start = 0;
        while start < shape[axis] {
            let len = rows.min(shape[axis] - start);
            tiles.push(Tile { outer: outer.clone(), start, len });
            start += len;
        }
    }
    (axis, tiles)
}

/// Evaluates the fused program `g` over `inputs` into an output of `shape` and `dtype`.
pub fn eval(g: &FusedGraph, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Data> {
    if let Some((op, axes)) = g.reduction() {
        return eval_reduction(g, op, axes, inputs, shape, dtype);
    }
    if super::fused_block::supports(g, inputs, shape, dtype) {
        return super::fused_block::eval(g, inputs, shape, dtype);
    }
    let size: usize = shape.iter().product();
    let mut buffer = Buffer::alloc(size * dtype.size())?;
    if size == 0 {
        return Ok(Data::contiguous(buffer, shape));
    }
    let views: Vec<(Data, Vec<isize>, Dtype)> = inputs
        .iter()
        .map(|x| {
            let d = x.data()?;
            let s = crate::shape::broadcast_strides(x.shape(), &d.strides, shape);
            Ok((d, s, x.dtype()))
        })
        .collect::<Result<_>>()?;
    let (axis, tiles) = plan(shape, TILE);
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let out_strides = row_major_strides(shape);
    let last_use = last_uses(g);
    let out_addr = buffer.as_bytes_mut().as_mut_ptr() as usize;
    let elem = dtype.size();
    tiles.par_iter().try_for_each(|t| -> Result<()> {
        let mut tile_shape = vec![t.len];
        tile_shape.extend_from_slice(shape.get(axis + 1..).unwrap_or(&[]));
        if shape.is_empty() {
            tile_shape.clear();
        }
        let tile_inputs = tile_views(&views, t, axis, shape.is_empty(), &tile_shape);
        let mut vals: Vec<Option<Array>> = vec![None; g.steps.len()];
        for (i, (op, slots, step_dtype)) in g.steps.iter().enumerate() {
            let ins: Vec<Array> = slots
                .iter()
                .map(|s| match *s {
                    FusedSlot::Input(j) => tile_inputs[j].clone(),
                    FusedSlot::Step(j) => vals[j].clone().expect("steps run in order"),
                })
                .collect();
            let data = CpuBackend.eval(op, &ins, &tile_shape, *step_dtype)?;
            vals[i] = Some(Array::from_data(tile_shape.clone(), *step_dtype, data));
            for (j, &last) in last_use.iter().enumerate() {
                if last == i {
                    vals[j] = None;
                }
            }
        }
        let result = vals.pop().flatten().expect("the last step is the result");
        let d = match result.data()? {
            d if d.is_row_contiguous(&tile_shape) => d,
            _ => CpuBackend.eval(&Op::Copy, &[result], &tile_shape, dtype)?,
        };
        let mut first = 0usize;
        for (k, &i) in t.outer.iter().enumerate() {
            first += i * out_strides[k] as usize;
        }
        first += t.start * inner;
        let count = t.len * inner;
        // SAFETY: tiles cover disjoint, in-bounds ranges of the output buffer, and the
        // result holds `count` contiguous elements of the output dtype.
        unsafe {
            std::ptr::copy_nonoverlapping(
                d.buffer.host_ptr().add(d.offset * elem),
                (out_addr as *mut u8).add(first * elem),
                count * elem,
            );
        }
        Ok(())
    })?;
    Ok(Data::contiguous(buffer, shape))
}

/// The inputs' views of tile `t` (tile axis `axis`; `scalar` for a zero-dimensional
/// output), each `(data, strides broadcast to the full shape, dtype)`, as arrays of
/// `tile_shape`.
fn tile_views(
    views: &[(Data, Vec<isize>, Dtype)],
    t: &Tile,
    axis: usize,
    scalar: bool,
    tile_shape: &[usize],
) -> Vec<Array> {
    views
        .iter()
        .map(|(d, s, dt)| {
            let mut offset = d.offset as isize;
            for (k, &i) in t.outer.iter().enumerate() {
                offset += i as isize * s[k];
            }
            if !scalar {
                offset += t.start as isize * s[axis];
            }
            let strides = if scalar { vec![] } else { s[axis..].to_vec() };
            let data = Data { buffer: d.buffer.clone(), offset: offset as usize, strides };
            Array::from_data(tile_shape.to_vec(), *dt, data)
        })
        .collect()
}

/// Most prologue elements a reduction tile computes (unless one row is longer): a tile stays
/// in the L2 cache between the prologue and the reduction, and there are few enough tiles
/// that the per-tile setup is small against their work. The reduction kernel folds each row
/// of a tile exactly as it folds that row of the whole array.
const REDUCE_TILE: usize = 1 << 16;

/// Longest reduced row the tiled path takes: the plain kernel folds a row in one pass up to
/// this length (it splits a single longer row across threads, in another order).
const MAX_TILED_ROW: usize = 1 << 16;

/// A program ending in a reduction: when the reduced axes are trailing, tiles of whole rows
/// run the elementwise prologue into a cache-sized buffer and reduce it there, so the prologue
/// never streams through memory. Otherwise the prologue is computed whole, then reduced. Both
/// give bit for bit the plain reduction of the plain prologue.
fn eval_reduction(
    g: &FusedGraph,
    op: ReduceOp,
    axes: &[usize],
    inputs: &[Array],
    shape: &[usize],
    dtype: Dtype,
) -> Result<Data> {
    let prologue = g.prologue();
    let pdtype = prologue.steps.last().expect("a reduction has a prologue").2;
    let full = broadcast_shapes(&inputs.iter().map(|a| a.shape()).collect::<Vec<_>>(), "fused")?;
    let n_kept = full.len() - axes.len();
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let trailing = sorted.iter().enumerate().all(|(k, &a)| a == n_kept + k);
    let row: usize = full[n_kept..].iter().product();
    let n_out: usize = shape.iter().product();
    if !trailing || n_out <= 1 || row == 0 || row > MAX_TILED_ROW {
        let whole = eval(&prologue, inputs, &full, pdtype)?;
        return reduce::reduce(op, &Array::from_data(full, pdtype, whole), axes, shape, dtype);
    }
    let views: Vec<(Data, Vec<isize>, Dtype)> = inputs
        .iter()
        .map(|x| {
            let d = x.data()?;
            let s = crate::shape::broadcast_strides(x.shape(), &d.strides, &full);
            Ok((d, s, x.dtype()))
        })
        .collect::<Result<_>>()?;
    let (axis, tiles) = plan(&full[..n_kept], (REDUCE_TILE / row).max(1));
    let inner: usize = full[axis + 1..n_kept].iter().product();
    let out_strides = row_major_strides(&full[..n_kept]);
    let mut buffer = Buffer::alloc(n_out * dtype.size())?;
    let out_addr = buffer.as_bytes_mut().as_mut_ptr() as usize;
    let elem = dtype.size();
    tiles.par_iter().try_for_each(|t| -> Result<()> {
        let mut tile_shape = vec![t.len];
        tile_shape.extend_from_slice(&full[axis + 1..]);
        let tile_inputs = tile_views(&views, t, axis, false, &tile_shape);
        let values = eval(&prologue, &tile_inputs, &tile_shape, pdtype)?;
        let rank = tile_shape.len();
        let red_axes: Vec<usize> = (rank - axes.len()..rank).collect();
        let mut out_shape = tile_shape.clone();
        red_axes.iter().for_each(|&a| out_shape[a] = 1);
        let values = Array::from_data(tile_shape, pdtype, values);
        let d = reduce::reduce(op, &values, &red_axes, &out_shape, dtype)?;
        let first =
            t.outer.iter().enumerate().map(|(k, &i)| i * out_strides[k] as usize).sum::<usize>() + t.start * inner;
        // SAFETY: tiles cover disjoint, in-bounds ranges of the output buffer, and the
        // reduction holds `len * inner` contiguous elements of the output dtype.
        unsafe {
            std::ptr::copy_nonoverlapping(
                d.buffer.host_ptr().add(d.offset * elem),
                (out_addr as *mut u8).add(first * elem),
                t.len * inner * elem,
            );
        }
        Ok(())
    })?;
    Ok(Data::contiguous(buffer, shape))
}

/// For each step, the last step that reads it (the final step for the result itself), so
/// intermediates are freed as soon as they are used up.
fn last_uses(g: &FusedGraph) -> Vec<usize> {
    let n = g.steps.len();
    let mut last: Vec<usize> = (0..n).collect();
    for (i, (_, slots, _)) in g.steps.iter().enumerate() {
        for s in slots {
            if let FusedSlot::Step(j) = *s {
                last[j] = last[j].max(i);
            }
        }
    }
    last[n - 1] = usize::MAX;
    last
}
