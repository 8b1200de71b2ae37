//! Reporting to a real Prefect 3 server.
//!
//! With `PREFECT_API_URL` set (or a Prefect profile naming a server), every
//! flow run, task run, state and log line of a flow run appears on that
//! server and in its UI. Flow-run states go over REST, one sequential
//! request at a time; task runs go as events, many per request and paced, as
//! a server on SQLite drops what overflows its queue; logs go in batches.
//! When a flow run ends, the reporter reads back what the server recorded
//! and sends again what is missing.

mod client;
mod config;
mod error;
mod limits;
mod reporter;
mod sync;

use std::sync::{Arc, OnceLock};

pub use client::{Client, Sent};
pub use config::{ApiConfig, Auth};
pub use error::{ApiError, ConfigError};
pub use reporter::{PrefectReporter, ReportCounters};
pub use sync::{sync_flow_run, SyncError, SyncReport};

/// The reporter for this process, started with the first flow run if the
/// environment or a Prefect profile names a server.
pub(crate) fn reporter() -> Option<Arc<PrefectReporter>> {
    static REPORTER: OnceLock<Option<Arc<PrefectReporter>>> = OnceLock::new();
    REPORTER
        .get_or_init(|| {
            let started = ApiConfig::from_env()
                .and_then(|config| config.map(PrefectReporter::start).transpose());
            match started {
                Ok(reporter) => reporter.map(Arc::new),
                Err(err) => {
                    tracing::warn!(target: "prefecto.engine", "Not reporting to Prefect: {err}");
                    None
                }
            }
        })
        .clone()
}

pub(crate) use limits::TagLimits;

/// The Prefect id of a task run: derived from its flow run and its name, so
/// that the engine (holding a concurrency slot for it) and the reporter
/// (sending its events) agree without asking each other.
pub(crate) fn task_run_id(flow_run: uuid::Uuid, run: crate::future::TaskRunName) -> uuid::Uuid {
    uuid::Uuid::new_v5(&flow_run, run.to_string().as_bytes())
}

/// A flow run created elsewhere (by a Prefect worker) that this process runs.
pub(crate) struct Adopted {
    pub(crate) id: uuid::Uuid,
    pub(crate) name: String,
    pub(crate) parameters: serde_json::Map<String, serde_json::Value>,
}

/// The environment variable a Prefect worker sets to the flow run it started us for.
pub const FLOW_RUN_ID_ENV: &str = "PREFECT__FLOW_RUN_ID";

/// The flow run to adopt, if a Prefect worker started this process for one:
/// the first flow call of the process takes it, as Python's entrypoint does.
pub(crate) fn adopt_from_env(flow: &str) -> Option<Adopted> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let id = std::env::var(FLOW_RUN_ID_ENV)
        .ok()
        .filter(|v| !v.is_empty())?;
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return None;
    }
    let warn = |why: String| {
        tracing::warn!(target: "prefecto.engine", "{FLOW_RUN_ID_ENV} is set to {id:?}, but {why}: flow '{flow}' runs as a new flow run.");
        None
    };
    let Ok(server_id) = id.parse::<uuid::Uuid>() else {
        return warn("that is not a flow-run id".to_string());
    };
    let Some(reporter) = reporter() else {
        return warn("no Prefect server is configured (PREFECT_API_URL)".to_string());
    };
    match reporter.adopt(server_id, flow) {
        Ok(adopted) => Some(adopted),
        Err(err) => warn(format!("the flow run could not be read: {err}")),
    }
}

/// What reporting to Prefect has cost so far in this process, if it reports.
///
/// ```
/// // With no PREFECT_API_URL, nothing is reported.
/// # std::env::remove_var("PREFECT_API_URL");
/// # std::env::set_var("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml");
/// assert!(prefecto::prefect_api::counters().is_none());
/// ```
pub fn counters() -> Option<ReportCounters> {
    reporter().map(|r| r.counters())
}
