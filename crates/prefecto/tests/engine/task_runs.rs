//! One task run's life: errors, panics, timeouts, retries and their states.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::Recording;
use prefecto::prelude::*;

#[task]
fn divide(a: i64, b: i64) -> i64 {
    a / b
}

#[flow]
fn panicking_run() -> (State, Vec<i64>) {
    let crashed = divide.submit(1, 0).wait();
    // The flow and the other task runs go on.
    let others = divide
        .map(vec![10, 20], vec![2, 4])
        .unwrap()
        .results()
        .unwrap();
    (crashed, others)
}

#[test]
fn a_panic_crashes_only_its_run() {
    common::quiet();
    let (crashed, others) = panicking_run().unwrap();
    assert!(crashed.is_crashed(), "{crashed}");
    assert_eq!(
        crashed.message(),
        Some("Task run panicked: attempt to divide by zero")
    );
    assert_eq!(others, vec![5, 5]);
}

#[derive(Debug)]
struct NotFound(String);

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no row for key {:?}", self.0)
    }
}

impl std::error::Error for NotFound {}

#[task]
async fn lookup(key: String) -> Result<u32, NotFound> {
    Err(NotFound(key))
}

#[flow]
async fn failing_lookup() -> TaskRunError {
    lookup.submit(String::from("k1")).await.unwrap_err()
}

#[tokio::test]
async fn an_error_fails_the_run_with_its_message() {
    common::quiet();
    let err = failing_lookup().await.unwrap();
    assert!(err.state.is_failed());
    assert_eq!(err.state.to_string(), "Failed('no row for key \"k1\"')");
    assert_eq!(
        err.to_string(),
        "Task run 'lookup-0' finished in state Failed('no row for key \"k1\"')"
    );
}

#[task(timeout = 0.05)]
async fn sleepy(millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    millis
}

#[task(timeout = 0.05)]
fn sleepy_sync(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[flow]
fn timeouts() -> Vec<State> {
    vec![
        sleepy.submit(5_000).wait(),
        sleepy_sync.submit(300).wait(),
        sleepy.submit(0).wait(),
        sleepy_sync.submit(0).wait(),
    ]
}

#[test]
fn a_run_over_its_timeout_fails_timed_out() {
    common::quiet();
    let states = timeouts().unwrap();
    for timed_out in &states[..2] {
        assert!(timed_out.is_failed(), "{timed_out}");
        assert_eq!(timed_out.name(), "TimedOut");
        assert_eq!(
            timed_out.message(),
            Some("Task run exceeded timeout of 0.05 second(s)")
        );
    }
    assert!(states[2].is_completed() && states[3].is_completed());
}

/// Fails until it has been called `succeed_on` times.
#[task(retries = 3, retry_delay = 0.01)]
fn flaky(attempts: Arc<AtomicU32>, succeed_on: u32) -> Result<u32, String> {
    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
    if attempt >= succeed_on {
        Ok(attempt)
    } else {
        Err(format!("attempt {attempt} failed"))
    }
}

#[flow]
fn retried(succeed_on: u32) -> (uuid::Uuid, Result<u32, TaskRunError>, u32) {
    let attempts = Arc::new(AtomicU32::new(0));
    let result = flaky(attempts.clone(), succeed_on);
    (
        common::flow_run_id(),
        result,
        attempts.load(Ordering::SeqCst),
    )
}

#[test]
fn retries_run_a_failed_body_again() {
    common::quiet();
    let recording = Recording::installed();
    let (flow_run, result, attempts) = retried(3).unwrap();
    assert_eq!(result.unwrap(), 3);
    assert_eq!(attempts, 3);
    let names: Vec<String> = recording
        .task_run_history(flow_run, "flaky-0")
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "Pending",
            "Running",
            "AwaitingRetry",
            "Retrying",
            "AwaitingRetry",
            "Retrying",
            "Completed"
        ]
    );
    let logs = recording.logs(flow_run);
    assert!(logs.contains(
        &"Task run failed with error: attempt 1 failed - Retry 1/3 will start 0.01 second(s) from now"
            .to_string()
    ), "{logs:?}");
}

#[test]
fn retries_run_out() {
    common::quiet();
    let recording = Recording::installed();
    let (flow_run, result, attempts) = retried(10).unwrap();
    let err = result.unwrap_err();
    assert_eq!(attempts, 4, "one run and three retries");
    assert_eq!(err.state.message(), Some("attempt 4 failed"));
    assert!(recording.logs(flow_run).contains(
        &"Task run failed with error: attempt 4 failed - Retries are exhausted".to_string()
    ));
}

#[flow]
fn stamped() -> (uuid::Uuid, State) {
    (common::flow_run_id(), divide.submit(6, 3).wait())
}

#[test]
fn each_transition_has_a_timestamp() {
    common::quiet();
    let recording = Recording::installed();
    let (flow_run, state) = stamped().unwrap();
    let history = recording.task_run_history(flow_run, "divide-0");
    let names: Vec<&str> = history.iter().map(State::name).collect();
    assert_eq!(names, ["Pending", "Running", "Completed"]);
    assert!(
        history
            .windows(2)
            .all(|w| w[0].timestamp() <= w[1].timestamp())
    );
    assert_eq!(history.last().unwrap(), &state);
}

#[test]
fn a_task_run_error_keeps_the_bodys_own_error() {
    common::quiet();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let err = runtime.block_on(failing_lookup()).unwrap();
    let source = std::error::Error::source(&err).expect("the body's error");
    let not_found: &NotFound = source.downcast_ref().expect("the very NotFound");
    assert_eq!(not_found.0, "k1");
    assert_eq!(err.state.message(), Some("no row for key \"k1\""));
    assert!(err.body_error().is_some());
}

/// Displays, but is no `std::error::Error`: only its text can be kept.
struct Plain;

impl std::fmt::Display for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plain trouble")
    }
}

#[task(retries = 1)]
fn plain() -> Result<u8, Plain> {
    Err(Plain)
}

#[task]
fn stringly(x: u8) -> Result<u8, String> {
    Err(format!("{x} is not welcome"))
}

#[flow]
fn error_kinds() -> (TaskRunError, TaskRunError) {
    (plain().unwrap_err(), stringly(7).unwrap_err())
}

#[test]
fn errors_that_are_only_text_keep_their_text() {
    common::quiet();
    let (plain_err, string_err) = error_kinds().unwrap();
    assert!(std::error::Error::source(&plain_err).is_none());
    assert_eq!(plain_err.state.message(), Some("plain trouble"));
    // A String is kept as an error too, with its text.
    let source = std::error::Error::source(&string_err).unwrap();
    assert_eq!(source.to_string(), "7 is not welcome");
    assert_eq!(string_err.state.message(), Some("7 is not welcome"));
}

#[flow]
fn failing_flow() -> Result<u8, NotFound> {
    Err(NotFound("flow-key".into()))
}

#[test]
fn a_flow_run_error_keeps_the_bodys_own_error() {
    common::quiet();
    let err = failing_flow().unwrap_err();
    assert!(err.state().unwrap().is_failed());
    let not_found: &NotFound = std::error::Error::source(&err)
        .and_then(|source| source.downcast_ref())
        .expect("the flow body's NotFound");
    assert_eq!(not_found.0, "flow-key");
}
