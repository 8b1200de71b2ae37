//! BatchTask against what a Rust user would write instead, in one process,
//! interleaved, so that the ratios hold on a noisy machine. Prints tables;
//! `cargo bench --bench batch_task` (`-- --quick`: one small pass, for CI).
//!
//! - Cost per input: 1,000,000 trivial inputs (100,000 with `--quick`), size
//!   100, logs and history off, each workload run `REPS` times interleaved:
//!   the median and the range, and the median's ratio to every baseline
//!   (`buffer_unordered(100)`, a `JoinSet` under a `Semaphore(100)`,
//!   hand-written strict batches of 100 spawned tasks, rayon `par_iter`).
//! - Flatness: a streaming sliding window from 10k to 10M inputs (1M with
//!   `--quick`): µs per input at each count, the median over five rounds
//!   (three with `--quick`) that each run every count close together in
//!   time, the small counts several times a round.
//! - Memory: peak RSS, each workload in a fresh process of its own (this
//!   bench run again with `--rss`), at N and at N/100 inputs: the difference
//!   per input; and the time of that one run at N, with a cold allocator
//!   (the cost table's runs reuse what the earlier ones freed). Nothing
//!   counts allocations while anything is timed.
//!   `--rss WORKLOAD N [--history] [--times K]` runs one workload alone (to
//!   profile it), K times in the process, and prints the last run's time and the median.
//! - `--only SECTION` (`cost`, `flatness`, `memory`, `history`, `stragglers`)
//!   prints that table alone.
//! - History: the same maps with the SQLite run history on, against off,
//!   three times `REPS` rounds each, interleaved: the ratio of the two
//!   medians, and the median of each round's ratio (a round's two runs are
//!   moments apart, so a slow spell of the host weighs on both).
//! - Stragglers: 2,000 inputs, 5% sleeping 50 ms and 95% 1 ms, size 50,
//!   against the ideal from the nominal durations and from the measured ones.

use std::process::Command;

use prefecto::prelude::*;
use tokio::runtime::Runtime;

#[path = "batch_task/workloads.rs"]
mod workloads;
use workloads::*;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Peak RSS (KiB) and µs per input of one run of `workload` over `n`
/// inputs, in a fresh process: a cold allocator, as a program that maps
/// once finds it.
fn fresh_run(workload: Workload, n: u64) -> (u64, f64) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--rss", &workload.name(), &n.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|value| value.trim().to_string())
            .unwrap_or_else(|| panic!("no {name}from {workload:?}: {stdout}"))
    };
    let kib = field("rss_kib ").parse().unwrap();
    let us = field("us_per_input ").parse().unwrap();
    (kib, us)
}

/// The median and the range of some seconds, in µs per input.
fn per_input(seconds: &mut [f64], n: u64) -> (f64, f64, f64) {
    seconds.sort_by(f64::total_cmp);
    let us = |s: f64| s * 1e6 / n as f64;
    (
        us(seconds[seconds.len() / 2]),
        us(seconds[0]),
        us(seconds[seconds.len() - 1]),
    )
}

/// A set-up with the run history on, in a fresh folder (to remove after).
fn with_fresh_history() -> (Prefecto, std::path::PathBuf) {
    let home = std::env::temp_dir().join(format!("prefecto-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    let history_on = Prefecto::builder()
        .engine_only()
        .history_in(&home)
        .build()
        .unwrap();
    (history_on, home)
}

fn main() {
    // Logs off: the figures are the engine's, not the console's.
    prefecto::logging::init(tracing::level_filters::LevelFilter::OFF);
    let args: Vec<String> = std::env::args().collect();
    let engine_only = Prefecto::builder().engine_only().build().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--rss") {
        let workload = Workload::parse(&args[i + 1]);
        let n = args[i + 2].parse().unwrap();
        // `--history`: with the run history on, in a fresh folder (to profile it).
        // `--times K`: K runs in the process (a warm allocator and pools, as in
        // the tables): the last one printed, and the median of all.
        let times = match args.iter().position(|a| a == "--times") {
            Some(t) => args[t + 1].parse().unwrap(),
            None => 1,
        };
        let runtime = runtime();
        // Every run's seconds: the last is printed, and the median of all.
        let all_of = |setup: &Prefecto| {
            (0..times)
                .map(|_| setup.scope(|| workload.run(&runtime, n)))
                .collect::<Vec<f64>>()
        };
        let mut seconds = match args.iter().any(|a| a == "--history") {
            false => all_of(&engine_only),
            true => {
                let (history_on, home) = with_fresh_history();
                let seconds = all_of(&history_on);
                drop(history_on);
                let _ = std::fs::remove_dir_all(&home);
                seconds
            }
        };
        // The time of the last run too, for comparing two builds run by turns.
        let last = seconds.last().copied().unwrap_or_default();
        println!("us_per_input {:.3}", last * 1e6 / n as f64);
        println!("us_median {:.3}", per_input(&mut seconds, n).0);
        println!("rss_kib {}", peak_rss_kib());
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `--only SECTION` (cost, flatness, memory, history, stragglers): that
    // table alone, to compare two builds on one figure.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).cloned().unwrap_or_default());
    const SECTIONS: [&str; 5] = ["cost", "flatness", "memory", "history", "stragglers"];
    if let Some(section) = only.as_deref().filter(|o| !SECTIONS.contains(o)) {
        eprintln!("--only {section:?}: no such section; the sections are {SECTIONS:?}");
        std::process::exit(2);
    }
    let wants = |section: &str| only.as_deref().is_none_or(|o| o == section);
    let (n, reps) = if quick { (100_000, 1) } else { (1_000_000, 5) };
    let runtime = runtime();
    println!(
        "prefecto BatchTask against hand-written Rust: {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let workloads: Vec<Workload> = BASELINES.iter().chain(PREFECTO.iter()).copied().collect();
    if wants("cost") {
        cost_per_input(&engine_only, &runtime, &workloads, n, reps);
    }
    if wants("flatness") {
        flatness(&engine_only, &runtime, quick, reps);
    }
    if wants("memory") {
        memory(&workloads, n);
    }
    if wants("history") {
        history(&engine_only, &runtime, quick, reps);
    }
    if wants("stragglers") {
        stragglers(&engine_only, &runtime);
    }
}

/// Cost per input of every workload, interleaved, with its ratios.
fn cost_per_input(
    engine_only: &Prefecto,
    runtime: &Runtime,
    workloads: &[Workload],
    n: u64,
    reps: usize,
) {
    println!(
        "{n} trivial inputs, size {SIZE}, logs and history off; median of {reps} interleaved runs [min-max], µs per input"
    );
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); workloads.len()];
    engine_only.scope(|| {
        for w in workloads {
            w.run(runtime, n.min(10_000)); // warm-up: first use of pools and allocator
        }
        for _ in 0..reps {
            for (w, s) in workloads.iter().zip(&mut seconds) {
                s.push(w.run(runtime, n));
            }
        }
    });
    let medians: Vec<(f64, f64, f64)> = seconds.iter_mut().map(|s| per_input(s, n)).collect();
    println!(
        "{:<34} {:>22} {:>9} {:>9} {:>9} {:>9}",
        "workload", "µs/input", "vs b_u", "vs strict", "vs JoinSet", "vs rayon"
    );
    for (w, (median, low, high)) in workloads.iter().zip(&medians) {
        let ratio = |b: usize| format!("{:.2}x", median / medians[b].0);
        println!(
            "{:<34} {:>8.3} [{:.3}-{:.3}] {:>9} {:>9} {:>9} {:>9}",
            w.name(),
            median,
            low,
            high,
            ratio(0),
            ratio(2),
            ratio(1),
            ratio(3)
        );
    }
}

/// Cost per input of a streaming window from 10k to 10M inputs.
fn flatness(engine_only: &Prefecto, runtime: &Runtime, quick: bool, reps: usize) {
    println!();
    let counts: &[u64] = if quick {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[10_000, 100_000, 1_000_000, 10_000_000]
    };
    // The counts take turns, round by round, each round running every
    // count close together in time: the host has slow spells (seconds at a
    // time at up to twice the usual cost), and a count measured only in
    // part of the section (small counts take milliseconds) took them for
    // the engine's. A small count runs several times a round, as one
    // wake-up late shows in a few milliseconds; its median is over all.
    let rounds = reps.max(3);
    let per_round = |count: u64| (300_000 / count).clamp(1, 5) as usize;
    let runs: Vec<String> = counts
        .iter()
        .map(|&count| format!("{} at {count}", rounds * per_round(count)))
        .collect();
    println!(
        "flatness: stream window, µs per input (median of {} runs, in {rounds} rounds of every count)",
        runs.join(", ")
    );
    for sync_body in [false, true] {
        let w = Stream {
            mode: BatchMode::SlidingWindow,
            sync_body,
        };
        let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
        for _ in 0..rounds {
            for (&count, times) in counts.iter().zip(&mut seconds).rev() {
                for _ in 0..per_round(count) {
                    times.push(engine_only.scope(|| w.run(runtime, count)));
                }
            }
        }
        let costs: Vec<f64> = counts
            .iter()
            .zip(&mut seconds)
            .map(|(&count, times)| per_input(times, count).0)
            .collect();
        let spread = costs.iter().copied().fold(0f64, f64::max)
            / costs.iter().copied().fold(f64::MAX, f64::min);
        let cells: Vec<String> = counts
            .iter()
            .zip(&costs)
            .map(|(c, us)| format!("{c}: {us:.3}"))
            .collect();
        println!(
            "{:<34} {}  (max/min {spread:.2}x)",
            w.name(),
            cells.join(", ")
        );
    }
}

/// Peak RSS per input, and the time of one run, each workload in a fresh
/// process.
fn memory(workloads: &[Workload], n: u64) {
    println!();
    let small = n / 100;
    println!(
        "each in a fresh process: peak RSS at {n} and at {small} inputs, the difference per input, \
         and µs per input of the run at {n} (one run, a cold allocator)"
    );
    let mut baseline = None;
    for w in workloads {
        let ((big, us), (little, _)) = (fresh_run(*w, n), fresh_run(*w, small));
        let b_u = *baseline.get_or_insert(us);
        println!(
            "{:<34} {:>8.1} MiB {:>8.1} MiB {:>8.1} B/input {:>8.3} µs {:>7.2}x b_u",
            w.name(),
            big as f64 / 1024.0,
            little as f64 / 1024.0,
            (big as f64 - little as f64) * 1024.0 / (n - small) as f64,
            us,
            us / b_u
        );
    }
}

/// The same maps with the run history on and off, interleaved.
fn history(engine_only: &Prefecto, runtime: &Runtime, quick: bool, reps: usize) {
    println!();
    let history_inputs = if quick { 10_000 } else { 100_000 };
    // Three times the rounds: a round is short (100k quick runs), and the
    // ratio of two medians of five moved by a third between runs of the bench.
    let history_reps = reps * 3;
    println!(
        "run history (SQLite), {history_inputs} inputs: µs per input, off and on (median of {history_reps})"
    );
    let (history_on, home) = with_fresh_history();
    for w in [PREFECTO[0], PREFECTO[2], PREFECTO[4], PREFECTO[5]] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..history_reps {
            off.push(engine_only.scope(|| w.run(runtime, history_inputs)));
            // The flow call returns once its history is committed: the
            // writer's work is in the figure.
            on.push(history_on.scope(|| w.run(runtime, history_inputs)));
        }
        // Each round's own ratio: its two runs are moments apart, so a slow
        // spell of the host (seconds long) weighs on both. Over six runs of
        // this section, the ratio of the medians spanned 1.07-1.37x across
        // the four maps; the median of the rounds' ratios 1.05-1.25x.
        let mut rounds: Vec<f64> = on.iter().zip(&off).map(|(on, off)| on / off).collect();
        rounds.sort_by(f64::total_cmp);
        let by_round = rounds[rounds.len() / 2];
        let (off, on) = (
            per_input(&mut off, history_inputs).0,
            per_input(&mut on, history_inputs).0,
        );
        println!(
            "{:<34} off {off:>7.3}, on {on:>7.3} ({:.2}x off; by round {by_round:.2}x)",
            w.name(),
            on / off
        );
    }
    drop(history_on);
    let _ = std::fs::remove_dir_all(&home);
}

/// A map whose inputs take 1 ms or 50 ms, against its ideal time.
fn stragglers(engine_only: &Prefecto, runtime: &Runtime) {
    println!();
    let nominal: f64 = (0..2000).map(straggler_millis).sum::<u64>() as f64 / 1e3 / 50.0;
    println!(
        "stragglers: 2,000 inputs, 5% take 50 ms and 95% 1 ms, size 50; ideal from the nominal durations {nominal:.3} s"
    );
    engine_only.scope(|| {
        for mode in [BatchMode::Strict, BatchMode::SlidingWindow] {
            let (took, measured_ideal) = runtime.block_on(straggler_flow(mode)).unwrap();
            println!(
                "{:<8} {took:.3} s: {:.2}x the nominal ideal, {:.2}x the measured ideal ({measured_ideal:.3} s)",
                format!("{mode:?}"),
                took / nominal,
                took / measured_ideal
            );
        }
    });
}
