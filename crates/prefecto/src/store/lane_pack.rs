//! [`LanePack`]: the history's batch for one of a map's lanes
//! ([`Recorder::end_batch`](crate::recorder::Recorder::end_batch)): the
//! lane keeps its quick runs' ends itself, with no lock and no look-up per
//! run, and hands them over a few hundred at a time, or when the lane
//! pauses.
//!
//! A plain end (nearly all) is kept as the lane saw it and packed by the
//! writer: a lane's work per run is a map's critical path, while the
//! writer's thread mostly has a core to itself. Packed on the lane, the
//! history cost a window map about half again its time; with the packing
//! left out, about a fifth (`batch_task --only history`).

use std::sync::Arc;

use uuid::Uuid;

use super::backlog::LANE_ENDS;
use super::event::TimesRow;
use super::outbox::Outbox;
use super::pack::{Pack, PlainEnd, same_task};
use crate::names::TaskRunName;
use crate::recorder::{EndBatch, RunTimes};
use crate::state::State;

/// A lane hands its other ends over once they take this many bytes
/// (about 170 runs).
const HELD_BYTES: usize = 2 * 1024;

/// A lane's runs of one task in one flow run. Its runs are quick: the
/// history heard nothing else of them but their `Pending` (which it takes
/// from their times), so nothing of them is at the writer or noted
/// running, and a pack is where their end goes anyway.
pub(super) struct LanePack {
    outbox: Arc<Outbox>,
    flow_run: Uuid,
    /// Its runs that ended plainly, in the order it made them.
    plain: Vec<PlainEnd>,
    /// Its other runs (a message, a state's own name), packed here.
    pack: Pack,
    /// The task of the runs held, and the number of one of them (which
    /// picks the outbox's shard a pack goes through), while it holds any.
    held: Option<(&'static str, u64)>,
}

impl LanePack {
    pub(super) fn new(outbox: Arc<Outbox>, flow_run: Uuid) -> Self {
        LanePack {
            outbox,
            flow_run,
            plain: Vec::new(),
            pack: Pack::default(),
            held: None,
        }
    }
}

impl EndBatch for LanePack {
    fn ended(&mut self, run: TaskRunName, state: &State, times: RunTimes) {
        // A lane runs one task: another starts a batch of its own.
        match self.held {
            Some((task, _)) if same_task(task, run.task) => {}
            Some(_) => {
                self.hand_over();
                self.held = Some((run.task, run.index));
            }
            None => self.held = Some((run.task, run.index)),
        }
        if state.is_plain() {
            if self.plain.capacity() == 0 {
                self.plain = self.outbox.empty_ends();
            }
            self.plain.push(PlainEnd {
                index: run.index,
                created_nanos: times.created_nanos(),
                started_nanos: times.started_nanos().unwrap_or(0),
                ended_nanos: state.nanos(),
                run_count: times.run_count(),
                state_type: state.state_type(),
            });
            if self.plain.len() >= LANE_ENDS {
                self.hand_over();
            }
            return;
        }
        let times = TimesRow::of(&times);
        let numbers = (times.created, times.started, times.run_count);
        self.pack.push_ended(run.index, numbers, state);
        if self.pack.body().len() >= HELD_BYTES {
            self.hand_over();
        }
    }

    fn hand_over(&mut self) {
        if let Some((task, index)) = self.held.take() {
            let flow_run = self.flow_run;
            if !self.plain.is_empty() {
                let plain = std::mem::take(&mut self.plain);
                self.outbox.send_ended(flow_run, task, plain);
            }
            if self.pack.runs() > 0 {
                self.outbox.append_pack(index, flow_run, task, &self.pack);
                self.pack.clear();
            }
        }
    }
}
