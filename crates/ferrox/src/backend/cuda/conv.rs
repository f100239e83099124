//! Convolution (`Op::Conv`, up to 3 spatial axes, channels last; strides, padding, kernel and
//! input dilation, groups, flipped kernels) for f32, f16, bf16 and f64: the input unfolded by
//! `im2col` (conv.cu) into a `[rows, groups, taps · C_in/groups]` matrix, then one cuBLAS
//! product per group (a batched GEMM over the groups) with the weight as a transposed view.

use cudarc::driver::DeviceRepr;

use crate::array::{row_major_strides, Array, Data};
use crate::dtype::Dtype;
use crate::error::Result;
use crate::primitives::ConvParams;

use super::alloc::{alloc_out, device_ptr};
use super::compile::COMMON;
use super::context::Gpu;
use super::elementwise::{copy, copy_view};
use super::layout::{ctype, launch, Arg};

const SRC: &str = include_str!("kernels/conv.cu");
const BLOCK: u32 = 256;
/// The most spatial axes (CONV_MAXSP in conv.cu).
const MAXSP: usize = 3;

/// The geometry as the kernel takes it (`struct ConvGeom` of conv.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConvGeom {
    nsp: i64,
    in_sp: [i64; MAXSP],
    x_st: [i64; MAXSP],
    out_sp: [i64; MAXSP],
    ker: [i64; MAXSP],
    stride: [i64; MAXSP],
    pad: [i64; MAXSP],
    kdil: [i64; MAXSP],
    idil: [i64; MAXSP],
    xs_n: i64,
    xs_c: i64,
    groups: i64,
    cin_g: i64,
    taps: i64,
    rows: i64,
    flip: i32,
    pad_: i32,
}

// SAFETY: a plain #[repr(C)] struct matching the kernel's parameter type.
unsafe impl DeviceRepr for ConvGeom {}

/// `x` [N, spatial..., C_in] convolved with `w` [C_out, kernel..., C_in/groups] into a
/// row-major output of `shape` [N, out..., C_out]; `None` for integer dtypes or more than 3
/// spatial axes.
pub(crate) fn conv(g: &Gpu, inputs: &[Array], p: &ConvParams, shape: &[usize], dtype: Dtype) -> Result<Option<Data>> {
    let (x, w) = (&inputs[0], &inputs[1]);
    let nsp = x.ndim().saturating_sub(2);
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16 | Dtype::F64)
        || x.dtype() != dtype
        || w.dtype() != dtype
        || !(1..=MAXSP).contains(&nsp)
        || p.groups == 0
    {
        return Ok(None);
    }
    let (cin, cout) = (x.shape()[nsp + 1], shape[nsp + 1]);
    let (groups, cin_g, cout_g) = (p.groups, cin / p.groups, cout / p.groups);
    let taps: usize = w.shape()[1..=nsp].iter().product();
    let rows: usize = shape[..=nsp].iter().product();
    let (out, po) = alloc_out(shape, dtype)?;
    if rows * cout == 0 {
        return Ok(Some(out));
    }
    let k = taps * cin_g;
    if k == 0 {
        return Ok(None);
    }
    let dx = x.data()?;
    let mut geom = ConvGeom {
        nsp: nsp as i64,
        xs_n: dx.strides[0] as i64,
        xs_c: dx.strides[nsp + 1] as i64,
        groups: groups as i64,
        cin_g: cin_g as i64,
        taps: taps as i64,
        rows: rows as i64,
        flip: p.flip as i32,
        ..Default::default()
    };
    for i in 0..nsp {
        geom.in_sp[i] = x.shape()[i + 1] as i64;
        geom.x_st[i] = dx.strides[i + 1] as i64;
        geom.out_sp[i] = shape[i + 1] as i64;
        geom.ker[i] = w.shape()[i + 1] as i64;
        geom.stride[i] = p.stride[i] as i64;
        geom.pad[i] = p.padding_lo[i] as i64;
        geom.kdil[i] = p.kernel_dilation[i] as i64;
        geom.idil[i] = p.input_dilation[i] as i64;
    }
    let (col, pcol) = alloc_out(&[rows, groups, k], dtype)?;
    let px = device_ptr(g, &dx, dtype)?;
    let f = g.function(&format!("conv {}", ctype(dtype)), "im2col", || {
        format!("{COMMON}\n#define T {}\n{SRC}\n", ctype(dtype))
    })?;
    launch(g, &f, g.grid(rows * groups * k, BLOCK), BLOCK, &[Arg::U64(pcol), Arg::U64(px), Arg::Conv(&geom)])?;
    // Per group: [rows, k] (rows `groups · k` apart) @ the group's [k, cout_g] (its weight rows
    // read transposed).
    let cols = Array::from_data(
        vec![groups, rows, k],
        dtype,
        Data { strides: vec![k as isize, (groups * k) as isize, 1], ..col },
    );
    let wd = copy(g, w)?;
    let wt = Array::from_data(
        vec![groups, k, cout_g],
        dtype,
        Data { strides: vec![(cout_g * k) as isize, 1, k as isize], ..wd },
    );
    let Some(prod) = super::matmul::matmul(g, &[cols, wt], 1.0, 0.0, &[groups, rows, cout_g], dtype)? else {
        return Ok(None);
    };
    if groups == 1 {
        return Ok(Some(Data { strides: row_major_strides(shape), ..prod }));
    }
    // [groups, rows, cout_g] to the output's [rows, groups, cout_g].
    let src = device_ptr(g, &prod, dtype)?;
    let src_st = [cout_g as isize, (rows * cout_g) as isize, 1];
    let dst_st = row_major_strides(&[rows, groups, cout_g]);
    if !copy_view(g, src, &src_st, &[rows, groups, cout_g], dtype, po, &dst_st)? {
        return Ok(None);
    }
    Ok(Some(out))
}
