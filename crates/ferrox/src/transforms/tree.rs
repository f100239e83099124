//! Trees of arrays (lists and name→array maps) as transform inputs, so a model's parameter
//! dictionary can be differentiated as a whole.

use std::collections::BTreeMap;

use crate::array::Array;
use crate::error::{Error, Result};

/// Arrays arranged in nested lists and string-keyed maps.
#[derive(Clone, Debug)]
pub enum Tree {
    /// One array.
    Leaf(Array),
    /// An ordered list of subtrees.
    List(Vec<Tree>),
    /// Subtrees by name (iterated in key order).
    Dict(BTreeMap<String, Tree>),
}

impl Tree {
    /// The arrays, depth first, lists in order and maps in key order.
    pub fn leaves(&self) -> Vec<Array> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<Array>) {
        match self {
            Tree::Leaf(a) => out.push(a.clone()),
            Tree::List(v) => v.iter().for_each(|t| t.collect(out)),
            Tree::Dict(m) => m.values().for_each(|t| t.collect(out)),
        }
    }

    /// The same structure with its leaves replaced, in [`Tree::leaves`] order.
    pub fn with_leaves(&self, leaves: &[Array]) -> Result<Tree> {
        let mut it = leaves.iter();
        let t = self.rebuild(&mut it)?;
        if it.next().is_some() {
            return Err(Error::invalid("tree", "more leaves than the tree has places"));
        }
        Ok(t)
    }

    fn rebuild<'a>(&self, it: &mut impl Iterator<Item = &'a Array>) -> Result<Tree> {
        Ok(match self {
            Tree::Leaf(_) => {
                Tree::Leaf(it.next().ok_or_else(|| Error::invalid("tree", "fewer leaves than places"))?.clone())
            }
            Tree::List(v) => Tree::List(v.iter().map(|t| t.rebuild(it)).collect::<Result<_>>()?),
            Tree::Dict(m) => Tree::Dict(m.iter().map(|(k, t)| Ok((k.clone(), t.rebuild(it)?))).collect::<Result<_>>()?),
        })
    }

    /// Flattens to `(dotted.path, array)` pairs: `layers.0.weight`.
    pub fn flatten(&self) -> Vec<(String, Array)> {
        let mut out = Vec::new();
        self.flatten_into(String::new(), &mut out);
        out
    }

    fn flatten_into(&self, prefix: String, out: &mut Vec<(String, Array)>) {
        let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
        match self {
            Tree::Leaf(a) => out.push((prefix, a.clone())),
            Tree::List(v) => v.iter().enumerate().for_each(|(i, t)| t.flatten_into(join(&i.to_string()), out)),
            Tree::Dict(m) => m.iter().for_each(|(k, t)| t.flatten_into(join(k), out)),
        }
    }
}

impl From<Array> for Tree {
    fn from(a: Array) -> Tree {
        Tree::Leaf(a)
    }
}

/// `(f(params), ∂f/∂params)` for a scalar function of a tree; the gradient has the tree's
/// structure. `f` may return auxiliary arrays, passed through undifferentiated (`has_aux`).
pub fn value_and_grad_tree<F>(f: F, params: &Tree) -> Result<((Array, Vec<Array>), Tree)>
where
    F: Fn(&Tree) -> Result<(Array, Vec<Array>)>,
{
    let leaves = params.leaves();
    let aux = std::cell::RefCell::new(Vec::new());
    let (outs, grads) = super::vjp_with(
        |xs: &[Array]| {
            let (value, a) = f(&params.with_leaves(xs)?)?;
            if value.size() != 1 {
                return Err(Error::shape(
                    "grad",
                    format!("the function must return a scalar, got shape {:?}", value.shape()),
                ));
            }
            *aux.borrow_mut() = a;
            Ok(vec![value])
        },
        &leaves,
        |outs| Ok(vec![crate::ops::ones_like(&outs[0])?]),
    )?;
    let value = outs.into_iter().next().unwrap();
    Ok(((value, aux.into_inner()), params.with_leaves(&grads)?))
}
