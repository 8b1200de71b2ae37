//! A task run that runs for a while shows on the Prefect server as Running
//! while it runs, and its state history there holds Running and Completed;
//! a short one is delivered as one event, its final state.
//!
//! Needs the Prefect server `scripts/test.sh` starts
//! (`PREFECTO_TEST_PREFECT_API_URL`); the flow runs in a child process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use prefecto::prelude::*;
use reqwest::Method;
use serde_json::Value;

mod server_api;

use server_api::{
    Api, CHILD_ENV, announce_flow_run, api_url, by_name, child_process, named_flow_run,
    server_available,
};

#[task]
fn nap(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[flow]
fn one_long_one_short() -> u64 {
    announce_flow_run();
    let long = nap.submit(6_000);
    let short = nap.submit(1);
    long.result().unwrap() + short.result().unwrap()
}

#[test]
fn a_long_task_run_shows_running_on_the_server_while_it_runs() {
    if !server_available("a_long_task_run_shows_running_on_the_server_while_it_runs") {
        return;
    }
    let api = Api::open();
    let mut command = child_process("one_long_one_short", &api_url());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let name = named_flow_run(&mut child);
    // While the long one naps, the server has it Running.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen_running = loop {
        assert!(Instant::now() < deadline, "never seen running");
        let runs = api
            .flow_run_named(&name)
            .map(|run| api.task_runs(run["id"].as_str().unwrap()))
            .unwrap_or_default();
        let long = runs.iter().find(|r| r["name"] == "nap-0");
        if let Some(long) = long {
            break long["state_type"].clone();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(seen_running, "RUNNING");
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let flow_run = api.flow_run_named(&name).unwrap();
    let runs = by_name(&api.task_runs(flow_run["id"].as_str().unwrap()));
    let states = |run: &Value| -> Vec<String> {
        let history = api.call(
            Method::GET,
            &format!(
                "/task_run_states/?task_run_id={}",
                run["id"].as_str().unwrap()
            ),
            None,
        );
        let mut states: Vec<(String, String)> = history
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["timestamp"].as_str().unwrap().to_string(),
                    s["type"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        states.sort();
        states.into_iter().map(|(_, kind)| kind).collect()
    };
    assert_eq!(states(&runs["nap-0"]), ["RUNNING", "COMPLETED"]);
    assert_eq!(states(&runs["nap-1"]), ["COMPLETED"]);
}

/// What a child process does, by role; nothing when run as an ordinary test.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("one_long_one_short") {
        assert_eq!(one_long_one_short().unwrap(), 6_001);
    }
}
