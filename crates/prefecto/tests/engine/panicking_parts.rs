//! A user's part that panics (a kill switch, a recorder) never hangs a map
//! or a flow: the map ends naming the switch, with every input accounted
//! for; the flow goes on without the recorder.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefecto::Prefecto;
use prefecto::prelude::*;
use prefecto::recorder::{Recorder, TransitionEvent};

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

#[flow]
fn sums() -> u32 {
    identity.map(0..5).unwrap().results().unwrap().iter().sum()
}

#[test]
fn a_panicking_recorder_is_dropped_and_the_flow_goes_on() {
    common::quiet();
    let recorder = Arc::new(PanickyRecorder::default());
    let prefecto = Prefecto::builder()
        .engine_only()
        .recorder(recorder.clone())
        .build()
        .unwrap();
    let sum = within(
        Duration::from_secs(20),
        "a flow with a panicking recorder",
        move || prefecto.scope(|| sums().unwrap()),
    );
    assert_eq!(sum, 10);
    assert_eq!(
        recorder.heard.load(Ordering::SeqCst),
        1,
        "dropped after its first panic"
    );
}
