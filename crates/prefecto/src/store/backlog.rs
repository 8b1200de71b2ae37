//! What waits for the writer thread: how much (bounded, so that an engine
//! faster than the disk waits rather than queue without end), whether the
//! writer is still there, and the parcels it has emptied for reuse.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::event::Event;
use super::pack::PlainEnd;

/// A shard hands its events over once it holds this many.
pub(super) const PARCEL: usize = 256;
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
/// A lane hands its plain ends over once it holds this many
/// (`lane_pack.rs`): 40 KB, which reach the writer a few at a time.
pub(super) const LANE_ENDS: usize = 1024;
/// How many emptied lists of plain ends the writer keeps for the lanes, as
/// it keeps parcels (a list is made on a lane and emptied on the writer's
/// thread): the writer packs them as they come, so few are ever away.
const SPARE_ENDS: usize = 64;

/// How many events wait for the writer, whether it is still there, and
/// the parcels it has emptied.
#[derive(Default)]
pub(super) struct Backlog {
    queued: AtomicUsize,
    writer_gone: AtomicBool,
    spare: Spare<Event>,
    spare_ends: Spare<PlainEnd>,
}

/// Emptied lists of one capacity, made on engine threads and emptied on
/// the writer's, kept to fill again.
struct Spare<T>(Mutex<Vec<Vec<T>>>);

impl<T> Default for Spare<T> {
    fn default() -> Self {
        Spare(Mutex::default())
    }
}

impl<T> Spare<T> {
    fn lists(&self) -> std::sync::MutexGuard<'_, Vec<Vec<T>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, capacity: usize) -> Vec<T> {
        let spare = self.lists().pop();
        spare.unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Keeps `list`, emptied, if it has that capacity and fewer than `max`
    /// are kept; else drops it.
    fn keep(&self, mut list: Vec<T>, capacity: usize, max: usize) {
        if list.capacity() != capacity {
            return;
        }
        list.clear();
        let mut spare = self.lists();
        if spare.len() < max {
            spare.push(list);
        }
    }
}

impl Backlog {
    /// A parcel the writer has emptied, or a new one.
    pub(super) fn empty_parcel(&self) -> Vec<Event> {
        self.spare.take(PARCEL)
    }

    /// The writer has taken a parcel's events: the shards may fill it
    /// again. Parcels of other sizes (`send_now`'s) are dropped.
    pub fn give_back(&self, parcel: Vec<Event>) {
        self.spare.keep(parcel, PARCEL, SPARE_PARCELS);
    }

    /// A list of plain ends the writer has emptied, or a new one.
    pub(super) fn empty_ends(&self) -> Vec<PlainEnd> {
        self.spare_ends.take(LANE_ENDS)
    }

    /// The writer has packed a list of plain ends: a lane may fill it again.
    pub fn give_back_ends(&self, ends: Vec<PlainEnd>) {
        self.spare_ends.keep(ends, LANE_ENDS, SPARE_ENDS);
    }

    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(super) fn spare_parcels(&self) -> usize {
        self.spare.lists().len()
    }

    /// A shard sent events of this weight (`Event::weight`).
    pub(super) fn queue(&self, weight: usize) {
        self.queued.fetch_add(weight, Ordering::Relaxed);
    }

    /// The writer took events of this weight.
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
    pub(super) fn wait_if_full(&self, sent: usize) {
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
