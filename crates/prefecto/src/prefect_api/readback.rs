//! What the server already has, read back before something is sent again:
//! a request whose reply was lost may have been stored.

use std::collections::HashSet;

use uuid::Uuid;

use super::client::fetch_all;
use super::schemas::{AnyOf, ByFlowRunId, LogRead, LogsOfFlowRun};
use super::{ApiError, Client, Sent};

/// The lines the server has of a flow run, by time and text.
pub(crate) async fn server_logs(
    client: &Client,
    flow_run: Uuid,
    sent: &mut Sent,
) -> Result<HashSet<(i64, String)>, ApiError> {
    let filter = LogsOfFlowRun {
        logs: ByFlowRunId {
            flow_run_id: AnyOf::one(flow_run),
        },
        sort: "TIMESTAMP_ASC",
    };
    let logs: Vec<LogRead> = fetch_all(client, "/logs/filter", &filter, sent).await?;
    Ok(logs
        .into_iter()
        .map(|log| (log.timestamp.timestamp_micros(), log.message))
        .collect())
}
