//! Sorting along an axis: sort, argsort, partition and argpartition (and so topk, a
//! partition's slice) for every dtype, as a bitonic sort of (key, index) pairs (sort.cu).
//!
//! The order is total — the CPU's order of values (NaN last) with ties broken by index — so
//! the result is the CPU's stable sort exactly. A partition is a full sort here, which is one
//! of the orders a partition may give.

use cudarc::driver::LaunchConfig;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::SortKind;

use super::alloc::{alloc_out, device_ptr, DeviceBlock};
use super::compile::COMMON;
use super::context::Gpu;
use super::layout::{ctype, launch, launch_cfg, Arg, Layout};

const SRC: &str = include_str!("kernels/sort.cu");
const BLOCK: u32 = 256;
/// Pairs a block sorts in shared memory (12 bytes each).
const CHUNK: usize = 2048;

fn function(g: &Gpu, t: Dtype, name: &str) -> Result<cudarc::driver::CudaFunction> {
    g.function(&format!("sort {}", ctype(t)), name, || format!("{COMMON}\n#define T {}\n{SRC}\n", ctype(t)))
}

/// Evaluates a sort-family op of `x` along `axis` into a row-major output of `shape`.
pub(crate) fn sort(g: &Gpu, kind: SortKind, x: &Array, axis: usize, shape: &[usize]) -> Result<Option<Data>> {
    let t = x.dtype();
    let n = x.shape()[axis];
    if n > u32::MAX as usize {
        return Ok(None);
    }
    let want_idx = matches!(kind, SortKind::ArgSort | SortKind::ArgPartition(_));
    let d = x.data()?;
    let ost = row_major_strides(shape);
    let mut lines_shape = x.shape().to_vec();
    lines_shape[axis] = 1;
    let Some(l) = Layout::new(&lines_shape, &[d.strides.clone(), ost.clone()]) else { return Ok(None) };
    let (out, po) = alloc_out(shape, if want_idx { Dtype::U32 } else { t })?;
    let lines = l.n();
    if lines * n == 0 {
        return Ok(Some(out));
    }
    let px = device_ptr(g, &d, t)?;
    let p = n.next_power_of_two();
    let keys = DeviceBlock::new(lines * p * 8)?;
    let idx = DeviceBlock::new(lines * p * 4)?;
    let (kp, ip) = (Arg::U64(keys.addr), Arg::U64(idx.addr));
    let (s, os) = (d.strides[axis] as i64, ost[axis] as i64);
    let f = function(g, t, "sort_init")?;
    let args = [kp, ip, Arg::U64(px), Arg::Layout(&l), Arg::I64(n as i64), Arg::I64(s), Arg::I64(p as i64)];
    launch(g, &f, g.grid(lines * p, BLOCK), BLOCK, &args)?;
    if p > 1 {
        let c = p.min(CHUNK);
        let shared = function(g, t, "sort_shared")?;
        let cfg = LaunchConfig {
            grid_dim: ((lines * p / c) as u32, 1, 1),
            block_dim: ((c / 2) as u32, 1, 1),
            shared_mem_bytes: (c * 12) as u32,
        };
        let stages = |k_first: usize, k_last: usize, j_first: usize| {
            let (kp, ip) = (Arg::U64(keys.addr), Arg::U64(idx.addr));
            let args = [kp, ip, Arg::I64(p as i64), Arg::I64(c as i64)];
            let more = [Arg::I64(k_first as i64), Arg::I64(k_last as i64), Arg::I64(j_first as i64)];
            let all: Vec<Arg> = args.into_iter().chain(more).collect();
            launch_cfg(g, &shared, cfg, &all)
        };
        stages(2, c, 1)?;
        let global = function(g, t, "sort_global")?;
        let mut k = 2 * c;
        while k <= p {
            let mut j = k / 2;
            while j >= c {
                let (kp, ip) = (Arg::U64(keys.addr), Arg::U64(idx.addr));
                let args = [kp, ip, Arg::I64(lines as i64), Arg::I64(p as i64), Arg::I64(k as i64), Arg::I64(j as i64)];
                launch(g, &global, g.grid(lines * p / 2, BLOCK), BLOCK, &args)?;
                j /= 2;
            }
            stages(k, k, c / 2)?;
            k *= 2;
        }
    }
    let f = function(g, t, "sort_finish")?;
    let args = [
        Arg::U64(po),
        Arg::U64(px),
        Arg::U64(idx.addr),
        Arg::Layout(&l),
        Arg::I64(n as i64),
        Arg::I64(s),
        Arg::I64(os),
        Arg::I64(p as i64),
        Arg::I32(want_idx as i32),
    ];
    launch(g, &f, g.grid(lines * n, BLOCK), BLOCK, &args)?;
    Ok(Some(out))
}
