//! A flow run set to `CANCELLING` in Prefect's UI is cancelled here: its
//! state is read every `PREFECTO_CANCEL_POLL` seconds while it runs.

use std::collections::HashMap;

use reqwest::Method;
use uuid::Uuid;

use super::counters::Counters;
use super::report::FlowRunReport;
use super::schemas::FlowRunRead;
use super::{ApiError, Client, Sent};

/// Reads the state of each running flow run from the server, and cancels
/// those set to `CANCELLING` there.
pub(super) async fn poll_cancellation(
    client: &Client,
    counters: &Counters,
    runs: &mut HashMap<Uuid, FlowRunReport>,
) {
    for (id, report) in runs.iter_mut() {
        let Some(server) = report.server else {
            continue;
        };
        if report.cancel_requested {
            continue;
        }
        let mut sent = Sent::default();
        let run: Result<FlowRunRead, ApiError> = client
            .send_as(
                Method::GET,
                &format!("/flow_runs/{}", server.flow_run),
                None,
                &mut sent,
            )
            .await;
        counters.add(sent);
        if let Ok(run) = run
            && run.state_type.as_deref() == Some("CANCELLING")
        {
            report.cancel_requested = true;
            crate::flow_runs::cancel(
                *id,
                "The flow run was cancelled from Prefect (it was set to CANCELLING).".to_string(),
            );
        }
    }
}
