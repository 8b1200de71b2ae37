//! A flow run of the run history as the reporter's records, for a sync to
//! send what the server lacks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::report::TaskRunReport;
use crate::names::{TaskRunName, UpstreamRun};
use crate::state::{State, StateType};

/// Task names from the store live as long as the process: a sync is short,
/// and a flow run has few distinct tasks.
fn intern(task: String, names: &mut HashMap<String, &'static str>) -> &'static str {
    if let Some(name) = names.get(&task) {
        return name;
    }
    let leaked: &'static str = Box::leak(task.clone().into_boxed_str());
    names.insert(task, leaked);
    leaked
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// The runs a task run depended on, as the history names them.
fn upstream_of(
    rows: &[crate::store::UpstreamRow],
    names: &mut HashMap<String, &'static str>,
) -> Vec<UpstreamRun> {
    rows.iter()
        .filter_map(|row| {
            let (task, index) = row.task_run.rsplit_once('-')?;
            let input = intern(row.input.clone(), names);
            Some(UpstreamRun {
                input,
                task_run: TaskRunName {
                    task: intern(task.to_string(), names),
                    index: index.parse().ok()?,
                },
            })
        })
        .collect()
}

pub(super) fn task_run_reports(
    flow_run: Uuid,
    records: Vec<crate::store::TaskRunRecord>,
) -> Vec<TaskRunReport> {
    let mut names = HashMap::new();
    records
        .into_iter()
        .filter(|record| {
            record
                .history
                .last()
                .is_some_and(|s| s.state_type.is_terminal())
        })
        .map(|record| {
            let run = TaskRunName {
                task: intern(record.row.task.clone(), &mut names),
                index: record.row.index,
            };
            let state_of = |s: &crate::store::StateRecord| {
                State::new(s.state_type, s.name.clone(), s.message.clone()).at(s.timestamp)
            };
            let n = record.history.len();
            let latest = state_of(&record.history[n - 1]);
            let previous = (n >= 2).then(|| state_of(&record.history[n - 2]));
            TaskRunReport {
                id: run.id_in(flow_run),
                run,
                spec: None,
                created: time(record.created),
                start: record.row.start_time,
                end: record.row.end_time,
                run_count: record.row.run_count,
                previous,
                latest,
                submitted: record
                    .history
                    .iter()
                    .any(|s| s.state_type == StateType::Pending),
                upstream: upstream_of(&record.row.upstream, &mut names),
            }
        })
        .collect()
}
