//! Collecting maps (`BatchTask::map`, `map_async`) over async streams of
//! inputs (`from_stream`): read as their items come, zipped with iterators,
//! stopped by kill switches; a stream whose length differs ends the map
//! with the futures of the inputs before; a plain `map` refuses a stream.

use crate::common::{self, within};

use std::time::Duration;

use prefecto::concurrency::BatchError;
use prefecto::prelude::*;

use crate::async_stream_inputs::trickle;
use crate::streams::{double, double_async, fail_on};

const LIMIT: Duration = Duration::from_secs(60);

#[task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[flow]
async fn doubled_async(mode: BatchMode) -> Vec<u64> {
    let batch = BatchTask::new(double_async, 10).unwrap().with_mode(mode);
    let futures = batch.map_async(from_stream(trickle(300, 7))).await.unwrap();
    assert_eq!(futures.len(), 300);
    futures.results_async().await.unwrap()
}

#[test]
fn map_async_reads_a_stream_as_its_items_come_in_both_modes() {
    common::quiet();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for mode in [BatchMode::SlidingWindow, BatchMode::Strict] {
        let doubled = runtime
            .block_on(async {
                tokio::time::timeout(LIMIT, doubled_async(mode))
                    .await
                    .expect("the map ended")
            })
            .unwrap();
        let expected: Vec<u64> = (0..300).map(|x| x * 2).collect();
        assert_eq!(doubled, expected, "{mode:?}");
    }
}

#[flow(max_workers = 1)]
fn sync_sums_over_a_stream(mode: BatchMode) -> Vec<u64> {
    let batch = BatchTask::new(add, 4).unwrap().with_mode(mode);
    batch
        .map(from_stream(trickle(50, 3)), 100..150u64)
        .unwrap()
        .results()
        .unwrap()
}

#[test]
fn a_sync_map_zips_a_stream_with_an_iterator() {
    common::quiet();
    for mode in [BatchMode::SlidingWindow, BatchMode::Strict] {
        let sums = within(LIMIT, "a sync map over a stream", move || {
            sync_sums_over_a_stream(mode).unwrap()
        });
        let expected: Vec<u64> = (0..50).map(|x| x + 100 + x).collect();
        assert_eq!(sums, expected, "{mode:?}");
    }
}

#[flow]
fn a_stream_shorter_than_its_iterator() -> (String, Vec<u64>) {
    let batch = BatchTask::new(add, 3).unwrap();
    match batch.map(from_stream(trickle(5, 2)), 0..8u64) {
        Err(BatchError::Inputs { error, futures }) => {
            (error.to_string(), futures.results().unwrap())
        }
        other => panic!("expected the inputs' error, got {other:?}"),
    }
}

#[test]
fn a_stream_of_another_length_ends_the_map_with_the_runs_before() {
    common::quiet();
    let (error, ran) = within(LIMIT, "a short stream", || {
        a_stream_shorter_than_its_iterator().unwrap()
    });
    assert_eq!(
        error,
        "'a' ran out after 5 input(s) while 'b' had more: the mapped iterables must have equal lengths."
    );
    assert_eq!(ran, vec![0, 2, 4, 6, 8], "the five inputs before it ran");
}

#[flow]
fn known_lengths_that_differ() -> String {
    let batch = BatchTask::new(add, 3).unwrap();
    match batch.map(0..4u64, 0..3u64) {
        Err(BatchError::Map(error)) => error.to_string(),
        other => panic!("expected the arguments refused, got {other:?}"),
    }
}

#[flow]
fn a_stream_and_iterators_of_known_lengths_that_differ() -> String {
    #[task]
    fn add3(a: u64, b: u64, c: u64) -> u64 {
        a + b + c
    }
    let batch = BatchTask::new(add3, 3).unwrap();
    match batch.map(from_stream(trickle(3, 1)), 0..4u64, 0..3u64) {
        Err(BatchError::Map(error)) => error.to_string(),
        other => panic!("expected the arguments refused before anything ran, got {other:?}"),
    }
}

#[test]
fn known_lengths_are_checked_before_the_stream_is_read() {
    common::quiet();
    let expected = "Expected all iterables to be of length 4 like 'a'. 'b' is length 3.";
    assert_eq!(known_lengths_that_differ().unwrap(), expected);
    let with_a_stream = a_stream_and_iterators_of_known_lengths_that_differ().unwrap();
    assert_eq!(
        with_a_stream,
        "Expected all iterables to be of length 4 like 'b'. 'c' is length 3."
    );
}

#[flow]
fn stopped_on_a_failure(mode: BatchMode) -> Vec<(usize, StateType)> {
    let batch = BatchTask::new(fail_on, 2)
        .unwrap()
        .with_mode(mode)
        .with_kill_switch(AnyFailedSwitch::new());
    let Err(BatchError::KillSwitch(tripped)) = batch.map(from_stream(trickle(40, 5)), unmapped(3))
    else {
        panic!("the switch trips on input 3");
    };
    assert_eq!(tripped.switch, "AnyFailedSwitch");
    tripped
        .outcomes
        .iter()
        .map(|o| (o.index, o.state.state_type()))
        .collect()
}

#[test]
fn a_kill_switch_stops_a_map_over_a_stream() {
    common::quiet();
    for mode in [BatchMode::SlidingWindow, BatchMode::Strict] {
        let outcomes = within(LIMIT, "a stopped map over a stream", move || {
            stopped_on_a_failure(mode).unwrap()
        });
        // Every input read has its outcome, in input order: input 3
        // failed; the others completed, or were cancelled by the trip (an
        // earlier one still running, with a sliding window); the stream's
        // inputs not yet read when it stopped have no run.
        let indexes: Vec<usize> = outcomes.iter().map(|&(index, _)| index).collect();
        assert_eq!(indexes, (0..outcomes.len()).collect::<Vec<_>>(), "{mode:?}");
        assert!(
            outcomes.len() >= 4 && outcomes.len() < 40,
            "{mode:?}: {outcomes:?}"
        );
        assert_eq!(outcomes[3].1, StateType::Failed, "{mode:?}");
        let mut others = outcomes.iter().enumerate().filter(|&(i, _)| i != 3);
        assert!(
            others.all(|(_, &(_, s))| matches!(s, StateType::Completed | StateType::Cancelled)),
            "{mode:?}: {outcomes:?}"
        );
    }
}

#[flow]
fn a_plain_map_over_a_stream() -> MapError {
    double.map(from_stream(trickle(3, 1))).unwrap_err()
}

#[test]
fn a_plain_map_refuses_a_stream_and_names_the_batch_task() {
    common::quiet();
    let error = a_plain_map_over_a_stream().unwrap();
    assert_eq!(error, MapError::StreamNeedsBatchTask { param: "x" });
    assert!(error.to_string().contains("BatchTask::map"), "{error}");
}
