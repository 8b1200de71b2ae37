//! Taking over the flow run a Prefect worker named: reading it from the
//! server, and why a flow call may not take it.

use reqwest::Method;
use uuid::Uuid;

use super::schemas::{FlowRead, FlowRunRead};
use super::{ApiError, Client, Sent};

/// Why a flow call did not take over the flow run a worker named.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAdopted {
    #[error("the flow run could not be read: {0}")]
    Unreadable(ApiError),
    #[error("flow run '{name}' has already finished in state {state}, and is not run again")]
    Finished { name: String, state: String },
    #[error("flow run '{name}' is being cancelled on the server")]
    Cancelling { name: String },
    #[error("flow run '{name}' is a run of flow '{flow}'")]
    OtherFlow { name: String, flow: String },
}

/// Whether a run in this state type has ended for good.
pub(crate) fn is_final(state_type: &str) -> bool {
    matches!(state_type, "COMPLETED" | "FAILED" | "CANCELLED" | "CRASHED")
}

/// Reads flow run `flow_run` from the server, if a call of `flow` may take
/// it over: a run that has finished is not run again (Prefect's engine
/// aborts such a run too), and a run of another flow is not this call's.
/// `checked` says whether the server was already asked what it is.
pub(super) async fn read_adoptable(
    client: &Client,
    flow_run: Uuid,
    flow: &str,
    checked: bool,
    sent: &mut Sent,
) -> Result<FlowRunRead, NotAdopted> {
    let read = async {
        if !checked {
            client.check_with(sent).await?;
        }
        let run: FlowRunRead = client
            .send_as(Method::GET, &format!("/flow_runs/{flow_run}"), None, sent)
            .await?;
        let its_flow: FlowRead = client
            .send_as(Method::GET, &format!("/flows/{}", run.flow_id), None, sent)
            .await?;
        Ok((run, its_flow.name))
    };
    let (run, its_flow) = read.await.map_err(NotAdopted::Unreadable)?;
    if let Some(state) = run.state_type.as_deref().filter(|s| is_final(s)) {
        return Err(NotAdopted::Finished {
            name: run.name,
            state: state.to_string(),
        });
    }
    if run.state_type.as_deref() == Some("CANCELLING") {
        return Err(NotAdopted::Cancelling { name: run.name });
    }
    if its_flow != flow {
        return Err(NotAdopted::OtherFlow {
            name: run.name,
            flow: its_flow,
        });
    }
    Ok(run)
}
