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
use crate::names::{TaskRunName, same_task};
use crate::recorder::{EndBatch, PlainEnd, Recorder, RunTimes};
use crate::state::State;
use crate::task::TaskSpec;

/// Plain ends a lane keeps before it hands them to its batches: the
/// history's writer takes lists of this length.
const ENDS_PER_LIST: usize = 1024;

/// The recorders of one lane's quick runs' ends, and what else its lane
/// does before it waits.
pub(crate) struct LaneEnds<'a> {
    batches: Vec<Box<dyn EndBatch>>,
    /// The recorders that take no batch: they hear each end as a transition.
    one_by_one: Vec<Arc<dyn Recorder>>,
    /// Its runs that ended plainly and are not handed to the batches yet,
    /// with their task: a lane's run costs a push here, not a call through
    /// each batch and its panic guard.
    plain: Vec<PlainEnd>,
    task: Option<&'static str>,
    /// Whether a batch may hold an end not handed over.
    holding: bool,
    /// Called before its lane waits: a map's lane gives back the inputs
    /// its group holds ahead (`lane_group`), for other lanes to run.
    before_waiting: Option<&'a (dyn Fn() + Sync)>,
}

impl<'a> LaneEnds<'a> {
    /// None: for a lane whose runs are not run inline (none is quick).
    pub(crate) fn none() -> Self {
        LaneEnds {
            batches: Vec::new(),
            one_by_one: Vec::new(),
            plain: Vec::new(),
            task: None,
            holding: false,
            before_waiting: None,
        }
    }

    /// As it is, calling `before_waiting` each time its lane is about to wait.
    pub(crate) fn before_waiting(mut self, before_waiting: &'a (dyn Fn() + Sync)) -> Self {
        self.before_waiting = Some(before_waiting);
        self
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
    // Inlined, for a lane's usual run (a plain end of the task it ran last,
    // with room left in its list), the rest kept out of line: as one call,
    // saving and restoring the registers of its rarer paths, it cost 25
    // instructions a run more, of the ~120 the history adds to an async
    // lane's run (callgrind, `batch_task --rss 'map window, async body'
    // 100000 --history`).
    #[inline(always)]
    pub(crate) fn ended(
        &mut self,
        ctx: &FlowRunContext,
        run: (TaskRunName, &'static TaskSpec),
        state: &State,
        times: Option<RunTimes>,
    ) {
        let (name, _) = run;
        if self.one_by_one.is_empty()
            && let Some(times) = times
            && state.is_plain()
            && self.task.is_some_and(|task| same_task(task, name.task))
            && self.plain.len() + 1 < ENDS_PER_LIST
        {
            self.holding = true;
            self.plain.push(PlainEnd::of(name.index, state, times));
            return;
        }
        self.ended_otherwise(ctx, run, state, times);
    }

    /// As [`ended`](Self::ended), for any run.
    #[inline(never)]
    fn ended_otherwise(
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
        if self.batches.is_empty() {
            return;
        }
        self.holding = true;
        let (name, _) = run;
        let plain = state.is_plain();
        if !plain || self.task.is_some_and(|task| !same_task(task, name.task)) {
            // In the order they ended: the plain ones before it first.
            self.hand_plain_ends();
        }
        if !plain {
            for batch in &mut self.batches {
                batch.ended(name, state, times);
            }
            return;
        }
        self.task = Some(name.task);
        self.plain.push(PlainEnd::of(name.index, state, times));
        if self.plain.len() >= ENDS_PER_LIST {
            self.hand_plain_ends();
        }
    }

    /// Hands the plain ends kept to every batch.
    fn hand_plain_ends(&mut self) {
        let Some(task) = self.task.take() else { return };
        let Some((last, others)) = self.batches.split_last_mut() else {
            return;
        };
        for batch in others {
            batch.plain_ends(task, &mut self.plain.clone());
        }
        last.plain_ends(task, &mut self.plain);
        self.plain.clear();
        if self.plain.capacity() == 0 {
            self.plain.reserve(ENDS_PER_LIST);
        }
    }

    /// The lane is about to wait, or ends: every batch hands over what it holds.
    pub(crate) fn hand_over(&mut self) {
        if let Some(before_waiting) = self.before_waiting {
            before_waiting();
        }
        if std::mem::take(&mut self.holding) {
            self.hand_plain_ends();
            for batch in &mut self.batches {
                batch.hand_over();
            }
        }
    }
}

impl Drop for LaneEnds<'_> {
    fn drop(&mut self) {
        self.hand_over();
    }
}
