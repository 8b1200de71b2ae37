//! The background writer: the engine hands it events through a channel, and a
//! thread of its own batches them into SQLite transactions.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};
use uuid::Uuid;

use super::{hostname, Store, StoreError};
use crate::recorder::{FlowRunRef, LogEvent, Recorder, TransitionEvent};
use crate::state::{State, StateType};

/// At most this many events go into one transaction.
const MAX_BATCH: usize = 50_000;
/// How many times a batch is tried when the database stays locked.
const WRITE_ATTEMPTS: u64 = 5;
/// How long the writer gathers events before it writes them.
const GATHER: Duration = Duration::from_millis(20);

#[derive(Clone)]
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
    /// A persisted result.
    Result {
        task: &'static str,
        cache_key: String,
        value: String,
        created: i64,
        expires: Option<i64>,
    },
    /// Answered once everything sent before it is committed.
    Flush(SyncSender<()>),
}

/// Records flow runs into the SQLite run history. Installed by default.
pub struct HistoryRecorder {
    sender: Sender<Event>,
    path: std::path::PathBuf,
    /// A connection of its own for cache look-ups, opened on first use.
    reader: std::sync::Mutex<Option<Store>>,
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
            .map_err(StoreError::WriterThread)?;
        Ok(HistoryRecorder {
            sender,
            path: path.to_path_buf(),
            reader: std::sync::Mutex::new(None),
        })
    }

    /// The stored result of `task` for `cache_key`, unless it has expired.
    pub fn cached_result(&self, task: &str, cache_key: &str) -> Option<String> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Store::open(&self.path).ok();
        }
        let store = reader.as_ref()?;
        let now = chrono::Utc::now().timestamp_micros();
        store
            .conn
            .prepare_cached(
                "SELECT value FROM results
                 WHERE task = ?1 AND cache_key = ?2 AND (expires IS NULL OR expires > ?3)",
            )
            .and_then(|mut s| s.query_row(params![task, cache_key, now], |row| row.get(0)))
            .ok()
    }

    /// Stores a completed run's result under its cache key (replacing any older one).
    pub fn persist_result(
        &self,
        task: &'static str,
        cache_key: String,
        value: String,
        expiration: Option<std::time::Duration>,
    ) {
        let created = chrono::Utc::now().timestamp_micros();
        let expires = expiration.map(|e| created + e.as_micros() as i64);
        self.send(Event::Result {
            task,
            cache_key,
            value,
            created,
            expires,
        });
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
        // Gather for a moment: a run's transitions then land in one batch and
        // fold into one write. A flush ends the gathering at once.
        let deadline = Instant::now() + GATHER;
        let mut flushing = matches!(first, Event::Flush(_));
        batch.push(first);
        while batch.len() < MAX_BATCH && !flushing {
            let wait = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(event) => {
                    flushing = matches!(event, Event::Flush(_));
                    batch.push(event);
                }
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let mut attempt = 0;
        while let Err(err) = write_batch(&mut store, &mut batch, &mut acks) {
            acks.clear();
            attempt += 1;
            // Another process may hold the lock past the busy timeout: try again a few times.
            if attempt < WRITE_ATTEMPTS && super::is_busy(&err) {
                std::thread::sleep(Duration::from_millis(100 * attempt));
                continue;
            }
            tracing::warn!(
                target: "prefecto.engine",
                "Run history: {} event(s) could not be written to {}: {err}",
                batch.len(),
                store.path().display()
            );
            for event in &batch {
                if let Event::Flush(ack) = event {
                    acks.push(ack.clone());
                }
            }
            break;
        }
        batch.clear();
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// A run's transitions within one batch, folded into a single write.
struct RunUpdate {
    latest: StateRow,
    created: i64,
    start: Option<i64>,
    end: Option<i64>,
    run_count: i64,
    history: String,
}

impl RunUpdate {
    fn new(state: &StateRow) -> Self {
        RunUpdate {
            latest: state.clone(),
            created: state.micros,
            start: None,
            end: None,
            run_count: 0,
            history: String::new(),
        }
    }

    fn add(&mut self, state: &StateRow) {
        if state.state_type == StateType::Running {
            self.start.get_or_insert(state.micros);
            self.run_count += 1;
        }
        if state.state_type.is_terminal() {
            self.end = Some(state.micros);
        }
        // One JSON array per line: [type, name, message, timestamp].
        let line = serde_json::json!([
            state.state_type.as_api_str(),
            state.name,
            state.message,
            state.micros
        ]);
        self.history.push_str(&line.to_string());
        self.history.push('\n');
        self.latest = state.clone();
    }
}

fn write_batch(
    store: &mut Store,
    batch: &mut [Event],
    acks: &mut Vec<SyncSender<()>>,
) -> Result<(), rusqlite::Error> {
    // Fold each run's transitions into one update, in order of first appearance.
    let mut order: Vec<RunKey> = Vec::new();
    let mut updates: HashMap<RunKey, (Option<FlowRunInfo>, RunUpdate)> = HashMap::new();
    // IMMEDIATE takes the write lock up front, where the busy timeout applies.
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for event in batch.iter_mut() {
        let (key, info, state) = match event {
            Event::Flush(ack) => {
                acks.push(ack.clone());
                continue;
            }
            Event::Log { .. } => {
                write_log(&tx, event)?;
                continue;
            }
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
                .execute(params![
                    *task,
                    &*cache_key,
                    &*value,
                    *created,
                    *expires
                ])?;
                continue;
            }
            Event::FlowRun {
                id,
                name,
                flow,
                state,
            } => (
                RunKey::Flow(*id),
                Some(FlowRunInfo {
                    name: name.clone(),
                    flow: flow.clone(),
                }),
                &*state,
            ),
            Event::TaskRun {
                flow_run,
                task,
                index,
                state,
            } => (RunKey::Task(*flow_run, task, *index), None, &*state),
        };
        let entry = updates.entry(key).or_insert_with(|| {
            order.push(key);
            (None, RunUpdate::new(state))
        });
        if info.is_some() {
            entry.0 = info;
        }
        entry.1.add(state);
    }
    for key in order {
        let (info, update) = &updates[&key];
        match key {
            RunKey::Flow(id) => write_flow_run(&tx, id, info.as_ref(), update)?,
            RunKey::Task(flow_run, task, index) => {
                write_task_run(&tx, flow_run, task, index, update)?
            }
        }
    }
    tx.commit()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum RunKey {
    Flow(Uuid),
    Task(Uuid, &'static str, u64),
}

struct FlowRunInfo {
    name: String,
    flow: String,
}

fn write_flow_run(
    tx: &Transaction<'_>,
    id: Uuid,
    info: Option<&FlowRunInfo>,
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
        update.history,
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
            run_count = task_runs.run_count + excluded.run_count,
            history = task_runs.history || excluded.history",
    )?
    .execute(params![
        flow_run.to_string(),
        task,
        index as i64,
        state.state_type.as_api_str(),
        state.name,
        state.message,
        update.created,
        update.start,
        update.end,
        update.run_count,
        update.history,
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
