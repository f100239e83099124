//! The work before and after a decode step's matrix-vector products, joined into their
//! kernels.
//!
//! A decode step normalizes the hidden state and then multiplies it by a weight, and a SwiGLU
//! block multiplies, applies `silu(gate) · up` to the two halves of the joined gate/up
//! product, and multiplies again: each a kernel of its own that waits for the one before to
//! finish and write a few kilobytes. The matrix-vector kernel can do both itself (gemv.cu):
//! normalize x as it loads it (`gemv_rms_*`), and join the two halves of its own output before
//! writing it (`*_glu`: a block computes gate column j and up column j together).
//!
//! Before an evaluation runs, [`plan`] finds, on a GPU stream,
//! - each product (dense, or of a quantized matrix) of at most [`JOIN_ROWS`] rows whose left
//!   operand is an `rms_norm` read by nothing else (quantized weights up to
//!   [`JOIN_NORM_BYTES`]),
//! - each two-input elementwise program of `compile` over the lower and upper halves of the
//!   columns of such a dense product (two slices read by nothing else, of a product without an
//!   addend read by nothing else),
//! - each `add` of a quantized such product read by nothing else and a residual of its shape
//!   (the quantized kernel, `qmv`, adds it before rounding), and
//! - each decode step's rope (its KV-cache writes joined in, [`cache_writes`]) over the heads
//!   of such a product ([`with_rope`]),
//!
//! drops the norm, the views and the product from the steps, and runs the product, or the
//! program, the add or the rope, as [`Op::JoinedMatmul`] over the inputs of the first op
//! instead. The graph is not changed: should the evaluation stop before the joined op, every node is still as it was
//! built. Where the kernel cannot take the operands after all (layout, alignment, dtype), the
//! backend runs the joined ops one after another, as the nodes would have.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::array::{Array, Node, Pending, State};
use crate::device::{Device, Stream};
use crate::eval::Planned;
use crate::primitives::{BinaryOp, Epilogue, Op, Prologue, QuantOp, QuantParams, ScatterMode};

/// The most rows of a product with joins: those of the FMA kernels that gain from them. The
/// tensor-core kernel of 3–8 f16 / bf16 rows lost more with its own joined variants than the
/// kernels they spare cost (batch-8 decode of the 1B model 7 % slower, H100, session 15);
/// batch 1 gained ~1.5 %.
const JOIN_ROWS: usize = 2;

/// The largest quantized weight (bytes) a product normalizes its own input for: the joined
/// kernel's extra work grows with the weight (each block weighs and squares all of x for its
/// few features), the norm's own kernel does not. A 4-bit Llama-3.2-1B gate/up product (19
/// MB) joins; its 148 MB output head does not (H200: `qmv_rms` 102.9 µs, plain 85.9, a norm
/// kernel ~3; scripts/cuda-bench/qmv_bench.cu, docs/PERF.md session 20). Dense products
/// always join: four columns a block make the norm nearly free there (gemv.cu, GEMV_RMS_COLS).
const JOIN_NORM_BYTES: usize = 64 << 20;

/// Ops joined into products so far in this process.
static JOINED: AtomicUsize = AtomicUsize::new(0);

/// How many norms and programs evaluation has joined into the products beside them so far in
/// this process (the GPU check asserts that its cases take the joined path).
pub fn joined_products() -> usize {
    JOINED.load(Ordering::Relaxed)
}

/// The steps that evaluate `order` (see the module documentation).
pub(crate) fn plan(order: Vec<Array>) -> Vec<Planned> {
    let key = |a: &Array| Arc::as_ptr(&a.0);
    let mut dropped: HashSet<*const Node> = HashSet::new();
    let mut run_as: HashMap<*const Node, Pending> = HashMap::new();
    for (gone, runs) in cache_writes(&order) {
        dropped.extend(gone);
        run_as.extend(runs);
        JOINED.fetch_add(1, Ordering::Relaxed);
    }
    for node in &order {
        let joined = with_prologue(node)
            .or_else(|| with_epilogue(node, &run_as))
            .or_else(|| with_addend(node, &run_as))
            .or_else(|| with_rope(node, &run_as));
        if let Some((gone, pending)) = joined {
            for g in gone {
                run_as.remove(&g);
                dropped.insert(g);
            }
            run_as.insert(key(node), pending);
            JOINED.fetch_add(1, Ordering::Relaxed);
        }
    }
    order
        .into_iter()
        .filter(|a| !dropped.contains(&key(a)))
        .map(|node| {
            let run_as = run_as.remove(&key(&node));
            Planned { node, run_as }
        })
        .collect()
}

/// Whether `a` is held only by the evaluation's order and `readers` nodes' inputs.
fn read_only_by(a: &Array, readers: usize) -> bool {
    Arc::strong_count(&a.0) == 1 + readers
}

/// The rows of a product's output of `shape`.
fn rows(shape: &[usize]) -> usize {
    shape[..shape.len() - 1].iter().product()
}

/// A product the matrix-vector kernels join work into: `Op::Matmul`'s (alpha, beta), or a
/// quantized matrix's format (`x @ dequantize(w)ᵀ`, as a Linear layer multiplies; alpha 1,
/// beta 0).
fn product_of(op: &Op) -> Option<(f64, f64, Option<QuantParams>)> {
    match *op {
        Op::Matmul { alpha, beta } => Some((alpha, beta, None)),
        Op::Quantized { op: QuantOp::Matmul { transpose: true }, params } => Some((1.0, 0.0, Some(params))),
        _ => None,
    }
}

/// The bytes of a quantized product's matrix (packed words, scales, biases if affine).
fn weight_bytes(p: &Pending, q: QuantParams) -> usize {
    p.inputs[1..].iter().take(q.mode.matrix_inputs()).map(Array::nbytes).sum()
}

/// For a pending product (dense or quantized, [`product_of`]) of at most JOIN_ROWS rows on a GPU
/// whose left operand is a pending `rms_norm` read by nothing else (a quantized weight at most
/// [`JOIN_NORM_BYTES`]): the norm's node and the product over the norm's inputs.
fn with_prologue(node: &Array) -> Option<(Vec<*const Node>, Pending)> {
    let st = node.state();
    let State::Pending(p) = &*st else { return None };
    let (alpha, beta, quantized) = product_of(&p.op)?;
    let x = &p.inputs[0];
    if !matches!(p.stream.device, Device::Gpu(_)) || !(1..=JOIN_ROWS).contains(&rows(node.shape())) {
        return None;
    }
    if quantized.is_some_and(|q| weight_bytes(p, q) > JOIN_NORM_BYTES) {
        return None;
    }
    if !read_only_by(x, 1) {
        return None;
    }
    let xs = x.state();
    let State::Pending(xp) = &*xs else { return None };
    let Op::RmsNorm { eps, weight } = xp.op else { return None };
    if xp.stream != p.stream {
        return None;
    }
    let inputs = xp.inputs.iter().chain(&p.inputs[1..]).cloned().collect();
    let op =
        Op::JoinedMatmul { prologue: Some(Prologue::RmsNorm { eps, weight }), epilogue: None, alpha, beta, quantized };
    Some((vec![Arc::as_ptr(&x.0)], Pending { op, inputs, stream: p.stream }))
}

/// For a pending two-input elementwise program on a GPU over the lower and upper halves of
/// the columns of a pending product without an addend (slices and product read by nothing
/// else; the product as planned so far, its norm joined in or not): the product's and the
/// slices' nodes, and the program computed by the product.
fn with_epilogue(node: &Array, run_as: &HashMap<*const Node, Pending>) -> Option<(Vec<*const Node>, Pending)> {
    let st = node.state();
    let State::Pending(f) = &*st else { return None };
    let Op::Fused(graph) = &f.op else { return None };
    if graph.reduction().is_some() || f.inputs.len() != 2 || !matches!(f.stream.device, Device::Gpu(_)) {
        return None;
    }
    // Each input: a slice read only by the program, of the last axis' lower or upper half of
    // the same product's output.
    let mut product: Option<Array> = None;
    let mut lower = [false; 2];
    for (i, s) in f.inputs.iter().enumerate() {
        if !read_only_by(s, 1) {
            return None;
        }
        let ss = s.state();
        let State::Pending(sp) = &*ss else { return None };
        let Op::Slice { start, step } = &sp.op else { return None };
        let p = &sp.inputs[0];
        let (nd, shape) = (s.ndim(), s.shape());
        let width = shape[nd - 1];
        let full = p.shape();
        let halves = full.len() == nd && full[..nd - 1] == shape[..nd - 1] && full[nd - 1] == 2 * width;
        let plain = step.iter().all(|&t| t == 1) && start[..nd - 1].iter().all(|&t| t == 0);
        if !halves || !plain || !(start[nd - 1] == 0 || start[nd - 1] == width) || sp.stream != f.stream {
            return None;
        }
        lower[i] = start[nd - 1] == 0;
        match &product {
            Some(q) if !Arc::ptr_eq(&q.0, &p.0) => return None,
            _ => product = Some(p.clone()),
        }
    }
    let product = product?;
    if lower[0] == lower[1] || !(1..=JOIN_ROWS).contains(&rows(product.shape())) {
        return None;
    }
    // Held by the order, the two slices, and `product` here.
    if !read_only_by(&product, 3) {
        return None;
    }
    let PlannedProduct { prologue, alpha, quantized: None, inputs } = as_planned(&product, f.stream, run_as)? else {
        return None;
    };
    let epilogue = Some(Epilogue::Halves { graph: graph.clone(), lower_first: lower[0] });
    let op = Op::JoinedMatmul { prologue, epilogue, alpha, beta: 0.0, quantized: None };
    let gone = std::iter::once(&product).chain(&f.inputs).map(|a| Arc::as_ptr(&a.0)).collect();
    Some((gone, Pending { op, inputs, stream: f.stream }))
}

/// For a decode step's rope planned with its KV-cache writes ([`Op::RopeWrite`], from
/// [`cache_writes`]) over the leading heads of a product's output (dense or of a quantized
/// matrix) of one position of at most JOIN_ROWS rows — x sliced from `transpose(reshape(y,
/// [B, 1, H, D]), [0, 2, 1, 3])`, the value rows (if written) from the same heads, each view
/// read by nothing else — when the rope turns the two halves of whole heads: the product's
/// and the views' nodes, and the product computing the rope ([`Epilogue::Rope`]; the
/// `*_rope_*` kernels of gemv.cu and quantized.cu).
fn with_rope(node: &Array, run_as: &HashMap<*const Node, Pending>) -> Option<(Vec<*const Node>, Pending)> {
    let planned = run_as.get(&Arc::as_ptr(&node.0))?;
    let Op::RopeWrite { dims, traditional, freqs, values_from, .. } = planned.op else { return None };
    let (shape, stream) = (node.shape(), planned.stream);
    if traditional || shape.len() != 4 || dims != shape[3] {
        return None;
    }
    // x: a plain slice of the product's heads (held by the order, the rope and the plan).
    let x = &planned.inputs[0];
    let plain_slice = |op: &Op| matches!(op, Op::Slice { start, step } if start.iter().all(|&s| s == 0) && step.iter().all(|&t| t == 1));
    let heads = view_of(x, stream, plain_slice).filter(|_| read_only_by(x, 2))?;
    let at_source = 3 + freqs as usize;
    if values_from.is_some() && !Arc::ptr_eq(&planned.inputs[at_source].0, &heads.0) {
        return None;
    }
    // The heads: held here, read by x, and by the value rows' slice and the plan's source if it
    // writes values.
    if !read_only_by(&heads, 2 + 2 * values_from.is_some() as usize) {
        return None;
    }
    let r = view_of(&heads, stream, |op| matches!(op, Op::Transpose(p) if p[..] == [0, 2, 1, 3]))?;
    let y = view_of(&r, stream, |op| matches!(op, Op::Reshape))?;
    let (ys, rs, hs) = (y.shape(), r.shape(), heads.shape());
    if hs[0] != shape[0] || hs[2..] != shape[2..] {
        return None;
    }
    // Each held here and read by the view after it.
    if !read_only_by(&r, 2) || !read_only_by(&y, 2) || ys.len() != 3 || rs[..2] != ys[..2] || rs[1] != 1 {
        return None;
    }
    if !(1..=JOIN_ROWS).contains(&rows(ys)) {
        return None;
    }
    let PlannedProduct { prologue, alpha, quantized, inputs } = as_planned(&y, stream, run_as)?;
    // After the product's inputs: the offset (and frequencies), the key cache, the value cache.
    let caches = &planned.inputs[1..at_source];
    let values = values_from.map(|_| planned.inputs[at_source + 1].clone());
    let inputs = inputs.into_iter().chain(caches.iter().cloned()).chain(values).collect();
    let epilogue = Some(Epilogue::Rope(Box::new(planned.op.clone())));
    let op = Op::JoinedMatmul { prologue, epilogue, alpha, beta: 0.0, quantized };
    let gone = [&y, &r, &heads, x].iter().map(|a| Arc::as_ptr(&a.0)).collect();
    Some((gone, Pending { op, inputs, stream }))
}

/// The input of `a` when `a` is pending on `stream` with a one-input op that `is_view` accepts.
fn view_of(a: &Array, stream: Stream, is_view: impl Fn(&Op) -> bool) -> Option<Array> {
    let st = a.state();
    let State::Pending(p) = &*st else { return None };
    (p.stream == stream && p.inputs.len() == 1 && is_view(&p.op)).then(|| p.inputs[0].clone())
}

/// A product without an addend or an epilogue as evaluation will run it: with its norm joined
/// in (planned so far), or as built.
struct PlannedProduct {
    /// The norm joined in, if it is.
    prologue: Option<Prologue>,
    /// The product's scale.
    alpha: f64,
    /// The quantized matrix's format (`None`: a dense product).
    quantized: Option<QuantParams>,
    /// The inputs it runs over.
    inputs: Vec<Array>,
}

/// `product` (a pending product on `stream`, [`product_of`]) as planned so far, if it has no
/// addend (beta 0) and no epilogue.
fn as_planned(product: &Array, stream: Stream, run_as: &HashMap<*const Node, Pending>) -> Option<PlannedProduct> {
    match run_as.get(&Arc::as_ptr(&product.0)) {
        Some(Pending { op: Op::JoinedMatmul { prologue, epilogue: None, alpha, beta, quantized }, inputs, .. })
            if *beta == 0.0 =>
        {
            Some(PlannedProduct {
                prologue: prologue.clone(),
                alpha: *alpha,
                quantized: *quantized,
                inputs: inputs.clone(),
            })
        }
        Some(_) => None,
        None => {
            let ps = product.state();
            let State::Pending(pp) = &*ps else { return None };
            let (alpha, beta, quantized) = product_of(&pp.op)?;
            (beta == 0.0 && pp.stream == stream).then(|| PlannedProduct {
                prologue: None,
                alpha,
                quantized,
                inputs: pp.inputs.clone(),
            })
        }
    }
}

/// For a pending GPU `add` of two same-shape, same-dtype arrays, one a quantized product of
/// at most JOIN_ROWS rows ([`product_of`]) read by nothing else: the product's node and the
/// product with the other array as its addend (a residual connection after a quantized
/// layer; dense layers join theirs when built, `addmm`). The product as planned so far: its
/// norm joined in or not.
fn with_addend(node: &Array, run_as: &HashMap<*const Node, Pending>) -> Option<(Vec<*const Node>, Pending)> {
    let st = node.state();
    let State::Pending(a) = &*st else { return None };
    if !matches!(a.op, Op::Binary(BinaryOp::Add)) || !matches!(a.stream.device, Device::Gpu(_)) {
        return None;
    }
    let same = |x: &Array| x.shape() == node.shape() && x.dtype() == node.dtype();
    if !a.inputs.iter().all(same) {
        return None;
    }
    // The product is input `i`; the addend is the other one.
    let is_product = |x: &Array| {
        let xs = x.state();
        matches!(&*xs, State::Pending(p) if p.stream == a.stream
            && matches!(product_of(&p.op), Some((_, _, Some(_)))))
    };
    let i = (0..2).find(|&i| is_product(&a.inputs[i]))?;
    let (prod, addend) = (&a.inputs[i], &a.inputs[1 - i]);
    if Arc::ptr_eq(&prod.0, &addend.0) || !read_only_by(prod, 1) || !(1..=JOIN_ROWS).contains(&rows(prod.shape())) {
        return None;
    }
    let PlannedProduct { prologue, quantized: Some(quantized), inputs, .. } = as_planned(prod, a.stream, run_as)?
    else {
        return None;
    };
    let inputs = inputs.into_iter().chain(std::iter::once(addend.clone())).collect();
    let op = Op::JoinedMatmul { prologue, epilogue: None, alpha: 1.0, beta: 1.0, quantized: Some(quantized) };
    Some((vec![Arc::as_ptr(&prod.0)], Pending { op, inputs, stream: a.stream }))
}

/// A `put_along_axis` into a KV cache that [`cache_writes`] may join: its stream, the cache
/// (row-major on the device, held by nothing else, so written in place), the array whose value
/// is the position (the index repeats it through reshapes and broadcasts), and the value rows:
/// heads `from..` of the `[B, H, 1, D]` array at `source`, through a slice read by nothing else
/// (`slice`) or whole.
struct CacheWrite {
    put: *const Node,
    stream: Stream,
    cache: Array,
    position: *const Node,
    source: *const Node,
    from: usize,
    slice: Option<*const Node>,
}

/// `a` as a [`CacheWrite`], if it is one: a pending GPU `put_along_axis` assigning one
/// position along axis 2 of a 4-D cache `[B, Hk, S, D]`.
fn cache_write(a: &Array) -> Option<CacheWrite> {
    let st = a.state();
    let State::Pending(p) = &*st else { return None };
    let Op::PutAlongAxis { axis: 2, mode: ScatterMode::Assign } = p.op else { return None };
    let (cache, idx, vals) = (&p.inputs[0], &p.inputs[1], &p.inputs[2]);
    let (cs, vs) = (cache.shape(), vals.shape());
    if !matches!(p.stream.device, Device::Gpu(_)) || cs.len() != 4 || vs != [cs[0], cs[1], 1, cs[3]] {
        return None;
    }
    // Held by this put alone: the joined rope writes its buffer in place.
    if Arc::strong_count(&cache.0) != 1 || !cache.dtype().is_float() || vals.dtype() != cache.dtype() {
        return None;
    }
    {
        let cst = cache.state();
        let State::Ready(d) = &*cst else { return None };
        let exclusive = Arc::strong_count(&d.buffer) == 1 && d.buffer.is_device_only();
        if !exclusive || d.offset != 0 || !d.is_row_contiguous(cs) {
            return None;
        }
    }
    let position = one_position(idx)?;
    let (source, from, slice) = match read_only_by(vals, 1).then(|| vals.state()) {
        Some(vst) => match &*vst {
            State::Pending(sp) => match &sp.op {
                Op::Slice { start, step } if step.iter().all(|&t| t == 1) && start[0] == 0 && start[2..] == [0, 0] => {
                    (Arc::as_ptr(&sp.inputs[0].0), start[1], Some(Arc::as_ptr(&vals.0)))
                }
                _ => (Arc::as_ptr(&vals.0), 0, None),
            },
            State::Ready(_) => return None,
        },
        None => (Arc::as_ptr(&vals.0), 0, None),
    };
    Some(CacheWrite { put: Arc::as_ptr(&a.0), stream: p.stream, cache: cache.clone(), position, source, from, slice })
}

/// The array of one element that index array `idx` repeats (through pending reshapes and
/// broadcasts: `put_along_axis` broadcasts its indices to the values' shape), if it does.
fn one_position(idx: &Array) -> Option<*const Node> {
    let mut a = idx.clone();
    loop {
        let next = match &*a.state() {
            State::Pending(p) if matches!(p.op, Op::Reshape | Op::Broadcast) => p.inputs[0].clone(),
            _ => break,
        };
        a = next;
    }
    (a.size() == 1).then_some(Arc::as_ptr(&a.0))
}

/// A decode step's KV-cache writes joined into its rope (see [`Op::RopeWrite`]): for each
/// pending GPU rope of one position whose rotated heads one [`CacheWrite`] on its stream writes at the
/// rope's own offset, and (if there is one) a second that writes value rows sliced from the
/// array the rope's input is sliced from, at the same position: the rope runs as
/// `RopeWrite`, each put as [`Op::Written`] (its cache, written by then), and the slices
/// between drop out. Only where every other reader of the puts comes after the rope (the
/// put of the values may come before it in `order`: it launches nothing). Returns, per
/// join, the dropped nodes and the nodes' new pending ops.
#[allow(clippy::type_complexity)]
fn cache_writes(order: &[Array]) -> Vec<(Vec<*const Node>, Vec<(*const Node, Pending)>)> {
    let key = |a: &Array| Arc::as_ptr(&a.0);
    let writes: Vec<CacheWrite> = order.iter().filter_map(cache_write).collect();
    if writes.is_empty() {
        return Vec::new();
    }
    let at: HashMap<*const Node, usize> = order.iter().enumerate().map(|(i, a)| (key(a), i)).collect();
    // The first step that reads each node.
    let mut first_reader: HashMap<*const Node, usize> = HashMap::new();
    for (i, a) in order.iter().enumerate() {
        if let State::Pending(p) = &*a.state() {
            for x in &p.inputs {
                first_reader.entry(key(x)).or_insert(i);
            }
        }
    }
    let mut out = Vec::new();
    let mut used: HashSet<*const Node> = HashSet::new();
    for k in &writes {
        let Some(&ri) = at.get(&k.source) else { continue };
        let rope = &order[ri];
        let rst = rope.state();
        let State::Pending(rp) = &*rst else { continue };
        let Op::Rope { dims, traditional, base, scale, freqs } = rp.op else { continue };
        let (x, offset) = (&rp.inputs[0], &rp.inputs[1]);
        let xs = x.shape();
        if xs.len() != 4
            || xs[2] != 1
            || key(offset) != k.position
            || rope.dtype() != k.cache.dtype()
            || rp.stream != k.stream
            || used.contains(&key(rope))
        {
            continue;
        }
        // The array the rope's input is sliced from, if it is a slice.
        let x_source = match &*x.state() {
            State::Pending(xp) if matches!(xp.op, Op::Slice { .. }) => Some(xp.inputs[0].clone()),
            _ => None,
        };
        let v = x_source.as_ref().and_then(|src| {
            writes.iter().find(|v| {
                v.source == key(src)
                    && v.stream == k.stream
                    && v.position == k.position
                    && v.cache.shape() == k.cache.shape()
                    && v.put != k.put
                    && !used.contains(&v.put)
            })
        });
        // Nothing may read a put's output before the rope has written its cache.
        let after_rope = |w: &CacheWrite| first_reader.get(&w.put).is_none_or(|&r| r > ri);
        if !after_rope(k) || v.is_some_and(|v| !after_rope(v)) {
            continue;
        }
        let mut inputs = rp.inputs.clone();
        inputs.push(k.cache.clone());
        let mut values_from = None;
        let mut gone: Vec<*const Node> = k.slice.into_iter().collect();
        let mut runs = vec![(k.put, Pending { op: Op::Written, inputs: vec![k.cache.clone()], stream: rp.stream })];
        if let (Some(v), Some(source)) = (v, x_source) {
            used.insert(v.put);
            inputs.extend([source, v.cache.clone()]);
            values_from = Some(v.from);
            gone.extend(v.slice);
            runs.push((v.put, Pending { op: Op::Written, inputs: vec![v.cache.clone()], stream: rp.stream }));
        }
        let op = Op::RopeWrite { dims, traditional, base, scale, freqs, keys_from: k.from, values_from };
        runs.push((key(rope), Pending { op, inputs, stream: rp.stream }));
        used.insert(key(rope));
        out.push((gone, runs));
    }
    out
}
