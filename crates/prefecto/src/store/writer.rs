//! The background writer: the engine hands it events through a channel, and a
//! thread of its own batches them into SQLite transactions.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The writer's maps are keyed by run and touched for every transition: a
/// fast hash matters here, and the keys are our own, not an attacker's.
type FastHash = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, FastHash>;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
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
/// Past this many events waiting for the writer, the engine waits for it:
/// the engine can outpace the disk, and a long map must not queue without
/// bound (an event is about 120 bytes).
const MAX_QUEUED: usize = 1 << 18;
/// A run still going after this long is written as it stands, so that the
/// history shows what is running (and what was, should the process die).
const LINGER: Duration = Duration::from_secs(1);
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
    /// Not sent: the writer's own wake-up to write runs that linger.
    Tick,
}

/// Records flow runs into the SQLite run history. Installed by default.
pub struct HistoryRecorder {
    sender: Sender<Event>,
    backlog: Arc<Backlog>,
    path: std::path::PathBuf,
    /// A connection of its own for cache look-ups, opened on first use.
    reader: std::sync::Mutex<Option<Store>>,
}

impl HistoryRecorder {
    /// Opens the database at `path` and starts the writer thread.
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        let (sender, receiver) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let writer_backlog = backlog.clone();
        // The writer lives as long as the process: every flow run flushes
        // before it returns, so nothing waits in the channel at exit.
        std::thread::Builder::new()
            .name("prefecto-history".into())
            .spawn(move || write_loop(store, receiver, &writer_backlog))
            .map_err(StoreError::WriterThread)?;
        Ok(HistoryRecorder {
            sender,
            backlog,
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
        if self.backlog.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.backlog.wait_for_writer();
        }
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

/// How many events wait for the writer, and whether it is still there.
#[derive(Default)]
struct Backlog {
    queued: AtomicUsize,
    writer_gone: AtomicBool,
}

impl Backlog {
    /// Blocks the sending thread until the writer has taken half the backlog:
    /// rare, and what keeps memory bounded when the engine outpaces the disk.
    fn wait_for_writer(&self) {
        while self.queued.load(Ordering::Relaxed) > MAX_QUEUED / 2
            && !self.writer_gone.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A run's transitions not yet written.
struct Unwritten {
    info: Option<FlowRunInfo>,
    update: RunUpdate,
    first_seen: Instant,
}

fn write_loop(mut store: Store, events: Receiver<Event>, backlog: &Backlog) {
    struct Gone<'a>(&'a Backlog);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            self.0.writer_gone.store(true, Ordering::Relaxed);
        }
    }
    let _gone = Gone(backlog);
    // A batch of thousands of task runs dirties more pages than SQLite's
    // default 2 MiB cache holds: it would spill them mid-transaction and
    // read them back. The cache grows only as far as it is used.
    let _ = store.conn.pragma_update(None, "cache_size", -65536);
    // Runs are held until they end (or linger), so that most task runs are
    // written once, whole, instead of once per transition.
    let mut unwritten: FastMap<RunKey, Unwritten> = FastMap::default();
    // Task runs written as rows while they were still going: they stay rows.
    // Every other task run is written once, finished, into a chunk.
    let mut rows: HashSet<RunKey, FastHash> = HashSet::default();
    let mut batch = Vec::with_capacity(1024);
    let mut closing = false;
    while !closing {
        let first = if unwritten.is_empty() {
            events
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            events.recv_timeout(LINGER)
        };
        let first = match first {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => Event::Tick,
            Err(mpsc::RecvTimeoutError::Disconnected) if unwritten.is_empty() => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                closing = true;
                Event::Tick
            }
        };
        // Gather for a moment: a run's transitions then land together. A
        // flush ends the gathering at once.
        let deadline = Instant::now() + GATHER;
        let mut flushing = closing || matches!(first, Event::Flush(_));
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
        backlog.queued.fetch_sub(
            batch.iter().filter(|e| !matches!(e, Event::Tick)).count(),
            Ordering::Relaxed,
        );
        let mut acks = Vec::new();
        let mut others = Vec::new();
        let now = Instant::now();
        for event in batch.drain(..) {
            match event {
                Event::Flush(ack) => acks.push(ack),
                Event::Tick => {}
                Event::FlowRun {
                    id,
                    name,
                    flow,
                    state,
                } => fold(
                    &mut unwritten,
                    RunKey::Flow(id),
                    Some(FlowRunInfo { name, flow }),
                    &state,
                    now,
                ),
                Event::TaskRun {
                    flow_run,
                    task,
                    index,
                    state,
                } => fold(
                    &mut unwritten,
                    RunKey::Task(flow_run, task, index),
                    None,
                    &state,
                    now,
                ),
                other => others.push(other),
            }
        }
        let (mut as_rows, mut chunked) = (Vec::new(), Vec::new());
        for (key, run) in &unwritten {
            let finished = run.update.latest.state_type.is_terminal();
            let due = flushing
                || finished
                || matches!(key, RunKey::Flow(_))
                || now.duration_since(run.first_seen) >= LINGER;
            if !due {
                continue;
            }
            if finished && matches!(key, RunKey::Task(..)) && !rows.contains(key) {
                chunked.push((run.update.created, *key));
            } else {
                as_rows.push(*key);
            }
        }
        // Chunks list their runs in the order they were created.
        chunked.sort_unstable_by_key(|&(created, key)| (created, key));
        let chunked: Vec<RunKey> = chunked.into_iter().map(|(_, key)| key).collect();
        let due = Plan {
            others: &others,
            as_rows: &as_rows,
            chunked: &chunked,
            unwritten: &unwritten,
        };
        let mut attempt = 0;
        while let Err(err) = write_batch(&mut store, &due) {
            attempt += 1;
            // Another process may hold the lock past the busy timeout: try again a few times.
            if attempt < WRITE_ATTEMPTS && super::is_busy(&err) {
                std::thread::sleep(Duration::from_millis(100 * attempt));
                continue;
            }
            tracing::warn!(
                target: "prefecto.engine",
                "Run history: {} run(s) and {} other event(s) could not be written to {}: {err}",
                as_rows.len() + chunked.len(),
                others.len(),
                store.path().display()
            );
            break;
        }
        for key in as_rows.drain(..) {
            if let Some(run) = unwritten.remove(&key) {
                if matches!(key, RunKey::Task(..)) {
                    if run.update.latest.state_type.is_terminal() {
                        rows.remove(&key);
                    } else {
                        rows.insert(key);
                    }
                }
            }
        }
        for key in &chunked {
            unwritten.remove(key);
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

fn fold(
    unwritten: &mut FastMap<RunKey, Unwritten>,
    key: RunKey,
    info: Option<FlowRunInfo>,
    state: &StateRow,
    now: Instant,
) {
    let run = unwritten.entry(key).or_insert_with(|| Unwritten {
        info: None,
        update: RunUpdate::new(state),
        first_seen: now,
    });
    if info.is_some() {
        run.info = info;
    }
    run.update.add(state);
}

/// A run's transitions since it was last written, folded into a single write.
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
        push_history_line(&mut self.history, state);
        self.latest = state.clone();
    }
}

/// Appends a finished task run to a chunk: one JSON array per line,
/// `[task, index, type, name, message, created, start, end, run_count, [history...]]`.
fn push_chunk_line(body: &mut String, task: &str, index: u64, update: &RunUpdate) {
    use std::fmt::Write;
    let state = &update.latest;
    body.push('[');
    push_json_str(body, task);
    let _ = write!(body, ",{index},\"{}\",", state.state_type.as_api_str());
    push_json_str(body, &state.name);
    body.push(',');
    push_json_opt(body, state.message.as_deref());
    let optional = |time: Option<i64>| time.map_or("null".to_string(), |t| t.to_string());
    let _ = write!(
        body,
        ",{},{},{},{},[",
        update.created,
        optional(update.start),
        optional(update.end),
        update.run_count
    );
    // History lines are JSON arrays, and JSON strings never hold a raw
    // newline: joining them with commas makes an array of arrays.
    let lines = update.history.trim_end_matches('\n');
    for (i, line) in lines.split('\n').enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(line);
    }
    body.push_str("]]\n");
}

fn push_json_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'_' || b == b'-')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

fn push_json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

/// Appends one JSON array per line, `[type, name, message, timestamp]`, by
/// hand: this runs for every transition of every run, and the common line
/// (no message, a plain name) needs no escaping.
fn push_history_line(history: &mut String, state: &StateRow) {
    use std::fmt::Write;
    history.push_str("[\"");
    history.push_str(state.state_type.as_api_str());
    history.push_str("\",");
    push_json_str(history, &state.name);
    history.push(',');
    push_json_opt(history, state.message.as_deref());
    let _ = writeln!(history, ",{}]", state.micros);
}

/// What one transaction writes.
struct Plan<'a> {
    /// Logs and results.
    others: &'a [Event],
    /// Flow runs, and task runs written as rows.
    as_rows: &'a [RunKey],
    /// Finished task runs, written into one chunk per flow run.
    chunked: &'a [RunKey],
    unwritten: &'a FastMap<RunKey, Unwritten>,
}

fn write_batch(store: &mut Store, plan: &Plan<'_>) -> Result<(), rusqlite::Error> {
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
    let mut chunks: HashMap<Uuid, (usize, String)> = HashMap::new();
    for key in plan.chunked {
        let RunKey::Task(flow_run, task, index) = *key else {
            continue;
        };
        let (runs, body) = chunks.entry(flow_run).or_default();
        *runs += 1;
        push_chunk_line(body, task, index, &plan.unwritten[key].update);
    }
    for (flow_run, (runs, body)) in chunks {
        tx.prepare_cached(
            "INSERT INTO task_run_chunks (flow_run_id, runs, body) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            &*flow_run
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
            runs as i64,
            body
        ])?;
    }
    tx.commit()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(state: &State) -> (String, String, Option<String>, i64) {
        let mut history = String::new();
        push_history_line(&mut history, &StateRow::of(state));
        assert!(history.ends_with('\n'));
        serde_json::from_str(history.trim_end()).expect("a JSON array")
    }

    #[test]
    fn history_lines_are_json() {
        let (state_type, name, message, micros) = line_of(&State::completed());
        assert_eq!(
            (&*state_type, &*name, message),
            ("COMPLETED", "Completed", None)
        );
        assert!(micros > 0);
        let awkward = "a \"quoted\" \\ line\nwith 'everything' é";
        let (_, name, message, _) = line_of(&State::failed(awkward));
        assert_eq!(name, "Failed");
        assert_eq!(message.as_deref(), Some(awkward));
        let (_, name, _, _) = line_of(&State::new(StateType::Completed, "Odd \"name\"", None));
        assert_eq!(name, "Odd \"name\"");
    }
}
