//! `compile`: trace a function once per input signature, optimize the recorded graph, and
//! replay it on later calls.
//!
//! The first call with a given signature (input shapes and dtypes; ranks and dtypes when
//! shapeless) runs the function on tracers and records a tape: the primitives that depend
//! on the inputs, in order, with everything else folded into evaluated constants. The tape
//! is then simplified: identical steps are merged (common subexpressions), and chains of
//! elementwise steps whose intermediates nothing else reads are fused into one
//! [`Op::Fused`] step, which the CPU evaluates tile by tile in cache. Later calls replay the
//! tape over the new inputs, which records the same lazy graph without running the function.
//!
//! Compiled functions must be pure: what they read besides their inputs is frozen at the
//! trace. State that changes between calls — model parameters updated in place, an optimizer's
//! moments — is declared with a [`StateCell`], which the compiled function reads and writes
//! like an extra input and output. The default random key sequence is threaded through
//! automatically, so samplers without a key draw fresh numbers on every call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{key, trace_order, Key};
use crate::array::Array;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::eval::TracerGuard;
use crate::ops::random;
use crate::primitives::{FusedGraph, FusedSlot, Op};
use crate::shape::broadcast_shapes;

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns compilation off (compiled functions then simply call their function) or back on,
/// process-wide — for debugging a compiled function.
pub fn set_compile_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::SeqCst);
}

/// Arrays that a compiled function reads and replaces between calls (MLX's `inputs=` /
/// `outputs=` of `mx.compile`): cheap to clone, shared between the function and the caller.
#[derive(Clone, Default)]
pub struct StateCell(Arc<Mutex<Vec<Array>>>);

impl StateCell {
    /// A cell holding `arrays`.
    pub fn new(arrays: Vec<Array>) -> StateCell {
        StateCell(Arc::new(Mutex::new(arrays)))
    }

    /// The arrays held now.
    pub fn get(&self) -> Vec<Array> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the arrays held.
    pub fn set(&self, arrays: Vec<Array>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = arrays;
    }
}

/// Where a tape step reads an operand.
#[derive(Clone)]
enum Slot {
    /// Input `i` of the call (user inputs, then state, then the random state).
    Input(usize),
    /// The result of step `i`.
    Step(usize),
    /// An evaluated constant captured at the trace.
    Const(Array),
}

/// One recorded primitive.
#[derive(Clone)]
struct Step {
    op: Op,
    slots: Vec<Slot>,
    in_shapes: Vec<Vec<usize>>,
    shape: Vec<usize>,
    dtype: Dtype,
}

/// A traced and optimized function.
struct Tape {
    steps: Vec<Step>,
    outputs: Vec<Slot>,
    /// Outputs the user sees; then the new contents of each state cell; then the random state.
    n_user_outputs: usize,
    state_out_lens: Vec<usize>,
    uses_random: bool,
}

/// The input signature a tape is valid for.
type Signature = Vec<(Vec<usize>, Dtype)>;

/// A compiled function; see [`compile`].
pub struct Compiled<F> {
    f: F,
    shapeless: bool,
    state: Vec<StateCell>,
    cache: Mutex<HashMap<Signature, Arc<Tape>>>,
}

/// Compiles `f`: the first call per input signature traces it; later calls replay the
/// optimized trace. Outputs are identical to calling `f`.
///
/// ```
/// use ferrox::{self as fx, Array};
/// let gelu = fx::compile(|a: &[Array]| {
///     let x = &a[0];
///     let t = fx::erf(&fx::multiply(x, std::f32::consts::FRAC_1_SQRT_2)?)?;
///     Ok(vec![fx::multiply(&fx::multiply(x, 0.5)?, &fx::add(&t, 1.0)?)?])
/// });
/// let y = gelu.call(&[Array::from_slice(&[0.0f32, 1.0], &[2]).unwrap()]).unwrap();
/// assert!((y[0].to_vec::<f32>().unwrap()[1] - 0.841_344_7).abs() < 1e-6);
/// ```
pub fn compile<F>(f: F) -> Compiled<F>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    Compiled { f, shapeless: false, state: Vec::new(), cache: Mutex::new(HashMap::new()) }
}

impl<F> Compiled<F>
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    /// Traces once per input ranks and dtypes instead of per shape: a call with new shapes
    /// replays the trace with shapes worked out again. Ops whose parameters fix a shape
    /// (reshape, broadcast_to, slices, ...) fail with a clear error when their input shape
    /// changes, and constants the function derived from a shape (the `1/n` of a mean) stay
    /// those of the trace, as in MLX.
    pub fn shapeless(mut self, shapeless: bool) -> Self {
        self.shapeless = shapeless;
        self
    }

    /// Declares `cell` as state the function reads and replaces: its arrays are passed to
    /// each call like inputs, and what the function stores in it is written back after.
    pub fn with_state(mut self, cell: &StateCell) -> Self {
        self.state.push(cell.clone());
        self
    }

    /// How many traces are cached (one per input signature seen).
    pub fn cached_traces(&self) -> usize {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Calls the compiled function.
    pub fn call(&self, inputs: &[Array]) -> Result<Vec<Array>> {
        if !ENABLED.load(Ordering::SeqCst) {
            return (self.f)(inputs);
        }
        let mut all = inputs.to_vec();
        let mut state_in_lens = Vec::with_capacity(self.state.len());
        for cell in &self.state {
            let arrays = cell.get();
            state_in_lens.push(arrays.len());
            all.extend(arrays);
        }
        let signature: Signature = all
            .iter()
            .map(|a| (if self.shapeless { vec![a.ndim()] } else { a.shape().to_vec() }, a.dtype()))
            .chain(state_in_lens.iter().map(|&n| (vec![n], Dtype::Bool)))
            .collect();
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&signature).cloned();
        let tape = match cached {
            Some(t) => t,
            None => {
                let t = Arc::new(self.trace(&all, inputs.len(), &state_in_lens)?);
                self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(signature, t.clone());
                t
            }
        };
        // A function drawing random numbers reads and advances the global state in one step,
        // so concurrent draws on other threads are neither repeated nor lost.
        let (outs, mut rest) = if tape.uses_random {
            random::update_state(|s| {
                all.push(s.clone());
                let mut outs = replay(&tape, &all, self.shapeless)?;
                let mut rest = outs.split_off(tape.n_user_outputs);
                let new = rest.pop().expect("the random state is the last output");
                Ok(((outs, rest), new))
            })?
        } else {
            let mut outs = replay(&tape, &all, self.shapeless)?;
            let rest = outs.split_off(tape.n_user_outputs);
            (outs, rest)
        };
        for (cell, &n) in self.state.iter().zip(&tape.state_out_lens) {
            let tail = rest.split_off(n);
            cell.set(std::mem::replace(&mut rest, tail));
        }
        Ok(outs)
    }

    /// Runs `f` on tracers of `all` (user inputs, then state) and records the tape.
    fn trace(&self, all: &[Array], n_user: usize, state_in_lens: &[usize]) -> Result<Tape> {
        let tracer = |a: &Array| Array::from_op(a.shape().to_vec(), a.dtype(), Op::Copy, vec![a.clone()]);
        let mut tracers: Vec<Array> = all.iter().map(tracer).collect();
        let saved: Vec<Vec<Array>> = self.state.iter().map(StateCell::get).collect();
        let mut at = n_user;
        for (cell, &n) in self.state.iter().zip(state_in_lens) {
            cell.set(tracers[at..at + n].to_vec());
            at += n;
        }
        // The trace draws from a tracer of the random state, kept on this thread only.
        let random_tracer = tracer(&random::state());
        let (result, random_after) = random::with_trace_state(random_tracer.clone(), || {
            let mut guarded = tracers.clone();
            guarded.push(random_tracer.clone());
            let _guard = TracerGuard::new(&guarded, "compile");
            (self.f)(&tracers[..n_user])
        });
        let new_state: Vec<Vec<Array>> = self.state.iter().map(StateCell::get).collect();
        for (cell, s) in self.state.iter().zip(saved) {
            cell.set(s);
        }
        let mut outputs = result?;
        let n_user_outputs = outputs.len();
        let state_out_lens = new_state.iter().map(Vec::len).collect();
        outputs.extend(new_state.into_iter().flatten());
        let uses_random = !random_after.same(&random_tracer);
        if uses_random {
            outputs.push(random_after);
            tracers.push(random_tracer);
        }
        let (steps, outputs) = record(&tracers, &outputs)?;
        let (steps, outputs) = fuse(eliminate_common(steps, outputs));
        Ok(Tape { steps, outputs, n_user_outputs, state_out_lens, uses_random })
    }
}

/// The primitives between `tracers` and `outputs`; everything not depending on a tracer is
/// evaluated now and becomes a constant.
fn record(tracers: &[Array], outputs: &[Array]) -> Result<(Vec<Step>, Vec<Slot>)> {
    let mut slot_of: HashMap<Key, Slot> = tracers.iter().enumerate().map(|(i, t)| (key(t), Slot::Input(i))).collect();
    let keys = slot_of.keys().copied().collect();
    let mut steps = Vec::new();
    let mut constants = Vec::new();
    let mut slot = |a: &Array, slot_of: &HashMap<Key, Slot>| match slot_of.get(&key(a)) {
        Some(s) => s.clone(),
        None => {
            constants.push(a.clone());
            Slot::Const(a.clone())
        }
    };
    for node in trace_order(outputs, &keys) {
        let Some((op, ins)) = node.pending_parts() else { continue };
        let slots = ins.iter().map(|a| slot(a, &slot_of)).collect();
        let in_shapes = ins.iter().map(|a| a.shape().to_vec()).collect();
        slot_of.insert(key(&node), Slot::Step(steps.len()));
        steps.push(Step { op, slots, in_shapes, shape: node.shape().to_vec(), dtype: node.dtype() });
    }
    let outs = outputs.iter().map(|o| slot(o, &slot_of)).collect();
    // Constant folding: whatever does not depend on the inputs is computed once, here.
    crate::eval::eval(&constants.iter().collect::<Vec<_>>())?;
    Ok((steps, outs))
}

/// A hashable identity for a slot: small constants by value, others by identity.
fn slot_key(s: &Slot, remap: &[usize]) -> String {
    match s {
        Slot::Input(i) => format!("i{i}"),
        Slot::Step(i) => format!("s{}", remap[*i]),
        Slot::Const(a) if a.size() <= 8 => {
            let values = if a.dtype().is_float() {
                format!("{:?}", a.to_vec::<f64>().unwrap_or_default())
            } else if a.dtype() == Dtype::U64 {
                format!("{:?}", a.to_vec::<u64>().unwrap_or_default())
            } else {
                format!("{:?}", a.to_vec::<i64>().unwrap_or_default())
            };
            format!("c{}{:?}{values}", a.dtype(), a.shape())
        }
        Slot::Const(a) => format!("p{:p}", Arc::as_ptr(&a.0)),
    }
}

/// A hashable identity for a slot whose step indices are final.
fn identity_key(s: &Slot) -> String {
    match s {
        Slot::Input(i) => format!("i{i}"),
        Slot::Step(i) => format!("s{i}"),
        Slot::Const(a) => format!("p{:p}", Arc::as_ptr(&a.0)),
    }
}

/// Merges steps that apply the same op to the same operands, and drops unused steps.
fn eliminate_common(steps: Vec<Step>, outputs: Vec<Slot>) -> (Vec<Step>, Vec<Slot>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut remap = Vec::with_capacity(steps.len());
    let mut kept: Vec<Step> = Vec::new();
    for mut st in steps {
        let k = format!(
            "{:?}|{}|{:?}|{}",
            st.op,
            st.slots.iter().map(|s| slot_key(s, &remap)).collect::<Vec<_>>().join(","),
            st.shape,
            st.dtype
        );
        if let Some(&i) = seen.get(&k) {
            remap.push(i);
            continue;
        }
        for s in &mut st.slots {
            if let Slot::Step(i) = s {
                *i = remap[*i];
            }
        }
        seen.insert(k, kept.len());
        remap.push(kept.len());
        kept.push(st);
    }
    prune(kept, renumber(outputs, &remap))
}

/// Drops the steps no output depends on, renumbering the rest.
fn prune(steps: Vec<Step>, outputs: Vec<Slot>) -> (Vec<Step>, Vec<Slot>) {
    let mut live = vec![false; steps.len()];
    for s in &outputs {
        if let Slot::Step(i) = s {
            live[*i] = true;
        }
    }
    for i in (0..steps.len()).rev() {
        if live[i] {
            for s in &steps[i].slots {
                if let Slot::Step(j) = s {
                    live[*j] = true;
                }
            }
        }
    }
    let mut new_index = vec![usize::MAX; steps.len()];
    let mut kept = Vec::new();
    for (i, mut st) in steps.into_iter().enumerate() {
        if !live[i] {
            continue;
        }
        for s in &mut st.slots {
            if let Slot::Step(j) = s {
                *j = new_index[*j];
            }
        }
        new_index[i] = kept.len();
        kept.push(st);
    }
    (kept, renumber(outputs, &new_index))
}

/// `slots` with every step index `i` replaced by `map[i]`.
fn renumber(slots: Vec<Slot>, map: &[usize]) -> Vec<Slot> {
    slots
        .into_iter()
        .map(|s| match s {
            Slot::Step(i) => Slot::Step(map[i]),
            other => other,
        })
        .collect()
}

/// True for the elementwise primitives a fused kernel can run.
fn fusable(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::AsType)
}

/// True for the elementwise primitives cheap enough to recompute in every fused group that
/// reads them rather than write them to memory once and read them back (a few cycles per
/// element against the bandwidth of a memory pass).
fn cheap(op: &Op) -> bool {
    use crate::primitives::{BinaryOp as B, UnaryOp as U};
    match op {
        Op::Unary(u) => matches!(
            u,
            U::Abs | U::Negative | U::Sign | U::Square | U::Floor | U::Ceil | U::LogicalNot | U::BitwiseInvert
        ),
        Op::Binary(b) => !matches!(b, B::Power | B::LogAddExp | B::ArcTan2 | B::Remainder | B::FloorDivide),
        Op::Select | Op::AsType => true,
        _ => false,
    }
}

/// At most this many fused groups recompute one cheap shared step.
const MAX_RECOMPUTE: usize = 4;

/// True if `consumer` can take `producer` into its fused group: an elementwise step of the
/// same shape, or a reduction of it (the producer becomes the reduction's prologue).
fn absorbs(consumer: &Step, producer: &Step) -> bool {
    match consumer.op {
        Op::Reduce { .. } => consumer.in_shapes[0] == producer.shape,
        ref op => fusable(op) && consumer.shape == producer.shape,
    }
}

/// Fuses elementwise steps into the groups of their consumers. A group's root is a step whose
/// result is materialized: an output, a step some reader cannot absorb, or one shared by
/// several groups and too costly to recompute; every other elementwise step joins the groups
/// of its readers — one group, or several that each recompute it when it is [`cheap`]. A group
/// rooted at a reduction makes the reduction read its elementwise prologue without the
/// prologue ever being written to memory.
fn fuse((steps, outputs): (Vec<Step>, Vec<Slot>)) -> (Vec<Step>, Vec<Slot>) {
    let n = steps.len();
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut is_output = vec![false; n];
    for (i, st) in steps.iter().enumerate() {
        for s in &st.slots {
            if let Slot::Step(j) = s {
                if readers[*j].last() != Some(&i) {
                    readers[*j].push(i);
                }
            }
        }
    }
    for s in &outputs {
        if let Slot::Step(i) = s {
            is_output[*i] = true;
        }
    }
    // roots[i]: the roots of the groups step i runs in (just itself for a root). Readers come
    // after their operands, so walking backwards settles every reader first.
    let mut roots: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).rev() {
        let st = &steps[i];
        let joins = fusable(&st.op)
            && !is_output[i]
            && !readers[i].is_empty()
            && readers[i].iter().all(|&c| absorbs(&steps[c], st));
        let mut groups: Vec<usize> =
            if joins { readers[i].iter().flat_map(|&c| roots[c].clone()).collect() } else { vec![] };
        groups.sort_unstable();
        groups.dedup();
        roots[i] = match groups.len() {
            1 => groups,
            k if k > 1 && k <= MAX_RECOMPUTE && cheap(&st.op) => groups,
            _ => vec![i],
        };
    }
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, rs) in roots.iter().enumerate() {
        for &r in rs {
            members.entry(r).or_default().push(i);
        }
    }
    let mut out_steps: Vec<Step> = Vec::with_capacity(n);
    let mut new_index = vec![usize::MAX; n];
    for i in 0..n {
        if roots[i] != [i] {
            continue; // emitted inside its roots' fused steps
        }
        let m = &members[&i];
        let remapped = |s: &Slot| match s {
            Slot::Step(j) => Slot::Step(new_index[*j]),
            other => other.clone(),
        };
        if m.len() == 1 {
            let mut st = steps[i].clone();
            st.slots = st.slots.iter().map(remapped).collect();
            new_index[i] = out_steps.len();
            out_steps.push(st);
            continue;
        }
        let position: HashMap<usize, usize> = m.iter().enumerate().map(|(p, &s)| (s, p)).collect();
        let mut inputs: Vec<Slot> = Vec::new();
        let mut input_keys: Vec<String> = Vec::new();
        let mut in_shapes = Vec::new();
        let mut program = Vec::with_capacity(m.len());
        for &s in m {
            let st = &steps[s];
            let mut fslots = Vec::with_capacity(st.slots.len());
            for (slot, shape) in st.slots.iter().zip(&st.in_shapes) {
                if let Slot::Step(j) = slot {
                    if let Some(&p) = position.get(j) {
                        fslots.push(FusedSlot::Step(p));
                        continue;
                    }
                }
                let outer = remapped(slot);
                let k = identity_key(&outer);
                let idx = match input_keys.iter().position(|x| *x == k) {
                    Some(idx) => idx,
                    None => {
                        input_keys.push(k);
                        inputs.push(outer);
                        in_shapes.push(shape.clone());
                        inputs.len() - 1
                    }
                };
                fslots.push(FusedSlot::Input(idx));
            }
            program.push((st.op.clone(), fslots, st.dtype));
        }
        let root = &steps[i];
        new_index[i] = out_steps.len();
        out_steps.push(Step {
            op: Op::Fused(Arc::new(FusedGraph { steps: program })),
            slots: inputs,
            in_shapes,
            shape: root.shape.clone(),
            dtype: root.dtype,
        });
    }
    let outputs = outputs
        .into_iter()
        .map(|s| match s {
            Slot::Step(i) => Slot::Step(new_index[i]),
            other => other,
        })
        .collect();
    (out_steps, outputs)
}

/// Records the tape's ops over `inputs`.
fn replay(tape: &Tape, inputs: &[Array], shapeless: bool) -> Result<Vec<Array>> {
    let mut vals: Vec<Array> = Vec::with_capacity(tape.steps.len());
    let get = |s: &Slot, vals: &[Array]| match s {
        Slot::Input(i) => inputs[*i].clone(),
        Slot::Step(i) => vals[*i].clone(),
        Slot::Const(a) => a.clone(),
    };
    for st in &tape.steps {
        let ins: Vec<Array> = st.slots.iter().map(|s| get(s, &vals)).collect();
        let shape = if shapeless { infer_shape(st, &ins)? } else { st.shape.clone() };
        vals.push(Array::from_op(shape, st.dtype, st.op.clone(), ins));
    }
    Ok(tape.outputs.iter().map(|s| get(s, &vals)).collect())
}

/// The output shape of a step replayed over inputs whose shapes may differ from the trace.
fn infer_shape(st: &Step, ins: &[Array]) -> Result<Vec<usize>> {
    if ins.iter().zip(&st.in_shapes).all(|(a, s)| a.shape() == s.as_slice()) {
        return Ok(st.shape.clone());
    }
    let first = ins[0].shape();
    let mut shape = first.to_vec();
    match &st.op {
        Op::Unary(_)
        | Op::AsType
        | Op::StopGradient
        | Op::Copy
        | Op::Softmax { .. }
        | Op::Scan { .. }
        | Op::RmsNorm { .. }
        | Op::LayerNorm { .. }
        | Op::NormVjp { .. }
        | Op::Rope { .. } => {}
        Op::Sort { kind: crate::primitives::SortKind::Sort | crate::primitives::SortKind::ArgSort, .. } => {}
        Op::Binary(_) | Op::Select => {
            let shapes: Vec<&[usize]> = ins.iter().map(|a| a.shape()).collect();
            shape = broadcast_shapes(&shapes, "compile")?;
        }
        Op::Fused(g) => shape = g.output_shape(&ins.iter().map(|a| a.shape()).collect::<Vec<_>>())?,
        Op::Reduce { axes, .. } => {
            for &a in axes {
                shape[a] = 1;
            }
        }
        Op::ArgReduce { axis, .. } => shape[*axis] = 1,
        Op::LogSumExp => *shape.last_mut().expect("logsumexp has an axis") = 1,
        Op::Transpose(perm) => shape = perm.iter().map(|&p| first[p]).collect(),
        Op::Matmul { .. } => {
            let (a, b) = (ins[0].shape(), ins[1].shape());
            let (ra, rb) = (a.len(), b.len());
            shape = broadcast_shapes(&[&a[..ra - 2], &b[..rb - 2]], "compile")?;
            shape.extend_from_slice(&[a[ra - 2], b[rb - 1]]);
        }
        Op::Attention { .. } => shape = vec![first[0], first[1], first[2], ins[2].shape()[3]],
        op => {
            let got: Vec<&[usize]> = ins.iter().map(|a| a.shape()).collect();
            return Err(Error::shape(
                "compile",
                format!(
                    "shapeless: {op:?} was traced with input shapes {:?} and cannot be replayed with {got:?}; \
                     compile without shapeless",
                    st.in_shapes
                ),
            ));
        }
    }
    Ok(shape)
}
