//! A `BatchTask` map keeps each run by value once it has ended and its
//! lane is done with it (no record per run), and its lane makes its next
//! run in the record it no longer needs. Its futures must still do all that
//! a run's future does: give the state, the value or the error with the
//! body's own error as its source, and serve as a later run's input, its
//! `unmapped` value and its `wait_for`; with async bodies (run on the lanes)
//! and sync ones (on the pool), and none mixed up with another run's.

use std::time::Duration;

use prefecto::prelude::*;

use crate::common::{self, within};

const LIMIT: Duration = Duration::from_secs(60);
const INPUTS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
#[error("{0} is a multiple of seven")]
struct Sevens(u64);

#[task]
async fn checked_async(x: u64) -> Result<u64, Sevens> {
    if x.is_multiple_of(7) {
        Err(Sevens(x))
    } else {
        Ok(x * 10)
    }
}

#[task]
fn checked_sync(x: u64) -> Result<u64, Sevens> {
    if x.is_multiple_of(7) {
        Err(Sevens(x))
    } else {
        Ok(x * 10)
    }
}

#[task]
fn plus(a: u64, b: u64) -> u64 {
    a + b
}

/// Every future of a map of `checked` over `0..INPUTS` (size 8) is checked
/// against its input, then used as the inputs of later runs.
fn check_futures(futures: PrefectFutureList<u64>) -> Vec<String> {
    let mut wrong = Vec::new();
    let names: std::collections::HashSet<_> = futures
        .iter()
        .map(|f| f.task_run_name().to_string())
        .collect();
    if names.len() != INPUTS as usize {
        wrong.push(format!("{} distinct run names of {INPUTS}", names.len()));
    }
    for (x, future) in futures.iter().enumerate() {
        let (x, state) = (x as u64, future.state());
        let expected_failed = x % 7 == 0;
        if !future.is_done() || state.is_failed() != expected_failed {
            wrong.push(format!("input {x}: {state:?}"));
        }
        let shown = format!("{future:?}");
        if !shown.contains(&future.task_run_name().to_string()) {
            wrong.push(format!("input {x}: Debug shows {shown}"));
        }
    }
    // A completed run's value as another run's input, as its `unmapped`
    // value and as its `wait_for`; a failed one keeps the next from running.
    let mut futures: Vec<Option<PrefectFuture<u64>>> =
        futures.into_inner().into_iter().map(Some).collect();
    let mut take = |x: usize| futures[x].take().unwrap();
    let summed = plus.submit(take(6), 1).result();
    if summed.as_ref().ok() != Some(&61) {
        wrong.push(format!("a future as input: {summed:?}"));
    }
    let shared = plus.map(vec![1, 2], unmapped(take(5))).unwrap().results();
    if shared.as_ref().ok() != Some(&vec![51, 52]) {
        wrong.push(format!("a future unmapped: {shared:?}"));
    }
    let (failed, completed) = (take(14), take(15));
    let after_failed = plus.submit_after(&[&failed], 1, 1).wait();
    if !after_failed.is_failed() || after_failed.name() != "NotReady" {
        wrong.push(format!("wait_for a failed run: {after_failed:?}"));
    }
    let after_completed = plus.submit_after(&[&completed], 1, 1).result();
    if after_completed.as_ref().ok() != Some(&2) {
        wrong.push(format!("wait_for a completed run: {after_completed:?}"));
    }
    // The failed run's error, with the body's own error as its source.
    let error = failed.result().unwrap_err();
    match std::error::Error::source(&error).and_then(|s| s.downcast_ref::<Sevens>()) {
        Some(Sevens(14)) => {}
        other => wrong.push(format!("the source of {error}: {other:?}")),
    }
    if completed.result().ok() != Some(150) {
        wrong.push("the value of input 15, taken last".into());
    }
    wrong
}

#[flow]
fn async_map() -> Vec<String> {
    let batch = BatchTask::new(checked_async, 8).unwrap().sliding_window();
    check_futures(batch.map(0..INPUTS).unwrap())
}

#[flow]
fn sync_map() -> Vec<String> {
    let batch = BatchTask::new(checked_sync, 8).unwrap().sliding_window();
    check_futures(batch.map(0..INPUTS).unwrap())
}

#[test]
fn the_futures_of_a_map_of_async_bodies_do_all_a_future_does() {
    common::quiet();
    let wrong = within(LIMIT, "a map of async bodies", || async_map().unwrap());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_futures_of_a_map_of_sync_bodies_do_all_a_future_does() {
    common::quiet();
    let wrong = within(LIMIT, "a map of sync bodies", || sync_map().unwrap());
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[flow]
fn values_in_order() -> Result<Vec<u64>, TaskRunError> {
    // Strict batches and a window: every value is its own input's, though
    // the lanes made each run in another run's record.
    let strict = BatchTask::new(plus, 16).unwrap();
    let strict = strict.map(0..INPUTS, unmapped(1)).unwrap().results()?;
    let window = BatchTask::new(plus, 16).unwrap().sliding_window();
    let window = window.map(0..INPUTS, unmapped(2)).unwrap().results()?;
    Ok(strict.into_iter().zip(window).map(|(a, b)| b - a).collect())
}

#[test]
fn every_value_is_its_own_inputs() {
    common::quiet();
    let differences = within(LIMIT, "values in order", || values_in_order().unwrap());
    assert_eq!(differences.len(), INPUTS as usize);
    assert!(differences.iter().all(|&d| d == 1), "{differences:?}");
}
