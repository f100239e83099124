//! Strided views as kernel arguments, and kernel launches.

use std::ffi::c_void;

use cudarc::driver::{sys, CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::backend::cpu::iter::collapse;
use crate::dtype::Dtype;
use crate::error::Result;

use super::context::{cuda_err, Gpu};

/// The most axes a kernel takes after collapsing (an op with more falls back to the CPU).
pub(crate) const MAXD: usize = 8;
/// Elements a thread of an elementwise kernel takes as one run (common.cuh's ELEMS).
pub(crate) const RUN: usize = 8;

/// Up to four operands viewed over one shape (`struct Layout` of common.cuh).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    n: i64,
    nd: i32,
    pad: i32,
    shape: [i64; MAXD],
    st: [[i64; MAXD]; 4],
}

// SAFETY: a plain #[repr(C)] struct matching the kernel's parameter type.
unsafe impl DeviceRepr for Layout {}

impl Layout {
    /// `shape` with each operand's strides (axes merged where all operands allow); `None`
    /// past [`MAXD`] axes.
    pub(crate) fn new(shape: &[usize], strides: &[Vec<isize>]) -> Option<Layout> {
        assert!(strides.len() <= 4);
        let n: usize = shape.iter().product();
        let (cs, cst) = collapse(shape, strides);
        if cs.len() > MAXD {
            return None;
        }
        let mut l = Layout { n: n as i64, nd: cs.len() as i32, pad: 0, shape: [0; MAXD], st: [[0; MAXD]; 4] };
        for (i, &s) in cs.iter().enumerate() {
            l.shape[i] = s as i64;
        }
        for (k, st) in cst.iter().enumerate() {
            for (i, &s) in st.iter().enumerate() {
                l.st[k][i] = s as i64;
            }
        }
        Some(l)
    }

    /// The number of elements.
    pub(crate) fn n(&self) -> usize {
        self.n as usize
    }

    /// The threads a kernel over this layout needs: one a run of [`RUN`] elements where the
    /// kernel takes runs (`runs`) and the rows fit them (common.cuh's rows_fit: the last axis a
    /// multiple of RUN long, unit-stride or broadcast in every operand), else one an element.
    /// A grid of one thread an element there left 7 blocks in 8 with nothing to do.
    pub(crate) fn threads(&self, runs: bool) -> usize {
        let last = self.nd as usize;
        let fit = last > 0
            && self.shape[last - 1] % RUN as i64 == 0
            && self.st.iter().all(|st| matches!(st[last - 1], 0 | 1));
        if runs && fit {
            self.n() / RUN
        } else {
            self.n()
        }
    }
}

/// The CUDA C name of a dtype's element type (common.cuh).
pub(crate) fn ctype(d: Dtype) -> &'static str {
    match d {
        Dtype::Bool => "bool",
        Dtype::U8 => "u8",
        Dtype::U16 => "u16",
        Dtype::U32 => "u32",
        Dtype::U64 => "u64",
        Dtype::I8 => "i8",
        Dtype::I16 => "i16",
        Dtype::I32 => "i32",
        Dtype::I64 => "i64",
        Dtype::F16 => "f16",
        Dtype::Bf16 => "bf16",
        Dtype::F32 => "float",
        Dtype::F64 => "double",
    }
}

/// Kernel arguments, pushed in order.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// A device address or any 64-bit integer.
    U64(u64),
    /// A signed 64-bit integer.
    I64(i64),
    /// A 32-bit integer.
    I32(i32),
    /// A float.
    F32(f32),
    /// A double.
    F64(f64),
    /// A strided layout.
    Layout(&'a Layout),
    /// Gather's index arrays.
    Indices(&'a super::index::Indices),
    /// Attention's parameters.
    Attn(&'a super::attention::Attn),
    /// A convolution's geometry.
    Conv(&'a super::conv::ConvGeom),
    /// The rope epilogue of a matrix-vector product.
    GemvRope(&'a super::matmul::GemvRope),
}

/// Launches `f` on the GPU's stream with `grid` blocks of `block` threads.
pub(crate) fn launch(g: &Gpu, f: &CudaFunction, grid: u32, block: u32, args: &[Arg]) -> Result<()> {
    let cfg = LaunchConfig { grid_dim: (grid.max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
    launch_cfg(g, f, cfg, args)
}

/// [`launch_overlapped`] of a 1-D grid of `grid` blocks of `block` threads.
pub(crate) fn launch_overlapped_1d(g: &Gpu, f: &CudaFunction, grid: u32, block: u32, args: &[Arg]) -> Result<()> {
    let cfg = LaunchConfig { grid_dim: (grid.max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
    launch_overlapped(g, f, cfg, args)
}

/// Launches `f` like [`launch_cfg`], allowed to start while the kernel before it in the stream
/// finishes (programmatic dependent launch, sm_90 and later): its blocks may begin once every
/// block of that kernel has started and called `allow_next_kernel()` (or exited), and must
/// call `wait_for_previous_kernel()` (common.cuh) before reading or writing anything an
/// earlier kernel touches — the matrix-vector products prefetch their weights first, the
/// elementwise, fused, norm, rope and decode-attention kernels wait first thing
/// (`OVERLAPPED_START`). Every kernel of a decode step but the argmax / log-sum-exp ones and
/// cuBLAS launches so, which hides most of each launch's latency behind the kernel before.
/// Older GPUs launch it plainly.
pub(crate) fn launch_overlapped(g: &Gpu, f: &CudaFunction, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    if !g.overlapped_launch {
        return launch_cfg(g, f, cfg, args);
    }
    let mut params: Vec<*mut c_void> = args
        .iter()
        .map(|a| match a {
            Arg::U64(v) => v as *const u64 as *mut c_void,
            Arg::I64(v) => v as *const i64 as *mut c_void,
            Arg::I32(v) => v as *const i32 as *mut c_void,
            Arg::F32(v) => v as *const f32 as *mut c_void,
            Arg::F64(v) => v as *const f64 as *mut c_void,
            Arg::Layout(v) => *v as *const Layout as *mut c_void,
            Arg::Indices(v) => *v as *const super::index::Indices as *mut c_void,
            Arg::Attn(v) => *v as *const super::attention::Attn as *mut c_void,
            Arg::Conv(v) => *v as *const super::conv::ConvGeom as *mut c_void,
            Arg::GemvRope(v) => *v as *const super::matmul::GemvRope as *mut c_void,
        })
        .collect();
    let mut attr = sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
        pad: [0; 4],
        // SAFETY: a zeroed union is a valid value of every member.
        value: unsafe { std::mem::zeroed() },
    };
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0.max(1),
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: g.stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: `params` points at each argument's value (alive for the call), in the order the
    // kernel declares them; the function and stream belong to this GPU's bound context.
    unsafe { sys::cuLaunchKernelEx(&config, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }
        .result()
        .map_err(|e| cuda_err("launching a kernel", e))
}

/// Launches `f` on the GPU's stream with the grid, block and dynamic shared memory of `cfg`.
pub(crate) fn launch_cfg(g: &Gpu, f: &CudaFunction, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
    let mut b = g.stream.launch_builder(f);
    for a in args {
        match a {
            Arg::U64(v) => b.arg(v),
            Arg::I64(v) => b.arg(v),
            Arg::I32(v) => b.arg(v),
            Arg::F32(v) => b.arg(v),
            Arg::F64(v) => b.arg(v),
            Arg::Layout(v) => b.arg(*v),
            Arg::Indices(v) => b.arg(*v),
            Arg::Attn(v) => b.arg(*v),
            Arg::Conv(v) => b.arg(*v),
            Arg::GemvRope(v) => b.arg(*v),
        };
    }
    // SAFETY: each kernel's Rust caller passes the arguments its CUDA signature declares,
    // with device addresses of live buffers of the right sizes.
    unsafe { b.launch(cfg) }.map_err(|e| cuda_err("launching a kernel", e))?;
    Ok(())
}
