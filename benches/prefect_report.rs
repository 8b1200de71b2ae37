//! What reporting to a Prefect server costs: the seed workload (`add` mapped
//! in batches) at n = 1,000 / size 100 and n = 10,000 / size 500, against the
//! server `PREFECT_API_URL` names (a local `prefect server start`, SQLite).
//!
//! `PREFECT_API_URL=http://127.0.0.1:4200/api cargo bench --bench prefect_report`
//!
//! For each: the time the tasks took (the flow body), the time until the
//! flow call returned (as soon as its task runs are done), the time until
//! the server had every task run (`Prefecto::shutdown` waits for it, as
//! process exit does), whether it then had them all, HTTP requests per task
//! run, events sent again, and the log rows the server holds for the run. A
//! benchmark, not a test: without a server it says so and stops.

use std::time::Instant;

use prefecto::concurrency::BatchTask;
use prefecto::prefect_api::{ApiConfig, Client, Sent};
use prefecto::prelude::*;
use serde_json::json;

#[task]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[flow]
fn seed_workload(n: i64, size: usize) -> (String, f64) {
    let started = Instant::now();
    let batch = BatchTask::new(add, size).unwrap();
    let sums = batch
        .map((0..n).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>())
        .unwrap()
        .results()
        .unwrap();
    assert_eq!(sums.len() as i64, n);
    (
        prefecto::flow::current_flow_run().unwrap().name,
        started.elapsed().as_secs_f64(),
    )
}

fn main() {
    let Ok(url) = std::env::var("PREFECT_API_URL") else {
        println!(
            "prefect_report: set PREFECT_API_URL to a local Prefect server (prefect server start) to run it."
        );
        return;
    };
    // Logs at WARNING, as a big map would run; the lines still go to the server.
    if std::env::var_os("PREFECTO_LOGGING_LEVEL").is_none() {
        prefecto::logging::init(tracing::level_filters::LevelFilter::WARN);
    }
    let prefecto = Prefecto::builder()
        .console_logs(None)
        .build()
        .unwrap()
        .install()
        .unwrap();
    let counters = || prefecto.prefect_counters().unwrap_or_default();
    let client = Client::new(ApiConfig::new(&url).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("reporting the seed workload to {url}");
    println!(
        "{:>7} {:>5} {:>10} {:>13} {:>14} {:>12} {:>14} {:>9} {:>7} {:>9}",
        "inputs",
        "size",
        "tasks",
        "flow returns",
        "server has all",
        "on server",
        "requests/run",
        "requests",
        "resent",
        "log rows"
    );
    for (n, size) in [(1_000i64, 100usize), (10_000, 500)] {
        let before = counters();
        let started = Instant::now();
        let (name, body) = seed_workload(n, size).unwrap();
        let returned = started.elapsed().as_secs_f64();
        prefecto.shutdown();
        let delivered = started.elapsed().as_secs_f64();
        let after = counters();
        let mut sent = Sent::default();
        let run = runtime
            .block_on(client.send(
                reqwest::Method::POST,
                "/flow_runs/filter",
                // Run names repeat across many runs: the newest of this flow.
                Some(&json!({
                    "flow_runs": { "name": { "any_": [name] } },
                    "flows": { "name": { "any_": ["seed-workload"] } },
                    "sort": "EXPECTED_START_TIME_DESC",
                    "limit": 1,
                })),
                &mut sent,
            ))
            .unwrap();
        let id = run[0]["id"].clone();
        let recorded = runtime
            .block_on(client.send(
                reqwest::Method::POST,
                "/task_runs/count",
                Some(&json!({ "flow_runs": { "id": { "any_": [id] } } })),
                &mut sent,
            ))
            .unwrap();
        let mut log_rows = 0;
        loop {
            let page = runtime
                .block_on(client.send(
                    reqwest::Method::POST,
                    "/logs/filter",
                    Some(&json!({
                        "logs": { "flow_run_id": { "any_": [id] } },
                        "limit": 200,
                        "offset": log_rows,
                    })),
                    &mut sent,
                ))
                .unwrap();
            let n = page.as_array().map_or(0, Vec::len);
            log_rows += n;
            if n < 200 {
                break;
            }
        }
        let requests = after.requests - before.requests;
        println!(
            "{:>7} {:>5} {:>9.3}s {:>12.2}s {:>13.1}s {:>6}/{:<5} {:>14.4} {:>9} {:>7} {:>9}",
            n,
            size,
            body,
            returned,
            delivered,
            recorded,
            n,
            requests as f64 / n as f64,
            requests,
            after.resent_events - before.resent_events,
            log_rows
        );
    }
}
