//! The background writer: the engine hands it events through a channel, and a
//! thread of its own batches them into SQLite transactions.

use std::borrow::Cow;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};
use uuid::Uuid;

use super::{hostname, Store, StoreError};
use crate::recorder::{FlowRunRef, LogEvent, Recorder, TransitionEvent};
use crate::state::{State, StateType};

/// At most this many events go into one transaction.
const MAX_BATCH: usize = 20_000;

struct StateRow {
    state_type: StateType,
    name: Cow<'static, str>,
    message: Option<String>,
    micros: i64,
}

impl StateRow {
    fn of(state: &State) -> Self {
        StateRow {
            state_type: state.state_type(),
            name: state.name_cow(),
            message: state.message().map(str::to_string),
            micros: micros(state.timestamp()),
        }
    }
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

enum Event {
    FlowRun {
        id: Uuid,
        name: String,
        flow: String,
        state: StateRow,
    },
    TaskRun {
        flow_run: Uuid,
        task: &'static str,
        index: u64,
        state: StateRow,
    },
    Log {
        flow_run: Uuid,
        task_run: Option<(&'static str, u64)>,
        level: &'static str,
        logger: &'static str,
        message: String,
        micros: i64,
    },
    /// Answered once everything sent before it is committed.
    Flush(SyncSender<()>),
}

/// Records flow runs into the SQLite run history. Installed by default.
pub struct HistoryRecorder {
    sender: Sender<Event>,
}

impl HistoryRecorder {
    /// Opens the database at `path` and starts the writer thread.
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        let (sender, receiver) = mpsc::channel();
        // The writer lives as long as the process: every flow run flushes
        // before it returns, so nothing waits in the channel at exit.
        std::thread::Builder::new()
            .name("prefecto-history".into())
            .spawn(move || write_loop(store, receiver))
            .map_err(|source| StoreError::CreateHome {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(HistoryRecorder { sender })
    }

    fn send(&self, event: Event) {
        // A send fails only if the writer thread has died; it said why.
        let _ = self.sender.send(event);
    }

    /// Blocks until everything recorded so far is committed.
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(Event::Flush(ack));
        let _ = done.recv();
    }
}

impl Recorder for HistoryRecorder {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        let state = StateRow::of(event.state);
        self.send(match event.task_run {
            Some(run) => Event::TaskRun {
                flow_run: event.flow_run.id,
                task: run.task,
                index: run.index,
                state,
            },
            None => Event::FlowRun {
                id: event.flow_run.id,
                name: event.flow_run.name.to_string(),
                flow: event.flow_run.flow.to_string(),
                state,
            },
        });
    }

    fn on_log(&self, event: &LogEvent<'_>) {
        self.send(Event::Log {
            flow_run: event.flow_run.id,
            task_run: event.task_run.map(|r| (r.task, r.index)),
            level: crate::logging::level_name(&event.level),
            logger: event.logger,
            message: event.message.to_string(),
            micros: micros(event.timestamp),
        });
    }

    fn on_flow_run_end(&self, _flow_run: FlowRunRef<'_>) {
        self.flush();
    }
}

fn write_loop(mut store: Store, events: Receiver<Event>) {
    let mut batch = Vec::with_capacity(1024);
    while let Ok(first) = events.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        if let Err(err) = write_batch(&mut store, &mut batch, &mut acks) {
            tracing::warn!(
                target: "prefecto.engine",
                "Run history: {} event(s) could not be written to {}: {err}",
                batch.len(),
                store.path().display()
            );
        }
        batch.clear();
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

fn write_batch(
    store: &mut Store,
    batch: &mut [Event],
    acks: &mut Vec<SyncSender<()>>,
) -> Result<(), rusqlite::Error> {
    let tx = store.conn.transaction()?;
    for event in batch.iter_mut() {
        match event {
            Event::Flush(ack) => acks.push(ack.clone()),
            event => write_event(&tx, event)?,
        }
    }
    tx.commit()
}

fn write_event(tx: &Transaction<'_>, event: &Event) -> Result<(), rusqlite::Error> {
    match event {
        Event::FlowRun {
            id,
            name,
            flow,
            state,
        } => {
            let id = id.to_string();
            tx.prepare_cached(
                "INSERT INTO flow_runs (id, name, flow, state_type, state_name, state_message,
                                        created, start_time, end_time, host, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET
                    state_type = excluded.state_type,
                    state_name = excluded.state_name,
                    state_message = excluded.state_message,
                    start_time = COALESCE(flow_runs.start_time, excluded.start_time),
                    end_time = COALESCE(excluded.end_time, flow_runs.end_time)",
            )?
            .execute(params![
                id,
                name,
                flow,
                state.state_type.as_api_str(),
                state.name,
                state.message,
                state.micros,
                (state.state_type == StateType::Running).then_some(state.micros),
                state.state_type.is_terminal().then_some(state.micros),
                hostname(),
                std::process::id(),
            ])?;
            insert_state(tx, &id, None, state)
        }
        Event::TaskRun {
            flow_run,
            task,
            index,
            state,
        } => {
            let flow_run = flow_run.to_string();
            let running = state.state_type == StateType::Running;
            tx.prepare_cached(
                "INSERT INTO task_runs (flow_run_id, task, idx, state_type, state_name, state_message,
                                        created, start_time, end_time, run_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (flow_run_id, task, idx) DO UPDATE SET
                    state_type = excluded.state_type,
                    state_name = excluded.state_name,
                    state_message = excluded.state_message,
                    start_time = COALESCE(task_runs.start_time, excluded.start_time),
                    end_time = COALESCE(excluded.end_time, task_runs.end_time),
                    run_count = task_runs.run_count + excluded.run_count",
            )?
            .execute(params![
                flow_run,
                task,
                *index as i64,
                state.state_type.as_api_str(),
                state.name,
                state.message,
                state.micros,
                running.then_some(state.micros),
                state.state_type.is_terminal().then_some(state.micros),
                running as i64,
            ])?;
            insert_state(tx, &flow_run, Some((task, *index)), state)
        }
        Event::Log {
            flow_run,
            task_run,
            level,
            logger,
            message,
            micros,
        } => {
            tx.prepare_cached(
                "INSERT INTO logs (flow_run_id, task, idx, level, logger, message, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                flow_run.to_string(),
                task_run.map(|(task, _)| task),
                task_run.map(|(_, index)| index as i64),
                level,
                logger,
                message,
                micros,
            ])?;
            Ok(())
        }
        Event::Flush(_) => Ok(()),
    }
}

fn insert_state(
    tx: &Transaction<'_>,
    flow_run: &str,
    task_run: Option<(&str, u64)>,
    state: &StateRow,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO states (flow_run_id, task, idx, state_type, state_name, message, timestamp)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        flow_run,
        task_run.map(|(task, _)| task),
        task_run.map(|(_, index)| index as i64),
        state.state_type.as_api_str(),
        state.name,
        state.message,
        state.micros,
    ])?;
    Ok(())
}
