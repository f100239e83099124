//! Evaluation: walk the graph once, run each op on its stream's device, free intermediates
//! as soon as their last consumer ran, and detach what was computed from its inputs.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::array::{Array, Node, Pending, State};
use crate::error::Result;

/// One evaluation at a time: a graph shared by two evaluations must not run twice.
static EVAL_LOCK: Mutex<()> = Mutex::new(());

/// Computes every array in `outputs` and what they depend on.
///
/// Each op runs once. An evaluated array keeps its data and drops its inputs, so the graph
/// behind it is freed. On error, the arrays that were not computed stay as they were.
pub fn eval(outputs: &[&Array]) -> Result<()> {
    let _guard = EVAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let order = topological_order(outputs);
    for node in order {
        run(&node)?;
    }
    Ok(())
}

/// Starts computing `outputs` on a background thread and returns at once. A later
/// [`eval`], `item` or `to_vec` of those arrays waits for that work instead of repeating it.
pub fn async_eval(outputs: &[&Array]) {
    let outputs: Vec<Array> = outputs.iter().map(|a| (*a).clone()).collect();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let guard = EVAL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _ = started_tx.send(());
        let order = topological_order(&outputs.iter().collect::<Vec<_>>());
        // An error is reported again by the eval that waits for these arrays.
        for node in order {
            if run(&node).is_err() {
                break;
            }
        }
        drop(guard);
    });
    // Return only once the worker holds the lock, so a following eval waits for it.
    let _ = started_rx.recv();
}

/// Pending nodes reachable from `outputs`, inputs before their consumers.
fn topological_order(outputs: &[&Array]) -> Vec<Array> {
    let mut order = Vec::new();
    let mut seen: HashSet<*const Node> = HashSet::new();
    // Iterative post-order DFS: (array, inputs pushed yet?).
    let mut stack: Vec<(Array, bool)> = outputs.iter().map(|a| ((*a).clone(), false)).collect();
    stack.reverse();
    while let Some((a, expanded)) = stack.pop() {
        let key = Arc::as_ptr(&a.0);
        if expanded {
            order.push(a);
            continue;
        }
        if seen.contains(&key) {
            continue;
        }
        let inputs = match &*a.state() {
            State::Ready(_) => continue,
            State::Pending(p) => p.inputs.clone(),
        };
        seen.insert(key);
        stack.push((a, true));
        for inp in inputs.into_iter().rev() {
            if !seen.contains(&Arc::as_ptr(&inp.0)) {
                stack.push((inp, false));
            }
        }
    }
    order
}

fn run(a: &Array) -> Result<()> {
    let pending = {
        let mut st = a.state();
        match &mut *st {
            State::Ready(_) => return Ok(()),
            State::Pending(p) => Pending { op: p.op.clone(), inputs: p.inputs.clone(), stream: p.stream },
        }
    };
    let data = crate::backend::run(&pending, a)?;
    // Detach: dropping the pending state releases the inputs.
    let old = std::mem::replace(&mut *a.state(), State::Ready(data));
    drop(pending);
    drop(old);
    Ok(())
}
