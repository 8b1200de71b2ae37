//! Delivering a flow run from the run history to a Prefect server: what
//! `prefecto flow-run sync` does after an outage. Everything sent is an
//! upsert or is checked against what the server has, so syncing twice, or
//! syncing a run the server partly has, duplicates nothing.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use super::api_logs::{beginning_line, sent as sent_to_api};
use super::client::backoff;
use super::count_watch::{CountWatch, Verdict};
use super::history_reports::task_run_reports;
use super::readback::server_logs;
use super::report::{FlowRunReport, ServerIds, TaskRunReport, log_create, task_run_event};
use super::schemas::{
    AnyOf, ById, ByName, Event, FlowCreate, FlowRunCreate, FlowRunRead, FlowRunsNamed, LogCreate,
    SetState, StateCreate, WithId,
};
use super::server_backlog::WINDOW;
use super::server_counts::{count_task_runs, judge, recorded_task_runs};
use super::{ApiError, Client, Sent};
use crate::recorder::FLOW_RUNS;
use crate::store::{Delivery, Store, StoreError};

/// How long the run's count must stand still before a sync asks whether
/// the server is idle; the reporter waits longer (it has just sent).
const QUIET: Duration = Duration::from_secs(5);

/// Log lines per request, as the reporter sends them.
const LOGS_PER_REQUEST: usize = 1_000;

/// Tries of one request of log lines before the sync gives up (the next
/// sync sends what is still missing).
const MAX_LOG_ATTEMPTS: u32 = 8;

/// Why a sync did not finish.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The run history could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The server refused or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server did not record every task run in time.
    #[error(
        "the server recorded {recorded} of the {expected} task runs of flow run '{flow_run}' within {waited_s} s; run the sync again"
    )]
    Incomplete {
        /// The flow run's name.
        flow_run: String,
        /// Task runs the server has.
        recorded: u64,
        /// Task runs the run history has.
        expected: u64,
        /// How long the sync waited.
        waited_s: u64,
    },
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// The flow run's id on the server.
    pub server_flow_run_id: Uuid,
    /// Whether the flow run had to be created there.
    pub created: bool,
    /// Task runs the server did not have before, now sent.
    pub task_runs_sent: usize,
    /// Log lines the server did not have before, now sent.
    pub logs_sent: usize,
    /// HTTP requests made.
    pub requests: u64,
}

/// Delivers the flow run `name_or_id` of `store` to the server `client`
/// talks to, and waits until the server has every task run.
///
/// ```no_run
/// use prefecto::prefect_api::{sync_flow_run, ApiConfig, Client};
/// use prefecto::store::{self, Store};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::new(ApiConfig::from_env()?.expect("PREFECT_API_URL is set"))?;
/// let store = Store::open_existing(store::default_path())?;
/// let report = sync_flow_run(&client, &store, "beryl-moth").await?;
/// println!("sent {} task runs", report.task_runs_sent);
/// # Ok(())
/// # }
/// ```
pub async fn sync_flow_run(
    client: &Client,
    store: &Store,
    name_or_id: &str,
) -> Result<SyncReport, SyncError> {
    let mut sent = Sent::default();
    let result = sync(client, store, name_or_id, &mut sent).await;
    result.map(|mut report| {
        report.requests = sent.requests;
        report
    })
}

async fn sync(
    client: &Client,
    store: &Store,
    name_or_id: &str,
    sent: &mut Sent,
) -> Result<SyncReport, SyncError> {
    let flow_run = store.flow_run(name_or_id)?;
    let delivery = store.delivery(flow_run.id)?;
    let local_id = flow_run.id;
    let parameters: Value = delivery
        .as_ref()
        .and_then(|d| serde_json::from_str(&d.parameters).ok())
        .unwrap_or_else(|| Value::Object(Default::default()));
    client.check_with(sent).await?;

    let flow: WithId = client
        .send_json(
            Method::POST,
            "/flows/",
            &FlowCreate {
                name: &flow_run.flow,
            },
            sent,
        )
        .await?;
    let flow_id = flow.id;

    // The server's copy of the flow run: by the id noted when it was
    // created, else by name (it may have been created just before an outage).
    let mut server_run: Option<FlowRunRead> = None;
    if let Some(id) = delivery.as_ref().and_then(|d| d.server_flow_run_id) {
        match client
            .send_as(Method::GET, &format!("/flow_runs/{id}"), None, sent)
            .await
        {
            Ok(run) => server_run = Some(run),
            Err(ApiError::Status { status: 404, .. }) => {}
            Err(err) => return Err(err.into()),
        }
    }
    if server_run.is_none() {
        let found: Vec<FlowRunRead> = client
            .send_json(
                Method::POST,
                "/flow_runs/filter",
                &FlowRunsNamed {
                    flow_runs: ByName {
                        name: AnyOf::one(&flow_run.name),
                    },
                    flows: ById {
                        id: AnyOf::one(flow_id),
                    },
                },
                sent,
            )
            .await?;
        server_run = found.into_iter().next();
    }
    let created = server_run.is_none();
    let server_run = match server_run {
        Some(run) => run,
        None => {
            client
                .send_json(
                    Method::POST,
                    "/flow_runs/",
                    &FlowRunCreate {
                        flow_id,
                        name: &flow_run.name,
                        parameters: &parameters,
                        state: StateCreate::new("PENDING", "Pending", ""),
                        tags: [],
                        idempotency_key: flow_run.id.to_string(),
                    },
                    sent,
                )
                .await?
        }
    };
    let server_id = server_run.id;
    let server = ServerIds {
        flow: flow_id,
        flow_run: server_id,
    };

    // The flow run's own state: replayed as it happened here. Forced, since
    // this is history, not a proposal.
    if server_run.state_type.as_deref() != Some(flow_run.state_type.as_api_str()) {
        let history = store.state_history(flow_run.id, None)?;
        let server_type = server_run.state_type.as_deref().unwrap_or("PENDING");
        if matches!(server_type, "PENDING" | "SCHEDULED") {
            set_state(client, server_id, "RUNNING", "Running", None, sent).await?;
        }
        let last = history.last();
        set_state(
            client,
            server_id,
            flow_run.state_type.as_api_str(),
            &flow_run.state_name,
            last.and_then(|s| s.message.as_deref())
                .or(flow_run.state_message.as_deref()),
            sent,
        )
        .await?;
    }

    let mut report = FlowRunReport::new(
        local_id,
        flow_run.name.clone(),
        flow_run.flow.clone(),
        parameters.clone(),
    );
    report.server = Some(server);
    let task_runs = task_run_reports(local_id, store.task_runs_with_history(flow_run.id)?);
    let expected = task_runs.len() as u64;

    // Logs first: lines the server lacks, by time and text, each sent once.
    let ids: HashMap<String, Uuid> = task_runs
        .iter()
        .map(|run| (run.run.to_string(), run.id))
        .collect();
    let least = client.config().log_level_sent;
    let mut logs = Vec::new();
    if let Some(start) = flow_run.start_time {
        let line = beginning_line(&flow_run.name, &flow_run.flow);
        logs.extend(
            log_create(&report, None, tracing::Level::INFO, FLOW_RUNS, &line, start)
                .filter(|_| sent_to_api(least, FLOW_RUNS, tracing::Level::INFO)),
        );
    }
    for line in store.logs_as_prefect_logs_them(flow_run.id)? {
        let task_run_id = line
            .task_run
            .as_ref()
            .and_then(|name| ids.get(name))
            .copied();
        let level = match line.level.as_str() {
            "ERROR" | "CRITICAL" => tracing::Level::ERROR,
            "WARNING" | "WARN" => tracing::Level::WARN,
            "DEBUG" => tracing::Level::DEBUG,
            _ => tracing::Level::INFO,
        };
        if !sent_to_api(least, &line.logger, level) {
            continue;
        }
        if let Some(log) = log_create(
            &report,
            task_run_id,
            level,
            line.logger.clone(),
            &line.message,
            line.timestamp,
        ) {
            logs.push(log);
        }
    }
    let logs_sent = send_missing_logs(client, server_id, logs, sent).await?;

    // Task runs: what the server lacks once it has stopped recording. A run
    // another process reported a moment ago may still be in the server's
    // queue: nothing goes until the run's count has stood still for a few
    // seconds and the server's count of all its task runs too (its
    // recorder idle, not busy with others' runs ahead of this one's).
    let wait = client.config().report_wait;
    let deadline = Instant::now() + wait;
    let mut watch = CountWatch::new(expected, QUIET, Instant::now());
    let mut task_runs_sent = HashSet::new();
    loop {
        let (count, verdict) = judge(&mut watch, client, server_id, sent).await?;
        match verdict {
            Verdict::Recorded => break,
            Verdict::Wait | Verdict::AskServer => {}
            Verdict::SendMissing => {
                let missing = send_missing(client, server, &report, &task_runs, sent).await?;
                task_runs_sent.extend(missing);
            }
        }
        if Instant::now() >= deadline {
            return Err(SyncError::Incomplete {
                flow_run: flow_run.name,
                recorded: count,
                expected,
                waited_s: wait.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    store.record_undelivered(&Delivery {
        flow_run_id: flow_run.id,
        api_url: client.config().url.clone(),
        server_flow_run_id: Some(server_id),
        parameters: parameters.to_string(),
        delivered: true,
        reason: None,
    })?;
    Ok(SyncReport {
        server_flow_run_id: server_id,
        created,
        task_runs_sent: task_runs_sent.len(),
        logs_sent,
        requests: 0,
    })
}

/// Sends the task runs the server does not have, paced as the reporter
/// paces its events; returns their ids.
async fn send_missing(
    client: &Client,
    server: ServerIds,
    report: &FlowRunReport,
    task_runs: &[TaskRunReport],
    sent: &mut Sent,
) -> Result<Vec<Uuid>, ApiError> {
    let recorded = recorded_task_runs(client, server.flow_run, sent).await?;
    let missing: Vec<&TaskRunReport> = task_runs
        .iter()
        .filter(|run| !recorded.contains(&run.id))
        .collect();
    let rate = client.config().events_per_second;
    let base = count_task_runs(client, server.flow_run, sent).await?;
    let (mut posted, mut recorded) = (0, base);
    for chunk in missing.chunks(rate.ceil().max(1.0) as usize) {
        // Never more of these in the server's queue than the reporter's
        // window; counted again only once the window is full.
        while posted >= WINDOW + (recorded - base) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            recorded = count_task_runs(client, server.flow_run, sent)
                .await?
                .max(recorded);
        }
        posted += chunk.len() as u64;
        let started = Instant::now();
        let events: Vec<Event> = chunk
            .iter()
            .map(|run| task_run_event(server, report, run))
            .collect();
        // Sent again as they are, with the same event ids, if a reply is
        // lost: the server keeps one state per event id.
        let _: Value = client
            .send_json(Method::POST, "/events", &events, sent)
            .await?;
        let pace = Duration::from_secs_f64(chunk.len() as f64 / rate);
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
    Ok(missing.iter().map(|run| run.id).collect())
}

/// Sends the lines of `logs` the server does not have, each request once:
/// log lines carry no id, so a request whose reply was lost is followed by
/// reading back what the server stored, never by sending it blindly again.
async fn send_missing_logs(
    client: &Client,
    flow_run: Uuid,
    logs: Vec<LogCreate>,
    sent: &mut Sent,
) -> Result<usize, ApiError> {
    let key = |line: &LogCreate| (line.micros, line.message.clone());
    let have = server_logs(client, flow_run, sent).await?;
    let mut missing: Vec<LogCreate> = logs
        .into_iter()
        .filter(|line| !have.contains(&key(line)))
        .collect();
    let count = missing.len();
    let mut failures = 0;
    while !missing.is_empty() {
        let n = missing.len().min(LOGS_PER_REQUEST);
        match client
            .send_json_once(Method::POST, "/logs/", &missing[..n], sent)
            .await
        {
            Ok(()) => {
                missing.drain(..n);
                failures = 0;
            }
            Err(failed) => {
                failures += 1;
                if failures > MAX_LOG_ATTEMPTS {
                    return Err(failed.error);
                }
                tokio::time::sleep(backoff(failures)).await;
                if failed.in_doubt {
                    let have = server_logs(client, flow_run, sent).await?;
                    missing.retain(|line| !have.contains(&key(line)));
                }
            }
        }
    }
    Ok(count)
}

async fn set_state(
    client: &Client,
    flow_run: Uuid,
    state_type: &str,
    name: &str,
    message: Option<&str>,
    sent: &mut Sent,
) -> Result<(), ApiError> {
    let mut state = StateCreate::new(state_type.to_string(), name, message.unwrap_or_default());
    state.state_details.transition_id = Some(Uuid::new_v4());
    let _: Value = client
        .send_json(
            Method::POST,
            &format!("/flow_runs/{flow_run}/set_state"),
            &SetState { state, force: true },
            sent,
        )
        .await?;
    Ok(())
}
