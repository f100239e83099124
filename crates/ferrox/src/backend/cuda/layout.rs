//! Strided views as kernel arguments, and kernel launches.

use cudarc::driver::{CudaFunction, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::backend::cpu::iter::collapse;
use crate::dtype::Dtype;
use crate::error::Result;

use super::context::{cuda_err, Gpu};

/// The most axes a kernel takes after collapsing (an op with more falls back to the CPU).
pub(crate) const MAXD: usize = 8;

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
}

/// Launches `f` on the GPU's stream with `grid` blocks of `block` threads.
pub(crate) fn launch(g: &Gpu, f: &CudaFunction, grid: u32, block: u32, args: &[Arg]) -> Result<()> {
    let cfg = LaunchConfig { grid_dim: (grid.max(1), 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
    launch_cfg(g, f, cfg, args)
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
        };
    }
    // SAFETY: each kernel's Rust caller passes the arguments its CUDA signature declares,
    // with device addresses of live buffers of the right sizes.
    unsafe { b.launch(cfg) }.map_err(|e| cuda_err("launching a kernel", e))?;
    Ok(())
}
