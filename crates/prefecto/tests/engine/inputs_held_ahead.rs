//! While a window's async bodies end at once, its lanes take inputs
//! several at a time and hold them for their group (`lane_group`). A held
//! input must never wait behind a body that waits: it goes to any lane
//! that is free, in its group or another, and no lane ends while inputs
//! are held elsewhere. Here some bodies wait until every other input has
//! completed, so an input stuck behind one of them would hang the map.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefecto::prelude::*;

use crate::common::{self, within};

const LIMIT: Duration = Duration::from_secs(60);

/// Whether input `i` of a map waits for the others.
fn waits(i: usize, every: usize) -> bool {
    i % every == every - 1
}

#[task]
async fn quick_or_waiting(i: usize, every: usize, others: usize, done: Arc<AtomicUsize>) -> usize {
    if waits(i, every) {
        while done.load(Ordering::SeqCst) < others {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    } else {
        done.fetch_add(1, Ordering::SeqCst);
    }
    i
}

/// A window of `size` over `n` inputs, every `every`th of which waits for
/// all the quick ones: fewer waiting than the window, so the map can end.
#[flow]
async fn waiting_behind(n: usize, size: usize, every: usize) -> Vec<usize> {
    let others = (0..n).filter(|&i| !waits(i, every)).count();
    let done = Arc::new(AtomicUsize::new(0));
    let batch = BatchTask::new(quick_or_waiting, size)
        .unwrap()
        .sliding_window();
    let futures = batch
        .map_async(0..n, unmapped(every), unmapped(others), unmapped(done))
        .await
        .unwrap();
    futures.results_async().await.unwrap()
}

fn check(n: usize, size: usize, every: usize) {
    common::quiet();
    let what = format!("a window of {size} over {n} inputs, every {every}th waiting");
    let results = within(LIMIT, &what.clone(), move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(waiting_behind(n, size, every)).unwrap()
    });
    assert_eq!(results, (0..n).collect::<Vec<_>>(), "{what}");
}

#[test]
fn an_input_held_ahead_never_waits_behind_a_waiting_body() {
    // Waiting bodies spread over the inputs, in windows that give each of
    // two groups of lanes a few lanes: some group has all but one of its
    // lanes waiting while it holds inputs ahead.
    // Who holds what depends on how the threads meet: ten tries of each.
    for (n, size, every) in [(400, 8, 64), (400, 8, 97), (1_000, 16, 150), (300, 4, 150)] {
        for _ in 0..10 {
            check(n, size, every);
        }
    }
}

#[test]
fn a_group_whose_lanes_all_wait_gives_its_inputs_to_another() {
    // Nearly as many waiting bodies as a window has lanes (five, four and
    // three of eight): a group may have every lane waiting, and only the
    // other group's lanes can run what it held.
    for every in [80, 100, 133] {
        for _ in 0..10 {
            check(400, 8, every);
        }
    }
}

/// Fails at the inputs `fail` names; waits a little at every 100th, so
/// that lanes give back what their groups hold while the map runs.
#[task]
async fn quick_failing(i: usize, fail: Arc<Vec<usize>>) -> Result<usize, String> {
    if i % 100 == 99 {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    match fail.contains(&i) {
        true => Err(format!("input {i} failed")),
        false => Ok(i),
    }
}

const TRIP_INPUTS: usize = 20_000;

/// A window of 16 over [`TRIP_INPUTS`], tripped by the second failure.
macro_rules! trip_batch {
    () => {
        BatchTask::new(quick_failing, 16)
            .unwrap()
            .sliding_window()
            .with_kill_switch(CountSwitch::new(2).unwrap())
    };
}

#[flow]
fn tripped_map(fail: Vec<usize>) -> Vec<State> {
    let fail = Arc::new(fail);
    let error = trip_batch!()
        .map(0..TRIP_INPUTS, unmapped(fail))
        .unwrap_err()
        .into_kill_switch()
        .unwrap();
    error.outcomes.into_iter().map(|o| o.state).collect()
}

#[flow]
fn tripped_stream(fail: Vec<usize>) -> Vec<(usize, State)> {
    let fail = Arc::new(fail);
    let stream = trip_batch!()
        .stream_unordered(0..TRIP_INPUTS, unmapped(fail))
        .unwrap();
    stream
        .map(|run| match run.result {
            Ok(_) => (run.index, State::completed()),
            Err(error) => (run.index, error.state),
        })
        .collect()
}

/// Every input ended in a final state; the two failures are there; every
/// input cancelled was cancelled by the switch, before or after submission.
fn check_tripped(states: &[(usize, State)], fail: &[usize]) {
    let mut seen: Vec<usize> = states.iter().map(|(i, _)| *i).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..TRIP_INPUTS).collect::<Vec<_>>(),
        "every input once"
    );
    for (i, state) in states {
        assert!(state.is_terminal(), "input {i}: {state:?}");
        if fail.contains(i) {
            assert!(state.is_failed(), "input {i}: {state:?}");
        } else if !state.is_completed() {
            assert!(state.is_cancelled(), "input {i}: {state:?}");
            let message = state.message().unwrap_or_default();
            assert!(message.contains("CountSwitch"), "input {i}: {message}");
        }
    }
    assert!(
        states.iter().any(|(_, state)| state.is_cancelled()),
        "the switch tripped early enough to cancel inputs"
    );
}

#[test]
fn a_trip_ends_every_input_held_ahead_or_given_back() {
    common::quiet();
    let tries = [vec![3_000, 3_001], vec![5_099, 7_199], vec![15, 16]];
    for fail in tries.iter().cycle().take(9) {
        let map = fail.clone();
        let states = within(LIMIT, "a tripped map", move || tripped_map(map).unwrap());
        let states: Vec<_> = states.into_iter().enumerate().collect();
        check_tripped(&states, fail);
        let stream = fail.clone();
        let states = within(LIMIT, "a tripped stream", move || {
            tripped_stream(stream).unwrap()
        });
        check_tripped(&states, fail);
    }
}

#[task]
async fn tenfold(i: u64) -> u64 {
    i * 10
}

/// A quick window's runs are made in records its groups made ready before
/// they looked at the queue, and named as they took their inputs.
#[flow]
async fn named_in_input_order(n: u64) -> (Vec<u64>, Vec<u64>) {
    let batch = BatchTask::new(tenfold, 32).unwrap().sliding_window();
    let futures = batch.map_async(0..n).await.unwrap();
    let indexes = futures.iter().map(|f| f.task_run_name().index).collect();
    (futures.results_async().await.unwrap(), indexes)
}

#[test]
fn runs_made_ahead_are_named_and_valued_in_input_order() {
    common::quiet();
    let n = 20_000;
    let (values, indexes) = within(LIMIT, "a quick window", move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(named_in_input_order(n)).unwrap()
    });
    assert_eq!(values, (0..n).map(|i| i * 10).collect::<Vec<_>>());
    let first = indexes[0];
    assert_eq!(indexes, (first..first + n).collect::<Vec<_>>());
}
