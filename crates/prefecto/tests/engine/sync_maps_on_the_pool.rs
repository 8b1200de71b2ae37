//! `BatchTask` maps of sync tasks, whose lanes run their bodies on the
//! flow's pool threads and take inputs from the map's queue there: a slow
//! input holds back no other, work queued on the pool behind a long map
//! still gets a thread, a reader that calls tasks does not deadlock, and
//! inputs from runs that have not finished wait off the pool.

use crate::common::{self, within};

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefecto::prelude::*;

const LIMIT: Duration = Duration::from_secs(60);

const SLOW: u64 = 500;

#[task]
fn slow_one(x: u64) -> u64 {
    if x == SLOW {
        std::thread::sleep(Duration::from_millis(300));
    }
    x
}

#[flow(max_workers = 2)]
fn completion_order_with_a_slow_input() -> Vec<usize> {
    // Fewer inputs than the stream's span (size + read-ahead): none has to
    // wait for the slow one to be handed over before it is read.
    let batch = BatchTask::new(slow_one, 100).unwrap().sliding_window();
    batch
        .stream_unordered(0..1_000u64)
        .unwrap()
        .map(|run| run.index)
        .collect()
}

#[test]
fn a_slow_sync_input_holds_back_at_most_the_inputs_its_lane_took_with_it() {
    common::quiet();
    let order = within(LIMIT, "a slow input on two workers", || {
        completion_order_with_a_slow_input().unwrap()
    });
    assert_eq!(order.len(), 1_000);
    let slow_at = order.iter().position(|&i| i == SLOW as usize).unwrap();
    // The other lane ran the inputs read after it while it slept; only
    // those its own lane had taken with it (its share of the window, 50,
    // and only while runs were quick) waited for it.
    let after = &order[slow_at + 1..];
    assert!(
        after.len() < 50,
        "{} outcomes came after the slow one: {after:?}",
        after.len()
    );
    assert!(after.iter().all(|&i| i > SLOW as usize), "{after:?}");
}

/// How many runs of `step` had finished when `mark` ran.
static STEPS_DONE: AtomicUsize = AtomicUsize::new(0);
static MARKED_AT: Mutex<Option<usize>> = Mutex::new(None);

#[task]
fn step(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    STEPS_DONE.fetch_add(1, Ordering::SeqCst);
    x
}

#[task]
fn mark() {
    *MARKED_AT.lock().unwrap() = Some(STEPS_DONE.load(Ordering::SeqCst));
}

#[flow(max_workers = 1)]
fn a_task_submitted_during_a_long_map() -> usize {
    let batch = BatchTask::new(step, 10).unwrap().sliding_window();
    let mut stream = batch.stream(0..400u64).unwrap();
    // The map holds the only pool thread by now.
    let first = stream.next().unwrap();
    let marked = mark.submit();
    let rest = stream.count();
    marked.result().unwrap();
    first.index + rest
}

#[test]
fn a_task_queued_behind_a_long_sync_map_runs_before_the_map_ends() {
    common::quiet();
    let outcomes = within(LIMIT, "a task submitted during a long map", || {
        a_task_submitted_during_a_long_map().unwrap()
    });
    assert_eq!(outcomes, 399);
    let marked_at = MARKED_AT.lock().unwrap().expect("mark ran");
    // A pool lane gives its thread up every few milliseconds: `mark` ran
    // long before the 400 one-millisecond steps were done.
    assert!(marked_at < 100, "mark ran after {marked_at} of 400 steps");
}

#[task]
fn plus_one(x: u64) -> u64 {
    x + 1
}

#[flow(max_workers = 1)]
fn a_reader_calling_a_task_per_outcome() -> u64 {
    let batch = BatchTask::new(plus_one, 100).unwrap();
    // Each call needs the pool's only thread, which the map's lanes use too.
    batch
        .stream(0..5_000u64)
        .unwrap()
        .map(|run| plus_one(run.result.unwrap()).unwrap())
        .sum()
}

#[test]
fn a_stream_reader_that_calls_sync_tasks_on_one_worker_does_not_deadlock() {
    common::quiet();
    let sum = within(LIMIT, "a reader calling a task per outcome", || {
        a_reader_calling_a_task_per_outcome().unwrap()
    });
    assert_eq!(sum, (2..5_002).sum::<u64>());
}

#[task]
fn upstream(x: u64) -> Result<u64, String> {
    std::thread::sleep(Duration::from_millis(5));
    if x == 3 {
        Err("3 is bad".into())
    } else {
        Ok(x)
    }
}

#[flow(max_workers = 1)]
fn a_map_over_unfinished_runs() -> Vec<String> {
    let upstream_runs = upstream.map(0..8u64).unwrap();
    let batch = BatchTask::new(plus_one, 3).unwrap();
    let runs = batch.map(upstream_runs).unwrap();
    runs.iter()
        .map(|run| run.wait().name().to_string())
        .collect()
}

#[test]
fn sync_inputs_from_unfinished_runs_wait_for_them_on_one_worker() {
    common::quiet();
    let states = within(LIMIT, "a sync map over unfinished runs", || {
        a_map_over_unfinished_runs().unwrap()
    });
    let expected: Vec<_> = (0..8)
        .map(|i| match i {
            // Its upstream run failed: it never ran.
            3 => "NotReady",
            _ => "Completed",
        })
        .collect();
    assert_eq!(states, expected);
}
