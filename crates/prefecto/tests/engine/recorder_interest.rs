//! What a recorder that declines some transitions hears
//! ([`Recorder::wants_pending`], [`Recorder::wants_running`]): fewer calls,
//! and nothing it needs lost, since the times of what it hears carry the
//! rest.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prefecto::TaskRunName;
use prefecto::prelude::*;
use prefecto::recorder::{Recorder, TransitionEvent};

/// A transition as a recorder heard it: the state's name, its time, and
/// the run's creation and start times it carried (ns since the epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Heard {
    state: &'static str,
    at: i64,
    created: Option<i64>,
    started: Option<i64>,
}

struct Listener {
    wants_pending: bool,
    wants_running: bool,
    heard: Mutex<Vec<(TaskRunName, Heard)>>,
}

impl Listener {
    fn new(wants_pending: bool, wants_running: bool) -> Arc<Self> {
        Arc::new(Listener {
            wants_pending,
            wants_running,
            heard: Mutex::new(Vec::new()),
        })
    }

    /// What it heard of one run, in order.
    fn of(&self, run: TaskRunName) -> Vec<Heard> {
        let heard = self.heard.lock().unwrap();
        heard
            .iter()
            .filter(|(name, _)| *name == run)
            .map(|&(_, heard)| heard)
            .collect()
    }
}

impl Recorder for Listener {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        let Some(run) = event.task_run else { return };
        let state = match event.state.name() {
            "Pending" => "Pending",
            "Running" => "Running",
            "Completed" => "Completed",
            _ => "other",
        };
        let heard = Heard {
            state,
            at: nanos(event.state.timestamp()),
            created: event.times.map(|t| nanos(t.created())),
            started: event.times.and_then(|t| t.started()).map(nanos),
        };
        self.heard.lock().unwrap().push((run, heard));
    }

    fn wants_pending(&self) -> bool {
        self.wants_pending
    }

    fn wants_running(&self) -> bool {
        self.wants_running
    }
}

fn nanos(time: chrono::DateTime<chrono::Utc>) -> i64 {
    time.timestamp_nanos_opt().unwrap()
}

fn states(heard: &[Heard]) -> Vec<&'static str> {
    heard.iter().map(|h| h.state).collect()
}

fn recorded_by<R>(listeners: &[&Arc<Listener>], flow_call: impl FnOnce() -> R) -> R {
    let mut builder = Prefecto::builder().engine_only();
    for listener in listeners {
        builder = builder.recorder((*listener).clone());
    }
    builder.build().unwrap().scope(flow_call)
}

#[task]
fn ratio(a: i64, b: i64) -> i64 {
    a / b
}

#[flow]
fn submissions() {
    let first = ratio.submit(8, 2);
    let _ = ratio.map(vec![9, 12], vec![3, 4]).unwrap().results();
    // Named upstream: its Pending is heard by every recorder.
    let _ = ratio.submit_after(&[&first], 1, 1).wait();
}

#[test]
fn a_recorder_that_wants_no_pending_hears_each_runs_creation_with_its_later_states() {
    common::quiet();
    let (all, later) = (Listener::new(true, true), Listener::new(false, true));
    recorded_by(&[&all, &later], || submissions().unwrap());
    for index in 0..4 {
        let run = TaskRunName {
            task: "ratio",
            index,
        };
        let (every, rest) = (all.of(run), later.of(run));
        assert_eq!(
            states(&every),
            ["Pending", "Running", "Completed"],
            "{index}"
        );
        if index == 3 {
            assert_eq!(rest, every, "a Pending naming upstream runs goes to all");
            continue;
        }
        assert_eq!(states(&rest), ["Running", "Completed"], "{index}");
        // The Pending it did not hear is in the times of what it heard.
        assert!(rest.iter().all(|h| h.created == Some(every[0].at)));
        assert_eq!(&rest[..], &every[1..]);
    }
}

#[task]
async fn pause(millis: u64) -> u64 {
    if millis > 0 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
    }
    millis
}

/// The recorder that wants no `Running` at once, for `nap` to ask.
static LATER: std::sync::OnceLock<Arc<Listener>> = std::sync::OnceLock::new();

/// A sync body: index 0 ends at once; index 1 runs until the recorder
/// that wants no `Running` at once has heard its `Running` (or 30 s went
/// by), and says whether it did.
#[task]
fn nap(index: u64) -> bool {
    if index == 0 {
        return true;
    }
    let run = TaskRunName { task: "nap", index };
    let waited = std::time::Instant::now();
    while waited.elapsed() < Duration::from_secs(30) {
        let heard = LATER.get().map(|later| states(&later.of(run)));
        if heard.is_some_and(|states| states.contains(&"Running")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[flow]
async fn starts() {
    // A map's async bodies: one ends at once, one waits.
    let batch = BatchTask::new(pause, 2).unwrap();
    let mapped = batch.map_async(vec![0, 30]).await.unwrap();
    assert_eq!(mapped.results_async().await.unwrap(), [0, 30]);
    // Not run by a map's lane.
    assert_eq!(pause.submit(0).await.unwrap(), 0);
}

#[flow]
fn sync_starts() {
    // A map's sync bodies, run on the flow's pool: one ends at once, one is
    // heard running while it runs.
    let batch = BatchTask::new(nap, 2).unwrap();
    assert_eq!(
        batch.map(vec![0, 1]).unwrap().results().unwrap(),
        [true, true]
    );
}

#[test]
fn a_recorder_that_wants_no_running_hears_it_only_for_runs_seen_running() {
    common::quiet();
    let (all, later) = (Listener::new(true, true), Listener::new(true, false));
    LATER.set(later.clone()).ok().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    recorded_by(&[&all, &later], || {
        runtime.block_on(async {
            let run = starts();
            tokio::time::timeout(Duration::from_secs(60), run).await
        })
    })
    .expect("the flow ends within 60 s")
    .unwrap();
    recorded_by(&[&all, &later], || sync_starts().unwrap());
    let paused = |index| TaskRunName {
        task: "pause",
        index,
    };
    let napped = |index| TaskRunName { task: "nap", index };
    for run in [paused(0), paused(1), paused(2), napped(0), napped(1)] {
        let every = all.of(run);
        assert_eq!(states(&every), ["Pending", "Running", "Completed"], "{run}");
        let rest = later.of(run);
        if run == paused(0) || run == napped(0) {
            // Its body ended at once: its Running is in its end's times.
            assert_eq!(states(&rest), ["Pending", "Completed"], "{run}");
            assert_eq!(rest[1].started, Some(every[1].at), "{run}");
            assert_eq!(rest[..], [every[0], every[2]], "{run}");
        } else {
            // Its body waited, or no lane ran it: it heard the Running,
            // with its own time, before the end.
            assert_eq!(rest, every, "{run}");
        }
    }
}

#[task]
async fn echo(x: u64) -> u64 {
    x
}

#[flow]
async fn quick_map(inputs: u64) -> Vec<u64> {
    let batch = BatchTask::new(echo, 2).unwrap().sliding_window();
    let futures = batch.map_async(0..inputs).await.unwrap();
    futures.results_async().await.unwrap()
}

/// Runs `quick_map` over 50 inputs for the listener; what it heard of each run.
fn heard_of_quick_map(listener: &Arc<Listener>) -> Vec<Vec<Heard>> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mapped = recorded_by(&[listener], || {
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), quick_map(50)).await })
    });
    assert_eq!(
        mapped.expect("the flow ends within 60 s").unwrap().len(),
        50
    );
    (0..50)
        .map(|index| {
            listener.of(TaskRunName {
                task: "echo",
                index,
            })
        })
        .collect()
}

#[test]
fn a_run_its_lane_starts_as_it_makes_it_has_one_time_for_both() {
    common::quiet();
    // Nobody hears the submissions: a lane that goes straight on from one
    // run to the next input starts that run at its creation's time.
    let quiet = Listener::new(false, false);
    let runs = heard_of_quick_map(&quiet);
    for heard in &runs {
        assert_eq!(states(heard), ["Completed"]);
        let (created, started) = (heard[0].created.unwrap(), heard[0].started.unwrap());
        assert!(created <= started && started <= heard[0].at, "{heard:?}");
    }
    // All but the lanes' first runs, taken together before either started.
    let one_time = runs
        .iter()
        .filter(|heard| heard[0].created == heard[0].started)
        .count();
    assert!(one_time >= 48, "{one_time} of 50 started as they were made");
    // A recorder hears the submissions: the start is read from the clock,
    // after the Pending it heard.
    let told = Listener::new(true, false);
    for heard in heard_of_quick_map(&told) {
        assert_eq!(states(&heard), ["Pending", "Completed"]);
        let started = heard[1].started.unwrap();
        assert!(
            heard[0].at <= started && started <= heard[1].at,
            "{heard:?}"
        );
    }
}

#[test]
fn a_lane_going_straight_on_makes_its_next_run_as_its_last_ended() {
    common::quiet();
    // Each lane's runs after its first are made with the time its previous
    // run's end was stamped with: one reading of the clock for both.
    for listener in [Listener::new(false, false), Listener::new(true, false)] {
        let runs = heard_of_quick_map(&listener);
        let ends: std::collections::HashSet<i64> =
            runs.iter().map(|heard| heard.last().unwrap().at).collect();
        let mut made_as_one_ended = 0;
        for heard in &runs {
            let end = heard.last().unwrap();
            let created = end.created.unwrap();
            let started = end.started.unwrap();
            assert!(created <= started && started <= end.at, "{heard:?}");
            if let Some(pending) = heard.iter().find(|h| h.state == "Pending") {
                assert_eq!(pending.at, created, "{heard:?}");
            }
            made_as_one_ended += usize::from(ends.contains(&created));
        }
        // All but the lanes' first runs (two lanes).
        assert!(
            made_as_one_ended >= 48,
            "{made_as_one_ended} of 50 made as a run ended"
        );
    }
}

#[task]
fn echo_sync(x: u64) -> u64 {
    x
}

#[test]
fn runs_a_pool_lane_takes_together_are_made_at_one_time() {
    common::quiet();
    let listener = Listener::new(true, false);
    let mapped = recorded_by(&[&listener], || {
        let batch = BatchTask::new(echo_sync, 64).unwrap().sliding_window();
        batch.map(0..2000u64).unwrap().results()
    });
    assert_eq!(mapped.unwrap().len(), 2000);
    let mut made_at = std::collections::HashSet::new();
    for index in 0..2000 {
        let heard = listener.of(TaskRunName {
            task: "echo_sync",
            index,
        });
        assert_eq!(states(&heard)[0], "Pending", "{index}: {heard:?}");
        let end = heard.last().unwrap();
        assert_eq!(heard[0].at, end.created.unwrap(), "{index}: {heard:?}");
        assert!(end.created <= end.started && end.started <= Some(end.at));
        made_at.insert(heard[0].at);
    }
    // A lane takes several inputs at a time while its runs are quick (up to
    // its share of the size): far fewer times than runs.
    assert!(
        made_at.len() < 1000,
        "{} times for 2000 runs",
        made_at.len()
    );
}

/// A recorder that takes quick runs' ends in batches, and says how each
/// end came: through a batch, or one by one.
#[derive(Default)]
struct Batched {
    one_by_one: Mutex<Vec<TaskRunName>>,
    batched: Arc<Mutex<Vec<TaskRunName>>>,
    /// How many ends batches held when they were handed over, and how many
    /// batches were made.
    handed_over: Arc<Mutex<usize>>,
    batches: Mutex<usize>,
}

struct Ends {
    held: Vec<TaskRunName>,
    batched: Arc<Mutex<Vec<TaskRunName>>>,
    handed_over: Arc<Mutex<usize>>,
}

impl prefecto::recorder::EndBatch for Ends {
    fn ended(
        &mut self,
        run: TaskRunName,
        state: &prefecto::State,
        times: prefecto::recorder::RunTimes,
    ) {
        assert!(state.is_completed(), "{run}: {state:?}");
        assert!(times.started().is_some(), "{run} started");
        self.held.push(run);
    }

    fn hand_over(&mut self) {
        *self.handed_over.lock().unwrap() += self.held.len();
        self.batched.lock().unwrap().append(&mut self.held);
    }
}

impl Recorder for Batched {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        if let Some(run) = event.task_run.filter(|_| event.state.is_terminal()) {
            self.one_by_one.lock().unwrap().push(run);
        }
    }

    fn end_batch(
        &self,
        _flow_run: prefecto::recorder::FlowRunRef<'_>,
    ) -> Option<Box<dyn prefecto::recorder::EndBatch>> {
        *self.batches.lock().unwrap() += 1;
        Some(Box::new(Ends {
            held: Vec::new(),
            batched: self.batched.clone(),
            handed_over: self.handed_over.clone(),
        }))
    }

    fn wants_pending(&self) -> bool {
        false
    }

    fn wants_running(&self) -> bool {
        false
    }
}

fn is_slow(input: u64) -> bool {
    input < 40 && input % 7 == 3
}

#[flow]
async fn quick_and_slow() -> Vec<u64> {
    // Every seventh body of the first 40 waits: its end comes one by one,
    // after its lane handed over what it held. The last 20 are quick: the
    // lanes end holding ends.
    let batch = BatchTask::new(pause, 3).unwrap().sliding_window();
    let millis = (0..60u64).map(|i| if is_slow(i) { 20 } else { 0 });
    let futures = batch.map_async(millis.collect::<Vec<_>>()).await.unwrap();
    futures.results_async().await.unwrap()
}

#[test]
fn a_recorder_that_takes_batches_hears_each_end_once_before_the_flow_returns() {
    common::quiet();
    let batched = Arc::new(Batched::default());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let prefecto = Prefecto::builder()
        .engine_only()
        .recorder(batched.clone())
        .build()
        .unwrap();
    let results = prefecto.scope(|| {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), quick_and_slow()).await
        })
    });
    assert_eq!(
        results.expect("the flow ends within 60 s").unwrap().len(),
        60
    );
    let mut one_by_one = batched.one_by_one.lock().unwrap().clone();
    let mut in_batches = batched.batched.lock().unwrap().clone();
    // The waiting bodies came one by one, the quick ones in batches.
    one_by_one.sort_by_key(|run| run.index);
    let slow: Vec<u64> = (0..60).filter(|&i| is_slow(i)).collect();
    assert_eq!(
        one_by_one.iter().map(|run| run.index).collect::<Vec<_>>(),
        slow
    );
    assert_eq!(in_batches.len(), 60 - slow.len());
    // Each run once, all of them, and every batch handed over in full.
    in_batches.append(&mut one_by_one);
    in_batches.sort_by_key(|run| run.index);
    in_batches.dedup();
    assert_eq!(in_batches.len(), 60);
    assert_eq!(*batched.handed_over.lock().unwrap(), 60 - slow.len());
    assert!(*batched.batches.lock().unwrap() >= 1);
}
