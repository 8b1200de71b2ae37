//! Where the engine leaves history events for the writer thread.
//!
//! A map of 100,000 quick task runs makes 100,000 events in a fraction of a
//! second. Sent one by one, each would be a channel operation and, whenever
//! the writer had caught up and gone to sleep, a system call to wake it: that
//! cost more than the engine's own work per run. So events wait in shards,
//! picked by task run, and travel to the writer a few hundred at a time. One
//! run's events always take the same shard, and a shard's batches are sent
//! under its lock, so the writer sees each run's events in order.
//!
//! The shards also hold the task runs that are running: a quick run is
//! written once, at its end, and the writer looks here for runs that have
//! been going long enough to be shown as they stand. A run that ends here
//! with nothing of it sent to the writer yet (it was quick, and not retried)
//! is packed here as it ends (`pack.rs`), and its pack goes to the writer
//! whole: building, sending and sorting an event for each such run cost the
//! writer more than the SQLite it then wrote. A map's lanes keep their quick
//! runs' ends themselves (`lane_pack.rs`) and hand them here in lists, which
//! go to the writer a few at a time, for it to pack (`plain_ends.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::backlog::{Backlog, LANE_ENDS, PARCEL};
use super::event::{Event, RunKey, TimesRow};
use super::pack::{Pack, Packs, PlainEnd, same_task};
use super::running_runs::{RunningRun, RunningRuns};
use crate::state::State;

/// The writer's and outbox's maps are keyed by run and touched for every
/// transition: a fast hash matters here, and the keys are our own, not an
/// attacker's.
pub(super) type FastHash = foldhash::fast::RandomState;
pub(super) type FastMap<K, V> = HashMap<K, V, FastHash>;

/// A shard sends a pack once it holds this many bytes (3,300 to 8,200
/// quick runs, a row of the history).
pub(super) const PACK_BYTES: usize = 16 * 1024;
/// How many packs (flow run and task) a shard keeps open at once.
const OPEN_PACKS: usize = 4;
/// Lanes' plain ends go to the writer once this many runs' wait (four full
/// lists): each send may wake the writer, which cost the sending lane about
/// 10 µs on the bench's VM (perf: 5% of a window map's lane, sending each
/// list). Counted in runs, not lists: a stream's lanes pause often and hand
/// over short lists (52 runs on average for an async stream, 466 for a sync
/// one), and sent four lists at a time they woke the writer five to seven
/// times as often as a collecting map's lanes did (its voluntary context
/// switches, 30 maps of 100,000: 5,039-6,818 against 967).
const ENDED_RUNS_PER_PARCEL: usize = 4 * LANE_ENDS;
/// Or once this many lists wait: lists of different flow runs or tasks are
/// not merged.
const ENDED_LISTS_PER_PARCEL: usize = 8;

#[derive(Default)]
struct Shard {
    running: RunningRuns,
    events: Vec<Event>,
    /// The ends of quick runs, packed by flow run and task.
    packs: Packs,
    /// Task runs not ended some of whose transitions went to the writer
    /// (a wait for a concurrency slot, a retry): their ends go there too.
    at_writer: HashSet<RunKey, FastHash>,
}

impl Shard {
    /// Where the open pack of `task`'s runs in `flow_run` is: most often
    /// the one used last. Opening one past the limit sends the oldest.
    fn open_pack(&mut self, flow_run: Uuid, task: &'static str) -> usize {
        let same = |(at_flow_run, at_task): &(Uuid, &'static str)| {
            *at_flow_run == flow_run && same_task(at_task, task)
        };
        let found = match self.packs.last() {
            Some((at, _)) if same(at) => Some(self.packs.len() - 1),
            _ => self.packs.iter().position(|(at, _)| same(at)),
        };
        found.unwrap_or_else(|| {
            if self.packs.len() == OPEN_PACKS {
                let oldest = self.packs.remove(0);
                self.send_pack(oldest);
            }
            self.packs
                .push(((flow_run, task), Pack::with_capacity(PACK_BYTES)));
            self.packs.len() - 1
        })
    }

    /// A transition of `key` goes to the writer: its end will too, unless
    /// this is its end.
    fn note_at_writer(&mut self, key: RunKey, ended: bool) {
        if !ended {
            self.at_writer.insert(key);
        } else if !self.at_writer.is_empty() {
            self.at_writer.remove(&key);
        }
    }

    /// Puts a pack among the events to send.
    fn send_pack(&mut self, ((flow_run, task), pack): ((Uuid, &'static str), Pack)) {
        self.events.push(Event::Packed {
            flow_run,
            task,
            pack,
        });
    }
}

pub(super) struct Outbox {
    shards: Box<[Mutex<Shard>]>,
    sender: Sender<Vec<Event>>,
    backlog: Arc<Backlog>,
    /// Lanes' lists of plain ends (`Event::Ended`) not yet sent.
    ended: Mutex<Vec<Event>>,
}

impl Outbox {
    pub fn new(sender: Sender<Vec<Event>>, backlog: Arc<Backlog>) -> Self {
        // Enough shards that engine threads rarely meet on one.
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (threads * 4).next_power_of_two().max(16);
        Outbox {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            sender,
            backlog,
            ended: Mutex::default(),
        }
    }

    fn shard(&self, index: u64) -> MutexGuard<'_, Shard> {
        let shard = &self.shards[index as usize & (self.shards.len() - 1)];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that a task run (`key`, numbered `index`) started, at
    /// `started` (µs): it is written when it ends, or when it lingers.
    pub fn running(&self, key: RunKey, index: u64, created: i64, started: i64) {
        let run = RunningRun {
            created,
            started,
            written: false,
        };
        self.shard(index).running.insert(key, run);
    }

    /// Queues an event of the run numbered `index` (0 for the flow's own)
    /// that is not a task run's transition: a log line, a run's upstream.
    pub fn push(&self, index: u64, event: Event) {
        let sent = {
            let mut shard = self.shard(index);
            shard.events.push(event);
            self.hand_over_if_full(&mut shard)
        };
        self.backlog.wait_if_full(sent);
    }

    /// Queues a transition of the task run `key`, numbered `index`; `ended`
    /// if it is the run's last.
    pub fn push_transition(&self, key: RunKey, index: u64, event: Event, ended: bool) {
        let sent = {
            let mut shard = self.shard(index);
            shard.running.take(&key);
            shard.note_at_writer(key, ended);
            shard.events.push(event);
            self.hand_over_if_full(&mut shard)
        };
        self.backlog.wait_if_full(sent);
    }

    /// The task run `key`, numbered `index`, ended in `end`: packed here if
    /// nothing of it went to the writer yet, else queued as its transition.
    pub fn push_end(&self, key: RunKey, index: u64, end: &State, times: TimesRow) {
        let RunKey::Task(flow_run, task, _) = key else {
            return;
        };
        let sent = {
            let mut shard = self.shard(index);
            // Not noted running at all is the common case: a run whose
            // recorders heard its end only (`Recorder::wants_running`).
            let lingered = shard.running.take(&key).is_some_and(|run| run.written);
            let at_writer = !shard.at_writer.is_empty() && shard.at_writer.contains(&key);
            if lingered || at_writer {
                shard.note_at_writer(key, true);
                shard.events.push(Event::TaskRun {
                    flow_run,
                    task,
                    index,
                    state: end.clone(),
                    times: Some(times),
                });
            } else {
                let at = shard.open_pack(flow_run, task);
                let pack = &mut shard.packs[at].1;
                pack.push_ended(index, (times.created, times.started, times.run_count), end);
                if pack.body().len() >= PACK_BYTES {
                    let full = shard.packs.remove(at);
                    shard.send_pack(full);
                    // At once: the writer packed nothing while it filled.
                    let sent = self.hand_over(&mut shard);
                    drop(shard);
                    self.backlog.wait_if_full(sent);
                    return;
                }
            }
            self.hand_over_if_full(&mut shard)
        };
        self.backlog.wait_if_full(sent);
    }

    /// Sends a lane's plain ends of `task` in `flow_run` to the writer, to
    /// pack there, with the next few lanes' lists (or at the next drain):
    /// nothing else of those runs went to the writer or waits in a shard
    /// (`lane_pack.rs`), so they need no shard's order.
    ///
    /// A short list is appended to a waiting list of the same runs with
    /// room for it, and goes back to the spares: the writer then gets full
    /// lists, whoever made them.
    pub fn send_ended(&self, flow_run: Uuid, task: &'static str, mut ends: Vec<PlainEnd>) {
        let parcel = {
            let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
            let room = ended.iter_mut().rev().find_map(|event| match event {
                Event::Ended {
                    flow_run: at_flow_run,
                    task: at_task,
                    ends: at,
                } if *at_flow_run == flow_run
                    && same_task(at_task, task)
                    && at.len() + ends.len() <= at.capacity() =>
                {
                    Some(event)
                }
                _ => None,
            });
            match room {
                Some(event) => {
                    // Counted as the writer will count it: by the list's new weight.
                    let before = event.weight();
                    if let Event::Ended { ends: at, .. } = event {
                        at.append(&mut ends);
                    }
                    self.backlog.queue(event.weight() - before);
                    self.backlog.give_back_ends(ends);
                }
                None => {
                    let event = Event::Ended {
                        flow_run,
                        task,
                        ends,
                    };
                    self.backlog.queue(event.weight());
                    ended.push(event);
                }
            }
            let runs: usize = ended
                .iter()
                .map(|event| match event {
                    Event::Ended { ends, .. } => ends.len(),
                    _ => 0,
                })
                .sum();
            if runs < ENDED_RUNS_PER_PARCEL && ended.len() < ENDED_LISTS_PER_PARCEL {
                return;
            }
            std::mem::take(&mut *ended)
        };
        let weight = parcel.iter().map(Event::weight).sum();
        // A send fails only if the writer thread has died; it said why.
        let _ = self.sender.send(parcel);
        self.backlog.wait_if_full(weight);
    }

    /// A list for a lane's plain ends: one the writer has emptied, or new.
    pub fn empty_ends(&self) -> Vec<PlainEnd> {
        self.backlog.empty_ends()
    }

    fn hand_over_if_full(&self, shard: &mut Shard) -> usize {
        match shard.events.len() < PARCEL {
            true => 0,
            false => self.hand_over(shard),
        }
    }

    /// Sends an event to the writer at once, ahead of what waits in the
    /// shards: for events whose order against task runs' does not matter
    /// (flow-run states, results, and the flush marker, sent after a drain).
    pub fn send_now(&self, event: Event) {
        self.backlog.queue(1);
        // A send fails only if the writer thread has died; it said why.
        let _ = self.sender.send(vec![event]);
        self.backlog.wait_if_full(1);
    }

    /// Hands every shard's events and packs, and the lanes' lists of plain
    /// ends, to the writer.
    pub fn drain(&self) {
        let ended = std::mem::take(&mut *self.ended.lock().unwrap_or_else(|p| p.into_inner()));
        if !ended.is_empty() {
            let _ = self.sender.send(ended);
        }
        for index in 0..self.shards.len() {
            let mut shard = self.shard(index as u64);
            for open in std::mem::take(&mut shard.packs) {
                shard.send_pack(open);
            }
            self.hand_over(&mut shard);
        }
    }

    /// Sends a shard's events, under its lock: a later batch of the same
    /// shard cannot overtake it. Returns their weight.
    fn hand_over(&self, shard: &mut Shard) -> usize {
        if shard.events.is_empty() {
            return 0;
        }
        let parcel = std::mem::replace(&mut shard.events, self.backlog.empty_parcel());
        let weight = parcel.iter().map(Event::weight).sum();
        self.backlog.queue(weight);
        let _ = self.sender.send(parcel);
        weight
    }

    /// Runs started at least `linger` ago and not yet written: marked written.
    pub fn lingering(&self, cutoff_micros: i64) -> Vec<(RunKey, i64, i64)> {
        let mut found = Vec::new();
        for index in 0..self.shards.len() {
            let mut shard = self.shard(index as u64);
            for (key, run) in shard.running.iter_mut() {
                if !run.written && run.started <= cutoff_micros {
                    run.written = true;
                    found.push((*key, run.created, run.started));
                }
            }
        }
        found
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        // The writer goes on until the channel closes: it gets the rest.
        self.drain();
    }
}

#[cfg(test)]
mod tests;
