//! Linear algebra: matmul and its relatives, norms.

use crate::array::Array;
use crate::error::{Error, Result};
use crate::primitives::Op;
use crate::shape::broadcast_shapes;

use super::{astype, expand_dims, reshape_usize, squeeze};

fn matmul_impl(a: &Array, b: &Array, c: Option<&Array>, alpha: f64, beta: f64) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err(Error::shape(
            "matmul",
            format!("inputs must have at least 1 dimension; got {:?} and {:?}", a.shape(), b.shape()),
        ));
    }
    let dtype = crate::promote_types(a.dtype(), b.dtype());
    let dtype = if dtype.is_float() {
        dtype
    } else {
        return Err(Error::dtype("matmul", "only floating-point types are supported", dtype));
    };
    let (a_vec, b_vec) = (a.ndim() == 1, b.ndim() == 1);
    let a2 = if a_vec { expand_dims(a, &[0])? } else { a.clone() };
    let b2 = if b_vec { expand_dims(b, &[-1])? } else { b.clone() };
    let (m, k) = (a2.shape()[a2.ndim() - 2], a2.shape()[a2.ndim() - 1]);
    let (k2, n) = (b2.shape()[b2.ndim() - 2], b2.shape()[b2.ndim() - 1]);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("last axis of {:?} ({k}) does not match second-to-last of {:?} ({k2})", a.shape(), b.shape()),
        ));
    }
    let batch = broadcast_shapes(&[&a2.shape()[..a2.ndim() - 2], &b2.shape()[..b2.ndim() - 2]], "matmul")?;
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let mut inputs = vec![astype(&a2, dtype)?, astype(&b2, dtype)?];
    if let Some(c) = c.filter(|_| beta != 0.0) {
        let cc = astype(c, dtype)?;
        broadcast_shapes(&[cc.shape(), &shape], "addmm").and_then(|s| {
            if s == shape {
                Ok(())
            } else {
                Err(Error::shape(
                    "addmm",
                    format!("c of shape {:?} does not broadcast to the product's shape {shape:?}", c.shape()),
                ))
            }
        })?;
        inputs.push(cc);
    }
    let beta = if inputs.len() == 3 { beta } else { 0.0 };
    let mut out = Array::from_op(shape, dtype, Op::Matmul { alpha, beta }, inputs);
    if a_vec {
        out = squeeze(&out, Some(&[-2]))?;
    }
    if b_vec {
        out = squeeze(&out, Some(&[-1]))?;
    }
    Ok(out)
}

/// Matrix product with NumPy semantics: batched over leading axes (broadcast), and 1-D
/// operands promoted to a row or column and squeezed back.
pub fn matmul(a: &Array, b: &Array) -> Result<Array> {
    matmul_impl(a, b, None, 1.0, 0.0)
}

/// `alpha * (a @ b) + beta * c`, in one pass.
pub fn addmm(c: &Array, a: &Array, b: &Array, alpha: f64, beta: f64) -> Result<Array> {
    if c.ndim() == 0 || a.ndim() < 2 || b.ndim() < 2 {
        let p = super::multiply(&matmul(a, b)?, alpha)?;
        return super::add(&p, &super::multiply(c, beta)?);
    }
    matmul_impl(a, b, Some(c), alpha, beta)
}

/// Inner product over the last axes.
pub fn inner(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return super::multiply(a, b);
    }
    tensordot(a, b, &[a.ndim() as isize - 1], &[b.ndim() as isize - 1])
}

/// Outer product of the flattened inputs.
pub fn outer(a: &Array, b: &Array) -> Result<Array> {
    let a = reshape_usize(a, &[a.size(), 1])?;
    let b = reshape_usize(b, &[1, b.size()])?;
    super::multiply(&a, &b)
}

/// Sums products over `axes_a` of `a` paired with `axes_b` of `b`; the output has the
/// remaining axes of `a` then those of `b`.
pub fn tensordot(a: &Array, b: &Array, axes_a: &[isize], axes_b: &[isize]) -> Result<Array> {
    if axes_a.len() != axes_b.len() {
        return Err(Error::shape("tensordot", "the two axis lists need the same length"));
    }
    let ca: Vec<usize> =
        axes_a.iter().map(|&x| crate::shape::normalize_axis(x, a.ndim(), "tensordot")).collect::<Result<_>>()?;
    let cb: Vec<usize> =
        axes_b.iter().map(|&x| crate::shape::normalize_axis(x, b.ndim(), "tensordot")).collect::<Result<_>>()?;
    for (&i, &j) in ca.iter().zip(&cb) {
        if a.shape()[i] != b.shape()[j] {
            return Err(Error::shape(
                "tensordot",
                format!("axis {i} of {:?} and axis {j} of {:?} differ", a.shape(), b.shape()),
            ));
        }
    }
    let fa: Vec<usize> = (0..a.ndim()).filter(|i| !ca.contains(i)).collect();
    let fb: Vec<usize> = (0..b.ndim()).filter(|i| !cb.contains(i)).collect();
    let k: usize = ca.iter().map(|&i| a.shape()[i]).product();
    let m: usize = fa.iter().map(|&i| a.shape()[i]).product();
    let n: usize = fb.iter().map(|&i| b.shape()[i]).product();
    let pa: Vec<usize> = fa.iter().chain(&ca).copied().collect();
    let pb: Vec<usize> = cb.iter().chain(&fb).copied().collect();
    let a2 = reshape_usize(&super::transpose(a, &pa)?, &[m, k])?;
    let b2 = reshape_usize(&super::transpose(b, &pb)?, &[k, n])?;
    let out_shape: Vec<usize> = fa.iter().map(|&i| a.shape()[i]).chain(fb.iter().map(|&i| b.shape()[i])).collect();
    reshape_usize(&matmul(&a2, &b2)?, &out_shape)
}

/// Which norm [`norm`] computes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormOrd {
    /// The 2-norm of vectors, the Frobenius norm of matrices; with no axes given, the 2-norm
    /// of the flattened array whatever its rank.
    Default,
    /// Vectors: `(sum |x|^p)^(1/p)` (p = 0 counts the non-zeros). Matrices: p = 1 is the
    /// largest column sum of |x|, p = −1 the smallest (p = ±2 needs singular values, which
    /// ferrox does not compute yet).
    P(f64),
    /// Vectors: max |x|. Matrices: the largest row sum of |x|.
    Inf,
    /// Vectors: min |x|. Matrices: the smallest row sum of |x|.
    NegInf,
    /// Frobenius norm (matrices only).
    Fro,
}

/// Vector and matrix norms, as NumPy's and MLX's `norm`.
///
/// One axis gives a vector norm, two axes a matrix norm (the first axis indexes rows, the
/// second columns). With `axes` `None`: [`NormOrd::Default`] takes the 2-norm of all
/// elements; any other order needs a 1-D (vector) or 2-D (matrix) input.
pub fn norm(a: &Array, ord: NormOrd, axes: Option<&[isize]>, keepdims: bool) -> Result<Array> {
    let x = astype(a, a.dtype().to_float())?;
    let all: Vec<isize> = (0..a.ndim() as isize).collect();
    let axes: &[isize] = match axes {
        Some(ax) => ax,
        None if ord == NormOrd::Default => {
            return super::sqrt(&super::sum(&super::square(&x)?, None, keepdims)?);
        }
        None if a.ndim() == 1 || a.ndim() == 2 => &all,
        None => {
            let msg = format!("{ord:?} needs a 1-D or 2-D input, or axes; got shape {:?}", a.shape());
            return Err(Error::shape("norm", msg));
        }
    };
    let norm_axes = crate::shape::normalize_axes(Some(axes), a.ndim(), "norm")?;
    let ax = super::abs(&x)?;
    let sum_sq = |axes: &[isize]| super::sqrt(&super::sum(&super::square(&x)?, Some(axes), true)?);
    let r = match (axes.len(), ord) {
        (1, NormOrd::Fro) => return Err(Error::invalid("norm", "the Frobenius norm needs two axes")),
        (1, NormOrd::Default) => sum_sq(axes)?,
        (1, NormOrd::P(2.0)) => sum_sq(axes)?,
        (1, NormOrd::Inf) => super::max(&ax, Some(axes), true)?,
        (1, NormOrd::NegInf) => super::min(&ax, Some(axes), true)?,
        (1, NormOrd::P(1.0)) => super::sum(&ax, Some(axes), true)?,
        (1, NormOrd::P(0.0)) => astype(&super::sum(&super::not_equal(&x, 0)?, Some(axes), true)?, x.dtype())?,
        (1, NormOrd::P(p)) => super::power(&super::sum(&super::power(&ax, p)?, Some(axes), true)?, 1.0 / p)?,
        (2, _) => {
            let (row, col) = (axes[0], axes[1]);
            match ord {
                NormOrd::Default | NormOrd::Fro => sum_sq(axes)?,
                // Column sums (over the row axis), then the largest / smallest.
                NormOrd::P(1.0) => super::max(&super::sum(&ax, Some(&[row]), true)?, Some(&[col]), true)?,
                NormOrd::P(-1.0) => super::min(&super::sum(&ax, Some(&[row]), true)?, Some(&[col]), true)?,
                // Row sums (over the column axis), then the largest / smallest.
                NormOrd::Inf => super::max(&super::sum(&ax, Some(&[col]), true)?, Some(&[row]), true)?,
                NormOrd::NegInf => super::min(&super::sum(&ax, Some(&[col]), true)?, Some(&[row]), true)?,
                NormOrd::P(p) if p.abs() == 2.0 => {
                    return Err(Error::invalid("norm", "the matrix 2-norm needs singular values (not supported yet)"));
                }
                NormOrd::P(p) => return Err(Error::invalid("norm", format!("{p} is not a matrix norm order"))),
            }
        }
        (n, _) => return Err(Error::invalid("norm", format!("norms are over 1 or 2 axes, not {n}"))),
    };
    if keepdims {
        return Ok(r);
    }
    let shape: Vec<usize> =
        r.shape().iter().enumerate().filter(|(i, _)| !norm_axes.contains(i)).map(|(_, &d)| d).collect();
    reshape_usize(&r, &shape)
}

/// One operand of an einsum in progress: the array and the label of each of its axes.
struct Labeled {
    a: Array,
    labels: Vec<char>,
}

fn einsum_parse(spec: &str, n: usize) -> Result<(Vec<Vec<char>>, Vec<char>)> {
    let spec: String = spec.chars().filter(|c| !c.is_whitespace()).collect();
    if spec.contains('.') {
        return Err(Error::invalid("einsum", "ellipsis ('...') is not supported; name the axes"));
    }
    let (lhs, rhs) = match spec.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (spec.clone(), None),
    };
    let inputs: Vec<Vec<char>> = lhs.split(',').map(|s| s.chars().collect()).collect();
    if inputs.len() != n {
        return Err(Error::invalid("einsum", format!("\"{spec}\" names {} operands but {n} were given", inputs.len())));
    }
    for c in inputs.iter().flatten() {
        if !c.is_ascii_alphabetic() {
            return Err(Error::invalid("einsum", format!("bad label {c:?} in \"{spec}\"")));
        }
    }
    let output: Vec<char> = match rhs {
        Some(r) => r.chars().collect(),
        None => {
            let mut once: Vec<char> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|c| inputs.iter().flatten().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            once
        }
    };
    for c in &output {
        if !inputs.iter().flatten().any(|d| d == c) {
            return Err(Error::invalid("einsum", format!("output label {c:?} appears in no input")));
        }
    }
    Ok((inputs, output))
}

/// Takes diagonals for labels repeated within one operand, and sums labels no one else needs.
fn einsum_reduce_operand(mut op: Labeled, needed: &[char]) -> Result<Labeled> {
    loop {
        let dup = op
            .labels
            .iter()
            .enumerate()
            .find_map(|(i, c)| op.labels[i + 1..].iter().position(|d| d == c).map(|j| (i, i + 1 + j)));
        let Some((i, j)) = dup else { break };
        if op.a.shape()[i] != op.a.shape()[j] {
            return Err(Error::shape(
                "einsum",
                format!("label {:?} has sizes {} and {}", op.labels[i], op.a.shape()[i], op.a.shape()[j]),
            ));
        }
        let c = op.labels[i];
        op.a = super::diagonal(&op.a, 0, i as isize, j as isize)?;
        op.labels = op.labels.iter().enumerate().filter(|&(k, _)| k != i && k != j).map(|(_, &c)| c).collect();
        op.labels.push(c);
    }
    let drop: Vec<isize> =
        (0..op.labels.len()).filter(|&k| !needed.contains(&op.labels[k])).map(|k| k as isize).collect();
    if !drop.is_empty() {
        op.a = super::sum(&op.a, Some(&drop), false)?;
        op.labels.retain(|c| needed.contains(c));
    }
    Ok(op)
}

fn einsum_pair(x: Labeled, y: Labeled, keep: &[char]) -> Result<Labeled> {
    let batch: Vec<char> = x.labels.iter().copied().filter(|c| y.labels.contains(c) && keep.contains(c)).collect();
    let contract: Vec<char> = x.labels.iter().copied().filter(|c| y.labels.contains(c) && !keep.contains(c)).collect();
    let xo: Vec<char> = x.labels.iter().copied().filter(|c| !y.labels.contains(c)).collect();
    let yo: Vec<char> = y.labels.iter().copied().filter(|c| !x.labels.contains(c)).collect();
    let pos = |l: &[char], c: char| l.iter().position(|&d| d == c).unwrap();
    let size =
        |op: &Labeled, cs: &[char]| -> Vec<usize> { cs.iter().map(|&c| op.a.shape()[pos(&op.labels, c)]).collect() };
    for &c in batch.iter().chain(&contract) {
        let (sx, sy) = (x.a.shape()[pos(&x.labels, c)], y.a.shape()[pos(&y.labels, c)]);
        if sx != sy {
            return Err(Error::shape("einsum", format!("label {c:?} has sizes {sx} and {sy}")));
        }
    }
    let (bs, ks, ms, ns) = (size(&x, &batch), size(&x, &contract), size(&x, &xo), size(&y, &yo));
    let (b, k, m, n) = (
        bs.iter().product::<usize>(),
        ks.iter().product::<usize>(),
        ms.iter().product::<usize>(),
        ns.iter().product::<usize>(),
    );
    let px: Vec<usize> = batch.iter().chain(&xo).chain(&contract).map(|&c| pos(&x.labels, c)).collect();
    let py: Vec<usize> = batch.iter().chain(&contract).chain(&yo).map(|&c| pos(&y.labels, c)).collect();
    let xa = reshape_usize(&super::transpose(&x.a, &px)?, &[b, m, k])?;
    let ya = reshape_usize(&super::transpose(&y.a, &py)?, &[b, k, n])?;
    let dtype = crate::promote_types(xa.dtype(), ya.dtype());
    let prod = if dtype.is_float() {
        matmul(&xa, &ya)?
    } else {
        // Integer einsum: broadcast multiply and sum (matmul is float-only).
        let p = super::multiply(&expand_dims(&xa, &[-1])?, &expand_dims(&ya, &[1])?)?;
        super::sum(&p, Some(&[2]), false)?
    };
    let shape: Vec<usize> = bs.iter().chain(&ms).chain(&ns).copied().collect();
    Ok(Labeled { a: reshape_usize(&prod, &shape)?, labels: batch.iter().chain(&xo).chain(&yo).copied().collect() })
}

/// Einstein summation, e.g. `einsum("bij,bjk->bik", &[a, b])`; without `->` the output is the
/// labels that appear once, sorted. Contracts pairwise through matmul.
pub fn einsum(spec: &str, operands: &[Array]) -> Result<Array> {
    let (inputs, output) = einsum_parse(spec, operands.len())?;
    let mut ops: Vec<Labeled> = Vec::new();
    for (i, (a, labels)) in operands.iter().zip(&inputs).enumerate() {
        if a.ndim() != labels.len() {
            return Err(Error::shape(
                "einsum",
                format!("operand {i} has shape {:?} but {} labels", a.shape(), labels.len()),
            ));
        }
        let mut needed: Vec<char> = output.clone();
        needed.extend(inputs.iter().enumerate().filter(|&(j, _)| j != i).flat_map(|(_, l)| l.iter().copied()));
        ops.push(einsum_reduce_operand(Labeled { a: a.clone(), labels: labels.clone() }, &needed)?);
    }
    let mut acc = ops.remove(0);
    for (i, next) in ops.into_iter().enumerate() {
        let mut keep = output.clone();
        keep.extend(inputs[i + 2..].iter().flatten().copied());
        acc = einsum_pair(acc, next, &keep)?;
    }
    let acc = einsum_reduce_operand(acc, &output)?;
    let perm: Vec<usize> = output.iter().map(|c| acc.labels.iter().position(|d| d == c).unwrap()).collect();
    super::transpose(&acc.a, &perm)
}

/// Integer indices as uint32, or `0..n` over the batch axes of `a` when absent.
pub(crate) fn batch_indices(op: &'static str, idx: Option<&Array>, a: &Array) -> Result<Array> {
    match idx {
        Some(i) if i.dtype().is_integer() => astype(i, crate::Dtype::U32),
        Some(i) => Err(Error::dtype(op, "indices must be integers", i.dtype())),
        None => {
            let batch = &a.shape()[..a.ndim() - 2];
            let n: usize = batch.iter().product();
            reshape_usize(&super::arange(0.0, n as f64, 1.0, crate::Dtype::U32)?, batch)
        }
    }
}

/// Matrix product of gathered matrices (`mlx.core.gather_mm`): entry `[i, ...]` of the
/// output is `a[lhs[i, ...]] @ b[rhs[i, ...]]`, where the index arrays (broadcast together)
/// index the flattened batch axes of `a` [..., M, K] and `b` [..., K, N]; an absent index
/// array means "all, in order". The output is [index shape..., M, N]. This routes tokens
/// to experts without copying the experts' matrices: the CPU kernel groups the pairs by
/// matrix and runs one product per matrix. `sorted_indices` promises sorted rhs indices (a
/// hint; results never depend on it).
pub fn gather_mm(
    a: &Array,
    b: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    sorted_indices: bool,
) -> Result<Array> {
    let op = "gather_mm";
    if lhs_indices.is_none() && rhs_indices.is_none() {
        return matmul(a, b);
    }
    if a.ndim() < 2 || b.ndim() < 2 {
        return Err(Error::shape(
            op,
            format!(
                "inputs must be at least 2-D ([..., M, K] and [..., K, N]); got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    let dtype = crate::promote_types(a.dtype(), b.dtype());
    if !dtype.is_float() {
        return Err(Error::dtype(op, "only floating-point types are supported", dtype));
    }
    let (m, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let (k2, n) = (b.shape()[b.ndim() - 2], b.shape()[b.ndim() - 1]);
    if k != k2 {
        return Err(Error::shape(
            op,
            format!("last axis of {:?} ({k}) does not match second-to-last of {:?} ({k2})", a.shape(), b.shape()),
        ));
    }
    let lhs = batch_indices(op, lhs_indices, a)?;
    let rhs = batch_indices(op, rhs_indices, b)?;
    let idx_shape = broadcast_shapes(&[lhs.shape(), rhs.shape()], op)?;
    let inputs = vec![
        astype(a, dtype)?,
        astype(b, dtype)?,
        super::broadcast_to(&lhs, &idx_shape)?,
        super::broadcast_to(&rhs, &idx_shape)?,
    ];
    let mut shape = idx_shape;
    shape.extend([m, n]);
    Ok(Array::from_op(shape, dtype, Op::GatherMm { sorted: sorted_indices && lhs_indices.is_none() }, inputs))
}
