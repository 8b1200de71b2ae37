//! A `BatchTask` map whose caller stops waiting for it (a timeout around
//! `map_async`, a dropped future) still runs every input to an outcome
//! before its flow run ends: nothing is left half-submitted.

use std::time::Duration;

use crate::common::{self, Recording, within};
use prefecto::concurrency::{BatchMode, BatchTask};
use prefecto::prelude::*;

#[task]
async fn nap(i: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(5)).await;
    i
}

#[flow]
async fn stops_waiting(mode: BatchMode) -> (prefecto::flow::FlowRunInfo, bool) {
    let batch = BatchTask::new(nap, 2).unwrap().with_mode(mode);
    // Ten batches of 5 ms: the caller gives up during the second.
    let waited = tokio::time::timeout(Duration::from_millis(8), batch.map_async(0..20u64)).await;
    (prefecto::flow::current_flow_run().unwrap(), waited.is_err())
}

#[test]
fn a_map_its_caller_stopped_waiting_for_still_gives_every_input_an_outcome() {
    common::quiet();
    let recording = Recording::installed();
    for mode in [BatchMode::Strict, BatchMode::SlidingWindow] {
        let (info, gave_up) = within(
            Duration::from_secs(20),
            "a map nobody waits for",
            move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(stops_waiting(mode)).unwrap()
            },
        );
        assert!(gave_up, "{mode:?}: the map finished before the timeout");
        let states = recording.final_task_states(info.id);
        assert_eq!(states.len(), 20, "{mode:?}: {states:?}");
        assert!(
            states.values().all(|state| state.is_completed()),
            "{mode:?}: {states:?}"
        );
    }
}
