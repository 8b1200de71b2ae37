//! The run history as the engine sees it: a [`Recorder`] that queues every
//! transition and log line for the writer thread, and the [`ResultStore`]
//! of cached task results.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::params;

use super::backlog::Backlog;
use super::event::{Event, RunKey, StateRow, TimesRow, micros};
use super::lane_pack::LanePack;
use super::outbox::Outbox;
use super::writer::write_loop;
use super::{Store, StoreError};
use crate::recorder::{EndBatch, FlowRunRef, LogEvent, Recorder, TransitionEvent};
use crate::result_store::ResultStore;

/// Records flow runs into the SQLite run history. Installed by default.
pub struct HistoryRecorder {
    outbox: Arc<Outbox>,
    path: std::path::PathBuf,
    /// A connection of its own for cache look-ups, opened on first use.
    reader: std::sync::Mutex<Option<Store>>,
}

impl HistoryRecorder {
    /// Opens the database at `path` and starts the writer thread, with the
    /// default reserve against a full disk.
    ///
    /// ```
    /// let home = std::env::temp_dir().join(format!("prefecto-doc-recorder-{}", std::process::id()));
    /// let history = prefecto::store::HistoryRecorder::start(&home.join("history.db")).unwrap();
    /// assert!(history.path().ends_with("history.db"));
    /// # // Flushed first: the writer makes the reserve file as it starts.
    /// # history.flush(); drop(history); let _ = std::fs::remove_dir_all(&home);
    /// ```
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        Self::start_with_reserve(path, crate::Settings::default().history_reserve_mb)
    }

    /// As [`HistoryRecorder::start`], keeping `reserve_mb` MiB in a file
    /// beside the database (`<database>.reserve`), given up when the disk
    /// fills so that the runs going on are still recorded; 0 keeps none.
    ///
    /// ```
    /// let home = std::env::temp_dir().join(format!("prefecto-doc-reserve-{}", std::process::id()));
    /// let history = prefecto::store::HistoryRecorder::start_with_reserve(&home.join("history.db"), 0).unwrap();
    /// history.flush();
    /// assert!(!home.join("history.db.reserve").exists());
    /// # drop(history); let _ = std::fs::remove_dir_all(&home);
    /// ```
    pub fn start_with_reserve(path: &Path, reserve_mb: u64) -> Result<Self, StoreError> {
        let store = Store::open(path)?;
        let (sender, receiver) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let outbox = Arc::new(Outbox::new(sender, backlog.clone()));
        let writer_outbox = Arc::downgrade(&outbox);
        // The writer lives as long as the recorder: every flow run flushes
        // before it returns, so nothing waits for it at exit.
        std::thread::Builder::new()
            .name("prefecto-history".into())
            .spawn(move || write_loop(store, receiver, &backlog, &writer_outbox, reserve_mb))
            .map_err(StoreError::WriterThread)?;
        Ok(HistoryRecorder {
            outbox,
            path: path.to_path_buf(),
            reader: std::sync::Mutex::new(None),
        })
    }

    /// The database file it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blocks until everything recorded so far is committed.
    pub fn flush(&self) {
        let (ack, done) = mpsc::sync_channel(1);
        self.outbox.drain();
        self.outbox.send_now(Event::Flush(ack));
        let _ = done.recv();
    }
}

/// The history keeps persisted results too, beside the runs that made them.
impl ResultStore for HistoryRecorder {
    fn get(&self, task: &str, cache_key: &str) -> Option<String> {
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

    fn put(
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
        if !event.upstream.is_empty() {
            self.outbox.send_now(Event::Upstream {
                flow_run: event.flow_run.id,
                task: run.task,
                index: run.index,
                upstream: event.upstream.to_vec(),
            });
        }
        let key = RunKey::Task(event.flow_run.id, run.task, run.index);
        // A run that starts and ends quickly is recorded once, at its end,
        // packed by the outbox: its Pending and Running follow from its times.
        if event.times.is_some() && state.is_pending() {
            return;
        }
        let times = event.times.as_ref().map(TimesRow::of);
        if let Some(times) = times {
            // Its first start (retries count on from 2).
            if state.is_running() && times.run_count == 1 {
                let started = times.started.unwrap_or(times.created);
                self.outbox.running(key, run.index, times.created, started);
                return;
            }
            if state.is_terminal() {
                self.outbox.push_end(key, run.index, state, times);
                return;
            }
        }
        let transition = Event::TaskRun {
            flow_run: event.flow_run.id,
            task: run.task,
            index: run.index,
            state: state.clone(),
            times,
        };
        let ended = state.is_terminal();
        self.outbox
            .push_transition(key, run.index, transition, ended);
    }

    /// A lane's quick runs are packed by the lane, and the pack goes to
    /// the writer whole.
    fn end_batch(&self, flow_run: FlowRunRef<'_>) -> Option<Box<dyn EndBatch>> {
        Some(Box::new(LanePack::new(self.outbox.clone(), flow_run.id)))
    }

    /// A run's Pending follows from its times, on its later transitions.
    fn wants_pending(&self) -> bool {
        false
    }

    /// So does the Running of a run that ends at once; a run seen still
    /// running is noted as running, and written as it stands if it lingers.
    fn wants_running(&self) -> bool {
        false
    }

    fn on_log(&self, event: &LogEvent<'_>) {
        let task_run = event.task_run.map(|r| (r.task, r.index));
        let log = Event::Log {
            flow_run: event.flow_run.id,
            task_run,
            level: crate::recorder::level_name(&event.level),
            logger: event.logger,
            message: event.message.to_string(),
            micros: micros(event.timestamp),
        };
        // With its task run's events: a shard's events keep their order.
        self.outbox
            .push(task_run.map_or(0, |(_, index)| index), log);
    }

    fn on_flow_run_end(&self, _flow_run: FlowRunRef<'_>) {
        self.flush();
    }
}
