//! The background writer: the engine hands it events through a channel, and a
//! thread of its own batches them into SQLite transactions.

use std::borrow::Cow;
use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};
use uuid::Uuid;

use super::outbox::{Backlog, FastHash, FastMap, Outbox, RunningRun};
use super::pack::{self, Pack};
use super::{hostname, Store, StoreError};
use crate::recorder::{FlowRunRef, LogEvent, Recorder, RunTimes, TransitionEvent};
use crate::state::{State, StateType};

/// At most this many events go into one transaction.
const MAX_BATCH: usize = 50_000;
/// How many times a batch is tried when the database stays locked.
const WRITE_ATTEMPTS: u64 = 5;
/// A run still going after this long is written as it stands, so that the
/// history shows what is running (and what was, should the process die).
const LINGER: Duration = Duration::from_secs(1);
/// How long the writer gathers events before it writes them.
const GATHER: Duration = Duration::from_millis(20);
/// How often the writer fetches the events waiting in the outbox's shards,
/// so that a slow flow's runs reach the database without a full shard.
const FETCH_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub(super) struct StateRow {
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
            micros: system_micros(state.system_time()),
        }
    }
}

fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// Microseconds since the epoch, without chrono's calendar arithmetic: this
/// runs for every transition.
fn system_micros(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => since.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    }
}

/// A task run's times, as stored.
#[derive(Clone, Copy)]
pub(super) struct TimesRow {
    created: i64,
    started: Option<i64>,
    run_count: u32,
}

impl TimesRow {
    fn of(times: &RunTimes) -> Self {
        TimesRow {
            created: system_micros(times.created),
            started: times.started.map(system_micros),
            run_count: times.run_count,
        }
    }
}

pub(super) enum Event {
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
        times: Option<TimesRow>,
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
    outbox: Arc<Outbox>,
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
        let outbox = Arc::new(Outbox::new(sender, backlog.clone()));
        let writer_outbox = Arc::downgrade(&outbox);
        // The writer lives as long as the recorder: every flow run flushes
        // before it returns, so nothing waits for it at exit.
        std::thread::Builder::new()
            .name("prefecto-history".into())
            .spawn(move || write_loop(store, receiver, &backlog, &writer_outbox))
            .map_err(StoreError::WriterThread)?;
        Ok(HistoryRecorder {
            outbox,
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
        self.outbox.send_now(Event::Result {
            task,
            cache_key,
            value,
            created,
            expires,
        });
    }

    /// Blocks until everything recorded so far is committed.
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        self.outbox.drain();
        self.outbox.send_now(Event::Flush(ack));
        let _ = done.recv();
    }
}

impl Recorder for HistoryRecorder {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        let state = event.state;
        let Some(run) = event.task_run else {
            self.outbox.send_now(Event::FlowRun {
                id: event.flow_run.id,
                name: event.flow_run.name.to_string(),
                flow: event.flow_run.flow.to_string(),
                state: StateRow::of(state),
            });
            return;
        };
        let key = RunKey::Task(event.flow_run.id, run.task, run.index);
        // A run that starts and ends quickly costs one event, at its end:
        // its Pending and Running states follow from its times.
        if event.times.is_some() && state.is_pending() {
            return;
        }
        let times = event.times.as_ref().map(TimesRow::of);
        if let Some(times) = times {
            // Its first start (retries count on from 2).
            if state.is_running() && times.run_count == 1 {
                let started = times.started.unwrap_or(times.created);
                let running = RunningRun {
                    created: times.created,
                    started,
                    written: false,
                };
                self.outbox.running(key, run.index, running);
                return;
            }
        }
        let ended = (times.is_some() && state.is_terminal()).then_some(key);
        let event = Event::TaskRun {
            flow_run: event.flow_run.id,
            task: run.task,
            index: run.index,
            state: StateRow::of(state),
            times,
        };
        self.outbox.push(ended, run.index, event);
    }

    fn on_log(&self, event: &LogEvent<'_>) {
        let task_run = event.task_run.map(|r| (r.task, r.index));
        let log = Event::Log {
            flow_run: event.flow_run.id,
            task_run,
            level: crate::logging::level_name(&event.level),
            logger: event.logger,
            message: event.message.to_string(),
            micros: micros(event.timestamp),
        };
        // With its task run's events: a shard's events keep their order.
        self.outbox
            .push(None, task_run.map_or(0, |(_, index)| index), log);
    }

    fn on_flow_run_end(&self, _flow_run: FlowRunRef<'_>) {
        self.flush();
    }
}

/// A run's transitions not yet written.
struct Unwritten {
    info: Option<FlowRunInfo>,
    update: RunUpdate,
    first_seen: Instant,
}

fn write_loop(
    mut store: Store,
    parcels: Receiver<Vec<Event>>,
    backlog: &Backlog,
    outbox: &Weak<Outbox>,
) {
    struct Gone<'a>(&'a Backlog);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            self.0.writer_gone();
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
    // Every other task run is written once, finished, into a pack.
    let mut rows: HashSet<RunKey, FastHash> = HashSet::default();
    let mut batch: Vec<Event> = Vec::with_capacity(1024);
    let mut closing = false;
    let mut next_fetch = Instant::now() + FETCH_EVERY;
    while !closing {
        // Wake at least every fetch interval, for the events waiting in the
        // outbox and the runs that are still going.
        let wait = next_fetch.saturating_duration_since(Instant::now());
        let first = match parcels.recv_timeout(wait) {
            Ok(parcel) => parcel,
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) if unwritten.is_empty() => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                closing = true;
                Vec::new()
            }
        };
        if Instant::now() >= next_fetch {
            if let Some(outbox) = outbox.upgrade() {
                outbox.drain();
            }
            next_fetch = Instant::now() + FETCH_EVERY;
        }
        // Gather for a moment: a run's transitions then land together. A
        // flush ends the gathering at once.
        let deadline = Instant::now() + GATHER;
        let is_flush = |parcel: &[Event]| parcel.iter().any(|e| matches!(e, Event::Flush(_)));
        let mut flushing = closing || is_flush(&first);
        batch.extend(first);
        while batch.len() < MAX_BATCH && !flushing {
            let wait = deadline.saturating_duration_since(Instant::now());
            match parcels.recv_timeout(wait) {
                Ok(parcel) => {
                    flushing = is_flush(&parcel);
                    batch.extend(parcel);
                }
                Err(_) => break,
            }
        }
        backlog.taken(batch.len());
        let mut acks = Vec::new();
        let mut others = Vec::new();
        let now = Instant::now();
        // Runs still going after the linger time: written as they stand.
        let cutoff = micros(Utc::now()) - LINGER.as_micros() as i64;
        let lingering = outbox.upgrade().map(|o| o.lingering(cutoff));
        for (key, created, started) in lingering.into_iter().flatten() {
            if let RunKey::Task(..) = key {
                let times = TimesRow {
                    created,
                    started: Some(started),
                    run_count: 1,
                };
                let running = StateRow {
                    state_type: StateType::Running,
                    name: Cow::Borrowed("Running"),
                    message: None,
                    micros: started,
                };
                unwritten.insert(
                    key,
                    Unwritten {
                        info: None,
                        update: RunUpdate::new(&running, Some(times), true),
                        first_seen: now - LINGER,
                    },
                );
            }
        }
        // Finished task runs seen whole in this batch go straight into packs.
        let mut packs: FastMap<(Uuid, &'static str), Pack> = FastMap::default();
        for event in batch.drain(..) {
            match event {
                Event::Flush(ack) => acks.push(ack),
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
                    None,
                    false,
                    now,
                ),
                Event::TaskRun {
                    flow_run,
                    task,
                    index,
                    state,
                    times,
                } => {
                    let key = RunKey::Task(flow_run, task, index);
                    let whole = state.state_type.is_terminal()
                        && !unwritten.contains_key(&key)
                        && !rows.contains(&key);
                    if whole {
                        let update = RunUpdate::new(&state, times, true);
                        let pack = packs.entry((flow_run, task)).or_default();
                        pack.push(&update.packed(index));
                    } else {
                        let synthesize = !rows.contains(&key);
                        fold(&mut unwritten, key, None, &state, times, synthesize, now);
                    }
                }
                other => others.push(other),
            }
        }
        let (mut as_rows, mut packed) = (Vec::new(), Vec::new());
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
                packed.push((run.update.created, *key));
            } else {
                as_rows.push(*key);
            }
        }
        // Packs list their runs in the order they were created.
        packed.sort_unstable_by_key(|&(created, key)| (created, key));
        for &(_, key) in &packed {
            if let RunKey::Task(flow_run, task, index) = key {
                let pack = packs.entry((flow_run, task)).or_default();
                pack.push(&unwritten[&key].update.packed(index));
            }
        }
        let due = Plan {
            others: &others,
            as_rows: &as_rows,
            unwritten: &unwritten,
            packs: &packs,
        };
        let idle = others.is_empty() && as_rows.is_empty() && packs.is_empty();
        let mut attempt = 0;
        while let Err(err) = if idle {
            Ok(())
        } else {
            write_batch(&mut store, &due)
        } {
            attempt += 1;
            // Another process may hold the lock past the busy timeout: try again a few times.
            if attempt < WRITE_ATTEMPTS && super::is_busy(&err) {
                std::thread::sleep(Duration::from_millis(100 * attempt));
                continue;
            }
            tracing::warn!(
                target: "prefecto.engine",
                "Run history: {} run(s) and {} other event(s) could not be written to {}: {err}",
                as_rows.len() + packs.values().map(Pack::runs).sum::<usize>(),
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
        for (_, key) in &packed {
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
    times: Option<TimesRow>,
    synthesize: bool,
    now: Instant,
) {
    match unwritten.entry(key) {
        std::collections::hash_map::Entry::Vacant(entry) => {
            entry.insert(Unwritten {
                info,
                update: RunUpdate::new(state, times, synthesize),
                first_seen: now,
            });
        }
        std::collections::hash_map::Entry::Occupied(mut entry) => {
            let run = entry.get_mut();
            if info.is_some() {
                run.info = info;
            }
            run.update.add(state, times);
        }
    }
}

/// A run's transitions since it was last written, folded into a single write.
struct RunUpdate {
    latest: StateRow,
    created: i64,
    start: Option<i64>,
    end: Option<i64>,
    run_count: i64,
    history: Vec<StateRow>,
    /// Seen whole at its end, with nothing but what its times imply: its
    /// history (Pending, Running, the end) is left for the reader to rebuild.
    implied_only: bool,
}

impl RunUpdate {
    /// The run as a pack holds it.
    fn packed(&self, index: u64) -> pack::Run<'_> {
        fn state(row: &StateRow) -> pack::RunState<'_> {
            pack::RunState {
                state_type: row.state_type,
                name: Cow::Borrowed(&*row.name),
                message: row.message.as_deref().map(Cow::Borrowed),
            }
        }
        pack::Run {
            index,
            created: self.created,
            start: self.start,
            end: self.end,
            run_count: self.run_count as u32,
            state: state(&self.latest),
            // Empty when implied: the reader rebuilds Pending, Running and the end.
            history: if self.implied_only {
                Vec::new()
            } else {
                self.history
                    .iter()
                    .map(|row| (state(row), row.micros))
                    .collect()
            },
        }
    }

    /// Its history as stored in a row: one JSON array per line.
    fn history_lines(&self) -> String {
        let mut lines = String::new();
        for state in &self.history {
            push_history_line(&mut lines, state);
        }
        lines
    }

    /// A run's update starting with `state`. With `synthesize`, the Pending
    /// and first Running states that `times` imply (and the engine did not
    /// send) open the history.
    fn new(state: &StateRow, times: Option<TimesRow>, synthesize: bool) -> Self {
        let mut update = RunUpdate {
            latest: state.clone(),
            created: times.map_or(state.micros, |t| t.created),
            start: None,
            end: None,
            run_count: 0,
            history: Vec::new(),
            implied_only: false,
        };
        if let (Some(times), true, true) = (times, synthesize, state.state_type.is_terminal()) {
            // The common case, a run that started and ended between two writes.
            update.implied_only = true;
            update.run_count = i64::from(times.run_count);
            update.start = times.started;
            update.end = Some(state.micros);
            return update;
        }
        if let (Some(times), true) = (times, synthesize) {
            update
                .history
                .push(implied(StateType::Pending, "Pending", times.created));
            match times.started {
                Some(started)
                    if !(state.state_type == StateType::Running && state.micros == started) =>
                {
                    update
                        .history
                        .push(implied(StateType::Running, "Running", started));
                }
                _ => {}
            }
        }
        update.add(state, times);
        update
    }

    fn add(&mut self, state: &StateRow, times: Option<TimesRow>) {
        debug_assert!(!self.implied_only, "a run seen whole gets no more states");
        match times {
            // The engine's count is the whole run's.
            Some(times) => {
                self.run_count = i64::from(times.run_count);
                if self.start.is_none() {
                    self.start = times.started;
                }
            }
            None if state.state_type == StateType::Running => {
                self.start.get_or_insert(state.micros);
                self.run_count += 1;
            }
            None => {}
        }
        if state.state_type.is_terminal() {
            self.end = Some(state.micros);
        }
        self.history.push(state.clone());
        self.latest = state.clone();
    }
}

fn implied(state_type: StateType, name: &'static str, micros: i64) -> StateRow {
    StateRow {
        state_type,
        name: Cow::Borrowed(name),
        message: None,
        micros,
    }
}

/// `"TYPE","Name",message-or-null`: a state, as both line shapes hold it.
fn push_state(out: &mut String, state: &StateRow) {
    out.push('"');
    out.push_str(state.state_type.as_api_str());
    out.push_str("\",");
    push_json_str(out, &state.name);
    out.push(',');
    push_json_opt(out, state.message.as_deref());
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
    history.push('[');
    push_state(history, state);
    history.push(',');
    history.push_str(itoa::Buffer::new().format(state.micros));
    history.push_str("]\n");
}

/// What one transaction writes.
struct Plan<'a> {
    /// Logs and results.
    others: &'a [Event],
    /// Flow runs, and task runs written as rows.
    as_rows: &'a [RunKey],
    unwritten: &'a FastMap<RunKey, Unwritten>,
    /// Finished task runs, packed by flow run and task.
    packs: &'a FastMap<(Uuid, &'static str), Pack>,
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
    for ((flow_run, task), pack) in plan.packs {
        tx.prepare_cached(
            "INSERT INTO task_run_packs (flow_run_id, task, runs, body) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            &*flow_run
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
            *task,
            pack.runs() as i64,
            pack.body()
        ])?;
    }
    tx.commit()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum RunKey {
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
