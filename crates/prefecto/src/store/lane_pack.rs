//! [`LanePack`]: the history's batch for one of a map's lanes
//! ([`Recorder::end_batch`](crate::recorder::Recorder::end_batch)): the
//! lane keeps its quick runs' plain ends itself, with no lock and no
//! look-up per run, and hands them over a thousand at a time, or when the
//! lane pauses.
//!
//! A plain end (nearly all) is kept as the lane saw it and packed by the
//! writer: a lane's work per run is a map's critical path, while the
//! writer's thread mostly has a core to itself. Packed on the lane, the
//! history cost a window map about half again its time; with the packing
//! left out, about a fifth (`batch_task --only history`).

use std::sync::Arc;

use uuid::Uuid;

use super::backlog::LANE_ENDS;
use super::event::{RunKey, TimesRow};
use super::outbox::Outbox;
use super::pack::{PlainEnd, same_task};
use crate::names::TaskRunName;
use crate::recorder::{EndBatch, RunTimes};
use crate::state::State;

/// A lane's runs of one task in one flow run. Its runs are quick: the
/// history heard nothing else of them but their `Pending` (which it takes
/// from their times), so nothing of them is at the writer or noted
/// running, and a pack is where their end goes anyway.
pub(super) struct LanePack {
    outbox: Arc<Outbox>,
    flow_run: Uuid,
    /// Its runs that ended plainly, in the order it made them.
    plain: Vec<PlainEnd>,
    /// The task of the runs held, while it holds any.
    held: Option<&'static str>,
}

impl LanePack {
    pub(super) fn new(outbox: Arc<Outbox>, flow_run: Uuid) -> Self {
        LanePack {
            outbox,
            flow_run,
            plain: Vec::new(),
            held: None,
        }
    }
}

impl LanePack {
    /// Holds ends of `task`'s runs from now on: a lane runs one task, and
    /// another starts a list of its own.
    fn hold(&mut self, task: &'static str) {
        match self.held {
            Some(held) if same_task(held, task) => {}
            Some(_) => {
                self.hand_over();
                self.held = Some(task);
            }
            None => self.held = Some(task),
        }
    }
}

impl EndBatch for LanePack {
    fn ended(&mut self, run: TaskRunName, state: &State, times: RunTimes) {
        // Rare (a message, a state's own name): ended as the history ends
        // a run it heard one by one.
        if !state.is_plain() {
            let key = RunKey::Task(self.flow_run, run.task, run.index);
            self.outbox
                .push_end(key, run.index, state, TimesRow::of(&times));
            return;
        }
        self.hold(run.task);
        if self.plain.capacity() == 0 {
            self.plain = self.outbox.empty_ends();
        }
        self.plain.push(PlainEnd::of(run.index, state, times));
        if self.plain.len() >= LANE_ENDS {
            self.hand_over();
        }
    }

    fn plain_ends(&mut self, task: &'static str, ends: &mut Vec<PlainEnd>) {
        self.hold(task);
        if self.plain.is_empty() {
            // The lane's list itself, and a spare one in its place.
            std::mem::swap(&mut self.plain, ends);
            if ends.capacity() == 0 {
                *ends = self.outbox.empty_ends();
            }
        } else {
            self.plain.append(ends);
        }
        if self.plain.len() >= LANE_ENDS {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        if let Some(task) = self.held.take() {
            let plain = std::mem::take(&mut self.plain);
            self.outbox.send_ended(self.flow_run, task, plain);
        }
    }
}
