//! Cancelling a child flow run whose parent stopped waiting for it (a kill
//! switch tripped, the flow run was cancelled, the future was dropped).
//!
//! The wait is dropped, so the request cannot be sent from it: it goes on
//! prefecto's own runtime, which outlives the flow's, and the process waits
//! for it at exit (with the reports) and in `prefecto::shutdown()`.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use uuid::Uuid;

use super::wire::{ChildRead, ChildSetState, ChildStateCreate};
use crate::prefect_api::{ApiConfig, Client, Sent};

static PENDING: Mutex<usize> = Mutex::new(0);
static DONE: Condvar = Condvar::new();

/// Cancels the child while its wait is armed, when dropped.
pub(super) struct CancelOnDrop {
    pub(super) config: ApiConfig,
    pub(super) child: Uuid,
    pub(super) armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        *PENDING.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let (config, child) = (self.config.clone(), self.child);
        crate::context::own_runtime().spawn(async move {
            cancel_child(config, child).await;
            let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
            *pending -= 1;
            DONE.notify_all();
        });
    }
}

/// Asks the server to cancel the child: a run no worker has taken yet ends
/// `Cancelled` at once; one that runs goes `Cancelling`, and its worker
/// kills its process (and the binary, watching its own run, stops first).
async fn cancel_child(config: ApiConfig, child: Uuid) {
    // A client of this runtime's own: the flow's may be gone with its connections.
    let Ok(client) = Client::new(config) else {
        return;
    };
    let mut sent = Sent::default();
    let path = format!("/flow_runs/{child}");
    let Ok(read) = client
        .send_as::<ChildRead>(Method::GET, &path, None, &mut sent)
        .await
    else {
        return;
    };
    let (state_type, force) = match read.state_type.as_deref() {
        Some("SCHEDULED") | Some("PAUSED") => ("CANCELLED", true),
        Some("PENDING") | Some("RUNNING") => ("CANCELLING", false),
        _ => return,
    };
    let body = ChildSetState {
        state: ChildStateCreate {
            state_type,
            message: "Cancelled: the parent flow run stopped waiting for it.",
        },
        force,
    };
    let result: Result<serde_json::Value, _> = client
        .send_json(Method::POST, &format!("{path}/set_state"), &body, &mut sent)
        .await;
    if let Err(e) = result {
        tracing::warn!(
            target: "prefecto.deployments",
            "Could not cancel child flow run '{}' ({child}): {e}",
            read.name
        );
    }
}

/// Waits, at most `bound`, until every cancellation asked for is sent.
pub(crate) fn wait_for_cancellations(bound: Duration) {
    let deadline = Instant::now() + bound;
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(
                target: "prefecto.deployments",
                "{} child flow run(s) may not have been cancelled on the server: cancel them there",
                *pending
            );
            return;
        }
        pending = DONE
            .wait_timeout(pending, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}
