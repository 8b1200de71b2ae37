//! What the reporter knows of a flow run and its task runs, and the payloads
//! it builds from that: a log line, and the one event a finished task run is.

use std::collections::BTreeMap;

use crate::inputs::UpstreamRun;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::Level;
use uuid::Uuid;

use super::ApiError;
use super::schemas::{
    EmpiricalPolicy, Empty, Event, Intended, LogCreate, RelatedResource, StateCreate,
    TaskRunEventPayload, TaskRunInput, TaskRunPayload, TaskRunResource, timestamp,
};
use super::text_limits::for_server;
use crate::names::TaskRunName;
use crate::state::State;
use crate::task::TaskSpec;

/// A task run as the server will see it.
pub(crate) struct TaskRunReport {
    pub(crate) id: Uuid,
    pub(crate) run: TaskRunName,
    pub(crate) spec: Option<&'static TaskSpec>,
    pub(crate) created: DateTime<Utc>,
    pub(crate) start: Option<DateTime<Utc>>,
    pub(crate) end: Option<DateTime<Utc>>,
    pub(crate) run_count: u32,
    pub(crate) previous: Option<State>,
    pub(crate) latest: State,
    pub(crate) submitted: bool,
    /// The runs it depended on (empty for most).
    pub(crate) upstream: Vec<UpstreamRun>,
}

/// A flow run being reported.
// Its id and parameters are what the run history's note of an undelivered run needs.
#[cfg_attr(not(feature = "history"), allow(dead_code))]
pub(crate) struct FlowRunReport {
    /// Its id here, in the run history.
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) flow: String,
    pub(crate) parameters: Value,
    /// A flow-run state the server did not get.
    pub(crate) undelivered_state: bool,
    /// The server's ids, once it has the flow run; `None` while unknown or
    /// if the server could not be reached.
    pub(crate) server: Option<ServerIds>,
    /// Why the server does not have it, if it does not.
    pub(crate) unreachable: Option<ApiError>,
    pub(crate) task_runs: HashMap<TaskRunName, TaskRunReport>,
    /// Task runs that have finished, in order: what the server must have.
    pub(crate) finished: Vec<TaskRunName>,
    /// A flow-run state the server stopped (ABORT): no more proposals.
    pub(crate) aborted: bool,
    pub(crate) cancel_requested: bool,
    /// The run history that keeps what the server did not get, if one does.
    pub(crate) history: Option<Arc<Path>>,
    /// Task runs that started in the last second or so, oldest first: those
    /// still running after it are shown to the server as Running.
    pub(crate) started: std::collections::VecDeque<(DateTime<Utc>, TaskRunName)>,
}

impl FlowRunReport {
    pub(crate) fn new(id: Uuid, name: String, flow: String, parameters: Value) -> Self {
        FlowRunReport {
            id,
            name,
            flow,
            parameters,
            undelivered_state: false,
            server: None,
            unreachable: None,
            task_runs: HashMap::new(),
            finished: Vec::new(),
            aborted: false,
            cancel_requested: false,
            history: None,
            started: std::collections::VecDeque::new(),
        }
    }
}

/// A flow run's ids on the server, and its flow's.
#[derive(Clone, Copy)]
pub(crate) struct ServerIds {
    pub(crate) flow: Uuid,
    pub(crate) flow_run: Uuid,
}

/// Prefect's numeric levels.
fn level_number(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

/// A log line of a reported flow run, as `POST /logs/` takes it; `None`
/// while the server does not have the flow run.
pub(crate) fn log_create(
    report: &FlowRunReport,
    task_run_id: Option<Uuid>,
    level: Level,
    logger: impl Into<Cow<'static, str>>,
    message: &str,
    at: DateTime<Utc>,
) -> Option<LogCreate> {
    let server = report.server?;
    Some(LogCreate {
        name: logger.into(),
        level: level_number(level),
        message: for_server(message).into_owned(),
        timestamp: timestamp(at),
        flow_run_id: server.flow_run,
        task_run_id,
        micros: at.timestamp_micros(),
        maybe_stored: false,
    })
}

/// One event for a finished task run: its final state, with the times the
/// UI needs, so that one event per task run is enough.
pub(crate) fn task_run_event(
    server: ServerIds,
    report: &FlowRunReport,
    task_run: &TaskRunReport,
) -> Event {
    let state = &task_run.latest;
    let name = task_run.run.to_string();
    let state_type = state.state_type().as_api_str();
    let tags: &'static [&'static str] = task_run.spec.map_or(&[], |s| s.tags);
    let mut related = vec![
        RelatedResource {
            id: format!("prefect.flow-run.{}", server.flow_run),
            role: "flow-run",
            name: Some(report.name.clone()),
        },
        RelatedResource {
            id: format!("prefect.flow.{}", server.flow),
            role: "flow",
            name: Some(report.flow.clone()),
        },
    ];
    related.extend(tags.iter().map(|tag| RelatedResource {
        id: format!("prefect.tag.{tag}"),
        role: "tag",
        name: None,
    }));
    let previous = task_run.previous.as_ref();
    let mut task_inputs: BTreeMap<&'static str, Vec<TaskRunInput>> = task_run
        .spec
        .map(|s| s.param_names)
        .unwrap_or_default()
        .iter()
        .map(|&param| (param, Vec::new()))
        .collect();
    for upstream in &task_run.upstream {
        task_inputs
            .entry(upstream.input)
            .or_default()
            .push(TaskRunInput {
                input_type: "task_run",
                id: upstream.task_run.id_in(report.id),
            });
    }
    let (retries, retry_delay) = task_run
        .spec
        .map_or((0, 0.0), |s| (s.retries, s.retry_delay.as_secs_f64()));
    let total_run_time = match (task_run.start, task_run.end) {
        (Some(start), Some(end)) => (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    let mut validated = StateCreate::of(state);
    validated.state_details.untrackable_result = true;
    validated.data = Some(Value::Null);
    Event {
        flow_run: server.flow_run,
        id: Uuid::new_v4(),
        occurred: timestamp(state.timestamp()),
        event: format!("prefect.task-run.{}", state.name()),
        resource: TaskRunResource {
            id: format!("prefect.task-run.{}", task_run.id),
            name: name.clone(),
            state_type,
            state_name: state.name().to_string(),
            state_timestamp: timestamp(state.timestamp()),
            run_count: task_run.run_count.to_string(),
            state_message: for_server(state.message().unwrap_or_default()).into_owned(),
            orchestration: "client",
        },
        related,
        payload: TaskRunEventPayload {
            intended: Intended {
                from: previous.map(|p| p.state_type().as_api_str()),
                to: state_type,
            },
            initial_state: previous.map(StateCreate::of),
            validated_state: validated,
            task_run: TaskRunPayload {
                name,
                task_key: task_run.run.task,
                dynamic_key: task_run.run.index.to_string(),
                tags,
                labels: Empty {},
                task_inputs,
                empirical_policy: EmpiricalPolicy {
                    max_retries: retries,
                    retry_delay_seconds: retry_delay,
                    retries,
                    retry_delay,
                },
                run_count: task_run.run_count,
                flow_run_run_count: 1,
                expected_start_time: timestamp(task_run.created),
                start_time: task_run.start.map(timestamp),
                end_time: task_run.end.map(timestamp),
                total_run_time,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_prefects_numbers() {
        assert_eq!(level_number(Level::INFO), 20);
        assert_eq!(level_number(Level::ERROR), 40);
    }

    #[test]
    fn a_finished_task_run_is_one_complete_event() {
        let server = ServerIds {
            flow: Uuid::new_v4(),
            flow_run: Uuid::new_v4(),
        };
        let report = FlowRunReport {
            server: Some(server),
            ..FlowRunReport::new(
                Uuid::new_v4(),
                "calm-heron".into(),
                "seed".into(),
                serde_json::json!({}),
            )
        };
        let start = State::running();
        let task_run = TaskRunReport {
            id: Uuid::new_v4(),
            run: TaskRunName {
                task: "add",
                index: 3,
            },
            spec: None,
            created: start.timestamp(),
            start: Some(start.timestamp()),
            end: Some(start.timestamp()),
            run_count: 1,
            previous: Some(start),
            upstream: Vec::new(),
            latest: State::failed("boom"),
            submitted: true,
        };
        let event = serde_json::to_value(task_run_event(server, &report, &task_run)).unwrap();
        assert_eq!(event["event"], "prefect.task-run.Failed");
        assert_eq!(event["resource"]["prefect.orchestration"], "client");
        assert_eq!(event["resource"]["prefect.state-message"], "boom");
        assert_eq!(event["payload"]["task_run"]["name"], "add-3");
        assert_eq!(event["payload"]["task_run"]["dynamic_key"], "3");
        assert!(event["payload"]["task_run"]["start_time"].is_string());
        assert_eq!(event["payload"]["intended"]["from"], "RUNNING");
        assert_eq!(event["payload"]["validated_state"]["type"], "FAILED");
        assert!(event["payload"]["validated_state"]["data"].is_null());
        assert_eq!(event["related"][0]["prefect.resource.role"], "flow-run");
    }
}
