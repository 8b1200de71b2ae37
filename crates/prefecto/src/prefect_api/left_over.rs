//! What an earlier process left undelivered to this server (it was killed,
//! or the server was down until its report wait ran out) is delivered by the
//! next process that reports here, in the background, as `prefecto
//! flow-run sync` would. One process claims each run, and waits for it at
//! exit as for its own runs (within the report wait); a run not finished by
//! then is claimed again by the next process, which sends only what the
//! server still lacks.

use std::path::Path;
use std::sync::Arc;

use super::Client;
use super::in_flight::InFlight;
use super::sync::sync_flow_run;
use crate::store::Store;

/// Starts delivering, on a thread of its own, the flow runs the run history
/// at `history` notes as undelivered to the server `client` talks to.
pub(super) fn deliver_in_background(client: Client, history: Arc<Path>, in_flight: Arc<InFlight>) {
    let Ok(store) = Store::open(&history) else {
        return;
    };
    let Ok(left) = store.left_undelivered(&client.config().url) else {
        return;
    };
    if left.is_empty() {
        return;
    }
    let mut runs = Vec::new();
    for delivery in left {
        if !store.claim_delivery(delivery.flow_run_id).unwrap_or(false) {
            continue;
        }
        if let Ok(run) = store.flow_run(&delivery.flow_run_id.to_string()) {
            // Counted at once, so that an exit right away waits for it.
            let parameters = serde_json::from_str(&delivery.parameters).unwrap_or_default();
            in_flight.begin(run.id, &run.name, &parameters);
            runs.push(run);
        }
    }
    if runs.is_empty() {
        return;
    }
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    tracing::info!(
        target: "prefecto.engine",
        "Delivering {} flow run(s) an earlier process left undelivered to {}: {}.",
        runs.len(),
        client.config().url,
        names.join(", ")
    );
    let spawned = std::thread::Builder::new()
        .name("prefecto-left-over".into())
        .spawn({
            let in_flight = in_flight.clone();
            let runs: Vec<_> = runs.iter().map(|r| (r.id, r.name.clone())).collect();
            move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    runs.iter().for_each(|(id, _)| in_flight.end(*id));
                    return;
                };
                for (id, name) in runs {
                    match runtime.block_on(sync_flow_run(&client, &store, &id.to_string())) {
                        Ok(report) => tracing::info!(
                            target: "prefecto.engine",
                            "Delivered flow run '{name}' that an earlier process left undelivered ({} task runs and {} log lines were missing).",
                            report.task_runs_sent,
                            report.logs_sent
                        ),
                        Err(err) => tracing::warn!(
                            target: "prefecto.engine",
                            "Flow run '{name}', left undelivered by an earlier process, is still not delivered: {err}. `prefecto flow-run sync {name}` tries again."
                        ),
                    }
                    in_flight.end(id);
                }
            }
        });
    if let Err(err) = spawned {
        runs.iter().for_each(|r| in_flight.end(r.id));
        tracing::debug!(target: "prefecto.engine", "Cannot deliver earlier flow runs now: {err}");
    }
}
