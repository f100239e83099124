//! Indexing and assembling kernels: gather (embedding lookups), take_along_axis,
//! slice_update (KV-cache writes), concatenate and arange.
//!
//! Gathers move elements by size only. Index arrays of any integer dtype are read on the
//! device (several of different dtypes are converted to i64 first): a negative index counts
//! from the end, and an index out of range is clamped into it (a GPU kernel cannot stop to
//! raise an error; the CPU backend reports one).

use cudarc::driver::DeviceRepr;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::{astype_array, bits_type, copy_view, run_copy_family};
use super::layout::{ctype, launch, Arg, Layout};

const SRC: &str = include_str!("kernels/index.cu");
const BLOCK: u32 = 256;

/// The index arrays of gather and scatter as the kernels take them (`struct Indices` of
/// common.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Indices {
    /// Each index array's device address.
    pub ptr: [u64; 4],
    /// The stride of the axis each indexes (in the source, or the scatter's output).
    pub stride: [i64; 4],
    /// The size of that axis.
    pub size: [i64; 4],
    /// How many index arrays.
    pub n: i32,
    /// Alignment padding.
    pub pad: i32,
}

// SAFETY: a plain #[repr(C)] struct matching the kernel's parameter type.
unsafe impl DeviceRepr for Indices {}

/// Integer index arrays (gather's, scatter's) in one dtype, which the kernels take: as they
/// are when they share one, else each converted to i64 on the device (the CPU reads every
/// index as an i64, so the indices are the same). `None` for a non-integer one or past the
/// kernels' axis limit.
pub(crate) fn one_index_dtype(g: &Gpu, idxs: &[Array]) -> Result<Option<Vec<Array>>> {
    if !idxs.iter().all(|i| i.dtype().is_integer()) {
        return Ok(None);
    }
    if idxs.windows(2).all(|w| w[0].dtype() == w[1].dtype()) {
        return Ok(Some(idxs.to_vec()));
    }
    idxs.iter()
        .map(|i| if i.dtype() == Dtype::I64 { Ok(Some(i.clone())) } else { astype_array(g, i, Dtype::I64) })
        .collect()
}

/// Kernel `name` for elements of `t` (moved by size) and indices of `idx`.
fn function(g: &Gpu, t: Dtype, idx: Dtype, name: &str) -> Result<cudarc::driver::CudaFunction> {
    let (tb, ti) = (ctype(bits_type(t)), ctype(idx));
    g.function(&format!("index {tb} {ti}"), name, || format!("{COMMON}\n#define T {tb}\n#define I {ti}\n{SRC}\n"))
}

/// `Gather`: output = index shape + `slice_sizes`, slice starts from the indices on `axes`.
pub(crate) fn gather(
    g: &Gpu,
    inputs: &[Array],
    axes: &[usize],
    slice_sizes: &[usize],
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let a = &inputs[0];
    if inputs.len() > 5 || a.shape().contains(&0) {
        return Ok(None);
    }
    let Some(idxs) = one_index_dtype(g, &inputs[1..])? else { return Ok(None) };
    let it = idxs.first().map_or(Dtype::I32, |i| i.dtype());
    let idx_shape = &shape[..shape.len() - slice_sizes.len()];
    let da = a.data()?;
    let mut ix = Indices { n: idxs.len() as i32, ..Default::default() };
    let mut istrides = Vec::new();
    let mut keep = Vec::new();
    for (k, (i, &ax)) in idxs.iter().zip(axes).enumerate() {
        let d = i.data()?;
        ix.ptr[k] = device_ptr(g, &d, it)?;
        ix.stride[k] = da.strides[ax] as i64;
        ix.size[k] = a.shape()[ax] as i64;
        istrides.push(broadcast_strides(i.shape(), &d.strides, idx_shape));
        keep.push(d);
    }
    let (Some(li), Some(ls)) =
        (Layout::new(idx_shape, &istrides), Layout::new(slice_sizes, std::slice::from_ref(&da.strides)))
    else {
        return Ok(None);
    };
    let (out, po) = alloc_out(shape, dtype)?;
    let n = li.n() * ls.n();
    if n == 0 {
        return Ok(Some(out));
    }
    let pa = device_ptr(g, &da, dtype)?;
    let f = function(g, dtype, it, "gather")?;
    launch(
        g,
        &f,
        g.grid(n, BLOCK),
        BLOCK,
        &[Arg::U64(po), Arg::U64(pa), Arg::Indices(&ix), Arg::Layout(&li), Arg::Layout(&ls)],
    )?;
    Ok(Some(out))
}

/// `take_along_axis`: out[pos] = a[pos with `axis` replaced by idx[pos]].
pub(crate) fn take_along_axis(
    g: &Gpu,
    a: &Array,
    idx: &Array,
    axis: usize,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    let it = idx.dtype();
    if !it.is_integer() || a.shape()[axis] == 0 {
        return Ok(None);
    }
    let (da, di) = (a.data()?, idx.data()?);
    let mut sa = broadcast_strides(a.shape(), &da.strides, shape);
    sa[axis] = 0;
    let si = broadcast_strides(idx.shape(), &di.strides, shape);
    let Some(l) = Layout::new(shape, &[sa, si]) else { return Ok(None) };
    let (out, po) = alloc_out(shape, dtype)?;
    if l.n() == 0 {
        return Ok(Some(out));
    }
    let (pa, pi) = (device_ptr(g, &da, dtype)?, device_ptr(g, &di, it)?);
    let f = function(g, dtype, it, "take_along_axis")?;
    let args = [
        Arg::U64(po),
        Arg::U64(pa),
        Arg::U64(pi),
        Arg::Layout(&l),
        Arg::I64(a.shape()[axis] as i64),
        Arg::I64(da.strides[axis] as i64),
    ];
    launch(g, &f, g.grid(l.n(), BLOCK), BLOCK, &args)?;
    Ok(Some(out))
}

/// `update` (broadcast to the window) written at `start + i * step` of a row-major copy of `x`.
pub(crate) fn slice_update(
    g: &Gpu,
    x: &Array,
    update: &Array,
    start: &[usize],
    step: &[isize],
) -> Result<Option<Data>> {
    let shape = x.shape();
    let dtype = x.dtype();
    if update.dtype() != dtype {
        return Ok(None);
    }
    let du = update.data()?;
    let ost = row_major_strides(shape);
    let (out, po) = match donated(x) {
        Some(d) => {
            let p = device_ptr(g, &d, dtype)?;
            (d, p)
        }
        None => {
            let dx = x.data()?;
            let (out, po) = alloc_out(shape, dtype)?;
            if x.size() > 0 {
                let px = device_ptr(g, &dx, dtype)?;
                if !copy_view(g, px, &dx.strides, shape, dtype, po, &ost)? {
                    return Ok(None);
                }
            }
            (out, po)
        }
    };
    if update.size() > 0 {
        let mut window = vec![1usize; shape.len() - update.ndim()];
        window.extend_from_slice(update.shape());
        let off: isize = start.iter().zip(&ost).map(|(&s, &st)| s as isize * st).sum();
        let wst: Vec<isize> = ost.iter().zip(step).map(|(&s, &k)| s * k).collect();
        let ust = broadcast_strides(update.shape(), &du.strides, &window);
        let pu = device_ptr(g, &du, dtype)?;
        let dst = (po as i64 + off as i64 * dtype.size() as i64) as u64;
        if !copy_view(g, pu, &ust, &window, dtype, dst, &wst)? {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// The data of `x` if the slice_update being computed may write into it: nothing but that
/// node's pending computation holds `x` ([`crate::eval::pending_refs`]), no view shares its buffer, and the
/// buffer is row-major device memory of its own (the CPU backend's rule, for device
/// buffers). A KV cache written one token at a time is this case, and writing in place saves
/// a copy of the whole cache (a kernel and its bytes) per layer and token. Kernels still
/// reading the old contents ran earlier on the same stream, so the write comes after them.
pub(crate) fn donated(x: &Array) -> Option<Data> {
    if std::sync::Arc::strong_count(&x.0) != crate::eval::pending_refs() {
        return None;
    }
    let st = x.state();
    let crate::array::State::Ready(d) = &*st else { return None };
    let exclusive = std::sync::Arc::strong_count(&d.buffer) == 1 && d.buffer.is_device_only();
    (exclusive && d.offset == 0 && d.is_row_contiguous(x.shape())).then(|| d.clone())
}

/// Joins `inputs` along `axis` into a row-major output: one strided copy per input.
pub(crate) fn concatenate(
    g: &Gpu,
    inputs: &[Array],
    axis: usize,
    shape: &[usize],
    dtype: Dtype,
) -> Result<Option<Data>> {
    if inputs.iter().any(|a| a.dtype() != dtype) {
        return Ok(None);
    }
    let (out, po) = alloc_out(shape, dtype)?;
    let ost = row_major_strides(shape);
    let mut at = 0usize;
    for a in inputs {
        if a.size() > 0 {
            let d = a.data()?;
            let pa = device_ptr(g, &d, dtype)?;
            let dst = po + (at * ost[axis] as usize * dtype.size()) as u64;
            if !copy_view(g, pa, &d.strides, a.shape(), dtype, dst, &ost)? {
                return Ok(None);
            }
        }
        at += a.shape()[axis];
    }
    Ok(Some(out))
}

/// `start + i * step` for i in 0..n, computed in f64 and converted as the CPU does.
pub(crate) fn arange(g: &Gpu, start: f64, step: f64, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let (out, po) = alloc_out(shape, dtype)?;
    let n: usize = shape.iter().product();
    if n > 0 {
        let args = [Arg::U64(po), Arg::I64(n as i64), Arg::F64(start), Arg::F64(step)];
        run_copy_family(g, dtype, "arange", n, &args)?;
    }
    Ok(Some(out))
}
