//! The run history's rows as the `prefecto` command and `flow-run sync` read
//! them: flow runs, task runs with their states, logs, delivery notes.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rusqlite::Row;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, Type, ValueRef};
use serde::Serialize;
use uuid::Uuid;

use super::event::implied_states;
use super::pack;
use crate::state::StateType;

/// One flow run, as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowRunRow {
    /// Its id.
    pub id: Uuid,
    /// Its name, such as `beryl-moth`.
    pub name: String,
    /// The flow's name.
    pub flow: String,
    /// Its state type (`COMPLETED` in JSON, as Prefect's API writes it).
    pub state_type: StateType,
    /// Its state name (`Completed`, `Failed`, ...).
    pub state_name: String,
    /// The state's message, if any.
    pub state_message: Option<String>,
    /// When it was created.
    pub created: DateTime<Utc>,
    /// When it started running.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// The machine it ran on.
    pub host: String,
    /// The process it ran in.
    pub pid: u32,
}

/// One task run of a flow run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskRunRow {
    /// Its name, `add-0`.
    pub name: String,
    /// The task's name.
    pub task: String,
    /// Its number among the task's runs in the flow run.
    pub index: u64,
    /// Its state type (`FAILED` in JSON).
    pub state_type: StateType,
    /// Its state name (`TimedOut`).
    pub state_name: String,
    /// The state's message: the error, for failures.
    pub state_message: Option<String>,
    /// When it first started running.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// How many times its body ran (retries included).
    pub run_count: u32,
    /// The runs it depended on: the futures it was given, its `wait_for`.
    pub upstream: Vec<UpstreamRow>,
}

/// A run a task run depended on, as the run history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamRow {
    /// The parameter it gave a value to, or `wait_for`.
    pub input: String,
    /// The upstream task run's name, `add-0`, in the same flow run.
    pub task_run: String,
}

impl TaskRunRow {
    /// From start to end, if it ran and ended.
    pub fn duration(&self) -> Option<chrono::Duration> {
        Some(self.end_time? - self.start_time?)
    }
}

/// One state transition of a run, from its history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateRecord {
    /// The state type (`RUNNING` in JSON).
    pub state_type: StateType,
    /// The state name (`Retrying`).
    pub name: String,
    /// The state's message, if any.
    pub message: Option<String>,
    /// When the run entered it.
    pub timestamp: DateTime<Utc>,
}

pub(super) fn parse_history(history: &str) -> Vec<StateRecord> {
    history
        .lines()
        .filter_map(|line| {
            let (state_type, name, message, micros): (String, String, Option<String>, i64) =
                serde_json::from_str(line).ok()?;
            Some(StateRecord {
                state_type: StateType::from_api_str(&state_type)?,
                name,
                message,
                timestamp: time(micros),
            })
        })
        .collect()
}

/// A task run with every state it went through.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRunRecord {
    /// The task run.
    pub row: TaskRunRow,
    /// When it was created (µs since the epoch).
    pub created: i64,
    /// Its states, oldest first.
    pub history: Vec<StateRecord>,
}

impl TaskRunRecord {
    pub(super) fn from_packed(task: &str, run: pack::Run<'_>) -> Self {
        let record = |state: pack::RunState<'_>, micros: i64| StateRecord {
            state_type: state.state_type,
            name: state.name.into_owned(),
            message: state.message.map(Cow::into_owned),
            timestamp: time(micros),
        };
        let history = run
            .history
            .into_iter()
            .map(|(state, micros)| record(state, micros))
            .collect();
        let row = TaskRunRow {
            name: format!("{task}-{}", run.index),
            task: task.to_string(),
            index: run.index,
            state_type: run.state.state_type,
            state_name: run.state.name.into_owned(),
            state_message: run.state.message.map(Cow::into_owned),
            start_time: run.start.map(time),
            end_time: run.end.map(time),
            run_count: run.run_count,
            upstream: Vec::new(),
        };
        TaskRunRecord::with_history(row, run.created, history)
    }

    /// A run and its history; an empty history is the one its times imply,
    /// as a run written whole at its end stores none: Pending, Running (if
    /// it ran), the end.
    pub(super) fn with_history(row: TaskRunRow, created: i64, history: Vec<StateRecord>) -> Self {
        let history = if history.is_empty() {
            let started = row.start_time.map(|t| t.timestamp_micros());
            implied_states(created, started)
                .map(|state| StateRecord {
                    state_type: state.state_type,
                    name: state.name.into_owned(),
                    message: None,
                    timestamp: time(state.micros),
                })
                .chain(std::iter::once(StateRecord {
                    state_type: row.state_type,
                    name: row.state_name.clone(),
                    message: row.state_message.clone(),
                    timestamp: row.end_time.unwrap_or_else(|| time(created)),
                }))
                .collect()
        } else {
            history
        };
        TaskRunRecord {
            row,
            created,
            history,
        }
    }
}

/// A flow run's delivery to a Prefect server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The flow run's id here.
    pub flow_run_id: Uuid,
    /// The server's API URL.
    pub api_url: String,
    /// The flow run's id on the server, if it was created there.
    pub server_flow_run_id: Option<Uuid>,
    /// The flow call's parameters, as JSON.
    pub parameters: String,
    /// Whether the server has all of it.
    pub delivered: bool,
    /// Why not, if not.
    pub reason: Option<String>,
}

/// One log line of a flow run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogRow {
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
    /// Its level (`INFO`).
    pub level: String,
    /// Its logger.
    pub logger: String,
    /// The task run it is about, if any.
    pub task_run: Option<String>,
    /// The message.
    pub message: String,
}

pub(super) fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// A state type as the history stores it (`COMPLETED`); an unknown one is an error.
impl FromSql for StateType {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        StateType::from_api_str(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown state type {text:?}").into()))
    }
}

/// An id as the history stores it: hyphenated text.
pub(super) fn uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Uuid> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
}

/// As [`uuid_at`], for a column that may be empty.
pub(super) fn optional_uuid_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Uuid>> {
    let text: Option<String> = row.get(index)?;
    text.map(|text| {
        text.parse()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, Box::new(e)))
    })
    .transpose()
}

/// A delivery from its row's first six columns: `flow_run_id, api_url,
/// server_flow_run_id, parameters, delivered, reason`.
pub(super) fn delivery_at(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        flow_run_id: uuid_at(row, 0)?,
        api_url: row.get(1)?,
        server_flow_run_id: optional_uuid_at(row, 2)?,
        parameters: row.get(3)?,
        delivered: row.get(4)?,
        reason: row.get(5)?,
    })
}
