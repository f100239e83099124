//! Keeps the compute pool's other threads awake across an evaluation's short serial stretches.
//!
//! A decode step alternates ops that split their work (products) with small serial ones
//! (norms, rope, attention over a short context) of 5–50 µs. An idle rayon worker yields for
//! a few dozen rounds and then sleeps; waking it for the next split costs ~20 µs on this
//! class of machine, so each product after a gap of more than ~20 µs started on one thread
//! (a 135M step's 121 products with 40 µs gaps: 10.1–10.4 ms, against 7.9–8.2 with the
//! workers kept awake). A *lingering* task occupies each other worker and runs whatever work
//! the pool has ([`rayon::yield_now`]), spinning in between, until it has found none for
//! [`LINGER`]; so it behaves as an awake worker and costs a spinning core only that long after
//! the last split.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a lingering task spins without finding work before it leaves its worker: longer
/// than the gaps inside a decode step (5–50 µs), short enough to leave an idle process idle.
/// Spinning across the host's work between two steps' evaluations (sampling and building the
/// next graph, ~200 µs) slows it down on two cores: a 135M 4-bit token was ~3 % faster with
/// 150 µs than with 300, ~10 % slower with 600 or more, and slower still when the tasks left
/// as soon as an evaluation ended (each then woke its worker again; docs/PERF.md session 30).
const LINGER: Duration = Duration::from_micros(150);

/// Lingering tasks running now.
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Makes sure every worker of the pool but the caller's has a lingering task (starting the
/// missing ones). Cheap when they run already: one atomic load.
pub(crate) fn keep_awake() {
    let others = rayon::current_num_threads().saturating_sub(1);
    // Claim a place before starting a task, so two callers never start more than `others`.
    while LINGERING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < others).then_some(n + 1)).is_ok() {
        rayon::spawn(linger);
    }
}

/// Runs the pool's pending work until none has come for [`LINGER`].
fn linger() {
    let mut last_work = Instant::now();
    loop {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => last_work = Instant::now(),
            _ if last_work.elapsed() > LINGER => break,
            _ => std::hint::spin_loop(),
        }
    }
    LINGERING.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Lingering tasks run the pool's work (a split job finishes with them on the other
    /// workers) and leave once idle: the pool's threads, which cannot exit while a task runs
    /// on them, all exit after the pool is dropped.
    #[test]
    fn lingering_tasks_run_pool_work_and_leave_when_idle() {
        let exited = Arc::new(AtomicUsize::new(0));
        let counter = exited.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .exit_handler(move |_| {
                counter.fetch_add(1, Ordering::AcqRel);
            })
            .build()
            .unwrap();
        pool.install(|| {
            keep_awake();
            use rayon::prelude::*;
            let sum = (0..100_000u64).into_par_iter().map(|i| i % 7).sum::<u64>();
            assert_eq!(sum, (0..100_000u64).map(|i| i % 7).sum::<u64>());
        });
        drop(pool);
        let start = Instant::now();
        while exited.load(Ordering::Acquire) < 2 {
            assert!(start.elapsed() < Duration::from_secs(10), "a lingering task kept its worker");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
