//! `prefecto deploy` and `prefecto deployment ls`: a binary's flows as
//! deployments on a Prefect server's work pools (Prefect's own
//! `prefect deploy` wants a Python entrypoint).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use prefecto::deployments::{Deployment, Schedule, deploy, list_deployments};
use prefecto::prefect_api::{ApiConfig, Client};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{CliError, Output, print_json, write_stdout};

macro_rules! out {
    ($($arg:tt)*) => {
        write_stdout(format_args!($($arg)*))
    };
}

/// How long a binary may take to list its flows.
const LIST_FLOWS_WAIT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub(crate) struct DeployArgs {
    /// The binary (built with `prefecto::serve!`) that the workers run.
    binary: PathBuf,
    /// The flow to deploy; needed when the binary has more than one.
    #[arg(long)]
    flow: Option<String>,
    /// The deployment's name.
    #[arg(long, default_value = "default")]
    name: String,
    /// The work pool whose workers run it; a `process` pool is created if the server has none of this name.
    #[arg(long, default_value = "default-rust-pool")]
    pool: String,
    /// Fail instead of creating the pool when it is missing.
    #[arg(long)]
    no_create_pool: bool,
    /// An environment variable for the runs' processes, NAME=VALUE (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The folder the runs' processes start in (else a fresh temporary one).
    #[arg(long)]
    working_dir: Option<String>,
    /// A default parameter value, NAME=VALUE with VALUE as JSON or else a string (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// The description (default: the flow's doc comment).
    #[arg(long)]
    description: Option<String>,
    /// Schedule runs by a cron expression (UTC).
    #[arg(long, conflicts_with = "interval")]
    cron: Option<String>,
    /// Schedule a run every this many seconds.
    #[arg(long)]
    interval: Option<f64>,
    /// At most this many of its runs at once.
    #[arg(long)]
    concurrency_limit: Option<u32>,
    #[command(flatten)]
    output: Output,
}

/// A flow as `--flows-json` lists it.
#[derive(Deserialize)]
struct ListedFlow {
    name: String,
    #[serde(default)]
    description: String,
    parameter_schema: Value,
}

fn server() -> Result<Client, CliError> {
    let config = ApiConfig::from_env()?.ok_or(CliError::NoServer)?;
    Ok(Client::new(config)?)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// Asks the binary for its flows, within a bound.
fn listed_flows(binary: &Path) -> Result<Vec<ListedFlow>, CliError> {
    let bad = |reason: String| CliError::Deploy(format!("{}: {reason}", binary.display()));
    let mut child = Command::new(binary)
        .arg("--flows-json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| bad(format!("cannot run it: {e}")))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < LIST_FLOWS_WAIT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(bad(format!(
                    "it did not list its flows within {} s",
                    LIST_FLOWS_WAIT.as_secs()
                )));
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| bad(format!("cannot read its output: {e}")))?;
    if !output.status.success() {
        return Err(bad(format!(
            "`--flows-json` failed ({}): is it a binary whose main calls prefecto::serve!? {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        bad(format!(
            "its `--flows-json` output is not a list of flows ({e}): is it a binary whose main calls prefecto::serve!?"
        ))
    })
}

/// The command a worker runs: split by shlex, not run by a shell.
fn command_line(binary: &Path, flow: &str) -> String {
    fn quote(word: &str) -> String {
        if !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
        {
            word.to_string()
        } else {
            format!("'{}'", word.replace('\'', r"'\''"))
        }
    }
    format!("{} {}", quote(&binary.to_string_lossy()), quote(flow))
}

fn pair(text: &str, what: &str) -> Result<(String, String), CliError> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| CliError::Deploy(format!("{what} {text:?}: write NAME=VALUE")))
}

pub(crate) fn run_deploy(args: DeployArgs) -> Result<(), CliError> {
    let binary = std::fs::canonicalize(&args.binary).map_err(|e| {
        CliError::Deploy(format!("{}: no such binary ({e})", args.binary.display()))
    })?;
    let flows = listed_flows(&binary)?;
    let names = || {
        flows
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let flow = match &args.flow {
        Some(name) => flows.iter().find(|f| &f.name == name).ok_or_else(|| {
            CliError::Deploy(format!(
                "{} has no flow {name:?}; its flows: {}",
                binary.display(),
                names()
            ))
        })?,
        None if flows.len() == 1 => &flows[0],
        None => {
            return Err(CliError::Deploy(format!(
                "{} has several flows: choose one with --flow ({})",
                binary.display(),
                names()
            )));
        }
    };
    let mut deployment =
        Deployment::new(&flow.name, &args.name, &command_line(&binary, &flow.name))
            .work_pool(&args.pool)
            .parameter_schema(flow.parameter_schema.clone());
    let description = args
        .description
        .clone()
        .unwrap_or_else(|| flow.description.clone());
    if !description.is_empty() {
        deployment = deployment.description(&description);
    }
    // Children leave their results where this machine's parents look by default.
    let mut env_names = Vec::new();
    for entry in &args.env {
        let (name, value) = pair(entry, "--env")?;
        deployment = deployment.env(&name, &value);
        env_names.push(name);
    }
    if !env_names
        .iter()
        .any(|n| n == prefecto::deployments::RESULTS_DIR_ENV)
    {
        let results = prefecto::deployments::results_dir();
        deployment = deployment.env(
            prefecto::deployments::RESULTS_DIR_ENV,
            &results.to_string_lossy(),
        );
    }
    for entry in &args.params {
        let (name, value) = pair(entry, "--param")?;
        let value = serde_json::from_str(&value).unwrap_or(Value::String(value));
        deployment = deployment.parameter(&name, value);
    }
    for tag in &args.tags {
        deployment = deployment.tag(tag);
    }
    if let Some(dir) = &args.working_dir {
        deployment = deployment.working_dir(dir);
    }
    if let Some(cron) = &args.cron {
        deployment = deployment.schedule(Schedule::Cron(cron.clone()));
    }
    if let Some(seconds) = args.interval {
        if !(seconds.is_finite() && seconds >= 1.0) {
            return Err(CliError::Deploy(format!(
                "--interval {seconds}: give at least 1 second"
            )));
        }
        deployment = deployment.schedule(Schedule::Interval(Duration::from_secs_f64(seconds)));
    }
    if let Some(limit) = args.concurrency_limit {
        deployment = deployment.concurrency_limit(limit);
    }
    if args.no_create_pool {
        deployment = deployment.require_existing_pool();
    }
    let client = server()?;
    let url = client.config().url.clone();
    let deployed = runtime()?.block_on(deploy(&client, &deployment))?;
    if args.output.json {
        print_json(&json!({
            "deployment": deployment.full_name(),
            "id": deployed.id,
            "flow_id": deployed.flow_id,
            "work_pool": args.pool,
            "created_pool": deployed.created_pool,
        }));
    } else {
        if deployed.created_pool {
            out!("Created work pool '{}' (process) on {url}.", args.pool);
        }
        out!(
            "Deployed '{}' ({}) on work pool '{}'.\nRun it:   prefect deployment run '{}' --param NAME=VALUE\nWorkers:  prefect worker start --pool '{}' --type process",
            deployment.full_name(),
            deployed.id,
            args.pool,
            deployment.full_name(),
            args.pool
        );
    }
    Ok(())
}

pub(crate) fn run_ls(output: Output) -> Result<(), CliError> {
    let client = server()?;
    let deployments = runtime()?.block_on(list_deployments(&client))?;
    if output.json {
        print_json(
            &deployments
                .iter()
                .map(|d| {
                    json!({
                        "name": d.full_name,
                        "id": d.id,
                        "work_pool": d.work_pool,
                        "command": d.command,
                        "tags": d.tags,
                    })
                })
                .collect::<Vec<_>>(),
        );
        return Ok(());
    }
    let mut table = crate::table::Table::new(["Deployment", "Work pool", "Command"]);
    for d in &deployments {
        table.row([
            d.full_name.clone(),
            d.work_pool.clone().unwrap_or_default(),
            d.command.clone().unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_what_shlex_would_split() {
        assert_eq!(
            command_line(Path::new("/opt/bin/flows"), "sum-to"),
            "/opt/bin/flows sum-to"
        );
        assert_eq!(
            command_line(Path::new("/opt/my flows/it's"), "sum-to"),
            r"'/opt/my flows/it'\''s' sum-to"
        );
    }
}
