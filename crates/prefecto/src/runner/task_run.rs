//! [`TaskRun`]: one task run as the engine drives it, and its transitions.
//!
//! The run's state and clock live in [`RunShared`], which its future reads;
//! a `TaskRun` adds what it runs in (its flow run and cancel scope) and is
//! the one place a transition is recorded, logged and set.

use std::sync::Arc;

use super::lane_ends::LaneEnds;
use super::late_running::OwedRunning;
use crate::context::{CancelScope, FlowRunContext, implied_log};
use crate::future::RunShared;
use crate::inputs::UpstreamRun;
use crate::names::TaskRunName;
use crate::queued_body::Helper;
use crate::recorder::{CreatedLine, FinishedLine, SubmittedLine};
use crate::state::State;
use crate::task::Task;

/// One task run of `task` in a flow run: borrowed from whoever drives it (a
/// spawned engine, a map's lane), for as long as it drives it.
pub(crate) struct TaskRun<'a, T: Task> {
    pub(crate) ctx: &'a Arc<FlowRunContext>,
    pub(crate) task: &'a T,
    /// The state, clock and outcome its future reads.
    pub(crate) shared: &'a Arc<RunShared<T::Output>>,
    /// Cancelling it (a kill switch, the flow run's end) cancels the run.
    pub(crate) scope: &'a Arc<CancelScope>,
}

/// A task run's state, `Pending`, not yet announced, made now or at
/// `created_at` (nanoseconds since the epoch, a reading of the clock just
/// taken); a sync body that waits for it (`waiter`) may run it. Made in
/// `spare` if given (a record its lane no longer needs).
pub(crate) fn new_run<T: Task>(
    task: &T,
    index: u64,
    waiter: Option<Arc<Helper>>,
    created_at: Option<i64>,
    spare: Option<Arc<RunShared<T::Output>>>,
) -> Arc<RunShared<T::Output>> {
    let name = TaskRunName {
        task: task.spec().name,
        index,
    };
    let pending = match created_at {
        Some(nanos) => State::pending_at(nanos),
        None => State::pending(),
    };
    match spare {
        Some(mut record) => {
            RunShared::renew(&mut record, name, task.spec(), pending, waiter);
            record
        }
        None => RunShared::new(name, task.spec(), pending, waiter),
    }
}

impl<T: Task> TaskRun<'_, T> {
    pub(crate) fn name(&self) -> TaskRunName {
        self.shared.name()
    }

    /// Records and logs the run's creation and submission, as it is
    /// submitted, with the runs it depends on.
    pub(crate) fn announce(&self, upstream: &[UpstreamRun]) {
        let name = self.name();
        // Its creation time was noted when `new_run` made it Pending, just
        // before every announce; the recorders that decline a submission
        // hear it with the run's later transitions.
        if self.ctx.records_submission(upstream) {
            // That stamp is its submission's: the clock is not read again.
            let pending = self.shared.state();
            debug_assert!(pending.is_pending());
            self.record_with(&pending, upstream);
        }
        implied_log!(self.ctx, None, INFO, "{}", CreatedLine(name, name.task));
        implied_log!(self.ctx, None, INFO, "{}", SubmittedLine(name));
    }

    /// Ends a run that was never submitted in `Cancelled`, so that every
    /// input of a map has an outcome.
    pub(crate) fn cancel_unsubmitted(&self, message: &str) {
        // Straight to Cancelled: it was never submitted, so never Pending.
        let cancelled = State::cancelled(message);
        self.ctx
            .record_transition(Some((self.name(), self.shared.spec)), &cancelled);
        self.shared.finish(cancelled, None);
    }

    /// Moves the run to a non-terminal state.
    pub(crate) fn transition(&self, state: State) {
        self.record(&state);
        self.shared.set_state(state);
    }

    /// Moves the run to its first `Running`, as [`transition`](Self::transition)
    /// does, handing it only to the recorders that want it at once; true if
    /// others are owed it ([`Recorder::wants_running`]): they hear it from
    /// [`owed_running`](Self::owed_running) if the run is seen still running.
    /// Entered now, or `at` (nanoseconds since the epoch) if given.
    ///
    /// [`Recorder::wants_running`]: crate::recorder::Recorder::wants_running
    #[inline]
    pub(crate) fn start_running(&self, at: Option<i64>) -> bool {
        let state = at.map_or_else(State::running, State::running_at);
        if self.ctx.has_recorders() {
            self.shared.count_into_times(&state);
            // Read back and handed over only to a recorder that hears it
            // now: the run history hears a quick run's end only.
            if self.ctx.hears_running_at_once() {
                let run = (self.name(), self.shared.spec);
                self.ctx
                    .record_first_running(run, &state, self.shared.times());
            }
        }
        let owes = self.ctx.owes_running();
        self.shared.set_state(state);
        owes
    }

    /// The `Running` that [`start_running`](Self::start_running) owes, read
    /// back from the run's times: a first start's time is its `Running`'s,
    /// and a run started inline has one attempt only.
    pub(crate) fn owed_running(&self) -> OwedRunning {
        let times = self.shared.times();
        let started = times.and_then(|times| times.started_nanos());
        let state = match started {
            Some(nanos) => State::running_at(nanos),
            None => self.shared.state(),
        };
        OwedRunning {
            name: self.name(),
            spec: self.shared.spec,
            state,
            times,
        }
    }

    /// Hands a transition to the recorders, with the run's times.
    fn record(&self, state: &State) {
        self.record_with(state, &[]);
    }

    fn record_with(&self, state: &State, upstream: &[UpstreamRun]) {
        if self.ctx.has_recorders() {
            let times = self.shared.times_with(state);
            let run = Some((self.name(), self.shared.spec));
            self.ctx.record_task_transition(run, state, times, upstream);
        }
    }

    /// Moves the run to its terminal state, logs it, and wakes its waiters.
    #[inline]
    pub(crate) fn finish(&self, state: State, value: Option<T::Output>) {
        self.end(state, value, |state| self.record(state));
    }

    /// As [`finish`](Self::finish), for a quick run of a map's lane (see
    /// [`Recorder::end_batch`](crate::recorder::Recorder::end_batch)): its
    /// end goes to the recorders through the lane's batches. Returns the
    /// time its end was stamped with (nanoseconds since the epoch).
    #[inline]
    pub(crate) fn finish_quick(
        &self,
        state: State,
        value: Option<T::Output>,
        ends: &mut LaneEnds<'_>,
    ) -> i64 {
        self.end(state, value, |state| {
            if self.ctx.has_recorders() {
                let times = self.shared.times_with(state);
                let run = (self.name(), self.shared.spec);
                ends.ended(self.ctx, run, state, times);
            }
        })
    }

    #[inline(always)]
    fn end(&self, state: State, value: Option<T::Output>, record: impl FnOnce(&State)) -> i64 {
        let name = self.name();
        let state = state.entered_now();
        let at = state.nanos();
        if state.is_completed() || state.is_cancelled() {
            implied_log!(name, INFO, "{}", FinishedLine(&state));
        } else {
            implied_log!(name, ERROR, "{}", FinishedLine(&state));
        }
        record(&state);
        self.shared.finish(state, value);
        at
    }
}
