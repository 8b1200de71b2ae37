//! [`LanePack`]: the history's batch for one of a map's lanes
//! ([`Recorder::end_batch`](crate::recorder::Recorder::end_batch)): the
//! lane packs its quick runs' ends itself, with no lock and no look-up per
//! run, and adds them to the outbox's pack a few hundred at a time, or when
//! the lane pauses.

use std::sync::Arc;

use uuid::Uuid;

use super::event::TimesRow;
use super::outbox::Outbox;
use super::pack::{Pack, same_task};
use crate::names::TaskRunName;
use crate::recorder::{EndBatch, RunTimes};
use crate::state::State;

/// A lane hands its ends over once it holds this many bytes (about 170
/// quick runs): often enough that the writer gets full packs as the map
/// goes (a hundred lanes each holding a full pack left the writer's work
/// to the map's end), rarely enough that the lock is paid once per many runs.
const HELD_BYTES: usize = 2 * 1024;

/// A lane's runs of one task in one flow run, packed as the outbox packs
/// them. Its runs are quick: the history heard nothing else of them but
/// their `Pending` (which it takes from their times), so nothing of them is
/// at the writer or noted running, and a pack is where their end goes anyway.
pub(super) struct LanePack {
    outbox: Arc<Outbox>,
    flow_run: Uuid,
    pack: Pack,
    /// The task of the runs held, and the number of one of them (which
    /// picks the outbox's shard they go through), while it holds any.
    held: Option<(&'static str, u64)>,
}

impl LanePack {
    pub(super) fn new(outbox: Arc<Outbox>, flow_run: Uuid) -> Self {
        LanePack {
            outbox,
            flow_run,
            pack: Pack::default(),
            held: None,
        }
    }
}

impl EndBatch for LanePack {
    fn ended(&mut self, run: TaskRunName, state: &State, times: RunTimes) {
        // A lane runs one task: another starts a pack of its own.
        match self.held {
            Some((task, _)) if same_task(task, run.task) => {}
            Some(_) => {
                self.hand_over();
                self.held = Some((run.task, run.index));
            }
            None => self.held = Some((run.task, run.index)),
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
            self.outbox.append_pack(index, flow_run, task, &self.pack);
            self.pack.clear();
        }
    }
}
