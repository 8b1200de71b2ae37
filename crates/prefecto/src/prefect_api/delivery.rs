//! Delivery: the queues of task-run events and log lines, and the two
//! senders that drain them, paced, in batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;

use super::counters::Counters;
use super::schemas::{Event, LogCreate};
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

/// The event writer: one paced stream of `POST /events`. A server on SQLite
/// records events far slower than it accepts them and drops what overflows
/// its queue, without telling: the pace is what keeps the queue short.
pub(super) async fn send_events(
    client: Client,
    outbox: Arc<DeliveryQueue>,
    counters: Arc<Counters>,
) {
    let rate = client.config().events_per_second;
    // One request a second at the default rate: few requests, small queue.
    let per_request = (rate.ceil() as usize).clamp(1, 5_000);
    loop {
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
async fn post_batch<T: Serialize>(
    client: &Client,
    counters: &Counters,
    path: &str,
    batch: Vec<T>,
    queue: &Mutex<VecDeque<T>>,
    in_flight: &AtomicU64,
    delivered: &AtomicU64,
) -> Result<(), ApiError> {
    in_flight.store(batch.len() as u64, Ordering::Release);
    let mut sent = Sent::default();
    let result: Result<Value, ApiError> = client
        .send_json(Method::POST, path, &batch, &mut sent)
        .await;
    counters.add(sent);
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
