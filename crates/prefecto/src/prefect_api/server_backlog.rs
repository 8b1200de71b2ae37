//! Pacing by what the server records: how many of our finished task runs
//! the server has accepted (`POST /events` answered) but not yet recorded.
//! A Prefect server records events from an in-memory queue of 10,000 and
//! drops what overflows it without saying so; its recording rate depends on
//! its database and its load. So the event sender keeps this backlog under
//! a window, and a fast server (PostgreSQL, more CPU) is used fully while a
//! slow one is never overrun. The counts come from `POST /task_runs/count`,
//! once a second for each flow run with task runs in the backlog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

use super::counters::Counters;
use super::schemas::Event;
use super::server_counts::count_task_runs;
use super::{Client, Sent};

/// Most of our task runs in the server's queue at once: well under its
/// 10,000, leaving room for other clients (a few processes at once) and
/// for the Running events.
pub(super) const WINDOW: u64 = 2_000;

/// How often the backlog is counted while there is one.
const COUNT_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Run {
    accepted: u64,
    recorded: u64,
    /// When `recorded` was last counted (by this module, or by the flow
    /// run's end, which counts it often): no need to count it again sooner.
    counted: Option<Instant>,
}

/// Our task runs the server has accepted and not yet recorded, by flow run.
#[derive(Default)]
pub(super) struct ServerBacklog {
    runs: Mutex<HashMap<Uuid, Run>>,
    counted: Notify,
}

impl ServerBacklog {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Run>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flow runs of the final-state events among `events`, to pass to
    /// [`ServerBacklog::accepted`] once the server has answered.
    pub(super) fn finals(events: &[Event]) -> Vec<Uuid> {
        events
            .iter()
            .filter(|e| e.is_final())
            .map(|e| e.flow_run)
            .collect()
    }

    /// The server answered a `POST /events` whose final-state events were
    /// of these flow runs.
    pub(super) fn accepted(&self, finals: &[Uuid]) {
        let mut runs = self.lock();
        for flow_run in finals {
            runs.entry(*flow_run).or_default().accepted += 1;
        }
    }

    /// Task runs accepted and not yet recorded, over every flow run.
    pub(super) fn size(&self) -> u64 {
        self.lock()
            .values()
            .map(|run| run.accepted.saturating_sub(run.recorded))
            .sum()
    }

    /// Waits until the backlog is under the window (or a count is due).
    pub(super) async fn room(&self) {
        while self.size() >= WINDOW {
            let _ = tokio::time::timeout(COUNT_EVERY, self.counted.notified()).await;
        }
    }

    /// The flow runs with task runs in the backlog and no recent count.
    fn behind(&self) -> Vec<Uuid> {
        self.lock()
            .iter()
            .filter(|(_, run)| run.accepted > run.recorded)
            .filter(|(_, run)| run.counted.is_none_or(|at| at.elapsed() >= COUNT_EVERY))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The server has `count` finished task runs of `flow_run`.
    pub(super) fn recorded(&self, flow_run: Uuid, count: u64) {
        if let Some(run) = self.lock().get_mut(&flow_run) {
            run.recorded = run.recorded.max(count);
            run.counted = Some(Instant::now());
        }
    }

    /// A flow run's delivery is over: its task runs leave the backlog.
    pub(super) fn forget(&self, flow_run: Uuid) {
        self.lock().remove(&flow_run);
        self.counted.notify_waiters();
    }
}

/// Counts, once a second, the finished task runs of each flow run with a
/// backlog, for the event sender's window.
pub(super) async fn count_backlog(
    client: Client,
    backlog: Arc<ServerBacklog>,
    counters: Arc<Counters>,
) {
    let mut tick = tokio::time::interval(COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for flow_run in backlog.behind() {
            let mut sent = Sent::default();
            if let Ok(count) = count_task_runs(&client, flow_run, &mut sent).await {
                backlog.recorded(flow_run, count);
            }
            counters.add(sent);
        }
        backlog.counted.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_what_was_accepted_and_not_recorded() {
        let backlog = ServerBacklog::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        backlog.lock().insert(
            a,
            Run {
                accepted: 2_500,
                ..Run::default()
            },
        );
        backlog.lock().insert(
            b,
            Run {
                accepted: 1_000,
                ..Run::default()
            },
        );
        assert_eq!(backlog.size(), 3_500);
        assert_eq!(backlog.behind().len(), 2);
        backlog.recorded(a, 2_000);
        // Just counted: not counted again for a second.
        assert_eq!(backlog.behind(), [b]);
        // A count never goes back.
        backlog.recorded(a, 1_500);
        assert_eq!(backlog.size(), 1_500);
        backlog.forget(b);
        assert_eq!(backlog.size(), 500);
        backlog.recorded(a, 2_500);
        assert!(backlog.behind().is_empty());
        assert_eq!(backlog.size(), 0);
    }
}
