//! Convolutions, MLX's layouts: channels last.
//!
//! An input is `[N, spatial..., C_in]` and a weight `[C_out, kernel..., C_in / groups]`, for
//! plain and transposed convolutions alike. Every function here ends in [`conv_general`],
//! which records one [`Op::Conv`]; a transposed convolution is the general one over the input
//! dilated by the stride, padded by `dilation * (k - 1) - padding` (plus `output_padding` on
//! the high side), with the kernel flipped — as MLX builds it.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::primitives::{ConvParams, Op};

use super::{astype, slice};

/// Expands a per-axis parameter: empty means `default` on every axis, one value applies to
/// every axis, otherwise one value per spatial axis.
fn per_axis<T: Copy + std::fmt::Debug>(
    op: &'static str,
    what: &str,
    v: &[T],
    default: T,
    nspatial: usize,
) -> Result<Vec<T>> {
    match v.len() {
        0 => Ok(vec![default; nspatial]),
        1 => Ok(vec![v[0]; nspatial]),
        n if n == nspatial => Ok(v.to_vec()),
        _ => {
            Err(Error::invalid(op, format!("{what} {v:?} needs 1 or {nspatial} values for a {nspatial}-D convolution")))
        }
    }
}

/// Size of an axis of `n` elements with `d - 1` zeros between neighbours.
fn dilated(n: usize, d: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n - 1).saturating_mul(d).saturating_add(1)
    }
}

/// The shared validation and node construction behind every convolution; `op` names the
/// user-facing function in errors.
#[allow(clippy::too_many_arguments)]
fn conv_impl(
    op: &'static str,
    input: &Array,
    weight: &Array,
    stride: &[usize],
    padding_lo: &[isize],
    padding_hi: &[isize],
    kernel_dilation: &[usize],
    input_dilation: &[usize],
    groups: usize,
    flip: bool,
) -> Result<Array> {
    let (xs, ws) = (input.shape(), weight.shape());
    if input.ndim() < 3 {
        return Err(Error::shape(
            op,
            format!("input of shape {xs:?} needs at least 3 dimensions, [N, spatial..., C_in]"),
        ));
    }
    let nsp = input.ndim() - 2;
    if weight.ndim() != input.ndim() {
        return Err(Error::shape(
            op,
            format!(
                "weight of shape {ws:?} needs {} dimensions, [C_out, kernel..., C_in / groups], \
                 for input of shape {xs:?}",
                input.ndim()
            ),
        ));
    }
    if !input.dtype().is_float() {
        return Err(Error::dtype(op, "the input must be a floating-point array", input.dtype()));
    }
    let dtype = crate::promote_types(input.dtype(), weight.dtype());
    if !dtype.is_float() {
        return Err(Error::dtype(op, "the weight must promote with the input to a floating-point type", dtype));
    }
    let (cin, cout, cin_g) = (xs[nsp + 1], ws[0], ws[nsp + 1]);
    if groups == 0 {
        return Err(Error::invalid(op, "groups must be at least 1"));
    }
    if cin % groups != 0 {
        return Err(Error::shape(
            op,
            format!("{groups} groups do not divide the {cin} input channels of input {xs:?}"),
        ));
    }
    if cout % groups != 0 {
        return Err(Error::shape(
            op,
            format!("{groups} groups do not divide the {cout} output channels of weight {ws:?}"),
        ));
    }
    if cin_g * groups != cin {
        return Err(Error::shape(
            op,
            format!(
                "input {xs:?} has {cin} channels but weight {ws:?} with groups={groups} expects \
                 {} (its last axis times groups)",
                cin_g * groups
            ),
        ));
    }
    if ws[1..=nsp].contains(&0) {
        return Err(Error::shape(op, format!("weight {ws:?} has an empty kernel axis")));
    }
    let stride = per_axis(op, "stride", stride, 1, nsp)?;
    let mut plo = per_axis(op, "padding", padding_lo, 0, nsp)?;
    let mut phi = per_axis(op, "padding", padding_hi, 0, nsp)?;
    let kdil = per_axis(op, "kernel dilation", kernel_dilation, 1, nsp)?;
    let idil = per_axis(op, "input dilation", input_dilation, 1, nsp)?;
    for (what, v) in [("stride", &stride), ("kernel dilation", &kdil), ("input dilation", &idil)] {
        if v.contains(&0) {
            return Err(Error::invalid(op, format!("{what} must be at least 1 on every axis; got {v:?}")));
        }
    }

    // Output sizes, and negative padding (a crop) turned into a slice of the input plus
    // non-negative padding that covers exactly the same dilated, padded sequence.
    let mut out_shape = Vec::with_capacity(input.ndim());
    out_shape.push(xs[0]);
    let (mut start, mut stop) = (vec![0isize; input.ndim()], vec![isize::MAX; input.ndim()]);
    let mut cropped = false;
    for i in 0..nsp {
        let (n, id) = (xs[i + 1], idil[i] as i128);
        let extent = dilated(n, idil[i]) as i128 + plo[i] as i128 + phi[i] as i128;
        let kext = dilated(ws[i + 1], kdil[i]) as i128;
        if extent < kext {
            return Err(Error::shape(
                op,
                format!(
                    "axis {} of input {xs:?} is {extent} long after dilation and padding \
                     (lo {padding_lo:?}, hi {padding_hi:?}), shorter than the dilated kernel \
                     ({kext}) of weight {ws:?}",
                    i + 1
                ),
            ));
        }
        out_shape.push(((extent - kext) / stride[i] as i128 + 1) as usize);
        if plo[i] < 0 || phi[i] < 0 {
            // Element j sits at position j * id + lo of the padded sequence [0, extent).
            let lo = plo[i] as i128;
            let first = if lo >= 0 { 0 } else { (-lo + id - 1) / id };
            let last = ((extent - 1 - lo).div_euclid(id)).min(n as i128 - 1);
            let (s, count) = if first <= last { (first, last - first + 1) } else { (0, 0) };
            let new_lo = if count > 0 { s * id + lo } else { 0 };
            let new_hi = extent - new_lo - dilated(count as usize, idil[i]) as i128;
            start[i + 1] = s as isize;
            stop[i + 1] = (s + count) as isize;
            plo[i] = new_lo as isize;
            phi[i] = new_hi as isize;
            cropped = true;
        }
    }
    out_shape.push(cout);
    let x = if cropped { slice(input, &start, &stop, &vec![1; input.ndim()])? } else { input.clone() };
    let params = ConvParams {
        stride,
        padding_lo: plo.iter().map(|&p| p as usize).collect(),
        padding_hi: phi.iter().map(|&p| p as usize).collect(),
        kernel_dilation: kdil,
        input_dilation: idil,
        groups,
        flip,
    };
    Ok(Array::from_op(out_shape, dtype, Op::Conv(params), vec![astype(&x, dtype)?, astype(weight, dtype)?]))
}

/// General N-D convolution (cross-correlation), MLX's `conv_general`.
///
/// `input` is `[N, spatial..., C_in]`, `weight` `[C_out, kernel..., C_in / groups]`; the
/// output is `[N, out..., C_out]`. Each per-axis argument takes one value per spatial axis,
/// a single value for all of them, or none for its default (stride 1, padding 0, dilations
/// 1). `input_dilation` inserts `d - 1` zeros between input elements; `padding_lo` /
/// `padding_hi` add zeros before / after each (dilated) axis, and negative padding crops it;
/// `flip` correlates with the spatially reversed kernel (a true convolution). Output size
/// per axis: `(dilated_in + lo + hi - dilated_kernel) / stride + 1`.
///
/// Unlike MLX (which rejects it), `groups > 1` works for any number of spatial axes, and a
/// negative padding on an input-dilated axis crops the dilated sequence exactly.
#[allow(clippy::too_many_arguments)]
pub fn conv_general(
    input: &Array,
    weight: &Array,
    stride: &[usize],
    padding_lo: &[isize],
    padding_hi: &[isize],
    kernel_dilation: &[usize],
    input_dilation: &[usize],
    groups: usize,
    flip: bool,
) -> Result<Array> {
    conv_impl(
        "conv_general",
        input,
        weight,
        stride,
        padding_lo,
        padding_hi,
        kernel_dilation,
        input_dilation,
        groups,
        flip,
    )
}

/// Checks that `input` has `nsp` spatial axes for the fixed-rank functions.
fn check_rank(op: &'static str, input: &Array, weight: &Array, nsp: usize) -> Result<()> {
    if input.ndim() != nsp + 2 {
        let layout = ["[N, L, C_in]", "[N, H, W, C_in]", "[N, D, H, W, C_in]"][nsp - 1];
        return Err(Error::shape(
            op,
            format!("input of shape {:?} must have {} dimensions, {layout}", input.shape(), nsp + 2),
        ));
    }
    if weight.ndim() != nsp + 2 {
        let layout = ["[C_out, K, C_in]", "[C_out, KH, KW, C_in]", "[C_out, KD, KH, KW, C_in]"][nsp - 1];
        return Err(Error::shape(
            op,
            format!("weight of shape {:?} must have {} dimensions, {layout} (C_in / groups)", weight.shape(), nsp + 2),
        ));
    }
    Ok(())
}

fn signed(v: &[usize]) -> Vec<isize> {
    v.iter().map(|&p| p as isize).collect()
}

/// 1-D convolution (cross-correlation) of `input` `[N, L, C_in]` with `weight`
/// `[C_out, K, C_in / groups]`, giving `[N, L_out, C_out]`; `padding` zeros on both sides.
pub fn conv1d(
    input: &Array,
    weight: &Array,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<Array> {
    check_rank("conv1d", input, weight, 1)?;
    let p = signed(&[padding]);
    conv_impl("conv1d", input, weight, &[stride], &p, &p, &[dilation], &[1], groups, false)
}

/// 2-D convolution (cross-correlation) of `input` `[N, H, W, C_in]` with `weight`
/// `[C_out, KH, KW, C_in / groups]`, giving `[N, H_out, W_out, C_out]`. The pairs are
/// (height, width); `padding` zeros go on both sides of each axis.
pub fn conv2d(
    input: &Array,
    weight: &Array,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    groups: usize,
) -> Result<Array> {
    check_rank("conv2d", input, weight, 2)?;
    let p = signed(&[padding.0, padding.1]);
    conv_impl("conv2d", input, weight, &[stride.0, stride.1], &p, &p, &[dilation.0, dilation.1], &[1, 1], groups, false)
}

/// 3-D convolution (cross-correlation) of `input` `[N, D, H, W, C_in]` with `weight`
/// `[C_out, KD, KH, KW, C_in / groups]`, giving `[N, D_out, H_out, W_out, C_out]`.
pub fn conv3d(
    input: &Array,
    weight: &Array,
    stride: (usize, usize, usize),
    padding: (usize, usize, usize),
    dilation: (usize, usize, usize),
    groups: usize,
) -> Result<Array> {
    check_rank("conv3d", input, weight, 3)?;
    let p = signed(&[padding.0, padding.1, padding.2]);
    conv_impl(
        "conv3d",
        input,
        weight,
        &[stride.0, stride.1, stride.2],
        &p,
        &p,
        &[dilation.0, dilation.1, dilation.2],
        &[1, 1, 1],
        groups,
        false,
    )
}

/// The transposed convolution as a general one: input dilated by the stride, padding
/// `dilation * (k - 1) - padding` low and that plus `output_padding` high, flipped kernel.
#[allow(clippy::too_many_arguments)]
fn conv_transpose_impl(
    op: &'static str,
    input: &Array,
    weight: &Array,
    stride: &[usize],
    padding: &[usize],
    dilation: &[usize],
    output_padding: &[usize],
    groups: usize,
) -> Result<Array> {
    let nsp = stride.len();
    check_rank(op, input, weight, nsp)?;
    let ws = weight.shape();
    let mut lo = Vec::with_capacity(nsp);
    let mut hi = Vec::with_capacity(nsp);
    for i in 0..nsp {
        if dilation[i] == 0 {
            return Err(Error::invalid(op, format!("dilation must be at least 1 on every axis; got {dilation:?}")));
        }
        let span = dilation[i].saturating_mul(ws[i + 1].saturating_sub(1)) as isize;
        lo.push(span - padding[i] as isize);
        hi.push(span - padding[i] as isize + output_padding[i] as isize);
    }
    conv_impl(op, input, weight, &vec![1; nsp], &lo, &hi, dilation, stride, groups, true)
}

/// 1-D transposed convolution of `input` `[N, L, C_in]` with `weight`
/// `[C_out, K, C_in / groups]` (MLX's layout), giving `[N, L_out, C_out]` with
/// `L_out = (L - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1`.
/// It is the gradient of [`conv1d`] with respect to its input: each input element scatters
/// `weight[:, k, :]` to output position `i * stride + k * dilation - padding`.
pub fn conv_transpose1d(
    input: &Array,
    weight: &Array,
    stride: usize,
    padding: usize,
    dilation: usize,
    output_padding: usize,
    groups: usize,
) -> Result<Array> {
    conv_transpose_impl(
        "conv_transpose1d",
        input,
        weight,
        &[stride],
        &[padding],
        &[dilation],
        &[output_padding],
        groups,
    )
}

/// 2-D transposed convolution of `input` `[N, H, W, C_in]` with `weight`
/// `[C_out, KH, KW, C_in / groups]` (MLX's layout), giving `[N, H_out, W_out, C_out]`; per
/// axis `out = (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1`.
/// The pairs are (height, width).
pub fn conv_transpose2d(
    input: &Array,
    weight: &Array,
    stride: (usize, usize),
    padding: (usize, usize),
    dilation: (usize, usize),
    output_padding: (usize, usize),
    groups: usize,
) -> Result<Array> {
    conv_transpose_impl(
        "conv_transpose2d",
        input,
        weight,
        &[stride.0, stride.1],
        &[padding.0, padding.1],
        &[dilation.0, dilation.1],
        &[output_padding.0, output_padding.1],
        groups,
    )
}

/// 3-D transposed convolution of `input` `[N, D, H, W, C_in]` with `weight`
/// `[C_out, KD, KH, KW, C_in / groups]`, giving `[N, D_out, H_out, W_out, C_out]`; sizes as
/// in [`conv_transpose2d`].
pub fn conv_transpose3d(
    input: &Array,
    weight: &Array,
    stride: (usize, usize, usize),
    padding: (usize, usize, usize),
    dilation: (usize, usize, usize),
    output_padding: (usize, usize, usize),
    groups: usize,
) -> Result<Array> {
    conv_transpose_impl(
        "conv_transpose3d",
        input,
        weight,
        &[stride.0, stride.1, stride.2],
        &[padding.0, padding.1, padding.2],
        &[dilation.0, dilation.1, dilation.2],
        &[output_padding.0, output_padding.1, output_padding.2],
        groups,
    )
}
