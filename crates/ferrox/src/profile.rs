//! Time spent per op kind during evaluation, for finding where a workload's time goes.
//!
//! Off unless the environment sets `FERROX_PROFILE=1` (read once) or [`set_enabled`] turns it
//! on; `FERROX_PROFILE=shapes` also keys each op by its output shape (a decode step's products
//! one row per matrix shape). When off it costs one relaxed atomic load per evaluated op.
//! Times are wall-clock around each op's backend call: on the CPU that is the kernel; on a GPU
//! it is the host's share (enqueueing), not the kernel's run time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::dtype::Dtype;
use crate::primitives::Op;

/// [`UNREAD`], [`OFF`], [`BY_OP`] or [`BY_SHAPE`].
static STATE: AtomicU8 = AtomicU8::new(UNREAD);
/// The environment not yet read.
const UNREAD: u8 = 0;
/// Not recording.
const OFF: u8 = 1;
/// Recording, keyed by op and dtype.
const BY_OP: u8 = 2;
/// Recording, keyed by op, dtype and output shape.
const BY_SHAPE: u8 = 3;

/// Accumulated (count, time) per "Op dtype" (or "Op dtype [shape]") key.
static TABLE: Mutex<Option<HashMap<String, (u64, Duration)>>> = Mutex::new(None);

/// Whether evaluation records per-op times.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        UNREAD => {
            let state = match std::env::var("FERROX_PROFILE").as_deref() {
                Ok("1") => BY_OP,
                Ok("shapes") => BY_SHAPE,
                _ => OFF,
            };
            STATE.store(state, Ordering::Relaxed);
            state != OFF
        }
        s => s != OFF,
    }
}

/// Turns recording on or off (overriding `FERROX_PROFILE`).
pub fn set_enabled(on: bool) {
    STATE.store(if on { BY_OP } else { OFF }, Ordering::Relaxed);
}

/// The variant name of `op`, with the elementwise function where there is one (`Matmul`,
/// `Binary(Add)`, `Transpose`, …).
fn op_name(op: &Op) -> String {
    let full = format!("{op:?}");
    let end = full.find([' ', '{', '[']).unwrap_or(full.len());
    full[..end].trim_end_matches('(').to_string()
}

/// Adds one evaluation of `op` producing `dtype` of `shape` that took `elapsed`.
pub(crate) fn record(op: &Op, dtype: Dtype, shape: &[usize], elapsed: Duration) {
    match STATE.load(Ordering::Relaxed) {
        BY_SHAPE => add(format!("{} {dtype} {shape:?}", op_name(op)), elapsed),
        _ => add(format!("{} {dtype}", op_name(op)), elapsed),
    }
}

/// Adds `elapsed` under a host step that is not an op, named in parentheses so it sorts
/// apart from the ops: "(eval: graph walk)", "(GPU → host reads)", ….
pub(crate) fn record_step(name: &str, elapsed: Duration) {
    add(format!("({name})"), elapsed);
}

fn add(key: String, elapsed: Duration) {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let entry = table.get_or_insert_with(HashMap::new).entry(key).or_default();
    entry.0 += 1;
    entry.1 += elapsed;
}

/// Time recorded for one kind of op.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// The op's variant name and output dtype, e.g. `Matmul bfloat16`.
    pub op: String,
    /// How many times it ran.
    pub count: u64,
    /// Total time it took.
    pub total: Duration,
}

/// The recorded times, largest total first; `reset` clears them afterwards.
pub fn report(reset: bool) -> Vec<OpTime> {
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<OpTime> = table
        .as_ref()
        .map(|t| t.iter().map(|(op, &(count, total))| OpTime { op: op.clone(), count, total }).collect())
        .unwrap_or_default();
    if reset {
        *table = None;
    }
    rows.sort_by(|a, b| b.total.cmp(&a.total).then_with(|| a.op.cmp(&b.op)));
    rows
}

/// `report` as a text table: op, count, total ms, µs per call, share of the recorded total.
/// Rows in parentheses are host steps around the ops, not ops: the graph walk,
/// the time between evaluations (building the next graph, reading results, sampling), and on a
/// GPU the host's reads of device data (waiting for the GPU, then copying).
pub fn format_report(rows: &[OpTime]) -> String {
    let sum: f64 = rows.iter().map(|r| r.total.as_secs_f64()).sum();
    let mut out = format!("{:<32} {:>9} {:>11} {:>10} {:>7}\n", "op", "count", "total ms", "µs/call", "share");
    for r in rows {
        let t = r.total.as_secs_f64();
        out += &format!(
            "{:<32} {:>9} {:>11.2} {:>10.2} {:>6.1}%\n",
            r.op,
            r.count,
            t * 1e3,
            t * 1e6 / r.count.max(1) as f64,
            if sum > 0.0 { 100.0 * t / sum } else { 0.0 }
        );
    }
    out + &format!("{:<32} {:>9} {:>11.2}\n", "total (all rows)", "", sum * 1e3)
}
