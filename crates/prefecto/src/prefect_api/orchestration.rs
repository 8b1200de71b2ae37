//! Proposing a flow run's state to the server, as the SDK does, and what
//! its orchestration answered.

use std::time::Duration;

use reqwest::Method;
use uuid::Uuid;

use super::schemas::{OrchestrationResult, SetState, StateCreate};
use super::{ApiError, Client, Sent};
use crate::state::State;

pub(super) enum Orchestration {
    Accepted,
    Rejected(String),
    Aborted(String),
}

/// Proposes a flow-run state, as the SDK does: a fresh transition id each
/// time (which makes a retried request harmless), WAIT honoured.
pub(super) async fn set_flow_run_state(
    client: &Client,
    flow_run: Uuid,
    state: &State,
    sent: &mut Sent,
) -> Result<Orchestration, ApiError> {
    let path = format!("/flow_runs/{flow_run}/set_state");
    for _ in 0..10 {
        let mut proposed = StateCreate::of(state);
        proposed.state_details.transition_id = Some(Uuid::new_v4());
        let body = SetState {
            state: proposed,
            force: false,
        };
        let result: OrchestrationResult = client
            .send_patiently(
                Method::POST,
                &path,
                &body,
                client.config().report_wait,
                sent,
            )
            .await?;
        let reason = result.details.reason.unwrap_or_default();
        match result.status.as_deref() {
            Some("ACCEPT") => return Ok(Orchestration::Accepted),
            Some("REJECT") => {
                let current = result
                    .state
                    .and_then(|s| s.name)
                    .unwrap_or_else(|| "?".to_string());
                // A proposal whose reply was lost, sent again: the server
                // already is in that state, so it was delivered.
                if current == state.name() {
                    return Ok(Orchestration::Accepted);
                }
                return Ok(Orchestration::Rejected(format!("{current} ({reason})")));
            }
            Some("ABORT") => return Ok(Orchestration::Aborted(reason)),
            Some("WAIT") => {
                let delay = result.details.delay_seconds.unwrap_or(1.0);
                tokio::time::sleep(Duration::from_secs_f64(delay.clamp(0.1, 30.0))).await;
            }
            other => {
                return Err(ApiError::NotPrefect {
                    url: format!("{}{path}", client.config().url),
                    detail: format!("an orchestration result with status {other:?}"),
                });
            }
        }
    }
    Ok(Orchestration::Aborted(
        "the server kept answering WAIT".to_string(),
    ))
}

/// A flow run's final state, tried again while the server refuses
/// connections (an outage over the flow's end), within the report wait: the
/// server must not show the run `Running` for ever.
pub(super) async fn final_state(
    client: &Client,
    flow_run: Uuid,
    state: &State,
    sent: &mut Sent,
) -> Result<Orchestration, ApiError> {
    let deadline = tokio::time::Instant::now() + client.config().report_wait;
    let mut pause = Duration::from_millis(500);
    loop {
        match set_flow_run_state(client, flow_run, state, sent).await {
            Err(ApiError::Unreachable { .. }) if tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}
