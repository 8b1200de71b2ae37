//! The reporter through faults, against a real Prefect 3.9.1 server: a
//! fault-injecting proxy of our own on loopback sits between them and
//! loses replies after the server has acted, answers 503s, or never
//! answers. After each fault the server must have every record exactly
//! once and the right final state, checked through its API, and the flow
//! call must be back within its report wait and a few seconds.
//!
//! They run against a server of their own (`scripts/test.sh` says where
//! Prefect is installed), stopped when the binary ends; a plain `cargo
//! test` skips them.

mod fault_proxy;
mod server_api;

use std::process::Output;
use std::time::{Duration, Instant};

use fault_proxy::{Fault, FaultProxy};
use prefecto::prelude::*;
use serde_json::{Value, json};
use server_api::{Api, CHILD_ENV, OwnServer, child_process, flow_run_name, server_available};

const TASK_RUNS: usize = 30;

#[task]
fn increment(x: u64) -> u64 {
    x + 1
}

/// The task runs of a flow here: `task` over 0..30, `size` at a time.
fn thirty_runs_of<T: Task<Args = (u64,), Output = u64>>(task: T, size: usize) -> usize {
    let batch = BatchTask::new(task, size).unwrap();
    batch
        .map_tuple((0..TASK_RUNS as u64,))
        .unwrap()
        .results()
        .unwrap()
        .len()
}

#[flow]
fn thirty() -> usize {
    thirty_runs_of(increment, 10)
}

#[task]
fn slow_increment(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(100));
    x + 1
}

/// Lasts about 2 s, so that an outage can span its end.
#[flow]
fn slow_thirty() -> usize {
    thirty_runs_of(slow_increment, 2)
}

/// Runs the child flow against the proxy; its output and how long it took.
fn run_through(proxy: &FaultProxy, report_wait_seconds: u64) -> (Output, Duration) {
    let mut command = child_process("thirty", &proxy.url);
    command.env("PREFECTO_REPORT_WAIT", report_wait_seconds.to_string());
    let started = Instant::now();
    let output = command.output().unwrap();
    (output, started.elapsed())
}

/// What the server has of the child's flow run: the run, its task runs, its logs.
fn on_the_server(api: &Api, stderr: &str) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let name = flow_run_name(stderr);
    let named = api.post(
        "/flow_runs/filter",
        json!({ "flow_runs": { "name": { "any_": [name] } } }),
    );
    let runs = named.as_array().unwrap().clone();
    let Some(run) = runs.first() else {
        return (runs, Vec::new(), Vec::new());
    };
    let id = run["id"].as_str().unwrap().to_string();
    (runs, api.task_runs(&id), api.logs(&id))
}

/// Everything exactly once: one flow run, Completed; every task run once;
/// no log line twice.
fn assert_exactly_once(api: &Api, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (runs, task_runs, logs) = on_the_server(api, &stderr);
    assert_eq!(runs.len(), 1, "one flow run of that name: {stderr}");
    assert_eq!(runs[0]["state_type"], "COMPLETED", "{}", runs[0]);
    assert_eq!(task_runs.len(), TASK_RUNS, "{stderr}");
    let mut names: Vec<&str> = task_runs
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), TASK_RUNS);
    let mut lines: Vec<String> = logs
        .iter()
        .map(|l| format!("{} {} {}", l["timestamp"], l["task_run_id"], l["message"]))
        .collect();
    let total = lines.len();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), total, "a log line the server has twice");
    assert!(
        !stderr.contains("not delivered"),
        "a false warning: {stderr}"
    );
}

fn scenario(url: &str, faults: &[(&'static str, &str, Fault, usize)]) -> (Api, FaultProxy) {
    let proxy = FaultProxy::start(url);
    for &(method, path, fault, times) in faults {
        proxy.inject(method, path, fault, times);
    }
    (Api::new(url), proxy)
}

/// Every fault in turn, against a Prefect server of this test's own (the
/// faults must not meet the backlog the other server tests leave on the
/// shared one), stopped when the test ends, whatever happens.
#[test]
fn the_reporter_through_faults_delivers_everything_exactly_once() {
    if !server_available("the_reporter_through_faults_delivers_everything_exactly_once") {
        return;
    }
    let server = OwnServer::start("faults");
    let url = server.url();
    a_lost_reply_to_the_flow_run_create_makes_one_flow_run(&url);
    a_lost_reply_to_a_state_change_is_known_delivered(&url);
    lost_replies_to_events_and_logs_duplicate_nothing(&url);
    a_storm_of_503s_and_429s_loses_and_duplicates_nothing(&url);
    a_server_that_never_answers_costs_the_process_its_report_waits_only(&url);
    an_outage_over_the_flows_end_delays_but_loses_nothing(&url);
}

fn an_outage_over_the_flows_end_delays_but_loses_nothing(url: &str) {
    let (api, proxy) = scenario(url, &[]);
    let mut command = child_process("slow_thirty", &proxy.url);
    command
        .env("PREFECTO_REPORT_WAIT", "30")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let child = command.spawn().unwrap();
    // Once the flow run is on the server, the server goes away for 8 s:
    // the flow ends (its final state, its last events and lines) meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the flow run never reached the server"
        );
        let running = api.post(
            "/flow_runs/filter",
            json!({ "flow_runs": { "state": { "type": { "any_": ["RUNNING"] } } } }),
        );
        if running.as_array().is_some_and(|runs| !runs.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    proxy.outage(Duration::from_secs(8));
    let output = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30 + 10), "{elapsed:?}");
    assert_exactly_once(&api, &output);
}

/// The server itself killed mid-run and started again: what it had
/// accepted but not yet recorded dies with its in-memory queue, and the
/// flow ends while it is down. The reporter alone, with no sync, must
/// deliver everything once.
#[test]
fn a_server_killed_and_restarted_mid_run_gets_everything_once() {
    if !server_available("a_server_killed_and_restarted_mid_run_gets_everything_once") {
        return;
    }
    let mut server = OwnServer::start("restarted");
    let api = Api::new(&server.url());
    let mut command = child_process("slow_thirty", &server.url());
    command
        .env("PREFECTO_REPORT_WAIT", "120")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the flow run never reached the server"
        );
        let task_runs = api.post("/task_runs/count", json!({}));
        if task_runs.as_u64().is_some_and(|n| n > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    let output = child.wait_with_output().unwrap();
    assert_exactly_once(&api, &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("WARNING"), "no warning: {stderr}");
}

fn a_lost_reply_to_the_flow_run_create_makes_one_flow_run(url: &str) {
    let (api, proxy) = scenario(url, &[("POST", "/api/flow_runs/", Fault::LoseReply, 1)]);
    let (output, _) = run_through(&proxy, 60);
    assert_eq!(proxy.injected().len(), 1, "{:?}", proxy.injected());
    assert_exactly_once(&api, &output);
}

fn a_lost_reply_to_a_state_change_is_known_delivered(url: &str) {
    let (api, proxy) = scenario(url, &[("POST", "/set_state", Fault::LoseReply, 2)]);
    let (output, _) = run_through(&proxy, 60);
    assert_eq!(proxy.injected().len(), 2, "{:?}", proxy.injected());
    assert_exactly_once(&api, &output);
}

fn lost_replies_to_events_and_logs_duplicate_nothing(url: &str) {
    let (api, proxy) = scenario(
        url,
        &[
            ("POST", "/api/events", Fault::LoseReply, 2),
            ("POST", "/api/logs/", Fault::LoseReply, 2),
        ],
    );
    let (output, _) = run_through(&proxy, 60);
    let injected = proxy.injected();
    assert!(
        injected.iter().any(|f| f.contains("/events"))
            && injected.iter().any(|f| f.contains("/logs/")),
        "{injected:?}"
    );
    assert_exactly_once(&api, &output);
}

fn a_storm_of_503s_and_429s_loses_and_duplicates_nothing(url: &str) {
    let (api, proxy) = scenario(
        url,
        &[
            ("POST", "/api/flow_runs/", Fault::Status(503), 3),
            ("POST", "/set_state", Fault::Status(429), 3),
            ("POST", "/api/events", Fault::Status(503), 3),
            ("POST", "/api/logs/", Fault::Status(503), 3),
        ],
    );
    let (output, _) = run_through(&proxy, 60);
    assert_exactly_once(&api, &output);
}

fn a_server_that_never_answers_costs_the_process_its_report_waits_only(url: &str) {
    let (_api, proxy) = scenario(
        url,
        &[
            ("GET", "/api/admin/version", Fault::Hang, 100),
            ("POST", "/api/flows/", Fault::Hang, 100),
            ("POST", "/api/flow_runs/", Fault::Hang, 100),
        ],
    );
    let (output, elapsed) = run_through(&proxy, 5);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the flow itself completes: {stderr}"
    );
    // The report wait at the flow's start (for the server to have it
    // running) and at the process's exit (for delivery), and a margin.
    assert!(
        elapsed < Duration::from_secs(2 * 5 + 15),
        "{elapsed:?}: {stderr}"
    );
    assert!(
        stderr.contains("prefecto flow-run sync"),
        "the warning names the command that delivers it: {stderr}"
    );
}

/// What a child process does, by role; nothing when run as an ordinary test.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("thirty") => assert_eq!(thirty().unwrap(), TASK_RUNS),
        Ok("slow_thirty") => assert_eq!(slow_thirty().unwrap(), TASK_RUNS),
        _ => {}
    }
}
