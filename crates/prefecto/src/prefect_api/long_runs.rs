//! Task runs still running a second after they started are shown to the
//! server as Running, so that a long task run is visible in the UI while it
//! runs and its state history has its Running state. A short one gets one
//! event, its final state (which carries its start time): the server's
//! recorder is the costly part of reporting, and most task runs are short.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::delivery::DeliveryQueue;
use super::report::{FlowRunReport, task_run_event};

/// How long a task run runs before the server is told it is running.
pub(super) const LONG: Duration = Duration::from_secs(1);

/// Queues a Running event for each task run that started more than
/// [`LONG`] ago and has not finished.
pub(super) fn announce(runs: &mut HashMap<Uuid, FlowRunReport>, outbox: &DeliveryQueue) {
    let cutoff = Utc::now() - LONG;
    for report in runs.values_mut() {
        let Some(server) = report.server else {
            report.started.clear();
            continue;
        };
        let mut events = Vec::new();
        while report
            .started
            .front()
            .is_some_and(|(started, _)| *started <= cutoff)
        {
            let Some((_, run)) = report.started.pop_front() else {
                break;
            };
            if let Some(task_run) = report.task_runs.get(&run)
                && task_run.latest.is_running()
            {
                events.push(task_run_event(server, report, task_run));
            }
        }
        if !events.is_empty() {
            outbox.push_events(events);
        }
    }
}
