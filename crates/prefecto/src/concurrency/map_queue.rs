//! The queue of a [`MapRun`](super::map_run::MapRun): the inputs not yet
//! taken, and the runs it still holds, in input order.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use super::map_inputs::MapInputs;
use super::spares::Spares;
use super::taken::Taken;
use crate::args::MapError;
use crate::future::{PrefectFuture, RunShared};
use crate::prefault::{Prefaulted, Stretch};
use crate::task::Task;

/// How far a stream has got with a run the map still holds.
#[derive(Default, Clone, Copy)]
pub(super) struct Marks {
    /// Its lane is done with it: counted, and shown to a completion-order
    /// switch. Only then is a stream's reader handed it in input order, so
    /// the reader never sees an outcome before the switch does, and the map
    /// never runs more than its span ahead of a run the switch has not seen.
    pub(super) finished: bool,
    /// Handed over to a stream's reader.
    pub(super) delivered: bool,
}

/// What a lane tells the queue at its next look, which it takes anyway,
/// rather than under a lock of its own per run.
pub(super) struct LaneNotes<O> {
    /// The positions of runs it handed over to a stream's reader whose
    /// slots are not marked `delivered` yet. Until then they hold the span
    /// a little longer: no longer than a run the lane went on to, which is
    /// older than any input a lane could take.
    handed: Vec<usize>,
    /// The runs it is done with, and their positions: a collecting map
    /// keeps each by value from then on, and the queue its record.
    ended: Vec<(usize, Arc<RunShared<O>>)>,
    /// With `Some`, the records of those runs come back to the lane here,
    /// not to the queue's spares: its group makes its next runs in them
    /// before it looks at the queue (`lane_group`).
    pub(super) records: Option<Vec<Arc<RunShared<O>>>>,
}

impl<O> Default for LaneNotes<O> {
    fn default() -> Self {
        LaneNotes {
            handed: Vec::new(),
            ended: Vec::new(),
            records: None,
        }
    }
}

impl<O> LaneNotes<O> {
    pub(super) fn handed(&mut self, position: usize) {
        self.handed.push(position);
    }

    /// The lane is done with the run at `position`.
    pub(super) fn ended(&mut self, position: usize, run: Arc<RunShared<O>>) {
        self.ended.push((position, run));
    }

    /// Whether it has hand-overs to mark.
    pub(super) fn has_handed(&self) -> bool {
        !self.handed.is_empty()
    }
}

/// The inputs not yet taken, and the runs still held, from position `low`.
pub(super) struct Queue<T: Task> {
    pub(super) next: usize,
    /// Lanes take inputs up to `end`: the end of the current batch, or of all inputs.
    pub(super) end: usize,
    pub(super) inputs: MapInputs<T::Args>,
    /// The inputs ran out, or went wrong (`input_error`).
    pub(super) exhausted: bool,
    pub(super) input_error: Option<MapError>,
    /// The runs it holds, in input order. Each is live while its lane
    /// may still need it; a collecting map's is kept by value once it has
    /// ended and its lane is done with it. They are the map's futures.
    pub(super) runs: VecDeque<PrefectFuture<T::Output>>,
    /// A stream's marks of each run it holds (a collecting map has none).
    pub(super) marks: VecDeque<Marks>,
    /// A large collecting map's list of runs, faulted in ahead of its
    /// lanes, and the next stretch of it to fault in, once the lock is let go.
    pub(super) prefaulted: Option<Prefaulted>,
    pub(super) stretch: Option<Stretch>,
    /// The position of `runs[0]`.
    pub(super) low: usize,
    /// Records nobody else holds, of runs lanes are done with or a stream
    /// forgot: the next runs are made in them, the last one kept first (a
    /// lane's own, still in its cache). A stream's run is often forgotten
    /// after its lane took its next input (an older run of another lane
    /// held the front): its record then waits here for any lane.
    pub(super) spares: Spares<T::Output>,
    /// In input order, the first run the switch has not been shown yet.
    pub(super) next_to_show: usize,
    /// In input order, the first run a stream has not handed over yet.
    pub(super) next_to_hand: usize,
    /// Reserved run names: the next index, and how many are left.
    pub(super) names: (u64, u64),
    /// Inputs a stop left unread: the position of the first, when the
    /// iterator may be endless and was not drained.
    pub(super) unread_from: Option<usize>,
    /// Inputs a group of lanes took ahead and gave back as its lane waited
    /// (`lane_group`): taken before any input not taken yet.
    pub(super) given_back: VecDeque<Taken<T>>,
    /// How many inputs groups of lanes hold ahead: while any do, a lane
    /// that finds no input left waits for them to be given back or run,
    /// rather than ending with them held.
    pub(super) held_ahead: usize,
}

impl<T: Task> Queue<T> {
    /// Whether no input is left to read for the lanes: the inputs ran out
    /// (or went wrong), or the batch's did.
    pub(super) fn none_left_to_read(&self) -> bool {
        self.exhausted || self.next >= self.end
    }

    /// The runs due to a stream's reader in input order: from the first not
    /// yet handed over, as long as their lanes have finished with them.
    pub(super) fn due_in_order(&self) -> Range<usize> {
        let first = self.next_to_hand;
        let finished = self
            .marks
            .iter()
            .skip(first.saturating_sub(self.low))
            .take_while(|marks| marks.finished)
            .count();
        first..first + finished
    }

    /// Marks the runs a lane handed over delivered; whether there were any.
    pub(super) fn mark(&mut self, notes: &mut LaneNotes<T::Output>) -> bool {
        if notes.handed.is_empty() {
            return false;
        }
        for position in notes.handed.drain(..) {
            if let Some(marks) = self.marks(position) {
                marks.delivered = true;
            }
        }
        true
    }

    /// Takes the runs a lane is done with: a collecting map keeps each by
    /// value (`collecting`); a stream has forgotten it once handed over.
    /// The records nobody else holds become spares.
    pub(super) fn take_ended(&mut self, notes: &mut LaneNotes<T::Output>, collecting: bool) {
        // Popped, not drained: a lane mostly has one, and a drain's guard
        // cost as much as the rest of this (callgrind).
        while let Some((position, run)) = notes.ended.pop() {
            let spare = match self.run(position) {
                Some(held) if collecting => held.keep_ended(run),
                // A stream's run not forgotten yet: the queue holds it.
                Some(_) => None,
                None => Some(run),
            };
            match (&mut notes.records, spare) {
                // Nobody else holds it: the future that did keeps it by value.
                (Some(records), Some(record)) if collecting => records.push(record),
                (_, spare) => self.spares.keep(spare),
            }
        }
    }

    /// Holds the run of the next position, with its marks for a stream.
    pub(super) fn push(&mut self, run: PrefectFuture<T::Output>, stream: bool) {
        if let Some(prefaulted) = &mut self.prefaulted
            && let Some(stretch) = prefaulted.before_writing(self.runs.len(), self.runs.capacity())
            && let Some(unclaimed) = self.stretch.replace(stretch)
        {
            // Planned by a look that did not fault it in: here, then.
            unclaimed.fault_in();
        }
        self.runs.push_back(run);
        if stream {
            self.marks.push_back(Marks::default());
        }
    }

    /// Forgets the oldest run it holds, keeping its record for another
    /// run if nobody else holds it.
    pub(super) fn pop(&mut self) {
        let record = self.runs.pop_front().and_then(PrefectFuture::into_live);
        self.spares.keep(record);
        self.marks.pop_front();
        self.low += 1;
    }

    pub(super) fn run(&mut self, position: usize) -> Option<&mut PrefectFuture<T::Output>> {
        let offset = position.checked_sub(self.low)?;
        self.runs.get_mut(offset)
    }

    /// A stream's marks of the run at `position`.
    pub(super) fn marks(&mut self, position: usize) -> Option<&mut Marks> {
        let offset = position.checked_sub(self.low)?;
        self.marks.get_mut(offset)
    }
}
