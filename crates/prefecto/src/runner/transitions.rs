//! A task run's transitions: each is handed to the recorders with the
//! run's times, then set on the run its future reads.

use crate::context::{FlowRunContext, implied_log};
use crate::future::RunShared;
use crate::names::TaskRunName;
use crate::recorder::{CreatedLine, FinishedLine, SubmittedLine};
use crate::state::State;
use crate::task::Task;

use std::sync::Arc;

/// A task run, `Pending`, not yet announced.
pub(crate) fn new_run<T: Task>(task: &T, index: u64) -> Arc<RunShared<T::Output>> {
    let name = TaskRunName {
        task: task.spec().name,
        index,
    };
    RunShared::new(name, task.spec(), State::pending())
}

/// Records and logs a task run's creation and submission, as it is submitted.
pub(crate) fn announce_run<T>(ctx: &FlowRunContext, shared: &RunShared<T>) {
    let name = shared.name;
    if ctx.has_recorders() {
        transition(ctx, shared, State::pending());
    }
    implied_log!(ctx, None, INFO, "{}", CreatedLine(name, name.task));
    implied_log!(ctx, None, INFO, "{}", SubmittedLine(name));
}

/// Ends a task run that was never submitted in `Cancelled`, so that every
/// input of a map has an outcome.
pub(crate) fn cancel_unsubmitted<T>(ctx: &FlowRunContext, shared: &RunShared<T>, message: &str) {
    // Straight to Cancelled: it was never submitted, so never Pending.
    let cancelled = State::cancelled(message);
    ctx.record_transition(Some((shared.name, shared.spec)), &cancelled);
    shared.finish(cancelled, None);
}

pub(super) fn transition<T>(ctx: &FlowRunContext, shared: &RunShared<T>, state: State) {
    record(ctx, shared, &state);
    shared.set_state(state);
}

/// Hands a task run's transition to the recorders, with its times.
pub(super) fn record<T>(ctx: &FlowRunContext, shared: &RunShared<T>, state: &State) {
    if ctx.has_recorders() {
        let times = shared.times_with(state);
        ctx.record_task_transition(Some((shared.name, shared.spec)), state, times);
    }
}

pub(super) fn finish_run<T>(
    ctx: &FlowRunContext,
    shared: &RunShared<T>,
    state: State,
    value: Option<T>,
) {
    let name = shared.name;
    let state = state.entered_now();
    if state.is_completed() || state.is_cancelled() {
        implied_log!(name, INFO, "{}", FinishedLine(&state));
    } else {
        implied_log!(name, ERROR, "{}", FinishedLine(&state));
    }
    record(ctx, shared, &state);
    shared.finish(state, value);
}
