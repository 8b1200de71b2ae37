//! `prefecto`: read the embedded run history, as Prefect's CLI reads a server.

mod deploy;
mod table;
mod timeline;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use prefecto::store::{self, FlowRunRow, Store, StoreError, TaskRunRow};
use prefecto::text::{escape_controls, for_display};
use serde_json::json;

use table::{Table, duration, local_time};

#[derive(Parser)]
#[command(
    name = "prefecto",
    version,
    about = "Inspect prefecto flow runs and task runs",
    long_about = "Inspect prefecto flow runs and task runs recorded in the run history \
                  ($PREFECTO_HOME/prefecto.db, ~/.prefecto by default)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Flow runs.
    #[command(name = "flow-run", subcommand)]
    FlowRun(FlowRunCommand),
    /// Task runs.
    #[command(name = "task-run", subcommand)]
    TaskRun(TaskRunCommand),
    /// Register a deployment of a flow in a binary (built with
    /// `prefecto::serve!`) on a work pool of the Prefect server
    /// (PREFECT_API_URL); running it again updates it.
    Deploy(Box<deploy::DeployArgs>),
    /// Deployments on the Prefect server.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum DeploymentCommand {
    /// List the deployments on the Prefect server. Run one with
    /// `prefect deployment run 'flow/deployment' --param NAME=VALUE`.
    Ls {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum FlowRunCommand {
    /// List flow runs, newest first.
    Ls {
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Only runs in this state (COMPLETED, Failed, ...).
        #[arg(long)]
        state: Option<String>,
        /// Only runs of this flow.
        #[arg(long)]
        flow: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Show a flow run and a table of its task runs.
    Inspect {
        /// The flow run's name (such as beryl-moth) or id.
        run: String,
        #[command(flatten)]
        output: Output,
    },
    /// Draw a flow run's task runs on a time axis, as an SVG image.
    Timeline {
        /// The flow run's name or id.
        run: String,
        /// Where to write the SVG.
        #[arg(short, long, default_value = "timeline.svg")]
        output: std::path::PathBuf,
    },
    /// Show a flow run's log lines.
    Logs {
        /// The flow run's name or id.
        run: String,
        #[command(flatten)]
        output: Output,
    },
    /// Deliver a flow run from the run history to the Prefect server
    /// (PREFECT_API_URL): after an outage, say. Sends only what the server
    /// lacks, and waits until it has every task run.
    Sync {
        /// The flow run's name or id.
        run: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum TaskRunCommand {
    /// List the task runs of a flow run.
    Ls {
        /// The flow run's name or id.
        #[arg(long = "flow-run")]
        flow_run: String,
        /// Only task runs in this state (FAILED, Cancelled, ...).
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Args)]
struct Output {
    /// Print JSON instead of a table, for scripts.
    #[arg(long)]
    json: bool,
}

/// Prints a line on stdout. A closed pipe (`prefecto … | head`) ends the
/// command quietly, as for other Unix tools, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*))
    };
}

fn write_stdout(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {err}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", escape_controls(&err.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sync(#[from] prefecto::prefect_api::SyncError),
    #[error(transparent)]
    Config(#[from] prefecto::prefect_api::ConfigError),
    #[error("no Prefect server: set PREFECT_API_URL (or a Prefect profile)")]
    NoServer,
    #[error(transparent)]
    Deployment(#[from] prefecto::deployments::DeploymentError),
    #[error("{0}")]
    Deploy(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The history, for reading only: the read commands never write it, so
/// they work on a read-only filesystem and never change what they show.
fn open() -> Result<Store, StoreError> {
    Store::open_read_only(store::default_path())
}

/// The history, and the flow run named (or with the id) `run` in it.
fn open_flow_run(run: &str) -> Result<(Store, FlowRunRow), StoreError> {
    let store = open()?;
    let flow_run = store.flow_run(run)?;
    Ok((store, flow_run))
}

/// As [`open_flow_run`], for a command that writes (`sync` notes what it delivered).
fn open_flow_run_to_write(run: &str) -> Result<(Store, FlowRunRow), StoreError> {
    let store = Store::open_existing(store::default_path())?;
    let flow_run = store.flow_run(run)?;
    Ok((store, flow_run))
}

fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Deploy(args) => deploy::run_deploy(*args),
        Command::Deployment(DeploymentCommand::Ls { output }) => deploy::run_ls(output),
        Command::Version => {
            out!("prefecto {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::FlowRun(FlowRunCommand::Ls {
            limit,
            state,
            flow,
            output,
        }) => {
            let runs = open()?.flow_runs(limit, state.as_deref(), flow.as_deref())?;
            if output.json {
                print_json(&runs);
            } else if runs.is_empty() {
                out!("No flow runs match.");
            } else {
                flow_run_table(&runs).print();
            }
            Ok(())
        }
        Command::FlowRun(FlowRunCommand::Inspect { run, output }) => {
            let (store, flow_run) = open_flow_run(&run)?;
            let task_runs = store.task_runs(flow_run.id, None)?;
            if output.json {
                print_json(&json!({ "flow_run": flow_run, "task_runs": task_runs }));
                return Ok(());
            }
            out!(
                "Flow run   {} ({})",
                escape_controls(&flow_run.name),
                flow_run.id
            );
            out!("Flow       {}", escape_controls(&flow_run.flow));
            out!(
                "State      {}",
                for_display(
                    &state_text(&flow_run.state_name, &flow_run.state_message),
                    MESSAGE_CHARS
                )
            );
            out!(
                "Started    {}",
                flow_run.start_time.map(local_time).unwrap_or_default()
            );
            out!(
                "Ended      {}",
                flow_run.end_time.map(local_time).unwrap_or_default()
            );
            out!(
                "Process    pid {} on {}",
                flow_run.pid,
                escape_controls(&flow_run.host)
            );
            out!("Task runs  {}", task_runs.len());
            if !task_runs.is_empty() {
                out!("");
                task_run_table(&task_runs).print();
            }
            Ok(())
        }
        Command::FlowRun(FlowRunCommand::Timeline { run, output }) => {
            let (store, flow_run) = open_flow_run(&run)?;
            let task_runs = store.task_runs(flow_run.id, None)?;
            let logs = store.logs(flow_run.id)?;
            let document = timeline::render(&flow_run, &task_runs, &logs);
            svg::save(&output, &document).map_err(|source| CliError::Write {
                path: output.clone(),
                source,
            })?;
            out!(
                "Wrote the timeline of flow run '{}' ({} task runs) to {}",
                flow_run.name,
                task_runs.len(),
                output.display()
            );
            Ok(())
        }
        Command::FlowRun(FlowRunCommand::Sync { run, output }) => {
            use prefecto::prefect_api::{ApiConfig, Client, sync_flow_run};
            let config = ApiConfig::from_env()?.ok_or(CliError::NoServer)?;
            let url = config.url.clone();
            let client = Client::new(config)?;
            let (store, flow_run) = open_flow_run_to_write(&run)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(CliError::Runtime)?;
            let report =
                runtime.block_on(sync_flow_run(&client, &store, &flow_run.id.to_string()))?;
            if output.json {
                print_json(&json!({
                    "flow_run": flow_run.name,
                    "server_flow_run_id": report.server_flow_run_id,
                    "created": report.created,
                    "task_runs_sent": report.task_runs_sent,
                    "logs_sent": report.logs_sent,
                    "requests": report.requests,
                }));
            } else {
                out!(
                    "Flow run '{}' is on {url} as {}{}: sent {} task run(s) and {} log line(s) it lacked ({} requests).",
                    flow_run.name,
                    report.server_flow_run_id,
                    if report.created { " (created)" } else { "" },
                    report.task_runs_sent,
                    report.logs_sent,
                    report.requests
                );
            }
            Ok(())
        }
        Command::FlowRun(FlowRunCommand::Logs { run, output }) => {
            let (store, flow_run) = open_flow_run(&run)?;
            let logs = store.logs(flow_run.id)?;
            if output.json {
                print_json(&logs);
            } else if logs.is_empty() {
                out!(
                    "Flow run '{}' has no log lines.",
                    escape_controls(&flow_run.name)
                );
            } else {
                for log in logs {
                    let about = match &log.task_run {
                        Some(task_run) => format!("Task run '{task_run}'"),
                        None if log.logger == "prefecto.engine" => log.logger.clone(),
                        None => format!("Flow run '{}'", flow_run.name),
                    };
                    // One record per line, and nothing that drives the terminal.
                    let about = escape_controls(&about);
                    let message = escape_controls(&log.message);
                    out!(
                        "{} | {:<7} | {about} - {}",
                        log.timestamp
                            .with_timezone(&chrono::Local)
                            .format("%H:%M:%S%.3f"),
                        log.level,
                        message
                    );
                }
            }
            Ok(())
        }
        Command::TaskRun(TaskRunCommand::Ls {
            flow_run,
            state,
            output,
        }) => {
            let (store, flow_run) = open_flow_run(&flow_run)?;
            let task_runs = store.task_runs(flow_run.id, state.as_deref())?;
            if output.json {
                print_json(&task_runs);
            } else if task_runs.is_empty() {
                out!(
                    "No task runs of flow run '{}' match.",
                    escape_controls(&flow_run.name)
                );
            } else {
                task_run_table(&task_runs).print();
            }
            Ok(())
        }
    }
}

/// The most of a state message the human-readable views show: `--json` has all of it.
const MESSAGE_CHARS: usize = 500;

fn print_json(value: &impl serde::Serialize) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).expect("rows serialize to JSON")
    );
}

fn state_text(name: &str, message: &Option<String>) -> String {
    match message {
        Some(message) => format!("{name}: {message}"),
        None => name.to_string(),
    }
}

fn flow_run_table(runs: &[FlowRunRow]) -> Table {
    let mut table = Table::new(["NAME", "FLOW", "STATE", "STARTED", "DURATION", "ID"]);
    for run in runs {
        table.row([
            run.name.clone(),
            run.flow.clone(),
            run.state_name.clone(),
            run.start_time.map(local_time).unwrap_or_default(),
            duration(run.start_time, run.end_time),
            run.id.to_string(),
        ]);
    }
    table
}

fn task_run_table(runs: &[TaskRunRow]) -> Table {
    let mut table = Table::new(["TASK RUN", "STATE", "DURATION", "ATTEMPTS", "MESSAGE"]);
    for run in runs {
        table.row([
            run.name.clone(),
            run.state_name.clone(),
            duration(run.start_time, run.end_time),
            run.run_count.to_string(),
            run.state_message.clone().unwrap_or_default(),
        ]);
    }
    table
}
