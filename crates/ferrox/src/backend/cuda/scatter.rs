//! Scatters: `scatter` (and its add / prod / max / min modes) and `put_along_axis`, for every
//! dtype and integer index dtype (scatter.cu; a scatter's index arrays of different dtypes are
//! converted to i64 first).
//!
//! The output starts as a row-major copy of the input. Assignments give the CPU's in-order
//! result exactly — with repeated destinations the last update wins — by a claiming pass
//! before the writing one; the other modes combine atomically, so float sums and products
//! differ from the CPU's only in rounding order. Indices are read on the device: negative
//! ones count from the end, ones out of range are clamped (the CPU reports an error).

use cudarc::driver::result as cu;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::ScatterMode;
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr, DeviceBlock};
use super::compile::COMMON;
use super::context::{cuda_err, Gpu};
use super::elementwise::copy_strided;
use super::index::{donated, one_index_dtype, Indices};
use super::layout::{ctype, launch, launch_overlapped_1d, Arg, Layout};

const SRC: &str = include_str!("kernels/scatter.cu");
const BLOCK: u32 = 256;
/// The kernels' steps (STEP_* in scatter.cu).
const CLAIM: i32 = 0;
const WRITE: i32 = 1;
const COMBINE: i32 = 2;
const PLAIN: i32 = 3;

fn function(g: &Gpu, t: Dtype, idx: Dtype, name: &str) -> Result<cudarc::driver::CudaFunction> {
    let (tc, ic) = (ctype(t), ctype(idx));
    g.function(&format!("scatter {tc} {ic}"), name, || format!("{COMMON}\n#define T {tc}\n#define I {ic}\n{SRC}\n"))
}

/// A row-major copy of `a` on the device to scatter into, and its address; `None` past the
/// kernels' axis limit. An `a` nobody else holds is written in place instead (a KV cache
/// written at a position computed on the device: see `index::donated`).
fn start_from(g: &Gpu, a: &Array) -> Result<Option<(Data, u64)>> {
    if let Some(d) = donated(a) {
        let p = device_ptr(g, &d, a.dtype())?;
        return Ok(Some((d, p)));
    }
    let (out, po) = alloc_out(a.shape(), a.dtype())?;
    if a.size() > 0 {
        let d = a.data()?;
        let pa = device_ptr(g, &d, a.dtype())?;
        if !copy_strided(g, pa, &d.strides, a.shape(), a.dtype(), po)? {
            return Ok(None);
        }
    }
    Ok(Some((out, po)))
}

/// Runs kernel `name` over `n` updates with `args` (the step and the claims' address are
/// appended): one combining pass, or for assignments a claiming pass and a writing one — or
/// one plain writing pass when the caller knows no two updates share a destination. A single
/// pass launches overlapped with the kernel before it (a replayed decode step writes its KV
/// caches so, right after rope).
fn run(
    g: &Gpu,
    f: &cudarc::driver::CudaFunction,
    mode: ScatterMode,
    out_n: usize,
    n: usize,
    args: &[Arg],
    distinct: bool,
) -> Result<()> {
    let grid = g.grid(n, BLOCK);
    let with = |win: u64, step: i32| -> Vec<Arg> {
        let mut a = args.to_vec();
        a.extend([Arg::U64(win), Arg::I32(mode as i32), Arg::I32(step)]);
        a
    };
    if mode != ScatterMode::Assign {
        return launch_overlapped_1d(g, f, grid, BLOCK, &with(0, COMBINE));
    }
    if distinct {
        return launch_overlapped_1d(g, f, grid, BLOCK, &with(0, PLAIN));
    }
    let win = DeviceBlock::new(out_n * 8)?;
    // SAFETY: the block holds out_n * 8 bytes; the memset is ordered on the GPU's stream.
    unsafe { cu::memset_d8_async(win.addr, 0, out_n * 8, g.stream.cu_stream()) }
        .map_err(|e| cuda_err("clearing scatter claims", e))?;
    launch(g, f, grid, BLOCK, &with(win.addr, CLAIM))?;
    launch(g, f, grid, BLOCK, &with(win.addr, WRITE))
}

/// `Scatter`: inputs a, updates (index shape + slice shape), up to 3 index arrays on `axes`.
pub(crate) fn scatter(
    g: &Gpu,
    inputs: &[Array],
    axes: &[usize],
    mode: ScatterMode,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let (a, upd) = (&inputs[0], &inputs[1]);
    let nd = a.ndim();
    if inputs.len() > 5 || a.dtype() != dtype || upd.dtype() != dtype || upd.ndim() < nd || a.shape().contains(&0) {
        return Ok(None);
    }
    let Some(idxs) = one_index_dtype(g, &inputs[2..])? else { return Ok(None) };
    let it = idxs.first().map_or(Dtype::I32, |i| i.dtype());
    let idx_shape = &upd.shape()[..upd.ndim() - nd];
    let slice_shape = &upd.shape()[upd.ndim() - nd..];
    let du = upd.data()?;
    let ost = row_major_strides(shape);
    let mut ix = Indices { n: idxs.len() as i32, ..Default::default() };
    let mut istrides = Vec::new();
    let mut keep = Vec::new();
    for (k, (i, &ax)) in idxs.iter().zip(axes).enumerate() {
        let d = i.data()?;
        ix.ptr[k] = device_ptr(g, &d, it)?;
        ix.stride[k] = ost[ax] as i64;
        ix.size[k] = a.shape()[ax] as i64;
        istrides.push(broadcast_strides(i.shape(), &d.strides, idx_shape));
        keep.push(d);
    }
    istrides.resize(3, vec![0; idx_shape.len()]);
    istrides.push(du.strides[..upd.ndim() - nd].to_vec());
    let slice_st = vec![du.strides[upd.ndim() - nd..].to_vec(), ost];
    let (Some(li), Some(ls)) = (Layout::new(idx_shape, &istrides), Layout::new(slice_shape, &slice_st)) else {
        return Ok(None);
    };
    let Some((out, po)) = start_from(g, a)? else { return Ok(None) };
    let n = li.n() * ls.n();
    if n == 0 {
        return Ok(Some(out));
    }
    let pu = device_ptr(g, &du, dtype)?;
    let f = function(g, dtype, it, "scatter")?;
    let args = [Arg::U64(po), Arg::U64(pu), Arg::Indices(&ix), Arg::Layout(&li), Arg::Layout(&ls)];
    run(g, &f, mode, a.size(), n, &args, false)?;
    Ok(Some(out))
}

/// `put_along_axis`: inputs a, indices and values (broadcast together off the axis).
pub(crate) fn put_along_axis(
    g: &Gpu,
    inputs: &[Array],
    axis: usize,
    mode: ScatterMode,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let (a, idx, vals) = (&inputs[0], &inputs[1], &inputs[2]);
    let it = idx.dtype();
    if !it.is_integer() || a.dtype() != dtype || vals.dtype() != dtype || a.shape()[axis] == 0 {
        return Ok(None);
    }
    let upd_shape = crate::shape::broadcast_shapes(&[idx.shape(), vals.shape()], "put_along_axis")?;
    let (dv, di) = (vals.data()?, idx.data()?);
    let ost = row_major_strides(shape);
    let mut dst = ost.clone();
    dst[axis] = 0;
    let sv = broadcast_strides(vals.shape(), &dv.strides, &upd_shape);
    let si = broadcast_strides(idx.shape(), &di.strides, &upd_shape);
    let Some(l) = Layout::new(&upd_shape, &[sv, dst, si]) else { return Ok(None) };
    let Some((out, po)) = start_from(g, a)? else { return Ok(None) };
    if l.n() == 0 {
        return Ok(Some(out));
    }
    let (pv, pi) = (device_ptr(g, &dv, dtype)?, device_ptr(g, &di, it)?);
    let f = function(g, dtype, it, "put_along_axis")?;
    let args = [
        Arg::U64(po),
        Arg::U64(pv),
        Arg::U64(pi),
        Arg::Layout(&l),
        Arg::I64(a.shape()[axis] as i64),
        Arg::I64(ost[axis] as i64),
    ];
    // One index per lane off the axis: every update has its own destination.
    run(g, &f, mode, a.size(), l.n(), &args, upd_shape[axis] == 1)?;
    Ok(Some(out))
}
