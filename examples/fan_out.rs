//! Fans inputs out over Prefect workers: each input is a flow run of the
//! `served_flows` binary's `sum-to` flow, at most `size` at a time, and a
//! kill switch stops the fan-out at the first failed child, cancelling the
//! children in flight on the server.
//!
//! ```text
//! cargo build --examples
//! export PREFECT_API_URL=http://127.0.0.1:4200/api
//! prefect worker start --pool rust-pool --type process &   # twice, for 2 workers
//! prefect worker start --pool rust-pool --type process &
//! target/debug/examples/fan_out --param count=100 --param size=10
//! target/debug/examples/fan_out --param count=100 --param size=10 --param fail_on=7
//! ```
//!
//! It deploys `served_flows` (beside it) as `sum-to/fan-out` on the work
//! pool `rust-pool` first, as `prefecto deploy` would.

use prefecto::deployments::{Deployment, DeploymentTask, deploy};
use prefecto::prefect_api::{ApiConfig, Client};
use prefecto::prelude::*;
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Registers `sum-to/fan-out`: the `served_flows` binary beside this one.
async fn deploy_children() -> Result<(), BoxError> {
    let binary = std::env::current_exe()?.with_file_name("served_flows");
    if !binary.exists() {
        return Err(format!("{} is missing: cargo build --examples", binary.display()).into());
    }
    let config = ApiConfig::from_env()?.ok_or("set PREFECT_API_URL to a Prefect server")?;
    let served = prefecto::served_flow!(served_flows_schema::sum_to);
    let command = format!("{} sum-to", binary.display());
    let deployment = Deployment::of(&served, "fan-out", &command)
        .work_pool("rust-pool")
        .env(
            prefecto::deployments::RESULTS_DIR_ENV,
            &prefecto::deployments::results_dir().to_string_lossy(),
        );
    deploy(&Client::new(config)?, &deployment).await?;
    Ok(())
}

/// The child flow's signature, for its parameter schema (its body runs in `served_flows`).
mod served_flows_schema {
    use prefecto::prelude::*;

    /// Sums the numbers from 1 to `n`.
    #[flow]
    pub fn sum_to(
        n: u64,
        fail_on: Option<u64>,
        abort_on: Option<u64>,
        sleep_ms: Option<u64>,
    ) -> u64 {
        let _ = (fail_on, abort_on, sleep_ms);
        (1..=n).sum()
    }
}

/// Runs `count` children on the workers, `size` at a time: child `i` sums
/// 1..=n for n = 1 + i % 10, one task run per number (`deploy = false`: the
/// deployment is there already).
#[flow]
async fn fan_out(
    count: u64,
    size: usize,
    fail_on: Option<u64>,
    deploy: Option<bool>,
) -> Result<u64, BoxError> {
    if deploy != Some(false) {
        deploy_children().await?;
    }
    let started = std::time::Instant::now();
    let sum_to = DeploymentTask::<Value, u64>::typed("sum-to/fan-out")?;
    let batch = BatchTask::new(sum_to.clone(), size)?
        .sliding_window()
        .with_kill_switch(AnyFailedSwitch::new());
    let inputs: Vec<Value> = (0..count)
        .map(|i| json!({"n": 1 + i % 10, "fail_on": fail_on}))
        .collect();
    let sums = batch.map_async(inputs).await?.results_async().await?;
    let requests = sum_to.requests();
    tracing::info!(
        "{count} children in {:.1} s; {requests} requests for them ({:.2} per child)",
        started.elapsed().as_secs_f64(),
        requests as f64 / count.max(1) as f64
    );
    Ok(sums.iter().sum())
}

fn main() -> std::process::ExitCode {
    prefecto::serve!(fan_out)
}
