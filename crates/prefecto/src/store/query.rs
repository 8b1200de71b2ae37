//! Reading the run history back: what the `prefecto` command shows.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::event::implied_states;
use super::{Store, StoreError, hostname, pack};
use crate::recorder::implied_lines;
use crate::state::{State, StateType};

/// One flow run, as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowRunRow {
    /// Its id.
    pub id: String,
    /// Its name, such as `beryl-moth`.
    pub name: String,
    /// The flow's name.
    pub flow: String,
    /// Its state type, upper case as Prefect's API (`COMPLETED`).
    pub state_type: String,
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
    /// Its state type (`FAILED`).
    pub state_type: String,
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
    /// The state type (`RUNNING`).
    pub state_type: String,
    /// The state name (`Retrying`).
    pub name: String,
    /// The state's message, if any.
    pub message: Option<String>,
    /// When the run entered it.
    pub timestamp: DateTime<Utc>,
}

fn parse_history(history: &str) -> Vec<StateRecord> {
    history
        .lines()
        .filter_map(|line| {
            let (state_type, name, message, micros): (String, String, Option<String>, i64) =
                serde_json::from_str(line).ok()?;
            Some(StateRecord {
                state_type,
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
    fn from_packed(task: &str, run: pack::Run<'_>) -> Self {
        let record = |state: pack::RunState<'_>, micros: i64| StateRecord {
            state_type: state.state_type.as_api_str().to_string(),
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
            state_type: run.state.state_type.as_api_str().to_string(),
            state_name: run.state.name.into_owned(),
            state_message: run.state.message.map(Cow::into_owned),
            start_time: run.start.map(time),
            end_time: run.end.map(time),
            run_count: run.run_count,
        };
        TaskRunRecord::with_history(row, run.created, history)
    }

    /// A run and its history; an empty history is the one its times imply,
    /// as a run written whole at its end stores none: Pending, Running (if
    /// it ran), the end.
    fn with_history(row: TaskRunRow, created: i64, history: Vec<StateRecord>) -> Self {
        let history = if history.is_empty() {
            let started = row.start_time.map(|t| t.timestamp_micros());
            implied_states(created, started)
                .map(|state| StateRecord {
                    state_type: state.state_type.as_api_str().to_string(),
                    name: state.name.into_owned(),
                    message: None,
                    timestamp: time(state.micros),
                })
                .chain(std::iter::once(StateRecord {
                    state_type: row.state_type.clone(),
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
    pub flow_run_id: String,
    /// The server's API URL.
    pub api_url: String,
    /// The flow run's id on the server, if it was created there.
    pub server_flow_run_id: Option<String>,
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

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn flow_run_row(row: &Row<'_>) -> rusqlite::Result<FlowRunRow> {
    Ok(FlowRunRow {
        id: row.get(0)?,
        name: row.get(1)?,
        flow: row.get(2)?,
        state_type: row.get(3)?,
        state_name: row.get(4)?,
        state_message: row.get(5)?,
        created: time(row.get(6)?),
        start_time: row.get::<_, Option<i64>>(7)?.map(time),
        end_time: row.get::<_, Option<i64>>(8)?.map(time),
        host: row.get(9)?,
        pid: row.get(10)?,
    })
}

const FLOW_RUN_COLUMNS: &str = "id, name, flow, state_type, state_name, state_message, created, start_time, end_time, host, pid";

impl Store {
    /// The newest flow runs first, optionally of one state type (any case) or flow.
    pub fn flow_runs(
        &self,
        limit: usize,
        state: Option<&str>,
        flow: Option<&str>,
    ) -> Result<Vec<FlowRunRow>, StoreError> {
        self.mark_crashed()?;
        let sql = format!(
            "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs
             WHERE (?1 IS NULL OR state_type = upper(?1) OR state_name = ?1)
               AND (?2 IS NULL OR flow = ?2)
             ORDER BY created DESC LIMIT ?3"
        );
        let mut statement = self.conn.prepare(&sql).map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![state, flow, limit as i64], flow_run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        Ok(rows)
    }

    /// The flow run with this name or id (the newest, if names repeat).
    pub fn flow_run(&self, name_or_id: &str) -> Result<FlowRunRow, StoreError> {
        self.mark_crashed()?;
        let sql = format!(
            "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?1 OR name = ?1
             ORDER BY created DESC LIMIT 1"
        );
        self.conn
            .query_row(&sql, params![name_or_id], flow_run_row)
            .optional()
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NoSuchFlowRun(name_or_id.to_string()))
    }

    /// A flow run's task runs in creation order, optionally of one state
    /// type (any case) or state name.
    pub fn task_runs(
        &self,
        flow_run_id: &str,
        state: Option<&str>,
    ) -> Result<Vec<TaskRunRow>, StoreError> {
        let wanted = |row: &TaskRunRow| {
            state.is_none_or(|s| row.state_type == s.to_uppercase() || row.state_name == s)
        };
        Ok(self
            .task_runs_with_history(flow_run_id)?
            .into_iter()
            .map(|record| record.row)
            .filter(wanted)
            .collect())
    }

    /// Notes that a Prefect server did not get all of a flow run, so that
    /// `prefecto flow-run sync` can deliver it later.
    pub fn record_undelivered(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO prefect_delivery
                    (flow_run_id, api_url, server_flow_run_id, parameters, delivered, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (flow_run_id) DO UPDATE SET
                    api_url = excluded.api_url,
                    server_flow_run_id = COALESCE(excluded.server_flow_run_id, server_flow_run_id),
                    parameters = excluded.parameters,
                    delivered = excluded.delivered,
                    reason = excluded.reason",
                params![
                    delivery.flow_run_id,
                    delivery.api_url,
                    delivery.server_flow_run_id,
                    delivery.parameters,
                    delivery.delivered,
                    delivery.reason
                ],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// What is known of a flow run's delivery to a Prefect server.
    pub fn delivery(&self, flow_run_id: &str) -> Result<Option<Delivery>, StoreError> {
        self.conn
            .query_row(
                "SELECT flow_run_id, api_url, server_flow_run_id, parameters, delivered, reason
                 FROM prefect_delivery WHERE flow_run_id = ?1",
                params![flow_run_id],
                |row| {
                    Ok(Delivery {
                        flow_run_id: row.get(0)?,
                        api_url: row.get(1)?,
                        server_flow_run_id: row.get(2)?,
                        parameters: row.get(3)?,
                        delivered: row.get(4)?,
                        reason: row.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// A flow run's task runs with their histories, in creation order,
    /// whether stored as rows or in packs.
    pub fn task_runs_with_history(
        &self,
        flow_run_id: &str,
    ) -> Result<Vec<TaskRunRecord>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT task, idx, state_type, state_name, state_message, created, start_time,
                        end_time, run_count, history
                 FROM task_runs WHERE flow_run_id = ?1",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut records = statement
            .query_map(params![flow_run_id], |row| {
                let task: String = row.get(0)?;
                let index = row.get::<_, i64>(1)? as u64;
                let task_run = TaskRunRow {
                    name: format!("{task}-{index}"),
                    task,
                    index,
                    state_type: row.get(2)?,
                    state_name: row.get(3)?,
                    state_message: row.get(4)?,
                    start_time: row.get::<_, Option<i64>>(6)?.map(time),
                    end_time: row.get::<_, Option<i64>>(7)?.map(time),
                    run_count: row.get(8)?,
                };
                let history = parse_history(&row.get::<_, String>(9)?);
                Ok(TaskRunRecord::with_history(task_run, row.get(5)?, history))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        let mut statement = self
            .conn
            .prepare("SELECT task, body FROM task_run_packs WHERE flow_run_id = ?1 ORDER BY rowid")
            .map_err(|e| self.sqlite(e))?;
        let packs = statement
            .query_map(params![flow_run_id], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        for (task, body) in &packs {
            let runs = pack::unpack(body).map_err(|e| StoreError::Corrupt {
                path: self.path().to_path_buf(),
                what: format!("a task-run pack of flow run {flow_run_id}: {e}"),
            })?;
            records.extend(
                runs.into_iter()
                    .map(|run| TaskRunRecord::from_packed(task, run)),
            );
        }
        records.sort_by(|a, b| {
            (a.created, &a.row.task, a.row.index).cmp(&(b.created, &b.row.task, b.row.index))
        });
        Ok(records)
    }

    /// Every state transition of a flow run (`task_run` `None`) or of one of its task runs.
    pub fn state_history(
        &self,
        flow_run_id: &str,
        task_run: Option<(&str, u64)>,
    ) -> Result<Vec<StateRecord>, StoreError> {
        let history: Option<String> = match task_run {
            None => self
                .conn
                .query_row(
                    "SELECT history FROM flow_runs WHERE id = ?1",
                    params![flow_run_id],
                    |row| row.get(0),
                )
                .optional(),
            Some((task, index)) => {
                return Ok(self
                    .task_runs_with_history(flow_run_id)?
                    .into_iter()
                    .find(|r| r.row.task == task && r.row.index == index)
                    .map(|r| r.history)
                    .unwrap_or_default());
            }
        }
        .map_err(|e| self.sqlite(e))?;
        Ok(history.as_deref().map(parse_history).unwrap_or_default())
    }

    /// A flow run's log lines, oldest first: those stored, and those its task
    /// runs' transitions imply (see [`crate::recorder::implied_lines`]).
    pub fn logs(&self, flow_run_id: &str) -> Result<Vec<LogRow>, StoreError> {
        let mut lines = self.stored_logs(flow_run_id)?;
        lines.extend(self.implied_logs(flow_run_id)?);
        // Stable: lines of one instant keep their order.
        lines.sort_by_key(|line| line.timestamp);
        Ok(lines)
    }

    fn implied_logs(&self, flow_run_id: &str) -> Result<Vec<LogRow>, StoreError> {
        let mut lines = Vec::new();
        for run in self.task_runs_with_history(flow_run_id)? {
            let mut submitted = false;
            for record in run.history {
                let Some(state_type) = StateType::from_api_str(&record.state_type) else {
                    continue;
                };
                submitted |= state_type == StateType::Pending;
                let state = State::new(state_type, record.name, record.message);
                for line in implied_lines(&run.row.name, &run.row.task, &state, submitted) {
                    lines.push(LogRow {
                        timestamp: record.timestamp,
                        level: crate::recorder::level_name(&line.level).to_string(),
                        logger: line.logger.to_string(),
                        task_run: line.about_task_run.then(|| run.row.name.clone()),
                        message: line.message,
                    });
                }
            }
        }
        Ok(lines)
    }

    fn stored_logs(&self, flow_run_id: &str) -> Result<Vec<LogRow>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT timestamp, level, logger, task, idx, message FROM logs
                 WHERE flow_run_id = ?1 ORDER BY timestamp, rowid",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![flow_run_id], |row| {
                let task: Option<String> = row.get(3)?;
                let index: Option<i64> = row.get(4)?;
                Ok(LogRow {
                    timestamp: time(row.get(0)?),
                    level: row.get(1)?,
                    logger: row.get(2)?,
                    task_run: task.zip(index).map(|(t, i)| format!("{t}-{i}")),
                    message: row.get(5)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        Ok(rows)
    }

    /// Marks as `Crashed` the unfinished flow runs of this machine whose process
    /// is gone (killed, say, with SIGKILL), with their unfinished task runs.
    pub fn mark_crashed(&self) -> Result<usize, StoreError> {
        let host = hostname();
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, pid FROM flow_runs
                 WHERE host = ?1 AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')",
            )
            .map_err(|e| self.sqlite(e))?;
        let unfinished: Vec<(String, u32)> = statement
            .query_map(params![host], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sqlite(e))?;
        let mut marked = 0;
        for (id, pid) in unfinished {
            if process_alive(pid) {
                continue;
            }
            let message = format!(
                "The process that ran this flow run (pid {pid} on {host}) is gone; it ended without finishing the run."
            );
            let now = Utc::now().timestamp_micros();
            let line = format!(
                "{}\n",
                serde_json::json!(["CRASHED", "Crashed", message, now])
            );
            self.conn
                .execute(
                    "UPDATE flow_runs SET state_type = 'CRASHED', state_name = 'Crashed',
                        state_message = ?2, end_time = ?3, history = history || ?4
                     WHERE id = ?1 AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')",
                    params![id, message, now, line],
                )
                .and_then(|_| {
                    self.conn.execute(
                        "UPDATE task_runs SET state_type = 'CRASHED', state_name = 'Crashed',
                            state_message = ?2, end_time = ?3, history = history || ?4
                         WHERE flow_run_id = ?1 AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')",
                        params![id, message, now, line],
                    )
                })
                .map_err(|e| self.sqlite(e))?;
            marked += 1;
        }
        Ok(marked)
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    process_exists(pid)
}

#[cfg(target_os = "linux")]
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(all(unix, not(target_os = "linux")))]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 only asks whether the process exists; EPERM says it does,
    // under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    unsafe { libc::kill(pid, 0) == 0 }
    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Where liveness cannot be asked, a run is never taken for crashed.
#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    true
}
