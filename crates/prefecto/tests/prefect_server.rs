//! Reporting to a real Prefect 3.9.1 server, checked through the server's own API.
//!
//! `scripts/test.sh` installs Prefect, starts the servers and sets
//! `PREFECTO_TEST_PREFECT_API_URL`. Flows run in child processes (the
//! examples, or this test binary run again with `PREFECTO_TEST_CHILD`), since
//! the Prefect configuration is read once per process, as the SDK reads it.

use std::process::{Command, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use prefecto::concurrency::BatchTask;
use prefecto::prefect_api::{ApiConfig, Auth, Client, Sent};
use prefecto::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

mod server_api;

use server_api::{
    Api, CHILD_ENV, announce_flow_run, api_url, by_name, child_process, examples_dir,
    flow_run_name, named_flow_run, server_available,
};

/// A command for an example binary, reporting to `url`.
fn example(name: &str, url: &str) -> Command {
    let path = examples_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (scripts/test.sh does, and so does a plain cargo test)",
        path.display()
    );
    let mut command = Command::new(path);
    command
        .env("PREFECT_API_URL", url)
        .env("PREFECTO_PROGRESS", "off");
    command
}

/// The tests share one server and run at once. The one that floods it
/// (5,000 task runs) has it alone: under CI's load a flooded server can keep
/// another test's flow call past its 60 s start wait, and that flow then runs
/// on without the "View at" line those tests check.
static SERVER: RwLock<()> = RwLock::new(());

fn sharing_the_server() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(PoisonError::into_inner)
}

fn alone_on_the_server() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(PoisonError::into_inner)
}

fn run(mut command: Command) -> Output {
    command.output().unwrap()
}

#[test]
fn the_batch_add_example_shows_on_the_server() {
    if !server_available("the_batch_add_example_shows_on_the_server") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let output = run(example("batch_add", &api_url()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "[3, 5, 7, 9]");
    assert!(!stderr.contains("WARNING"), "{stderr}");

    let name = flow_run_name(&stderr);
    let flow_run = api
        .flow_run_named(&name)
        .expect("the flow run is on the server");
    assert_eq!(flow_run["state_type"], "COMPLETED", "{flow_run}");
    let id = flow_run["id"].as_str().unwrap();

    // As Python prints it: the run's page, under the server's id.
    assert!(
        stderr.contains(&format!(
            "View at {}/runs/flow-run/{id}",
            api_url().trim_end_matches("/api")
        )),
        "{stderr}"
    );
    let task_runs = api.task_runs(id);
    let runs = by_name(&task_runs);
    assert_eq!(
        runs.keys().collect::<Vec<_>>(),
        ["add-0", "add-1", "add-2", "add-3"]
    );
    // The server had the flow run running before any of its task runs
    // started (Python's engine waits for that too): the UI's graph is in order.
    let time = |run: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap()).unwrap()
    };
    for run in runs.values() {
        assert!(
            time(run, "start_time") >= time(&flow_run, "start_time"),
            "{run} started before {flow_run}"
        );
    }
    for run in runs.values() {
        assert_eq!(run["state_type"], "COMPLETED", "{run}");
        assert_eq!(run["task_key"], "add");
        assert_eq!(run["run_count"], 1);
        assert!(
            run["start_time"].is_string() && run["end_time"].is_string(),
            "{run}"
        );
        assert!(run["task_inputs"]["a"].is_array() && run["task_inputs"]["b"].is_array());
    }

    let graph = api.call(Method::GET, &format!("/flow_runs/{id}/graph-v2"), None);
    let mut labels: Vec<&str> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node[1]["label"].as_str().unwrap())
        .collect();
    labels.sort();
    assert_eq!(labels, ["add-0", "add-1", "add-2", "add-3"]);

    // What Prefect's own client sends at INFO, and nothing more: its first
    // line, one line per task run, and the flow run's last line.
    let logs = api.logs(id);
    let mut messages: Vec<&str> = logs
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    messages.sort_unstable();
    let beginning = format!("Beginning flow run '{name}' for flow 'my-flow'");
    assert_eq!(
        messages,
        [
            beginning.as_str(),
            "Finished in state Completed()",
            "Finished in state Completed()",
            "Finished in state Completed()",
            "Finished in state Completed()",
            "Finished in state Completed()",
        ],
        "{logs:?}"
    );
    let finished_task_run = logs
        .iter()
        .find(|l| l["message"] == "Finished in state Completed()" && l["task_run_id"].is_string())
        .expect("task-run lines carry their task run's id");
    let task_run_ids: Vec<&str> = task_runs
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(task_run_ids.contains(&finished_task_run["task_run_id"].as_str().unwrap()));
}

#[test]
fn at_prefects_warning_level_no_log_line_goes_to_the_server() {
    if !server_available("at_prefects_warning_level_no_log_line_goes_to_the_server") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let mut command = example("batch_add", &api_url());
    command.env("PREFECT_LOGGING_LEVEL", "WARNING");
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let flow_run = api.flow_run_named(&flow_run_name(&stderr)).unwrap();
    assert_eq!(flow_run["state_type"], "COMPLETED", "{flow_run}");
    let id = flow_run["id"].as_str().unwrap();
    assert_eq!(api.task_runs(id).len(), 4);
    assert_eq!(
        api.logs(id),
        Vec::<Value>::new(),
        "as Prefect's client at WARNING"
    );
}

#[test]
fn the_kill_switch_example_reports_every_input() {
    if !server_available("the_kill_switch_example_reports_every_input") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let output = run(example("kill_switch", &api_url()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");

    let name = flow_run_name(&stderr);
    let flow_run = api.flow_run_named(&name).unwrap();
    assert_eq!(flow_run["state_type"], "FAILED", "{flow_run}");
    let message = flow_run["state"]["message"].as_str().unwrap();
    assert!(
        message.contains("Kill switch AnyFailedSwitch tripped"),
        "{message}"
    );

    let runs = by_name(&api.task_runs(flow_run["id"].as_str().unwrap()));
    assert_eq!(runs.len(), 6, "every input is on the server: {runs:?}");
    assert_eq!(runs["add-0"]["state_type"], "COMPLETED");
    assert_eq!(runs["add-1"]["state_type"], "FAILED");
    assert!(
        runs["add-1"]["state"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid digit")
    );
    for never_submitted in ["add-2", "add-3", "add-4", "add-5"] {
        let run = &runs[never_submitted];
        assert_eq!(run["state_type"], "CANCELLED", "{run}");
        assert!(!run["state"]["message"].as_str().unwrap().is_empty());
    }
}

#[task]
fn increment(x: u64) -> u64 {
    x + 1
}

#[flow]
fn five_thousand() -> usize {
    let batch = BatchTask::new(increment, 500).unwrap();
    batch.map(0..5_000u64).unwrap().results().unwrap().len()
}

#[test]
fn five_thousand_task_runs_all_arrive() {
    if !server_available("five_thousand_task_runs_all_arrive") {
        return;
    }
    let _alone = alone_on_the_server();
    let api = Api::open();
    let started = Instant::now();
    let output = run(child_process("five_thousand", &api_url()));
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let name = flow_run_name(&stderr);
    let flow_run = api.flow_run_named(&name).unwrap();
    assert_eq!(flow_run["state_type"], "COMPLETED");
    // The process exited only once the server had everything.
    let task_runs = api.task_runs(flow_run["id"].as_str().unwrap());
    assert_eq!(task_runs.len(), 5_000);
    assert!(task_runs.iter().all(|r| r["state_type"] == "COMPLETED"));
    let requests: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .expect("the child prints its request count")
        .trim()
        .parse()
        .unwrap();
    let flow_call = stdout
        .lines()
        .find_map(|l| l.strip_prefix("flow call: "))
        .unwrap_or("?");
    println!(
        "5,000 task runs: {requests} HTTP requests, {:.4} per task run; flow call {flow_call}, {:.1} s until the server had all",
        requests as f64 / 5_000.0,
        elapsed.as_secs_f64()
    );
    assert!(!stderr.contains("WARNING"), "{stderr}");
}

#[task]
async fn sleepy(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(100)).await;
    x
}

#[flow]
fn long_running() -> usize {
    announce_flow_run();
    let batch = BatchTask::new(sleepy, 5).unwrap().sliding_window();
    batch.map(0..2_000u64).map(|f| f.len()).unwrap_or(0)
}

#[test]
fn cancelling_from_the_api_stops_the_flow() {
    if !server_available("cancelling_from_the_api_stops_the_flow") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let mut command = child_process("long_running", &api_url());
    command
        .env("PREFECTO_CANCEL_POLL", "0.5")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut process = command.spawn().unwrap();
    let name = named_flow_run(&mut process);
    let deadline = Instant::now() + Duration::from_secs(60);
    let flow_run = loop {
        assert!(
            Instant::now() < deadline,
            "the flow run never showed RUNNING"
        );
        if let Some(run) = api.flow_run_named(&name)
            && run["state_type"] == "RUNNING"
        {
            break run;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = flow_run["id"].as_str().unwrap();
    let cancelling = api.post(
        &format!("/flow_runs/{id}/set_state"),
        json!({ "state": { "type": "CANCELLING" }, "force": false }),
    );
    assert_eq!(cancelling["status"], "ACCEPT", "{cancelling}");
    let output = process.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "a cancelled flow is an error: {stderr}"
    );
    let flow_run = api.flow_run_named(&name).unwrap();
    assert_eq!(flow_run["state_type"], "CANCELLED", "{flow_run}");
    let task_runs = api.task_runs(id);
    assert_eq!(task_runs.len(), 2_000, "every input has an outcome");
    let cancelled = task_runs
        .iter()
        .filter(|r| r["state_type"] == "CANCELLED")
        .count();
    assert!(
        cancelled > 1_000,
        "the flow stopped early: {cancelled} cancelled"
    );
}

#[test]
fn bad_configuration_gives_one_clear_message_without_the_secret() {
    if !server_available("bad_configuration_gives_one_clear_message_without_the_secret") {
        return;
    }
    let _shared = sharing_the_server();
    // Nothing listens on port 9 of loopback.
    let output = run(example("batch_add", "http://127.0.0.1:9/api"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a server outage does not fail the flow: {stderr}"
    );
    assert!(
        stderr.contains("cannot reach the Prefect server at http://127.0.0.1:9/api"),
        "{stderr}"
    );

    // A server with auth, and a wrong auth string.
    let auth_url = std::env::var("PREFECTO_TEST_PREFECT_AUTH_URL").unwrap();
    let mut wrong = example("batch_add", &auth_url);
    wrong.env("PREFECT_API_AUTH_STRING", "prefecto:not-the-secret");
    let output = run(wrong);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("refused the credentials (HTTP 401)"),
        "{stderr}"
    );
    assert!(stderr.contains(&auth_url), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");

    // A wrong API key, as Prefect Cloud users set it.
    let mut wrong = example("batch_add", &auth_url);
    wrong.env("PREFECT_API_KEY", "pnu_wrong_key");
    let output = run(wrong);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!stderr.contains("pnu_wrong_key"), "{stderr}");

    // The right auth string works.
    let mut right = example("batch_add", &auth_url);
    right.env(
        "PREFECT_API_AUTH_STRING",
        std::env::var("PREFECTO_TEST_PREFECT_AUTH_STRING").unwrap(),
    );
    let output = run(right);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("WARNING"), "{stderr}");
    let mut config = ApiConfig::new(&auth_url).unwrap();
    config.auth = Auth::AuthString(std::env::var("PREFECTO_TEST_PREFECT_AUTH_STRING").unwrap());
    let authed = Api {
        client: Client::new(config).unwrap(),
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    let reported = authed.flow_run_named(&flow_run_name(&stderr)).unwrap();
    assert_eq!(reported["state_type"], "COMPLETED");

    // Not a Prefect API: the server's root, without /api.
    let root = api_url().trim_end_matches("/api").to_string();
    let output = run_example_quiet("batch_add", &root);
    assert!(
        output.contains("does not look like a Prefect server's API"),
        "{output}"
    );
}

fn run_example_quiet(name: &str, url: &str) -> String {
    let output = run(example(name, url));
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_flow_run_created_on_the_server_is_adopted_with_its_parameters() {
    if !server_available("a_flow_run_created_on_the_server_is_adopted_with_its_parameters") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let flow = api.post("/flows/", json!({ "name": "squares" }));
    let name = format!("adopted-by-rust-{}", std::process::id());
    let created = api.post(
        "/flow_runs/",
        json!({
            "flow_id": flow["id"],
            "name": name,
            "parameters": { "n": 10, "size": 3 },
            "state": { "type": "PENDING" },
        }),
    );
    let id = created["id"].as_str().unwrap();
    let mut command = example("squares", &api_url());
    command.env("PREFECT__FLOW_RUN_ID", id);
    let output = run(command);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // 1² + … + 10², not the 1² + … + 4² that main passes.
    assert_eq!(stdout.trim(), "385", "{stderr}");
    assert!(
        stderr.contains(&format!("'{name}'")),
        "the run keeps its name: {stderr}"
    );

    let adopted = api.call(Method::GET, &format!("/flow_runs/{id}"), None);
    assert_eq!(adopted["state_type"], "COMPLETED", "{adopted}");
    let states = api.call(
        Method::GET,
        &format!("/flow_run_states/?flow_run_id={id}"),
        None,
    );
    let types: Vec<&str> = states
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["PENDING", "RUNNING", "COMPLETED"], "{states}");
    let task_runs = api.task_runs(id);
    assert_eq!(task_runs.len(), 10);
    // Only one flow run of that name: the adopted one, not a new one.
    let named = api.post(
        "/flow_runs/filter",
        json!({ "flow_runs": { "name": { "any_": [name] } } }),
    );
    assert_eq!(named.as_array().unwrap().len(), 1);

    // Started again for that run, now finished: it is not run twice.
    let mut command = example("squares", &api_url());
    command.env("PREFECT__FLOW_RUN_ID", id);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "30");
    assert!(
        stderr.contains("has already finished in state COMPLETED, and is not run again"),
        "{stderr}"
    );
    assert_eq!(
        api.task_runs(id).len(),
        10,
        "the finished run got no task runs more"
    );

    // A run of another flow is not this flow's to take.
    let other_flow = api.post("/flows/", json!({ "name": "not-squares" }));
    let other = api.post(
        "/flow_runs/",
        json!({ "flow_id": other_flow["id"], "state": { "type": "PENDING" } }),
    );
    let other_id = other["id"].as_str().unwrap();
    let mut command = example("squares", &api_url());
    command.env("PREFECT__FLOW_RUN_ID", other_id);
    let output = run(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is a run of flow 'not-squares'"),
        "{stderr}"
    );
    let untouched = api.call(Method::GET, &format!("/flow_runs/{other_id}"), None);
    assert_eq!(untouched["state_type"], "PENDING", "{untouched}");
    assert!(api.task_runs(other_id).is_empty());

    // Not adopted, the run is created with the parameters of the call.
    let output = run(example("squares", &api_url()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "30");
    let created = api
        .flow_run_named(&flow_run_name(&stderr))
        .unwrap_or_else(|| panic!("not on the server: {stderr}"));
    assert_eq!(created["parameters"], json!({ "n": 4, "size": 2 }));
}

#[task(tags = ["db"])]
async fn query(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    x
}

#[flow]
async fn ten_queries() -> usize {
    query
        .map(0..10u64)
        .unwrap()
        .results_async()
        .await
        .unwrap()
        .len()
}

#[test]
fn a_tag_concurrency_limit_holds_tagged_task_runs_to_it() {
    if !server_available("a_tag_concurrency_limit_holds_tagged_task_runs_to_it") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    // Set the limit, whether or not an earlier run left one.
    let existing = api.runtime.block_on(api.client.send_raw(
        Method::GET,
        "/v2/concurrency_limits/tag:db",
        &Value::Null,
        &mut Sent::default(),
    ));
    match existing {
        Ok((200, _, limit)) => {
            let id = limit["id"].as_str().unwrap();
            api.call(
                Method::PATCH,
                &format!("/v2/concurrency_limits/{id}"),
                Some(json!({ "limit": 2 })),
            );
        }
        _ => {
            api.post(
                "/v2/concurrency_limits/",
                json!({ "name": "tag:db", "limit": 2 }),
            );
        }
    }
    let output = run(child_process("ten_queries", &api_url()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let flow_run = api.flow_run_named(&flow_run_name(&stderr)).unwrap();
    let task_runs = api.task_runs(flow_run["id"].as_str().unwrap());
    assert_eq!(task_runs.len(), 10);
    let mut edges = Vec::new();
    for run in &task_runs {
        assert_eq!(run["state_type"], "COMPLETED");
        assert_eq!(run["tags"], json!(["db"]));
        let time = |field: &str| {
            chrono::DateTime::parse_from_rfc3339(run[field].as_str().unwrap()).unwrap()
        };
        edges.push((time("start_time"), 1));
        edges.push((time("end_time"), -1));
    }
    // Ends before starts at the same instant: a slot freed is a slot taken.
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, change) in edges {
        running += change;
        most = most.max(running);
    }
    assert_eq!(most, 2, "never more than the limit, and the limit was used");
    let limit = api.call(Method::GET, "/v2/concurrency_limits/tag:db", None);
    assert_eq!(limit["active_slots"], 0, "every slot given back: {limit}");
}

#[task]
fn triple(x: u64) -> u64 {
    x * 3
}

#[flow]
fn chained_on_the_server() -> u64 {
    let first = triple.submit(1);
    let gate = triple.submit(2);
    triple.submit_after(&[&gate], first).result().unwrap()
}

#[test]
fn a_future_passed_as_an_argument_is_an_edge_of_the_servers_graph() {
    if !server_available("a_future_passed_as_an_argument_is_an_edge_of_the_servers_graph") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let output = run(child_process("chained", &api_url()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let flow_run = api.flow_run_named(&flow_run_name(&stderr)).unwrap();
    let task_runs = by_name(&api.task_runs(flow_run["id"].as_str().unwrap()));
    let id = |name: &str| task_runs[name]["id"].clone();
    let inputs = &task_runs["triple-2"]["task_inputs"];
    assert_eq!(
        inputs["x"],
        json!([{ "input_type": "task_run", "id": id("triple-0") }]),
        "{inputs}"
    );
    assert_eq!(
        inputs["wait_for"],
        json!([{ "input_type": "task_run", "id": id("triple-1") }]),
        "{inputs}"
    );
    assert_eq!(task_runs["triple-0"]["task_inputs"]["x"], json!([]));
}

#[task]
fn fails_with_a_megabyte() -> Result<(), String> {
    Err(format!("{}\x1b[2J end", "z".repeat(1_000_000)))
}

#[flow]
fn huge_error() {
    let _ = fails_with_a_megabyte();
}

#[test]
fn a_megabyte_error_reaches_the_server_cut_to_its_limits() {
    if !server_available("a_megabyte_error_reaches_the_server_cut_to_its_limits") {
        return;
    }
    let _shared = sharing_the_server();
    let api = Api::open();
    let started = Instant::now();
    let output = run(child_process("huge_error", &api_url()));
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}",
        &stderr[..stderr.len().min(2_000)]
    );
    // The server took the event: the flow call did not wait out its report wait.
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
    let flow_run = api.flow_run_named(&flow_run_name(&stderr)).unwrap();
    let task_runs = api.task_runs(flow_run["id"].as_str().unwrap());
    assert_eq!(task_runs.len(), 1);
    let message = task_runs[0]["state"]["message"].as_str().unwrap();
    assert!(message.len() < 200_000, "{}", message.len());
    assert!(
        message.ends_with("shows the whole text]"),
        "{}",
        &message[message.len() - 200..]
    );
    let logs = api.logs(flow_run["id"].as_str().unwrap());
    assert!(
        logs.iter()
            .all(|l| l["message"].as_str().unwrap().len() < 200_000)
    );
}

/// What a child process does, by role; nothing when run as an ordinary test.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("five_thousand") => {
            let started = Instant::now();
            assert_eq!(five_thousand().unwrap(), 5_000);
            println!("flow call: {:.2} s", started.elapsed().as_secs_f64());
            // The flow call returns before the server has everything.
            prefecto::shutdown();
            let counters = Prefecto::installed()
                .and_then(Prefecto::prefect_counters)
                .expect("the first flow call installed a reporter");
            println!("requests: {}", counters.requests);
        }
        Ok("huge_error") => {
            huge_error().unwrap();
        }
        Ok("chained") => {
            assert_eq!(chained_on_the_server().unwrap(), 9);
        }
        Ok("ten_queries") => {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            assert_eq!(runtime.block_on(ten_queries()).unwrap(), 10);
        }
        Ok("long_running") => {
            // A cancelled flow run is an error; say so in the exit code.
            std::process::exit(if long_running().is_err() { 3 } else { 0 });
        }
        _ => {}
    }
}
