//! Row kernels over the last axis: softmax, logsumexp, rms_norm, layer_norm, the norms' input
//! gradient (`NormVjp`), and rope. A norm's weight or bias of another float dtype than x (an
//! f32 x with bf16 weights) is converted to x's dtype on the device first — exactly, since x's
//! dtype is their promotion — and so is a rope offset of an integer dtype other than i32 and
//! i64 (to i64) or f16 / bf16 frequencies (to f32).

use cudarc::driver::LaunchConfig;

use crate::array::{Array, Data};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr, DeviceBlock};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::{astype_array, copy};
use super::layout::{ctype, launch, launch_cfg, launch_overlapped_1d, Arg, Layout};

const SRC: &str = include_str!("kernels/fast.cu");
/// Elements of a row one block of the split logsumexp takes (about).
const SPLIT_ROW: usize = 4096;
/// Threads per block of rope.
const ROPE_BLOCK: u32 = 64;
/// Rows of one position a `rope_heads` thread turns (fast.cu's ROPE_HEADS).
const ROPE_HEADS: usize = 8;
/// Positions from which rope runs `rope_heads`.
const ROPE_SHARED_FROM: usize = 16;
/// Threads per block (FBLOCK in fast.cu).
const BLOCK: u32 = 256;
/// Warps a block.
const WARPS: usize = BLOCK as usize / 32;

fn function(g: &Gpu, t: Dtype, name: &str) -> Result<cudarc::driver::CudaFunction> {
    g.function(&format!("fast {}", ctype(t)), name, || format!("{COMMON}\n#define T {}\n{SRC}\n", ctype(t)))
}

/// `x` as row-major data on the device (a copy if it is not row-major), and its address.
fn row_major(g: &Gpu, x: &Array) -> Result<(Data, u64)> {
    let d = x.data()?;
    let d = if d.is_row_contiguous(x.shape()) { d } else { copy(g, x)? };
    let p = device_ptr(g, &d, x.dtype())?;
    Ok((d, p))
}

/// Rows and row length of `shape` (the last axis).
fn rows(shape: &[usize]) -> (usize, usize) {
    let n = *shape.last().unwrap_or(&1);
    (shape.iter().product::<usize>().checked_div(n).unwrap_or(0), n)
}

/// A weight or bias vector of `n` (broadcast) as the kernels read it, in x's dtype `t`: its
/// address and stride (0 and 0 for none), and the data behind the address, which the caller
/// keeps until the launch. A float vector of another dtype is converted (exactly: `t` is the
/// promotion of both); `None` for an integer or bool one (the CPU handles that).
fn vector(g: &Gpu, v: Option<&Array>, n: usize, t: Dtype) -> Result<Option<(u64, i64, Option<Data>)>> {
    let Some(v) = v else { return Ok(Some((0, 0, None))) };
    let converted;
    let v = if v.dtype() == t {
        v
    } else if v.dtype().is_float() {
        let Some(c) = astype_array(g, v, t)? else { return Ok(None) };
        converted = c;
        &converted
    } else {
        return Ok(None);
    };
    let d = v.data()?;
    let st = broadcast_strides(v.shape(), &d.strides, &[n]);
    Ok(Some((device_ptr(g, &d, t)?, st[0] as i64, Some(d))))
}

/// Runs row kernel `name` (one block per row of x's last axis; fast.cu's row kernels) into a
/// fresh output of `out_shape` and x's dtype, with arguments (out, x, rows, n, `extra`...).
/// `None` for a non-float x.
fn row_kernel(g: &Gpu, name: &str, x: &Array, out_shape: &[usize], extra: &[Arg]) -> Result<Option<Data>> {
    row_kernel_by(g, name, 1, x, out_shape, extra)
}

/// [`row_kernel`] for a kernel whose blocks take `per_block` rows each.
fn row_kernel_by(
    g: &Gpu,
    name: &str,
    per_block: usize,
    x: &Array,
    out_shape: &[usize],
    extra: &[Arg],
) -> Result<Option<Data>> {
    let t = x.dtype();
    if !t.is_float() {
        return Ok(None);
    }
    let (r, n) = rows(x.shape());
    let (out, po) = alloc_out(out_shape, t)?;
    if r * n == 0 {
        return Ok(Some(out));
    }
    let (_keep, px) = row_major(g, x)?;
    let f = function(g, t, name)?;
    let mut args = vec![Arg::U64(po), Arg::U64(px), Arg::I64(r as i64), Arg::I64(n as i64)];
    args.extend_from_slice(extra);
    launch_overlapped_1d(g, &f, g.grid(r, per_block as u32), BLOCK, &args)?;
    Ok(Some(out))
}

/// Softmax over the last axis.
pub(crate) fn softmax(g: &Gpu, x: &Array, shape: &[usize]) -> Result<Option<Data>> {
    row_kernel(g, "softmax", x, shape, &[])
}

/// log(sum(exp(x))) over the last axis (kept as size 1).
pub(crate) fn logsumexp(g: &Gpu, x: &Array, shape: &[usize]) -> Result<Option<Data>> {
    if x.shape().last() == Some(&0) && x.size() == 0 && shape.iter().product::<usize>() > 0 {
        return Ok(None);
    }
    let (r, n) = rows(x.shape());
    let t = x.dtype();
    // A few long rows (a vocabulary's logits): blocks split each row, a second kernel joins.
    if t.is_float() && n >= 2 * SPLIT_ROW && r < g.sms as usize {
        let parts = n.div_ceil(SPLIT_ROW).min(BLOCK as usize);
        let (out, po) = alloc_out(shape, t)?;
        let (_keep, px) = row_major(g, x)?;
        let acc = if t == Dtype::F64 { 8 } else { 4 };
        let part = DeviceBlock::new(r * parts * 2 * acc)?;
        let cfg = LaunchConfig { grid_dim: (parts as u32, r as u32, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let args = [Arg::U64(part.addr), Arg::U64(px), Arg::I64(n as i64), Arg::I64(parts as i64)];
        launch_cfg(g, &function(g, t, "logsumexp_part")?, cfg, &args)?;
        let args = [Arg::U64(po), Arg::U64(part.addr), Arg::I64(parts as i64)];
        launch(g, &function(g, t, "logsumexp_join")?, r as u32, BLOCK, &args)?;
        return Ok(Some(out));
    }
    row_kernel(g, "logsumexp", x, shape, &[])
}

/// RMS normalization over the last axis, times an optional weight.
pub(crate) fn rms_norm(g: &Gpu, x: &Array, w: Option<&Array>, eps: f32, shape: &[usize]) -> Result<Option<Data>> {
    let (r, n) = rows(shape);
    let Some((pw, ws, _keep)) = vector(g, w, n, x.dtype())? else { return Ok(None) };
    let extra = [Arg::U64(pw), Arg::I64(ws), Arg::F32(eps)];
    // A prompt's rows a warp each; a decode step's few rows a block each.
    if r >= g.sms as usize {
        return row_kernel_by(g, "rms_norm_rows", WARPS, x, shape, &extra);
    }
    row_kernel(g, "rms_norm", x, shape, &extra)
}

/// Layer normalization over the last axis, with optional weight and bias.
pub(crate) fn layer_norm(
    g: &Gpu,
    x: &Array,
    w: Option<&Array>,
    b: Option<&Array>,
    eps: f32,
    shape: &[usize],
) -> Result<Option<Data>> {
    let (_, n) = rows(shape);
    let t = x.dtype();
    let (Some((pw, ws, _keep_w)), Some((pb, bs, _keep_b))) = (vector(g, w, n, t)?, vector(g, b, n, t)?) else {
        return Ok(None);
    };
    row_kernel(g, "layer_norm", x, shape, &[Arg::U64(pw), Arg::I64(ws), Arg::U64(pb), Arg::I64(bs), Arg::F32(eps)])
}

/// The input gradient of rms_norm (`centered` false) or layer_norm over the last axis, for
/// the cotangent `ct` (shaped like x) and an optional weight.
pub(crate) fn norm_vjp(
    g: &Gpu,
    x: &Array,
    w: Option<&Array>,
    ct: &Array,
    eps: f32,
    centered: bool,
    shape: &[usize],
) -> Result<Option<Data>> {
    let (_, n) = rows(shape);
    let t = x.dtype();
    if ct.dtype() != t || ct.shape() != x.shape() {
        return Ok(None);
    }
    let Some((pw, ws, _keep_w)) = vector(g, w, n, t)? else { return Ok(None) };
    let (_keep, pg) = row_major(g, ct)?;
    let extra = [Arg::U64(pg), Arg::U64(pw), Arg::I64(ws), Arg::F32(eps), Arg::I32(centered as i32)];
    row_kernel(g, "norm_vjp", x, shape, &extra)
}

/// The KV-cache writes an [`Op::RopeWrite`](crate::primitives::Op::RopeWrite) joins into a
/// decode step's rope.
pub(crate) struct CacheWrites<'a> {
    /// The key cache `[B, Hk, S, D]` (row-major, held by nothing else: written in place).
    pub keys: &'a Array,
    /// The first rotated head written to it.
    pub keys_from: usize,
    /// The value rows' source `[B, H', 1, D]`, the first of its heads written, and the value
    /// cache (as the key cache).
    pub values: Option<(&'a Array, usize, &'a Array)>,
}

/// Rotary position embedding of x [..., L, D] (built-in frequencies, or custom f32 ones in
/// `freqs`; the offset is read on the device, so a cache length computed there needs no
/// round trip). With `writes` (one position), the rotated key heads and the value rows also
/// go to the caches at the offset.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope(
    g: &Gpu,
    x: &Array,
    offset: &Array,
    freqs: Option<&Array>,
    writes: Option<&CacheWrites>,
    dims: usize,
    traditional: bool,
    base: f32,
    scale: f32,
    shape: &[usize],
) -> Result<Option<Data>> {
    let t = x.dtype();
    if !t.is_float() || shape.len() < 2 {
        return Ok(None);
    }
    let Some(angles) = rope_angles(g, offset, freqs, dims)? else { return Ok(None) };
    let nd = shape.len();
    let (l, d) = (shape[nd - 2], shape[nd - 1]);
    let total: usize = shape.iter().product();
    let (out, po) = alloc_out(shape, t)?;
    if total == 0 {
        return Ok(Some(out));
    }
    // Rows are read in place through their strides (q and k arrive as transposed views) when
    // each row is contiguous; otherwise from a row-major copy.
    let dx = x.data()?;
    let in_place = dx.strides[nd - 1] == 1 || d == 1;
    let row_strides = |st: &[isize]| Layout::new(&shape[..nd - 1], &[st[..nd - 1].to_vec()]);
    let (keep, rows_layout) = match row_strides(&dx.strides).filter(|_| in_place) {
        Some(lay) => (dx, lay),
        None => {
            let c = copy(g, x)?;
            let lay = row_strides(&c.strides).expect("row-major rows collapse to one axis");
            (c, lay)
        }
    };
    let px = device_ptr(g, &keep, t)?;
    // Over a prompt a thread takes ROPE_HEADS rows of one position (one angle for all), over a
    // decode step one: a thread per rotated pair or unrotated feature of those rows, in small
    // blocks (a decode step's few thousand threads spread over many multiprocessors).
    let rows = total / d;
    let (kernel, per_thread) = match writes {
        Some(_) => ("rope_write", 1),
        None if l >= ROPE_SHARED_FROM => ("rope_heads", ROPE_HEADS),
        None => ("rope", 1),
    };
    let mut items = (rows / l).div_ceil(per_thread) * l * (d - dims / 2);
    let f = function(g, t, kernel)?;
    let mut args = vec![
        Arg::U64(po),
        Arg::U64(px),
        Arg::Layout(&rows_layout),
        Arg::U64(angles.offset),
        Arg::I32(angles.off64),
        Arg::I64(angles.off_value),
        Arg::I64(rows as i64),
        Arg::I64(l as i64),
        Arg::I64(d as i64),
        Arg::I64(dims as i64),
        Arg::I32(traditional as i32),
        Arg::F32(base),
        Arg::F32(scale),
        Arg::U64(angles.freqs),
        Arg::I64(angles.fs),
    ];
    let _keep_caches = match writes {
        Some(w) => {
            let (extra, value_items, keep) = cache_args(g, w, shape, t)?;
            args.extend(extra);
            items += value_items;
            keep
        }
        None => Vec::new(),
    };
    launch_overlapped_1d(g, &f, g.grid(items, ROPE_BLOCK), ROPE_BLOCK, &args)?;
    Ok(Some(out))
}

/// A rope's position and frequencies as its kernels read them (ROPE_ARGS of fast.cu, GemvRope
/// of gemv.cu; common.cuh's `rope_offset`).
pub(crate) struct RopeAngles {
    /// The offset's device address (0 when it is `off_value`).
    pub offset: u64,
    /// 1: the offset is an i64, 0: an i32, 2: it is `off_value`.
    pub off64: i32,
    /// The offset, when it was on the host.
    pub off_value: i64,
    /// The custom frequencies' device address (f32), or 0.
    pub freqs: u64,
    /// Their stride.
    pub fs: i64,
    /// What the addresses point into, kept until the launch.
    keep: Vec<Data>,
}

impl RopeAngles {
    /// The data its addresses point into.
    pub(crate) fn into_keep(self) -> Vec<Data> {
        self.keep
    }
}

/// [`RopeAngles`] of an integer scalar `offset` and the frequencies of `dims / 2` pairs, or
/// None where the kernels cannot read them.
pub(crate) fn rope_angles(g: &Gpu, offset: &Array, freqs: Option<&Array>, dims: usize) -> Result<Option<RopeAngles>> {
    let f32_freqs = |f: &Array| matches!(f.dtype(), Dtype::F32 | Dtype::F16 | Dtype::Bf16);
    if offset.size() != 1 || !offset.dtype().is_integer() || freqs.is_some_and(|f| !f32_freqs(f)) {
        return Ok(None);
    }
    // The kernels read an i32 or i64 offset and f32 frequencies: others are converted on the
    // device first (an offset as the CPU's cast to i64 does; f16 / bf16 frequencies exactly).
    let (off_i64, freqs_f32);
    let offset = if matches!(offset.dtype(), Dtype::I32 | Dtype::I64) {
        offset
    } else {
        let Some(c) = astype_array(g, offset, Dtype::I64)? else { return Ok(None) };
        off_i64 = c;
        &off_i64
    };
    let freqs = match freqs {
        Some(f) if f.dtype() != Dtype::F32 => {
            let Some(c) = astype_array(g, f, Dtype::F32)? else { return Ok(None) };
            freqs_f32 = c;
            Some(&freqs_f32)
        }
        f => f,
    };
    let mut keep = Vec::new();
    let (pf, fs) = match freqs {
        Some(f) => {
            let d = f.data()?;
            let st = broadcast_strides(f.shape(), &d.strides, &[dims / 2]);
            let p = device_ptr(g, &d, Dtype::F32)?;
            keep.push(d);
            (p, st[0] as i64)
        }
        None => (0, 0),
    };
    // An offset only on the host (a Rust integer made into a scalar) goes in as a value, read
    // here: converting it with an op would run a kernel and wait for the GPU, every call.
    let od = offset.data()?;
    let (poff, off64, off_value) = if od.buffer.device_memory().is_none() {
        let bytes = &od.buffer.as_bytes()[od.offset * offset.dtype().size()..];
        let v = match offset.dtype() {
            Dtype::I32 => i32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes")) as i64,
            _ => i64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes")),
        };
        (0, 2, v)
    } else {
        let p = device_ptr(g, &od, offset.dtype())?;
        (p, (offset.dtype() == Dtype::I64) as i32, 0)
    };
    keep.push(od);
    Ok(Some(RopeAngles { offset: poff, off64, off_value, freqs: pf, fs, keep }))
}

/// rope_write's trailing arguments (CACHE_ARGS of fast.cu) for `w` and a rope output of
/// `shape`, the value rows' count of threads, and the data to keep until the launch. The plan
/// (join.rs) made the op only for shapes and caches these fit; anything else is an error.
fn cache_args(g: &Gpu, w: &CacheWrites, shape: &[usize], t: Dtype) -> Result<(Vec<Arg<'static>>, usize, Vec<Data>)> {
    let bad = |what: &str| Error::invalid("rope", format!("joined KV-cache write: {what}"));
    let cache = |c: &Array| -> Result<(Data, u64)> {
        let d = c.data()?;
        if c.dtype() != t || c.ndim() != 4 || d.offset != 0 || !d.is_row_contiguous(c.shape()) {
            return Err(bad("the cache is not a row-major array of the rope's dtype"));
        }
        let p = device_ptr(g, &d, t)?;
        Ok((d, p))
    };
    let ks = w.keys.shape();
    if shape.len() != 4 || ks.len() != 4 {
        return Err(bad(&format!("rope output {shape:?} and key cache {ks:?} are not 4-D")));
    }
    let (b, heads, kv, len, d) = (shape[0], shape[1], ks[1], ks[2], shape[3]);
    if shape[2] != 1 || ks[0] != b || ks[3] != d || w.keys_from + kv > heads {
        return Err(bad(&format!("rope output {shape:?} and key cache {ks:?} do not match")));
    }
    let (kd, pk) = cache(w.keys)?;
    let mut keep = vec![kd];
    let (mut pv, mut psrc, mut vs, mut value_items) = (0, 0, [0; 3], 0);
    if let Some((src, from, vc)) = w.values {
        let sd = src.data()?;
        let ss = src.shape();
        if vc.shape() != ks || ss.len() != 4 || ss[0] != b || ss[3] != d || from + kv > ss[1] {
            return Err(bad(&format!("value source {ss:?} and value cache {:?} do not match", vc.shape())));
        }
        let (vd, p) = cache(vc)?;
        pv = p;
        psrc = device_ptr(g, &sd, t)?.wrapping_add_signed((from as isize * sd.strides[1]) as i64 * t.size() as i64);
        vs = [sd.strides[0] as i64, sd.strides[1] as i64, sd.strides[3] as i64];
        value_items = b * kv * d;
        keep.extend([vd, sd]);
    }
    let args = vec![
        Arg::U64(pk),
        Arg::I64(w.keys_from as i64),
        Arg::U64(pv),
        Arg::U64(psrc),
        Arg::I64(vs[0]),
        Arg::I64(vs[1]),
        Arg::I64(vs[2]),
        Arg::I64(kv as i64),
        Arg::I64(len as i64),
        Arg::I64(heads as i64),
    ];
    Ok((args, value_items, keep))
}
