//! [`Spares`]: records of runs a map is done with, kept for its next runs.
//!
//! A map makes each run in a record (`RunShared`, 128 bytes with its
//! `Arc`'s counts). Once nobody holds a finished run's record any more,
//! the map keeps it, and its next run is made in it: no `free` of the old
//! and `malloc` of the new per run.

use std::sync::Arc;

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
