//! Scaled dot-product attention (`Op::Attention`) without materialized scores: a split-KV
//! kernel for decode (few query rows per key/value head: blocks split the keys, a second
//! kernel joins their partial softmaxes, a block a row with a thread a split) and a flash-attention-style kernel for prefill
//! (tiles of query rows sweep key tiles with an online softmax; on the tensor cores through
//! `mma.sync` for f16 and bf16 with head dims up to 128, else in f32 FMAs). Both group the query
//! heads of one key/value head, take causal, additive or boolean masks, and read q, k and v
//! through their strides (a KV-cache view needs no copy) as long as the feature axis is
//! contiguous. f32, f16 and bf16, computed in f32; f64 computed in f64 by a simple kernel (a
//! warp per query row, `attn_rows`); head dims up to 256. The gradients (`Op::AttentionVjp`)
//! take the same dtypes, each computed in the forward's type.

use cudarc::driver::{DeviceRepr, LaunchConfig};

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::AttentionMask;
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr, DeviceBlock};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::copy;
use super::layout::{ctype, launch_cfg, launch_overlapped, Arg};

const SRC: &str = include_str!("kernels/attention.cu");
/// Rows of one (batch, kv head) up to which the decode kernel runs.
const DECODE_ROWS: usize = 16;
/// The decode kernel's most key splits: the combine pass's threads a row (COMBINE of
/// attention.cu).
const COMBINE_SPLITS: usize = 256;

/// The kernel's parameters (`struct Attn` of attention.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Attn {
    q: u64,
    k: u64,
    v: u64,
    mask: u64,
    out: u64,
    qs: [i64; 3],
    ks: [i64; 3],
    vs: [i64; 3],
    ms: [i64; 4],
    b: i32,
    hq: i32,
    hkv: i32,
    l: i32,
    s: i32,
    d: i32,
    dv: i32,
    mkind: i32,
    scale: f32,
    vec: i32,
}

// SAFETY: a plain #[repr(C)] struct matching the kernel's parameter type.
unsafe impl DeviceRepr for Attn {}

/// An operand's data with a contiguous last axis (copied if it has none), and its address.
fn operand(g: &Gpu, x: &Array) -> Result<(Data, u64)> {
    let d = x.data()?;
    let d = if x.shape()[3] > 1 && d.strides[3] != 1 { copy(g, x)? } else { d };
    let p = device_ptr(g, &d, x.dtype())?;
    Ok((d, p))
}

/// The kernels' parameters for q, k, v (and the mask array) of `inputs`, writing to `out`,
/// with the data they read (kept alive by the caller); `None` for a mask of another dtype.
fn params(g: &Gpu, inputs: &[Array], scale: f32, mask: AttentionMask, out: u64) -> Result<Option<(Attn, Vec<Data>)>> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let t = q.dtype();
    let (b, hq, l, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    let ((dq, pq), (dk, pk), (dvd, pv)) = (operand(g, q)?, operand(g, k)?, operand(g, v)?);
    let mut p = Attn {
        q: pq,
        k: pk,
        v: pv,
        out,
        b: b as i32,
        hq: hq as i32,
        hkv: hkv as i32,
        l: l as i32,
        s: s as i32,
        d: d as i32,
        dv: dv as i32,
        scale,
        ..Default::default()
    };
    for i in 0..3 {
        p.qs[i] = dq.strides[i] as i64;
        p.ks[i] = dk.strides[i] as i64;
        p.vs[i] = dvd.strides[i] as i64;
    }
    let mut keep = vec![dq, dk, dvd];
    match mask {
        AttentionMask::None => {}
        AttentionMask::Causal => p.mkind = 1,
        AttentionMask::Array => {
            let m = &inputs[3];
            if m.dtype() != Dtype::Bool && m.dtype() != t {
                return Ok(None);
            }
            let dm = m.data()?;
            p.mask = device_ptr(g, &dm, m.dtype())?;
            let st = broadcast_strides(m.shape(), &dm.strides, &[b, hq, l, s]);
            for (i, &x) in st.iter().enumerate() {
                p.ms[i] = x as i64;
            }
            p.mkind = if m.dtype() == Dtype::Bool { 3 } else { 2 };
            keep.push(dm);
        }
    }
    Ok(Some((p, keep)))
}

/// The checks both directions share: f32, f16, bf16 or f64 throughout, head dims up to 256,
/// sizes that fit the kernels' 32-bit indices.
fn supported(inputs: &[Array]) -> bool {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let t = q.dtype();
    let dims = [q.shape(), k.shape(), v.shape()].concat();
    matches!(t, Dtype::F32 | Dtype::F16 | Dtype::Bf16 | Dtype::F64)
        && k.dtype() == t
        && v.dtype() == t
        && q.shape()[3].max(v.shape()[3]) <= 256
        && dims.iter().all(|&x| x <= i32::MAX as usize)
}

/// The function `name` of the attention module for `t`.
fn function(g: &Gpu, t: Dtype, name: &str) -> Result<cudarc::driver::CudaFunction> {
    let c = ctype(t);
    // Half types also get the tensor-core kernel (MMA_KIND names the mma operand type); f64
    // gets only the kernels that compute in f64 (ATTN_F64).
    let kind = match t {
        Dtype::F32 => String::new(),
        Dtype::F64 => "#define ATTN_F64\n".to_string(),
        _ => format!("#define MMA_KIND \"{c}\"\n"),
    };
    g.function(&format!("attention {c}"), name, || format!("{COMMON}\n#define T {c}\n{kind}{SRC}\n"))
}

/// A launch of 4-warp blocks with a warp per item (`n` of them), as `attn_rows` and the
/// backward kernels take.
fn warp_per_item(g: &Gpu, n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (g.grid(n, 4), 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

/// The gradients of attention (`Op::AttentionVjp`): inputs q, k, v, the mask array if any,
/// and the cotangent of the output; dq, dk and dv flattened into one output of `shape`.
pub(crate) fn attention_vjp(
    g: &Gpu,
    inputs: &[Array],
    scale: f32,
    mask: AttentionMask,
    shape: &[usize],
) -> Result<Option<Data>> {
    let ct = &inputs[inputs.len() - 1];
    let t = inputs[0].dtype();
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let want_ct = [q.shape()[0], q.shape()[1], q.shape()[2], v.shape()[3]];
    if !supported(inputs) || ct.dtype() != t || ct.shape() != want_ct {
        return Ok(None);
    }
    let (out, po) = alloc_out(shape, t)?;
    if out.buffer.nbytes() == 0 {
        return Ok(Some(out));
    }
    let Some((p, _keep)) = params(g, inputs, scale, mask, po)? else { return Ok(None) };
    let dc = ct.data()?;
    let dc = if dc.is_row_contiguous(ct.shape()) { dc } else { copy(g, ct)? };
    let pg = device_ptr(g, &dc, t)?;
    let rows = q.size() / q.shape()[3].max(1);
    let keys = k.size() / k.shape()[3].max(1);
    // Each row's (max, 1 / sum, δ) in the compute type (f64 for f64, else f32).
    let stat = DeviceBlock::new(rows.max(1) * 3 * if t == Dtype::F64 { 8 } else { 4 })?;
    let args = [Arg::Attn(&p), Arg::U64(pg), Arg::U64(stat.addr)];
    launch_cfg(g, &function(g, t, "attn_vjp_rows")?, warp_per_item(g, rows), &args)?;
    launch_cfg(g, &function(g, t, "attn_vjp_dq")?, warp_per_item(g, rows), &args)?;
    launch_cfg(g, &function(g, t, "attn_vjp_dkv")?, warp_per_item(g, keys), &args)?;
    Ok(Some(out))
}

/// Launches decode kernel `name` (element type `t`) over (blocks, key splits) with `chunk` keys a split,
/// then, with several splits, the combine pass over the output's `rows` rows of `dv` values.
fn decode_launch(
    g: &Gpu,
    t: Dtype,
    p: &Attn,
    name: &str,
    (blocks, nsplit): (usize, usize),
    chunk: usize,
    (rows, dv): (usize, usize),
) -> Result<()> {
    let part = if nsplit > 1 { Some(DeviceBlock::new(rows * nsplit * (dv + 2) * 4)?) } else { None };
    let ppart = part.as_ref().map_or(0, |x| x.addr);
    let cfg = LaunchConfig { grid_dim: (blocks as u32, nsplit as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    let args = [Arg::Attn(p), Arg::U64(ppart), Arg::I32(nsplit as i32), Arg::I32(chunk as i32)];
    launch_overlapped(g, &function(g, t, name)?, cfg, &args)?;
    if nsplit > 1 {
        let f = function(g, t, if dv.is_multiple_of(4) { "attn_combine_4" } else { "attn_combine_1" })?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (COMBINE_SPLITS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        launch_overlapped(g, &f, cfg, &[Arg::Attn(p), Arg::U64(ppart), Arg::I32(nsplit as i32)])?;
    }
    Ok(())
}

/// softmax(q kᵀ · scale + mask) v; `None` for dtypes or head sizes the kernels lack.
pub(crate) fn attention(
    g: &Gpu,
    inputs: &[Array],
    scale: f32,
    mask: AttentionMask,
    shape: &[usize],
) -> Result<Option<Data>> {
    let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
    let t = q.dtype();
    let (b, hq, l, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, s, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    let dmax = d.max(dv);
    if !supported(inputs) {
        return Ok(None);
    }
    let (mut out, po) = alloc_out(shape, t)?;
    if out.buffer.nbytes() == 0 {
        return Ok(Some(out));
    }
    let Some((mut p, _keep)) = params(g, inputs, scale, mask, po)? else { return Ok(None) };
    if t == Dtype::F64 {
        launch_cfg(g, &function(g, t, "attn_rows")?, warp_per_item(g, b * hq * l), &[Arg::Attn(&p)])?;
        return Ok(Some(out));
    }
    let func = |n: &str| function(g, t, n);
    let rows = (hq / hkv.max(1)) * l;
    let per16 = (16 / t.size()) as i64;
    let rows_kernel = (d == 64 || d == 128)
        && dv == d
        && p.k.is_multiple_of(16)
        && p.v.is_multiple_of(16)
        && p.ks.iter().chain(&p.vs).all(|s| s % per16 == 0);
    if rows <= DECODE_ROWS && rows_kernel {
        // Keys across lanes, a warp a row: split the keys (tiles of 32) so that the grid
        // holds about 16 blocks a multiprocessor (measured best at 128 to 8k keys, one and
        // eight sequences; scripts/cuda-bench/attn_bench.cu).
        let blocks = b * hkv * rows.div_ceil(4);
        let nsplit = (16 * g.sms as usize).div_ceil(blocks).min(s.div_ceil(32)).clamp(1, COMBINE_SPLITS);
        let chunk = s.div_ceil(nsplit).next_multiple_of(32);
        let nsplit = s.div_ceil(chunk).max(1);
        decode_launch(g, t, &p, &format!("attn_decode_rows_{d}"), (blocks, nsplit), chunk, (b * hq * l, dv))?;
    } else if rows <= DECODE_ROWS {
        let epl = if dmax <= 64 {
            2
        } else if dmax <= 128 {
            4
        } else {
            8
        };
        let r = match rows {
            1 => 1,
            2 => 2,
            3 | 4 => 4,
            _ if epl == 8 => 4,
            _ => 8,
        };
        let blocks = b * hkv * rows.div_ceil(r);
        // Split the keys so that the grid fills the GPU about eight times over, each split at
        // least 16 keys: a warp walks its keys one after another (a chain of dependent loads
        // and softmax updates), so short splits keep the chain short (at 768 keys and one
        // sequence: 40+ µs a call with splits of ≥ 64 keys).
        // At most COMBINE_SPLITS: the combine pass gives each split one thread.
        let nsplit = (8 * g.sms as usize).div_ceil(blocks).min(s.div_ceil(16)).clamp(1, COMBINE_SPLITS);
        let chunk = s.div_ceil(nsplit);
        let nsplit = s.div_ceil(chunk.max(1)).max(1);
        decode_launch(g, t, &p, &format!("attn_decode_{epl}_{r}"), (blocks, nsplit), chunk, (b * hq * l, dv))?;
    } else if t != Dtype::F32 && dmax <= 128 {
        let hd = if dmax <= 64 { 64 } else { 128 };
        // Whole rows of K and V as 16-byte vectors when they are aligned and exactly hd wide.
        let aligned = |ptr: u64, st: &[i64; 3]| ptr.is_multiple_of(16) && st.iter().all(|s| s % 8 == 0);
        p.vec = (d == hd && dv == hd && aligned(p.k, &p.ks) && aligned(p.v, &p.vs)) as i32;
        // 64 queries of one head a block (the grouped heads packed together when L < 64).
        let blocks = if l >= 64 { b * hq * l.div_ceil(64) } else { b * hkv * rows.div_ceil(64) };
        let f = func(&format!("attn_mma_{hd}"))?;
        let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        launch_cfg(g, &f, cfg, &[Arg::Attn(&p)])?;
        // The kernel writes [B, L, Hq, Dv] memory: the output is that buffer's transposed view,
        // so the model's transpose back to [B, L, Hq · Dv] needs no copy.
        out.strides = [l * hq * dv, dv, hq * dv, 1].iter().map(|&x| x as isize).collect();
    } else {
        let dm = if dmax <= 64 {
            64
        } else if dmax <= 128 {
            128
        } else {
            256
        };
        let blocks = b * hkv * rows.div_ceil(32);
        let f = func(&format!("attn_flash_{dm}"))?;
        let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        launch_cfg(g, &f, cfg, &[Arg::Attn(&p)])?;
    }
    Ok(Some(out))
}
