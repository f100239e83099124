//! [`FusedLinear`]: linear layers that read the same input (a block's q/k/v projections, its
//! gate and up projections) run as one matrix product, for inference.
//!
//! Each product is a kernel launch (on a GPU) or a call with fixed set-up (on the CPU) whatever
//! its size, so a decode step of one token spends much of its time on the count of products,
//! not their size. Fusing joins the parts' weights along the output axis
//! ([`AnyLinear::concat_outputs`]) and then points each part's arrays at its rows of the joined
//! ones (slice views: no second copy of the weights). The parts stay where they were in the
//! module tree, under their names, so parameters, saving (views are written contiguous) and
//! layer replacement see the model as before; the fused layer is not part of the tree (a model
//! holds it in a `#[module(skip)]` field).
//!
//! A part whose arrays are replaced afterwards (`update`, `load_weights`, quantization, a
//! training step's traced parameters) no longer holds the views, and [`FusedLinear::project`]
//! then runs the parts one by one, so a stale fused layer is never used.

use ferrox::{self as fx, Array, Error, Result};

use crate::layers::AnyLinear;

/// Several linear layers over one input, joined into one (see the module documentation).
#[derive(Clone, Debug)]
pub struct FusedLinear {
    /// The parts' weights side by side along the output axis.
    joined: AnyLinear,
    /// Where each part's outputs end in the joined output.
    ends: Vec<usize>,
    /// The arrays each part was given when fused (weight, then bias or scales, biases, bias).
    views: Vec<[Option<Array>; 4]>,
}

/// A layer's arrays in a fixed order: a dense layer's weight and bias, a quantized layer's
/// packed weight, scales, biases and bias.
fn slots(l: &AnyLinear) -> [Option<&Array>; 4] {
    match l {
        AnyLinear::Dense(d) => [Some(&d.weight), d.bias.as_ref(), None, None],
        AnyLinear::Quantized(q) => [Some(&q.weight), Some(&q.scales), q.biases.as_ref(), q.bias.as_ref()],
    }
}

/// [`slots`], mutably.
fn slots_mut(l: &mut AnyLinear) -> [Option<&mut Array>; 4] {
    match l {
        AnyLinear::Dense(d) => [Some(&mut d.weight), d.bias.as_mut(), None, None],
        AnyLinear::Quantized(q) => [Some(&mut q.weight), Some(&mut q.scales), q.biases.as_mut(), q.bias.as_mut()],
    }
}

impl FusedLinear {
    /// Joins `parts` into one layer ([`AnyLinear::concat_outputs`]), evaluates it, and gives
    /// each part its rows of the joined arrays as views (so the weights are held once). `None`,
    /// with the parts untouched, when they cannot be joined; on an error the parts are
    /// untouched too.
    pub fn fuse(parts: &mut [&mut AnyLinear]) -> Result<Option<FusedLinear>> {
        let joined = {
            let refs: Vec<&AnyLinear> = parts.iter().map(|p| &**p).collect();
            AnyLinear::concat_outputs(&refs)?
        };
        let Some(joined) = joined else { return Ok(None) };
        let mut ends = Vec::with_capacity(parts.len());
        let mut views = Vec::with_capacity(parts.len());
        let mut start = 0;
        for part in parts.iter() {
            let end = start + part.output_dims();
            let rows = |a: Option<&Array>| a.map(|a| fx::slice_axis(a, 0, start as isize, end as isize)).transpose();
            let [a, b, c, d] = slots(&joined);
            views.push([rows(a)?, rows(b)?, rows(c)?, rows(d)?]);
            ends.push(end);
            start = end;
        }
        // Joined arrays first, so the views are views of an evaluated buffer.
        let all: Vec<&Array> = slots(&joined).into_iter().flatten().chain(views.iter().flatten().flatten()).collect();
        fx::eval(&all)?;
        for (part, view) in parts.iter_mut().zip(&views) {
            for (slot, v) in slots_mut(part).into_iter().zip(view) {
                if let (Some(slot), Some(v)) = (slot, v) {
                    *slot = v.clone();
                }
            }
        }
        Ok(Some(FusedLinear { joined, ends, views }))
    }

    /// The joined layer.
    pub fn joined(&self) -> &AnyLinear {
        &self.joined
    }

    /// The parts' output widths, in order.
    pub fn output_dims(&self) -> Vec<usize> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let n = end - start;
                start = end;
                n
            })
            .collect()
    }

    /// Whether `parts` (the layers this was fused from, in the same order) still hold the
    /// views [`FusedLinear::fuse`] gave them, so the joined layer computes what they would.
    pub fn is_current(&self, parts: &[&AnyLinear]) -> bool {
        parts.len() == self.views.len()
            && parts.iter().zip(&self.views).all(|(p, view)| {
                slots(p).iter().zip(view).all(|(a, b)| match (a, b) {
                    (None, None) => true,
                    (Some(a), Some(b)) => a.same(b),
                    _ => false,
                })
            })
    }

    /// The parts' outputs for `x`: the joined layer's output split along the last axis
    /// (views, no copies).
    pub fn forward(&self, x: &Array) -> Result<Vec<Array>> {
        let y = self.joined.forward(x)?;
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let part = fx::slice_axis(&y, -1, start as isize, end as isize);
                start = end;
                part
            })
            .collect()
    }

    /// The outputs of `parts` for `x`: through `fused` (one product) when given and still
    /// current for these parts ([`FusedLinear::is_current`]), else each part's own product.
    pub fn project<const N: usize>(
        fused: Option<&FusedLinear>,
        parts: [&AnyLinear; N],
        x: &Array,
    ) -> Result<[Array; N]> {
        let outputs = match fused {
            Some(f) if f.is_current(&parts) => f.forward(x)?,
            _ => parts.iter().map(|p| p.forward(x)).collect::<Result<Vec<_>>>()?,
        };
        outputs.try_into().map_err(|v: Vec<Array>| {
            Error::invalid("FusedLinear::project", format!("{} outputs for {N} parts", v.len()))
        })
    }
}
