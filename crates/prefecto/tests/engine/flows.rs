//! Flow runs: names, final states, runtimes and the pool for sync tasks.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::Recording;
use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[flow]
fn my_flow() -> (prefecto::flow::FlowRunInfo, i64) {
    (
        prefecto::flow::current_flow_run().unwrap(),
        add(1, 2).unwrap(),
    )
}

#[test]
fn a_sync_flow_runs_from_plain_main_code() {
    common::quiet();
    let recording = Recording::installed();
    let (info, sum) = my_flow().unwrap();
    assert_eq!(sum, 3);
    assert_eq!(info.flow, "my-flow");
    let (adjective, animal) = info.name.split_once('-').unwrap();
    assert!(!adjective.is_empty() && !animal.is_empty() && !animal.contains('-'));
    let names: Vec<String> = recording
        .flow_run_history(info.id)
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    assert_eq!(names, ["Pending", "Running", "Completed"]);
}

#[flow(name = "renamed")]
fn with_options() -> String {
    prefecto::flow::current_flow_run().unwrap().flow
}

#[test]
fn the_flow_name_can_be_set() {
    common::quiet();
    assert_eq!(with_options().unwrap(), "renamed");
}

#[flow]
fn body_error(fail: bool) -> Result<u8, std::num::ParseIntError> {
    if fail { "x".parse() } else { Ok(1) }
}

#[test]
fn a_body_error_fails_the_flow_run() {
    common::quiet();
    assert_eq!(body_error(false).unwrap(), 1);
    let err = body_error(true).unwrap_err();
    let state = err.state().unwrap();
    assert!(state.is_failed());
    assert_eq!(
        state.message(),
        Some("Flow run encountered an error: invalid digit found in string")
    );
}

#[flow]
fn body_panic() -> u8 {
    panic!("the flow body gave up")
}

#[test]
fn a_body_panic_crashes_the_flow_run() {
    common::quiet();
    let err = body_panic().unwrap_err();
    assert!(err.state().unwrap().is_crashed());
    assert_eq!(
        err.state().unwrap().message(),
        Some("Flow run panicked: the flow body gave up")
    );
}

#[flow]
fn early_return(n: u32) -> Result<u32, String> {
    if n == 0 {
        return Ok(0);
    }
    let doubled: u32 = n.checked_mul(2).ok_or("overflow")?;
    Ok(doubled)
}

#[test]
fn flow_bodies_may_return_early_and_use_question_mark() {
    common::quiet();
    assert_eq!(early_return(0).unwrap(), 0);
    assert_eq!(early_return(4).unwrap(), 8);
    assert!(early_return(u32::MAX).is_err());
}

#[flow]
async fn async_flow(x: i64) -> i64 {
    add(x, 1).unwrap() + add.submit(x, 2).await.unwrap()
}

#[tokio::test]
async fn an_async_flow_uses_the_callers_runtime() {
    common::quiet();
    assert_eq!(async_flow(10).await.unwrap(), 23);
}

#[tokio::test]
async fn a_sync_flow_can_be_called_from_async_code() {
    common::quiet();
    assert_eq!(my_flow().unwrap().1, 3);
}

#[test]
fn an_async_flow_outside_a_runtime_is_an_error() {
    common::quiet();
    let err = futures::executor::block_on(async_flow(1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Async flow 'async-flow' must be awaited inside a Tokio runtime (for example under #[tokio::main])"
    );
}

/// Tracks how many bodies run at once, and on which threads.
#[derive(Default)]
struct Occupancy {
    now: AtomicUsize,
    max: AtomicUsize,
    threads: Mutex<HashSet<String>>,
}

#[task]
fn busy(occupancy: Arc<Occupancy>) -> usize {
    let now = occupancy.now.fetch_add(1, Ordering::SeqCst) + 1;
    occupancy.max.fetch_max(now, Ordering::SeqCst);
    let thread = std::thread::current().name().unwrap_or("").to_string();
    occupancy.threads.lock().unwrap().insert(thread);
    std::thread::sleep(Duration::from_millis(5));
    occupancy.now.fetch_sub(1, Ordering::SeqCst);
    now
}

#[task]
async fn tick() -> u8 {
    tokio::time::sleep(Duration::from_millis(1)).await;
    1
}

#[flow(max_workers = 2)]
fn pool_bound(occupancy: Arc<Occupancy>) -> u8 {
    let blocking = busy.map(std::iter::repeat_n(occupancy, 40)).unwrap();
    // While the pool is full of blocking bodies, the async runtime still makes progress.
    let ticked = tick().await_blocking();
    blocking.wait();
    ticked
}

/// A sync flow awaits an async task's direct call by blocking on it.
trait AwaitBlocking<T> {
    fn await_blocking(self) -> T;
}

impl<T, F: std::future::Future<Output = Result<T, TaskRunError>>> AwaitBlocking<T> for F {
    fn await_blocking(self) -> T {
        futures::executor::block_on(self).unwrap()
    }
}

#[test]
fn sync_tasks_run_on_a_bounded_pool_of_threads() {
    common::quiet();
    let occupancy = Arc::new(Occupancy::default());
    assert_eq!(pool_bound(occupancy.clone()).unwrap(), 1);
    assert_eq!(occupancy.max.load(Ordering::SeqCst), 2);
    let threads = occupancy.threads.lock().unwrap();
    assert!(threads.len() <= 2, "{threads:?}");
    assert!(threads.iter().all(|t| t.starts_with("prefecto-worker-")));
}

#[task]
async fn never_awaited(x: u8) -> u8 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    x
}

#[flow]
fn forgets_its_futures() -> uuid::Uuid {
    let _ = never_awaited.map(0..3u8).unwrap();
    common::flow_run_id()
}

#[test]
fn a_flow_run_waits_for_its_task_runs() {
    common::quiet();
    let recording = Recording::installed();
    let flow_run = forgets_its_futures().unwrap();
    let states = recording.final_task_states(flow_run);
    assert_eq!(states.len(), 3);
    assert!(states.values().all(State::is_completed), "{states:?}");
}

/// A recorder whose flush at a flow run's end can finish only if another task
/// of the flow's runtime runs meanwhile: it waits (at most 5 s) for that task.
struct FlushNeedsTheRuntime {
    flushing: std::sync::atomic::AtomicBool,
    answer: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    answered: std::sync::atomic::AtomicBool,
}

impl prefecto::Recorder for FlushNeedsTheRuntime {
    fn on_transition(&self, _event: &prefecto::recorder::TransitionEvent<'_>) {}

    fn on_flow_run_end(&self, _flow_run: prefecto::recorder::FlowRunRef<'_>) {
        self.flushing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let answer = self.answer.lock().unwrap();
        let answered = answer
            .recv_timeout(std::time::Duration::from_secs(5))
            .is_ok();
        self.answered
            .store(answered, std::sync::atomic::Ordering::SeqCst);
    }
}

#[flow]
async fn ends_at_once() -> u8 {
    1
}

#[test]
fn an_async_flows_end_leaves_its_runtime_free() {
    use std::sync::atomic::Ordering::SeqCst;
    common::quiet();
    let (send, receive) = std::sync::mpsc::channel();
    let recorder = Arc::new(FlushNeedsTheRuntime {
        flushing: Default::default(),
        answer: std::sync::Mutex::new(receive),
        answered: Default::default(),
    });
    let prefecto = Prefecto::builder()
        .engine_only()
        .recorder(recorder.clone())
        .build()
        .unwrap();
    // One thread for everything: if the flush blocked it, the helper below
    // could not run, and the flush would give up after 5 s.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let value = runtime.block_on(async {
        let watcher = recorder.clone();
        let helper = tokio::spawn(async move {
            while !watcher.flushing.load(SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let _ = send.send(());
        });
        let value = prefecto.scope_async(ends_at_once()).await.unwrap();
        helper.await.unwrap();
        value
    });
    assert_eq!(value, 1);
    assert!(
        recorder.answered.load(SeqCst),
        "the flow's end blocked its runtime's only thread"
    );
}
