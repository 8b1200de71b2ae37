//! A child whose worker died: Prefect keeps its flow run `Running` (only a
//! zombie-detection automation would end it), so the parent would wait for
//! it forever. On a look every 10 s, children that a worker took and that
//! are not final are checked against their pool's workers; one whose worker
//! is `OFFLINE` (it missed 3 heartbeats) is ended `Crashed` here, as Python's
//! zombie automation ends it, and counts as the failure it is.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::wire::{ChildRead, ChildSetState, ChildStateCreate, WorkerRead};
use crate::prefect_api::schemas::Empty;
use crate::prefect_api::{Client, Sent};

/// How often the workers of children in flight are looked at.
pub(super) const LOOK_EVERY: Duration = Duration::from_secs(10);

fn label<'a>(child: &'a ChildRead, key: &str) -> Option<&'a str> {
    child.labels.get(key).and_then(Value::as_str)
}

/// Ends `Crashed` the children whose worker is offline; their ids. `sent`
/// counts the requests.
pub(super) async fn crash_children_of_lost_workers(
    client: &Client,
    children: &[ChildRead],
    sent: &mut Sent,
) -> Vec<Uuid> {
    // Pool → worker names of the children a worker took.
    let mut pools: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for child in children {
        if let (Some(pool), Some(worker)) = (
            label(child, "prefect.work-pool.name"),
            label(child, "prefect.worker.name"),
        ) {
            pools.entry(pool).or_default().insert(worker);
        }
    }
    let mut offline: BTreeSet<(String, String)> = BTreeSet::new();
    for (pool, names) in pools {
        let path = format!("/work_pools/{pool}/workers/filter");
        let Ok(workers) = client
            .send_json::<_, Vec<WorkerRead>>(Method::POST, &path, &Empty {}, sent)
            .await
        else {
            continue;
        };
        for name in names {
            // A worker the pool no longer lists is gone too.
            let online = workers
                .iter()
                .any(|w| w.name == name && w.status.as_deref() != Some("OFFLINE"));
            if !online {
                offline.insert((pool.to_string(), name.to_string()));
            }
        }
    }
    let mut crashed = Vec::new();
    for child in children {
        let (Some(pool), Some(worker)) = (
            label(child, "prefect.work-pool.name"),
            label(child, "prefect.worker.name"),
        ) else {
            continue;
        };
        if !offline.contains(&(pool.to_string(), worker.to_string())) {
            continue;
        }
        let message = format!(
            "Its worker '{worker}' of work pool '{pool}' went offline (no heartbeat): the flow run's process is presumed lost."
        );
        let body = ChildSetState {
            state: ChildStateCreate {
                state_type: "CRASHED",
                message: &message,
            },
            force: true,
        };
        let path = format!("/flow_runs/{}/set_state", child.id);
        if client
            .send_json::<_, Value>(Method::POST, &path, &body, sent)
            .await
            .is_ok()
        {
            tracing::warn!(target: "prefecto.deployments", "Child flow run '{}': {message}", child.name);
            crashed.push(child.id);
        }
    }
    crashed
}
