//! Reporting to a real Prefect 3 server.
//!
//! With `PREFECT_API_URL` set (or a Prefect profile naming a server), every
//! flow run, task run, state and log line of a flow run appears on that
//! server and in its UI. Flow-run states go over REST, one sequential
//! request at a time; task runs go as events, many per request and paced, as
//! a server on SQLite drops what overflows its queue; logs go in batches.
//! When a flow run ends, the reporter reads back what the server recorded
//! and sends again what is missing.

mod actor;
mod adoption;
mod api_logs;
mod cancellation;
mod client;
mod config;
mod count_watch;
mod counters;
mod delivery;
mod error;
#[cfg(feature = "history")]
mod history_reports;
mod in_flight;
#[cfg(feature = "history")]
mod left_over;
mod limits;
mod long_runs;
mod orchestration;
mod readback;
mod reconcile;
mod report;
mod reporter;
pub(crate) mod schemas;
mod server_backlog;
mod server_counts;
#[cfg(feature = "history")]
mod sync;
mod text_limits;

pub(crate) use adoption::is_final;
pub use client::{Client, Sent};
pub use config::{ApiConfig, Auth};
pub use counters::ReportCounters;
pub use error::{ApiError, ConfigError};
pub use reporter::PrefectReporter;
#[cfg(feature = "history")]
pub use sync::{SyncError, SyncReport, sync_flow_run};

/// The environment variable a Prefect worker sets to the flow run it started us for.
pub const FLOW_RUN_ID_ENV: &str = "PREFECT__FLOW_RUN_ID";
