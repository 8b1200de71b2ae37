//! The queue of a [`MapRun`](super::map_run::MapRun): the inputs not yet
//! taken, and the runs it still holds, in input order.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use super::map_inputs::MapInputs;
use crate::args::MapError;
use crate::future::RunShared;
use crate::task::Task;

/// A run the map still holds.
pub(super) struct Slot<O> {
    pub(super) run: Arc<RunShared<O>>,
    /// Its lane is done with it: counted, and shown to a completion-order
    /// switch. Only then is a stream's reader handed it in input order, so
    /// the reader never sees an outcome before the switch does, and the map
    /// never runs more than its span ahead of a run the switch has not seen.
    pub(super) finished: bool,
    /// Handed over to a stream's reader.
    pub(super) delivered: bool,
}

/// The positions of runs a lane handed over to a stream's reader whose
/// slots it has not marked `delivered` yet: it marks them at its next look
/// at the queue, which it takes anyway, not under a lock of their own.
/// Until then they hold the span a little longer: no longer than a run the
/// lane went on to, which is older than any input a lane could take.
#[derive(Default)]
pub(super) struct Unmarked(Vec<usize>);

impl Unmarked {
    pub(super) fn push(&mut self, position: usize) {
        self.0.push(position);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    pub(super) slots: VecDeque<Slot<T::Output>>,
    /// The position of `slots[0]`.
    pub(super) low: usize,
    /// In input order, the first run the switch has not been shown yet.
    pub(super) next_to_show: usize,
    /// In input order, the first run a stream has not handed over yet.
    pub(super) next_to_hand: usize,
    /// Reserved run names: the next index, and how many are left.
    pub(super) names: (u64, u64),
    /// Inputs a stop left unread: the position of the first, when the
    /// iterator may be endless and was not drained.
    pub(super) unread_from: Option<usize>,
}

impl<T: Task> Queue<T> {
    /// The runs due to a stream's reader in input order: from the first not
    /// yet handed over, as long as their lanes have finished with them.
    pub(super) fn due_in_order(&self) -> Range<usize> {
        let first = self.next_to_hand;
        let finished = self
            .slots
            .iter()
            .skip(first.saturating_sub(self.low))
            .take_while(|slot| slot.finished)
            .count();
        first..first + finished
    }

    /// Marks the runs of `unmarked` delivered; whether there were any.
    pub(super) fn mark(&mut self, unmarked: &mut Unmarked) -> bool {
        if unmarked.0.is_empty() {
            return false;
        }
        for position in unmarked.0.drain(..) {
            if let Some(slot) = self.slot(position) {
                slot.delivered = true;
            }
        }
        true
    }

    pub(super) fn slot(&mut self, position: usize) -> Option<&mut Slot<T::Output>> {
        let low = self.low;
        position
            .checked_sub(low)
            .and_then(|offset| self.slots.get_mut(offset))
    }
}
