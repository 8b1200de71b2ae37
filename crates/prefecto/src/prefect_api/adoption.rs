//! Why a flow call does not take over the flow run a Prefect worker named.

use super::ApiError;

/// Why a flow call did not take over the flow run a worker named.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotAdopted {
    #[error("the flow run could not be read: {0}")]
    Unreadable(ApiError),
    #[error("flow run '{name}' has already finished in state {state}, and is not run again")]
    Finished { name: String, state: String },
    #[error("flow run '{name}' is a run of flow '{flow}'")]
    OtherFlow { name: String, flow: String },
}

pub(super) fn is_final(state_type: &str) -> bool {
    matches!(state_type, "COMPLETED" | "FAILED" | "CANCELLED" | "CRASHED")
}
