//! Evaluation: walk the graph once, run each op on its stream's device, free intermediates
//! as soon as their last consumer ran, and detach what was computed from its inputs.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::array::{Array, Node, Pending, State};
use crate::error::{Error, Result};

/// One evaluation at a time: a graph shared by two evaluations must not run twice.
static EVAL_LOCK: Mutex<()> = Mutex::new(());

thread_local! {
    /// True while this thread holds [`EVAL_LOCK`]: a kernel that reads a small derived array
    /// (indices, a weight vector) evaluates it without taking the lock again.
    static IN_EVAL: Cell<bool> = const { Cell::new(false) };
}

thread_local! {
    /// Tracers of the transforms running on this thread that must not be evaluated (their
    /// values stand for every possible input), with the transform's name.
    static TRACERS: RefCell<Vec<(HashSet<*const Node>, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// While alive, evaluating anything that depends on `tracers` is an error naming `transform`:
/// the transform traces its function once for all inputs, so the function must not read
/// values.
pub(crate) struct TracerGuard;

impl TracerGuard {
    pub(crate) fn new(tracers: &[Array], transform: &'static str) -> TracerGuard {
        let keys = tracers.iter().map(|a| Arc::as_ptr(&a.0)).collect();
        TRACERS.with(|t| t.borrow_mut().push((keys, transform)));
        TracerGuard
    }
}

impl Drop for TracerGuard {
    fn drop(&mut self) {
        TRACERS.with(|t| t.borrow_mut().pop());
    }
}

/// The transform whose tracer `key` is, if it is one.
fn tracer_of(key: *const Node) -> Option<&'static str> {
    TRACERS.with(|t| t.borrow().iter().find(|(keys, _)| keys.contains(&key)).map(|(_, name)| *name))
}

/// Holds the evaluation lock unless this thread already does.
struct EvalGuard {
    _lock: Option<MutexGuard<'static, ()>>,
}

impl EvalGuard {
    fn acquire() -> EvalGuard {
        if IN_EVAL.with(|f| f.get()) {
            return EvalGuard { _lock: None };
        }
        let lock = EVAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        IN_EVAL.with(|f| f.set(true));
        EvalGuard { _lock: Some(lock) }
    }
}

impl EvalGuard {
    /// True for the evaluation that took the lock (not one nested inside a kernel).
    fn outermost(&self) -> bool {
        self._lock.is_some()
    }
}

impl Drop for EvalGuard {
    fn drop(&mut self) {
        if self._lock.is_some() {
            IN_EVAL.with(|f| f.set(false));
        }
    }
}

/// Computes every array in `outputs` and what they depend on.
///
/// Each op runs once. An evaluated array keeps its data and drops its inputs, so the graph
/// behind it is freed. On error, the arrays that were not computed stay as they were.
pub fn eval(outputs: &[&Array]) -> Result<()> {
    let guard = EvalGuard::acquire();
    let outer = guard.outermost() && crate::profile::enabled();
    let start = outer.then(|| {
        let now = std::time::Instant::now();
        if let Some(t) = LAST_EVAL_END.lock().unwrap_or_else(|e| e.into_inner()).take() {
            crate::profile::record_step("between evals: graph building, reads, sampling", now - t);
        }
        now
    });
    let order = topological_order(outputs)?;
    if order.is_empty() {
        // Everything is computed already: no hand-over to the compute pool.
        return Ok(());
    }
    if let Some(t) = start {
        crate::profile::record_step("eval: graph walk", t.elapsed());
    }
    let result = run_in_pool(crate::backend::plan(order));
    if outer {
        *LAST_EVAL_END.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }
    result
}

/// When the last outermost evaluation ended (recorded only while profiling).
static LAST_EVAL_END: Mutex<Option<std::time::Instant>> = Mutex::new(None);

/// Runs the ops of `order` in turn on a thread of the compute pool (rayon's), stopping at the
/// first error. A kernel that splits its work then shares it with the pool's other threads by
/// work stealing, and [`crate::linger::keep_awake`] keeps them awake between the ops of a
/// step; called from outside the pool, each op would instead hand its pieces to sleeping
/// workers and sleep until they finish, which costs more than a small op (a decode step runs
/// hundreds).
///
/// Each node is dropped as soon as it ran, so an intermediate is freed once its last consumer
/// ran (and its memory is reused while still in cache).
fn run_in_pool(order: Vec<Planned>) -> Result<()> {
    let run_all = |order: Vec<Planned>| {
        order.into_iter().try_for_each(|step| {
            crate::linger::keep_awake();
            run(&step.node, step.run_as)
        })
    };
    if rayon::current_thread_index().is_some() {
        return run_all(order);
    }
    rayon::scope(|_| {
        // The worker now holds this thread's evaluation lock: nested evaluations in kernels
        // must not take it again.
        let was_in_eval = IN_EVAL.with(|f| f.replace(true));
        let result = run_all(order);
        IN_EVAL.with(|f| f.set(was_in_eval));
        result
    })
}

/// Starts computing `outputs` on a background thread and returns at once. A later
/// [`eval`], `item` or `to_vec` of those arrays waits for that work instead of repeating it.
pub fn async_eval(outputs: &[&Array]) {
    let outputs: Vec<Array> = outputs.iter().map(|a| (*a).clone()).collect();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let guard = EvalGuard::acquire();
        let _ = started_tx.send(());
        // An error is reported again by the eval that waits for these arrays.
        let order = topological_order(&outputs.iter().collect::<Vec<_>>()).unwrap_or_default();
        let _ = run_in_pool(crate::backend::plan(order));
        drop(guard);
    });
    // Return only once the worker holds the lock, so a following eval waits for it.
    let _ = started_rx.recv();
}

/// Numbers the graph walks of [`topological_order`]; a node stores the latest walk that
/// reached it, so a walk needs no set of the nodes it has seen.
static WALKS: AtomicU64 = AtomicU64::new(1);

/// Pending nodes reachable from `outputs`, inputs before their consumers.
///
/// Two walks at once (nested evaluations inside kernels on two threads) may overwrite each
/// other's marks on a shared node; a node reached twice is then listed twice, which costs
/// nothing ([`run`] skips a node already computed) and keeps inputs before consumers.
pub(crate) fn topological_order(outputs: &[&Array]) -> Result<Vec<Array>> {
    let tracing = TRACERS.with(|t| !t.borrow().is_empty());
    let walk = WALKS.fetch_add(1, Ordering::Relaxed);
    let seen = |a: &Array| a.0.visited.load(Ordering::Relaxed) == walk;
    let mut order = Vec::new();
    // Iterative post-order DFS: (array, inputs pushed yet?).
    let mut stack: Vec<(Array, bool)> = outputs.iter().rev().map(|a| ((*a).clone(), false)).collect();
    while let Some((a, expanded)) = stack.pop() {
        if expanded {
            order.push(a);
            continue;
        }
        if seen(&a) {
            continue;
        }
        a.0.visited.store(walk, Ordering::Relaxed);
        let st = a.state();
        let State::Pending(p) = &*st else { continue };
        if tracing {
            if let Some(name) = tracer_of(Arc::as_ptr(&a.0)) {
                return Err(Error::invalid(
                    name,
                    "cannot evaluate a value that depends on the function's inputs while it is being \
                     traced (item, to_vec or eval inside the function); the trace stands for every input",
                ));
            }
        }
        stack.push((a.clone(), true));
        stack.extend(p.inputs.iter().rev().filter(|inp| !seen(inp)).map(|inp| (inp.clone(), false)));
    }
    Ok(order)
}

/// One step of an evaluation: a pending node, computed as its own op or as `run_as` (the same
/// value by another computation: see [`crate::backend::plan`]).
pub(crate) struct Planned {
    /// The node to compute.
    pub node: Array,
    /// What computes it instead of the node's own op and inputs, if anything.
    pub run_as: Option<Pending>,
}

thread_local! {
    /// See [`pending_refs`].
    static PENDING_REFS: Cell<usize> = const { Cell::new(1) };
}

/// How many references an input of the op running on this thread has when nothing but the
/// evaluation holds it: its node's pending state, and the planned computation's where one
/// stands in ([`Planned::run_as`]; such an input is in both). A kernel may then write its
/// output over the input's buffer (a donation).
pub(crate) fn pending_refs() -> usize {
    PENDING_REFS.with(|r| r.get())
}

/// Computes `a` (by `run_as` if given) and makes it ready. The node's state stays locked while
/// its op runs, so the op reads its pending inputs in place (no copy of them per node); only
/// the node's own computation reads that state, and a kernel's nested evaluation never reaches
/// the node it computes (the graph has no cycles).
fn run(a: &Array, run_as: Option<Pending>) -> Result<()> {
    /// Puts back the count of the op this one runs inside (a kernel's nested evaluation).
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            PENDING_REFS.with(|r| r.set(self.0));
        }
    }
    let _outer = Restore(PENDING_REFS.with(|r| r.replace(1 + usize::from(run_as.is_some()))));
    let mut st = a.state();
    let start = crate::profile::enabled().then(std::time::Instant::now);
    let data = match (&*st, &run_as) {
        (State::Ready(_), _) => return Ok(()),
        (State::Pending(_), Some(p)) | (State::Pending(p), None) => {
            let data = crate::backend::run(p, a)?;
            if let Some(start) = start {
                crate::profile::record(&p.op, a.dtype(), a.shape(), start.elapsed());
            }
            data
        }
    };
    // Detach: dropping the pending state releases the inputs.
    let old = std::mem::replace(&mut *st, State::Ready(data));
    drop(st);
    drop(old);
    drop(run_as);
    Ok(())
}
