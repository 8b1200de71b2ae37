//! Properties of the batching logic, for any number of inputs and any size.

use crate::common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prefecto::concurrency::{BatchMode, BatchTask};
use prefecto::prelude::*;
use proptest::prelude::*;

/// What every body saw: a global sequence gives each start and end a strict order.
#[derive(Default)]
struct Trace {
    clock: AtomicU64,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// (input, start tick, end tick), one entry per execution.
    runs: Mutex<Vec<(usize, u64, u64)>>,
}

#[task]
async fn traced(i: usize, yields: u8, trace: Arc<Trace>) -> usize {
    let start = trace.clock.fetch_add(1, Ordering::SeqCst);
    let running = trace.running.fetch_add(1, Ordering::SeqCst) + 1;
    trace.max_running.fetch_max(running, Ordering::SeqCst);
    // Uneven durations, so runs finish out of order.
    for _ in 0..yields {
        tokio::task::yield_now().await;
    }
    trace.running.fetch_sub(1, Ordering::SeqCst);
    let end = trace.clock.fetch_add(1, Ordering::SeqCst);
    trace.runs.lock().unwrap().push((i, start, end));
    i
}

#[task]
fn traced_sync(i: usize, trace: Arc<Trace>) -> usize {
    let start = trace.clock.fetch_add(1, Ordering::SeqCst);
    let running = trace.running.fetch_add(1, Ordering::SeqCst) + 1;
    trace.max_running.fetch_max(running, Ordering::SeqCst);
    trace.running.fetch_sub(1, Ordering::SeqCst);
    let end = trace.clock.fetch_add(1, Ordering::SeqCst);
    trace.runs.lock().unwrap().push((i, start, end));
    i
}

#[flow]
async fn run_traced(
    yields: Vec<u8>,
    size: usize,
    mode: BatchMode,
    trace: Arc<Trace>,
) -> (Vec<usize>, Vec<u64>) {
    let n = yields.len();
    let batch = BatchTask::new(traced, size).unwrap().with_mode(mode);
    let futures = batch
        .map_async(0..n, yields, unmapped(trace))
        .await
        .unwrap();
    let indices = futures.iter().map(|f| f.task_run_name().index).collect();
    (futures.results_async().await.unwrap(), indices)
}

#[flow(max_workers = 4)]
fn run_traced_sync(n: usize, size: usize, mode: BatchMode, trace: Arc<Trace>) -> Vec<usize> {
    let batch = BatchTask::new(traced_sync, size).unwrap().with_mode(mode);
    batch.map(0..n, unmapped(trace)).unwrap().results().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn check_exactly_once_in_order(n: usize, results: &[usize], trace: &Trace) {
    assert_eq!(
        results,
        (0..n).collect::<Vec<_>>(),
        "results in input order"
    );
    let mut ran: Vec<usize> = trace.runs.lock().unwrap().iter().map(|r| r.0).collect();
    ran.sort_unstable();
    assert_eq!(
        ran,
        (0..n).collect::<Vec<_>>(),
        "each input ran exactly once"
    );
}

/// In strict mode every run of batch b+1 starts after every run of batch b ended.
fn check_strict_batches(size: usize, trace: &Trace) {
    let runs = trace.runs.lock().unwrap();
    let batches = runs.iter().map(|r| r.0 / size).max().map_or(0, |b| b + 1);
    for b in 1..batches {
        let last_end = runs
            .iter()
            .filter(|r| r.0 / size == b - 1)
            .map(|r| r.2)
            .max();
        let first_start = runs.iter().filter(|r| r.0 / size == b).map(|r| r.1).min();
        assert!(
            first_start > last_end,
            "batch {b} started at {first_start:?} before batch {} ended at {last_end:?}",
            b - 1
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn strict_mode_runs_every_input_once_in_batches(
        yields in proptest::collection::vec(0u8..4, 0..120),
        size in 1usize..25,
    ) {
        common::quiet();
        let n = yields.len();
        let trace = Arc::new(Trace::default());
        let (results, indices) = runtime()
            .block_on(run_traced(yields, size, BatchMode::Strict, trace.clone()))
            .unwrap();
        check_exactly_once_in_order(n, &results, &trace);
        prop_assert_eq!(indices, (0..n as u64).collect::<Vec<_>>());
        prop_assert!(trace.max_running.load(Ordering::SeqCst) <= size, "no batch larger than size");
        check_strict_batches(size, &trace);
    }

    #[test]
    fn window_mode_never_has_more_than_size_in_flight(
        yields in proptest::collection::vec(0u8..4, 0..120),
        size in 1usize..25,
    ) {
        common::quiet();
        let n = yields.len();
        let trace = Arc::new(Trace::default());
        let (results, _) = runtime()
            .block_on(run_traced(yields, size, BatchMode::SlidingWindow, trace.clone()))
            .unwrap();
        check_exactly_once_in_order(n, &results, &trace);
        prop_assert!(trace.max_running.load(Ordering::SeqCst) <= size);
    }

    #[test]
    fn sync_bodies_keep_the_same_properties(
        n in 0usize..80,
        size in 1usize..12,
        window in any::<bool>(),
    ) {
        common::quiet();
        let mode = if window { BatchMode::SlidingWindow } else { BatchMode::Strict };
        let trace = Arc::new(Trace::default());
        let results = run_traced_sync(n, size, mode, trace.clone()).unwrap();
        check_exactly_once_in_order(n, &results, &trace);
        prop_assert!(trace.max_running.load(Ordering::SeqCst) <= size);
        if !window {
            check_strict_batches(size, &trace);
        }
    }
}
