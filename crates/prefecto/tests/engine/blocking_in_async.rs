//! The blocking calls of the API, made from an async flow on a
//! current-thread runtime, fail at once and name the async call to use
//! instead: the runtime's one thread cannot run the runs they would wait for.

use std::time::Duration;

use prefecto::prelude::*;

use crate::common::{self, within};

#[task]
async fn double(x: u32) -> u32 {
    x * 2
}

#[task]
fn triple(x: u32) -> u32 {
    x * 3
}

/// Which blocking call the flow makes.
#[derive(Clone, Copy, Debug, serde::Serialize)]
enum Call {
    Result,
    Wait,
    Results,
    BatchMap,
}

#[flow]
async fn blocks(call: Call) -> u32 {
    match call {
        Call::Result => double.submit(1).result().unwrap(),
        Call::Wait => {
            double.submit(1).wait();
            0
        }
        Call::Results => double.map(0..3).unwrap().results().unwrap().len() as u32,
        Call::BatchMap => BatchTask::new(double, 2).unwrap().map(0..3).unwrap().len() as u32,
    }
}

#[flow]
async fn calls_a_sync_task() -> u32 {
    triple(2).unwrap()
}

/// What the flow call ended with: its panic's message, or its error's text.
fn outcome_on_current_thread_runtime(call: Call) -> String {
    within(
        Duration::from_secs(20),
        "a blocking call in async code",
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(blocks(call))
            }));
            match outcome {
                Err(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Ok(Err(err)) => err.to_string(),
                Ok(Ok(value)) => format!("returned {value}"),
            }
        },
    )
}

#[test]
fn blocking_calls_on_a_current_thread_runtime_fail_at_once_naming_the_async_call() {
    common::quiet();
    for (call, alternative) in [
        (Call::Result, ".await"),
        (Call::Wait, "wait_async"),
        (Call::Results, "results_async"),
        (Call::BatchMap, "map_async"),
    ] {
        let outcome = outcome_on_current_thread_runtime(call);
        assert!(
            outcome.contains(alternative) && outcome.contains("current-thread"),
            "{call:?}: {outcome}"
        );
    }
}

#[test]
fn calling_a_sync_task_on_a_current_thread_runtime_still_works() {
    common::quiet();
    let value = within(
        Duration::from_secs(20),
        "a sync task call in async code",
        || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(calls_a_sync_task()).unwrap()
        },
    );
    assert_eq!(value, 6);
}

#[test]
fn blocking_calls_on_a_multi_thread_runtime_keep_working() {
    common::quiet();
    for call in [Call::Result, Call::Wait, Call::Results, Call::BatchMap] {
        let value = within(
            Duration::from_secs(20),
            "a blocking call in async code",
            move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(blocks(call)).unwrap()
            },
        );
        assert!(value <= 3, "{call:?}: {value}");
    }
}
