//! [`Spares`]: records of runs a map is done with, kept for its next runs,
//! and [`LeftRecords`]: those a map left as it ended, for the next map.
//!
//! A map makes each run in a record (`RunShared`, 128 bytes with its
//! `Arc`'s counts). Once nobody holds a finished run's record any more,
//! the map keeps it, and its next run is made in it: no `free` of the old
//! and `malloc` of the new per run.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::future::RunShared;

/// How many records a map keeps at least: a pool lane's take of up to its
/// share of the size.
const SPARES: usize = 64;

/// Records nobody else holds, the last one kept used first (a lane's own,
/// still in its cache).
pub(super) struct Spares<O> {
    records: Vec<Arc<RunShared<O>>>,
    /// How many it keeps at most: as many as its map could free at once (a
    /// stream's span, a collecting map's size), so that no record is freed
    /// only for another to be made. At 64, a sync stream of size 100 (span
    /// 1,124) made 28% of its runs in new records and freed as many, and
    /// took 0.210-0.246 µs per input at 10M against 0.183-0.204 with room
    /// for 1,024 (1.7% new): `batch_task --rss 'stream window, sync body'
    /// 10000000`, processes by turns, four each.
    kept: usize,
}

impl<O> Spares<O> {
    /// Keeps at most `kept` records, and never fewer than [`SPARES`].
    pub(super) fn new(kept: usize) -> Self {
        Spares {
            records: Vec::new(),
            kept: kept.max(SPARES),
        }
    }

    /// Keeps `record` for a later run, if nobody else holds it and there
    /// is room; otherwise lets it go.
    pub(super) fn keep(&mut self, record: Option<Arc<RunShared<O>>>) {
        if let Some(mut record) = record
            && self.records.len() < self.kept
            && Arc::get_mut(&mut record).is_some()
        {
            self.records.push(record);
        }
    }

    /// A record to make the next run in, if it kept one.
    pub(super) fn take(&mut self) -> Option<Arc<RunShared<O>>> {
        self.records.pop()
    }
}

impl<O: Send + 'static> Spares<O> {
    /// As [`new`](Self::new), starting with records earlier maps of this
    /// output type left in `left`.
    pub(super) fn from_left(kept: usize, left: &LeftRecords) -> Self {
        let mut spares = Spares::new(kept);
        spares.records = left.take(spares.kept);
        spares
    }

    /// Its map has ended: its records go to `left`, for the next map.
    pub(super) fn leave(&mut self, left: &LeftRecords) {
        left.leave(std::mem::take(&mut self.records));
    }
}

/// How many records of one output type wait for the next map, at most
/// (about half a megabyte): a stream of size 1,000 frees as many at once.
const LEFT_AT_MOST: usize = 4_096;

/// Records maps left as they ended, by output type, emptied, for the next
/// map's first runs. A map kept its records for its own runs only: each
/// made its first runs (a stream's span: 1,124 at size 100) in new records
/// and freed them at its end, a fixed cost that weighs on small maps
/// (`batch_task --rss 'stream window, sync body' 10000`: 2,574 `malloc`
/// calls a map, 504 with the records left; callgrind, 20 maps: 509 -> 459
/// million instructions in the process).
#[derive(Default)]
pub(super) struct LeftRecords {
    by_output: Mutex<HashMap<TypeId, Box<dyn Any + Send>>>,
}

impl LeftRecords {
    /// The process's: maps of every flow run leave their records here.
    pub(super) fn process() -> &'static LeftRecords {
        static LEFT: OnceLock<LeftRecords> = OnceLock::new();
        LEFT.get_or_init(LeftRecords::default)
    }

    fn records<O: Send + 'static>(
        by_output: &mut HashMap<TypeId, Box<dyn Any + Send>>,
    ) -> &mut Vec<Arc<RunShared<O>>> {
        by_output
            .entry(TypeId::of::<Vec<Arc<RunShared<O>>>>())
            .or_insert_with(|| Box::new(Vec::<Arc<RunShared<O>>>::new()))
            .downcast_mut()
            .expect("keyed by its own type")
    }

    /// Up to `max` records of output type `O`.
    fn take<O: Send + 'static>(&self, max: usize) -> Vec<Arc<RunShared<O>>> {
        let mut by_output = self.by_output.lock().unwrap_or_else(|p| p.into_inner());
        let records = Self::records::<O>(&mut by_output);
        records.split_off(records.len().saturating_sub(max))
    }

    /// Keeps `records`, emptied, up to [`LEFT_AT_MOST`] of their type; lets
    /// the rest go.
    fn leave<O: Send + 'static>(&self, mut records: Vec<Arc<RunShared<O>>>) {
        records.retain_mut(RunShared::empty);
        let mut by_output = self.by_output.lock().unwrap_or_else(|p| p.into_inner());
        let kept = Self::records::<O>(&mut by_output);
        let room = LEFT_AT_MOST.saturating_sub(kept.len());
        records.truncate(room);
        kept.append(&mut records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_shared::tests::{ADD, name};
    use crate::state::State;

    fn record() -> Arc<RunShared<u64>> {
        RunShared::new(name(), &ADD, State::pending(), None)
    }

    #[test]
    fn keeps_as_many_as_it_was_told_and_never_fewer_than_the_minimum() {
        for (asked, kept) in [(1_124, 1_124), (10, SPARES)] {
            let mut spares = Spares::new(asked);
            for _ in 0..kept + 10 {
                spares.keep(Some(record()));
            }
            let mut taken = 0;
            while spares.take().is_some() {
                taken += 1;
            }
            assert_eq!(taken, kept, "asked for {asked}");
        }
    }

    #[test]
    fn a_map_starts_with_the_records_an_earlier_map_left_emptied() {
        let left = LeftRecords::default();
        let mut first: Spares<u64> = Spares::from_left(1_124, &left);
        assert!(first.take().is_none(), "nothing left yet");
        // A run that ended with a value nobody took.
        let ended = record();
        ended.finish(State::completed(), Some(7));
        first.keep(Some(ended));
        first.keep(Some(record()));
        // One somebody still holds (kept by mistake): it is let go.
        let held = record();
        first.records.push(held.clone());
        first.leave(&left);
        // Another output type's map finds none of them.
        let mut other: Spares<String> = Spares::from_left(1_124, &left);
        assert!(other.take().is_none());
        // The next map of this type starts with the two nobody else held,
        // their outcomes let go.
        let mut next: Spares<u64> = Spares::from_left(1_124, &left);
        for _ in 0..2 {
            let record = next.take().expect("a record left");
            assert!(record.take_outcome().is_err(), "no outcome kept");
        }
        assert!(next.take().is_none());
        assert_eq!(Arc::strong_count(&held), 1, "a held record is let go");
    }

    #[test]
    fn at_most_so_many_records_are_left_and_a_map_takes_at_most_what_it_keeps() {
        let left = LeftRecords::default();
        for _ in 0..2 {
            let mut spares: Spares<u64> = Spares::new(LEFT_AT_MOST);
            for _ in 0..LEFT_AT_MOST {
                spares.keep(Some(record()));
            }
            spares.leave(&left);
        }
        let mut small: Spares<u64> = Spares::from_left(10, &left);
        let mut taken = 0;
        while small.take().is_some() {
            taken += 1;
        }
        assert_eq!(taken, SPARES, "a map takes at most what it keeps");
        let mut rest: Spares<u64> = Spares::from_left(2 * LEFT_AT_MOST, &left);
        let mut taken = 0;
        while rest.take().is_some() {
            taken += 1;
        }
        assert_eq!(taken, LEFT_AT_MOST - SPARES);
    }

    #[test]
    fn a_record_someone_else_holds_is_let_go() {
        let mut spares = Spares::new(SPARES);
        let held = record();
        spares.keep(Some(held.clone()));
        spares.keep(None);
        assert!(spares.take().is_none());
        assert_eq!(Arc::strong_count(&held), 1);
        spares.keep(Some(held));
        assert!(spares.take().is_some());
    }
}
