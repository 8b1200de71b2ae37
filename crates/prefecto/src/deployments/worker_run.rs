//! The flow run a Prefect worker started this process for: its id and
//! flow from the worker's environment, its parameters from the server
//! (a worker does not pass them).

use reqwest::Method;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::DeploymentError;
use super::wire::{ChildSetState, ChildStateCreate};
use crate::prefect_api::schemas::FlowRunRead;
use crate::prefect_api::{ApiConfig, Client, FLOW_RUN_ID_ENV, Sent, is_final};

/// The environment variable a worker sets to the started run's flow name.
pub const FLOW_NAME_ENV: &str = "PREFECT__FLOW_NAME";

/// The run a worker started this process for, if one did.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WorkerRun {
    pub(crate) id: Uuid,
    /// The flow the worker named, if it did.
    pub(crate) flow: Option<String>,
}

/// The run a worker started this process for: `None` when not started by
/// one; an error when its id is not an id.
pub(crate) fn worker_run() -> Result<Option<WorkerRun>, String> {
    let Some(id) = std::env::var(FLOW_RUN_ID_ENV)
        .ok()
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let id = Uuid::parse_str(id.trim())
        .map_err(|e| format!("{FLOW_RUN_ID_ENV}={id:?} is not a flow run id: {e}"))?;
    let flow = std::env::var(FLOW_NAME_ENV).ok().filter(|v| !v.is_empty());
    Ok(Some(WorkerRun { id, flow }))
}

/// What a worker-started process does with its flow run, by its state.
#[derive(Debug)]
pub(crate) enum WorkerRunState {
    /// Run it, with these parameters.
    Run(Map<String, Value>),
    /// It was cancelled before it started (now ended `Cancelled`): do not run it.
    Cancelled,
    /// It has already ended in this state: do not run it again.
    Finished(String),
}

/// Reads flow run `id` from the server of the environment: its parameters
/// if it is to run. A run cancelled while its process was starting (the
/// worker could not kill what it had not started yet) is ended
/// `Cancelled` here, as Python's engine ends it.
pub(crate) fn read_worker_run(id: Uuid) -> Result<WorkerRunState, DeploymentError> {
    let config = ApiConfig::from_env()?.ok_or(DeploymentError::NoServer)?;
    let client = Client::new(config)?;
    crate::context::own_runtime().block_on(async {
        let mut sent = Sent::default();
        let path = format!("/flow_runs/{id}");
        let run: FlowRunRead = client.send_as(Method::GET, &path, None, &mut sent).await?;
        match run.state_type.as_deref() {
            Some("CANCELLING") => {
                let cancel = ChildSetState {
                    state: ChildStateCreate {
                        state_type: "CANCELLED",
                        message: "Cancelled before its process started.",
                    },
                    force: false,
                };
                let _: Value = client
                    .send_json(
                        Method::POST,
                        &format!("{path}/set_state"),
                        &cancel,
                        &mut sent,
                    )
                    .await?;
                Ok(WorkerRunState::Cancelled)
            }
            Some(state) if is_final(state) => Ok(WorkerRunState::Finished(state.to_string())),
            _ => Ok(WorkerRunState::Run(run.parameters)),
        }
    })
}
