//! Reconciliation at a flow run's end: the reporter reads back how many task
//! runs the server recorded, sends again what it dropped, and names in one
//! warning (and notes in the run history) what it could not deliver.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::count_watch::{CountWatch, Verdict};
use super::counters::Counters;
use super::delivery::DeliveryQueue;
use super::in_flight::InFlight;
use super::report::{FlowRunReport, ServerIds, task_run_event};
use super::schemas::Event;
use super::server_backlog::ServerBacklog;
use super::server_counts::{judge, recorded_task_runs};
use super::{Client, Sent};

/// After everything is sent, how long a count that does not grow is trusted
/// before the missing task runs are sent again.
const SETTLE: Duration = Duration::from_secs(15);

/// Ends a flow run's report: waits until the server has every task run,
/// sending again what it lost, within the report wait.
pub(super) async fn finish(
    report: FlowRunReport,
    client: Client,
    outbox: Arc<DeliveryQueue>,
    counters: Arc<Counters>,
    in_flight: Arc<InFlight>,
    backlog: Arc<ServerBacklog>,
) {
    let deadline = Instant::now() + client.config().report_wait;
    let expected = report.finished.len() as u64;
    let Some(server) = report.server else {
        // Its one warning was given when the server could not take it.
        let reason = report
            .unreachable
            .as_ref()
            .map_or_else(|| "not created".to_string(), |e| e.to_string());
        note_in_history(&report, &client, Some(&reason));
        in_flight.end(report.id);
        return;
    };
    let mut sent = Sent::default();
    let started = Instant::now();
    let mut watch = CountWatch::new(expected, SETTLE, started);
    loop {
        if !outbox.is_empty() {
            watch.sending(Instant::now());
        } else {
            match judge(&mut watch, &client, server.flow_run, &mut sent).await {
                Ok((count, verdict)) => {
                    in_flight.progress(report.id, expected, count);
                    backlog.recorded(server.flow_run, count);
                    match verdict {
                        Verdict::Recorded => break,
                        Verdict::SendMissing => {
                            // Neither the run's count nor the server's has
                            // moved: it dropped events. Send those again.
                            let resent =
                                resend_missing(&client, &report, server, &outbox, &mut sent).await;
                            counters.resent_events.fetch_add(resent, Ordering::Relaxed);
                        }
                        Verdict::Wait | Verdict::AskServer => {}
                    }
                }
                Err(err) => {
                    tracing::debug!(target: "prefecto.engine", "Cannot count task runs yet: {err}")
                }
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    counters.add(sent);
    let lines_left = !outbox.is_empty();
    let missing = watch.missing();
    if missing > 0 || lines_left || report.undelivered_state {
        let counted = match watch.last() {
            _ if missing == 0 => format!("the server has its {expected} task run(s)"),
            Some(count) if watch.moving(Instant::now()) => format!(
                "the server is still recording its task runs ({count} of {expected} so far)"
            ),
            Some(count) => format!("the server has {count} of its {expected} task run(s)"),
            None => format!(
                "the server could not be asked how many of its {expected} task run(s) it has"
            ),
        };
        let reason = format!(
            "after {} s, {counted}{}{}",
            started.elapsed().as_secs(),
            if lines_left {
                "; events or log lines are still unsent"
            } else {
                ""
            },
            if report.undelivered_state {
                "; its state was not delivered"
            } else {
                ""
            },
        );
        tracing::warn!(
            target: "prefecto.engine",
            "Prefect does not have all of flow run '{}': {reason}. {}",
            report.name,
            kept_for_sync(&report)
        );
        note_in_history(&report, &client, Some(&reason));
    } else {
        note_in_history(&report, &client, None);
    }
    backlog.forget(server.flow_run);
    in_flight.end(report.id);
    let c = counters.snapshot();
    tracing::debug!(
        target: "prefecto.engine",
        "Prefect reporting so far: {} HTTP requests ({} retries), {} task-run events ({} sent again), {} log lines.",
        c.requests, c.retries, c.events, c.resent_events, c.logs
    );
}

/// What the warning says about the run history's copy.
pub(super) fn kept_for_sync(report: &FlowRunReport) -> String {
    kept_note(&report.name, report.history.is_some())
}

/// What a warning about flow run `name` says about the run history's copy.
pub(super) fn kept_note(name: &str, kept: bool) -> String {
    if kept {
        format!(
            "The local run history keeps it: `prefecto flow-run sync {name}` delivers it later."
        )
    } else {
        "The local run history is off, so it is not kept.".to_string()
    }
}

/// Notes in the run history whether the server has the whole run: it has,
/// or it has not because of `undelivered` (what `prefecto flow-run sync`
/// and the next process go by).
pub(super) fn note_in_history(report: &FlowRunReport, client: &Client, undelivered: Option<&str>) {
    if let Some(history) = &report.history {
        let run = Undelivered {
            flow_run: report.id,
            name: &report.name,
            server_flow_run: report.server.map(|s| s.flow_run),
            parameters: &report.parameters,
            reason: undelivered.unwrap_or_default(),
        };
        note_delivery(history, &client.config().url, &run, undelivered.is_none());
    }
}

/// A flow run the server may lack, as the run history notes it.
#[cfg_attr(not(feature = "history"), allow(dead_code))]
pub(super) struct Undelivered<'a> {
    pub(super) flow_run: Uuid,
    pub(super) name: &'a str,
    pub(super) server_flow_run: Option<Uuid>,
    pub(super) parameters: &'a serde_json::Value,
    pub(super) reason: &'a str,
}

/// Notes in the run history at `history` that the server at `url` may lack
/// a flow run, for `prefecto flow-run sync` to deliver later.
pub(super) fn note_undelivered(history: &std::path::Path, url: &str, run: &Undelivered<'_>) {
    note_delivery(history, url, run, false);
}

/// Notes in the run history whether the server at `url` has all of a flow run.
#[cfg(feature = "history")]
fn note_delivery(history: &std::path::Path, url: &str, run: &Undelivered<'_>, delivered: bool) {
    let delivery = crate::store::Delivery {
        flow_run_id: run.flow_run,
        api_url: url.to_string(),
        server_flow_run_id: run.server_flow_run,
        parameters: run.parameters.to_string(),
        delivered,
        reason: (!delivered).then(|| run.reason.to_string()),
    };
    let recorded =
        crate::store::Store::open(history).and_then(|store| store.record_undelivered(&delivery));
    if let Err(err) = recorded {
        tracing::warn!(target: "prefecto.engine", "Could not note flow run '{}' as undelivered: {err}", run.name);
    }
}

/// Without the run history there is nowhere to keep it.
#[cfg(not(feature = "history"))]
fn note_delivery(_: &std::path::Path, _: &str, _: &Undelivered<'_>, _: bool) {}

/// Reads back the task-run ids the server has and queues events for the rest.
async fn resend_missing(
    client: &Client,
    report: &FlowRunReport,
    server: ServerIds,
    outbox: &DeliveryQueue,
    sent: &mut Sent,
) -> u64 {
    let Ok(recorded) = recorded_task_runs(client, server.flow_run, sent).await else {
        return 0;
    };
    let missing: Vec<Event> = report
        .finished
        .iter()
        .filter_map(|run| report.task_runs.get(run))
        .filter(|task_run| !recorded.contains(&task_run.id))
        .map(|task_run| task_run_event(server, report, task_run))
        .collect();
    let resent = missing.len() as u64;
    outbox.push_events(missing);
    resent
}
