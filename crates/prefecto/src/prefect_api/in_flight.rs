//! Flow runs that have ended here but that the server does not have whole
//! yet. A flow call returns as soon as its task runs are done; delivery goes
//! on in the background, and what the process waits for before it exits
//! ([`crate::Prefecto::shutdown`]) is this list running empty.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

/// One flow run being delivered.
#[derive(Clone, Debug)]
pub(super) struct Delivering {
    pub(super) name: String,
    pub(super) parameters: Value,
    /// Task runs the server must have, once known.
    pub(super) expected: Option<u64>,
    /// Task runs the server has recorded, at the last count.
    pub(super) recorded: u64,
}

/// What a wait saw, for its progress lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub(super) flow_runs: usize,
    pub(super) expected: u64,
    pub(super) recorded: u64,
}

/// The flow runs being delivered, shared by the engine's threads (which
/// add them as they end) and the reporter's (which removes them once the
/// server has them, or its wait for them is over).
#[derive(Default)]
pub(super) struct InFlight {
    runs: Mutex<HashMap<Uuid, Delivering>>,
    changed: Condvar,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Delivering>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Flow run `id` has ended here: its delivery has begun.
    pub(super) fn begin(&self, id: Uuid, name: &str, parameters: &Value) {
        self.lock().insert(
            id,
            Delivering {
                name: name.to_string(),
                parameters: parameters.clone(),
                expected: None,
                recorded: 0,
            },
        );
    }

    /// The server has `recorded` of the `expected` task runs of `id`.
    pub(super) fn progress(&self, id: Uuid, expected: u64, recorded: u64) {
        if let Some(run) = self.lock().get_mut(&id) {
            run.expected = Some(expected);
            run.recorded = recorded.min(expected);
        }
        self.changed.notify_all();
    }

    /// The delivery of `id` is over, whole or not (its note says which).
    pub(super) fn end(&self, id: Uuid) {
        self.lock().remove(&id);
        self.changed.notify_all();
    }

    pub(super) fn totals(&self) -> Totals {
        let runs = self.lock();
        Totals {
            flow_runs: runs.len(),
            expected: runs.values().filter_map(|r| r.expected).sum(),
            recorded: runs.values().map(|r| r.recorded).sum(),
        }
    }

    /// Waits until every delivery is over or `deadline` has passed, calling
    /// `progress` about every `every`; gives the runs still being delivered.
    pub(super) fn wait(
        &self,
        deadline: Instant,
        every: Duration,
        mut progress: impl FnMut(Totals, Duration),
    ) -> Vec<(Uuid, Delivering)> {
        let started = Instant::now();
        let mut next_line = started + every;
        let mut runs = self.lock();
        loop {
            let now = Instant::now();
            if runs.is_empty() || now >= deadline {
                return runs.iter().map(|(id, run)| (*id, run.clone())).collect();
            }
            if now >= next_line {
                drop(runs);
                progress(self.totals(), deadline - now);
                next_line = now + every;
                runs = self.lock();
                continue;
            }
            let until = deadline.min(next_line);
            runs = self
                .changed
                .wait_timeout(runs, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_wait_ends_when_the_last_delivery_does() {
        let in_flight = Arc::new(InFlight::default());
        let id = Uuid::new_v4();
        in_flight.begin(id, "beryl-moth", &Value::Null);
        in_flight.progress(id, 10, 4);
        assert_eq!(
            in_flight.totals(),
            Totals {
                flow_runs: 1,
                expected: 10,
                recorded: 4
            }
        );
        let ender = in_flight.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ender.end(id);
        });
        let left = in_flight.wait(
            Instant::now() + Duration::from_secs(20),
            Duration::from_secs(5),
            |_, _| {},
        );
        handle.join().unwrap();
        assert!(left.is_empty());
    }

    #[test]
    fn a_wait_gives_up_at_its_deadline_with_progress_on_the_way() {
        let in_flight = InFlight::default();
        let id = Uuid::new_v4();
        in_flight.begin(id, "beryl-moth", &Value::Null);
        let mut lines = 0;
        let left = in_flight.wait(
            Instant::now() + Duration::from_millis(120),
            Duration::from_millis(30),
            |totals, _| {
                assert_eq!(totals.flow_runs, 1);
                lines += 1;
            },
        );
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1.name, "beryl-moth");
        assert!(lines >= 2, "{lines}");
    }
}
