//! [`LaneEnds`]: how one of a map's lanes (an async lane, or a pool lane's
//! slice) hands the ends of its quick task runs to the recorders: in
//! batches to those that take them so ([`Recorder::end_batch`]), one
//! transition each to the others.
//!
//! A quick run's end was most of what a recorder cost a map: for the run
//! history, a lock, a look-up of the run and of its pack, for every run. A
//! lane runs one run after another, so its ends can wait for it to pause.

use std::sync::Arc;

use crate::context::FlowRunContext;
use crate::names::TaskRunName;
use crate::recorder::{EndBatch, Recorder, RunTimes};
use crate::state::State;
use crate::task::TaskSpec;

/// The recorders of one lane's quick runs' ends.
pub(crate) struct LaneEnds {
    batches: Vec<Box<dyn EndBatch>>,
    /// The recorders that take no batch: they hear each end as a transition.
    one_by_one: Vec<Arc<dyn Recorder>>,
    /// Whether a batch may hold an end not handed over.
    holding: bool,
}

impl LaneEnds {
    /// None: for a lane whose runs are not run inline (none is quick).
    pub(crate) fn none() -> Self {
        LaneEnds {
            batches: Vec::new(),
            one_by_one: Vec::new(),
            holding: false,
        }
    }

    /// A batch from each recorder of `ctx` that takes them.
    pub(crate) fn new(ctx: &FlowRunContext) -> Self {
        let mut ends = LaneEnds::none();
        for recorder in ctx.seams.recorders.iter() {
            match recorder.end_batch(ctx.flow_run_ref()) {
                Some(batch) => ends.batches.push(batch),
                None => ends.one_by_one.push(recorder.clone()),
            }
        }
        ends
    }

    /// A quick run ended in `state`, with these times: see
    /// [`Recorder::end_batch`] for which runs are quick.
    pub(crate) fn ended(
        &mut self,
        ctx: &FlowRunContext,
        run: (TaskRunName, &'static TaskSpec),
        state: &State,
        times: Option<RunTimes>,
    ) {
        if !self.one_by_one.is_empty() {
            ctx.record_task_transition_to(&self.one_by_one, Some(run), state, times, &[]);
        }
        // A run made by a lane is always announced: it has times.
        let Some(times) = times else { return };
        for batch in &mut self.batches {
            batch.ended(run.0, state, times);
        }
        self.holding |= !self.batches.is_empty();
    }

    /// The lane is about to wait, or ends: every batch hands over what it holds.
    pub(crate) fn hand_over(&mut self) {
        if std::mem::take(&mut self.holding) {
            for batch in &mut self.batches {
                batch.hand_over();
            }
        }
    }
}

impl Drop for LaneEnds {
    fn drop(&mut self) {
        self.hand_over();
    }
}
