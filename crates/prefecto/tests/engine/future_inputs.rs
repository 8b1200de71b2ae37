//! Futures as task inputs, as in Prefect: a run given a future waits for
//! its run (holding no worker), takes its value, and never runs its body if
//! the upstream run did not complete; `submit_after`/`map_after` wait for
//! runs (`wait_for=`); recorders hear each run's upstream runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prefecto::inputs::UpstreamRun;
use prefecto::prelude::*;
use prefecto::recorder::{Recorder, TransitionEvent};
use prefecto::{Prefecto, TaskRunName};

use crate::common::{self, within};

const LIMIT: Duration = Duration::from_secs(20);

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
fn slow(x: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(20));
    x
}

#[task]
async fn double(x: i64) -> i64 {
    x * 2
}

#[task]
fn fails(x: i64) -> Result<i64, String> {
    Err(format!("{x} is bad"))
}

static DOWNSTREAM_BODIES: AtomicUsize = AtomicUsize::new(0);

#[task]
fn counted(x: i64) -> i64 {
    DOWNSTREAM_BODIES.fetch_add(1, Ordering::SeqCst);
    x
}

#[flow(max_workers = 1)]
fn chained() -> (i64, Vec<i64>, Vec<i64>, Vec<i64>) {
    // Submitted before their upstream runs finish, on one worker: the
    // downstream runs wait without holding it.
    let downstream: Vec<_> = (0..5).map(|i| add.submit(slow.submit(i), 100)).collect();
    let values = downstream
        .into_iter()
        .map(|f| f.result().unwrap())
        .collect();
    let first = add.submit(1, 2);
    let one = add.submit(first, 10).result().unwrap();
    let mapped = add
        .map(slow.map(0..3).unwrap(), unmapped(1))
        .unwrap()
        .results()
        .unwrap();
    let shared = double.submit(5);
    let unmapped_future = add
        .map(vec![1, 2, 3], unmapped(shared))
        .unwrap()
        .results()
        .unwrap();
    (one, values, mapped, unmapped_future)
}

#[test]
fn a_future_passed_as_an_argument_gives_its_value_without_holding_a_worker() {
    common::quiet();
    let (one, values, mapped, shared) = within(LIMIT, "futures as inputs", || chained().unwrap());
    assert_eq!(one, 13);
    assert_eq!(values, vec![100, 101, 102, 103, 104]);
    assert_eq!(mapped, vec![1, 2, 3]);
    assert_eq!(shared, vec![11, 12, 13]);
}

#[flow(max_workers = 2)]
fn batch_over_futures() -> Vec<i64> {
    let upstream = slow.map(0..6).unwrap();
    BatchTask::new(add, 2)
        .unwrap()
        .map(upstream, unmapped(10))
        .unwrap()
        .results()
        .unwrap()
}

#[test]
fn a_batch_task_maps_over_futures() {
    common::quiet();
    let values = within(LIMIT, "BatchTask over futures", || {
        batch_over_futures().unwrap()
    });
    assert_eq!(values, (10..16).collect::<Vec<_>>());
}

#[flow]
fn downstream_of_a_failure() -> (State, String, State) {
    let failed = fails.submit(7);
    let downstream = counted.submit(failed);
    let state = downstream.wait();
    let err = downstream.result().unwrap_err().to_string();
    let waited = counted.submit_after(&[&fails.submit(8)], 1).wait();
    (state, err, waited)
}

#[test]
fn a_run_whose_upstream_did_not_complete_never_runs_and_names_it() {
    common::quiet();
    let (state, err, waited) = within(LIMIT, "downstream of a failure", || {
        downstream_of_a_failure().unwrap()
    });
    assert_eq!(DOWNSTREAM_BODIES.load(Ordering::SeqCst), 0, "no body ran");
    assert!(!state.is_completed() && state.is_terminal(), "{state:?}");
    assert_eq!(state.name(), "NotReady");
    assert_eq!(
        state.message(),
        Some("Upstream task run 'fails-0' did not reach a 'COMPLETED' state.")
    );
    assert!(err.contains("fails-0"), "{err}");
    assert_eq!(
        waited.message(),
        Some("Upstream task run 'fails-1' did not reach a 'COMPLETED' state.")
    );
}

static SETUP_DONE: AtomicBool = AtomicBool::new(false);

#[task]
fn setup() {
    std::thread::sleep(Duration::from_millis(50));
    SETUP_DONE.store(true, Ordering::SeqCst);
}

#[task]
fn after_setup(x: i64) -> bool {
    let _ = x;
    SETUP_DONE.load(Ordering::SeqCst)
}

#[flow(max_workers = 4)]
fn waits_for_setup() -> (bool, Vec<bool>) {
    let ready = setup.submit();
    let called = after_setup.call_after(&[&ready], 0).unwrap();
    let one = called && after_setup.submit_after(&[&ready], 1).result().unwrap();
    let many = after_setup
        .map_after(&[&ready], 0..3)
        .unwrap()
        .results()
        .unwrap();
    (one, many)
}

#[test]
fn wait_for_starts_a_run_only_after_the_runs_it_names() {
    common::quiet();
    let (one, many) = within(LIMIT, "wait_for", || waits_for_setup().unwrap());
    assert!(one);
    assert_eq!(many, vec![true; 3]);
}

/// Keeps the upstream runs each run's Pending transition carries.
#[derive(Default)]
struct Upstreams(Mutex<Vec<(TaskRunName, Vec<UpstreamRun>)>>);

impl Recorder for Upstreams {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        if let (Some(run), false) = (event.task_run, event.upstream.is_empty()) {
            self.0.lock().unwrap().push((run, event.upstream.to_vec()));
        }
    }
}

#[flow]
fn graph() {
    let a = slow.submit(1);
    let b = slow.submit(2);
    let _ = add.submit_after(&[&b], a, 3).wait();
}

#[test]
fn recorders_hear_each_runs_upstream_runs() {
    common::quiet();
    let upstreams = Arc::new(Upstreams::default());
    let prefecto = Prefecto::builder()
        .engine_only()
        .recorder(upstreams.clone())
        .build()
        .unwrap();
    within(LIMIT, "a small graph", move || {
        prefecto.scope(|| graph().unwrap())
    });
    let heard = upstreams.0.lock().unwrap().clone();
    let name = |task, index| TaskRunName { task, index };
    assert_eq!(
        heard,
        vec![(
            name("add", 0),
            vec![
                UpstreamRun {
                    input: "a",
                    task_run: name("slow", 0)
                },
                UpstreamRun {
                    input: "wait_for",
                    task_run: name("slow", 1)
                },
            ]
        )]
    );
}
