use super::*;
use std::time::Duration;

/// The name of the runs of these tests, and of the future's.
pub(crate) fn name() -> TaskRunName {
    TaskRunName {
        task: "add",
        index: 3,
    }
}

pub(crate) static ADD: crate::task::TaskSpec = crate::task::TaskSpec::new("add", &["a", "b"]);

#[test]
fn every_waiter_wakes_when_the_run_ends_and_a_late_one_does_not_wait() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let shared = RunShared::<u8>::new(name(), &ADD, State::pending(), None);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let shared = shared.clone();
            runtime.spawn(async move { shared.wait().await })
        })
        .collect();
    // A waiter polled again before the end registers once.
    let again = shared.clone();
    let twice = runtime.spawn(async move {
        let wait = again.wait();
        tokio::pin!(wait);
        let polled = tokio::time::timeout(Duration::from_millis(20), &mut wait).await;
        assert!(polled.is_err(), "the run has not ended yet");
        wait.await
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!shared.is_terminal());
    shared.finish(State::completed(), Some(1));
    runtime.block_on(async {
        for waiter in waiters.into_iter().chain([twice]) {
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("woken")
                .unwrap();
        }
        shared.wait().await;
    });
    assert_eq!(shared.take_outcome().unwrap(), 1);
}

#[test]
fn a_run_of_a_word_sized_value_fits_glibcs_fast_bins() {
    // The `Arc`'s two counts and the run, within the 120 bytes glibc
    // serves from its fast bins (see the fields' comment).
    assert!(std::mem::size_of::<RunShared<u64>>() + 16 <= 120);
}

fn ended(state: State, value: Option<u64>) -> EndedRun<u64> {
    let mut record = RunShared::new(name(), &ADD, State::pending(), None);
    record.finish(state, value);
    Arc::get_mut(&mut record).unwrap().take_ended()
}

#[test]
fn an_ended_run_taken_from_its_record_and_made_into_one_again_reads_as_the_run_did() {
    let ended = ended(State::completed(), Some(8));
    assert_eq!(ended.name(), name());
    assert!(ended.state.is_completed());
    let record = RunShared::of_ended(ended);
    assert!(record.is_terminal());
    assert_eq!(record.name(), name());
    assert_eq!(record.clone_value(|v| *v), Ok(8));
    assert_eq!(record.take_outcome().unwrap(), 8);
}

#[test]
fn a_record_held_by_nobody_else_is_renewed_in_place() {
    let mut record = RunShared::<u64>::new(name(), &ADD, State::completed(), None);
    record.finish(State::completed(), Some(1));
    let before = Arc::as_ptr(&record);
    let pending = State::pending();
    RunShared::renew(&mut record, name(), &ADD, pending.clone(), None);
    assert_eq!(Arc::as_ptr(&record), before, "no allocation");
    assert!(record.state().is_pending() && !record.is_terminal());
    assert_eq!(record.times().unwrap().created(), pending.timestamp());
    assert_eq!(record.times().unwrap().run_count(), 0);
    assert!(
        record.take_outcome().is_err(),
        "the last run's value is gone"
    );
    // Held elsewhere too: a new record, the other left as it was.
    let other = record.clone();
    RunShared::renew(&mut record, name(), &ADD, State::completed(), None);
    assert!(!Arc::ptr_eq(&record, &other));
    assert!(other.state().is_pending() && record.is_terminal());
}

#[test]
fn a_record_made_ahead_is_named_only_while_nobody_else_holds_it() {
    let mut record = RunShared::<u64>::new(name(), &ADD, State::pending(), None);
    assert!(RunShared::rename(&mut record, 41));
    assert_eq!(record.name().index, 41);
    let other = record.clone();
    assert!(!RunShared::rename(&mut record, 42), "held elsewhere");
    assert_eq!((record.name().index, other.name().index), (41, 41));
}

#[test]
fn a_run_counts_its_times() {
    // Never Pending: no times.
    let never = RunShared::<u8>::new(name(), &ADD, State::cancelled("x"), None);
    assert_eq!(never.times_with(&State::cancelled("x")), None);
    // Made Pending: created then, whenever its Pending is counted.
    let pending = State::pending();
    let shared = RunShared::<u8>::new(name(), &ADD, pending.clone(), None);
    let created = shared.times_with(&State::pending()).unwrap();
    assert_eq!((created.started(), created.run_count()), (None, 0));
    assert_eq!(created.created(), pending.timestamp());
    let first = State::running();
    let running = shared.times_with(&first).unwrap();
    assert_eq!(running.created(), created.created());
    assert_eq!(running.started(), Some(first.timestamp()));
    let retried = shared.times_with(&State::retrying()).unwrap();
    assert_eq!(
        retried.started(),
        Some(first.timestamp()),
        "the first start stays"
    );
    assert_eq!(retried.run_count(), 2);
    assert_eq!(
        shared.times_with(&State::completed()).unwrap().run_count(),
        2
    );
}
