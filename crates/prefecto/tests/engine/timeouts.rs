//! A sync run's timeout covers its execution, as Prefect's does, not the
//! time it waited for a worker; a run that ended never starts its body.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefecto::prelude::*;

use crate::common::{self, within};

static STARTED: AtomicUsize = AtomicUsize::new(0);

#[task(timeout = 0.5)]
fn sleeps_300ms(x: u32) -> u32 {
    STARTED.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    x
}

#[flow(max_workers = 1)]
fn three_on_one_worker() -> Vec<State> {
    sleeps_300ms.map(0..3).unwrap().wait()
}

#[test]
fn the_timeout_covers_execution_not_the_wait_for_a_worker() {
    common::quiet();
    let states = within(Duration::from_secs(20), "three timed runs", || {
        three_on_one_worker().unwrap()
    });
    assert!(states.iter().all(State::is_completed), "{states:?}");
}

static SLOW_STARTED: AtomicUsize = AtomicUsize::new(0);

#[task(timeout = 0.2)]
fn outlives_its_timeout(x: u32) -> u32 {
    SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    x
}

#[flow(max_workers = 1)]
fn three_time_out_on_one_worker() -> Vec<State> {
    outlives_its_timeout.map(0..3).unwrap().wait()
}

#[test]
fn a_timed_out_run_never_starts_its_body_after_the_flow_run_ended() {
    common::quiet();
    let states = within(Duration::from_secs(20), "three runs that time out", || {
        three_time_out_on_one_worker().unwrap()
    });
    assert!(states.iter().all(State::is_failed), "{states:?}");
    let started_during_flow = SLOW_STARTED.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        SLOW_STARTED.load(Ordering::SeqCst),
        started_during_flow,
        "a body started after its run had ended and the flow run had returned"
    );
}
