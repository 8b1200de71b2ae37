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
//! been going long enough to be shown as they stand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::event::{Event, RunKey};
use super::running_runs::{RunningRun, RunningRuns};

/// The writer's and outbox's maps are keyed by run and touched for every
/// transition: a fast hash matters here, and the keys are our own, not an
/// attacker's.
pub(super) type FastHash = foldhash::fast::RandomState;
pub(super) type FastMap<K, V> = HashMap<K, V, FastHash>;

/// A shard hands its events over once it holds this many.
const PARCEL: usize = 256;
/// Past this many events waiting for the writer, the engine waits for it:
/// the engine can outpace the disk, and a long map must not queue without
/// bound (an event is about 150 bytes: 64k of them, ~10 MiB, keep the
/// writer's batches full without weighing on a streaming map's memory).
const MAX_QUEUED: usize = 1 << 16;
/// How many emptied parcels the writer keeps for the shards to fill again:
/// as many as may wait for it at once, so that a busy map makes none. A
/// fresh parcel is a ~40 KB allocation on an engine thread, freed on the
/// writer's, and glibc sweeps the engine thread's small free chunks into its
/// general bins when it frees one (`malloc_consolidate`: a tenth of the
/// writer's instructions per run). They stay allocated, at most what the
/// backlog's bound lets wait (~10 MiB), and only after a map that used them.
const SPARE_PARCELS: usize = MAX_QUEUED / PARCEL;

#[derive(Default)]
struct Shard {
    running: RunningRuns,
    events: Vec<Event>,
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

    /// Notes that a task run is running: it is written when it ends, or
    /// when it lingers.
    pub fn running(&self, key: RunKey, index: u64, run: RunningRun) {
        self.shard(index).running.insert(key, run);
    }

    /// Queues an event of the run numbered `index` (0 for the flow's own);
    /// `ended` names a run that is no longer running.
    pub fn push(&self, ended: Option<RunKey>, index: u64, event: Event) {
        let sent = {
            let mut shard = self.shard(index);
            if let Some(key) = ended {
                shard.running.remove(&key);
            }
            shard.events.push(event);
            if shard.events.len() < PARCEL {
                0
            } else {
                self.hand_over(&mut shard)
            }
        };
        self.backlog.wait_if_full(sent);
    }

    /// Sends an event to the writer at once, ahead of what waits in the
    /// shards: for events whose order against task runs' does not matter
    /// (flow-run states, results, and the flush marker, sent after a drain).
    pub fn send_now(&self, event: Event) {
        self.backlog.queued.fetch_add(1, Ordering::Relaxed);
        // A send fails only if the writer thread has died; it said why.
        let _ = self.sender.send(vec![event]);
        self.backlog.wait_if_full(1);
    }

    /// Hands every shard's events to the writer.
    pub fn drain(&self) {
        for index in 0..self.shards.len() {
            self.hand_over(&mut self.shard(index as u64));
        }
    }

    /// Sends a shard's events, under its lock: a later batch of the same
    /// shard cannot overtake it. Returns how many were sent.
    fn hand_over(&self, shard: &mut Shard) -> usize {
        if shard.events.is_empty() {
            return 0;
        }
        let parcel = std::mem::replace(&mut shard.events, self.backlog.empty_parcel());
        let count = parcel.len();
        self.backlog.queued.fetch_add(count, Ordering::Relaxed);
        let _ = self.sender.send(parcel);
        count
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

/// How many events wait for the writer, whether it is still there, and
/// the parcels it has emptied.
#[derive(Default)]
pub(super) struct Backlog {
    queued: AtomicUsize,
    writer_gone: AtomicBool,
    spare: Mutex<Vec<Vec<Event>>>,
}

impl Backlog {
    /// A parcel the writer has emptied, or a new one.
    fn empty_parcel(&self) -> Vec<Event> {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        spare.unwrap_or_else(|| Vec::with_capacity(PARCEL))
    }

    /// The writer has taken a parcel's events: the shards may fill it
    /// again. Parcels of other sizes (`send_now`'s) are dropped.
    pub fn give_back(&self, mut parcel: Vec<Event>) {
        if parcel.capacity() != PARCEL {
            return;
        }
        parcel.clear();
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < SPARE_PARCELS {
            spare.push(parcel);
        }
    }

    /// The writer took `count` events.
    pub fn taken(&self, count: usize) {
        self.queued.fetch_sub(count, Ordering::Relaxed);
    }

    /// The writer has stopped: nobody waits for it any more.
    pub fn writer_gone(&self) {
        self.writer_gone.store(true, Ordering::Relaxed);
    }

    /// Blocks the sending thread, if it just sent and too much is queued,
    /// until the writer has taken half: rare, and what keeps memory bounded
    /// when the engine outpaces the disk. Never called under a shard's lock,
    /// which the writer may need.
    fn wait_if_full(&self, sent: usize) {
        if sent == 0 || self.queued.load(Ordering::Relaxed) < MAX_QUEUED {
            return;
        }
        while self.queued.load(Ordering::Relaxed) > MAX_QUEUED / 2
            && !self.writer_gone.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
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

    #[test]
    fn a_parcel_the_writer_gives_back_is_filled_again() {
        let (sender, receiver) = mpsc::channel();
        let backlog = Arc::new(Backlog::default());
        let outbox = Outbox::new(sender, backlog.clone());
        for seq in 0..PARCEL {
            outbox.push(None, 0, log(0, seq));
        }
        let first = receiver.try_recv().expect("a full parcel is sent");
        assert_eq!(first.len(), PARCEL);
        let address = first.as_ptr();
        backlog.give_back(first);
        // The shard took a parcel when it sent its full one: the next
        // full parcel is sent in the one given back.
        for seq in 0..2 * PARCEL {
            outbox.push(None, 0, log(0, seq));
        }
        let _second = receiver.try_recv().expect("a second parcel");
        let third = receiver.try_recv().expect("a third parcel");
        assert_eq!(third.as_ptr(), address);
        // `send_now`'s one-event parcels are not kept.
        outbox.send_now(log(0, 0));
        backlog.give_back(receiver.try_recv().unwrap());
        assert!(backlog.spare.lock().unwrap().is_empty());
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
                        outbox.push(None, thread, log(thread, seq));
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
        assert_eq!(backlog.queued.load(Ordering::Relaxed), total);
    }
}
