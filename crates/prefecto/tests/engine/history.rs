//! The SQLite run history: what a flow run leaves behind, read back through the store.

use crate::common;

use std::path::PathBuf;
use std::sync::OnceLock;

use prefecto::StateType;
use prefecto::prelude::*;
use prefecto::store::{self, Store};

/// The history these tests write and read, of their own.
fn history() -> &'static common::HistoryHome {
    static HISTORY: OnceLock<common::HistoryHome> = OnceLock::new();
    HISTORY.get_or_init(|| common::HistoryHome::new("history"))
}

fn home() -> &'static PathBuf {
    &history().home
}

/// Runs flows that record into this history.
fn recorded<R>(flow_call: impl FnOnce() -> R) -> R {
    history().prefecto.scope(flow_call)
}

fn open() -> Store {
    Store::open_existing(home().join(store::DB_FILE)).unwrap()
}

#[task(retries = 1)]
fn parse(s: String) -> Result<i64, String> {
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

#[flow]
fn parse_all(inputs: Vec<String>) -> (String, Vec<State>) {
    let name = prefecto::flow::current_flow_run().unwrap().name;
    let batch = BatchTask::new(parse, 2).unwrap();
    (name, batch.map(inputs).unwrap().wait())
}

#[test]
fn a_flow_run_is_recorded_before_the_flow_returns() {
    home();
    let inputs = ["1", "2", "x", "4"].map(String::from).to_vec();
    let (name, states) = recorded(|| parse_all(inputs)).unwrap();
    assert_eq!(states.len(), 4);

    // No waiting: the flow call returned only once its history was committed.
    let store = open();
    let flow_run = store.flow_run(&name).unwrap();
    assert_eq!(flow_run.flow, "parse-all");
    assert_eq!(flow_run.state_type.as_api_str(), "COMPLETED");
    assert_eq!(flow_run.pid, std::process::id());
    assert!(flow_run.start_time.is_some() && flow_run.end_time.is_some());

    let task_runs = store.task_runs(flow_run.id, None).unwrap();
    let names: Vec<&str> = task_runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["parse-0", "parse-1", "parse-2", "parse-3"]);
    let failed = &task_runs[2];
    assert_eq!(failed.state_type.as_api_str(), "FAILED");
    assert_eq!(
        failed.state_message.as_deref(),
        Some("\"x\": invalid digit found in string")
    );
    assert_eq!(failed.run_count, 2, "one run and one retry");
    assert!(task_runs.iter().all(|r| r.duration().is_some()));

    let names = |history: Vec<prefecto::store::StateRecord>| -> Vec<String> {
        history.into_iter().map(|s| s.name).collect()
    };
    assert_eq!(
        names(
            store
                .state_history(flow_run.id, Some(("parse", 2)))
                .unwrap()
        ),
        ["Pending", "Running", "AwaitingRetry", "Retrying", "Failed"]
    );
    assert_eq!(
        names(store.state_history(flow_run.id, None).unwrap()),
        ["Pending", "Running", "Completed"]
    );
    let history = store
        .state_history(flow_run.id, Some(("parse", 0)))
        .unwrap();
    assert!(history.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

    let only_failed = store.task_runs(flow_run.id, Some("Failed")).unwrap();
    assert_eq!(only_failed.len(), 1);

    let logs = store.logs(flow_run.id).unwrap();
    let messages: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    assert!(
        messages.contains(&"Mapping 'parse' batch 2 of 2."),
        "{messages:?}"
    );
    assert!(messages.contains(&"Created task run 'parse-0' for task 'parse'"));
    assert!(
        logs.iter()
            .any(|l| l.task_run.as_deref() == Some("parse-2") && l.message.contains("Retry 1/1"))
    );
    assert_eq!(messages.last(), Some(&"Finished in state Completed()"));
}

#[flow]
fn failing() -> Result<u8, String> {
    Err("upstream is down".into())
}

#[test]
fn failed_flow_runs_keep_their_reason_and_can_be_filtered() {
    home();
    recorded(failing).unwrap_err();
    let store = open();
    let failed = store
        .flow_runs(100, Some("failed"), Some("failing"))
        .unwrap();
    assert!(!failed.is_empty());
    assert_eq!(
        failed[0].state_message.as_deref(),
        Some("Flow run encountered an error: upstream is down")
    );
    assert!(
        store
            .flow_runs(100, Some("COMPLETED"), Some("failing"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn unknown_runs_and_missing_databases_say_so() {
    home();
    let err = open().flow_run("no-such-run").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no flow run named or with id 'no-such-run'"
    );
    let missing = home().join("elsewhere").join(store::DB_FILE);
    let err = Store::open_existing(&missing).err().unwrap();
    assert!(err.to_string().starts_with("no run history at "), "{err}");
}

/// Until the history shows a task run of the flow run `name` running.
async fn until_one_shows_running(name: &str) -> uuid::Uuid {
    let began = std::time::Instant::now();
    loop {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(30),
            "no task run of {name} shown running within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let store = open();
        let Ok(flow_run) = store.flow_run(name) else {
            continue;
        };
        if !store
            .task_runs(flow_run.id, Some("RUNNING"))
            .unwrap()
            .is_empty()
        {
            return flow_run.id;
        }
    }
}

#[task]
async fn linger(x: u64) -> u64 {
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    x
}

#[flow]
async fn lingering() -> uuid::Uuid {
    let name = prefecto::flow::current_flow_run().unwrap().name;
    let long = linger.submit(7);
    // While it runs, the history shows it running (runs still going after a
    // second are written as they stand).
    let id = until_one_shows_running(&name).await;
    assert_eq!(long.await.unwrap(), 7);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_run_shows_running_then_finishes_once() {
    home();
    let id = history().prefecto.scope_async(lingering()).await.unwrap();
    let store = open();
    let task_runs = store.task_runs(id, None).unwrap();
    assert_eq!(task_runs.len(), 1, "{task_runs:?}");
    assert_eq!(task_runs[0].state_name, "Completed");
    assert_eq!(task_runs[0].run_count, 1);
    let history = store.state_history(id, Some(("linger", 0))).unwrap();
    let names: Vec<&str> = history.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Pending", "Running", "Completed"]);
    let logs = store.logs(id).unwrap();
    let finished: Vec<_> = logs
        .iter()
        .filter(|l| l.message == "Finished in state Completed()")
        .collect();
    assert_eq!(
        finished.len(),
        2,
        "the task run's and the flow run's: {logs:?}"
    );
}

#[flow]
async fn lingering_in_a_map() -> uuid::Uuid {
    let name = prefecto::flow::current_flow_run().unwrap().name;
    // A map's async body is awaited in its lane: the history hears its
    // Running only once the body waits (`Recorder::wants_running`), and
    // must still show it running while it lingers.
    let batch = BatchTask::new(linger, 2).unwrap();
    let (results, id) = tokio::join!(
        async {
            batch
                .map_async(vec![7, 8])
                .await
                .unwrap()
                .results_async()
                .await
        },
        until_one_shows_running(&name),
    );
    assert_eq!(results.unwrap(), [7, 8]);
    id
}

/// The flow run `id` has `count` runs of `task`, each recorded once, with
/// the history of a run written while it was running.
fn each_shown_running_then_completed_once(id: uuid::Uuid, task: &str, count: usize) {
    let store = open();
    let task_runs = store.task_runs(id, None).unwrap();
    assert_eq!(task_runs.len(), count, "{task_runs:?}");
    for (index, task_run) in task_runs.iter().enumerate() {
        assert_eq!(task_run.state_name, "Completed");
        let history = store.state_history(id, Some((task, index as u64))).unwrap();
        let names: Vec<&str> = history.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Pending", "Running", "Completed"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_of_a_map_shows_running_then_finishes_once() {
    home();
    let run = history().prefecto.scope_async(lingering_in_a_map());
    let id = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the map ends within 60 s")
        .unwrap();
    each_shown_running_then_completed_once(id, "linger", 2);
}

#[task]
fn linger_blocking(x: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    x
}

#[flow]
fn lingering_on_the_pool() -> uuid::Uuid {
    let name = prefecto::flow::current_flow_run().unwrap().name;
    // A map's sync body runs on a pool thread that the engine watches: the
    // history hears its Running once the body has run a moment, and must
    // show it running while it lingers.
    let watcher = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(until_one_shows_running(&name))
    });
    let batch = BatchTask::new(linger_blocking, 2).unwrap();
    assert_eq!(batch.map(vec![7, 8]).unwrap().results().unwrap(), [7, 8]);
    watcher.join().unwrap()
}

#[test]
fn a_long_sync_run_of_a_map_shows_running_then_finishes_once() {
    home();
    let id = recorded(lingering_on_the_pool).unwrap();
    each_shown_running_then_completed_once(id, "linger_blocking", 2);
}

#[task]
fn odd_fails(x: u64) -> Result<u64, String> {
    if x % 1000 == 999 {
        Err(format!("{x} fails"))
    } else {
        Ok(x)
    }
}

#[flow]
fn streamed(count: u64) -> (uuid::Uuid, u64) {
    let batch = BatchTask::new(odd_fails, 50).unwrap().sliding_window();
    let handed = batch.stream_unordered(0..count).unwrap().count() as u64;
    (common::flow_run_id(), handed)
}

/// An async flow call with the history on, failing past a minute.
async fn recorded_within_a_minute<F: std::future::Future>(flow_call: F) -> F::Output {
    let run = history().prefecto.scope_async(flow_call);
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the flow call ends within 60 s")
}

/// The 20,000 runs of `odd_fails` (or its async twin) in `flow_run` are
/// each in the history, in their end states.
fn each_of_20_000_recorded(flow_run: uuid::Uuid) {
    let counts = open().task_run_counts(flow_run).unwrap();
    assert_eq!(counts.get(&StateType::Completed), Some(&19_980));
    assert_eq!(counts.get(&StateType::Failed), Some(&20));
    assert_eq!(counts.len(), 2, "{counts:?}");
}

#[test]
fn a_streamed_map_leaves_every_outcome_in_the_history() {
    home();
    let (flow_run, handed) = recorded(|| streamed(20_000)).unwrap();
    assert_eq!(handed, 20_000);
    each_of_20_000_recorded(flow_run);
}

#[task]
async fn odd_fails_async(x: u64) -> Result<u64, String> {
    match x % 1000 {
        999 => Err(format!("{x} fails")),
        _ => Ok(x),
    }
}

#[flow]
async fn mapped_async(count: u64) -> (uuid::Uuid, usize) {
    // Quick async bodies: their lanes pack their ends themselves
    // (`Recorder::end_batch`), the failures' go one by one.
    let batch = BatchTask::new(odd_fails_async, 50)
        .unwrap()
        .sliding_window();
    let futures = batch.map_async(0..count).await.unwrap();
    let states = futures.wait_async().await;
    (common::flow_run_id(), states.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_map_of_quick_runs_leaves_every_outcome_in_the_history_once() {
    home();
    let (flow_run, ended) = recorded_within_a_minute(mapped_async(20_000))
        .await
        .unwrap();
    assert_eq!(ended, 20_000);
    each_of_20_000_recorded(flow_run);
    let store = open();
    assert_eq!(store.task_runs(flow_run, None).unwrap().len(), 20_000);
    for index in [0, 4_321, 19_998] {
        let history = store
            .state_history(flow_run, Some(("odd_fails_async", index)))
            .unwrap();
        let names: Vec<&str> = history.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Pending", "Running", "Completed"], "{index}");
    }
}

#[flow]
async fn streamed_async(count: u64) -> (uuid::Uuid, u64) {
    // In input order: lanes wait for their turn to hand over, and hand
    // their batches over before they wait.
    let batch = BatchTask::new(odd_fails_async, 50)
        .unwrap()
        .sliding_window();
    let mut stream = batch.stream(0..count).unwrap();
    let mut handed = 0;
    while let Some(run) = stream.next_async().await {
        assert_eq!(run.index as u64, handed);
        handed += 1;
    }
    (common::flow_run_id(), handed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_stream_in_input_order_leaves_every_outcome_in_the_history() {
    home();
    let (flow_run, handed) = recorded_within_a_minute(streamed_async(20_000))
        .await
        .unwrap();
    assert_eq!(handed, 20_000);
    each_of_20_000_recorded(flow_run);
}
