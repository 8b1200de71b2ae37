//! The run history on a disk that fills mid-run: every run is still recorded
//! (the reserve given up, or the records waiting until space returns), and
//! a flow run whose end could not be written at all is shown as an
//! unrecorded end, not as a plain crash.
//!
//! Each flow runs in a child process in a mount namespace of its own, on a
//! small tmpfs it fills (`unshare --mount`, which needs root or user
//! namespaces; without them the test says so and passes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use prefecto::prelude::*;
use prefecto::store::{self, Store};

const CHILD_ENV: &str = "PREFECTO_TEST_CHILD";
/// The file the child fills the disk with.
const FILL_ENV: &str = "PREFECTO_TEST_FILL";
/// Milliseconds after filling at which the child frees the space again.
const FREE_AFTER_ENV: &str = "PREFECTO_TEST_FREE_AFTER_MS";
const INPUTS: u64 = 3_000;
const FILL_AT: u64 = 1_000;

#[task]
fn fill_at(x: u64) -> u64 {
    if x == FILL_AT {
        fill_the_disk();
    }
    x
}

#[flow]
fn through_a_full_disk() -> usize {
    let batch = BatchTask::new(fill_at, 50).unwrap();
    batch.map(0..INPUTS).unwrap().results().unwrap().len()
}

/// Writes the fill file until the disk is full; frees it later if asked.
fn fill_the_disk() {
    use std::io::Write;
    let path = PathBuf::from(std::env::var(FILL_ENV).unwrap());
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    // The last partial blocks, so that not even a page is left.
    let small = [7u8; 512];
    while file.write_all(&small).is_ok() {}
    let _ = file.sync_all();
    if let Ok(after) = std::env::var(FREE_AFTER_ENV) {
        let after = Duration::from_millis(after.parse().unwrap());
        std::thread::spawn(move || {
            std::thread::sleep(after);
            std::fs::remove_file(&path).unwrap();
        });
    }
}

/// What a child process does, by role; nothing when run as an ordinary test.
#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("through_a_full_disk") {
        assert_eq!(through_a_full_disk().unwrap(), INPUTS as usize);
    }
}

/// Whether this machine lets a test mount a tmpfs of its own.
fn can_mount() -> bool {
    let probe = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m tmpfs /mnt",
        ])
        .output();
    let ok = probe.is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: `unshare --mount` cannot mount a tmpfs here (run the tests as root, as CI does)"
        );
    }
    ok
}

/// Runs the child flow on a fresh tmpfs of `size_mb`, with `env` set; gives
/// its output and a copy of the history made before the tmpfs went away.
fn run_on_small_disk(name: &str, size_mb: u32, env: &[(&str, &str)]) -> (Output, PathBuf) {
    let work = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prefecto-full-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let disk = work.join("disk");
    let copy = work.join("copy");
    std::fs::create_dir_all(&disk).unwrap();
    std::fs::create_dir_all(&copy).unwrap();
    let script = format!(
        "mount -t tmpfs -o size={size_mb}m tmpfs \"$1\" || exit 90
         shift; dest=\"$1\"; shift
         \"$@\"; code=$?
         cp -a \"$PREFECTO_HOME\"/. \"$dest\"/ 2>/dev/null
         exit $code"
    );
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "sh", "-c", &script, "sh"])
        .arg(&disk)
        .arg(&copy)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--include-ignored", "--nocapture"])
        .env(CHILD_ENV, "through_a_full_disk")
        .env("PREFECTO_HOME", disk.join("home"))
        .env(FILL_ENV, disk.join("fill"))
        .env("PREFECTO_PROGRESS", "off");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert_ne!(output.status.code(), Some(90), "the tmpfs was not mounted");
    (output, copy)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The flow run the child recorded, and how many of its task runs completed.
fn recorded(home: &Path) -> (prefecto::store::FlowRunRow, usize) {
    let store = Store::open_existing(home.join(store::DB_FILE)).unwrap();
    let run = store
        .flow_runs(1, None, Some("through-a-full-disk"))
        .unwrap()
        .pop()
        .expect("the flow run was recorded when it started");
    let completed = store.task_runs(run.id, Some("COMPLETED")).unwrap().len();
    (run, completed)
}

#[test]
fn the_reserve_keeps_recording_when_the_disk_fills() {
    if !can_mount() {
        return;
    }
    let (output, home) = run_on_small_disk("reserve", 12, &[]);
    let stderr = stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("its reserve was given up"),
        "the user is told: {stderr}"
    );
    let (run, completed) = recorded(&home);
    assert_eq!(run.state_name, "Completed", "{run:?}\n{stderr}");
    assert_eq!(completed as u64, INPUTS, "every task run recorded");
}

#[test]
fn records_wait_for_space_to_return() {
    if !can_mount() {
        return;
    }
    let (output, home) = run_on_small_disk(
        "waits",
        8,
        &[
            ("PREFECTO_HISTORY_RESERVE_MB", "0"),
            (FREE_AFTER_ENV, "1500"),
        ],
    );
    let stderr = stderr(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is full; records wait in memory"),
        "{stderr}"
    );
    assert!(stderr.contains("has room again"), "{stderr}");
    let (run, completed) = recorded(&home);
    assert_eq!(run.state_name, "Completed", "{run:?}\n{stderr}");
    assert_eq!(completed as u64, INPUTS, "every task run recorded");
}

#[test]
fn an_end_that_could_not_be_written_is_shown_as_unrecorded() {
    if !can_mount() {
        return;
    }
    let (output, home) = run_on_small_disk("never", 8, &[("PREFECTO_HISTORY_RESERVE_MB", "0")]);
    let stderr = stderr(&output);
    // The flow itself completed; only its record could not be written.
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is still full after 10 s"),
        "the flush gave up in time and said so: {stderr}"
    );
    let (run, completed) = recorded(&home);
    assert_eq!(run.state_name, "Crashed", "{run:?}");
    let message = run.state_message.unwrap_or_default();
    assert!(
        message.contains("without recording how the run ended") && message.contains("a full disk"),
        "{message}"
    );
    assert!((completed as u64) < INPUTS);
}
