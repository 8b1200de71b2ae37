//! A deployable binary: two flows that a Prefect process worker can run.
//!
//! ```text
//! cargo build --example served_flows
//! target/debug/examples/served_flows --help
//! target/debug/examples/served_flows sum-to --param n=10      # prints 55
//! prefecto deploy target/debug/examples/served_flows --flow sum-to --name fan-out --pool rust-pool
//! ```
//!
//! See the `fan_out` example for the parent that maps inputs over it.

use std::time::Duration;

use prefecto::prelude::*;

#[task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Sums the numbers from 1 to `n`, one task run per number.
///
/// To try kill switches and crashes: `fail_on` fails the run when `n` is
/// that number, `abort_on` kills its process (the worker reports it
/// Crashed); `sleep_ms` makes every other run take at least that long.
#[flow]
async fn sum_to(
    n: u64,
    fail_on: Option<u64>,
    abort_on: Option<u64>,
    sleep_ms: Option<u64>,
) -> Result<u64, String> {
    if fail_on == Some(n) {
        return Err(format!("{n} is the number this run was told to fail on"));
    }
    if abort_on == Some(n) {
        std::process::abort();
    }
    if let Some(ms) = sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut total = 0;
    for k in 1..=n {
        total = add(total, k).map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// Greets someone.
#[flow]
fn greet(name: String) -> String {
    format!("Hello, {name}!")
}

fn main() -> std::process::ExitCode {
    prefecto::serve!(sum_to, greet)
}
