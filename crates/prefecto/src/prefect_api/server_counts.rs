//! What the server has recorded of a flow run, read back: how many of its
//! task runs have finished there, which ones, and (with a [`CountWatch`])
//! whether to send the missing ones again.

use std::collections::HashSet;
use std::time::Instant;

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::client::fetch_all;
use super::count_watch::{CountWatch, Verdict};
use super::schemas::{Empty, TaskRunsOfFlowRun, WithId};
use super::{ApiError, Client, Sent};

/// The ids of the task runs the server has recorded for a flow run.
pub(crate) async fn recorded_task_runs(
    client: &Client,
    flow_run: Uuid,
    sent: &mut Sent,
) -> Result<HashSet<Uuid>, ApiError> {
    let filter = TaskRunsOfFlowRun {
        sort: Some("EXPECTED_START_TIME_ASC"),
        ..TaskRunsOfFlowRun::new(flow_run)
    };
    let rows: Vec<WithId> = fetch_all(client, "/task_runs/filter", &filter, sent).await?;
    Ok(rows.into_iter().map(|run| run.id).collect())
}

/// Counts the run's task runs on the server (and all the server's task
/// runs, when the watch asks) and says what to do next, with the run's count.
pub(crate) async fn judge(
    watch: &mut CountWatch,
    client: &Client,
    flow_run: Uuid,
    sent: &mut Sent,
) -> Result<(u64, Verdict), ApiError> {
    let count = count_task_runs(client, flow_run, sent).await?;
    let mut verdict = watch.observe(count, Instant::now());
    if verdict == Verdict::AskServer {
        // A server that lost the flow run (its database wiped, say) would
        // refuse every task run sent again: an error, and nothing is sent.
        let _: Value = client
            .send_as(Method::GET, &format!("/flow_runs/{flow_run}"), None, sent)
            .await?;
        let total: u64 = client
            .send_json(Method::POST, "/task_runs/count", &Empty {}, sent)
            .await?;
        verdict = watch.observe_server(total, Instant::now());
    }
    Ok((count, verdict))
}

pub(crate) async fn count_task_runs(
    client: &Client,
    flow_run: Uuid,
    sent: &mut Sent,
) -> Result<u64, ApiError> {
    client
        .send_json(
            Method::POST,
            "/task_runs/count",
            &TaskRunsOfFlowRun::new(flow_run),
            sent,
        )
        .await
}
