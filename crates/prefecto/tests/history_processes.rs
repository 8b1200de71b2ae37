//! The run history shared by processes: two writing at once, and one killed mid-run.
//!
//! The children are this test binary run again with `PREFECTO_TEST_CHILD` set,
//! so each is a real, separate process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prefecto::prelude::*;
use prefecto::store::{self, Store};

const CHILD_ENV: &str = "PREFECTO_TEST_CHILD";
const INPUTS: u64 = 3_000;

fn temp_home(name: &str) -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prefecto-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    home
}

fn spawn_child(role: &str, home: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child",
            "--include-ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, role)
        .env(prefecto::settings::HOME_ENV, home)
        .env("PREFECTO_LOGGING_LEVEL", "WARNING")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[task]
async fn double(x: u64) -> u64 {
    x * 2
}

#[task]
async fn hang() {
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[flow]
fn many_runs() -> u64 {
    let batch = BatchTask::new(double, 100).unwrap();
    batch
        .map(0..INPUTS)
        .unwrap()
        .results()
        .unwrap()
        .iter()
        .sum()
}

#[task]
async fn slow(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(50)).await;
    x
}

#[flow]
fn interrupted() -> usize {
    let batch = BatchTask::new(slow, 4).unwrap().sliding_window();
    batch.map(0..200u64).unwrap().len()
}

#[flow]
fn never_ends() {
    hang().await_unwrap();
}

trait AwaitUnwrap {
    fn await_unwrap(self);
}

impl<F: std::future::Future<Output = Result<(), TaskRunError>>> AwaitUnwrap for F {
    fn await_unwrap(self) {
        futures::executor::block_on(self).unwrap();
    }
}

/// What a child process does, by role; nothing when run as an ordinary test.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("writer") => {
            assert_eq!(many_runs().unwrap(), INPUTS * (INPUTS - 1));
        }
        Ok("hanger") => never_ends().unwrap(),
        Ok("interrupted") => {
            interrupted().unwrap();
        }
        _ => {}
    }
}

#[test]
fn two_processes_write_the_same_history() {
    let home = temp_home("two-writers");
    // Both start at once against a database that does not exist yet.
    let children = [spawn_child("writer", &home), spawn_child("writer", &home)];
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed: {stderr}");
        assert!(!stderr.contains("Run history"), "history trouble: {stderr}");
    }
    let store = Store::open_existing(home.join(store::DB_FILE)).unwrap();
    let runs = store.flow_runs(10, None, Some("many-runs")).unwrap();
    assert_eq!(runs.len(), 2);
    assert_ne!(runs[0].pid, runs[1].pid);
    for run in runs {
        assert_eq!(run.state_type.as_api_str(), "COMPLETED");
        let task_runs = store.task_runs(run.id, Some("COMPLETED")).unwrap();
        assert_eq!(
            task_runs.len() as u64,
            INPUTS,
            "every task run of {}",
            run.name
        );
    }
}

#[test]
fn a_killed_process_leaves_its_runs_crashed() {
    let home = temp_home("killed");
    let mut child = spawn_child("hanger", &home);
    let db = home.join(store::DB_FILE);
    // Wait until the child's flow run is recorded as running.
    let started = Instant::now();
    let running = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child never started its flow run"
        );
        if let Ok(store) = Store::open_existing(&db) {
            let runs = store
                .flow_runs(1, Some("RUNNING"), Some("never-ends"))
                .unwrap();
            if let Some(run) = runs.into_iter().next()
                && !store.task_runs(run.id, Some("RUNNING")).unwrap().is_empty()
            {
                break run;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(running.pid, child.id());
    child.kill().unwrap(); // SIGKILL: no chance to record anything.
    child.wait().unwrap();

    let store = Store::open_existing(&db).unwrap();
    let run = store.flow_run(&running.id.to_string()).unwrap();
    assert_eq!(run.state_name, "Crashed");
    assert!(
        run.state_message
            .unwrap()
            .contains(&format!("pid {}", running.pid))
    );
    let task_runs = store.task_runs(running.id, None).unwrap();
    assert_eq!(task_runs.len(), 1);
    assert_eq!(task_runs[0].state_name, "Crashed");
    let history = store.state_history(running.id, Some(("hang", 0))).unwrap();
    let names: Vec<&str> = history.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Pending", "Running", "Crashed"]);
}

#[test]
fn sigint_and_sigterm_cancel_the_flow_run_and_keep_every_outcome() {
    for (signal, exit_code) in [("INT", 130), ("TERM", 143)] {
        let home = temp_home(&format!("signal-{signal}"));
        let child = spawn_child("interrupted", &home);
        let db = home.join(store::DB_FILE);
        // Wait until some task runs have completed.
        let started = Instant::now();
        let flow_run = loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the child never got going"
            );
            if let Ok(store) = Store::open_existing(&db)
                && let Some(run) = store
                    .flow_runs(1, Some("RUNNING"), Some("interrupted"))
                    .unwrap()
                    .pop()
                && store.task_runs(run.id, Some("COMPLETED")).unwrap().len() >= 4
            {
                break run;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let status = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(exit_code),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );

        let store = Store::open_existing(&db).unwrap();
        let run = store.flow_run(&flow_run.id.to_string()).unwrap();
        assert_eq!(run.state_name, "Cancelled", "{run:?}");
        assert_eq!(
            run.state_message.as_deref(),
            Some(format!("The flow run was cancelled by SIG{signal}.").as_str())
        );
        let task_runs = store.task_runs(run.id, None).unwrap();
        assert_eq!(task_runs.len(), 200, "every input has a task run");
        let completed = task_runs
            .iter()
            .filter(|r| r.state_type == prefecto::StateType::Completed)
            .count();
        let cancelled = task_runs
            .iter()
            .filter(|r| r.state_type == prefecto::StateType::Cancelled)
            .count();
        assert!(completed >= 4);
        assert_eq!(completed + cancelled, 200, "no run left pending or running");
        assert!(task_runs.iter().any(|r| {
            r.state_message
                .as_deref()
                .is_some_and(|m| m.ends_with("It was never submitted."))
        }));
    }
}
