//! `task.map` and `task.submit`: arguments, order, names and results.

use crate::common;

use prefecto::MapError;
use prefecto::prelude::*;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
async fn add_async(a: i64, b: i64) -> i64 {
    a + b
}

#[task]
fn label(prefix: String, n: u32, suffix: char) -> String {
    format!("{prefix}{n}{suffix}")
}

#[flow]
fn map_add(a: Vec<i64>, b: Vec<i64>) -> Result<Vec<i64>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(add.map(a, b)?.results()?)
}

#[test]
fn maps_two_ranges() {
    common::quiet();
    assert_eq!(
        map_add((1..5).collect(), (2..6).collect()).unwrap(),
        vec![3, 5, 7, 9]
    );
    assert_eq!(map_add(vec![1, 2], vec![2, 3]).unwrap(), vec![3, 5]);
}

#[test]
fn empty_inputs_give_empty_results() {
    common::quiet();
    assert_eq!(map_add(vec![], vec![]).unwrap(), Vec::<i64>::new());
}

#[flow]
fn map_unmapped() -> Vec<i64> {
    add.map(unmapped(1), 2..6).unwrap().results().unwrap()
}

#[test]
fn unmapped_is_passed_to_every_call() {
    common::quiet();
    assert_eq!(map_unmapped().unwrap(), vec![3, 4, 5, 6]);
}

#[flow]
fn map_errors() -> (MapError, MapError) {
    let none = add.map(unmapped(1), unmapped(2)).unwrap_err();
    let unequal = add.map(vec![1, 2, 3, 4], vec![1, 2, 3]).unwrap_err();
    (none, unequal)
}

#[test]
fn bad_arguments_are_errors_that_say_why() {
    common::quiet();
    let (none, unequal) = map_errors().unwrap();
    assert_eq!(
        none.to_string(),
        "Must provide at least one non-unmapped iterable."
    );
    assert_eq!(
        unequal.to_string(),
        "Expected all iterables to be of length 4 like 'a'. 'b' is length 3."
    );
}

#[flow]
fn interleaved_unmapped() -> Vec<String> {
    label
        .map(unmapped("item-".to_string()), 1..=3u32, unmapped('!'))
        .unwrap()
        .results()
        .unwrap()
}

#[test]
fn several_unmapped_arguments_interleave() {
    common::quiet();
    assert_eq!(
        interleaved_unmapped().unwrap(),
        vec!["item-1!", "item-2!", "item-3!"]
    );
}

#[flow]
fn names_and_order() -> Vec<String> {
    let first = add.submit(0, 0);
    let futures = add.map(0..5, unmapped(0)).unwrap();
    let mut names = vec![first.task_run_name().to_string()];
    names.extend(futures.iter().map(|f| f.task_run_name().to_string()));
    names
}

#[test]
fn task_runs_are_numbered_per_task_from_zero() {
    common::quiet();
    assert_eq!(
        names_and_order().unwrap(),
        vec!["add-0", "add-1", "add-2", "add-3", "add-4", "add-5"]
    );
    // Each flow run counts from zero again.
    assert_eq!(names_and_order().unwrap()[0], "add-0");
}

#[flow]
fn direct_calls() -> (i64, State) {
    let sum = add(2, 3).unwrap();
    let future = add.submit(4, 5);
    let state = future.wait();
    assert_eq!(future.result().unwrap(), 9);
    (sum, state)
}

#[test]
fn calling_a_task_runs_it_as_a_task_run() {
    common::quiet();
    let (sum, state) = direct_calls().unwrap();
    assert_eq!(sum, 5);
    assert!(state.is_completed());
}

#[flow]
async fn async_map() -> Vec<i64> {
    let direct = add_async(1, 1).await.unwrap();
    let mut all = add_async
        .map(vec![1, 2], vec![10, 20])
        .unwrap()
        .results_async()
        .await
        .unwrap();
    all.push(direct);
    all.push(add_async.submit(3, 3).await.unwrap());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_tasks_map_submit_and_call() {
    common::quiet();
    assert_eq!(async_map().await.unwrap(), vec![11, 22, 2, 6]);
}

#[test]
fn tasks_run_outside_a_flow() {
    common::quiet();
    assert_eq!(add(20, 22).unwrap(), 42);
    let futures = add.map(vec![1], vec![1]).unwrap();
    assert_eq!(futures.results().unwrap(), vec![2]);
}

#[task]
fn zeta_alpha(zeta: u8, alpha: u8) -> u8 {
    zeta + alpha
}

#[flow]
fn mismatched() -> String {
    zeta_alpha
        .map(vec![1, 2, 3], vec![1, 2])
        .unwrap_err()
        .to_string()
}

#[test]
fn a_length_mismatch_names_the_parameters_in_sorted_order_as_prefect() {
    common::quiet();
    assert_eq!(
        mismatched().unwrap(),
        "Expected all iterables to be of length 2 like 'alpha'. 'zeta' is length 3."
    );
}

/// How many runs of `settle_after` have ended, per flow (the two flows
/// below each count their own).
static SETTLED: [std::sync::atomic::AtomicUsize; 2] = [
    std::sync::atomic::AtomicUsize::new(0),
    std::sync::atomic::AtomicUsize::new(0),
];

/// Ends after `millis`, in success or not, and counts itself in `SETTLED[counter]`.
#[task]
async fn settle_after(millis: u64, ok: bool, counter: usize) -> Result<u64, String> {
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
    SETTLED[counter].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    match ok {
        true => Ok(millis),
        false => Err(format!("{millis} ms, then failed")),
    }
}

/// A success, a failure, a quicker failure, and a slow success last: the
/// failure given is the first in input order, not the first to happen, and
/// only once every run ended, the slow one too.
fn failures_among_successes(counter: usize) -> (Vec<u64>, Vec<bool>, Vec<usize>) {
    (
        vec![50, 100, 0, 250],
        vec![true, false, false, true],
        vec![counter; 4],
    )
}

#[flow]
fn results_of_failures() -> (TaskRunError, usize) {
    let (millis, ok, counter) = failures_among_successes(0);
    let futures = settle_after.map(millis, ok, counter).unwrap();
    let error = futures.results().unwrap_err();
    (error, SETTLED[0].load(std::sync::atomic::Ordering::SeqCst))
}

#[flow]
async fn results_of_failures_async() -> (TaskRunError, usize) {
    let (millis, ok, counter) = failures_among_successes(1);
    let futures = settle_after.map(millis, ok, counter).unwrap();
    let error = futures.results_async().await.unwrap_err();
    (error, SETTLED[1].load(std::sync::atomic::Ordering::SeqCst))
}

#[test]
fn results_wait_for_every_run_and_give_the_first_failure_in_input_order() {
    common::quiet();
    let (error, ended) = results_of_failures().unwrap();
    assert_eq!(ended, 4, "every run ended before `results` returned");
    assert_eq!(error.task_run, "settle_after-1");
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("100 ms, then failed"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (error, ended) = runtime
        .block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(60),
                results_of_failures_async(),
            )
            .await
        })
        .expect("the flow ends within 60 s")
        .unwrap();
    assert_eq!(ended, 4, "every run ended before `results_async` returned");
    assert_eq!(error.task_run, "settle_after-1");
}
