//! The recorder that reports flow runs to a Prefect server.
//!
//! The engine hands it events through a channel; a thread of its own, with
//! its own small runtime, talks to the server, so the flow's speed is set by
//! its tasks and never by the server. Three writers, one per kind:
//! - flow-run states over REST, one request at a time, in order;
//! - finished task runs as events, many to a `POST /events`, paced;
//! - log lines in batches to `POST /logs/`.
//!
//! When a flow run ends, the reporter waits until the server has recorded
//! every task run (it reads back the count, and sends again what is missing)
//! or a bounded wait has passed; what was not delivered is named in a warning.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tracing::Level;
use uuid::Uuid;

use super::client::{fetch_all, id_of};
use super::counters::{Counters, ReportCounters};
use super::limits::TagLimits;
use super::{ApiConfig, ApiError, Client, ConfigError, Sent, FLOW_RUN_ID_ENV};
use crate::adopt::{AdoptedFlowRun, FlowRunAdopter};
use crate::names::TaskRunName;
use crate::recorder::{implied_lines, FlowRunRef, LogEvent, Recorder, TransitionEvent};
use crate::state::State;
use crate::task::TaskSpec;

/// At most this many log lines go in one request.
const MAX_LOGS_PER_REQUEST: usize = 1_000;
/// And at most about this many bytes.
const MAX_LOG_BYTES_PER_REQUEST: usize = 1_000_000;
/// How often queued log lines are sent.
const LOG_INTERVAL: Duration = Duration::from_millis(1_500);
/// After everything is sent, how long a count that does not grow is trusted
/// before the missing task runs are sent again.
const SETTLE: Duration = Duration::from_secs(15);

enum Msg {
    FlowState {
        id: Uuid,
        name: String,
        flow: String,
        parameters: Value,
        state: State,
    },
    TaskState {
        flow_run: Uuid,
        run: TaskRunName,
        spec: Option<&'static TaskSpec>,
        state: State,
    },
    Log {
        flow_run: Uuid,
        task_run: Option<TaskRunName>,
        level: Level,
        logger: &'static str,
        message: String,
        timestamp: DateTime<Utc>,
    },
    End {
        flow_run: Uuid,
        done: std::sync::mpsc::SyncSender<()>,
    },
    Adopt {
        flow_run: Uuid,
        flow: String,
        reply: std::sync::mpsc::SyncSender<Result<AdoptedFlowRun, ApiError>>,
    },
}

/// Waits on the calling thread, telling a multi-threaded Tokio runtime
/// first (if this is one of its workers) so that it moves its other work.
fn wait_blocking<R>(wait: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
        _ => wait(),
    }
}

/// Reports every flow run of this process to a Prefect server.
pub struct PrefectReporter {
    sender: mpsc::UnboundedSender<Msg>,
    counters: Arc<Counters>,
    config: ApiConfig,
    limits: Arc<TagLimits>,
    /// `PREFECT__FLOW_RUN_ID` is taken by the first flow call only.
    adopted: AtomicBool,
}

impl PrefectReporter {
    /// Starts reporting to the server `config` names, on a thread of its own.
    /// What the server cannot take is noted in the run history at `history`
    /// (its database file), for `prefecto flow-run sync` to deliver later.
    pub fn start(config: ApiConfig, history: Option<&Path>) -> Result<Self, ConfigError> {
        let client = Client::new(config.clone())?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let reporter_counters = counters.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let limits = TagLimits::new(client.clone(), runtime.handle().clone(), counters.clone());
        let history: Option<Arc<Path>> = history.map(Arc::from);
        std::thread::Builder::new()
            .name("prefecto-report".into())
            .spawn(move || {
                runtime.block_on(Reporter::new(client, reporter_counters, history).run(receiver))
            })
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(PrefectReporter {
            sender,
            counters,
            config,
            limits,
            adopted: AtomicBool::new(false),
        })
    }

    /// The server's tag concurrency limits, as the engine asks for slots.
    pub(crate) fn slot_limiter(&self) -> super::limits::TagLimiter {
        super::limits::TagLimiter(self.limits.clone())
    }

    /// What reporting has cost so far.
    pub fn counters(&self) -> ReportCounters {
        self.counters.snapshot()
    }

    fn send(&self, msg: Msg) {
        // Fails only if the reporter thread is gone; it said why.
        let _ = self.sender.send(msg);
    }

    /// Takes over a flow run that exists on the server: its name and parameters.
    fn adopt_run(&self, flow_run: Uuid, flow: &str) -> Result<AdoptedFlowRun, ApiError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Msg::Adopt {
            flow_run,
            flow: flow.to_string(),
            reply,
        });
        let url = self.config.url.clone();
        wait_blocking(|| answer.recv_timeout(Duration::from_secs(120))).unwrap_or_else(|_| {
            Err(ApiError::Unreachable {
                url,
                reason: "no answer within 120 s".to_string(),
            })
        })
    }
}

/// The flow run a Prefect worker started this process for
/// (`PREFECT__FLOW_RUN_ID`) is taken by the first flow call, as Python's
/// entrypoint takes it.
impl FlowRunAdopter for PrefectReporter {
    fn adopt(&self, flow: &str) -> Option<AdoptedFlowRun> {
        let id = std::env::var(FLOW_RUN_ID_ENV)
            .ok()
            .filter(|v| !v.is_empty())?;
        if self.adopted.swap(true, Ordering::SeqCst) {
            return None;
        }
        let warn = |why: String| {
            tracing::warn!(target: "prefecto.engine", "{FLOW_RUN_ID_ENV} is set to {id:?}, but {why}: flow '{flow}' runs as a new flow run.");
            None
        };
        let Ok(server_id) = id.parse::<Uuid>() else {
            return warn("that is not a flow-run id".to_string());
        };
        match self.adopt_run(server_id, flow) {
            Ok(adopted) => Some(adopted),
            Err(err) => warn(format!("the flow run could not be read: {err}")),
        }
    }
}

impl Recorder for PrefectReporter {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        let state = event.state.clone();
        self.send(match event.task_run {
            None => Msg::FlowState {
                id: event.flow_run.id,
                name: event.flow_run.name.to_string(),
                flow: event.flow_run.flow.to_string(),
                // Only the creation needs them; later states skip the copy.
                parameters: if event.state.is_pending() {
                    event.flow_run.parameters.clone()
                } else {
                    Value::Null
                },
                state,
            },
            Some(run) => Msg::TaskState {
                flow_run: event.flow_run.id,
                run,
                spec: event.task,
                state,
            },
        });
    }

    fn on_log(&self, event: &LogEvent<'_>) {
        self.send(Msg::Log {
            flow_run: event.flow_run.id,
            task_run: event.task_run,
            level: event.level,
            logger: event.logger,
            message: event.message.to_string(),
            timestamp: event.timestamp,
        });
    }

    fn on_flow_run_end(&self, flow_run: FlowRunRef<'_>) {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.send(Msg::End {
            flow_run: flow_run.id,
            done,
        });
        // The reporter answers within the report wait; the margin covers the
        // last requests in flight.
        let limit = self.config.report_wait + Duration::from_secs(90);
        let _ = wait_blocking(|| wait.recv_timeout(limit));
    }
}

/// A task run as the server will see it.
pub(crate) struct TaskRunReport {
    pub(crate) id: Uuid,
    pub(crate) run: TaskRunName,
    pub(crate) spec: Option<&'static TaskSpec>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) start: Option<DateTime<Utc>>,
    pub(crate) end: Option<DateTime<Utc>>,
    pub(crate) run_count: u32,
    pub(crate) previous: Option<State>,
    pub(crate) latest: State,
    pub(crate) submitted: bool,
}

/// A flow run being reported.
// Its id and parameters are what the run history's note of an undelivered run needs.
#[cfg_attr(not(feature = "history"), allow(dead_code))]
pub(crate) struct FlowRunReport {
    /// Its id here, in the run history.
    id: Uuid,
    pub(crate) name: String,
    pub(crate) flow: String,
    parameters: Value,
    /// A flow-run state the server did not get.
    undelivered_state: bool,
    /// The server's ids, once it has the flow run; `None` while unknown or
    /// if the server could not be reached.
    pub(crate) server: Option<ServerIds>,
    /// Why the server does not have it, if it does not.
    unreachable: Option<ApiError>,
    task_runs: HashMap<TaskRunName, TaskRunReport>,
    /// Task runs that have finished, in order: what the server must have.
    finished: Vec<TaskRunName>,
    /// A flow-run state the server stopped (ABORT): no more proposals.
    aborted: bool,
    cancel_requested: bool,
    /// The run history that keeps what the server did not get, if one does.
    history: Option<Arc<Path>>,
}

impl FlowRunReport {
    pub(crate) fn new(id: Uuid, name: String, flow: String, parameters: Value) -> Self {
        FlowRunReport {
            id,
            name,
            flow,
            parameters,
            undelivered_state: false,
            server: None,
            unreachable: None,
            task_runs: HashMap::new(),
            finished: Vec::new(),
            aborted: false,
            cancel_requested: false,
            history: None,
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) struct ServerIds {
    pub(crate) flow: Uuid,
    pub(crate) flow_run: Uuid,
}

/// Events and logs waiting to be sent, shared with their senders.
#[derive(Default)]
struct Outbox {
    events: Mutex<VecDeque<Value>>,
    logs: Mutex<VecDeque<Value>>,
    /// Events taken by the sender and not yet answered.
    events_in_flight: AtomicU64,
    logs_in_flight: AtomicU64,
    more: Notify,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        lock(&self.events).is_empty()
            && lock(&self.logs).is_empty()
            && self.events_in_flight.load(Ordering::Acquire) == 0
            && self.logs_in_flight.load(Ordering::Acquire) == 0
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

struct Reporter {
    client: Client,
    counters: Arc<Counters>,
    outbox: Arc<Outbox>,
    runs: HashMap<Uuid, FlowRunReport>,
    flow_ids: HashMap<String, Uuid>,
    /// Whether the server has answered as a Prefect server should.
    checked: bool,
    /// The run history's database, where undelivered runs are noted.
    history: Option<Arc<Path>>,
}

impl Reporter {
    fn new(client: Client, counters: Arc<Counters>, history: Option<Arc<Path>>) -> Self {
        Reporter {
            client,
            counters,
            history,
            outbox: Arc::new(Outbox::default()),
            runs: HashMap::new(),
            flow_ids: HashMap::new(),
            checked: false,
        }
    }

    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Msg>) {
        tokio::spawn(send_events(
            self.client.clone(),
            self.outbox.clone(),
            self.counters.clone(),
        ));
        tokio::spawn(send_logs(
            self.client.clone(),
            self.outbox.clone(),
            self.counters.clone(),
        ));
        let mut poll = tokio::time::interval(self.client.config().cancel_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = receiver.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = poll.tick() => self.poll_cancellation().await,
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::FlowState {
                id,
                name,
                flow,
                parameters,
                state,
            } => self.flow_state(id, name, flow, parameters, state).await,
            Msg::TaskState {
                flow_run,
                run,
                spec,
                state,
            } => self.task_state(flow_run, run, spec, state),
            Msg::Log {
                flow_run,
                task_run,
                level,
                logger,
                message,
                timestamp,
            } => {
                let Some(report) = self.runs.get(&flow_run) else {
                    return;
                };
                let task_run_id = task_run
                    .and_then(|r| report.task_runs.get(&r))
                    .map(|t| t.id);
                if let Some(log) = log_json(report, task_run_id, level, logger, &message, timestamp)
                {
                    self.push_log(log);
                }
            }
            Msg::Adopt {
                flow_run,
                flow,
                reply,
            } => {
                let adopted = self.adopt(flow_run, flow).await;
                let _ = reply.send(adopted);
            }
            Msg::End { flow_run, done } => {
                let Some(report) = self.runs.remove(&flow_run) else {
                    let _ = done.send(());
                    return;
                };
                tokio::spawn(finish(
                    report,
                    self.client.clone(),
                    self.outbox.clone(),
                    self.counters.clone(),
                    done,
                ));
            }
        }
    }

    fn push_log(&self, log: Value) {
        lock(&self.outbox.logs).push_back(log);
    }

    async fn adopt(&mut self, flow_run: Uuid, flow: String) -> Result<AdoptedFlowRun, ApiError> {
        let mut sent = Sent::default();
        let result = async {
            if !self.checked {
                self.client.check_with(&mut sent).await?;
                self.checked = true;
            }
            let run: Value = self
                .client
                .send(
                    Method::GET,
                    &format!("/flow_runs/{flow_run}"),
                    None,
                    &mut sent,
                )
                .await?;
            let flow_id = run["flow_id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| ApiError::NotPrefect {
                    url: format!("{}/flow_runs/{flow_run}", self.client.config().url),
                    detail: "the flow run has no flow_id".to_string(),
                })?;
            let name = run["name"].as_str().unwrap_or_default().to_string();
            let parameters = run["parameters"].as_object().cloned().unwrap_or_default();
            Ok((flow_id, name, parameters))
        }
        .await;
        self.counters.add(sent);
        let (flow_id, name, parameters) = result?;
        self.runs.insert(
            flow_run,
            FlowRunReport {
                server: Some(ServerIds {
                    flow: flow_id,
                    flow_run,
                }),
                ..FlowRunReport::new(
                    flow_run,
                    name.clone(),
                    flow,
                    Value::Object(parameters.clone()),
                )
            },
        );
        if let Some(report) = self.runs.get_mut(&flow_run) {
            report.history = self.history.clone();
        }
        Ok(AdoptedFlowRun::new(flow_run, name, parameters))
    }

    async fn flow_state(
        &mut self,
        id: Uuid,
        name: String,
        flow: String,
        parameters: Value,
        state: State,
    ) {
        if self.runs.contains_key(&id) && state.is_pending() {
            // An adopted run is on the server already, Pending or Scheduled.
            return;
        }
        if !self.runs.contains_key(&id) {
            let mut report = FlowRunReport::new(id, name, flow, parameters.clone());
            report.history = self.history.clone();
            match self.create_flow_run(&report, &parameters, &state).await {
                Ok(ids) => report.server = Some(ids),
                Err(err) => {
                    tracing::warn!(
                        target: "prefecto.engine",
                        "Flow run '{}' is not reported to Prefect: {err}. It runs on. {}",
                        report.name,
                        kept_for_sync(&report)
                    );
                    report.unreachable = Some(err);
                }
            }
            self.runs.insert(id, report);
            if state.is_pending() {
                return;
            }
        }
        let client = self.client.clone();
        let counters = self.counters.clone();
        let Some(report) = self.runs.get_mut(&id) else {
            return;
        };
        let Some(server) = report.server else {
            return;
        };
        if report.aborted {
            return;
        }
        let mut sent = Sent::default();
        let result = set_flow_run_state(&client, server.flow_run, &state, &mut sent).await;
        counters.add(sent);
        match result {
            Ok(Orchestration::Accepted) => {}
            Ok(Orchestration::Rejected(current)) => tracing::debug!(
                target: "prefecto.engine",
                "Prefect kept flow run '{}' in state {current} instead of {}.",
                report.name,
                state.name()
            ),
            Ok(Orchestration::Aborted(reason)) => {
                tracing::warn!(
                    target: "prefecto.engine",
                    "Prefect refused state {} for flow run '{}': {reason}",
                    state.name(),
                    report.name
                );
                report.aborted = true;
            }
            Err(err) => {
                tracing::debug!(
                    target: "prefecto.engine",
                    "Could not report state {} of flow run '{}' to Prefect: {err}",
                    state.name(),
                    report.name
                );
                report.undelivered_state = true;
            }
        }
    }

    async fn create_flow_run(
        &mut self,
        report: &FlowRunReport,
        parameters: &Value,
        state: &State,
    ) -> Result<ServerIds, ApiError> {
        let mut sent = Sent::default();
        let result = async {
            if !self.checked {
                // One question first, so that a wrong URL or key gets one clear answer.
                self.client.check_with(&mut sent).await?;
                self.checked = true;
            }
            let flow = match self.flow_ids.get(&report.flow) {
                Some(id) => *id,
                None => {
                    let flow: Value = self
                        .client
                        .send_patiently(
                            Method::POST,
                            "/flows/",
                            Some(&json!({ "name": report.flow })),
                            self.client.config().report_wait,
                            &mut sent,
                        )
                        .await?;
                    let id = id_of(&self.client, &flow, "/flows/")?;
                    self.flow_ids.insert(report.flow.clone(), id);
                    id
                }
            };
            let body = json!({
                "flow_id": flow,
                "name": report.name,
                "parameters": parameters,
                "state": state_json(state),
                "tags": [],
            });
            let run: Value = self
                .client
                .send_patiently(
                    Method::POST,
                    "/flow_runs/",
                    Some(&body),
                    self.client.config().report_wait,
                    &mut sent,
                )
                .await?;
            let flow_run = id_of(&self.client, &run, "/flow_runs/")?;
            Ok(ServerIds { flow, flow_run })
        }
        .await;
        self.counters.add(sent);
        result
    }

    fn task_state(
        &mut self,
        flow_run: Uuid,
        run: TaskRunName,
        spec: Option<&'static TaskSpec>,
        state: State,
    ) {
        let Some(report) = self.runs.get_mut(&flow_run) else {
            return;
        };
        let first = !report.task_runs.contains_key(&run);
        let task_run = report
            .task_runs
            .entry(run)
            .or_insert_with(|| TaskRunReport {
                id: run.id_in(flow_run),
                run,
                spec,
                created: state.timestamp(),
                start: None,
                end: None,
                run_count: 0,
                previous: None,
                latest: state.clone(),
                submitted: false,
            });
        task_run.submitted |= state.is_pending();
        if state.is_running() {
            task_run.start.get_or_insert(state.timestamp());
            task_run.run_count += 1;
        }
        if state.is_terminal() {
            task_run.end = Some(state.timestamp());
        }
        if !first {
            task_run.previous = Some(std::mem::replace(&mut task_run.latest, state.clone()));
        }
        let run_name = run.to_string();
        let lines = implied_lines(&run_name, run.task, &state, task_run.submitted);
        let task_run_id = task_run.id;
        let finished = state.is_terminal();
        let mut logs = Vec::new();
        for line in lines {
            let id = line.about_task_run.then_some(task_run_id);
            if let Some(log) = log_json(
                report,
                id,
                line.level,
                line.logger,
                &line.message,
                state.timestamp(),
            ) {
                logs.push(log);
            }
        }
        if finished {
            report.finished.push(run);
            if let Some(server) = report.server {
                let event = task_run_event(server, report, &report.task_runs[&run]);
                lock(&self.outbox.events).push_back(event);
                self.outbox.more.notify_one();
            }
        }
        lock(&self.outbox.logs).extend(logs);
    }

    async fn poll_cancellation(&mut self) {
        for (id, report) in self.runs.iter_mut() {
            let Some(server) = report.server else {
                continue;
            };
            if report.cancel_requested {
                continue;
            }
            let mut sent = Sent::default();
            let run: Result<Value, ApiError> = self
                .client
                .send(
                    Method::GET,
                    &format!("/flow_runs/{}", server.flow_run),
                    None,
                    &mut sent,
                )
                .await;
            self.counters.add(sent);
            if let Ok(run) = run {
                if run["state_type"] == "CANCELLING" {
                    report.cancel_requested = true;
                    crate::flow_runs::cancel(
                        *id,
                        "The flow run was cancelled from Prefect (it was set to CANCELLING)."
                            .to_string(),
                    );
                }
            }
        }
    }
}

enum Orchestration {
    Accepted,
    Rejected(String),
    Aborted(String),
}

/// Proposes a flow-run state, as the SDK does: a fresh transition id each
/// time (which makes a retried request harmless), WAIT honoured.
async fn set_flow_run_state(
    client: &Client,
    flow_run: Uuid,
    state: &State,
    sent: &mut Sent,
) -> Result<Orchestration, ApiError> {
    let path = format!("/flow_runs/{flow_run}/set_state");
    for _ in 0..10 {
        let mut state_json = state_json(state);
        state_json["state_details"] = json!({ "transition_id": Uuid::new_v4() });
        let body = json!({ "state": state_json, "force": false });
        let result: Value = client
            .send_patiently(
                Method::POST,
                &path,
                Some(&body),
                client.config().report_wait,
                sent,
            )
            .await?;
        let reason = result["details"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match result["status"].as_str() {
            Some("ACCEPT") => return Ok(Orchestration::Accepted),
            Some("REJECT") => {
                let current = result["state"]["name"].as_str().unwrap_or("?").to_string();
                return Ok(Orchestration::Rejected(format!("{current} ({reason})")));
            }
            Some("ABORT") => return Ok(Orchestration::Aborted(reason)),
            Some("WAIT") => {
                let delay = result["details"]["delay_seconds"].as_f64().unwrap_or(1.0);
                tokio::time::sleep(Duration::from_secs_f64(delay.clamp(0.1, 30.0))).await;
            }
            _ => {
                return Err(ApiError::NotPrefect {
                    url: format!("{}{path}", client.config().url),
                    detail: format!("an orchestration result without a status: {result}"),
                })
            }
        }
    }
    Ok(Orchestration::Aborted(
        "the server kept answering WAIT".to_string(),
    ))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn state_json(state: &State) -> Value {
    json!({
        "type": state.state_type().as_api_str(),
        "name": state.name(),
        "message": state.message().unwrap_or_default(),
    })
}

/// Prefect's numeric levels.
fn level_number(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

pub(crate) fn log_json(
    report: &FlowRunReport,
    task_run_id: Option<Uuid>,
    level: Level,
    logger: &str,
    message: &str,
    timestamp: DateTime<Utc>,
) -> Option<Value> {
    let server = report.server?;
    Some(json!({
        "name": logger,
        "level": level_number(level),
        "message": message,
        "timestamp": time(timestamp),
        "flow_run_id": server.flow_run,
        "task_run_id": task_run_id,
    }))
}

/// One event for a finished task run: its final state, with the times the
/// UI needs, so that one event per task run is enough.
pub(crate) fn task_run_event(
    server: ServerIds,
    report: &FlowRunReport,
    task_run: &TaskRunReport,
) -> Value {
    let state = &task_run.latest;
    let name = task_run.run.to_string();
    let state_type = state.state_type().as_api_str();
    let message = state.message().unwrap_or_default();
    let tags: &[&str] = task_run.spec.map_or(&[], |s| s.tags);
    let mut related = vec![
        json!({
            "prefect.resource.id": format!("prefect.flow-run.{}", server.flow_run),
            "prefect.resource.role": "flow-run",
            "prefect.resource.name": report.name,
        }),
        json!({
            "prefect.resource.id": format!("prefect.flow.{}", server.flow),
            "prefect.resource.role": "flow",
            "prefect.resource.name": report.flow,
        }),
    ];
    related.extend(tags.iter().map(|tag| {
        json!({ "prefect.resource.id": format!("prefect.tag.{tag}"), "prefect.resource.role": "tag" })
    }));
    let previous = task_run.previous.as_ref();
    let task_inputs: serde_json::Map<String, Value> = task_run
        .spec
        .map(|s| s.param_names)
        .unwrap_or_default()
        .iter()
        .map(|p| (p.to_string(), json!([])))
        .collect();
    let (retries, retry_delay) = task_run
        .spec
        .map_or((0, 0.0), |s| (s.retries, s.retry_delay.as_secs_f64()));
    let total_run_time = match (task_run.start, task_run.end) {
        (Some(start), Some(end)) => (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    json!({
        "id": Uuid::new_v4(),
        "occurred": time(state.timestamp()),
        "event": format!("prefect.task-run.{}", state.name()),
        "resource": {
            "prefect.resource.id": format!("prefect.task-run.{}", task_run.id),
            "prefect.resource.name": name,
            "prefect.state-type": state_type,
            "prefect.state-name": state.name(),
            "prefect.state-timestamp": time(state.timestamp()),
            "prefect.run-count": task_run.run_count.to_string(),
            "prefect.state-message": message,
            "prefect.orchestration": "client",
        },
        "related": related,
        "payload": {
            "intended": {
                "from": previous.map(|p| p.state_type().as_api_str()),
                "to": state_type,
            },
            "initial_state": previous.map(|p| json!({
                "type": p.state_type().as_api_str(),
                "name": p.name(),
                "message": p.message().unwrap_or_default(),
                "state_details": {},
            })),
            "validated_state": {
                "type": state_type,
                "name": state.name(),
                "message": message,
                "state_details": { "untrackable_result": true },
                "data": null,
            },
            "task_run": {
                "name": name,
                "task_key": task_run.run.task,
                "dynamic_key": task_run.run.index.to_string(),
                "tags": tags,
                "labels": {},
                "task_inputs": task_inputs,
                "empirical_policy": {
                    "max_retries": retries,
                    "retry_delay_seconds": retry_delay,
                    "retries": retries,
                    "retry_delay": retry_delay,
                },
                "run_count": task_run.run_count,
                "flow_run_run_count": 1,
                "expected_start_time": time(task_run.created),
                "start_time": task_run.start.map(time),
                "end_time": task_run.end.map(time),
                "total_run_time": total_run_time,
            },
        },
    })
}

/// The event writer: one paced stream of `POST /events`. A server on SQLite
/// records events far slower than it accepts them and drops what overflows
/// its queue, without telling: the pace is what keeps the queue short.
async fn send_events(client: Client, outbox: Arc<Outbox>, counters: Arc<Counters>) {
    let rate = client.config().events_per_second;
    // One request a second at the default rate: few requests, small queue.
    let per_request = (rate.ceil() as usize).clamp(1, 5_000);
    loop {
        let batch: Vec<Value> = {
            let mut events = lock(&outbox.events);
            let n = events.len().min(per_request);
            events.drain(..n).collect()
        };
        if batch.is_empty() {
            outbox.more.notified().await;
            continue;
        }
        let started = Instant::now();
        let count = batch.len();
        let posted = post_batch(
            &client,
            &counters,
            "/events",
            batch,
            &outbox.events,
            &outbox.events_in_flight,
            &counters.events,
        )
        .await;
        if let Err(err) = posted {
            tracing::debug!(target: "prefecto.engine", "Task-run events not delivered yet: {err}");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let pace = Duration::from_secs_f64(count as f64 / rate);
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
}

/// The log writer: a batch every 1.5 s, at most 1,000 lines or about 1 MB.
async fn send_logs(client: Client, outbox: Arc<Outbox>, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(LOG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let batch: Vec<Value> = {
                let mut logs = lock(&outbox.logs);
                let mut bytes = 0;
                let mut n = 0;
                while n < logs.len().min(MAX_LOGS_PER_REQUEST) && bytes < MAX_LOG_BYTES_PER_REQUEST
                {
                    bytes += logs[n]["message"].as_str().map_or(0, str::len) + 200;
                    n += 1;
                }
                logs.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let posted = post_batch(
                &client,
                &counters,
                "/logs/",
                batch,
                &outbox.logs,
                &outbox.logs_in_flight,
                &counters.logs,
            )
            .await;
            if posted.is_err() {
                break;
            }
        }
    }
}

/// Posts a batch of events or logs. While it is out, `in_flight` counts it,
/// so that an empty outbox means everything was answered; if it fails, it
/// goes back to the front of `queue` for the next try.
async fn post_batch(
    client: &Client,
    counters: &Counters,
    path: &str,
    batch: Vec<Value>,
    queue: &Mutex<VecDeque<Value>>,
    in_flight: &AtomicU64,
    delivered: &AtomicU64,
) -> Result<(), ApiError> {
    in_flight.store(batch.len() as u64, Ordering::Release);
    let mut sent = Sent::default();
    let body = Value::Array(batch);
    let result = client
        .send(Method::POST, path, Some(&body), &mut sent)
        .await;
    counters.add(sent);
    let Value::Array(batch) = body else {
        unreachable!("built as an array")
    };
    match &result {
        Ok(_) => {
            delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        Err(_) => {
            let mut queue = lock(queue);
            for item in batch.into_iter().rev() {
                queue.push_front(item);
            }
        }
    }
    in_flight.store(0, Ordering::Release);
    result.map(drop)
}

/// Ends a flow run's report: waits until the server has every task run,
/// sending again what it lost, within the report wait.
async fn finish(
    report: FlowRunReport,
    client: Client,
    outbox: Arc<Outbox>,
    counters: Arc<Counters>,
    done: std::sync::mpsc::SyncSender<()>,
) {
    let deadline = Instant::now() + client.config().report_wait;
    let expected = report.finished.len() as u64;
    let Some(server) = report.server else {
        // Its one warning was given when the server could not take it.
        let reason = report
            .unreachable
            .as_ref()
            .map_or_else(|| "not created".to_string(), |e| e.to_string());
        keep_for_sync(&report, &client, None, &reason);
        let _ = done.send(());
        return;
    };
    let mut sent = Sent::default();
    let mut last_count = None;
    let mut settled_since = Instant::now();
    let mut missing = expected;
    loop {
        if !outbox.is_empty() {
            settled_since = Instant::now();
        } else {
            let count = count_task_runs(&client, server.flow_run, &mut sent).await;
            match count {
                Ok(count) if count >= expected => {
                    missing = 0;
                    break;
                }
                Ok(count) => {
                    missing = expected - count;
                    if last_count != Some(count) {
                        last_count = Some(count);
                        settled_since = Instant::now();
                    } else if settled_since.elapsed() >= SETTLE {
                        // The server's queue is empty and the count still short:
                        // it dropped events. Send those again, with new ids.
                        let resent =
                            resend_missing(&client, &report, server, &outbox, &mut sent).await;
                        counters.resent_events.fetch_add(resent, Ordering::Relaxed);
                        settled_since = Instant::now();
                    }
                }
                Err(err) => {
                    tracing::debug!(target: "prefecto.engine", "Cannot count task runs yet: {err}")
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    counters.add(sent);
    let lines_left = !outbox.is_empty();
    if missing > 0 || lines_left || report.undelivered_state {
        let counted = match last_count {
            Some(count) => format!("the server has {count} of its {expected} task run(s)"),
            None if missing == 0 => format!("the server has its {expected} task run(s)"),
            None => format!(
                "the server could not be asked how many of its {expected} task run(s) it has"
            ),
        };
        let reason = format!(
            "after {} s, {counted}{}{}",
            client.config().report_wait.as_secs(),
            if lines_left {
                "; events or log lines are still unsent"
            } else {
                ""
            },
            if report.undelivered_state {
                "; its state was not delivered"
            } else {
                ""
            },
        );
        tracing::warn!(
            target: "prefecto.engine",
            "Prefect does not have all of flow run '{}': {reason}. {}",
            report.name,
            kept_for_sync(&report)
        );
        keep_for_sync(&report, &client, Some(server), &reason);
    }
    let c = counters.snapshot();
    tracing::debug!(
        target: "prefecto.engine",
        "Prefect reporting so far: {} HTTP requests ({} retries), {} task-run events ({} sent again), {} log lines.",
        c.requests, c.retries, c.events, c.resent_events, c.logs
    );
    let _ = done.send(());
}

/// What the warning says about the run history's copy.
fn kept_for_sync(report: &FlowRunReport) -> String {
    if report.history.is_some() {
        format!(
            "The local run history keeps it: `prefecto flow-run sync {}` delivers it later.",
            report.name
        )
    } else {
        "The local run history is off, so it is not kept.".to_string()
    }
}

/// Notes in the run history that the server does not have the whole run.
#[cfg(feature = "history")]
fn keep_for_sync(report: &FlowRunReport, client: &Client, server: Option<ServerIds>, reason: &str) {
    let Some(history) = &report.history else {
        return;
    };
    let delivery = crate::store::Delivery {
        flow_run_id: report.id.to_string(),
        api_url: client.config().url.clone(),
        server_flow_run_id: server.map(|s| s.flow_run.to_string()),
        parameters: report.parameters.to_string(),
        delivered: false,
        reason: Some(reason.to_string()),
    };
    let recorded =
        crate::store::Store::open(history).and_then(|store| store.record_undelivered(&delivery));
    if let Err(err) = recorded {
        tracing::warn!(target: "prefecto.engine", "Could not note flow run '{}' as undelivered: {err}", report.name);
    }
}

/// Without the run history there is nowhere to keep it.
#[cfg(not(feature = "history"))]
fn keep_for_sync(_: &FlowRunReport, _: &Client, _: Option<ServerIds>, _: &str) {}

/// The ids of the task runs the server has recorded for a flow run.
pub(crate) async fn recorded_task_runs(
    client: &Client,
    flow_run: Uuid,
    sent: &mut Sent,
) -> Result<std::collections::HashSet<Uuid>, ApiError> {
    let filter = json!({
        "flow_runs": { "id": { "any_": [flow_run] } },
        "sort": "EXPECTED_START_TIME_ASC",
    });
    let rows = fetch_all(client, "/task_runs/filter", filter, sent).await?;
    Ok(rows
        .iter()
        .filter_map(|run| run["id"].as_str().and_then(|id| id.parse().ok()))
        .collect())
}

pub(crate) async fn count_task_runs(
    client: &Client,
    flow_run: Uuid,
    sent: &mut Sent,
) -> Result<u64, ApiError> {
    let body = json!({ "flow_runs": { "id": { "any_": [flow_run] } } });
    let count: Value = client
        .send(Method::POST, "/task_runs/count", Some(&body), sent)
        .await?;
    Ok(count.as_u64().unwrap_or(0))
}

/// Reads back the task-run ids the server has and queues events for the rest.
async fn resend_missing(
    client: &Client,
    report: &FlowRunReport,
    server: ServerIds,
    outbox: &Outbox,
    sent: &mut Sent,
) -> u64 {
    let Ok(recorded) = recorded_task_runs(client, server.flow_run, sent).await else {
        return 0;
    };
    let missing: Vec<Value> = report
        .finished
        .iter()
        .filter_map(|run| report.task_runs.get(run))
        .filter(|task_run| !recorded.contains(&task_run.id))
        .map(|task_run| task_run_event(server, report, task_run))
        .collect();
    let resent = missing.len() as u64;
    lock(&outbox.events).extend(missing);
    outbox.more.notify_one();
    resent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_prefects_numbers() {
        assert_eq!(level_number(Level::INFO), 20);
        assert_eq!(level_number(Level::ERROR), 40);
    }

    #[test]
    fn a_finished_task_run_is_one_complete_event() {
        let server = ServerIds {
            flow: Uuid::new_v4(),
            flow_run: Uuid::new_v4(),
        };
        let report = FlowRunReport {
            server: Some(server),
            ..FlowRunReport::new(
                Uuid::new_v4(),
                "calm-heron".into(),
                "seed".into(),
                json!({}),
            )
        };
        let start = State::running();
        let task_run = TaskRunReport {
            id: Uuid::new_v4(),
            run: TaskRunName {
                task: "add",
                index: 3,
            },
            spec: None,
            created: start.timestamp(),
            start: Some(start.timestamp()),
            end: Some(start.timestamp()),
            run_count: 1,
            previous: Some(start),
            latest: State::failed("boom"),
            submitted: true,
        };
        let event = task_run_event(server, &report, &task_run);
        assert_eq!(event["event"], "prefect.task-run.Failed");
        assert_eq!(event["resource"]["prefect.orchestration"], "client");
        assert_eq!(event["resource"]["prefect.state-message"], "boom");
        assert_eq!(event["payload"]["task_run"]["name"], "add-3");
        assert_eq!(event["payload"]["task_run"]["dynamic_key"], "3");
        assert!(event["payload"]["task_run"]["start_time"].is_string());
        assert_eq!(event["payload"]["intended"]["from"], "RUNNING");
    }
}
