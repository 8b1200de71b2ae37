//! `BatchTask`: the original's behaviour, then kill switches that see every
//! run, cancel what is in flight, and leave an outcome for every input.

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::Recording;
use prefecto::MapError;
use prefecto::concurrency::{
    AnyFailedSwitch, BatchConfigError, BatchError, BatchMode, BatchTask, CountSwitch, KillSwitch,
    KillSwitchError, RateSwitch,
};
use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Fails where `fail` is true.
#[task]
fn checked(i: usize, fail: bool) -> Result<usize, String> {
    if fail {
        Err(format!("input {i} is bad"))
    } else {
        Ok(i)
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

#[flow]
fn batch_add(size: usize, a: Vec<i64>, b: Vec<i64>) -> Result<Vec<i64>, AnyError> {
    Ok(BatchTask::new(add, size)?.map(a, b)?.results()?)
}

#[test]
fn maps_in_batches_as_the_original() {
    common::quiet();
    assert_eq!(
        batch_add(3, (1..5).collect(), (2..6).collect()).unwrap(),
        vec![3, 5, 7, 9]
    );
    assert_eq!(batch_add(2, vec![1, 2], vec![2, 3]).unwrap(), vec![3, 5]);
    assert_eq!(batch_add(2, vec![], vec![]).unwrap(), Vec::<i64>::new());
    assert_eq!(
        batch_add(10, (1..5).collect(), (2..6).collect()).unwrap(),
        vec![3, 5, 7, 9]
    );
}

#[flow]
fn batch_unmapped() -> Vec<i64> {
    let batch = BatchTask::new(add, 3).unwrap();
    batch.map(unmapped(1), 2..6).unwrap().results().unwrap()
}

#[test]
fn batches_with_unmapped() {
    common::quiet();
    assert_eq!(batch_unmapped().unwrap(), vec![3, 4, 5, 6]);
}

#[task]
fn join4(a: String, b: u8, c: String, d: u8) -> String {
    format!("{a}{b}{c}{d}")
}

#[flow]
fn batch_interleaved() -> Vec<String> {
    let batch = BatchTask::new(join4, 2).unwrap();
    batch
        .map(
            unmapped("a".to_string()),
            1..=3u8,
            unmapped("c".to_string()),
            vec![7, 8, 9],
        )
        .unwrap()
        .results()
        .unwrap()
}

#[test]
fn batches_with_several_unmapped_interleaved() {
    common::quiet();
    assert_eq!(batch_interleaved().unwrap(), vec!["a1c7", "a2c8", "a3c9"]);
}

#[flow]
fn batch_map_errors() -> Vec<String> {
    let batch = BatchTask::new(add, 2).unwrap();
    let none = batch.map(unmapped(1), unmapped(2)).unwrap_err();
    let unequal = batch.map(vec![1, 2, 3, 4], vec![1, 2, 3]).unwrap_err();
    assert!(matches!(none, BatchError::Map(MapError::NoMappedIterable)));
    vec![none.to_string(), unequal.to_string()]
}

#[test]
fn bad_arguments_are_errors() {
    common::quiet();
    assert_eq!(
        batch_map_errors().unwrap(),
        vec![
            "Must provide at least one non-unmapped iterable.",
            "Expected all iterables to be of length 4 like 'a'. 'b' is length 3."
        ]
    );
    assert_eq!(
        BatchTask::new(add, 0).err(),
        Some(BatchConfigError::ZeroBatchSize)
    );
    assert_eq!(
        BatchConfigError::ZeroBatchSize.to_string(),
        "BatchTask size must be at least 1, got 0"
    );
}

fn failures_at(n: usize, at: &[usize]) -> Vec<bool> {
    (0..n).map(|i| at.contains(&i)).collect()
}

#[flow]
fn count_switch_run(
    size: usize,
    mode: BatchMode,
    fail: Vec<bool>,
) -> (uuid::Uuid, KillSwitchError<usize>) {
    let n = fail.len();
    let batch = BatchTask::new(checked, size)
        .unwrap()
        .with_mode(mode)
        .with_kill_switch(CountSwitch::new(2).unwrap());
    let err = batch
        .map(0..n, fail)
        .unwrap_err()
        .into_kill_switch()
        .unwrap();
    (common::flow_run_id(), err)
}

#[test]
fn count_switch_trips_across_batches() {
    common::quiet();
    let recording = Recording::installed();
    // Size 3, failures at 0 and 3: batch 1 has one failure, batch 2 the second.
    let (flow_run, err) = count_switch_run(3, BatchMode::Strict, failures_at(8, &[0, 3])).unwrap();
    assert_eq!(err.switch, "CountSwitch");
    assert_eq!(err.outcomes.len(), 8);
    assert_eq!(err.failed_inputs(), vec![0, 3]);
    // Batch 1 completed apart from input 0. Input 3 trips the switch as it
    // finishes; inputs 4 and 5 either finished first or were cancelled.
    // Batch 3 was never submitted.
    let completed = err.completed_inputs();
    assert!(completed.starts_with(&[1, 2]), "{completed:?}");
    for i in [4, 5] {
        let state = &err.outcomes[i].state;
        assert!(state.is_completed() || state.is_cancelled(), "{i}: {state}");
    }
    assert!(err.cancelled_inputs().ends_with(&[6, 7]));
    for i in [6, 7] {
        assert!(
            err.outcomes[i]
                .state
                .message()
                .unwrap()
                .contains("before submission")
        );
    }
    let logs = recording.logs(flow_run);
    assert!(
        logs.contains(&"Mapping 'checked' batch 1 of 3.".to_string()),
        "{logs:?}"
    );
    assert!(logs.contains(&"Mapping 'checked' batch 2 of 3.".to_string()));
    assert!(!logs.contains(&"Mapping 'checked' batch 3 of 3.".to_string()));
}

#[test]
fn count_switch_trips_within_one_batch() {
    common::quiet();
    // Size 4, failures at 0 and 2: the switch trips inside batch 1.
    let (_, err) = count_switch_run(4, BatchMode::Strict, failures_at(8, &[0, 2])).unwrap();
    assert_eq!(err.failed_inputs(), vec![0, 2]);
    // Input 3 finished first, or was still queued for a worker thread and never started.
    let state = &err.outcomes[3].state;
    assert!(state.is_completed() || state.is_cancelled(), "{state}");
    assert!(err.cancelled_inputs().ends_with(&[4, 5, 6, 7]));
}

#[test]
fn the_switch_sees_the_last_batch() {
    common::quiet();
    // The original checked only between batches, so a failure in the last
    // batch went unseen. Here it trips the switch.
    let (_, err) = count_switch_run(3, BatchMode::Strict, failures_at(6, &[4, 5])).unwrap();
    assert_eq!(err.failed_inputs(), vec![4, 5]);
    assert!(err.completed_inputs().starts_with(&[0, 1, 2]));
    // Input 3 shares the last batch: it finished, or was still queued at the trip.
    let state = &err.outcomes[3].state;
    assert!(state.is_completed() || state.is_cancelled(), "{state}");
}

#[test]
fn sliding_window_trips_the_same_switch() {
    common::quiet();
    let (_, err) = count_switch_run(2, BatchMode::SlidingWindow, failures_at(10, &[1, 3])).unwrap();
    assert_eq!(err.failed_inputs(), vec![1, 3]);
    // Every input has an outcome, and each is one of the three.
    assert_eq!(err.outcomes.len(), 10);
    let accounted = err.completed_inputs().len() + 2 + err.cancelled_inputs().len();
    assert_eq!(accounted, 10);
    // Once one input is cancelled before submission, so is every later one.
    let unsubmitted = |o: &prefecto::concurrency::InputOutcome| {
        o.state
            .message()
            .is_some_and(|m| m.contains("before submission"))
    };
    if let Some(first) = err.outcomes.iter().position(unsubmitted) {
        assert!(err.outcomes[first..].iter().all(unsubmitted));
    }
}

#[flow]
fn rate_switch_run() -> KillSwitchError<usize> {
    let batch = BatchTask::new(checked, 2)
        .unwrap()
        .with_kill_switch(RateSwitch::new(4, 0.5).unwrap());
    batch
        .map(0..10, failures_at(10, &[0, 2, 3]))
        .unwrap_err()
        .into_kill_switch()
        .unwrap()
}

#[test]
fn rate_switch_waits_for_its_sample() {
    common::quiet();
    let err = rate_switch_run().unwrap();
    assert_eq!(err.switch, "RateSwitch");
    // After 4 runs, 3 failed: 0.75 >= 0.5.
    assert_eq!(err.completed_inputs(), vec![1]);
    assert_eq!(err.cancelled_inputs(), (4..10).collect::<Vec<_>>());
}

/// Records which bodies started and which got past their await.
#[derive(Default)]
struct Probe {
    started: Mutex<BTreeSet<usize>>,
    finished: Mutex<BTreeSet<usize>>,
}

/// Input 0 fails at once; the others wait long enough to be in flight at the trip.
#[task]
async fn slow_unless_first(i: usize, probe: Arc<Probe>) -> Result<usize, String> {
    probe.started.lock().unwrap().insert(i);
    if i == 0 {
        return Err("first input fails".into());
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    probe.finished.lock().unwrap().insert(i);
    Ok(i)
}

#[flow]
fn cancel_in_flight(mode: BatchMode, probe: Arc<Probe>) -> (uuid::Uuid, KillSwitchError<usize>) {
    let batch = BatchTask::new(slow_unless_first, 4)
        .unwrap()
        .with_mode(mode)
        .with_kill_switch(AnyFailedSwitch::new());
    let err = batch
        .map(0..12, unmapped(probe))
        .unwrap_err()
        .into_kill_switch()
        .unwrap();
    (common::flow_run_id(), err)
}

#[test]
fn a_trip_cancels_async_runs_in_flight_and_starts_nothing_more() {
    common::quiet();
    let recording = Recording::installed();
    for mode in [BatchMode::Strict, BatchMode::SlidingWindow] {
        let probe = Arc::new(Probe::default());
        let (flow_run, err) = cancel_in_flight(mode, probe.clone()).unwrap();
        // In-flight runs were dropped at their await: none got past it.
        assert!(probe.finished.lock().unwrap().is_empty(), "{mode:?}");
        // No body outside the first window started.
        assert!(
            probe.started.lock().unwrap().iter().all(|&i| i < 4),
            "{mode:?}"
        );
        assert_eq!(err.failed_inputs(), vec![0]);
        assert_eq!(err.cancelled_inputs(), (1..12).collect::<Vec<_>>());
        for outcome in &err.outcomes[1..] {
            let message = outcome.state.message().unwrap();
            assert!(
                message.starts_with("Cancelled by kill switch AnyFailedSwitch"),
                "{message}"
            );
        }
        assert!(
            err.outcomes[4]
                .state
                .message()
                .unwrap()
                .contains("before submission")
        );
        // Every input has a recorded task run that ended in the state the error reports.
        let recorded = recording.final_task_states(flow_run);
        assert_eq!(recorded.len(), 12);
        for outcome in &err.outcomes {
            assert_eq!(
                recorded[&outcome.task_run.to_string()].state_type(),
                outcome.state.state_type()
            );
        }
    }
}

/// Input 0 fails once the other bodies of its window are at their await;
/// those sleep far longer than the test may take.
#[task]
async fn fails_once_the_others_wait(i: usize, probe: Arc<Probe>) -> Result<usize, String> {
    probe.started.lock().unwrap().insert(i);
    if i == 0 {
        while probe.started.lock().unwrap().len() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The others have started: let them reach their sleep.
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Err("first input fails".into());
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    probe.finished.lock().unwrap().insert(i);
    Ok(i)
}

#[flow]
fn trip_while_bodies_wait(mode: BatchMode, probe: Arc<Probe>) -> KillSwitchError<usize> {
    let batch = BatchTask::new(fails_once_the_others_wait, 4)
        .unwrap()
        .with_mode(mode)
        .with_kill_switch(AnyFailedSwitch::new());
    batch
        .map(0..8, unmapped(probe))
        .unwrap_err()
        .into_kill_switch()
        .unwrap()
}

#[test]
fn a_trip_cancels_async_bodies_waiting_at_an_await() {
    // Unlike the test above, the window's other bodies are past their first
    // poll when the switch trips: their lanes must drop them there, not wait.
    common::quiet();
    for mode in [BatchMode::Strict, BatchMode::SlidingWindow] {
        let probe = Arc::new(Probe::default());
        let seen = probe.clone();
        let err = common::within(Duration::from_secs(60), "the trip", move || {
            trip_while_bodies_wait(mode, seen).unwrap()
        });
        assert_eq!(
            *probe.started.lock().unwrap(),
            (0..4).collect::<BTreeSet<_>>(),
            "{mode:?}"
        );
        assert!(probe.finished.lock().unwrap().is_empty(), "{mode:?}");
        assert_eq!(err.failed_inputs(), vec![0]);
        assert_eq!(err.cancelled_inputs(), (1..8).collect::<Vec<_>>());
        for outcome in &err.outcomes[1..4] {
            let message = outcome.state.message().unwrap();
            assert!(
                message.starts_with("Cancelled by kill switch AnyFailedSwitch"),
                "{message}"
            );
        }
    }
}

static SWITCH_TRIPPED: AtomicBool = AtomicBool::new(false);
static ONE_STARTED: AtomicBool = AtomicBool::new(false);

/// AnyFailed, and it lets the test's bodies know when it has tripped.
struct SignallingSwitch(AnyFailedSwitch);

impl KillSwitch for SignallingSwitch {
    fn should_flip_switch(&mut self, state: &State) -> bool {
        let tripped = self.0.should_flip_switch(state);
        if tripped {
            SWITCH_TRIPPED.store(true, Ordering::SeqCst);
        }
        tripped
    }
}

fn wait_for(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// With two worker threads: input 1 starts, then input 0 fails while input 1
/// is still running; input 1 finishes only after the switch has tripped.
#[task]
fn sync_body(i: usize) -> Result<usize, String> {
    match i {
        0 => {
            wait_for(&ONE_STARTED);
            Err("first input fails".into())
        }
        1 => {
            ONE_STARTED.store(true, Ordering::SeqCst);
            wait_for(&SWITCH_TRIPPED);
            std::thread::sleep(Duration::from_millis(20));
            Ok(i)
        }
        _ => {
            std::thread::sleep(Duration::from_millis(20));
            Ok(i)
        }
    }
}

#[flow(max_workers = 2)]
fn sync_in_flight() -> KillSwitchError<usize> {
    let batch = BatchTask::new(sync_body, 6)
        .unwrap()
        .with_kill_switch(SignallingSwitch(AnyFailedSwitch::new()));
    batch.map(0..8).unwrap_err().into_kill_switch().unwrap()
}

#[test]
fn sync_runs_in_flight_finish_and_keep_their_results() {
    common::quiet();
    let mut err = sync_in_flight().unwrap();
    assert_eq!(err.switch, "SignallingSwitch");
    assert_eq!(err.failed_inputs(), vec![0]);
    // Input 1 was running when the switch tripped: it ran to completion and its value is kept.
    assert_eq!(err.outcomes[1].state.state_type(), StateType::Completed);
    assert_eq!(err.partial_results()[1], Some(&1));
    // The rest of the batch either started before the trip and finished, or
    // was still queued and never started; the next batch was never submitted.
    for outcome in &err.outcomes[2..6] {
        assert!(
            outcome.state.is_completed() || outcome.state.is_cancelled(),
            "{outcome:?}"
        );
    }
    assert!(err.cancelled_inputs().ends_with(&[6, 7]));
}

#[flow]
fn failing_flow() -> Result<Vec<usize>, AnyError> {
    let batch = BatchTask::new(checked, 2)?.with_kill_switch(AnyFailedSwitch::new());
    Ok(batch.map(0..4, failures_at(4, &[1]))?.results()?)
}

#[test]
fn a_kill_switch_error_fails_the_flow_with_its_reason() {
    common::quiet();
    let err = failing_flow().unwrap_err();
    let state = err.state().unwrap();
    assert!(state.is_failed());
    assert_eq!(
        state.message().unwrap(),
        "Flow run encountered an error: Kill switch AnyFailedSwitch tripped: \
         a task run finished in state Failed('input 1 is bad')"
    );
}

#[flow]
fn no_trip_keeps_failed_futures() -> Vec<State> {
    let batch = BatchTask::new(checked, 2).unwrap();
    let futures = batch.map(0..4, failures_at(4, &[1])).unwrap();
    futures.states()
}

#[test]
fn without_a_switch_failures_are_states_not_errors() {
    common::quiet();
    let states = no_trip_keeps_failed_futures().unwrap();
    let kinds: Vec<_> = states.iter().map(State::state_type).collect();
    assert_eq!(
        kinds,
        vec![
            StateType::Completed,
            StateType::Failed,
            StateType::Completed,
            StateType::Completed
        ]
    );
}

#[flow]
async fn async_batch() -> Vec<i64> {
    let batch = BatchTask::new(add, 3).unwrap().sliding_window();
    batch
        .map_async(1..8, unmapped(10))
        .await
        .unwrap()
        .results_async()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_async_in_an_async_flow() {
    common::quiet();
    assert_eq!(async_batch().await.unwrap(), (11..18).collect::<Vec<_>>());
}

#[task]
fn non_negative(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("{x} is negative"))
    } else {
        Ok(x)
    }
}

#[flow]
fn with_one_error_type(size: usize, inputs: Vec<i64>) -> Result<Vec<i64>, prefecto::Error> {
    let batch = BatchTask::new(non_negative, size)?.with_kill_switch(AnyFailedSwitch::new());
    Ok(batch.map(inputs)?.results()?)
}

#[test]
fn every_happy_path_error_converts_into_one_type() {
    common::quiet();
    assert_eq!(with_one_error_type(2, vec![1, 2]).unwrap(), vec![1, 2]);

    let zero = with_one_error_type(0, vec![1]).unwrap_err();
    let inner = std::error::Error::source(&zero).and_then(|e| e.downcast_ref::<prefecto::Error>());
    assert!(
        matches!(
            inner,
            Some(prefecto::Error::BatchConfig(
                BatchConfigError::ZeroBatchSize
            ))
        ),
        "{zero:?}"
    );

    let tripped = with_one_error_type(1, vec![1, -2, 3]).unwrap_err();
    let Some(prefecto::Error::KillSwitch(err)) =
        std::error::Error::source(&tripped).and_then(|e| e.downcast_ref::<prefecto::Error>())
    else {
        panic!("a kill switch error: {tripped:?}");
    };
    // The states of every input come through `?`; the values stay behind.
    assert_eq!(err.outcomes.len(), 3);
    assert_eq!(err.completed_inputs(), vec![0]);
    assert_eq!(err.failed_inputs(), vec![1]);
    assert_eq!(err.cancelled_inputs(), vec![2]);
}

/// `Send`, but not `Sync`: a value a kill switch's error must still carry
/// through `?` into a boxed error.
#[task]
fn cell_unless_negative(x: i64) -> Result<std::cell::Cell<i64>, String> {
    if x < 0 {
        Err(format!("{x} is negative"))
    } else {
        Ok(std::cell::Cell::new(x))
    }
}

#[flow]
fn boxed_kill_switch_error(
    inputs: Vec<i64>,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let batch = BatchTask::new(cell_unless_negative, 1)?.with_kill_switch(AnyFailedSwitch::new());
    Ok(batch.map(inputs)?.len())
}

#[test]
fn a_kill_switch_error_boxes_for_values_that_are_only_send() {
    common::quiet();
    let err = boxed_kill_switch_error(vec![1, -2, 3]).unwrap_err();
    let boxed = std::error::Error::source(&err).expect("the body's error");
    let batch: &BatchError<std::cell::Cell<i64>> = boxed.downcast_ref().expect("the BatchError");
    let BatchError::KillSwitch(tripped) = batch else {
        panic!("{batch:?}")
    };
    assert_eq!(tripped.failed_inputs(), vec![1]);
    assert_eq!(tripped.cancelled_inputs(), vec![2]);
}

#[flow]
fn cells_so_far(inputs: Vec<i64>) -> Vec<Option<i64>> {
    let batch = BatchTask::new(cell_unless_negative, 1)
        .unwrap()
        .with_kill_switch(AnyFailedSwitch::new());
    let mut err = batch.map(inputs).unwrap_err().into_kill_switch().unwrap();
    let seen: Vec<Option<i64>> = err
        .partial_results()
        .into_iter()
        .map(|cell| cell.map(std::cell::Cell::get))
        .collect();
    assert_eq!(
        seen,
        err.into_partial_results()
            .into_iter()
            .map(|cell| cell.map(std::cell::Cell::into_inner))
            .collect::<Vec<_>>()
    );
    seen
}

#[test]
fn partial_results_are_reached_through_exclusive_access() {
    common::quiet();
    assert_eq!(
        cells_so_far(vec![4, -1, 5]).unwrap(),
        vec![Some(4), None, None]
    );
}

/// Fails after 100 ms if `fail`, completes at once otherwise: failures finish last.
#[task]
async fn slow_failure(fail: bool) -> Result<(), String> {
    if fail {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return Err("slow failure".to_string());
    }
    Ok(())
}

#[flow]
fn rate_switch_in(order: String) -> String {
    let mut batch = BatchTask::new(slow_failure, 5)
        .unwrap()
        .with_kill_switch(RateSwitch::new(3, 0.6).unwrap());
    if order == "completion" {
        batch = batch.with_switch_order(SwitchOrder::Completion);
    }
    let inputs = [
        true, true, false, false, false, false, false, false, false, false,
    ];
    match batch.map(inputs) {
        Ok(futures) => format!("{} futures", futures.len()),
        Err(err) => err.to_string(),
    }
}

#[test]
fn strict_mode_shows_the_switch_runs_in_input_order_as_the_original() {
    common::quiet();
    // Input order: failed, failed, completed: 2 of 3 failed, the switch trips
    // after the first batch, whatever order the runs finished in.
    let err = rate_switch_in("input".to_string()).unwrap();
    assert!(
        err.contains("RateSwitch") && err.contains("2 of 3"),
        "{err}"
    );
}

#[test]
fn completion_order_shows_the_switch_runs_as_they_finish() {
    common::quiet();
    // The three completions finish first: 2 of 5 failed, below the rate.
    assert_eq!(
        rate_switch_in("completion".to_string()).unwrap(),
        "10 futures"
    );
}
