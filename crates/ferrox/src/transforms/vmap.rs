//! `vmap`: vectorize a function over a batch axis by rewriting its traced graph.
//!
//! The function runs once on tracers with the per-example shapes (an identity node over the
//! first example of each batched input). Every node of the recorded graph that depends on a
//! tracer is then rebuilt bottom-up by its primitive's batching rule (`vmap_rules.rs`), which
//! records the same computation over the whole batch — one op for the batch, never a loop
//! over it. The rules build ops, so the result is a lazy graph that other transforms
//! (grad, compile, another vmap) can take in turn.

use std::collections::{HashMap, HashSet};

use super::{key, trace_order, Key};
use crate::array::Array;
use crate::error::{Error, Result};
use crate::ops as fx;
use crate::primitives::Op;
use crate::shape::normalize_axis;

/// A batched value: the array and the axis that holds the batch, or `None` when the value
/// is the same for every example.
pub(crate) type Batched = (Array, Option<usize>);

/// Vectorizes `f` over axis `in_axes[i]` of input `i` (`None`: the input is shared by every
/// example) and returns the outputs with their batch axis at `out_axes[j]` (`None`: the output
/// must not depend on the batch). A single entry in `in_axes` or `out_axes` applies to every
/// input or output; negative axes count from the end.
///
/// ```
/// use ferrox::{self as fx, Array};
/// let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
/// let dot_self = |a: &[Array]| Ok(vec![fx::sum(&fx::multiply(&a[0], &a[0])?, None, false)?]);
/// let per_row = fx::vmap(dot_self, &[Some(0)], &[Some(0)]);
/// assert_eq!(per_row(&[x]).unwrap()[0].to_vec::<f32>().unwrap(), vec![14.0, 77.0]);
/// ```
pub fn vmap<F>(f: F, in_axes: &[Option<isize>], out_axes: &[Option<isize>]) -> impl Fn(&[Array]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    let in_axes = in_axes.to_vec();
    let out_axes = out_axes.to_vec();
    move |inputs: &[Array]| vmap_call(&f, inputs, &in_axes, &out_axes)
}

/// Picks entry `i` of per-argument settings given as one entry for all or one per argument.
fn per_arg(axes: &[Option<isize>], i: usize, n: usize, what: &str) -> Result<Option<isize>> {
    match axes.len() {
        1 => Ok(axes[0]),
        len if len == n => Ok(axes[i]),
        len => Err(Error::invalid("vmap", format!("{len} {what} for {n} {}", what.replace("_axes", "s")))),
    }
}

/// Runs `f` vectorized over `inputs` (see [`vmap`]).
pub fn vmap_call<F>(
    f: &F,
    inputs: &[Array],
    in_axes: &[Option<isize>],
    out_axes: &[Option<isize>],
) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + ?Sized,
{
    let mut batch: Option<usize> = None;
    let mut tracers = Vec::with_capacity(inputs.len());
    let mut batched_inputs = Vec::with_capacity(inputs.len());
    for (i, x) in inputs.iter().enumerate() {
        match per_arg(in_axes, i, inputs.len(), "in_axes")? {
            None => {
                tracers.push(x.clone());
                batched_inputs.push(None);
            }
            Some(ax) => {
                let ax = normalize_axis(ax, x.ndim(), "vmap")?;
                let n = x.shape()[ax];
                match batch {
                    Some(b) if b != n => {
                        return Err(Error::shape(
                            "vmap",
                            format!("input {i} has {n} examples on axis {ax}, but an earlier input has {b}"),
                        ))
                    }
                    _ => batch = Some(n),
                }
                if n == 0 {
                    return Err(Error::shape("vmap", format!("input {i} has no examples on axis {ax}")));
                }
                let first = fx::squeeze(&fx::slice_axis(x, ax as isize, 0, 1)?, Some(&[ax as isize]))?;
                let tracer = Array::from_op(first.shape().to_vec(), x.dtype(), Op::Copy, vec![first]);
                batched_inputs.push(Some((tracer.clone(), (x.clone(), ax))));
                tracers.push(tracer);
            }
        }
    }
    let Some(b) = batch else {
        return Err(Error::invalid("vmap", "at least one input must have a batch axis (in_axes all None)"));
    };
    let outputs = {
        let guarded: Vec<Array> = batched_inputs.iter().flatten().map(|(t, _)| t.clone()).collect();
        let _guard = crate::eval::TracerGuard::new(&guarded, "vmap");
        f(&tracers)?
    };
    let mut values: HashMap<Key, Batched> = HashMap::new();
    for (tracer, x) in batched_inputs.into_iter().flatten() {
        values.insert(key(&tracer), (x.0, Some(x.1)));
    }
    let tracer_keys: HashSet<Key> = values.keys().copied().collect();
    for node in trace_order(&outputs, &tracer_keys) {
        let Some((op, ins)) = node.pending_parts() else { continue };
        let args: Vec<Batched> =
            ins.iter().map(|a| values.get(&key(a)).cloned().unwrap_or_else(|| (a.clone(), None))).collect();
        let out = if args.iter().all(|(_, ax)| ax.is_none()) {
            (node.clone(), None)
        } else {
            super::vmap_rules::batch(&op, &args, &node, b)?
        };
        values.insert(key(&node), out);
    }
    outputs
        .iter()
        .enumerate()
        .map(|(j, o)| {
            let (arr, ax) = values.get(&key(o)).cloned().unwrap_or_else(|| (o.clone(), None));
            match (per_arg(out_axes, j, outputs.len(), "out_axes")?, ax) {
                (None, None) => Ok(arr),
                (None, Some(_)) => Err(Error::invalid(
                    "vmap",
                    format!("output {j} depends on the batch, but its out_axes entry is None"),
                )),
                (Some(dst), ax) => {
                    let dst = normalize_axis(dst, o.ndim() + 1, "vmap")?;
                    match ax {
                        Some(src) => fx::moveaxis(&arr, src as isize, dst as isize),
                        None => {
                            let mut shape = o.shape().to_vec();
                            shape.insert(dst, b);
                            fx::broadcast_to(&fx::expand_dims(&arr, &[dst as isize])?, &shape)
                        }
                    }
                }
            }
        })
        .collect()
}
