//! Products of gathered matrices through one tiled kernel (kernels/gather_mm.cu): `gather_mm`
//! (`Op::GatherMm`, dense), and — with the quantized module's dequantizing tile loader —
//! `gather_qmm` with more rows than the matrix-vector kernel takes or without the transpose,
//! and `quantized_matmul` of a stack of matrices. Output rows are (pair, row of x) in order; a
//! tile of 64 of them runs its k sweep once per run of equal matrix indices, so sorted indices
//! (mixture-of-experts prompts) read each matrix tile once per run.

use cudarc::driver::{CudaFunction, LaunchConfig};

use crate::array::{row_major_strides, Array, Data};
use crate::backend::cpu::iter::collapse;
use crate::dtype::Dtype;
use crate::error::Result;
use crate::shape::broadcast_strides;

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::copy;
use super::layout::{ctype, launch_cfg, Arg, Layout};

/// The tiled kernel's source (after quantized.cu in a quantized module).
pub(crate) const SRC: &str = include_str!("kernels/gather_mm.cu");
/// Output rows and features of a block's tile (GM_BM, GM_BN of gather_mm.cu).
const TILE: usize = 64;

/// Which x matrix and which B matrix each pair of a product takes: offsets over `layout`
/// (operand 0 for x, 1 for B), read through index arrays where those are given.
pub(crate) struct Pairs {
    /// The index shape with the offsets of x (operand 0) and B (operand 1).
    pub(crate) layout: Layout,
    /// The lhs index array's address (0: the offsets are the x matrices).
    pub(crate) lhs: u64,
    /// The rhs index array's address (0: the offsets are the B matrices).
    pub(crate) rhs: u64,
    _keep: Vec<Data>,
}

impl Pairs {
    /// Pairs read from the index arrays `lhs` and `rhs` (uint32, one shape); `None` for other
    /// index dtypes or too many axes.
    pub(crate) fn indexed(g: &Gpu, lhs: &Array, rhs: &Array) -> Result<Option<Pairs>> {
        if lhs.dtype() != Dtype::U32 || rhs.dtype() != Dtype::U32 || lhs.shape() != rhs.shape() {
            return Ok(None);
        }
        let (dl, dr) = (lhs.data()?, rhs.data()?);
        let Some(layout) = Layout::new(lhs.shape(), &[dl.strides.clone(), dr.strides.clone()]) else { return Ok(None) };
        let (pl, pr) = (device_ptr(g, &dl, Dtype::U32)?, device_ptr(g, &dr, Dtype::U32)?);
        Ok(Some(Pairs { layout, lhs: pl, rhs: pr, _keep: vec![dl, dr] }))
    }

    /// The pairs of a batched product: the output's batch axes `batch` broadcast from x's
    /// batch axes `xb` and B's `bb` (each matrix stack taken as row-major).
    pub(crate) fn batched(batch: &[usize], xb: &[usize], bb: &[usize]) -> Option<Pairs> {
        let flat = |s: &[usize]| broadcast_strides(s, &row_major_strides(s), batch);
        let layout = Layout::new(batch, &[flat(xb), flat(bb)])?;
        Some(Pairs { layout, lhs: 0, rhs: 0, _keep: Vec::new() })
    }

    /// The number of pairs.
    pub(crate) fn len(&self) -> usize {
        self.layout.n()
    }
}

/// B as the tiled kernel reads it: its (matrix, scales, biases) addresses, the strides of a
/// dense B [matrix, k, n] (unused for a stored one), the group size and whether a stored
/// matrix is kept transposed ([N, K]).
pub(crate) struct BSide {
    /// Addresses of the matrices (dense elements or packed words), scales and biases (0 when
    /// absent).
    pub(crate) ptrs: [u64; 3],
    /// A dense B's element strides between matrices, along k and along n.
    pub(crate) strides: [i64; 3],
    /// A stored matrix's group size.
    pub(crate) group_size: usize,
    /// A stored matrix kept as [N, K].
    pub(crate) trans: bool,
}

/// The product's dimensions: rows of each x matrix, k, n, and how many x and B matrices there
/// are (indices past them are clamped).
pub(crate) struct Dims {
    /// Rows of one x matrix.
    pub(crate) m: usize,
    /// The reduced axis.
    pub(crate) k: usize,
    /// Output features.
    pub(crate) n: usize,
    /// x matrices.
    pub(crate) nx: usize,
    /// B matrices.
    pub(crate) nw: usize,
}

/// Runs the tiled kernel `f` (of a module holding gather_mm.cu) into a fresh row-major output
/// of `shape` ([pairs..., m, n]) and x's dtype.
pub(crate) fn tiled(
    g: &Gpu,
    f: &CudaFunction,
    x: &Array,
    b: &BSide,
    pairs: &Pairs,
    d: &Dims,
    shape: &[usize],
) -> Result<Data> {
    let (out, po) = alloc_out(shape, x.dtype())?;
    let rows = pairs.len() * d.m;
    if rows * d.n == 0 {
        return Ok(out);
    }
    let xd = x.data()?;
    let xd = if xd.is_row_contiguous(x.shape()) { xd } else { copy(g, x)? };
    let px = device_ptr(g, &xd, x.dtype())?;
    let args = [
        Arg::U64(po),
        Arg::U64(px),
        Arg::U64(b.ptrs[0]),
        Arg::U64(b.ptrs[1]),
        Arg::U64(b.ptrs[2]),
        Arg::I64(d.m as i64),
        Arg::I64(d.n as i64),
        Arg::I64(d.k as i64),
        Arg::I64(pairs.len() as i64),
        Arg::U64(pairs.lhs),
        Arg::U64(pairs.rhs),
        Arg::Layout(&pairs.layout),
        Arg::I64(d.nx.max(1) as i64),
        Arg::I64(d.nw.max(1) as i64),
        Arg::I64(b.strides[0]),
        Arg::I64(b.strides[1]),
        Arg::I64(b.strides[2]),
        Arg::I64(b.group_size as i64),
        Arg::I32(b.trans as i32),
    ];
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(TILE) as u32, d.n.div_ceil(TILE) as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch_cfg(g, f, cfg, &args)?;
    Ok(out)
}

/// `gather_mm` (`Op::GatherMm`): inputs a [..., M, K], b [..., K, N], lhs and rhs (uint32,
/// one shape), output [index shape..., M, N]; float32, float16 and bfloat16, in f32.
pub(crate) fn gather_mm(g: &Gpu, inputs: &[Array], shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let (a, b) = (&inputs[0], &inputs[1]);
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16) || a.dtype() != dtype || b.dtype() != dtype {
        return Ok(None);
    }
    let Some(pairs) = Pairs::indexed(g, &inputs[2], &inputs[3])? else { return Ok(None) };
    let (m, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let n = b.shape()[b.ndim() - 1];
    let dims = Dims { m, k, n, nx: a.size() / (m * k).max(1), nw: b.size() / (k * n).max(1) };
    // B's matrices one stride apart (its batch axes collapse to one), else a row-major copy.
    let nb = b.ndim() - 2;
    let bd = b.data()?;
    let (bs, bst) = collapse(&b.shape()[..nb], &[bd.strides[..nb].to_vec()]);
    let (bd, mat) = match bs.len() {
        0 => (bd, 0),
        1 => (bd, bst[0][0] as i64),
        _ => (copy(g, b)?, (k * n) as i64),
    };
    let strides = [mat, bd.strides[nb] as i64, bd.strides[nb + 1] as i64];
    let side = BSide { ptrs: [device_ptr(g, &bd, dtype)?, 0, 0], strides, group_size: 0, trans: false };
    let c = ctype(dtype);
    let f = g.function(&format!("gather_mm {c}"), "gather_mm_tiled", || format!("{COMMON}\n#define T {c}\n{SRC}\n"))?;
    Ok(Some(tiled(g, &f, a, &side, &pairs, &dims, shape)?))
}
