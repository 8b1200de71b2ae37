//! The Prefect 3 server's payloads, as typed structs: what we send
//! (`*Create`, filters, events) and the parts of its answers we read. The
//! names follow Prefect's own `client/schemas` where it has one.

// Some payloads only `flow-run sync` sends or reads, and it needs the run history.
#![cfg_attr(not(feature = "history"), allow(dead_code))]

use super::text_limits::for_server;
use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Prefect's timestamps: RFC 3339, microseconds, `Z`.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A state proposed for a flow run, or carried by an event.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StateCreate {
    #[serde(rename = "type")]
    pub(crate) state_type: Cow<'static, str>,
    pub(crate) name: String,
    pub(crate) message: String,
    #[serde(skip_serializing_if = "StateDetails::is_empty")]
    pub(crate) state_details: StateDetails,
    /// Present (as `null`) in an event's validated state only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Value>,
}

impl StateCreate {
    pub(crate) fn new(state_type: impl Into<Cow<'static, str>>, name: &str, message: &str) -> Self {
        StateCreate {
            state_type: state_type.into(),
            name: name.to_string(),
            message: for_server(message).into_owned(),
            state_details: StateDetails::default(),
            data: None,
        }
    }

    pub(crate) fn of(state: &crate::state::State) -> Self {
        StateCreate::new(
            state.state_type().as_api_str(),
            state.name(),
            state.message().unwrap_or_default(),
        )
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct StateDetails {
    /// A fresh one per proposal makes a retried request harmless.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transition_id: Option<Uuid>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) untrackable_result: bool,
}

impl StateDetails {
    fn is_empty(&self) -> bool {
        self.transition_id.is_none() && !self.untrackable_result
    }
}

/// `POST /flows/`: finds or creates a flow by name.
#[derive(Debug, Serialize)]
pub(crate) struct FlowCreate<'a> {
    pub(crate) name: &'a str,
}

/// `POST /flow_runs/`.
#[derive(Debug, Serialize)]
pub(crate) struct FlowRunCreate<'a> {
    pub(crate) flow_id: Uuid,
    pub(crate) name: &'a str,
    pub(crate) parameters: &'a Value,
    pub(crate) state: StateCreate,
    pub(crate) tags: [&'a str; 0],
    /// The flow run's id in the run history: the server answers a create
    /// with the same key with the run it has, so a create whose reply was
    /// lost can be sent again without making a second run.
    pub(crate) idempotency_key: String,
}

/// `POST /flow_runs/{id}/set_state`.
#[derive(Debug, Serialize)]
pub(crate) struct SetState {
    pub(crate) state: StateCreate,
    pub(crate) force: bool,
}

/// What `set_state` answers.
#[derive(Debug, Deserialize)]
pub(crate) struct OrchestrationResult {
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) details: OrchestrationDetails,
    pub(crate) state: Option<StateName>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct OrchestrationDetails {
    pub(crate) reason: Option<String>,
    pub(crate) delay_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StateName {
    pub(crate) name: Option<String>,
}

/// Anything created or read that has an id.
#[derive(Debug, Deserialize)]
pub(crate) struct WithId {
    pub(crate) id: Uuid,
}

/// The parts of a flow run we read.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FlowRunRead {
    pub(crate) id: Uuid,
    pub(crate) flow_id: Uuid,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) parameters: Map<String, Value>,
    pub(crate) state_type: Option<String>,
}

/// `GET /flows/{id}`: the part a worker-started run's check needs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FlowRead {
    pub(crate) name: String,
}

/// `POST /logs/`: one line.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogCreate {
    /// The logger.
    pub(crate) name: Cow<'static, str>,
    /// Prefect's numeric level.
    pub(crate) level: u8,
    pub(crate) message: String,
    pub(crate) timestamp: String,
    pub(crate) flow_run_id: Uuid,
    pub(crate) task_run_id: Option<Uuid>,
    /// Its time in microseconds, as the server will give it back.
    #[serde(skip)]
    pub(crate) micros: i64,
    /// A request carrying it failed after it may have reached the server:
    /// before it is sent again, the server is asked whether it has it.
    #[serde(skip)]
    pub(crate) maybe_stored: bool,
}

/// The parts of a stored log line we read.
#[derive(Debug, Deserialize)]
pub(crate) struct LogRead {
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) message: String,
}

/// `{"any_": [...]}`.
#[derive(Debug, Serialize)]
pub(crate) struct AnyOf<T> {
    pub(crate) any_: [T; 1],
}

impl<T> AnyOf<T> {
    pub(crate) fn one(value: T) -> Self {
        AnyOf { any_: [value] }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ById {
    pub(crate) id: AnyOf<Uuid>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ByName<'a> {
    pub(crate) name: AnyOf<&'a str>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ByFlowRunId {
    pub(crate) flow_run_id: AnyOf<Uuid>,
}

/// `POST /task_runs/filter` and `/task_runs/count`: the finished task runs
/// of one flow run (one the server has only as Running is not delivered).
#[derive(Debug, Serialize)]
pub(crate) struct TaskRunsOfFlowRun {
    pub(crate) flow_runs: ById,
    pub(crate) task_runs: InStates,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sort: Option<&'static str>,
}

impl TaskRunsOfFlowRun {
    pub(crate) fn new(flow_run: Uuid) -> Self {
        TaskRunsOfFlowRun {
            flow_runs: ById {
                id: AnyOf::one(flow_run),
            },
            task_runs: InStates {
                state: StateTypes {
                    state_type: AnyOfAll {
                        any_: &["COMPLETED", "FAILED", "CANCELLED", "CRASHED"],
                    },
                },
            },
            sort: None,
        }
    }
}

/// `{"state": {"type": {"any_": [...]}}}`.
#[derive(Debug, Serialize)]
pub(crate) struct InStates {
    pub(crate) state: StateTypes,
}

#[derive(Debug, Serialize)]
pub(crate) struct StateTypes {
    #[serde(rename = "type")]
    pub(crate) state_type: AnyOfAll,
}

/// `{"any_": [...]}` of several state types.
#[derive(Debug, Serialize)]
pub(crate) struct AnyOfAll {
    pub(crate) any_: &'static [&'static str],
}

/// `POST /flow_runs/filter`: a flow run by name, of one flow.
#[derive(Debug, Serialize)]
pub(crate) struct FlowRunsNamed<'a> {
    pub(crate) flow_runs: ByName<'a>,
    pub(crate) flows: ById,
}

/// `POST /logs/filter`: the lines of one flow run.
#[derive(Debug, Serialize)]
pub(crate) struct LogsOfFlowRun {
    pub(crate) logs: ByFlowRunId,
    pub(crate) sort: &'static str,
}

/// A filter with its page.
#[derive(Debug, Serialize)]
pub(crate) struct Page<'a, F> {
    #[serde(flatten)]
    pub(crate) filter: &'a F,
    pub(crate) limit: usize,
    pub(crate) offset: usize,
}

/// `POST /v2/concurrency_limits/increment-with-lease`.
#[derive(Debug, Serialize)]
pub(crate) struct IncrementWithLease {
    pub(crate) names: Vec<String>,
    pub(crate) slots: u32,
    pub(crate) mode: &'static str,
    pub(crate) lease_duration: u64,
    pub(crate) holder: Holder,
}

#[derive(Debug, Serialize)]
pub(crate) struct Holder {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) id: Uuid,
}

/// What `increment-with-lease` answers.
#[derive(Debug, Deserialize)]
pub(crate) struct LeaseGranted {
    pub(crate) lease_id: Option<Uuid>,
    #[serde(default)]
    pub(crate) limits: Vec<Value>,
}

/// `POST /v2/concurrency_limits/leases/{id}/renew`.
#[derive(Debug, Serialize)]
pub(crate) struct RenewLease {
    pub(crate) lease_duration: u64,
}

/// `POST /v2/concurrency_limits/decrement-with-lease`.
#[derive(Debug, Serialize)]
pub(crate) struct DecrementWithLease {
    pub(crate) lease_id: Uuid,
}

/// `POST /events`: one event, as the SDK emits for a task run's state.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// The server's id of the flow run whose task run it is (not sent: the
    /// related resources name it).
    #[serde(skip)]
    pub(crate) flow_run: Uuid,
    pub(crate) id: Uuid,
    pub(crate) occurred: String,
    pub(crate) event: String,
    pub(crate) resource: TaskRunResource,
    pub(crate) related: Vec<RelatedResource>,
    pub(crate) payload: TaskRunEventPayload,
}

impl Event {
    /// Whether it carries a task run's final state (what the server's count
    /// of finished task runs counts).
    pub(crate) fn is_final(&self) -> bool {
        matches!(
            self.resource.state_type,
            "COMPLETED" | "FAILED" | "CANCELLED" | "CRASHED"
        )
    }
}

/// The task run an event is about, as Prefect labels it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskRunResource {
    #[serde(rename = "prefect.resource.id")]
    pub(crate) id: String,
    #[serde(rename = "prefect.resource.name")]
    pub(crate) name: String,
    #[serde(rename = "prefect.state-type")]
    pub(crate) state_type: &'static str,
    #[serde(rename = "prefect.state-name")]
    pub(crate) state_name: String,
    #[serde(rename = "prefect.state-timestamp")]
    pub(crate) state_timestamp: String,
    #[serde(rename = "prefect.run-count")]
    pub(crate) run_count: String,
    #[serde(rename = "prefect.state-message")]
    pub(crate) state_message: String,
    #[serde(rename = "prefect.orchestration")]
    pub(crate) orchestration: &'static str,
}

/// A resource an event relates to: its flow run, its flow, its tags.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RelatedResource {
    #[serde(rename = "prefect.resource.id")]
    pub(crate) id: String,
    #[serde(rename = "prefect.resource.role")]
    pub(crate) role: &'static str,
    #[serde(
        rename = "prefect.resource.name",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskRunEventPayload {
    pub(crate) intended: Intended,
    pub(crate) initial_state: Option<StateCreate>,
    pub(crate) validated_state: StateCreate,
    pub(crate) task_run: TaskRunPayload,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Intended {
    pub(crate) from: Option<&'static str>,
    pub(crate) to: &'static str,
}

/// An upstream task run, as `task_inputs` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TaskRunInput {
    /// Always `task_run`: the inputs that come from other task runs.
    pub(crate) input_type: &'static str,
    pub(crate) id: Uuid,
}

/// The task run an event carries: enough for the server to create it whole.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskRunPayload {
    pub(crate) name: String,
    pub(crate) task_key: &'static str,
    pub(crate) dynamic_key: String,
    pub(crate) tags: &'static [&'static str],
    pub(crate) labels: Empty,
    /// Each parameter's upstream runs, and `wait_for`: the graph's edges.
    pub(crate) task_inputs: BTreeMap<&'static str, Vec<TaskRunInput>>,
    pub(crate) empirical_policy: EmpiricalPolicy,
    pub(crate) run_count: u32,
    pub(crate) flow_run_run_count: u32,
    pub(crate) expected_start_time: String,
    pub(crate) start_time: Option<String>,
    pub(crate) end_time: Option<String>,
    pub(crate) total_run_time: f64,
}

/// `{}`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Empty {}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EmpiricalPolicy {
    pub(crate) max_retries: u32,
    pub(crate) retry_delay_seconds: f64,
    pub(crate) retries: u32,
    pub(crate) retry_delay: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_prefect_reads_them() {
        let mut state = StateCreate::new("FAILED", "Failed", "boom");
        let plain = serde_json::to_value(&state).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"type": "FAILED", "name": "Failed", "message": "boom"})
        );
        state.state_details.untrackable_result = true;
        state.data = Some(Value::Null);
        let validated = serde_json::to_value(&state).unwrap();
        assert_eq!(validated["state_details"]["untrackable_result"], true);
        assert!(validated["data"].is_null() && validated.get("data").is_some());
    }

    #[test]
    fn a_page_flattens_its_filter() {
        let filter = TaskRunsOfFlowRun::new(Uuid::nil());
        let page = serde_json::to_value(Page {
            filter: &filter,
            limit: 200,
            offset: 400,
        })
        .unwrap();
        assert_eq!(
            page,
            serde_json::json!({
                "flow_runs": {"id": {"any_": [Uuid::nil()]}},
                "task_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]}}},
                "limit": 200,
                "offset": 400,
            })
        );
    }
}
