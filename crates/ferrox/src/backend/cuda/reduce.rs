//! Reductions over axes, arg-reductions and scans: one block per output element (or line).

use cudarc::driver::LaunchConfig;

use crate::array::row_major_strides;
use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitives::{ArgReduceOp, ReduceOp, ScanOp};

use super::alloc::{alloc_out, device_ptr, DeviceBlock};
use super::compile::COMMON;
use super::context::Gpu;
use super::layout::{ctype, launch, launch_cfg, Arg, Layout};

const SRC: &str = include_str!("kernels/reduce.cu");
/// Threads per block (RBLOCK in reduce.cu).
const BLOCK: u32 = 256;
/// Arg-reductions split lines of at least twice this many elements into parts of it, when
/// there are at most `SPLIT_LINES` lines (`ARGREDUCE_SPLIT` in reduce.cu).
const SPLIT_CHUNK: usize = 2048;
const SPLIT_LINES: usize = 4096;
/// Room for one `Cand` of reduce.cu (value, i64 index, NaN flag: 24 bytes with padding).
const CAND_BYTES: usize = 32;

fn source(t: Dtype) -> String {
    format!(
        "{COMMON}\n#define T {}\n{SRC}\n\
         REDUCE(Sum, A, (A)0, to_acc<T>(x), r_add<A>, T, from_acc<T>(acc))\n\
         REDUCE(Prod, A, (A)1, to_acc<T>(x), r_mul<A>, T, from_acc<T>(acc))\n\
         REDUCE(Max, A, lowest(), to_acc<T>(x), r_max<A>, T, from_acc<T>(acc))\n\
         REDUCE(Min, A, highest(), to_acc<T>(x), r_min<A>, T, from_acc<T>(acc))\n\
         REDUCE(All, bool, true, to_acc<T>(x) != (A)0, r_mul<bool>, bool, acc)\n\
         REDUCE(Any, bool, false, to_acc<T>(x) != (A)0, r_add<bool>, bool, acc)\n\
         ARGREDUCE(ArgMax, true)\nARGREDUCE(ArgMin, false)\n\
         ARGREDUCE_SPLIT(ArgMax, true)\nARGREDUCE_SPLIT(ArgMin, false)\n\
         SCAN(Sum, (A)0, r_add<A>)\nSCAN(Prod, (A)1, r_mul<A>)\nSCAN(Max, lowest(), r_max<A>)\n\
         SCAN(Min, highest(), r_min<A>)\n",
        ctype(t)
    )
}

fn function(g: &Gpu, t: Dtype, name: &str) -> Result<cudarc::driver::CudaFunction> {
    g.function(&format!("reduce {}", ctype(t)), name, || source(t))
}

/// Reduces `x` over `axes` (kept as size 1 in `out_shape`).
pub(crate) fn reduce(
    g: &Gpu,
    op: ReduceOp,
    x: &Array,
    axes: &[usize],
    out_shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let logical = matches!(op, ReduceOp::All | ReduceOp::Any);
    if (logical && dtype != Dtype::Bool) || (!logical && dtype != x.dtype()) {
        return Ok(None);
    }
    let d = x.data()?;
    let (mut kept, mut kst, mut red, mut rst) = (vec![], vec![], vec![], vec![]);
    for (i, (&n, &s)) in x.shape().iter().zip(&d.strides).enumerate() {
        if axes.contains(&i) {
            red.push(n);
            rst.push(s);
        } else {
            kept.push(n);
            kst.push(s);
        }
    }
    let (Some(lo), Some(lr)) = (Layout::new(&kept, &[kst]), Layout::new(&red, &[rst])) else { return Ok(None) };
    let (out, po) = alloc_out(out_shape, dtype)?;
    if lo.n() == 0 {
        return Ok(Some(out));
    }
    let ip = device_ptr(g, &d, x.dtype())?;
    let t = x.dtype();
    // Few outputs with long rows: one block per output would leave most of the GPU idle, so
    // each row is split into parts reduced by separate blocks, then the parts are joined.
    let parts = if lo.n() < 2 * g.sms as usize && lr.n() >= 1 << 15 {
        (4 * g.sms as usize).div_ceil(lo.n()).min(lr.n() / 4096).max(2)
    } else {
        1
    };
    if parts == 1 {
        let f = function(g, t, &format!("reduce_{op:?}"))?;
        launch(g, &f, g.grid(lo.n(), 1), BLOCK, &[Arg::U64(po), Arg::U64(ip), Arg::Layout(&lo), Arg::Layout(&lr)])?;
        return Ok(Some(out));
    }
    // The parts are kept in the compute type: 8 bytes is enough for every one.
    let part = DeviceBlock::new(lo.n() * parts * 8)?;
    let f = function(g, t, &format!("reduce_part_{op:?}"))?;
    let args = [Arg::U64(part.addr), Arg::U64(ip), Arg::Layout(&lo), Arg::Layout(&lr), Arg::I64(parts as i64)];
    launch(g, &f, (lo.n() * parts) as u32, BLOCK, &args)?;
    let f = function(g, t, &format!("reduce_join_{op:?}"))?;
    let args = [Arg::U64(po), Arg::U64(part.addr), Arg::I64(lo.n() as i64), Arg::I64(parts as i64)];
    launch(g, &f, g.grid(lo.n(), 1), BLOCK, &args)?;
    Ok(Some(out))
}

/// Index of the max or min along `axis` (first on ties; NaN wins), as uint32.
pub(crate) fn arg_reduce(
    g: &Gpu,
    op: ArgReduceOp,
    x: &Array,
    axis: usize,
    out_shape: &[usize],
) -> Result<Option<Data>> {
    let d = x.data()?;
    let n = x.shape()[axis];
    if n == 0 {
        return Err(Error::invalid("argmax", "cannot take the arg-reduction of an empty axis"));
    }
    let mut outer = x.shape().to_vec();
    outer[axis] = 1;
    let Some(lo) = Layout::new(&outer, std::slice::from_ref(&d.strides)) else { return Ok(None) };
    let (out, po) = alloc_out(out_shape, Dtype::U32)?;
    if lo.n() == 0 {
        return Ok(Some(out));
    }
    let ip = device_ptr(g, &d, x.dtype())?;
    let s = d.strides[axis] as i64;
    if lo.n() <= SPLIT_LINES && n >= 2 * SPLIT_CHUNK {
        // Few long lines (a greedy pick over a vocabulary): one block per line would walk it
        // alone (~120 µs for 128k elements); parts of SPLIT_CHUNK go to their own blocks.
        let parts = n.div_ceil(SPLIT_CHUNK);
        let part = DeviceBlock::new(lo.n() * parts * CAND_BYTES)?;
        let f = function(g, x.dtype(), &format!("argreduce_part_{op:?}"))?;
        let cfg =
            LaunchConfig { grid_dim: (parts as u32, lo.n() as u32, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let args = [
            Arg::U64(part.addr),
            Arg::U64(ip),
            Arg::Layout(&lo),
            Arg::I64(n as i64),
            Arg::I64(s),
            Arg::I64(SPLIT_CHUNK as i64),
        ];
        launch_cfg(g, &f, cfg, &args)?;
        let f = function(g, x.dtype(), &format!("argreduce_join_{op:?}"))?;
        launch(g, &f, lo.n() as u32, BLOCK, &[Arg::U64(po), Arg::U64(part.addr), Arg::I64(parts as i64)])?;
        return Ok(Some(out));
    }
    let f = function(g, x.dtype(), &format!("argreduce_{op:?}"))?;
    let args = [Arg::U64(po), Arg::U64(ip), Arg::Layout(&lo), Arg::I64(n as i64), Arg::I64(s)];
    launch(g, &f, g.grid(lo.n(), 1), BLOCK, &args)?;
    Ok(Some(out))
}

/// Cumulative `op` along `axis` (from the end if `reverse`; `inclusive` counts each element
/// in its own output), into a row-major output of x's dtype.
pub(crate) fn scan(
    g: &Gpu,
    op: ScanOp,
    x: &Array,
    axis: usize,
    reverse: bool,
    inclusive: bool,
) -> Result<Option<Data>> {
    let d = x.data()?;
    let shape = x.shape();
    let ost = row_major_strides(shape);
    let mut lines = shape.to_vec();
    lines[axis] = 1;
    let Some(lo) = Layout::new(&lines, &[d.strides.clone(), ost.clone()]) else { return Ok(None) };
    let (out, po) = alloc_out(shape, x.dtype())?;
    if x.size() == 0 {
        return Ok(Some(out));
    }
    let ip = device_ptr(g, &d, x.dtype())?;
    let f = function(g, x.dtype(), &format!("scan_{op:?}"))?;
    let args = [
        Arg::U64(po),
        Arg::U64(ip),
        Arg::Layout(&lo),
        Arg::I64(shape[axis] as i64),
        Arg::I64(d.strides[axis] as i64),
        Arg::I64(ost[axis] as i64),
        Arg::I32(reverse as i32),
        Arg::I32(inclusive as i32),
    ];
    launch(g, &f, g.grid(lo.n(), 1), BLOCK, &args)?;
    Ok(Some(out))
}
