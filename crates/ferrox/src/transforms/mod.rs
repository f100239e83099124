//! Function transforms by tracing: `vjp`, `jvp`, `grad`, `value_and_grad`, `vmap`,
//! `compile`, `checkpoint`.
//!
//! A transform runs the user's function on fresh tracer arrays (identity nodes over the
//! primals), so the function records a lazy graph rooted at the tracers. Reverse mode walks
//! that graph from the outputs back to the tracers, applying each primitive's rule
//! (`vjp_rules.rs`); the rules are built from ops, so the result is again a lazy graph, and
//! transforms nest (the gradient of a gradient is the vjp of the recorded backward graph).
//! Forward mode walks the same graph from the tracers to the outputs, pushing a tangent
//! through each node with its primitive's rule (`jvp_rules.rs`), also built from ops.
//! Arrays already evaluated when the function runs are constants to the trace.

mod compile;
mod jvp_rules;
mod quantized_rules;
mod remat;
mod tree;
pub(crate) mod vjp_rules;
mod vmap;
mod vmap_rules;

pub use compile::{compile, set_compile_enabled, Compiled, StateCell};
pub use remat::checkpoint;
pub use tree::{value_and_grad_tree, Tree};
pub use vmap::{vmap, vmap_call};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::array::{Array, Node};
use crate::error::{Error, Result};
use crate::primitives::Op;

type Key = *const Node;

fn key(a: &Array) -> Key {
    Arc::as_ptr(&a.0)
}

/// Identity nodes over `primals` that the trace can recognize.
fn tracers(primals: &[Array]) -> Vec<Array> {
    primals.iter().map(|p| Array::from_op(p.shape().to_vec(), p.dtype(), Op::Copy, vec![p.clone()])).collect()
}

/// Pending nodes between the tracers and `outputs` that depend on a tracer, inputs first.
fn trace_order(outputs: &[Array], tracer_keys: &HashSet<Key>) -> Vec<Array> {
    let mut order = Vec::new();
    let mut state: HashMap<Key, bool> = HashMap::new(); // key -> depends on a tracer
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|a| (a.clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        let k = key(&a);
        if tracer_keys.contains(&k) {
            state.insert(k, true);
            continue;
        }
        if expanded {
            let deps = a.pending_parts().map(|(_, ins)| ins).unwrap_or_default();
            let depends = deps.iter().any(|i| state.get(&key(i)).copied().unwrap_or(false));
            state.insert(k, depends);
            if depends {
                order.push(a);
            }
            continue;
        }
        if state.contains_key(&k) {
            continue;
        }
        match a.pending_parts() {
            None => {
                state.insert(k, false);
            }
            Some((_, inputs)) => {
                stack.push((a, true));
                for i in inputs {
                    if !state.contains_key(&key(&i)) {
                        stack.push((i, false));
                    }
                }
            }
        }
    }
    order
}

/// Reverse mode: the outputs of `f` at `primals`, and the vector-Jacobian products of
/// `cotangents` (one per output, each of its output's shape) with respect to each primal.
pub fn vjp<F>(f: F, primals: &[Array], cotangents: &[Array]) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnOnce(&[Array]) -> Result<Vec<Array>>,
{
    vjp_with(f, primals, |_| Ok(cotangents.to_vec()))
}

/// [`vjp`] with cotangents made from the outputs once they are known.
fn vjp_with<F, C>(f: F, primals: &[Array], make_cotangents: C) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnOnce(&[Array]) -> Result<Vec<Array>>,
    C: FnOnce(&[Array]) -> Result<Vec<Array>>,
{
    let inputs = tracers(primals);
    let outputs = f(&inputs)?;
    let cotangents = make_cotangents(&outputs)?;
    if outputs.len() != cotangents.len() {
        return Err(Error::invalid("vjp", format!("{} outputs but {} cotangents", outputs.len(), cotangents.len())));
    }
    for (o, c) in outputs.iter().zip(&cotangents) {
        if o.shape() != c.shape() {
            return Err(Error::shape(
                "vjp",
                format!("cotangent of shape {:?} for an output of shape {:?}", c.shape(), o.shape()),
            ));
        }
    }
    let tracer_keys: HashSet<Key> = inputs.iter().map(key).collect();
    let order = trace_order(&outputs, &tracer_keys);
    let mut cots: HashMap<Key, Array> = HashMap::new();
    let accumulate = |k: Key, g: Array, cots: &mut HashMap<Key, Array>| -> Result<()> {
        let g = match cots.remove(&k) {
            Some(prev) => crate::ops::add(&prev, &g)?,
            None => g,
        };
        cots.insert(k, g);
        Ok(())
    };
    for (o, c) in outputs.iter().zip(&cotangents) {
        accumulate(key(o), crate::ops::astype(c, o.dtype())?, &mut cots)?;
    }
    for node in order.iter().rev() {
        let Some(g) = cots.remove(&key(node)) else { continue };
        let Some((op, ins)) = node.pending_parts() else { continue };
        let grads = vjp_rules::vjp(&op, &ins, node, &g)?;
        for (inp, gi) in ins.iter().zip(grads) {
            if let Some(gi) = gi {
                let gi = crate::ops::astype(&gi, inp.dtype())?;
                accumulate(key(inp), gi, &mut cots)?;
            }
        }
    }
    let grads = inputs
        .iter()
        .map(|t| match cots.remove(&key(t)) {
            Some(g) => Ok(g),
            None => crate::ops::zeros_like(t),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((outputs, grads))
}

/// Forward mode: the outputs of `f` at `primals` and the Jacobian-vector products with
/// `tangents` (one per primal, each of its primal's shape).
///
/// `f` runs once on tracers; every node that depends on a tracer then gets its tangent from
/// its inputs' tangents, inputs first, by its primitive's forward rule. The tangents are lazy
/// graphs, so forward mode nests with itself and with reverse mode.
pub fn jvp<F>(f: F, primals: &[Array], tangents: &[Array]) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnOnce(&[Array]) -> Result<Vec<Array>>,
{
    if primals.len() != tangents.len() {
        return Err(Error::invalid("jvp", format!("{} primals but {} tangents", primals.len(), tangents.len())));
    }
    for (p, t) in primals.iter().zip(tangents) {
        if p.shape() != t.shape() {
            return Err(Error::shape(
                "jvp",
                format!("tangent of shape {:?} for a primal of shape {:?}", t.shape(), p.shape()),
            ));
        }
    }
    let inputs = tracers(primals);
    let outputs = f(&inputs)?;
    let seeds = inputs
        .iter()
        .zip(tangents)
        .map(|(x, t)| if x.dtype().is_float() { crate::ops::astype(t, x.dtype()).map(Some) } else { Ok(None) })
        .collect::<Result<Vec<_>>>()?;
    let jt = forward(&inputs, &seeds, &outputs)?
        .into_iter()
        .zip(&outputs)
        .map(|(t, o)| match t {
            Some(t) => Ok(t),
            None => crate::ops::zeros_like(o),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((outputs, jt))
}

/// The tangents of `outputs` given those of `seeds` (`None`: zero), pushed forward through
/// the pending nodes between them; `None` where an output's tangent is zero.
fn forward(seeds: &[Array], tangents: &[Option<Array>], outputs: &[Array]) -> Result<Vec<Option<Array>>> {
    let mut tans: HashMap<Key, Option<Array>> = seeds.iter().zip(tangents).map(|(s, t)| (key(s), t.clone())).collect();
    let seed_keys: HashSet<Key> = tans.keys().copied().collect();
    let order = trace_order(outputs, &seed_keys);
    for node in &order {
        let Some((op, ins)) = node.pending_parts() else { continue };
        let ts: Vec<Option<Array>> = ins.iter().map(|i| tans.get(&key(i)).cloned().flatten()).collect();
        let t = jvp_rules::jvp(&op, &ins, node, &ts)?;
        tans.insert(key(node), t);
    }
    Ok(outputs.iter().map(|o| tans.get(&key(o)).cloned().flatten()).collect())
}

/// `(f(args), ∂f/∂args[i] for i in argnums)` for a function with one scalar output.
pub fn value_and_grad<F>(f: F, args: &[Array], argnums: &[usize]) -> Result<(Array, Vec<Array>)>
where
    F: Fn(&[Array]) -> Result<Array>,
{
    if let Some(&bad) = argnums.iter().find(|&&i| i >= args.len()) {
        return Err(Error::invalid("grad", format!("argnum {bad} is out of range for {} arguments", args.len())));
    }
    let diff: Vec<Array> = argnums.iter().map(|&i| args[i].clone()).collect();
    let call = |xs: &[Array]| -> Result<Vec<Array>> {
        let mut full = args.to_vec();
        for (&i, x) in argnums.iter().zip(xs) {
            full[i] = x.clone();
        }
        let out = f(&full)?;
        if out.size() != 1 {
            return Err(Error::shape(
                "grad",
                format!("the function must return a scalar, got shape {:?}", out.shape()),
            ));
        }
        Ok(vec![out])
    };
    let (outs, grads) = vjp_with(call, &diff, |outs| Ok(vec![crate::ops::ones_like(&outs[0])?]))?;
    Ok((outs.into_iter().next().unwrap(), grads))
}

/// `∂f/∂args[i]` for i in `argnums`, for a function with one scalar output.
pub fn grad<F>(f: F, args: &[Array], argnums: &[usize]) -> Result<Vec<Array>>
where
    F: Fn(&[Array]) -> Result<Array>,
{
    Ok(value_and_grad(f, args, argnums)?.1)
}
