//! Scaling out on real Prefect 3.9.1 work pools: `prefecto deploy` of the
//! `served_flows` example, run by real `prefect worker start --type process`
//! workers; `DeploymentTask` in a `BatchTask` with its window and kill
//! switches; the errors a user meets.
//!
//! Each test starts a server and workers of its own (one test at a time)
//! and stops them, and whatever processes they started, at its end. The
//! servers keep their databases in the PostgreSQL cluster `scripts/test.sh`
//! starts: on SQLite, a few children reporting at once on 2 cores make the
//! server answer 503, and Prefect's workers then crash the children they
//! were starting ("Failed to submit flow run to infrastructure"). The
//! parent flows run in child processes (this test binary run again with
//! `PREFECTO_TEST_CHILD`), reporting to the server as a user's program does.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prefecto::deployments::{Deployment, DeploymentTask, deploy};
use prefecto::prefect_api::{ApiConfig, Client};
use prefecto::prelude::*;
use serde_json::{Value, json};

mod server_api;

use server_api::{Api, CHILD_ENV, OwnServer, child_process, examples_dir, server_available};

/// One server and its workers at a time: each is a handful of Python processes on 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const FAN_OUT_ENV: &str = "PREFECTO_TEST_FAN_OUT";
const POOL: &str = "rust-test-pool";

/// Prefect process workers of a test's own, and every process they start.
struct Workers {
    processes: Vec<std::process::Child>,
    /// Set in the workers' environment, so in their flow runs' too: how
    /// the processes they started are found and stopped.
    tag: String,
}

impl Workers {
    fn start(server: &OwnServer, count: usize, results: &Path) -> Workers {
        let tag = format!("prefecto-test-{}", uuid::Uuid::new_v4());
        let processes = (0..count)
            .map(|i| {
                let log =
                    std::fs::File::create(server.home.join(format!("worker-{i}.log"))).unwrap();
                Command::new(std::env::var("PREFECTO_TEST_PREFECT_BIN").unwrap())
                    .args(["worker", "start", "--pool", POOL, "--type", "process"])
                    .args(["--name", &format!("worker-{i}")])
                    .env("PREFECT_API_URL", server.url())
                    .env("PREFECT_HOME", server.home.join(format!("worker-{i}-home")))
                    .env("PREFECT_WORKER_QUERY_SECONDS", "1")
                    // Offline 15 s after its last heartbeat, not 90.
                    .env("PREFECT_WORKER_HEARTBEAT_SECONDS", "5")
                    .env("PREFECTO_RESULTS_DIR", results)
                    .env("PREFECTO_TEST_WORKER_TAG", &tag)
                    .env_remove(CHILD_ENV)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .process_group(0)
                    .spawn()
                    .unwrap()
            })
            .collect();
        Workers { processes, tag }
    }

    /// The processes carrying this set's tag: the workers and the flow runs they started.
    fn tagged(&self) -> Vec<(u32, Option<String>)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let vars: Vec<String> = environ
                .split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            if vars
                .iter()
                .any(|v| v == &format!("PREFECTO_TEST_WORKER_TAG={}", self.tag))
            {
                let flow_run = vars
                    .iter()
                    .find_map(|v| v.strip_prefix("PREFECT__FLOW_RUN_ID=").map(str::to_string));
                found.push((pid, flow_run));
            }
        }
        found
    }

    /// Kills worker `name` and every flow-run process it started: a machine lost.
    fn lose_worker(&mut self, index: usize) {
        let name = format!("worker-{index}");
        let group = format!("-{}", self.processes[index].id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.processes[index].wait();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
            let tagged =
                vars.contains(&format!("PREFECTO_TEST_WORKER_TAG={}", self.tag).as_bytes());
            let its = vars.contains(&format!("PREFECT__WORKER_NAME={name}").as_bytes());
            if tagged && its {
                let pid = entry.file_name().to_string_lossy().into_owned();
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    }

    /// The flow-run processes still alive among these flow runs.
    fn running(&self, flow_runs: &[String]) -> Vec<String> {
        self.tagged()
            .into_iter()
            .filter_map(|(_, run)| run.filter(|r| flow_runs.contains(r)))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for process in &self.processes {
            let group = format!("-{}", process.id());
            let _ = Command::new("kill")
                .args(["-TERM", "--", &group])
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for process in &mut self.processes {
            while process.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Workers, and flow-run processes that outlived them (a new session each).
        for (pid, _) in self.tagged() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        for process in &mut self.processes {
            let _ = process.wait();
        }
    }
}

fn served_flows() -> PathBuf {
    examples_dir().join("served_flows")
}

/// Registers `sum-to/<name>` (the `served_flows` example) on the test pool.
fn deploy_sum_to(server: &OwnServer, name: &str, results: &Path) {
    let api = Api::new(&server.url());
    let served = sum_to_schema();
    let command = format!("{} sum-to", served_flows().display());
    let deployment = Deployment::of(&served, name, &command)
        .work_pool(POOL)
        .env("PREFECTO_RESULTS_DIR", &results.to_string_lossy());
    api.runtime
        .block_on(deploy(&api.client, &deployment))
        .unwrap_or_else(|e| panic!("deploy: {e}"));
}

/// The parameter schema of the example's `sum-to` flow.
fn sum_to_schema() -> prefecto::ServedFlow {
    /// Sums the numbers from 1 to `n`.
    #[flow(name = "sum-to")]
    fn sum_to(n: u64, fail_on: Option<u64>, abort_on: Option<u64>, sleep_ms: Option<u64>) -> u64 {
        let _ = (fail_on, abort_on, sleep_ms);
        (1..=n).sum()
    }
    prefecto::served_flow!(sum_to)
}

/// The flow run with this id, once final (within `limit`).
fn final_run(api: &Api, id: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let run = api.call(reqwest::Method::GET, &format!("/flow_runs/{id}"), None);
        let state = run["state_type"].as_str().unwrap_or("");
        if matches!(state, "COMPLETED" | "FAILED" | "CANCELLED" | "CRASHED") {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "flow run {id} is still {state} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The child flow runs of a parent flow run, in their parents' input order.
fn children_of(api: &Api, parent_flow_run: &str) -> Vec<Value> {
    let parents = api.task_runs(parent_flow_run);
    let index_of: BTreeMap<String, u64> = parents
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap();
            let index = name.rsplit('-').next().unwrap().parse().unwrap();
            (t["id"].as_str().unwrap().to_string(), index)
        })
        .collect();
    let ids: Vec<&String> = index_of.keys().collect();
    let mut children = api
        .post(
            "/flow_runs/filter",
            json!({"flow_runs": {"parent_task_run_id": {"any_": ids}}, "limit": 200}),
        )
        .as_array()
        .unwrap()
        .clone();
    children.sort_by_key(|c| index_of[c["parent_task_run_id"].as_str().unwrap()]);
    children
}

/// Runs a fan-out (`FAN_OUT_ENV`'s settings) in a child process reporting
/// to `server`; its outcome as the child printed it.
fn run_fan_out(server: &OwnServer, results: &Path, settings: Value, limit: Duration) -> Value {
    run_fan_out_at(&server.url(), results, settings, limit)
}

fn run_fan_out_at(url: &str, results: &Path, settings: Value, limit: Duration) -> Value {
    let mut command = child_process("fan-out", url);
    command
        .env(FAN_OUT_ENV, settings.to_string())
        .env("PREFECTO_RESULTS_DIR", results)
        // The scene's own history: a cache key never finds another run's.
        .env("PREFECTO_HOME", results.with_file_name("prefecto-home"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn().unwrap();
    let pid = child.id();
    let output = std::thread::spawn(move || child.wait_with_output().unwrap());
    let deadline = Instant::now() + limit;
    while !output.is_finished() {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("the fan-out did not end within {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = output.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("outcome: "))
        .unwrap_or_else(|| {
            panic!(
                "the fan-out printed no outcome; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    serde_json::from_str(line).unwrap()
}

/// The parent flow of the fan-out tests: maps `count` inputs over
/// `sum-to/<deployment>`, `size` at a time.
#[flow]
fn fan_out_parent(settings: Value) -> Result<Value, prefecto::Error> {
    let url = std::env::var("PREFECT_API_URL").unwrap();
    let name = format!("sum-to/{}", settings["deployment"].as_str().unwrap());
    let mut task = DeploymentTask::<Value, u64>::on(&name, ApiConfig::new(&url).unwrap())?;
    if settings["cache"].as_bool().unwrap_or(false) {
        task = task.cache_key(|input| input["n"].to_string());
    }
    let size = settings["size"].as_u64().unwrap() as usize;
    let mut batch = BatchTask::new(task.clone(), size)?;
    if settings["window"].as_bool().unwrap_or(false) {
        batch = batch.sliding_window();
    }
    if settings["any_failed"].as_bool().unwrap_or(false) {
        batch = batch.with_kill_switch(AnyFailedSwitch::new());
    }
    let count = settings["count"].as_u64().unwrap();
    // With `cycle`, input i runs sum-to(1 + (i - 1) % cycle): light children,
    // whose task runs a local SQLite server records without falling behind.
    let cycle = settings["cycle"].as_u64().unwrap_or(u64::MAX);
    let inputs: Vec<Value> = (1..=count)
        .map(|i| {
            let n = 1 + (i - 1) % cycle;
            let mut input = json!({"n": n});
            for key in ["fail_on", "abort_on", "sleep_ms"] {
                if !settings[key].is_null() {
                    input[key] = settings[key].clone();
                }
            }
            if settings["quick"].as_u64() == Some(n) {
                input["sleep_ms"] = json!(0);
            }
            input
        })
        .collect();
    let server_flow_run = prefecto::flow::current_flow_run()
        .and_then(|f| f.server)
        .map(|s| s.id.to_string());
    let outcome = match batch.map(inputs) {
        Ok(futures) => match futures.results() {
            Ok(results) => json!({"results": results, "requests": task.requests()}),
            Err(error) => json!({"error": error.to_string()}),
        },
        Err(error) => match error.into_kill_switch() {
            Some(tripped) => json!({
                "switch": tripped.switch,
                "reason": tripped.reason,
                "states": tripped.outcomes.iter().map(|o| o.state.name().to_string()).collect::<Vec<_>>(),
            }),
            None => json!({"error": "map refused its inputs"}),
        },
    };
    let outcome = json!({"flow_run": server_flow_run, "outcome": outcome});
    println!("outcome: {outcome}");
    if outcome["outcome"]["switch"].is_string() {
        return Err(prefecto::Error::KillSwitch(
            prefecto::concurrency::KillSwitchError::new(
                outcome["outcome"]["switch"].as_str().unwrap(),
                outcome["outcome"]["reason"].as_str().unwrap(),
            ),
        ));
    }
    Ok(outcome)
}

/// Not a test: a parent flow run in a process of its own (see `child_process`).
#[test]
#[ignore = "run by the tests, in a child process"]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    assert_eq!(role, "fan-out");
    let settings: Value = serde_json::from_str(&std::env::var(FAN_OUT_ENV).unwrap()).unwrap();
    let _ = fan_out_parent(settings);
    prefecto::shutdown();
}

struct Scene {
    _lock: std::sync::MutexGuard<'static, ()>,
    server: OwnServer,
    results: PathBuf,
}

fn scene(name: &str) -> Option<Scene> {
    if !server_available(name) {
        return None;
    }
    let lock = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = OwnServer::start_on_postgres(name);
    let results = server.home.join("results");
    Some(Scene {
        _lock: lock,
        server,
        results,
    })
}

#[test]
fn prefecto_deploy_then_prefect_deployment_run_is_adopted_by_a_real_worker() {
    let Some(scene) = scene("deploy-and-run") else {
        return;
    };
    let url = scene.server.url();
    let cli = examples_dir().parent().unwrap().join("prefecto");
    let deploy = |extra: &[&str]| {
        Command::new(&cli)
            .arg("deploy")
            .arg(served_flows())
            .args([
                "--flow", "sum-to", "--name", "by-cli", "--pool", POOL, "--tag", "rust", "--json",
            ])
            .args([
                "--env",
                &format!("PREFECTO_RESULTS_DIR={}", scene.results.display()),
            ])
            .args(extra)
            .env("PREFECT_API_URL", &url)
            .output()
            .unwrap()
    };
    let first = deploy(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(first["created_pool"], true, "{first}");
    // Deploying again updates the same deployment.
    let again = deploy(&["--concurrency-limit", "2"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["created_pool"], false);

    let api = Api::new(&url);
    let deployment = api.call(
        reqwest::Method::GET,
        "/deployments/name/sum-to/by-cli",
        None,
    );
    let schema = &deployment["parameter_openapi_schema"];
    assert_eq!(schema["properties"]["n"]["type"], "integer", "{schema}");
    assert_eq!(schema["required"], json!(["n"]));
    assert_eq!(deployment["work_pool_name"], POOL);
    assert_eq!(deployment["tags"], json!(["rust"]));
    assert!(
        deployment["description"]
            .as_str()
            .unwrap()
            .starts_with("Sums the numbers")
    );
    // Prefect 3.9 keeps a deployment's limit as a global concurrency limit of its own.
    assert_eq!(
        deployment["global_concurrency_limit"]["limit"], 2,
        "{deployment}"
    );
    let pool = api.call(reqwest::Method::GET, &format!("/work_pools/{POOL}"), None);
    assert_eq!(pool["type"], "process");
    assert_eq!(
        pool["base_job_template"]["job_configuration"]["command"], "{{ command }}",
        "the pool maps the command job variable"
    );

    // A scheduled one, and both listed.
    let scheduled = Command::new(&cli)
        .arg("deploy")
        .arg(served_flows())
        .args([
            "--flow",
            "greet",
            "--name",
            "nightly",
            "--pool",
            POOL,
            "--cron",
            "0 3 * * *",
        ])
        .args(["--param", "name=world"])
        .env("PREFECT_API_URL", &url)
        .output()
        .unwrap();
    assert!(
        scheduled.status.success(),
        "{}",
        String::from_utf8_lossy(&scheduled.stderr)
    );
    let nightly = api.call(
        reqwest::Method::GET,
        "/deployments/name/greet/nightly",
        None,
    );
    assert_eq!(
        nightly["schedules"][0]["schedule"]["cron"], "0 3 * * *",
        "{nightly}"
    );
    assert_eq!(nightly["parameters"]["name"], "world");
    let listed = Command::new(&cli)
        .args(["deployment", "ls", "--json"])
        .env("PREFECT_API_URL", &url)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["greet/nightly", "sum-to/by-cli"]);

    let _workers = Workers::start(&scene.server, 1, &scene.results);
    let prefect = std::env::var("PREFECTO_TEST_PREFECT_BIN").unwrap();
    let run = |param: &str| {
        Command::new(&prefect)
            .args(["deployment", "run", "sum-to/by-cli", "--param", param])
            .env("PREFECT_API_URL", &url)
            .env("PREFECT_HOME", scene.server.home.join("cli-home"))
            .output()
            .unwrap()
    };
    // The server checks parameters against the schema the deploy derived.
    let refused = run("n=\"many\"");
    let refused_text = String::from_utf8_lossy(&refused.stdout).to_string()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{refused_text}");
    assert!(
        refused_text.contains("Validation") || refused_text.contains("validation"),
        "{refused_text}"
    );

    let accepted = run("n=4");
    let text = String::from_utf8_lossy(&accepted.stdout);
    assert!(
        accepted.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let id = text
        .lines()
        .find_map(|l| l.split("UUID: ").nth(1))
        .unwrap_or_else(|| panic!("no flow run id in: {text}"))
        .trim()
        .to_string();
    let run = final_run(&api, &id, Duration::from_secs(120));
    assert_eq!(run["state_type"], "COMPLETED", "{run}");
    assert_eq!(run["parameters"]["n"], 4);
    // Its task runs reach the server after its state: wait for them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.task_runs(&id).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the run's task runs did not arrive"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let result =
        std::fs::read_to_string(scene.results.join(format!("flow-runs/{id}.json"))).unwrap();
    assert_eq!(result, "10");
}

#[test]
fn a_window_of_children_never_has_more_than_size_unfinished_and_gives_results_in_order() {
    let Some(scene) = scene("window-over-workers") else {
        return;
    };
    deploy_sum_to(&scene.server, "window", &scene.results);
    let _workers = Workers::start(&scene.server, 2, &scene.results);
    let outcome = run_fan_out(
        &scene.server,
        &scene.results,
        json!({"deployment": "window", "count": 40, "size": 4, "window": true, "sleep_ms": 300, "cycle": 5}),
        Duration::from_secs(900),
    );
    let expected: Vec<u64> = (0..40u64)
        .map(|i| 1 + i % 5)
        .map(|n| n * (n + 1) / 2)
        .collect();
    assert_eq!(outcome["outcome"]["results"], json!(expected), "{outcome}");

    let api = Api::new(&scene.server.url());
    let parent = outcome["flow_run"].as_str().unwrap();
    let children = children_of(&api, parent);
    assert_eq!(
        children.len(),
        40,
        "every input has its child under its task run"
    );
    // From the children's state histories: created (Scheduled) until final.
    let mut edges = Vec::new();
    for child in &children {
        assert_eq!(child["state_type"], "COMPLETED", "{child}");
        let states = api.call(
            reqwest::Method::GET,
            &format!(
                "/flow_run_states/?flow_run_id={}",
                child["id"].as_str().unwrap()
            ),
            None,
        );
        let times: Vec<String> = states
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["timestamp"].as_str().unwrap().to_string())
            .collect();
        let first = times.iter().min().unwrap().clone();
        let last = times.iter().max().unwrap().clone();
        edges.push((first, 1));
        edges.push((last, -1));
    }
    edges.sort();
    let (mut open, mut most) = (0, 0);
    for (_, step) in edges {
        open += step;
        most = most.max(open);
    }
    assert!(most <= 4, "{most} children were unfinished at once");
}

#[test]
fn a_kill_switch_cancels_the_children_in_flight_and_accounts_for_every_input() {
    let Some(scene) = scene("kill-switch-over-workers") else {
        return;
    };
    deploy_sum_to(&scene.server, "trip", &scene.results);
    let workers = Workers::start(&scene.server, 2, &scene.results);
    // Input 3 fails at once; the others take a minute, so they are in flight when it does.
    let outcome = run_fan_out(
        &scene.server,
        &scene.results,
        json!({"deployment": "trip", "count": 10, "size": 4, "window": true,
               "any_failed": true, "fail_on": 3, "sleep_ms": 60000, "quick": 3}),
        Duration::from_secs(300),
    );
    let tripped = &outcome["outcome"];
    assert_eq!(tripped["switch"], "AnyFailedSwitch", "{outcome}");
    let states: Vec<&str> = tripped["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 10, "every input is accounted for: {states:?}");
    assert_eq!(states[2], "Failed");
    for (i, state) in states.iter().enumerate() {
        if i != 2 {
            assert_eq!(*state, "Cancelled", "input {}: {states:?}", i + 1);
        }
    }

    let api = Api::new(&scene.server.url());
    let parent = outcome["flow_run"].as_str().unwrap();
    let parent_run = final_run(&api, parent, Duration::from_secs(60));
    assert_eq!(parent_run["state_type"], "FAILED", "{parent_run}");
    assert!(
        parent_run["state"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("AnyFailedSwitch"),
        "{parent_run}"
    );
    let children = children_of(&api, parent);
    // The failed child and those in flight beside it (an input whose run had
    // not yet created its child when the switch tripped has none); no other.
    assert!((1..=4).contains(&children.len()), "{children:?}");
    assert!(children.iter().any(|c| c["parameters"]["n"] == 3));
    let mut ids = Vec::new();
    for child in &children {
        let id = child["id"].as_str().unwrap().to_string();
        let run = final_run(&api, &id, Duration::from_secs(90));
        let expected = if run["parameters"]["n"] == 3 {
            "FAILED"
        } else {
            "CANCELLED"
        };
        assert_eq!(run["state_type"], expected, "{run}");
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !workers.running(&ids).is_empty() {
        assert!(
            Instant::now() < deadline,
            "children's processes still run: {:?}",
            workers.running(&ids)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_killed_child_process_ends_crashed_and_trips_the_switch() {
    let Some(scene) = scene("crashed-child") else {
        return;
    };
    deploy_sum_to(&scene.server, "crash", &scene.results);
    let _workers = Workers::start(&scene.server, 2, &scene.results);
    let outcome = run_fan_out(
        &scene.server,
        &scene.results,
        json!({"deployment": "crash", "count": 4, "size": 2, "any_failed": true, "abort_on": 2}),
        Duration::from_secs(300),
    );
    let tripped = &outcome["outcome"];
    assert_eq!(tripped["switch"], "AnyFailedSwitch", "{outcome}");
    assert!(
        tripped["reason"].as_str().unwrap().contains("Crashed"),
        "{outcome}"
    );
    let states = tripped["states"].as_array().unwrap();
    assert_eq!(states.len(), 4);
    assert_eq!(states[0], "Completed");
    assert_eq!(states[1], "Failed");
    assert_eq!(states[2], "Cancelled");
    assert_eq!(states[3], "Cancelled");
}

#[test]
fn bad_input_gets_a_clear_error_and_leaves_nothing_running() {
    let Some(scene) = scene("deployment-errors") else {
        return;
    };
    let url = scene.server.url();
    let api = Api::new(&url);
    let client = Client::new(ApiConfig::new(&url).unwrap()).unwrap();

    // A missing deployment: every input's run fails, naming it.
    let outcome = run_fan_out(
        &scene.server,
        &scene.results,
        json!({"deployment": "missing", "count": 3, "size": 2, "any_failed": true}),
        Duration::from_secs(120),
    );
    assert_eq!(outcome["outcome"]["switch"], "AnyFailedSwitch", "{outcome}");
    assert!(
        outcome["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("has no deployment 'sum-to/missing'"),
        "{outcome}"
    );

    // A missing work pool that is not to be created.
    let served = sum_to_schema();
    let no_pool = Deployment::of(&served, "x", "/bin/true")
        .work_pool("no-such-pool")
        .require_existing_pool();
    let error = api.runtime.block_on(deploy(&client, &no_pool)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has no work pool 'no-such-pool'"),
        "{error}"
    );

    // A binary that is not there.
    let cli = examples_dir().parent().unwrap().join("prefecto");
    let missing = Command::new(&cli)
        .args(["deploy", "/no/such/binary", "--pool", POOL])
        .env("PREFECT_API_URL", &url)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/binary: no such binary"));

    // A deployment whose command does not exist on the worker: the worker
    // reports the run Crashed, and the parent's run fails with it.
    let broken = Deployment::of(&served, "broken", "/no/such/binary sum-to").work_pool(POOL);
    api.runtime.block_on(deploy(&client, &broken)).unwrap();
    // Parameters that do not match the schema: the server refuses the run.
    deploy_sum_to(&scene.server, "strict", &scene.results);
    let workers = Workers::start(&scene.server, 1, &scene.results);
    let task =
        DeploymentTask::<Value, u64>::on("sum-to/strict", ApiConfig::new(&url).unwrap()).unwrap();
    let refused = api.runtime.block_on(async {
        #[flow]
        async fn refused_run(task: DeploymentTask<Value, u64>) -> String {
            let error = task.submit(json!({"n": "many"})).await.unwrap_err();
            // The body's own error, a DeploymentError.
            std::error::Error::source(&error).unwrap().to_string()
        }
        refused_run(task).await.unwrap()
    });
    assert!(refused.contains("refused a run of deployment"), "{refused}");
    assert!(
        refused.contains("'many' is not of type 'integer'"),
        "{refused}"
    );

    let outcome = run_fan_out(
        &scene.server,
        &scene.results,
        json!({"deployment": "broken", "count": 1, "size": 1}),
        Duration::from_secs(180),
    );
    assert!(
        outcome["outcome"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("ended Crashed"),
        "{outcome}"
    );
    let parent = outcome["flow_run"].as_str().unwrap();
    let children = children_of(&api, parent);
    assert_eq!(children.len(), 1);
    let child = final_run(
        &api,
        children[0]["id"].as_str().unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(child["state_type"], "CRASHED", "{child}");
    let ids = vec![children[0]["id"].as_str().unwrap().to_string()];
    assert!(workers.running(&ids).is_empty());
}

#[test]
fn a_lost_worker_leaves_its_children_crashed_and_the_switch_counts_them() {
    let Some(scene) = scene("lost-worker") else {
        return;
    };
    deploy_sum_to(&scene.server, "lost", &scene.results);
    let mut workers = Workers::start(&scene.server, 2, &scene.results);
    let url = scene.server.url();
    let results = scene.results.clone();
    let settings = json!({"deployment": "lost", "count": 4, "size": 4, "window": true,
                          "any_failed": true, "sleep_ms": 120000});
    let server_url = url.clone();
    let parent = std::thread::spawn(move || {
        run_fan_out_at(&server_url, &results, settings, Duration::from_secs(400))
    });
    // Once a child runs, its worker and the worker's processes are lost.
    let api = Api::new(&url);
    let deadline = Instant::now() + Duration::from_secs(180);
    let worker = loop {
        let running = api.post(
            "/flow_runs/filter",
            json!({"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}, "parent_task_run_id": {"is_null_": false}}}),
        );
        let named = running.as_array().unwrap().iter().find_map(|r| {
            r["labels"]["prefect.worker.name"]
                .as_str()
                .map(str::to_string)
        });
        if let Some(name) = named {
            break name;
        }
        assert!(Instant::now() < deadline, "no child ran within 180 s");
        std::thread::sleep(Duration::from_millis(500));
    };
    let index: usize = worker.trim_start_matches("worker-").parse().unwrap();
    workers.lose_worker(index);

    let outcome = parent.join().unwrap();
    let tripped = &outcome["outcome"];
    assert_eq!(tripped["switch"], "AnyFailedSwitch", "{outcome}");
    assert!(
        tripped["reason"].as_str().unwrap().contains("went offline"),
        "{outcome}"
    );
    let states = tripped["states"].as_array().unwrap();
    assert_eq!(states.len(), 4, "every input is accounted for");
    assert!(states.iter().any(|s| s == "Failed"), "{states:?}");
    let parent_run = outcome["flow_run"].as_str().unwrap();
    let children = children_of(&api, parent_run);
    let lost: Vec<&Value> = children
        .iter()
        .filter(|c| c["labels"]["prefect.worker.name"] == worker.as_str())
        .collect();
    assert!(!lost.is_empty());
    for child in lost {
        let run = final_run(&api, child["id"].as_str().unwrap(), Duration::from_secs(30));
        assert_eq!(run["state_type"], "CRASHED", "{run}");
    }
}

#[test]
fn with_a_cache_key_a_second_map_runs_only_the_children_it_lacks() {
    let Some(scene) = scene("resume-over-workers") else {
        return;
    };
    deploy_sum_to(&scene.server, "resume", &scene.results);
    let _workers = Workers::start(&scene.server, 2, &scene.results);
    let settings =
        |count: u64| json!({"deployment": "resume", "count": count, "size": 3, "cache": true});
    let first = run_fan_out(
        &scene.server,
        &scene.results,
        settings(3),
        Duration::from_secs(300),
    );
    assert_eq!(first["outcome"]["results"], json!([1, 3, 6]), "{first}");
    let second = run_fan_out(
        &scene.server,
        &scene.results,
        settings(5),
        Duration::from_secs(300),
    );
    assert_eq!(
        second["outcome"]["results"],
        json!([1, 3, 6, 10, 15]),
        "{second}"
    );
    let api = Api::new(&scene.server.url());
    let children = children_of(&api, second["flow_run"].as_str().unwrap());
    let ns: Vec<&Value> = children.iter().map(|c| &c["parameters"]["n"]).collect();
    assert_eq!(
        ns,
        [&json!(4), &json!(5)],
        "only the inputs without a completed child ran"
    );
}
