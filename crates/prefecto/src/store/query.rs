//! Reading the run history back: what the `prefecto` command shows.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Row, params};

use uuid::Uuid;

use super::crashed::{present_crashed, present_crashed_task_runs};
use super::rows::{
    Delivery, FlowRunRow, LogRow, StateRecord, TaskRunRecord, TaskRunRow, UpstreamRow, delivery_at,
    parse_history, time, uuid_at,
};
use super::{Store, StoreError, pack, schema};
use crate::recorder::implied_lines;
use crate::state::{State, StateType};

fn flow_run_row(row: &Row<'_>) -> rusqlite::Result<FlowRunRow> {
    Ok(FlowRunRow {
        id: uuid_at(row, 0)?,
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
        if !self.read_only {
            self.mark_crashed()?;
        }
        let sql = format!(
            "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs
             WHERE (?1 IS NULL OR state_type = upper(?1) OR state_name = ?1)
               AND (?2 IS NULL OR flow = ?2)
             ORDER BY created DESC LIMIT ?3"
        );
        let mut statement = self.conn.prepare(&sql).map_err(|e| self.sqlite(e))?;
        // A reader that may not mark crashed runs shows them so, and filters
        // by the state it shows: it reads every run of the flow when filtering.
        let (sql_state, sql_limit) = match (self.read_only, state) {
            (true, Some(_)) => (None, i64::MAX),
            _ => (state, limit as i64),
        };
        let mut rows = statement
            .query_map(params![sql_state, flow, sql_limit], flow_run_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        if self.read_only {
            rows.iter_mut().for_each(|row| {
                present_crashed(row);
            });
            rows.retain(|row| {
                state.is_none_or(|s| {
                    row.state_type.as_api_str().eq_ignore_ascii_case(s) || row.state_name == s
                })
            });
            rows.truncate(limit);
        }
        Ok(rows)
    }

    /// The flow run with this name or id (the newest, if names repeat).
    pub fn flow_run(&self, name_or_id: &str) -> Result<FlowRunRow, StoreError> {
        if !self.read_only {
            self.mark_crashed()?;
        }
        let sql = format!(
            "SELECT {FLOW_RUN_COLUMNS} FROM flow_runs WHERE id = ?1 OR name = ?1
             ORDER BY created DESC LIMIT 1"
        );
        let mut row = self
            .conn
            .query_row(&sql, params![name_or_id], flow_run_row)
            .optional()
            .map_err(|e| self.sqlite(e))?
            .ok_or_else(|| StoreError::NoSuchFlowRun(name_or_id.to_string()))?;
        if self.read_only {
            present_crashed(&mut row);
        }
        Ok(row)
    }

    /// A flow run's task runs in creation order, optionally of one state
    /// type (any case) or state name.
    pub fn task_runs(
        &self,
        flow_run: Uuid,
        state: Option<&str>,
    ) -> Result<Vec<TaskRunRow>, StoreError> {
        let wanted = |row: &TaskRunRow| {
            state.is_none_or(|s| {
                row.state_type.as_api_str().eq_ignore_ascii_case(s) || row.state_name == s
            })
        };
        Ok(self
            .task_runs_with_history(flow_run)?
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
                    delivery.flow_run_id.to_string(),
                    delivery.api_url,
                    delivery.server_flow_run_id.map(|id| id.to_string()),
                    delivery.parameters,
                    delivery.delivered,
                    delivery.reason
                ],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// What is known of a flow run's delivery to a Prefect server.
    pub fn delivery(&self, flow_run: Uuid) -> Result<Option<Delivery>, StoreError> {
        let flow_run_id = flow_run.to_string();
        self.conn
            .query_row(
                "SELECT flow_run_id, api_url, server_flow_run_id, parameters, delivered, reason
                 FROM prefect_delivery WHERE flow_run_id = ?1",
                params![flow_run_id],
                delivery_at,
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// A flow run's task runs with their histories, in creation order,
    /// whether stored as rows or in packs.
    pub fn task_runs_with_history(&self, flow_run: Uuid) -> Result<Vec<TaskRunRecord>, StoreError> {
        let flow_run_id = flow_run.to_string();
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
                    upstream: Vec::new(),
                };
                let history = parse_history(&row.get::<_, String>(9)?);
                Ok(TaskRunRecord::with_history(task_run, row.get(5)?, history))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        let format = schema::pack_format_column(self.schema_version);
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT task, body, {format} FROM task_run_packs WHERE flow_run_id = ?1 ORDER BY rowid"
            ))
            .map_err(|e| self.sqlite(e))?;
        let packs = statement
            .query_map(params![flow_run_id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        for (task, body, format) in &packs {
            let runs = self.unpack(&flow_run_id, body, *format)?;
            records.extend(
                runs.into_iter()
                    .map(|run| TaskRunRecord::from_packed(task, run)),
            );
        }
        records.sort_by(|a, b| {
            (a.created, &a.row.task, a.row.index).cmp(&(b.created, &b.row.task, b.row.index))
        });
        if schema::has_upstream(self.schema_version) {
            self.attach_upstream(&flow_run_id, &mut records)?;
        }
        if self.read_only {
            let flow = self.flow_run(&flow_run_id)?;
            if flow.state_type == StateType::Crashed {
                present_crashed_task_runs(&flow, &mut records);
            }
        }
        Ok(records)
    }

    /// How many task runs of a flow run ended in each state type, counted
    /// without loading them: for flow runs of millions of task runs, where
    /// [`task_runs`](Self::task_runs) would hold them all.
    ///
    /// ```
    /// use prefecto::prelude::*;
    /// use prefecto::StateType;
    ///
    /// #[task]
    /// fn id(x: u32) -> u32 {
    ///     x
    /// }
    ///
    /// #[flow]
    /// fn ids() -> uuid::Uuid {
    ///     BatchTask::new(id, 10).unwrap().stream(0..100u32).unwrap().for_each(drop);
    ///     prefecto::flow::current_flow_run().unwrap().id
    /// }
    ///
    /// let home = std::env::temp_dir().join(format!("prefecto-doc-counts-{}", std::process::id()));
    /// let prefecto = Prefecto::builder().engine_only().history_in(&home).build().unwrap();
    /// let flow_run = prefecto.scope(|| ids()).unwrap();
    /// let store = prefecto::store::Store::open_existing(home.join(prefecto::store::DB_FILE)).unwrap();
    /// assert_eq!(store.task_run_counts(flow_run).unwrap()[&StateType::Completed], 100);
    /// # drop(prefecto); let _ = std::fs::remove_dir_all(&home);
    /// ```
    pub fn task_run_counts(&self, flow_run: Uuid) -> Result<HashMap<StateType, u64>, StoreError> {
        let flow_run_id = flow_run.to_string();
        let mut counts: HashMap<StateType, u64> = HashMap::new();
        let mut statement = self
            .conn
            .prepare(
                "SELECT state_type, COUNT(*) FROM task_runs WHERE flow_run_id = ?1
                 GROUP BY state_type",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![flow_run_id], |row| {
                Ok((row.get::<_, StateType>(0)?, row.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.sqlite(e))?;
        for row in rows {
            let (state_type, count) = row.map_err(|e| self.sqlite(e))?;
            *counts.entry(state_type).or_default() += count;
        }
        let format = schema::pack_format_column(self.schema_version);
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT body, {format} FROM task_run_packs WHERE flow_run_id = ?1"
            ))
            .map_err(|e| self.sqlite(e))?;
        let mut packs = statement
            .query(params![flow_run_id])
            .map_err(|e| self.sqlite(e))?;
        // One pack in memory at a time.
        while let Some(row) = packs.next().map_err(|e| self.sqlite(e))? {
            let body: Vec<u8> = row.get(0).map_err(|e| self.sqlite(e))?;
            let format: i64 = row.get(1).map_err(|e| self.sqlite(e))?;
            let runs = self.unpack(&flow_run_id, &body, format)?;
            for run in runs {
                *counts.entry(run.state.state_type).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// The runs of one task-run pack, written in the stored `format`; a
    /// damaged one is named as corrupt.
    fn unpack<'a>(
        &self,
        flow_run_id: &str,
        body: &'a [u8],
        format: i64,
    ) -> Result<Vec<pack::Run<'a>>, StoreError> {
        let format = pack::PackFormat::stored(format);
        format
            .and_then(|format| pack::unpack_in(body, format))
            .map_err(|e| StoreError::Corrupt {
                path: self.path().to_path_buf(),
                what: format!("a task-run pack of flow run {flow_run_id}: {e}"),
            })
    }

    /// Gives each task run the runs it depended on.
    fn attach_upstream(
        &self,
        flow_run_id: &str,
        records: &mut [TaskRunRecord],
    ) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT task, idx, input, upstream FROM task_run_inputs
                 WHERE flow_run_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.sqlite(e))?;
        let edges = statement
            .query_map(params![flow_run_id], |row| {
                let key = (row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64);
                let edge = UpstreamRow {
                    input: row.get(2)?,
                    task_run: row.get(3)?,
                };
                Ok((key, edge))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.sqlite(e))?;
        if edges.is_empty() {
            return Ok(());
        }
        let mut by_run: HashMap<(String, u64), Vec<UpstreamRow>> = HashMap::new();
        for (key, edge) in edges {
            by_run.entry(key).or_default().push(edge);
        }
        for record in records {
            let key = (record.row.task.clone(), record.row.index);
            if let Some(upstream) = by_run.remove(&key) {
                record.row.upstream = upstream;
            }
        }
        Ok(())
    }

    /// Every state transition of a flow run (`task_run` `None`) or of one of its task runs.
    pub fn state_history(
        &self,
        flow_run: Uuid,
        task_run: Option<(&str, u64)>,
    ) -> Result<Vec<StateRecord>, StoreError> {
        let flow_run_id = flow_run.to_string();
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
                    .task_runs_with_history(flow_run)?
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
    pub fn logs(&self, flow_run: Uuid) -> Result<Vec<LogRow>, StoreError> {
        let mut lines = self.stored_logs(flow_run)?;
        lines.extend(self.implied_logs(flow_run)?);
        // Stable: lines of one instant keep their order.
        lines.sort_by_key(|line| line.timestamp);
        Ok(lines)
    }

    /// A flow run's log lines as Prefect's own client would have logged
    /// them, oldest first: those stored, and those its task runs'
    /// transitions imply at Prefect's level for them (lines Prefect 3 does
    /// not have are left out). What a sync sends to a server is among these.
    #[cfg(feature = "prefect")]
    pub(crate) fn logs_as_prefect_logs_them(
        &self,
        flow_run: Uuid,
    ) -> Result<Vec<LogRow>, StoreError> {
        let mut lines = self.stored_logs(flow_run)?;
        lines.extend(self.implied_logs_at(flow_run, |line| line.prefect_level)?);
        lines.sort_by_key(|line| line.timestamp);
        Ok(lines)
    }

    fn implied_logs(&self, flow_run: Uuid) -> Result<Vec<LogRow>, StoreError> {
        self.implied_logs_at(flow_run, |line| Some(line.level))
    }

    /// The implied lines, each at the level `level` gives it (`None` leaves it out).
    fn implied_logs_at(
        &self,
        flow_run: Uuid,
        level: impl Fn(&crate::recorder::ImpliedLine) -> Option<tracing::Level>,
    ) -> Result<Vec<LogRow>, StoreError> {
        let mut lines = Vec::new();
        for run in self.task_runs_with_history(flow_run)? {
            let mut submitted = false;
            for record in run.history {
                let state_type = record.state_type;
                submitted |= state_type == StateType::Pending;
                let state = State::new(state_type, record.name, record.message);
                for line in implied_lines(&run.row.name, &run.row.task, &state, submitted) {
                    let Some(level) = level(&line) else {
                        continue;
                    };
                    lines.push(LogRow {
                        timestamp: record.timestamp,
                        level: crate::recorder::level_name(&level).to_string(),
                        logger: line.logger.to_string(),
                        task_run: line.about_task_run.then(|| run.row.name.clone()),
                        message: line.message,
                    });
                }
            }
        }
        Ok(lines)
    }

    fn stored_logs(&self, flow_run: Uuid) -> Result<Vec<LogRow>, StoreError> {
        let flow_run_id = flow_run.to_string();
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
}
