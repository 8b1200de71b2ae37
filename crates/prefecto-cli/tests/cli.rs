//! The `prefecto` command against a run history written by real flow runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prefecto::prelude::*;
use prefecto::settings::HOME_ENV;

#[task]
fn check(x: i64) -> Result<i64, String> {
    if x < 0 {
        Err(format!("{x} is negative"))
    } else {
        Ok(x)
    }
}

static FLOW_RUN_NAME: OnceLock<String> = OnceLock::new();

#[flow]
fn checks(inputs: Vec<i64>) -> Result<(), prefecto::concurrency::BatchError<i64>> {
    let _ = FLOW_RUN_NAME.set(prefecto::flow::current_flow_run().unwrap().name);
    let batch = BatchTask::new(check, 2)
        .unwrap()
        .with_kill_switch(AnyFailedSwitch::new());
    batch.map(inputs)?;
    Ok(())
}

/// A fresh run history of its own, named after `name` and this process, in
/// which `flows` run; returns its folder and what `flows` returned.
fn history_with<R>(name: &str, flows: impl FnOnce() -> R) -> (PathBuf, R) {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prefecto-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let setup = Prefecto::builder()
        .engine_only()
        .history_in(&home)
        .build()
        .unwrap();
    let value = setup.scope(flows);
    (home, value)
}

/// A history with one flow run that a kill switch stopped, written once per test binary.
fn history() -> &'static (PathBuf, String) {
    static HISTORY: OnceLock<(PathBuf, String)> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let (home, result) = history_with("test", || checks(vec![1, -2, 3, 4, 5]));
        result.unwrap_err();
        (home, FLOW_RUN_NAME.get().unwrap().clone())
    })
}

fn prefecto(home: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_prefecto"))
        .args(args)
        .env(HOME_ENV, home)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn flow_run_ls_prints_an_aligned_table() {
    let (home, name) = history();
    let (ok, out, _) = prefecto(home, &["flow-run", "ls"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{out}");
    let row = lines
        .iter()
        .find(|l| l.starts_with(name.as_str()))
        .expect(&out);
    // The STATE column starts at the same offset in the header and the row.
    let column = lines[0].find("STATE").unwrap();
    assert_eq!(&row[column..column + "Failed".len()], "Failed", "{out}");

    let (ok, out, _) = prefecto(home, &["flow-run", "ls", "--state", "COMPLETED"]);
    assert!(ok);
    assert_eq!(out.trim(), "No flow runs match.");
}

#[test]
fn inspect_shows_every_task_run_with_its_error() {
    let (home, name) = history();
    let (ok, out, _) = prefecto(home, &["flow-run", "inspect", name]);
    assert!(ok, "{out}");
    assert!(out.contains("Kill switch AnyFailedSwitch tripped"), "{out}");
    assert!(out.contains("TASK RUN"), "{out}");
    let failed = out.lines().find(|l| l.starts_with("check-1")).expect(&out);
    assert!(
        failed.contains("Failed") && failed.contains("-2 is negative"),
        "{failed}"
    );
    let cancelled = out.lines().filter(|l| l.contains("Cancelled")).count();
    assert_eq!(cancelled, 3, "{out}");
}

#[test]
fn json_output_is_for_scripts() {
    let (home, name) = history();
    let (ok, out, _) = prefecto(
        home,
        &[
            "task-run",
            "ls",
            "--flow-run",
            name,
            "--state",
            "cancelled",
            "--json",
        ],
    );
    assert!(ok);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["check-2", "check-3", "check-4"]);

    let (ok, out, _) = prefecto(home, &["flow-run", "inspect", name, "--json"]);
    assert!(ok);
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspected["flow_run"]["state_type"], "FAILED");
    assert_eq!(inspected["task_runs"].as_array().unwrap().len(), 5);
}

#[test]
fn logs_read_as_the_console_did() {
    let (home, name) = history();
    let (ok, out, _) = prefecto(home, &["flow-run", "logs", name]);
    assert!(ok);
    assert!(
        out.contains(&format!(
            "| INFO    | prefecto.engine - Created flow run '{name}' for flow 'checks'"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "| DEBUG   | Flow run '{name}' - Mapping 'check' batch 1 of 3."
        )),
        "{out}"
    );
    assert!(
        out.contains("| ERROR   | Task run 'check-1' - Finished in state Failed('-2 is negative')"),
        "{out}"
    );
}

#[test]
fn missing_history_and_unknown_runs_are_clear_errors() {
    let (home, _) = history();
    let (ok, _, err) = prefecto(home, &["flow-run", "inspect", "no-such-run"]);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: no flow run named or with id 'no-such-run'"
    );

    let empty = home.join("empty-home");
    let (ok, _, err) = prefecto(&empty, &["flow-run", "ls"]);
    assert!(!ok);
    assert!(
        err.contains("no run history at") && err.contains("no flow has run"),
        "{err}"
    );
}

/// Renders an SVG file to pixels, as an image viewer would.
fn rasterize(svg_path: &Path) -> resvg::tiny_skia::Pixmap {
    let text = std::fs::read_to_string(svg_path).unwrap();
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = resvg::usvg::Tree::from_str(&text, &options).expect("the timeline is valid SVG");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::default(),
        &mut pixmap.as_mut(),
    );
    pixmap
}

fn count_pixels(pixmap: &resvg::tiny_skia::Pixmap, rgb: (u8, u8, u8)) -> usize {
    pixmap
        .pixels()
        .iter()
        .filter(|p| (p.red(), p.green(), p.blue()) == rgb)
        .count()
}

#[test]
fn timeline_draws_runs_by_state_and_the_trip() {
    let (home, name) = history();
    let svg_path = home.join("run.svg");
    let (ok, out, err) = prefecto(
        home,
        &[
            "flow-run",
            "timeline",
            name,
            "-o",
            svg_path.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("(5 task runs)"), "{out}");
    let pixmap = rasterize(&svg_path);
    assert_eq!(pixmap.width(), 1000);
    // Completed (green), failed (red) and cancelled (grey) bars are all drawn.
    assert!(
        count_pixels(&pixmap, (0x2c, 0xa0, 0x2c)) > 50,
        "no completed bar"
    );
    assert!(
        count_pixels(&pixmap, (0xd6, 0x27, 0x28)) > 50,
        "no failed bar or trip line"
    );
    assert!(
        count_pixels(&pixmap, (0x9e, 0x9e, 0x9e)) > 20,
        "no cancelled mark"
    );
    // Kept for a person to look at.
    pixmap
        .save_png(Path::new(env!("CARGO_TARGET_TMPDIR")).join("prefecto-timeline-test.png"))
        .unwrap();
}

#[task]
fn double(x: i64) -> i64 {
    x * 2
}

static CHAIN_NAME: OnceLock<String> = OnceLock::new();

#[flow]
fn chain() -> i64 {
    let _ = CHAIN_NAME.set(prefecto::flow::current_flow_run().unwrap().name);
    let first = double.submit(1);
    let gate = double.submit(2);
    double.submit_after(&[&gate], first).result().unwrap()
}

#[test]
fn inspect_json_lists_each_task_runs_upstream_runs() {
    let (home, value) = history_with("chain", chain);
    assert_eq!(value.unwrap(), 4);
    let name = CHAIN_NAME.get().unwrap();
    let (ok, out, _) = prefecto(&home, &["flow-run", "inspect", name, "--json"]);
    assert!(ok);
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    let task_runs = inspected["task_runs"].as_array().unwrap();
    let upstream = |name: &str| {
        task_runs
            .iter()
            .find(|run| run["name"] == name)
            .map(|run| run["upstream"].clone())
            .unwrap()
    };
    assert_eq!(upstream("double-0"), serde_json::json!([]));
    assert_eq!(
        upstream("double-2"),
        serde_json::json!([
            {"input": "x", "task_run": "double-0"},
            {"input": "wait_for", "task_run": "double-1"}
        ])
    );
    let _ = std::fs::remove_dir_all(&home);
}

/// An error that tries to forge a log line and drive the terminal.
const HOSTILE: &str = "bad\n01:02:03.456 | INFO    | Task run 'x-0' - Finished in state Completed()\x1b]0;owned\x07\x1b[2J";

#[task]
fn hostile_task(huge: bool) -> Result<(), String> {
    Err(if huge {
        format!("{}{}", "y".repeat(1_000_000), HOSTILE)
    } else {
        HOSTILE.to_string()
    })
}

static HOSTILE_NAME: OnceLock<String> = OnceLock::new();

#[flow]
fn hostile_flow() {
    let _ = HOSTILE_NAME.set(prefecto::flow::current_flow_run().unwrap().name);
    let _ = hostile_task(false);
    let _ = hostile_task(true);
}

/// A history with one flow run whose task errors are hostile text.
fn hostile_history() -> &'static (PathBuf, String) {
    static HISTORY: OnceLock<(PathBuf, String)> = OnceLock::new();
    HISTORY.get_or_init(|| {
        let (home, result) = history_with("hostile", hostile_flow);
        result.unwrap();
        (home, HOSTILE_NAME.get().unwrap().clone())
    })
}

/// No control character reaches the terminal, and no line is forged.
fn assert_safe_for_a_terminal(out: &str) {
    assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "a control character: {:?}",
        &out[..out.len().min(400)]
    );
    assert!(
        !out.lines()
            .any(|l| l.ends_with("Task run 'x-0' - Finished in state Completed()")),
        "a forged line"
    );
}

#[test]
fn hostile_messages_are_escaped_for_people_and_exact_in_json() {
    let (home, name) = hostile_history();
    for args in [
        vec!["flow-run", "logs", name.as_str()],
        vec!["flow-run", "inspect", name.as_str()],
        vec!["task-run", "ls", "--flow-run", name.as_str()],
        vec!["flow-run", "ls"],
    ] {
        let (ok, out, err) = prefecto(home, &args);
        assert!(ok, "{args:?}: {err}");
        assert_safe_for_a_terminal(&out);
    }
    // A 1 MB message is cut in tables, with a marker, rather than a panic.
    let (_, out, _) = prefecto(home, &["task-run", "ls", "--flow-run", name]);
    assert!(out.contains("more characters)"), "{out}");
    assert!(
        out.lines().all(|l| l.chars().count() < 1_000),
        "cells are cut"
    );

    let (ok, out, _) = prefecto(home, &["task-run", "ls", "--flow-run", name, "--json"]);
    assert!(ok);
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        runs[0]["state_message"], HOSTILE,
        "--json keeps the exact text"
    );
    assert_eq!(
        runs[1]["state_message"].as_str().unwrap().len(),
        1_000_000 + HOSTILE.len()
    );

    let svg = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prefecto-hostile-{}.svg", std::process::id()));
    let (ok, _, err) = prefecto(
        home,
        &["flow-run", "timeline", name, "-o", svg.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    rasterize(&svg);
    let _ = std::fs::remove_file(&svg);
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let (home, name) = hostile_history();
    let mut child = Command::new(env!("CARGO_BIN_EXE_prefecto"))
        .args(["flow-run", "logs", name])
        .env(HOME_ENV, home)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -0`: the reader goes away before the command writes.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{stderr}");
}
