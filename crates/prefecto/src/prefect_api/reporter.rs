//! The recorder that reports flow runs to a Prefect server.
//!
//! The engine hands it events through a channel; a thread of its own, with
//! its own small runtime, talks to the server ([`super::actor`]), so the
//! flow's speed is set by its tasks and never by the server. Three writers,
//! one per kind:
//! - flow-run states over REST, one request at a time, in order;
//! - finished task runs as events, many to a `POST /events`, paced;
//! - log lines in batches to `POST /logs/`.
//!
//! A flow call returns as soon as its task runs are done, as Python's does.
//! The reporter goes on in the background until the server has recorded
//! every task run of the flow runs that ended (it reads back the count, and
//! sends again what is missing, [`super::reconcile`]); the process waits for
//! that before it exits, within the report wait
//! ([`PrefectReporter::wait_for_delivery`]). What was not delivered by then
//! is named in a warning and noted in the run history, and the next process
//! that reports to the same server delivers it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::actor::{Msg, Reporter};
use super::adoption::NotAdopted;
use super::counters::{Counters, ReportCounters};
use super::in_flight::InFlight;
use super::limits::TagLimits;
use super::reconcile::{Undelivered, kept_note, note_undelivered};
use super::{ApiConfig, ApiError, Client, ConfigError, FLOW_RUN_ID_ENV};
use crate::adopt::{AdoptedFlowRun, FlowRunAdopter, RemoteFlowRun};
use crate::recorder::{FlowRunRef, LogEvent, Recorder, TransitionEvent};

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
    /// The run history's database, where an undelivered run is noted.
    history: Option<Arc<Path>>,
    /// The flow runs that have ended here, until the server has them.
    in_flight: Arc<InFlight>,
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
        let history_for_notes = history.clone();
        let in_flight = Arc::new(InFlight::default());
        let reporter = Reporter::new(client, reporter_counters, history, in_flight.clone());
        std::thread::Builder::new()
            .name("prefecto-report".into())
            .spawn(move || runtime.block_on(reporter.run(receiver)))
            .map_err(|e| ConfigError::Client(e.to_string()))?;

        Ok(PrefectReporter {
            sender,
            counters,
            config,
            limits,
            adopted: AtomicBool::new(false),
            history: history_for_notes,
            in_flight,
        })
    }

    /// Starts delivering, in the background, what earlier processes left
    /// undelivered to this server in the run history; the process waits for
    /// it at exit as for its own runs. What installing a set-up does.
    pub(crate) fn deliver_left_over(&self) {
        #[cfg(feature = "history")]
        if let (Some(history), Ok(client)) = (&self.history, Client::new(self.config.clone())) {
            super::left_over::deliver_in_background(
                client,
                history.clone(),
                self.in_flight.clone(),
            );
        }
    }

    /// Waits until the server has every flow run that has ended here, or
    /// the report wait (`PREFECTO_REPORT_WAIT`) and a margin have passed,
    /// with a progress line every few seconds; the runs still undelivered
    /// then are named in one warning and noted in the run history, and the
    /// next process that reports to this server delivers them. What
    /// [`crate::Prefecto::shutdown`] and process exit call; safe to call
    /// any number of times.
    pub fn wait_for_delivery(&self) {
        let limit = self.config.report_wait + END_MARGIN;
        let deadline = Instant::now() + limit;
        let mut said = false;
        let left = wait_blocking(|| {
            self.in_flight
                .wait(deadline, PROGRESS_EVERY, |totals, remaining| {
                    said = true;
                    let counted = if totals.expected > 0 {
                        format!(
                            "{} of {} task runs recorded",
                            totals.recorded, totals.expected
                        )
                    } else {
                        "sending".to_string()
                    };
                    tracing::info!(
                        target: "prefecto.engine",
                        "Reporting to Prefect: {counted} ({} flow run(s)); waiting up to {} s more (PREFECTO_REPORT_WAIT).",
                        totals.flow_runs,
                        remaining.as_secs()
                    );
                })
        });
        if said && left.is_empty() {
            tracing::info!(target: "prefecto.engine", "Reporting to Prefect: done.");
        }
        for (id, run) in left {
            self.in_flight.end(id);
            let reason = format!(
                "the Prefect server at {} did not have all of it within the report wait ({} s, PREFECTO_REPORT_WAIT)",
                self.config.url,
                self.config.report_wait.as_secs_f64()
            );
            if let Some(history) = &self.history {
                let undelivered = Undelivered {
                    flow_run: id,
                    name: &run.name,
                    server_flow_run: None,
                    parameters: &run.parameters,
                    reason: &reason,
                };
                note_undelivered(history, &self.config.url, &undelivered);
            }
            let kept = kept_note(&run.name, self.history.is_some());
            tracing::warn!(
                target: "prefecto.engine",
                "Flow run '{}' may be incomplete on the server: {reason}. {kept}",
                run.name
            );
        }
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
    fn adopt_run(&self, flow_run: Uuid, flow: &str) -> Result<AdoptedFlowRun, NotAdopted> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Msg::Adopt {
            flow_run,
            flow: flow.to_string(),
            reply,
        });
        let url = self.config.url.clone();
        wait_blocking(|| answer.recv_timeout(Duration::from_secs(120))).unwrap_or_else(|_| {
            Err(NotAdopted::Unreadable(ApiError::Unreachable {
                url,
                reason: "no answer within 120 s".to_string(),
            }))
        })
    }
}

/// How long past its report wait the process waits for the reporter.
const END_MARGIN: Duration = Duration::from_secs(5);

/// How long a flow call waits, at its start, for the server to have it
/// running (Prefect's own request timeout, `PREFECT_API_REQUEST_TIMEOUT`'s
/// default), and never longer than the report wait; past that it runs on,
/// and the server gets it when it can. A server that is down answers at
/// once, so this is only a busy or hung server's cost.
const START_WAIT: Duration = Duration::from_secs(60);

/// How often a wait for delivery says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
            Err(err) => warn(err.to_string()),
        }
    }

    /// Waits until the server has flow run `flow_run` running (its Running
    /// state accepted), so that its task runs never start there before it.
    fn started(&self, flow_run: Uuid) -> Option<RemoteFlowRun> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Msg::Started { flow_run, reply });
        let limit = START_WAIT.min(self.config.report_wait);
        let server_id = wait_blocking(|| answer.recv_timeout(limit)).ok()??;
        Some(RemoteFlowRun::new(
            server_id,
            Some(self.config.ui_url_of_flow_run(server_id)),
        ))
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
                upstream: event.upstream.to_vec(),
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
        // The flow call goes on at once; process exit waits for delivery.
        self.in_flight
            .begin(flow_run.id, flow_run.name, flow_run.parameters);
        self.send(Msg::End {
            flow_run: flow_run.id,
        });
    }
}
