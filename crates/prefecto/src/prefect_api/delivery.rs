//! Delivery: the queues of task-run events and log lines, and the two
//! senders that drain them, paced, in batches.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use tokio::sync::Notify;
use uuid::Uuid;

use super::counters::Counters;
use super::readback::server_logs;
use super::schemas::{Event, LogCreate};
use super::server_backlog::ServerBacklog;
use super::{ApiError, Client, Sent};

/// At most this many log lines go in one request.
const MAX_LOGS_PER_REQUEST: usize = 1_000;
/// And at most about this many bytes.
const MAX_LOG_BYTES_PER_REQUEST: usize = 1_000_000;
/// How often queued log lines are sent.
const LOG_INTERVAL: Duration = Duration::from_millis(1_500);
/// Events and logs waiting to be sent, shared with their senders.
#[derive(Default)]
pub(super) struct DeliveryQueue {
    events: Mutex<VecDeque<Event>>,
    logs: Mutex<VecDeque<LogCreate>>,
    /// Events taken by the sender and not yet answered.
    events_in_flight: AtomicU64,
    logs_in_flight: AtomicU64,
    more: Notify,
}

impl DeliveryQueue {
    /// Nothing queued, and nothing sent that is not yet answered.
    pub(super) fn is_empty(&self) -> bool {
        lock(&self.events).is_empty()
            && lock(&self.logs).is_empty()
            && self.events_in_flight.load(Ordering::Acquire) == 0
            && self.logs_in_flight.load(Ordering::Acquire) == 0
    }

    /// Queues task-run events and wakes their sender.
    pub(super) fn push_events(&self, events: impl IntoIterator<Item = Event>) {
        lock(&self.events).extend(events);
        self.more.notify_one();
    }

    /// Queues log lines for the next batch.
    pub(super) fn push_logs(&self, logs: impl IntoIterator<Item = LogCreate>) {
        lock(&self.logs).extend(logs);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event writer: one stream of `POST /events`, at most
/// `PREFECTO_EVENTS_PER_SECOND`, and never more of ours in the server's
/// queue than a window ([`super::server_backlog`]): a server on SQLite
/// records events far slower than it accepts them and drops what overflows
/// its queue, without telling.
pub(super) async fn send_events(
    client: Client,
    outbox: Arc<DeliveryQueue>,
    counters: Arc<Counters>,
    backlog: Arc<ServerBacklog>,
) {
    let rate = client.config().events_per_second;
    // One request a second at the ceiling rate: few requests.
    let per_request = (rate.ceil() as usize).clamp(1, 5_000);
    loop {
        // Never more of ours in the server's queue than the window.
        backlog.room().await;
        let batch: Vec<Event> = {
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
        let finals = ServerBacklog::finals(&batch);
        // Events in doubt are not sent again: the server refuses a task run's
        // state twice, and drops the rest of its recording batch with it. The
        // flow run's end counts what the server has once the count settles,
        // and sends only what is missing.
        let posted = post_once(
            &client,
            &counters,
            "/events",
            batch,
            &outbox.events,
            &outbox.events_in_flight,
            &counters.events,
            |_| None,
        )
        .await;
        if let Err(err) = posted {
            tracing::debug!(target: "prefecto.engine", "Task-run events not delivered yet: {err}");
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        backlog.accepted(&finals);
        let pace = Duration::from_secs_f64(count as f64 / rate);
        tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
    }
}

/// The log writer: a batch every 1.5 s, at most 1,000 lines or about 1 MB.
pub(super) async fn send_logs(client: Client, outbox: Arc<DeliveryQueue>, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(LOG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        loop {
            let batch: Vec<LogCreate> = {
                let mut logs = lock(&outbox.logs);
                let mut bytes = 0;
                let mut n = 0;
                while n < logs.len().min(MAX_LOGS_PER_REQUEST) && bytes < MAX_LOG_BYTES_PER_REQUEST
                {
                    bytes += logs[n].message.len() + 200;
                    n += 1;
                }
                logs.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let Some(batch) = without_stored(&client, &counters, batch, &outbox.logs).await else {
                // The server could not say what it has: ask again next time.
                break;
            };
            if batch.is_empty() {
                continue;
            }
            // Log lines have no id the server would deduplicate by: lines in
            // doubt are looked up on the server (`without_stored`) before they
            // go again.
            let posted = post_once(
                &client,
                &counters,
                "/logs/",
                batch,
                &outbox.logs,
                &outbox.logs_in_flight,
                &counters.logs,
                |mut line| {
                    line.maybe_stored = true;
                    Some(line)
                },
            )
            .await;
            if posted.is_err() {
                break;
            }
        }
    }
}

/// The lines of `batch` the server does not have yet. Lines of a request
/// that failed after it may have reached the server are looked up in the
/// server's logs of their flow run first. `None` (the batch back in the
/// queue) if the server could not be asked.
async fn without_stored(
    client: &Client,
    counters: &Counters,
    batch: Vec<LogCreate>,
    queue: &Mutex<VecDeque<LogCreate>>,
) -> Option<Vec<LogCreate>> {
    if !batch.iter().any(|line| line.maybe_stored) {
        return Some(batch);
    }
    let mut flow_runs: Vec<Uuid> = batch
        .iter()
        .filter(|line| line.maybe_stored)
        .map(|line| line.flow_run_id)
        .collect();
    flow_runs.sort_unstable();
    flow_runs.dedup();
    let mut stored = HashSet::new();
    let mut sent = Sent::default();
    for flow_run in flow_runs {
        match server_logs(client, flow_run, &mut sent).await {
            Ok(lines) => stored.extend(lines.into_iter().map(|key| (flow_run, key))),
            Err(_) => {
                counters.add(sent);
                let mut queue = lock(queue);
                for line in batch.into_iter().rev() {
                    queue.push_front(line);
                }
                return None;
            }
        }
    }
    counters.add(sent);
    let before = batch.len();
    let missing: Vec<LogCreate> = batch
        .into_iter()
        .filter(|line| {
            !line.maybe_stored
                || !stored.contains(&(line.flow_run_id, (line.micros, line.message.clone())))
        })
        .collect();
    // The ones found were delivered by the request whose reply was lost.
    counters
        .logs
        .fetch_add((before - missing.len()) as u64, Ordering::Relaxed);
    Some(missing)
}

/// Posts a batch once. While it is out, `in_flight` counts it, so that an
/// empty outbox means everything was answered. Turned away (the server
/// busy, or down), it goes back to the front of `queue`. In doubt (sent,
/// its reply lost), each item goes to `in_doubt`, which gives back what is
/// to be queued again: nothing is simply sent twice.
#[allow(clippy::too_many_arguments)]
async fn post_once<T: Serialize>(
    client: &Client,
    counters: &Counters,
    path: &str,
    batch: Vec<T>,
    queue: &Mutex<VecDeque<T>>,
    in_flight: &AtomicU64,
    delivered: &AtomicU64,
    in_doubt: impl FnMut(T) -> Option<T>,
) -> Result<(), ApiError> {
    in_flight.store(batch.len() as u64, Ordering::Release);
    let mut sent = Sent::default();
    let result = client
        .send_json_once(Method::POST, path, &batch, &mut sent)
        .await;
    counters.add(sent);
    let result = match result {
        Ok(()) => {
            delivered.fetch_add(batch.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        Err(failed) => {
            let again: Vec<T> = if failed.in_doubt {
                batch.into_iter().filter_map(in_doubt).collect()
            } else {
                batch
            };
            let mut queue = lock(queue);
            for item in again.into_iter().rev() {
                queue.push_front(item);
            }
            Err(failed.error)
        }
    };
    in_flight.store(0, Ordering::Release);
    result
}
