//! A sync run's timeout covers its execution, as Prefect's does, not the
//! time it waited for a worker; a run that ended never starts its body; a
//! body still running when its flow run ends does not hold a thread of the
//! next flow run's.

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

static STUCK_THREAD: std::sync::Mutex<Option<std::thread::ThreadId>> = std::sync::Mutex::new(None);
static STUCK_DONE: AtomicUsize = AtomicUsize::new(0);

#[task(timeout = 0.05)]
fn stuck_past_its_flow() {
    *STUCK_THREAD.lock().unwrap() = Some(std::thread::current().id());
    std::thread::sleep(Duration::from_millis(1500));
    STUCK_DONE.fetch_add(1, Ordering::SeqCst);
}

#[flow(max_workers = 1)]
fn leaves_a_body_running() -> State {
    stuck_past_its_flow.submit().wait()
}

#[task]
fn which_thread() -> std::thread::ThreadId {
    std::thread::current().id()
}

#[flow(max_workers = 1)]
fn one_sync_run() -> std::thread::ThreadId {
    which_thread().unwrap()
}

#[test]
fn a_body_still_running_after_its_flow_does_not_hold_the_next_flows_thread() {
    common::quiet();
    let state = within(Duration::from_secs(20), "a run that times out", || {
        leaves_a_body_running().unwrap()
    });
    assert!(state.is_failed(), "{state:?}");
    // The next flow run of the same size gets a pool of its own: not the
    // one whose only thread is still in the body above.
    let thread = within(Duration::from_secs(20), "the next flow run", || {
        one_sync_run().unwrap()
    });
    assert_eq!(
        STUCK_DONE.load(Ordering::SeqCst),
        0,
        "ran before the stuck body ended"
    );
    assert_ne!(Some(thread), *STUCK_THREAD.lock().unwrap());
}
