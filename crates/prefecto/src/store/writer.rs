//! The writer thread: it takes the events the outbox hands it, gathers them
//! for a moment, folds each run's transitions together and writes what is
//! due in one transaction.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Weak;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::Store;
use super::event::{Event, FlowRunNames, RunKey, StateRow, TimesRow, micros};
use super::fold::{RunUpdate, Unwritten, fold};
use super::outbox::{Backlog, FastHash, FastMap, Outbox};
use super::pack::Pack;
use super::sql::{Plan, write_batch};
use crate::state::StateType;

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

pub(super) fn write_loop(
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
                    Some(FlowRunNames { name, flow }),
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
