//! The console log of the seed's example, line by line, in Prefect's format.

use std::io::Write;
use std::sync::{Arc, Mutex};

use prefecto::prelude::*;
use tracing::level_filters::LevelFilter;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[flow]
fn my_flow() -> (String, Vec<i64>) {
    let batch_add = BatchTask::new(add, 2).unwrap();
    let results = batch_add
        .map(vec![1, 2, 3, 4], vec![2, 3, 4, 5])
        .unwrap()
        .results()
        .unwrap();
    (prefecto::flow::current_flow_run().unwrap().name, results)
}

/// Drops the `HH:MM:SS.mmm | ` prefix after checking its shape.
fn without_time(line: &str) -> &str {
    let (time, rest) = line.split_once(" | ").expect("a Prefect-format line");
    let bytes = time.as_bytes();
    assert_eq!(bytes.len(), 12, "{line}");
    assert!(
        bytes[2] == b':' && bytes[5] == b':' && bytes[8] == b'.',
        "{line}"
    );
    rest
}

#[test]
fn the_seed_example_logs_as_prefect_does() {
    let captured = Captured::default();
    let writer = captured.clone();
    assert!(prefecto::logging::init_with_writer(
        LevelFilter::DEBUG,
        move || writer.clone()
    ));

    let (flow_run, results) = my_flow().unwrap();
    assert_eq!(results, vec![3, 5, 7, 9]);

    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = output.lines().map(without_time).collect();
    let fr = format!("Flow run '{flow_run}'");
    let expected_in_order = [
        format!("INFO    | prefecto.engine - Created flow run '{flow_run}' for flow 'my-flow'"),
        format!("DEBUG   | {fr} - Mapping 'add' batch 1 of 2."),
        format!("INFO    | {fr} - Created task run 'add-0' for task 'add'"),
        format!("INFO    | {fr} - Submitted task run 'add-0' for execution."),
        format!("DEBUG   | {fr} - Mapping 'add' batch 2 of 2."),
        format!("INFO    | {fr} - Created task run 'add-3' for task 'add'"),
        format!("INFO    | {fr} - Submitted task run 'add-3' for execution."),
        format!("INFO    | {fr} - Finished in state Completed()"),
    ];
    let mut position = 0;
    for expected in &expected_in_order {
        let found = lines[position..]
            .iter()
            .position(|line| line == expected)
            .unwrap_or_else(|| panic!("missing or out of order: {expected}\n{output}"));
        position += found + 1;
    }
    for run in 0..4 {
        let finished = format!("INFO    | Task run 'add-{run}' - Finished in state Completed()");
        assert!(lines.contains(&finished.as_str()), "{finished}\n{output}");
    }
    // Batch 2 starts only after every run of batch 1 has finished.
    let batch_2 = lines
        .iter()
        .position(|l| l.ends_with("batch 2 of 2."))
        .unwrap();
    for run in 0..2 {
        let finished = lines
            .iter()
            .position(|l| l.starts_with(&format!("INFO    | Task run 'add-{run}' - Finished")))
            .unwrap();
        assert!(finished < batch_2, "{output}");
    }
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("Finished in state Completed()")
    );

    // The same console, then a task whose error is hostile text.
    captured.0.lock().unwrap().clear();
    let _ = hostile();
    let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    untrusted_text_stays_on_its_line(&output);
}

/// An error message that tries to forge a log line and drive the terminal.
const HOSTILE: &str = "bad\n01:02:03.456 | INFO    | Task run 'say-0' - Finished in state Completed()\x1b]0;owned\x07\x1b[2J";

#[task]
fn say() -> Result<(), String> {
    Err(HOSTILE.to_string())
}

#[flow]
fn hostile() {
    let _ = say();
}

/// Task errors and results are untrusted: on the console every record stays
/// on its line, and no control character reaches the terminal.
fn untrusted_text_stays_on_its_line(output: &str) {
    assert!(
        !output.contains('\x1b') && !output.contains('\x07'),
        "{output:?}"
    );
    let forged = output
        .lines()
        .filter(|line| line.ends_with("Task run 'say-0' - Finished in state Completed()"))
        .count();
    assert_eq!(forged, 0, "a forged line: {output}");
    for line in output.lines() {
        without_time(line);
    }
    assert!(
        output.contains(r"failed with error: bad\n01:02:03.456 | INFO    | Task run 'say-0' - Finished in state Completed()\u{1b}]0;owned\u{7}\u{1b}[2J - Retries"),
        "{output}"
    );
}
