//! The reporter's thread: the actor that owns every reported flow run. It
//! creates flow runs, proposes their states one request at a time, turns
//! finished task runs into events and log lines for delivery, and watches for
//! cancellation asked for on the server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Level;
use uuid::Uuid;

use super::adoption::{NotAdopted, read_adoptable};
use super::api_logs::{beginning_line, sent as sent_to_api};
use super::cancellation::poll_cancellation;
use super::counters::Counters;
use super::delivery::{DeliveryQueue, send_events, send_logs};
use super::in_flight::InFlight;
use super::long_runs;
use super::orchestration::{Orchestration, final_state, set_flow_run_state};
use super::reconcile::{finish, kept_for_sync, note_in_history};
use super::report::{FlowRunReport, ServerIds, TaskRunReport, log_create, task_run_event};
use super::schemas::{FlowCreate, FlowRunCreate, StateCreate, WithId};
use super::server_backlog::{ServerBacklog, count_backlog};
use super::{ApiError, Client, Sent};
use crate::adopt::AdoptedFlowRun;
use crate::inputs::UpstreamRun;
use crate::names::TaskRunName;
use crate::recorder::{FLOW_RUNS, implied_lines};
use crate::state::State;
use crate::task::TaskSpec;

/// What the engine's threads tell the reporter's.
pub(super) enum Msg {
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
        upstream: Vec<UpstreamRun>,
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
    },
    /// Answered once the flow run's Running state is handled: its id on
    /// the server, if the server has it.
    Started {
        flow_run: Uuid,
        reply: std::sync::mpsc::SyncSender<Option<Uuid>>,
    },
    Adopt {
        flow_run: Uuid,
        flow: String,
        reply: std::sync::mpsc::SyncSender<Result<AdoptedFlowRun, NotAdopted>>,
    },
}

/// The reporter's own thread: it owns every flow run's report and talks to
/// the server, one flow-run request at a time.
pub(super) struct Reporter {
    client: Client,
    counters: Arc<Counters>,
    outbox: Arc<DeliveryQueue>,
    runs: HashMap<Uuid, FlowRunReport>,
    flow_ids: HashMap<String, Uuid>,
    /// Whether the server has answered as a Prefect server should.
    checked: bool,
    /// The run history's database, where undelivered runs are noted.
    history: Option<Arc<Path>>,
    /// The flow runs that have ended, until the server has them.
    in_flight: Arc<InFlight>,
    /// Our task runs the server has accepted and not yet recorded.
    backlog: Arc<ServerBacklog>,
}

impl Reporter {
    pub(super) fn new(
        client: Client,
        counters: Arc<Counters>,
        history: Option<Arc<Path>>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Reporter {
            client,
            counters,
            history,
            in_flight,
            backlog: Arc::new(ServerBacklog::default()),
            outbox: Arc::new(DeliveryQueue::default()),
            runs: HashMap::new(),
            flow_ids: HashMap::new(),
            checked: false,
        }
    }

    pub(super) async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Msg>) {
        tokio::spawn(send_events(
            self.client.clone(),
            self.outbox.clone(),
            self.counters.clone(),
            self.backlog.clone(),
        ));
        tokio::spawn(count_backlog(
            self.client.clone(),
            self.backlog.clone(),
            self.counters.clone(),
        ));
        tokio::spawn(send_logs(
            self.client.clone(),
            self.outbox.clone(),
            self.counters.clone(),
        ));
        let mut long_runs = tokio::time::interval(long_runs::LONG);
        long_runs.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(self.client.config().cancel_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = receiver.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = poll.tick() => poll_cancellation(&self.client, &self.counters, &mut self.runs).await,
                _ = long_runs.tick() => long_runs::announce(&mut self.runs, &self.outbox),
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
                upstream,
            } => self.task_state(flow_run, run, spec, state, upstream),
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
                if !sent_to_api(self.client.config().log_level_sent, logger, level) {
                    return;
                }
                let task_run_id = task_run
                    .and_then(|r| report.task_runs.get(&r))
                    .map(|t| t.id);
                if let Some(log) =
                    log_create(report, task_run_id, level, logger, &message, timestamp)
                {
                    self.outbox.push_logs([log]);
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
            Msg::Started { flow_run, reply } => {
                let server = self
                    .runs
                    .get(&flow_run)
                    .filter(|report| !report.undelivered_state)
                    .and_then(|report| report.server);
                let _ = reply.send(server.map(|s| s.flow_run));
            }
            Msg::End { flow_run } => {
                let Some(report) = self.runs.remove(&flow_run) else {
                    self.in_flight.end(flow_run);
                    return;
                };
                // Noted before it is delivered: should the process end
                // first, the next one that reports here delivers it.
                note_in_history(
                    &report,
                    &self.client,
                    Some("the process ended before the server had all of it"),
                );
                tokio::spawn(finish(
                    report,
                    self.client.clone(),
                    self.outbox.clone(),
                    self.counters.clone(),
                    self.in_flight.clone(),
                    self.backlog.clone(),
                ));
            }
        }
    }

    async fn adopt(&mut self, flow_run: Uuid, flow: String) -> Result<AdoptedFlowRun, NotAdopted> {
        let mut sent = Sent::default();
        let checked = self.checked;
        let read = read_adoptable(&self.client, flow_run, &flow, checked, &mut sent).await;
        self.counters.add(sent);
        let run = read?;
        self.checked = true;
        let (flow_id, name, parameters) = (run.flow_id, run.name, run.parameters);
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
        let result = if state.is_terminal() {
            final_state(&client, server.flow_run, &state, &mut sent).await
        } else {
            set_flow_run_state(&client, server.flow_run, &state, &mut sent).await
        };
        counters.add(sent);
        if state.is_running() && sent_to_api(client.config().log_level_sent, FLOW_RUNS, Level::INFO)
        {
            // Prefect's first line of a run, in place of the engine's "Created".
            let line = beginning_line(&report.name, &report.flow);
            if let Some(log) = log_create(
                report,
                None,
                Level::INFO,
                FLOW_RUNS,
                &line,
                state.timestamp(),
            ) {
                self.outbox.push_logs([log]);
            }
        }
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
                    let flow: WithId = self
                        .client
                        .send_patiently(
                            Method::POST,
                            "/flows/",
                            &FlowCreate { name: &report.flow },
                            self.client.config().report_wait,
                            &mut sent,
                        )
                        .await?;
                    self.flow_ids.insert(report.flow.clone(), flow.id);
                    flow.id
                }
            };
            let body = FlowRunCreate {
                flow_id: flow,
                name: &report.name,
                parameters,
                state: StateCreate::of(state),
                tags: [],
                idempotency_key: report.id.to_string(),
            };
            let run: WithId = self
                .client
                .send_patiently(
                    Method::POST,
                    "/flow_runs/",
                    &body,
                    self.client.config().report_wait,
                    &mut sent,
                )
                .await?;
            Ok(ServerIds {
                flow,
                flow_run: run.id,
            })
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
        upstream: Vec<UpstreamRun>,
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
                upstream: Vec::new(),
            });
        if !upstream.is_empty() {
            task_run.upstream = upstream;
        }
        task_run.submitted |= state.is_pending();
        if state.is_running() {
            task_run.start.get_or_insert(state.timestamp());
            task_run.run_count += 1;
            if report.server.is_some() {
                report.started.push_back((state.timestamp(), run));
            }
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
        let least = self.client.config().log_level_sent;
        for line in lines {
            // Only what Prefect's own client sends, at its level.
            let Some(level) = line
                .prefect_level
                .filter(|&l| sent_to_api(least, line.logger, l))
            else {
                continue;
            };
            let id = line.about_task_run.then_some(task_run_id);
            if let Some(log) = log_create(
                report,
                id,
                level,
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
                self.outbox.push_events([event]);
            }
        }
        self.outbox.push_logs(logs);
    }
}
