//! A run's one attempt run from start to end where its map's lane is: a
//! sync body on the pool thread of a pool lane, with no queue, channel or
//! wake-up per run; an async one awaited in its lane's task, without the
//! engine's retries and timeouts around it.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;

use futures::FutureExt;

use super::attempt::{Attempt, body_outcome};
use super::lane_ends::LaneEnds;
use super::late_running;
use super::task_run::TaskRun;
use crate::context::{self, FlowRunContext};
use crate::queued_body;
use crate::state::State;
use crate::task::{BodyError, Task};

/// Whether the runs of a map of `task` may run inline in its lanes: one
/// attempt, with no timeout (a thread running its own body could not give
/// up on it), no retries and no tag concurrency limits (their delay and
/// their wait would hold the lane). A sync body needs a flow run whose pool
/// has started, and a map not made inside a sync body (which waits for it
/// holding a pool thread: its runs go where that body can run them meanwhile).
pub(crate) fn runs_inline<T: Task>(ctx: &FlowRunContext, task: &T) -> bool {
    let spec = task.spec();
    let one_attempt = spec.timeout.is_none()
        && spec.retries == 0
        && (spec.tags.is_empty() || ctx.seams.slot_limiter.is_none());
    one_attempt && (spec.is_async || (!queued_body::in_body() && ctx.pool().is_ok()))
}

impl<T: Task> TaskRun<'_, T> {
    /// Moves the run to `Running` and gives its cache key, and whether its
    /// `Running` is owed to recorders that hear it only once the run is
    /// seen still running, unless it ends here: cancelled before it started
    /// (its body never starts), or cached.
    ///
    /// `starts_at`: a time its lane knows it starts at, having run nothing
    /// but the engine's own steps since (it made the run `Pending` then, or
    /// its last run ended then, and it went straight on; no recorder heard
    /// its submission): a run with no cache key then starts at that time,
    /// one reading of the clock fewer (callgrind: 2% of a quick async run's
    /// instructions).
    // Inlined into both callers: as a call of its own it cost a quick
    // async run 2% of its instructions (callgrind).
    #[inline(always)]
    fn begin_inline(
        &self,
        args: &T::Args,
        starts_at: Option<i64>,
    ) -> Option<(Option<String>, bool)> {
        if self.scope.is_cancelled() {
            self.finish(State::cancelled(self.scope.reason()), None);
            return None;
        }
        let cache_key = self.task.cache_key(args);
        if let Some(value) = cache_key.as_deref().and_then(|key| self.cached_value(key)) {
            self.finish(State::cached_unstamped(), Some(value));
            return None;
        }
        let at = starts_at.filter(|_| cache_key.is_none());
        let owes = self.start_running(at);
        Some((cache_key, owes))
    }

    /// Runs the run's one attempt here, on this thread, and ends the run:
    /// for a task that [`runs_inline`], on a thread outside the runtime.
    /// Once the run's scope is cancelled, the body never starts. A run
    /// whose `Running` was not paid to any recorder that owed it (its body
    /// ended before the watcher looked) is quick: its end goes to `ends`.
    pub(crate) fn run_inline(&self, args: T::Args, ends: &mut LaneEnds<'_>) {
        let Some((cache_key, owes)) = self.begin_inline(&args, None) else {
            return;
        };
        // Its thread is watched, in a lane's slice: the `Running` is heard
        // if the body is still going at the watcher's next look.
        let (watched, mut quick) = match owes {
            false => (None, true),
            true => {
                match late_running::owe(self.name().index, self.shared.spec, self.shared.times()) {
                    Some(watched) => (Some(watched), true),
                    None => {
                        self.owed_running().pay(self.ctx);
                        (None, false)
                    }
                }
            }
        };
        let name = self.name();
        // The flow run stays current inside the body, for the tasks it
        // calls, and the thread runs the bodies of the runs it waits for.
        let call = || {
            queued_body::run_as_helper(|| {
                catch_unwind(AssertUnwindSafe(|| self.task.call_sync(name, args)))
            })
        };
        let outcome = match context::in_thread_context(self.ctx) {
            true => call(),
            false => context::with_thread_context(self.ctx.clone(), call),
        };
        // Before its end is recorded: a `Running` being paid comes first.
        if let Some(watched) = watched {
            quick &= !watched.ended();
        }
        let attempt = self.inline_attempt(outcome, "sync", "an async");
        let (state, value) = self.settle(attempt, cache_key);
        match quick {
            true => {
                self.finish_quick(state, value, ends);
            }
            false => {
                ends.hand_over();
                self.finish(state, value);
            }
        }
    }

    /// As [`run_inline`](Self::run_inline), for an async body, in a task
    /// whose flow run is `ctx` already (a map's async lane). On
    /// cancellation the body is dropped at its next `.await`. `starts_at`
    /// as for [`begin_inline`](Self::begin_inline). A body that ends at once
    /// has its end handed to the lane's `ends`, which are handed over before
    /// the lane waits for a body that does not. Returns the time a run that
    /// ended in its first poll was stamped with, for the lane's next run.
    pub(crate) async fn run_inline_async(
        &self,
        args: T::Args,
        starts_at: Option<i64>,
        ends: &mut LaneEnds<'_>,
    ) -> Option<i64> {
        let (cache_key, owes) = self.begin_inline(&args, starts_at)?;
        let body = AssertUnwindSafe(self.task.call_async(self.name(), args)).catch_unwind();
        let mut body = std::pin::pin!(body);
        // Polled once before the wait for cancellation is made: a body that
        // finishes at once (most quick ones) never touches the shared token,
        // whose wait costs about as much to make and drop as a quick body.
        let first = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll(cx))).await;
        let attempt = match first {
            // Most quick runs: a value at once, with no key to persist it
            // under. Ended here, as `settle` would end it, without moving
            // the outcome through `inline_attempt` and `settle`'s returns
            // (their stores and reloads were a tenth of this function's time).
            Poll::Ready(Ok(Some(Ok(value)))) if cache_key.is_none() => {
                return Some(self.finish_quick(State::completed_unstamped(), Some(value), ends));
            }
            Poll::Ready(outcome) => self.inline_attempt(outcome, "async", "a sync"),
            Poll::Pending => {
                ends.hand_over();
                // It waits: it is running, for every recorder.
                if owes {
                    self.owed_running().pay(self.ctx);
                }
                tokio::select! {
                    biased;
                    outcome = &mut body => self.inline_attempt(outcome, "async", "a sync"),
                    _ = self.scope.token().cancelled() => Attempt::Final(State::cancelled(self.scope.reason())),
                }
            }
        };
        let (state, value) = self.settle(attempt, cache_key);
        self.finish(state, value);
        None
    }

    /// The attempt a body called inline made: `None` from `call_sync` or
    /// `call_async` means the task's body is of the other kind.
    fn inline_attempt(
        &self,
        outcome: std::thread::Result<Option<Result<T::Output, BodyError>>>,
        says: &str,
        gave: &str,
    ) -> Attempt<T::Output> {
        match outcome {
            Ok(Some(result)) => body_outcome(Ok(result)),
            Ok(None) => Attempt::Final(State::crashed(format!(
                "Task '{}' says its body is {says}, but gave {gave} one.",
                self.task.spec().name
            ))),
            Err(panic) => body_outcome(Err(panic)),
        }
    }
}
