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
use super::backlog::Backlog;
use super::event::{Event, FlowRunNames, RunKey, StateRow, TimesRow, micros};
use super::fold::{RunUpdate, Unwritten, fold};
use super::full_disk::{Reserve, Waiting, is_full};
use super::outbox::{FastHash, FastMap, Outbox};
use super::pack::{Pack, Packs};
use super::plain_ends::{WriterPacks, pack_plain_ends};
use super::sql::{Plan, write_batch};
use crate::state::StateType;

/// At most this many events go into one transaction (a lane's plain end
/// weighs about a third of one: some 13,000 quick runs). A flow run's end
/// waits for its history to be written: the larger a batch, the more of a
/// map's writing comes after its runs instead of alongside them. At 50,000
/// a whole 100,000-run map was written after it ended (history on 1.35-1.46x
/// off, window/async); at 4,096, 1.17-1.21x; at 1,024 no better, and noisier.
const MAX_BATCH: usize = 4_096;
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

/// How long a flush waits for a full disk to take the flow run's records
/// before it gives up on them (they keep waiting in memory meanwhile).
const FLUSH_WAIT_ON_FULL_DISK: Duration = Duration::from_secs(10);

pub(super) fn write_loop(
    mut store: Store,
    parcels: Receiver<Vec<Event>>,
    backlog: &Backlog,
    outbox: &Weak<Outbox>,
    reserve_mb: u64,
) {
    struct Gone<'a>(&'a Backlog);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            self.0.writer_gone();
        }
    }
    let _gone = Gone(backlog);
    // A batch's dirty pages must fit the cache, or SQLite spills them
    // mid-transaction and reads them back. 2 MiB (SQLite's default) holds
    // the largest: 13,000 quick runs pack into 26-65 KB, 4,096 log lines take
    // ~800 KB. A bigger cache only kept old pages, grown a page at a time
    // (16 MiB: a 100,000-run map's new pages cost the writer ~125 `mprotect`
    // calls and as many page faults, and 15 MiB more peak RSS; strace and
    // `batch_task --rss 'map window, async body' 100000 --history`).
    let _ = store.conn.pragma_update(None, "cache_size", -2048);
    // Runs are held until they end (or linger), so that most task runs are
    // written once, whole, instead of once per transition.
    let mut unwritten: FastMap<RunKey, Unwritten> = FastMap::default();
    // Task runs written as rows while they were still going: they stay rows.
    // Every other task run is written once, finished, into a pack.
    let mut rows: HashSet<RunKey, FastHash> = HashSet::default();
    // Parcels as they came: copying their events into one list cost about
    // half as much as packing the runs (a parcel is 256 events of ~130 bytes).
    let mut batch: Vec<Vec<Event>> = Vec::new();
    let mut writer_packs = WriterPacks::default();
    let mut reserve = Reserve::keep(store.path(), reserve_mb);
    let mut waiting = Waiting::default();
    // Flushes answered once their records are written, or the disk has
    // stayed full past the flush wait.
    let mut pending_acks: Vec<(mpsc::SyncSender<()>, Instant)> = Vec::new();
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
        let weight = |parcel: &[Event]| parcel.iter().map(Event::weight).sum::<usize>();
        // Finished task runs seen whole in this batch go straight into packs
        // (most come packed by the outbox, or as lanes' plain ends).
        let mut batch_packs: FastMap<(Uuid, &'static str), Pack> = FastMap::default();
        // Packs to write as they are: the outbox's, and the writer's own once full.
        let mut ready_packs = Packs::new();
        let mut first = first;
        let mut flushing = closing || !pending_acks.is_empty() || is_flush(&first);
        let mut batch_weight = weight(&first);
        pack_plain_ends(
            &mut first,
            &mut batch_packs,
            &mut ready_packs,
            &mut writer_packs,
            backlog,
        );
        batch.push(first);
        while batch_weight < MAX_BATCH && !flushing {
            let wait = deadline.saturating_duration_since(Instant::now());
            match parcels.recv_timeout(wait) {
                Ok(mut parcel) => {
                    flushing = is_flush(&parcel);
                    batch_weight += weight(&parcel);
                    // Packed as they come, not once gathered: most of a map's
                    // runs are then packed by the time the map ends.
                    pack_plain_ends(
                        &mut parcel,
                        &mut batch_packs,
                        &mut ready_packs,
                        &mut writer_packs,
                        backlog,
                    );
                    batch.push(parcel);
                }
                Err(_) => break,
            }
        }
        backlog.taken(batch_weight);
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
        for event in batch.iter_mut().flat_map(|parcel| parcel.drain(..)) {
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
                    let whole = state.is_terminal()
                        && !unwritten.contains_key(&key)
                        && !rows.contains(&key);
                    if whole {
                        let pack = batch_packs.entry((flow_run, task)).or_default();
                        match times {
                            Some(times) => {
                                let numbers = (times.created, times.started, times.run_count);
                                pack.push_ended(index, numbers, &state);
                            }
                            // Never announced: stopped before it was submitted.
                            None => {
                                let update = RunUpdate::new(&StateRow::of(&state), None, true);
                                pack.push(&update.packed(index));
                            }
                        }
                    } else {
                        let synthesize = !rows.contains(&key);
                        let row = StateRow::of(&state);
                        fold(&mut unwritten, key, None, &row, times, synthesize, now);
                    }
                }
                Event::Packed {
                    flow_run,
                    task,
                    pack,
                } => ready_packs.push(((flow_run, task), pack)),
                other => others.push(other),
            }
        }
        for parcel in batch.drain(..) {
            backlog.give_back(parcel);
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
                let pack = batch_packs.entry((flow_run, task)).or_default();
                pack.push(&unwritten[&key].update.packed(index));
            }
        }
        let mut packs: Packs = batch_packs.into_iter().collect();
        packs.append(&mut ready_packs);
        let due = Plan {
            others: &others,
            as_rows: &as_rows,
            unwritten: &unwritten,
            packs: &packs,
        };
        let idle = others.is_empty() && as_rows.is_empty() && packs.is_empty();
        let now = Instant::now();
        // The disk full a moment ago: this batch waits, untried (`None`).
        let tried = !waiting.stalled() || waiting.due(now);
        let result = tried.then(|| {
            waiting.write(&mut store).and_then(|()| {
                if idle {
                    Ok(())
                } else {
                    write_with_room(&mut store, &due, &mut reserve)
                }
            })
        });
        let mut keep_rows = false;
        match result {
            Some(Ok(())) => {
                if waiting.stalled() {
                    tracing::info!(
                        target: "prefecto.engine",
                        "Run history: {} has room again; the waiting records are written.",
                        store.path().display()
                    );
                }
                waiting.recovered();
            }
            Some(Err(err)) if !is_full(&err) => tracing::warn!(
                target: "prefecto.engine",
                "Run history: {} run(s) and {} other event(s) could not be written to {}: {err}",
                as_rows.len() + packs.iter().map(|(_, pack)| pack.runs()).sum::<usize>(),
                others.len(),
                store.path().display()
            ),
            // Untried, or the disk is full.
            _ => {
                if !waiting.stalled() {
                    tracing::warn!(
                        target: "prefecto.engine",
                        "Run history: the disk holding {} is full; records wait in memory and are written once space returns.",
                        store.path().display()
                    );
                }
                // Rows stay unwritten (and due); packs and other events wait.
                keep_rows = true;
                waiting.hold(std::mem::take(&mut others), std::mem::take(&mut packs));
                if tried {
                    waiting.failed(now);
                }
            }
        }
        if keep_rows {
            as_rows.clear();
        }
        // Written, or held by the full disk's wait (which took them).
        writer_packs.recycle(std::mem::take(&mut packs));
        for key in as_rows.drain(..) {
            if let Some(run) = unwritten.remove(&key)
                && matches!(key, RunKey::Task(..))
            {
                if run.update.latest.state_type.is_terminal() {
                    rows.remove(&key);
                } else {
                    rows.insert(key);
                }
            }
        }
        for (_, key) in &packed {
            unwritten.remove(key);
        }
        // A flush answers once its records are in, or once the disk has
        // stayed full for the flush wait: the flow run does not hang on it.
        let deadline = Instant::now() + FLUSH_WAIT_ON_FULL_DISK;
        pending_acks.extend(acks.into_iter().map(|ack| (ack, deadline)));
        let all_written = !waiting.stalled();
        let now = Instant::now();
        pending_acks.retain(|(ack, deadline)| {
            if all_written || now >= *deadline {
                if !all_written {
                    let (runs, lost) = waiting.counts();
                    tracing::warn!(
                        target: "prefecto.engine",
                        "Run history: the disk holding {} is still full after {} s; {runs} task run(s) and the flow run's latest state wait in memory{}. Should the process end first, the history shows the flow run's end as unrecorded.",
                        store.path().display(),
                        FLUSH_WAIT_ON_FULL_DISK.as_secs(),
                        if lost > 0 { format!(", {lost} task run(s) could not wait and are lost") } else { String::new() }
                    );
                }
                let _ = ack.send(());
                false
            } else {
                true
            }
        });
        if !pending_acks.is_empty() {
            // Try again soon rather than at the next parcel.
            next_fetch = next_fetch.min(Instant::now() + Duration::from_millis(250));
        }
    }
}

/// Writes a batch, trying again while another process holds the lock, and
/// once more after giving the reserve's space back when the disk is full.
fn write_with_room(
    store: &mut Store,
    plan: &Plan<'_>,
    reserve: &mut Reserve,
) -> Result<(), rusqlite::Error> {
    let mut attempt = 0;
    loop {
        match write_batch(store, plan) {
            Ok(()) => return Ok(()),
            // Another process may hold the lock past the busy timeout.
            Err(err) if super::is_busy(&err) && attempt + 1 < WRITE_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 * attempt));
            }
            Err(err) if is_full(&err) && reserve.release() => {
                tracing::warn!(
                    target: "prefecto.engine",
                    "Run history: the disk holding {} is full; its reserve was given up to keep recording. Free some space.",
                    store.path().display()
                );
            }
            Err(err) => return Err(err),
        }
    }
}
