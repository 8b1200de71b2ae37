//! Driving a task run to a terminal state: its attempts, the retries
//! between them, and its end.

use std::time::Duration;

use super::attempt::{Attempt, Started, finish_attempt};
use super::task_run::TaskRun;
use crate::context::{CancelScope, task_log};
use crate::inputs::{RunArgs, not_ready};
use crate::state::State;
use crate::task::Task;

impl<T: Task> TaskRun<'_, T> {
    /// Walks the run through its states to a terminal one: the engine.
    pub(crate) async fn drive(&self, args: RunArgs<T::Args>) {
        if let Some(args) = self.inputs_ready(args).await {
            let started = self.start(args);
            self.drive_started(started).await;
        }
    }

    /// The arguments, once the runs they come from have completed; `None`
    /// (and the run ended) if one did not, or the run was cancelled first.
    /// The wait holds no worker: the body is not queued yet.
    pub(crate) async fn inputs_ready(&self, args: RunArgs<T::Args>) -> Option<T::Args> {
        if self.scope.is_cancelled() {
            self.finish(State::cancelled(self.scope.reason()), None);
            return None;
        }
        let waiting = match args {
            RunArgs::Ready(args) => return Some(args),
            RunArgs::Waiting(waiting) => waiting,
        };
        let resolved = tokio::select! {
            resolved = waiting.resolve() => resolved,
            _ = self.scope.token().cancelled() => {
                self.finish(State::cancelled(self.scope.reason()), None);
                return None;
            }
        };
        match resolved {
            Ok(args) => Some(args),
            Err(message) => {
                self.finish(not_ready(message), None);
                None
            }
        }
    }

    /// Drives a run whose first attempt has started, through retries, to a terminal state.
    pub(crate) async fn drive_started(&self, first: Started<T>) {
        let (ctx, task, scope) = (self.ctx, self.task, self.scope);
        let spec = task.spec();
        let name = self.name();
        let mut retries_done = 0u32;
        let mut started = first;
        let (state, value) = loop {
            let retry_args = started.retry_args.take();
            let cache_key = started.cache_key.take();
            let attempt = finish_attempt(ctx, started.body, spec.timeout, scope).await;
            match (attempt, retry_args) {
                (Attempt::Failed(failed, _), Some(next_args)) => {
                    let message = failed.message().unwrap_or_default().to_string();
                    retries_done += 1;
                    task_log!(
                        ctx,
                        name,
                        WARN,
                        "Task run failed with error: {} - Retry {}/{} will start {} second(s) from now",
                        message,
                        retries_done,
                        spec.retries,
                        spec.retry_delay.as_secs_f64()
                    );
                    self.transition(State::awaiting_retry(message));
                    // Boxed for the same reason as the timeout: retries are rare.
                    if !Box::pin(sleep_unless_cancelled(spec.retry_delay, scope)).await
                        || scope.is_cancelled()
                    {
                        break (State::cancelled(scope.reason()), None);
                    }
                    started = self.start_attempt(next_args, retries_done, cache_key);
                }
                (last, _) => break self.settle(last, cache_key),
            }
        };
        self.finish(state, value);
    }
}

impl<T: Task> TaskRun<'_, T> {
    /// The terminal state and value an attempt leaves when no retry
    /// follows: a completed value persisted for its cache key, a failure's
    /// error kept for the run's `TaskRunError`.
    pub(super) fn settle(
        &self,
        attempt: Attempt<T::Output>,
        cache_key: Option<String>,
    ) -> (State, Option<T::Output>) {
        let (ctx, task) = (self.ctx, self.task);
        let spec = task.spec();
        match attempt {
            Attempt::Cached(value) => (State::cached_unstamped(), Some(value)),
            Attempt::Completed(value) => {
                if let (Some(key), Some(store)) = (cache_key, &ctx.seams.result_store)
                    && let Some(stored) = task.persist(&value)
                {
                    store.put(spec.name, key, stored, spec.cache_expiration);
                }
                (State::completed_unstamped(), Some(value))
            }
            Attempt::Failed(failed, source) => {
                task_log!(
                    ctx,
                    self.name(),
                    ERROR,
                    "Task run failed with error: {} - Retries are exhausted",
                    failed.message().unwrap_or_default()
                );
                if let Some(source) = source {
                    self.shared.keep_error(source);
                }
                (failed, None)
            }
            Attempt::Final(state) => (state, None),
        }
    }
}

/// Sleeps, unless the scope is cancelled first. True if the sleep finished.
pub(super) async fn sleep_unless_cancelled(delay: Duration, scope: &CancelScope) -> bool {
    if delay.is_zero() {
        return !scope.is_cancelled();
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = scope.token().cancelled() => false,
    }
}
