//! What reporting to a Prefect server has cost: requests, retries, events
//! and log lines, counted as they are sent.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Sent;

/// What the reporter has cost so far, in this process.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportCounters {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// Of those, retries of a failed request.
    pub retries: u64,
    /// Task-run events sent.
    pub events: u64,
    /// Of those, events sent again because the server had not recorded them.
    pub resent_events: u64,
    /// Log lines sent.
    pub logs: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) resent_events: AtomicU64,
    pub(crate) logs: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, sent: Sent) {
        self.requests.fetch_add(sent.requests, Ordering::Relaxed);
        self.retries.fetch_add(sent.retries, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReportCounters {
        ReportCounters {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            resent_events: self.resent_events.load(Ordering::Relaxed),
            logs: self.logs.load(Ordering::Relaxed),
        }
    }
}
