//! `prefecto flow-run sync` against a real Prefect 3.9.1 server of each
//! test's own: what an outage left undelivered reaches the server once,
//! and a sync while the server is still recording a run sends nothing twice.
//!
//! `scripts/test.sh` sets `PREFECTO_TEST_PREFECT_BIN` (the Prefect it
//! installed) and `PREFECTO_TEST_PREFECT_API_URL`; flows run in child
//! processes, this test binary run again with `PREFECTO_TEST_CHILD`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prefecto::concurrency::BatchTask;
use prefecto::prelude::*;
use serde_json::{Value, json};

mod server_api;

use server_api::{
    Api, CHILD_ENV, OwnServer, announce_flow_run, by_name, child_process, examples_dir,
    named_flow_run, server_available,
};

/// Runs `prefecto flow-run sync <name> --json` against `url` and gives its report.
fn sync(label: &str, name: &str, url: &str, home: &std::path::Path) -> Value {
    let cli = examples_dir().parent().unwrap().join("prefecto");
    let output = Command::new(&cli)
        .args(["flow-run", "sync", name, "--json"])
        .env("PREFECT_API_URL", url)
        .env("PREFECTO_HOME", home)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{label}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str::<Value>(&text).unwrap()
}

#[task]
async fn steady(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(40)).await;
    x
}

#[flow]
fn through_an_outage() -> usize {
    announce_flow_run();
    let batch = BatchTask::new(steady, 10).unwrap().sliding_window();
    batch.map(0..400u64).unwrap().results().unwrap().len()
}

#[test]
fn a_server_outage_loses_nothing_and_sync_duplicates_nothing() {
    if !server_available("a_server_outage_loses_nothing_and_sync_duplicates_nothing") {
        return;
    }
    let mut server = OwnServer::start("outage");
    let api = Api::new(&server.url());
    let home = server.home.join("prefecto-home");
    let mut command = child_process("through_an_outage", &server.url());
    command
        .env("PREFECTO_HOME", &home)
        .env("PREFECTO_REPORT_WAIT", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = command.spawn().unwrap();
    let name = named_flow_run(&mut process);
    // Some task runs reach the server; then it goes down mid-run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "nothing reached the server");
        if let Some(run) = api.flow_run_named(&name)
            && !api.task_runs(run["id"].as_str().unwrap()).is_empty()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    let output = process.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the outage does not fail the flow: {stderr}"
    );
    assert!(
        stderr.contains(&format!("prefecto flow-run sync {name}")),
        "the warning says how to deliver the rest: {stderr}"
    );

    server.restart();
    let sync = |label: &str| sync(label, &name, &server.url(), &home);
    let first = sync("first sync");
    let flow_run = api.flow_run_named(&name).unwrap();
    assert_eq!(flow_run["state_type"], "COMPLETED", "{flow_run}");
    let id = flow_run["id"].as_str().unwrap();
    let task_runs = api.task_runs(id);
    let runs = by_name(&task_runs);
    assert_eq!(task_runs.len(), 400, "every task run, once");
    assert_eq!(runs.len(), 400);
    assert!(task_runs.iter().all(|r| r["state_type"] == "COMPLETED"));
    let finished_lines = |logs: &[Value]| {
        logs.iter()
            .filter(|l| {
                l["message"] == "Finished in state Completed()" && l["task_run_id"].is_string()
            })
            .count()
    };
    let mut logs = Vec::new();
    loop {
        let page = api.post(
            "/logs/filter",
            json!({ "logs": { "flow_run_id": { "any_": [id] } }, "limit": 200, "offset": logs.len() }),
        );
        let page = page.as_array().unwrap().clone();
        let n = page.len();
        logs.extend(page);
        if n < 200 {
            break;
        }
    }
    assert_eq!(finished_lines(&logs), 400, "each task run's line once");
    assert!(first["task_runs_sent"].as_u64().unwrap() > 0, "{first}");

    // Again: nothing left to send.
    let second = sync("second sync");
    assert_eq!(second["task_runs_sent"], 0, "{second}");
    assert_eq!(second["logs_sent"], 0, "{second}");
    assert_eq!(api.task_runs(id).len(), 400);
}

#[task]
fn quick(x: u64) -> u64 {
    x
}

#[flow]
fn quick_three_hundred() -> usize {
    announce_flow_run();
    quick.map(0..300u64).unwrap().results().unwrap().len()
}

#[test]
fn a_sync_while_the_server_still_records_sends_nothing_twice() {
    if !server_available("a_sync_while_the_server_still_records_sends_nothing_twice") {
        return;
    }
    let server = OwnServer::start("sync-busy");
    let api = Api::new(&server.url());
    let home = server.home.join("prefecto-home");
    // Events sent faster than a SQLite server records them, and a flow call
    // that does not wait: the process ends with the server's queue full of
    // its task runs.
    let mut command = child_process("quick_three_hundred", &server.url());
    command
        .env("PREFECTO_HOME", &home)
        .env("PREFECTO_REPORT_WAIT", "0")
        .env("PREFECTO_EVENTS_PER_SECOND", "2000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = command.spawn().unwrap();
    let name = named_flow_run(&mut process);
    let output = process.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let id = api.flow_run_named(&name).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before_sync = api.task_runs(&id).len();

    let report = sync("sync", &name, &server.url(), &home);
    let task_runs = api.task_runs(&id);
    assert_eq!(task_runs.len(), 300, "every task run");
    assert_eq!(by_name(&task_runs).len(), 300, "each once");
    assert!(
        task_runs.iter().all(|r| r["state_type"] == "COMPLETED"),
        "all completed"
    );
    // What the server had accepted was recorded from its queue, not sent
    // again: a state sent twice under two event ids breaks the server's
    // unique index, and its recorder retries and drops the duplicate.
    let log = std::fs::read_to_string(server.home.join("server.log")).unwrap();
    assert!(
        !log.contains("UNIQUE constraint failed"),
        "no state was recorded twice (sync report {report}, {before_sync} task runs before the sync)"
    );
    assert!(!log.contains("queue is full"), "nothing overflowed");
    let second = sync("second sync", &name, &server.url(), &home);
    assert_eq!(second["task_runs_sent"], 0, "{second}");
    assert_eq!(second["logs_sent"], 0, "{second}");
}

#[test]
fn a_run_left_undelivered_is_delivered_by_the_next_process() {
    if !server_available("a_run_left_undelivered_is_delivered_by_the_next_process") {
        return;
    }
    let mut server = OwnServer::start("left-over");
    let api = Api::new(&server.url());
    let home = server.home.join("prefecto-home");
    let url = server.url();
    let run_child = |label: &str| {
        let mut command = child_process("quick_three_hundred", &url);
        command
            .env("PREFECTO_HOME", &home)
            .env("PREFECTO_REPORT_WAIT", "60")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = command.spawn().unwrap();
        let name = named_flow_run(&mut process);
        let output = process.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{label}: {stderr}");
        (name, stderr)
    };
    // The server is down for the first process: its run is noted as undelivered.
    server.stop();
    let (first, stderr) = run_child("first");
    assert!(
        stderr.contains(&format!("prefecto flow-run sync {first}")),
        "{stderr}"
    );
    // The next process that reports there delivers it, and waits for that.
    server.restart();
    let (_, stderr) = run_child("second");
    assert!(
        stderr.contains("Delivering 1 flow run(s) an earlier process left undelivered"),
        "{stderr}"
    );
    let run = api
        .flow_run_named(&first)
        .expect("delivered by the second process");
    assert_eq!(run["state_type"], "COMPLETED", "{run}");
    let task_runs = api.task_runs(run["id"].as_str().unwrap());
    assert_eq!(task_runs.len(), 300);
    assert_eq!(by_name(&task_runs).len(), 300);
    // Nothing is left: a third process delivers nothing, a sync sends nothing.
    let (_, stderr) = run_child("third");
    assert!(!stderr.contains("left undelivered"), "{stderr}");
    let again = sync("sync", &first, &url, &home);
    assert_eq!(again["task_runs_sent"], 0, "{again}");
    assert_eq!(again["logs_sent"], 0, "{again}");
}

/// What a child process does, by role; nothing when run as an ordinary test.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("through_an_outage") => {
            assert_eq!(through_an_outage().unwrap(), 400);
        }
        Ok("quick_three_hundred") => {
            assert_eq!(quick_three_hundred().unwrap(), 300);
        }
        _ => {}
    }
}
