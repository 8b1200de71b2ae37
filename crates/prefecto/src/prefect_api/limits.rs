//! Prefect's tag concurrency limits, honoured on the client as the Python
//! SDK does: before a tagged task run starts, it takes a slot of each
//! `tag:<tag>` limit with `increment-with-lease`, renews the lease at 75% of
//! its duration while it runs, and gives the slot back with
//! `decrement-with-lease`. A full limit (423) makes the run wait, as long as
//! `Retry-After` says; it never fails the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::runtime::Handle;
use uuid::Uuid;

use super::schemas::{DecrementWithLease, Holder, IncrementWithLease, LeaseGranted, RenewLease};
use super::{ApiError, Client, Sent};
use crate::slot_limiter::{BoxFuture, Slot, SlotLimiter, SlotRequest};

/// How long a lease lasts unless renewed (the SDK's default; the server
/// takes 60 to 86,400 s).
const LEASE: Duration = Duration::from_secs(60);
/// Tags found without limits are not asked about again for this long.
const NO_LIMIT_MEMORY: Duration = Duration::from_secs(30);

/// The tag limits of one Prefect server.
pub(crate) struct TagLimits {
    client: Client,
    /// The reporter's runtime, where the HTTP requests run.
    runtime: Handle,
    unlimited: Mutex<HashMap<&'static [&'static str], Instant>>,
    counters: Arc<super::counters::Counters>,
}

/// A slot of every limit of a task run's tags, held while it runs. Dropped
/// without [`TagSlot::release`] (the run was cancelled, or panicked), it still
/// gives the slot back, in the background.
pub(crate) struct TagSlot {
    lease: Option<Uuid>,
    renewal: tokio::task::JoinHandle<()>,
    limits: Arc<TagLimits>,
}

impl TagLimits {
    pub(crate) fn new(
        client: Client,
        runtime: Handle,
        counters: Arc<super::counters::Counters>,
    ) -> Arc<Self> {
        Arc::new(TagLimits {
            client,
            runtime,
            unlimited: Mutex::new(HashMap::new()),
            counters,
        })
    }

    fn known_unlimited(&self, tags: &'static [&'static str]) -> bool {
        let unlimited = self.unlimited.lock().unwrap_or_else(|p| p.into_inner());
        unlimited
            .get(tags)
            .is_some_and(|since| since.elapsed() < NO_LIMIT_MEMORY)
    }

    /// Waits for a slot of each of the tags' limits; `None` if they have
    /// none (or the server cannot be asked, which must not stop the run).
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        tags: &'static [&'static str],
        holder: Uuid,
    ) -> Option<TagSlot> {
        if tags.is_empty() || self.known_unlimited(tags) {
            return None;
        }
        let limits = self.clone();
        self.runtime
            .spawn(async move { limits.acquire_here(tags, holder).await })
            .await
            .ok()
            .flatten()
    }

    async fn acquire_here(
        self: Arc<Self>,
        tags: &'static [&'static str],
        holder: Uuid,
    ) -> Option<TagSlot> {
        let names: Vec<String> = tags.iter().map(|tag| format!("tag:{tag}")).collect();
        let body = IncrementWithLease {
            names: names.clone(),
            slots: 1,
            mode: "concurrency",
            lease_duration: LEASE.as_secs(),
            holder: Holder {
                kind: "task_run",
                id: holder,
            },
        };
        let mut failures = 0;
        loop {
            let mut sent = Sent::default();
            let answer = self
                .client
                .send_raw(
                    Method::POST,
                    "/v2/concurrency_limits/increment-with-lease",
                    &body,
                    &mut sent,
                )
                .await;
            self.counters.add(sent);
            let wait = match answer {
                Ok((200, _, value)) => return self.granted(tags, value),
                // Full: wait as the server asks, then ask again.
                Ok((423, retry_after, _)) => retry_after.unwrap_or(Duration::from_secs(1)),
                Ok((408 | 429 | 502 | 503, retry_after, _)) => {
                    retry_after.unwrap_or_else(|| super::client::backoff(failures))
                }
                Ok((status, _, value)) => {
                    tracing::warn!(
                        target: "prefecto.engine",
                        "Tag concurrency limits for {names:?} could not be taken (HTTP {status}: {value}); the task run goes ahead without them."
                    );
                    return None;
                }
                Err(err) => {
                    failures += 1;
                    if failures > 5 {
                        tracing::warn!(
                            target: "prefecto.engine",
                            "Tag concurrency limits for {names:?} could not be taken ({err}); the task run goes ahead without them."
                        );
                        return None;
                    }
                    super::client::backoff(failures)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    fn granted(self: Arc<Self>, tags: &'static [&'static str], value: Value) -> Option<TagSlot> {
        let granted: LeaseGranted = serde_json::from_value(value).ok()?;
        let lease = granted.lease_id;
        let limited = !granted.limits.is_empty();
        if !limited {
            self.unlimited
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(tags, Instant::now());
            if let Some(lease) = lease {
                // A lease on no limit holds nothing; give it back anyway.
                self.runtime.spawn(self.clone().release_lease(lease));
            }
            return None;
        }
        let lease: Uuid = lease?;
        let renewal = self.runtime.spawn(self.clone().renew(lease));
        Some(TagSlot {
            lease: Some(lease),
            renewal,
            limits: self,
        })
    }

    /// Renews the lease at 75% of its duration, as the SDK does, until aborted.
    async fn renew(self: Arc<Self>, lease: Uuid) {
        let path = format!("/v2/concurrency_limits/leases/{lease}/renew");
        let body = RenewLease {
            lease_duration: LEASE.as_secs(),
        };
        loop {
            tokio::time::sleep(LEASE.mul_f64(0.75)).await;
            let mut sent = Sent::default();
            let answer = self
                .client
                .send_raw(Method::POST, &path, &body, &mut sent)
                .await;
            self.counters.add(sent);
            if let Ok((410, _, _)) = answer {
                tracing::warn!(
                    target: "prefecto.engine",
                    "A tag concurrency lease expired before its task run finished; the limit may admit another run."
                );
                return;
            }
        }
    }

    async fn release_lease(self: Arc<Self>, lease: Uuid) {
        let body = DecrementWithLease { lease_id: lease };
        let mut sent = Sent::default();
        let released: Result<Value, ApiError> = self
            .client
            .send_json(
                Method::POST,
                "/v2/concurrency_limits/decrement-with-lease",
                &body,
                &mut sent,
            )
            .await;
        self.counters.add(sent);
        if let Err(err) = released {
            // The server reclaims an unrenewed lease within about a minute and a half.
            tracing::warn!(target: "prefecto.engine", "A tag concurrency slot was not given back ({err}); its lease will expire.");
        }
    }
}

impl TagSlot {
    /// Gives the slots back.
    pub(crate) async fn release(mut self) {
        self.renewal.abort();
        if let Some(lease) = self.lease.take() {
            let limits = self.limits.clone();
            let _ = self.limits.runtime.spawn(limits.release_lease(lease)).await;
        }
    }
}

impl Drop for TagSlot {
    fn drop(&mut self) {
        self.renewal.abort();
        if let Some(lease) = self.lease.take() {
            let limits = self.limits.clone();
            self.limits.runtime.spawn(limits.release_lease(lease));
        }
    }
}

/// Prefect's tag concurrency limits as the engine sees them.
pub(crate) struct TagLimiter(pub(crate) Arc<TagLimits>);

impl SlotLimiter for TagLimiter {
    fn acquire(&self, request: SlotRequest) -> BoxFuture<Option<Box<dyn Slot>>> {
        let limits = self.0.clone();
        Box::pin(async move {
            let slot = limits.acquire(request.tags, request.task_run_id).await?;
            Some(Box::new(slot) as Box<dyn Slot>)
        })
    }
}

impl Slot for TagSlot {
    fn release(self: Box<Self>) -> BoxFuture<()> {
        Box::pin(TagSlot::release(*self))
    }
}
