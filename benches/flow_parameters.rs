//! What a flow call pays for a large argument: `#[flow] fn sum_items(items:
//! Vec<u64>)` called with 1,000,000 items, the engine alone and with the run
//! history (no server), against the same body called as a plain function.
//! Prints the median and range of 7 calls of each.
//!
//! `cargo bench --bench flow_parameters`

use std::time::{Duration, Instant};

use prefecto::prelude::*;

fn body(items: &[u64]) -> u64 {
    items.iter().sum()
}

#[flow]
fn sum_items(items: Vec<u64>) -> u64 {
    body(&items)
}

fn figures(label: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<44} median {:>8.2} ms   range {:.2}–{:.2} ms",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
}

fn main() {
    let items: Vec<u64> = (0..1_000_000).collect();
    let runs = 7;
    let mut plain = Vec::new();
    for _ in 0..runs {
        let copy = items.clone();
        let started = Instant::now();
        std::hint::black_box(body(&copy));
        plain.push(started.elapsed());
    }
    let home = std::env::temp_dir().join(format!("prefecto-bench-params-{}", std::process::id()));
    let engine_only = Prefecto::builder()
        .engine_only()
        .console_logs(None)
        .build()
        .unwrap();
    let with_history = Prefecto::builder()
        .engine_only()
        .console_logs(None)
        .history_in(&home)
        .build()
        .unwrap();
    let calls = |set_up: &Prefecto| {
        (0..runs)
            .map(|_| {
                let copy = items.clone();
                let started = Instant::now();
                set_up.scope(|| std::hint::black_box(sum_items(copy).unwrap()));
                started.elapsed()
            })
            .collect::<Vec<_>>()
    };
    let engine = calls(&engine_only);
    let history = calls(&with_history);
    println!("a flow called with a Vec<u64> of 1,000,000 items (its clone not counted):");
    figures("the body as a plain function", plain);
    figures("the flow call, engine only", engine);
    figures("the flow call, with the run history", history);
    drop(with_history);
    let _ = std::fs::remove_dir_all(home);
}
