//! Resume: a run whose task and cache key completed before returns the
//! persisted result instead of running again.

use crate::common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prefecto::prelude::*;

/// Runs flows that keep their results in a history of these tests' own.
fn recorded<R>(flow_call: impl FnOnce() -> R) -> R {
    static HISTORY: OnceLock<common::HistoryHome> = OnceLock::new();
    HISTORY
        .get_or_init(|| common::HistoryHome::new("resume"))
        .prefecto
        .scope(flow_call)
}

static EXECUTIONS: AtomicUsize = AtomicUsize::new(0);

/// Takes `&str`: the task's `String` parameter is passed by reference.
fn item_key(item: &str) -> String {
    item.to_string()
}

/// Fails on the items marked bad.
#[task(cache_key = item_key, persist_result = true)]
fn process(item: String) -> Result<usize, String> {
    EXECUTIONS.fetch_add(1, Ordering::SeqCst);
    match item.strip_prefix("bad-") {
        Some(_) => Err(format!("{item} is malformed")),
        None => Ok(item
            .trim_start_matches("item-")
            .parse::<usize>()
            .map_err(|e| e.to_string())?
            * 2),
    }
}

/// How many inputs the last stopped run completed.
static COMPLETED_BEFORE_TRIP: AtomicUsize = AtomicUsize::new(0);

#[flow]
fn process_all(items: Vec<String>) -> Result<Vec<usize>, prefecto::concurrency::BatchError<usize>> {
    let batch = BatchTask::new(process, 100)
        .unwrap()
        .with_kill_switch(AnyFailedSwitch::new());
    match batch.map(items) {
        Ok(futures) => Ok(futures.results().expect("every run completed")),
        Err(err) => {
            if let prefecto::concurrency::BatchError::KillSwitch(trip) = &err {
                COMPLETED_BEFORE_TRIP.store(trip.completed_inputs().len(), Ordering::SeqCst);
            }
            Err(err)
        }
    }
}

fn items(bad: impl Fn(usize) -> bool) -> Vec<String> {
    (0..1000)
        .map(|i| {
            if bad(i) {
                format!("bad-{i}")
            } else {
                format!("item-{i}")
            }
        })
        .collect()
}

#[test]
fn a_second_run_executes_only_what_did_not_complete() {
    EXECUTIONS.store(0, Ordering::SeqCst);
    // Batch 4 (inputs 300..400) holds bad inputs: the switch trips there.
    let err = recorded(|| process_all(items(|i| (350..355).contains(&i)))).unwrap_err();
    let err = match err.state() {
        Some(state) => {
            assert!(
                state
                    .message()
                    .unwrap()
                    .contains("Kill switch AnyFailedSwitch tripped")
            );
            state.clone()
        }
        None => panic!("{err}"),
    };
    assert!(err.is_failed());
    let first_executions = EXECUTIONS.load(Ordering::SeqCst);
    assert!(
        (301..=400).contains(&first_executions),
        "{first_executions}"
    );
    let completed = COMPLETED_BEFORE_TRIP.load(Ordering::SeqCst);
    assert!(completed >= 300, "batches 1 to 3 completed: {completed}");

    // The bad inputs are fixed and the flow runs again.
    EXECUTIONS.store(0, Ordering::SeqCst);
    let results = recorded(|| process_all(items(|_| false))).unwrap();
    assert_eq!(results, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    // Exactly the inputs that did not complete ran; the rest came from the cache.
    assert_eq!(EXECUTIONS.load(Ordering::SeqCst), 1000 - completed);

    // A third run executes nothing.
    EXECUTIONS.store(0, Ordering::SeqCst);
    assert_eq!(
        recorded(|| process_all(items(|_| false))).unwrap().len(),
        1000
    );
    assert_eq!(EXECUTIONS.load(Ordering::SeqCst), 0);
}

static EXPIRING: AtomicUsize = AtomicUsize::new(0);

fn same_key(x: &u32) -> u32 {
    *x
}

#[task(cache_key = same_key, persist_result = true, cache_expiration = 0.2)]
fn short_lived(x: u32) -> u32 {
    EXPIRING.fetch_add(1, Ordering::SeqCst);
    x + 1
}

#[task(cache_key = same_key, persist_result = true, refresh_cache = true)]
fn always_fresh(x: u32) -> u32 {
    EXPIRING.fetch_add(100, Ordering::SeqCst);
    x + 2
}

#[flow]
fn cached_states(x: u32) -> Vec<(String, u32)> {
    let a = short_lived.submit(x);
    let b = always_fresh.submit(x);
    let (sa, sb) = (a.wait(), b.wait());
    vec![
        (sa.name().to_string(), a.result().unwrap()),
        (sb.name().to_string(), b.result().unwrap()),
    ]
}

#[test]
fn cached_results_expire_and_can_be_refreshed() {
    let x = 7_000 + std::process::id() % 1000;
    EXPIRING.store(0, Ordering::SeqCst);
    let first = recorded(|| cached_states(x)).unwrap();
    assert_eq!(
        first,
        [
            ("Completed".to_string(), x + 1),
            ("Completed".to_string(), x + 2)
        ]
    );
    let second = recorded(|| cached_states(x)).unwrap();
    // The cached run says so in its state; the refreshing task ran again.
    assert_eq!(
        second,
        [
            ("Cached".to_string(), x + 1),
            ("Completed".to_string(), x + 2)
        ]
    );
    assert_eq!(EXPIRING.load(Ordering::SeqCst), 1 + 200);
    std::thread::sleep(Duration::from_millis(300));
    let third = recorded(|| cached_states(x)).unwrap();
    assert_eq!(
        third[0],
        ("Completed".to_string(), x + 1),
        "the cached result expired"
    );
    assert_eq!(EXPIRING.load(Ordering::SeqCst), 2 + 300);
}
