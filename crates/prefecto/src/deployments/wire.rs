//! The payloads of deployments, work pools and child flow runs, as
//! Prefect's `server/schemas/actions.py` and `responses.py` name them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// `POST /work_pools/`.
#[derive(Debug, Serialize)]
pub(super) struct WorkPoolCreate<'a> {
    pub(super) name: &'a str,
    #[serde(rename = "type")]
    pub(super) pool_type: &'a str,
    pub(super) base_job_template: Value,
}

/// The parts of a work pool we read.
#[derive(Debug, Deserialize)]
pub(super) struct WorkPoolRead {
    #[serde(rename = "type")]
    pub(super) pool_type: String,
}

/// `POST /deployments/`: creates, or updates the deployment of the same
/// flow and name.
#[derive(Debug, Serialize)]
pub(super) struct DeploymentCreate<'a> {
    pub(super) name: &'a str,
    pub(super) flow_id: Uuid,
    pub(super) work_pool_name: &'a str,
    pub(super) job_variables: JobVariables<'a>,
    /// Prefect's name for the parameters' JSON schema.
    pub(super) parameter_openapi_schema: &'a Value,
    pub(super) enforce_parameter_schema: bool,
    pub(super) parameters: &'a Map<String, Value>,
    pub(super) description: Option<&'a str>,
    pub(super) tags: &'a [String],
    pub(super) schedules: Vec<ScheduleCreate<'a>>,
    pub(super) concurrency_limit: Option<u32>,
    pub(super) paused: bool,
    /// No Python entrypoint: the worker runs `job_variables.command`.
    pub(super) entrypoint: Option<&'a str>,
}

/// A process work pool's job variables: the command the worker runs.
#[derive(Debug, Serialize)]
pub(super) struct JobVariables<'a> {
    pub(super) command: &'a str,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub(super) env: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) working_dir: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub(super) struct ScheduleCreate<'a> {
    pub(super) schedule: SchedulePayload<'a>,
    pub(super) active: bool,
}

/// The parts of a deployment we read.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct DeploymentRead {
    pub(super) id: Uuid,
    pub(super) name: String,
    pub(super) flow_id: Uuid,
    #[serde(default)]
    pub(super) work_pool_name: Option<String>,
    #[serde(default)]
    pub(super) job_variables: Map<String, Value>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
}

/// `POST /deployments/{id}/create_flow_run`.
#[derive(Debug, Serialize)]
pub(super) struct ChildFlowRunCreate<'a> {
    pub(super) parameters: &'a Value,
    pub(super) state: StateOfType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parent_task_run_id: Option<Uuid>,
    /// The parent task run's id: the same child whatever a lost reply made us send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) idempotency_key: Option<String>,
}

/// A state by its type only: `SCHEDULED` for a child, `PENDING` for its parent task run.
#[derive(Debug, Serialize)]
pub(super) struct StateOfType {
    #[serde(rename = "type")]
    pub(super) state_type: &'static str,
}

/// `POST /task_runs/`: the task run in the parent flow run a child hangs
/// under, as Python's `run_deployment` creates it.
#[derive(Debug, Serialize)]
pub(super) struct ParentTaskRunCreate<'a> {
    pub(super) id: Uuid,
    pub(super) name: &'a str,
    pub(super) flow_run_id: Uuid,
    pub(super) task_key: &'a str,
    pub(super) dynamic_key: &'a str,
    pub(super) state: StateOfType,
}

/// `POST /flow_runs/filter`: the flow runs with these ids.
#[derive(Debug, Serialize)]
pub(super) struct FlowRunsWithIds<'a> {
    pub(super) flow_runs: IdsAnyOf<'a>,
    pub(super) limit: usize,
}

#[derive(Debug, Serialize)]
pub(super) struct IdsAnyOf<'a> {
    pub(super) id: AnyOfIds<'a>,
}

#[derive(Debug, Serialize)]
pub(super) struct AnyOfIds<'a> {
    pub(super) any_: &'a [Uuid],
}

/// A child flow run as a watcher reads it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChildRead {
    pub(crate) id: Uuid,
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) state_type: Option<String>,
    #[serde(default)]
    pub(crate) state: Option<ChildState>,
    /// The worker that took it labels it (`prefect.worker.name`, `prefect.work-pool.name`).
    #[serde(default)]
    pub(crate) labels: Map<String, Value>,
}

/// A worker of a pool, as `POST /work_pools/{name}/workers/filter` gives it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WorkerRead {
    pub(crate) name: String,
    /// `ONLINE`, or `OFFLINE` once it has missed 3 heartbeats.
    #[serde(default)]
    pub(crate) status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChildState {
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// `POST /flow_runs/{id}/set_state`, forced or not.
#[derive(Debug, Serialize)]
pub(super) struct ChildSetState<'a> {
    pub(super) state: ChildStateCreate<'a>,
    pub(super) force: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct ChildStateCreate<'a> {
    #[serde(rename = "type")]
    pub(super) state_type: &'static str,
    pub(super) message: &'a str,
}

/// `POST /deployments/filter`: a page of deployments, by name.
#[derive(Debug, Serialize)]
pub(super) struct DeploymentsPage {
    pub(super) limit: usize,
    pub(super) offset: usize,
    pub(super) sort: &'static str,
}

/// A deployment's schedule, as `DeploymentScheduleCreate.schedule` takes it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum SchedulePayload<'a> {
    Cron {
        cron: &'a str,
        timezone: &'static str,
    },
    Interval {
        interval: f64,
    },
}
