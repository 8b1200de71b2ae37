//! The progress bar, seen through a real terminal: this test binary runs
//! again as a child under `script`, which gives it a pseudo-terminal.

use std::process::Command;
use std::time::Duration;

use prefecto::prelude::*;

const CHILD_ENV: &str = "PREFECTO_TEST_CHILD";

#[task]
async fn step(i: u32) -> Result<u32, String> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    if i % 50 == 7 {
        return Err(format!("step {i} failed"));
    }
    Ok(i)
}

#[flow]
async fn steps() -> usize {
    let batch = BatchTask::new(step, 25).unwrap();
    batch.map_async(0..200u32).await.unwrap().len()
}

#[flow]
async fn plain_steps() -> usize {
    let futures = step.map(0..200u32).unwrap();
    futures.wait_async().await.len()
}

/// A stream of unknown length (a filtered range): the bar counts, without a total.
#[flow]
async fn streamed_steps() -> usize {
    let batch = BatchTask::new(step, 25).unwrap();
    let mut stream = batch.stream((0..200u32).filter(|_| true)).unwrap();
    let mut count = 0;
    while stream.next_async().await.is_some() {
        count += 1;
    }
    count
}

#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("batch") => assert_eq!(runtime.block_on(steps()).unwrap(), 200),
        Ok("plain") => assert_eq!(runtime.block_on(plain_steps()).unwrap(), 200),
        Ok("stream") => assert_eq!(runtime.block_on(streamed_steps()).unwrap(), 200),
        _ => {}
    }
}

/// Runs the child under a pseudo-terminal; what the terminal received.
fn run_in_terminal(progress: &str) -> String {
    run_role_in_terminal("batch", progress)
}

fn run_role_in_terminal(role: &str, progress: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let command = format!(
        "{} --exact child --include-ignored --nocapture --test-threads 1",
        exe.display()
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env(CHILD_ENV, role)
        .env("PREFECTO_PROGRESS", progress)
        .env("PREFECTO_LOGGING_LEVEL", "ERROR")
        .env("PREFECTO_HISTORY", "off")
        .output()
        .expect("`script` (util-linux) runs the child in a terminal");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The terminal's lines, with the bar's redraws (carriage returns, escape codes) resolved.
fn screen_lines(raw: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip an escape sequence: ESC [ ... letter.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split('\n')
        .map(|line| {
            line.rsplit('\r')
                .find(|part| !part.trim().is_empty())
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

#[test]
fn a_terminal_shows_the_bar_below_whole_log_lines() {
    let raw = run_in_terminal("on");
    let lines = screen_lines(&raw);
    let bars: Vec<&String> = lines.iter().filter(|l| l.starts_with("step [")).collect();
    assert!(!bars.is_empty(), "no progress bar in:\n{raw}");
    let last = bars.last().unwrap();
    assert!(last.contains("200/200"), "{last}");
    assert!(
        last.contains("196 completed · 4 failed · batch 8/8"),
        "{last}"
    );
    assert!(last.contains("ETA"), "{last}");
    // Every failure's log line arrived whole, on a line of its own.
    let failures: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("Finished in state Failed"))
        .collect();
    assert_eq!(failures.len(), 4, "{lines:#?}");
    for line in failures {
        assert!(
            line.contains(" | ERROR   | Task run 'step-"),
            "garbled: {line:?}"
        );
    }
}

#[test]
fn a_stream_of_unknown_length_shows_a_count_without_a_total() {
    let raw = run_role_in_terminal("stream", "on");
    let lines = screen_lines(&raw);
    let bars: Vec<&String> = lines.iter().filter(|l| l.starts_with("step ")).collect();
    let last = bars
        .last()
        .unwrap_or_else(|| panic!("no progress in:\n{raw}"));
    assert!(last.starts_with("step 200 done · "), "{last}");
    assert!(
        last.contains("196 completed · 4 failed · batch 8"),
        "{last}"
    );
    assert!(!last.contains("/200"), "no total: {last}");
}

#[test]
fn progress_off_shows_no_bar() {
    let lines = screen_lines(&run_in_terminal("off"));
    assert!(lines.iter().all(|l| !l.starts_with("step [")), "{lines:#?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("Finished in state Failed"))
            .count(),
        4
    );
}

#[test]
fn a_plain_map_of_many_inputs_shows_a_bar_too() {
    let lines = screen_lines(&run_role_in_terminal("plain", "on"));
    let last = lines
        .iter()
        .rfind(|l| l.starts_with("step ["))
        .unwrap_or_else(|| panic!("no bar: {lines:#?}"));
    assert!(
        last.contains("200/200 · 196 completed · 4 failed"),
        "{last}"
    );
}
