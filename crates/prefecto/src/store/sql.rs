//! The SQL of one write: flow runs and lingering task runs as rows, finished
//! task runs in packs, logs and results, in one transaction.

use rusqlite::{Transaction, params};
use uuid::Uuid;

use super::event::{Event, FlowRunNames, RunKey};
use super::fold::{RunUpdate, Unwritten};
use super::outbox::FastMap;
use super::pack::{Pack, PackFormat};
use super::{Store, hostname};

/// What one transaction writes.
pub(super) struct Plan<'a> {
    /// Logs and results.
    pub(super) others: &'a [Event],
    /// Flow runs, and task runs written as rows.
    pub(super) as_rows: &'a [RunKey],
    pub(super) unwritten: &'a FastMap<RunKey, Unwritten>,
    /// Finished task runs, packed by flow run and task.
    pub(super) packs: &'a [((Uuid, &'static str), Pack)],
}

pub(super) fn write_batch(store: &mut Store, plan: &Plan<'_>) -> Result<(), rusqlite::Error> {
    // IMMEDIATE takes the write lock up front, where the busy timeout applies.
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for event in plan.others {
        match event {
            Event::Log { .. } => write_log(&tx, event)?,
            Event::Result {
                task,
                cache_key,
                value,
                created,
                expires,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO results (task, cache_key, value, created, expires)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![*task, cache_key, value, *created, *expires])?;
            }
            Event::Upstream {
                flow_run,
                task,
                index,
                upstream,
            } => {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO task_run_inputs (flow_run_id, task, idx, input, upstream)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for edge in upstream {
                    insert.execute(params![
                        flow_run.to_string(),
                        *task,
                        *index as i64,
                        edge.input,
                        edge.task_run.to_string()
                    ])?;
                }
            }
            _ => {}
        }
    }
    for key in plan.as_rows {
        let run = &plan.unwritten[key];
        match *key {
            RunKey::Flow(id) => write_flow_run(&tx, id, run.info.as_ref(), &run.update)?,
            RunKey::Task(flow_run, task, index) => {
                write_task_run(&tx, flow_run, task, index, &run.update)?
            }
        }
    }
    for ((flow_run, task), pack) in plan.packs {
        tx.prepare_cached(
            "INSERT INTO task_run_packs (flow_run_id, task, runs, body, format)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            &*flow_run
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
            *task,
            pack.runs() as i64,
            pack.body(),
            PackFormat::CURRENT as i64
        ])?;
    }
    tx.commit()
}

fn write_flow_run(
    tx: &Transaction<'_>,
    id: Uuid,
    info: Option<&FlowRunNames>,
    update: &RunUpdate,
) -> Result<(), rusqlite::Error> {
    let state = &update.latest;
    tx.prepare_cached(
        "INSERT INTO flow_runs (id, name, flow, state_type, state_name, state_message,
                                created, start_time, end_time, host, pid, history)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (id) DO UPDATE SET
            state_type = excluded.state_type,
            state_name = excluded.state_name,
            state_message = excluded.state_message,
            start_time = COALESCE(flow_runs.start_time, excluded.start_time),
            end_time = COALESCE(excluded.end_time, flow_runs.end_time),
            history = flow_runs.history || excluded.history",
    )?
    .execute(params![
        id.to_string(),
        info.map_or("", |i| i.name.as_str()),
        info.map_or("", |i| i.flow.as_str()),
        state.state_type.as_api_str(),
        state.name,
        state.message,
        update.created,
        update.start,
        update.end,
        hostname(),
        std::process::id(),
        update.history_lines(),
    ])?;
    Ok(())
}

fn write_task_run(
    tx: &Transaction<'_>,
    flow_run: Uuid,
    task: &str,
    index: u64,
    update: &RunUpdate,
) -> Result<(), rusqlite::Error> {
    let state = &update.latest;
    tx.prepare_cached(
        "INSERT INTO task_runs (flow_run_id, task, idx, state_type, state_name, state_message,
                                created, start_time, end_time, run_count, history)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (flow_run_id, task, idx) DO UPDATE SET
            state_type = excluded.state_type,
            state_name = excluded.state_name,
            state_message = excluded.state_message,
            start_time = COALESCE(task_runs.start_time, excluded.start_time),
            end_time = COALESCE(excluded.end_time, task_runs.end_time),
            run_count = MAX(task_runs.run_count, excluded.run_count),
            history = task_runs.history || excluded.history",
    )?
    .execute(params![
        &*flow_run
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
        task,
        index as i64,
        state.state_type.as_api_str(),
        state.name,
        state.message,
        update.created,
        update.start,
        update.end,
        update.run_count,
        update.history_lines(),
    ])?;
    Ok(())
}

fn write_log(tx: &Transaction<'_>, event: &Event) -> Result<(), rusqlite::Error> {
    let Event::Log {
        flow_run,
        task_run,
        level,
        logger,
        message,
        micros,
    } = event
    else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT INTO logs (flow_run_id, task, idx, level, logger, message, timestamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        &*flow_run
            .hyphenated()
            .encode_lower(&mut Uuid::encode_buffer()),
        task_run.map(|(task, _)| task),
        task_run.map(|(_, index)| index as i64),
        level,
        logger,
        message,
        micros,
    ])?;
    Ok(())
}
