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
//! writer more than the SQLite it then wrote.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

use super::backlog::{Backlog, PARCEL};
use super::event::{Event, RunKey, TimesRow};
use super::pack::{Pack, Packs, same_task};
use super::running_runs::{RunningRun, RunningRuns};
use crate::state::State;

/// The writer's and outbox's maps are keyed by run and touched for every
/// transition: a fast hash matters here, and the keys are our own, not an
/// attacker's.
pub(super) type FastHash = foldhash::fast::RandomState;
pub(super) type FastMap<K, V> = HashMap<K, V, FastHash>;

/// A shard sends a pack once it holds this many bytes (about 1,300 quick
/// runs, a row of the history).
const PACK_BYTES: usize = 16 * 1024;
/// How many packs (flow run and task) a shard keeps open at once.
const OPEN_PACKS: usize = 4;

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

    /// Adds the ends of quick runs of `task` in `flow_run`, packed
    /// elsewhere (by a lane: `lane_pack.rs`), to the open pack of the
    /// shard of their run numbered `index`: one lock and look-up for the
    /// lot, and the writer still gets full packs as the map goes.
    pub fn append_pack(&self, index: u64, flow_run: Uuid, task: &'static str, ends: &Pack) {
        let sent = {
            let mut shard = self.shard(index);
            let at = shard.open_pack(flow_run, task);
            let pack = &mut shard.packs[at].1;
            pack.append(ends);
            if pack.body().len() < PACK_BYTES {
                return;
            }
            let full = shard.packs.remove(at);
            shard.send_pack(full);
            self.hand_over(&mut shard)
        };
        self.backlog.wait_if_full(sent);
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

    /// Hands every shard's events and packs to the writer.
    pub fn drain(&self) {
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
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn log(thread: u64, seq: usize) -> Event {
        Event::Log {
            flow_run: uuid::Uuid::nil(),
            task_run: Some(("t", thread)),
            level: "INFO",
            logger: "test",
            message: seq.to_string(),
            micros: 0,
        }
    }

    /// What the writer gets for each task run's end, by run number: `true`
    /// for a run packed by the outbox, `false` for one sent as its transition.
    fn ends(receiver: &mpsc::Receiver<Vec<Event>>) -> Vec<(u64, bool)> {
        let mut ends = Vec::new();
        for event in receiver.try_iter().flatten() {
            match event {
                Event::Packed { pack, .. } => {
                    let runs = super::super::pack::unpack(pack.body()).unwrap();
                    ends.extend(runs.iter().map(|run| (run.index, true)));
                }
                Event::TaskRun { index, state, .. } if state.is_terminal() => {
                    ends.push((index, false))
                }
                _ => {}
            }
        }
        ends.sort_unstable();
        ends
    }

    #[test]
    fn only_a_run_the_writer_has_nothing_of_is_packed_at_its_end() {
        let (sender, receiver) = mpsc::channel();
        let outbox = Outbox::new(sender, Arc::new(Backlog::default()));
        let key = |index| RunKey::Task(uuid::Uuid::nil(), "t", index);
        let times = TimesRow {
            created: 10,
            started: Some(20),
            run_count: 1,
        };
        let done = State::completed();
        // 1: quick.
        outbox.running(key(1), 1, 10, 20);
        outbox.push_end(key(1), 1, &done, times);
        // 2: an earlier transition went to the writer (before it started).
        let waiting = Event::TaskRun {
            flow_run: uuid::Uuid::nil(),
            task: "t",
            index: 2,
            state: State::awaiting_retry("later"),
            times: Some(times),
        };
        outbox.push_transition(key(2), 2, waiting, false);
        outbox.running(key(2), 2, 10, 20);
        outbox.push_end(key(2), 2, &done, times);
        // 3: it lingered, and was written as it stood.
        outbox.running(key(3), 3, 10, 20);
        assert_eq!(outbox.lingering(i64::MAX).len(), 1);
        outbox.push_end(key(3), 3, &done, times);
        // 4: never noted as running (its recorders heard only its end).
        outbox.push_end(key(4), 4, &done, times);
        // 5: quick, after 2's end: the writer has nothing of it.
        outbox.running(key(2), 2, 10, 20);
        outbox.push_end(key(2), 2, &done, times);
        outbox.drain();
        let expected = [(1, true), (2, false), (2, true), (3, false), (4, true)];
        assert_eq!(ends(&receiver), expected);
    }

    #[test]
    fn a_shard_sends_a_pack_once_full_and_keeps_a_few_open() {
        let (sender, receiver) = mpsc::channel();
        let outbox = Outbox::new(sender, Arc::new(Backlog::default()));
        let times = TimesRow {
            created: 10,
            started: Some(20),
            run_count: 1,
        };
        // One shard (index 0 and multiples of the shard count), many tasks.
        let step = outbox.shards.len() as u64;
        const TASKS: [&str; OPEN_PACKS + 1] = ["a", "b", "c", "d", "e"];
        for (n, task) in TASKS.iter().enumerate() {
            let key = RunKey::Task(uuid::Uuid::nil(), task, n as u64 * step);
            outbox.running(key, n as u64 * step, 10, 20);
            outbox.push_end(key, n as u64 * step, &State::completed(), times);
        }
        // The fifth task's pack sent the first's, still in the shard's
        // events (not a full parcel).
        assert!(receiver.try_recv().is_err());
        outbox.drain();
        let sent: Vec<&str> = receiver
            .try_iter()
            .flatten()
            .filter_map(|event| match event {
                Event::Packed { task, .. } => Some(task),
                _ => None,
            })
            .collect();
        assert_eq!(sent, TASKS);
        // A full pack goes without a drain.
        let mut runs = 0;
        let parcel = loop {
            if let Ok(parcel) = receiver.try_recv() {
                break parcel;
            }
            let index = runs * step;
            let key = RunKey::Task(uuid::Uuid::nil(), "a", index);
            outbox.running(key, index, 10, 20);
            outbox.push_end(key, index, &State::completed(), times);
            runs += 1;
            assert!(runs < 100_000, "no pack was sent");
        };
        let [Event::Packed { pack, .. }] = &parcel[..] else {
            panic!("one pack");
        };
        assert_eq!(pack.runs() as u64, runs);
        assert!(pack.body().len() >= PACK_BYTES);
    }

    #[test]
    fn a_parcel_the_writer_gives_back_is_filled_again() {
        let (sender, receiver) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let outbox = Outbox::new(sender, backlog.clone());
        for seq in 0..PARCEL {
            outbox.push(0, log(0, seq));
        }
        let first = receiver.try_recv().expect("a full parcel is sent");
        assert_eq!(first.len(), PARCEL);
        let address = first.as_ptr();
        backlog.give_back(first);
        // The shard took a parcel when it sent its full one: the next
        // full parcel is sent in the one given back.
        for seq in 0..2 * PARCEL {
            outbox.push(0, log(0, seq));
        }
        let _second = receiver.try_recv().expect("a second parcel");
        let third = receiver.try_recv().expect("a third parcel");
        assert_eq!(third.as_ptr(), address);
        // `send_now`'s one-event parcels are not kept.
        outbox.send_now(log(0, 0));
        backlog.give_back(receiver.try_recv().unwrap());
        assert_eq!(backlog.spare_parcels(), 0);
    }

    #[test]
    fn every_event_arrives_once_and_each_runs_in_order_while_shards_are_drained() {
        let (sender, receiver) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let outbox = Arc::new(Outbox::new(sender, backlog.clone()));
        const THREADS: u64 = 4;
        const EACH: usize = 1000;
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let outbox = &outbox;
                scope.spawn(move || {
                    for seq in 0..EACH {
                        outbox.push(thread, log(thread, seq));
                    }
                });
            }
            // The writer's periodic fetch, racing the pushes.
            scope.spawn(|| {
                for _ in 0..200 {
                    outbox.drain();
                    std::thread::yield_now();
                }
            });
        });
        drop(outbox);
        let mut next = [0usize; THREADS as usize];
        let mut total = 0;
        for event in receiver.iter().flatten() {
            let Event::Log {
                task_run: Some((_, thread)),
                message,
                ..
            } = event
            else {
                panic!("only logs were sent");
            };
            assert_eq!(message, next[thread as usize].to_string());
            next[thread as usize] += 1;
            total += 1;
        }
        assert_eq!(total, THREADS as usize * EACH);
        assert_eq!(backlog.queued(), total);
    }
}
