//! Streams COUNT inputs (10,000,000 by default) through a sliding window of
//! 100 with the run history on, then prints the process's peak RSS and
//! checks, from the history, that every input's task run is there and
//! completed. Memory stays flat: the stream holds only what is in flight.
//!
//!     cargo run --release --example stream_millions -- [COUNT] [--max-rss-mib N]
//!
//! The history goes to a fresh folder under the system's temp dir (removed
//! afterwards), so that millions of runs do not land in `~/.prefecto`;
//! console logs are at WARN, for the same reason. Exits 1 if an outcome is
//! missing, or if the peak RSS is over `--max-rss-mib`.

use std::process::ExitCode;
use std::time::Instant;

use prefecto::StateType;
use prefecto::prelude::*;
use prefecto::store::{DB_FILE, Store};
use tracing::level_filters::LevelFilter;

#[task]
fn scramble(x: u64) -> u64 {
    x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40
}

#[flow]
fn stream_all(count: u64) -> (uuid::Uuid, u64) {
    let batch = BatchTask::new(scramble, 100).unwrap().sliding_window();
    let mut completed = 0;
    for run in batch.stream_unordered(0..count).unwrap() {
        if run.result.is_ok() {
            completed += 1;
        }
    }
    (prefecto::flow::current_flow_run().unwrap().id, completed)
}

/// The process's peak resident set, from `/proc/self/status` (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut count: u64 = 10_000_000;
    let mut max_rss_mib: Option<u64> = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-rss-mib" => max_rss_mib = args.next().and_then(|n| n.parse().ok()),
            n => match n.replace('_', "").parse() {
                Ok(n) => count = n,
                Err(_) => {
                    eprintln!("usage: stream_millions [COUNT] [--max-rss-mib N]");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let home =
        std::env::temp_dir().join(format!("prefecto-stream-millions-{}", std::process::id()));
    let prefecto = Prefecto::builder()
        .engine_only()
        .history_in(&home)
        .console_logs(Some(LevelFilter::WARN))
        .build()
        .expect("the run history opens");
    let started = Instant::now();
    let (flow_run, completed) = prefecto.scope(|| stream_all(count)).expect("the flow runs");
    let elapsed = started.elapsed();
    let peak_mib = peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    println!(
        "{count} inputs streamed in {:.1} s ({:.2} µs per input), {completed} completed",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / count.max(1) as f64
    );
    println!("peak RSS: {peak_mib:.1} MiB");
    let store = Store::open_existing(home.join(DB_FILE)).expect("the history is there");
    let counts = store.task_run_counts(flow_run).expect("the history reads");
    let recorded = counts.get(&StateType::Completed).copied().unwrap_or(0);
    println!("in the history: {recorded} task runs completed, {counts:?}");
    drop(store);
    drop(prefecto);
    let _ = std::fs::remove_dir_all(&home);
    let mut ok = completed == count && recorded == count && counts.len() == 1;
    if !ok {
        eprintln!("an input's outcome is missing");
    }
    if let Some(limit) = max_rss_mib
        && peak_mib > limit as f64
    {
        eprintln!("peak RSS {peak_mib:.1} MiB is over {limit} MiB");
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
