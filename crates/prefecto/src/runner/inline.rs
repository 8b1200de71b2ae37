//! A sync body run from start to end on the calling thread: how a map's
//! pool lanes run their inputs, with no queue, channel or wake-up per run.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::attempt::{Attempt, body_outcome};
use super::task_run::TaskRun;
use crate::context::{self, FlowRunContext};
use crate::queued_body;
use crate::state::State;
use crate::task::{Invocation, Task};

/// Whether runs of `task` may run inline on a pool thread: a sync body
/// with no timeout (a thread running its own body could not give up on
/// it), no retries and no tag concurrency limits (their delay and their
/// wait would hold the thread), in a flow run whose pool has started; not
/// for a map made inside a sync body, which waits for it holding a pool
/// thread: its runs go where that body can run them meanwhile.
pub(crate) fn runs_inline<T: Task>(ctx: &FlowRunContext, task: &T) -> bool {
    let spec = task.spec();
    !spec.is_async
        && !queued_body::in_body()
        && spec.timeout.is_none()
        && spec.retries == 0
        && (spec.tags.is_empty() || ctx.seams.slot_limiter.is_none())
        && ctx.pool().is_ok()
}

impl<T: Task> TaskRun<'_, T> {
    /// Runs the run's one attempt here, on this thread, and ends the run:
    /// for a task that [`runs_inline`], on a thread outside the runtime.
    /// Once the run's scope is cancelled, the body never starts.
    pub(crate) fn run_inline(&self, args: T::Args) {
        if self.scope.is_cancelled() {
            self.finish(State::cancelled(self.scope.reason()), None);
            return;
        }
        let cache_key = self.task.cache_key(&args);
        if let Some(value) = cache_key.as_deref().and_then(|key| self.cached_value(key)) {
            self.finish(State::cached(), Some(value));
            return;
        }
        self.transition(State::running());
        let attempt = match self.task.invoke_as(self.name(), args) {
            Invocation::Sync(body) => {
                // The flow run stays current inside the body, for the tasks it
                // calls, and the thread runs the bodies of the runs it waits for.
                let outcome = context::with_thread_context(self.ctx.clone(), || {
                    queued_body::run_as_helper(|| catch_unwind(AssertUnwindSafe(body)))
                });
                body_outcome(outcome)
            }
            Invocation::Async(_) => Attempt::Final(State::crashed(format!(
                "Task '{}' says its body is sync, but gave an async one.",
                self.task.spec().name
            ))),
        };
        let (state, value) = self.settle(attempt, cache_key);
        self.finish(state, value);
    }
}
