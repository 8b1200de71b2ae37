//! A user's part that panics (a kill switch, a recorder) never hangs a map
//! or a flow: the map ends naming the switch, with every input accounted
//! for; the flow goes on without the recorder. An unmapped value whose
//! `Clone` panics ends the map with the runs of the inputs before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefecto::prelude::*;
use prefecto::recorder::{Recorder, TransitionEvent};
use prefecto::{Prefecto, TaskRunName};

use crate::common::{self, within};

#[task]
fn identity(x: u32) -> u32 {
    x
}

/// Panics on the third state it is shown.
struct PanickySwitch {
    seen: usize,
}

impl KillSwitch for PanickySwitch {
    fn should_flip_switch(&mut self, _state: &State) -> bool {
        self.seen += 1;
        if self.seen == 3 {
            panic!("the switch broke");
        }
        false
    }
}

#[flow]
fn map_with_panicky_switch(mode: String) -> String {
    let batch = BatchTask::new(identity, 2)
        .unwrap()
        .with_kill_switch(PanickySwitch { seen: 0 });
    let batch = if mode == "window" {
        batch.sliding_window()
    } else {
        batch
    };
    match batch.map(0..10) {
        Ok(futures) => format!("{} futures", futures.len()),
        Err(err) => {
            let err = err.into_kill_switch().expect("a switch error");
            assert_eq!(err.outcomes.len(), 10, "every input has an outcome");
            assert!(err.outcomes.iter().all(|o| o.state.is_terminal()));
            err.to_string()
        }
    }
}

#[test]
fn a_panicking_kill_switch_ends_the_map_with_an_error_naming_it() {
    common::quiet();
    for mode in ["strict", "window"] {
        let outcome = within(
            Duration::from_secs(20),
            "a map with a panicking switch",
            move || map_with_panicky_switch(mode.to_string()).unwrap(),
        );
        let message = outcome;
        assert!(
            message.contains("PanickySwitch") && message.contains("the switch broke"),
            "{mode}: {message}"
        );
    }
}

/// Panics on every transition it hears, and counts them.
#[derive(Default)]
struct PanickyRecorder {
    heard: AtomicUsize,
}

impl Recorder for PanickyRecorder {
    fn on_transition(&self, _event: &TransitionEvent<'_>) {
        self.heard.fetch_add(1, Ordering::SeqCst);
        panic!("the recorder broke");
    }
}

/// Runs `flow_call` with `recorder` installed, failing past 20 s.
fn recorded_by<R: Send + 'static>(
    recorder: Arc<dyn Recorder>,
    what: &str,
    flow_call: impl FnOnce() -> R + Send + 'static,
) -> R {
    let prefecto = Prefecto::builder()
        .engine_only()
        .recorder(recorder)
        .build()
        .unwrap();
    let what = format!("a flow with {what}");
    within(Duration::from_secs(20), &what, move || {
        prefecto.scope(flow_call)
    })
}

#[flow]
fn sums() -> u32 {
    identity.map(0..5).unwrap().results().unwrap().iter().sum()
}

#[test]
fn a_panicking_recorder_is_dropped_and_the_flow_goes_on() {
    common::quiet();
    let recorder = Arc::new(PanickyRecorder::default());
    let sum = recorded_by(recorder.clone(), "a panicking recorder", || sums().unwrap());
    assert_eq!(sum, 10);
    assert_eq!(
        recorder.heard.load(Ordering::SeqCst),
        1,
        "dropped after its first panic"
    );
}

/// Takes quick runs' ends in batches that panic on the second end; counts
/// the ends its batches took and the transitions it heard.
#[derive(Default)]
struct PanickyBatches {
    ended: Arc<AtomicUsize>,
    heard: AtomicUsize,
}

struct PanickyBatch(Arc<AtomicUsize>);

impl prefecto::recorder::EndBatch for PanickyBatch {
    fn ended(&mut self, _: TaskRunName, _: &State, _: prefecto::recorder::RunTimes) {
        if self.0.fetch_add(1, Ordering::SeqCst) == 1 {
            panic!("the batch broke");
        }
    }

    fn hand_over(&mut self) {}
}

impl Recorder for PanickyBatches {
    fn on_transition(&self, _event: &TransitionEvent<'_>) {
        self.heard.fetch_add(1, Ordering::SeqCst);
    }

    fn end_batch(
        &self,
        _flow_run: prefecto::recorder::FlowRunRef<'_>,
    ) -> Option<Box<dyn prefecto::recorder::EndBatch>> {
        Some(Box::new(PanickyBatch(self.ended.clone())))
    }
}

#[task]
async fn identity_async(x: u32) -> u32 {
    x
}

#[flow]
async fn sums_async() -> u32 {
    let batch = BatchTask::new(identity_async, 1).unwrap();
    let futures = batch.map_async(0..5).await.unwrap();
    futures.results_async().await.unwrap().iter().sum()
}

#[test]
fn a_recorder_whose_batch_panics_is_dropped_and_the_flow_goes_on() {
    common::quiet();
    let recorder = Arc::new(PanickyBatches::default());
    let sum = recorded_by(recorder.clone(), "a recorder whose batch panics", || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(sums_async()).unwrap()
    });
    assert_eq!(sum, 10);
    // Its batch took two ends, the second panicked: nothing more after.
    assert_eq!(recorder.ended.load(Ordering::SeqCst), 2);
    // Before that: the flow run's Pending and Running, and the first two
    // runs' Pending and Running (one at a time); none of the others, and
    // not the flow run's end.
    assert_eq!(recorder.heard.load(Ordering::SeqCst), 2 + 2 * 2);
}

/// An unmapped value whose `Clone` panics on its `fail_at`th clone: a map
/// clones it for each input as it reads the input.
struct PanickyClone {
    clones: Arc<AtomicUsize>,
    fail_at: usize,
}

impl Clone for PanickyClone {
    fn clone(&self) -> Self {
        if self.clones.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            panic!("the clone broke");
        }
        PanickyClone {
            clones: self.clones.clone(),
            fail_at: self.fail_at,
        }
    }
}

#[task]
fn offset(x: u32, _by: PanickyClone) -> u32 {
    x
}

#[task]
async fn offset_async(x: u32, _by: PanickyClone) -> u32 {
    x
}

#[flow]
fn map_with_panicky_clone(strict: bool, sync_body: bool) -> (String, Vec<u32>) {
    let by = unmapped(PanickyClone {
        clones: Arc::new(AtomicUsize::new(0)),
        fail_at: 6,
    });
    let mode = if strict {
        BatchMode::Strict
    } else {
        BatchMode::SlidingWindow
    };
    let mapped = match sync_body {
        true => BatchTask::new(offset, 2)
            .unwrap()
            .with_mode(mode)
            .map(0..20u32, by),
        false => BatchTask::new(offset_async, 2)
            .unwrap()
            .with_mode(mode)
            .map(0..20u32, by),
    };
    match mapped {
        Err(prefecto::concurrency::BatchError::Inputs { error, futures }) => {
            (error.to_string(), futures.results().unwrap())
        }
        other => panic!("expected the inputs' error, got {other:?}"),
    }
}

#[test]
fn an_unmapped_value_whose_clone_panics_ends_the_map_with_the_runs_before() {
    common::quiet();
    for (strict, sync_body) in [(false, false), (false, true), (true, false), (true, true)] {
        let (error, ran) = within(Duration::from_secs(60), "a panicking clone", move || {
            map_with_panicky_clone(strict, sync_body).unwrap()
        });
        assert_eq!(error, "Reading input #5 panicked: the clone broke");
        assert_eq!(
            ran,
            [0, 1, 2, 3, 4],
            "strict {strict}, sync body {sync_body}"
        );
    }
}
