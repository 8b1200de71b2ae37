//! One attempt of a task body: started in input order (a sync body handed
//! to the pool, an async one made ready to poll), then awaited under the
//! run's timeout and cancellation.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use tokio::sync::oneshot;

use super::task_run::TaskRun;
use crate::context::{self, CancelScope, FlowRunContext};
use crate::queued_body;
use crate::slot_limiter::{SlotLimiter, SlotRequest};
use crate::state::State;
use crate::task::{BodyError, ErrorSource, Invocation, Task, panic_message};

/// How one attempt of the body ended.
pub(super) enum Attempt<T> {
    Completed(T),
    /// Found in the cache: the body did not run.
    Cached(T),
    /// Failed (with the body's own error, if it returned one) or timed out:
    /// may be retried.
    Failed(State, Option<ErrorSource>),
    /// Crashed or cancelled: final.
    Final(State),
}

/// An attempt whose body has been handed over: a sync body to the pool, an
/// async one ready to poll. Starting is synchronous so that a caller can start
/// runs in input order.
pub(crate) struct Started<T: Task> {
    pub(super) body: StartedBody<T::Output>,
    /// The arguments for the next attempt, if the task retries.
    pub(super) retry_args: Option<T::Args>,
    /// Where a completed result is persisted, if the task caches.
    pub(super) cache_key: Option<String>,
}

pub(super) enum StartedBody<T> {
    /// Queued for a thread: `started` says when it starts (for a run with a
    /// timeout, which covers its execution only); `done` gives its outcome,
    /// or `None` if it was cancelled before it started.
    Sync {
        started: Option<oneshot::Receiver<()>>,
        done: oneshot::Receiver<Option<std::thread::Result<Result<T, BodyError>>>>,
    },
    Async(std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, BodyError>> + Send>>),
    /// The pool could not start: the run crashes.
    Crashed(State),
    /// An earlier run's persisted result: the body does not run.
    Cached(T),
}

impl<T: Task> TaskRun<'_, T> {
    /// The persisted result for the run's cache key, if there is a valid one.
    pub(super) fn cached_value(&self, key: &str) -> Option<T::Output> {
        let (ctx, task) = (self.ctx, self.task);
        if task.spec().refresh_cache || ctx.seams.refresh_cache {
            return None;
        }
        let stored = ctx
            .seams
            .result_store
            .as_ref()?
            .get(task.spec().name, key)?;
        task.restore(&stored)
    }

    /// Starts the run's first attempt, or finds its cached result.
    pub(crate) fn start(&self, args: T::Args) -> Started<T> {
        let cache_key = self.task.cache_key(&args);
        self.start_attempt(args, 0, cache_key)
    }

    /// Moves the run to `Running` (or `Retrying`) and starts one attempt.
    pub(super) fn start_attempt(
        &self,
        args: T::Args,
        retries_done: u32,
        cache_key: Option<String>,
    ) -> Started<T> {
        let (ctx, task, shared, scope) = (self.ctx, self.task, self.shared, self.scope);
        if retries_done == 0
            && let Some(value) = cache_key.as_deref().and_then(|key| self.cached_value(key))
        {
            return Started {
                body: StartedBody::Cached(value),
                retry_args: None,
                cache_key: None,
            };
        }
        let running = if retries_done == 0 {
            State::running()
        } else {
            State::retrying()
        };
        let retry_args = if retries_done < task.spec().retries {
            task.retry_args(&args)
        } else {
            None
        };
        // A tagged run under Prefect's tag concurrency limits waits for its slot
        // before it is Running, so that its start time is when it really starts.
        let tagged = match ctx.seams.slot_limiter.as_ref() {
            Some(limiter) if !task.spec().tags.is_empty() => Some(SlotWait {
                limiter: limiter.clone(),
                request: SlotRequest {
                    tags: task.spec().tags,
                    task_run_id: shared.name().id_in(ctx.id),
                },
                running,
            }),
            _ => {
                self.transition(running);
                None
            }
        };
        let body = match task.invoke_as(shared.name(), args) {
            Invocation::Async(body) => match tagged {
                None => StartedBody::Async(body),
                Some(wait) => {
                    let (ctx, task, shared, scope) =
                        (ctx.clone(), task.clone(), shared.clone(), scope.clone());
                    StartedBody::Async(Box::pin(async move {
                        let slot = wait.limiter.acquire(wait.request).await;
                        let run = TaskRun {
                            ctx: &ctx,
                            task: &task,
                            shared: &shared,
                            scope: &scope,
                        };
                        run.transition(wait.running.entered_now());
                        let result = body.await;
                        if let Some(slot) = slot {
                            slot.release().await;
                        }
                        result
                    }))
                }
            },
            Invocation::Sync(body) => match ctx.pool() {
                Err(message) => StartedBody::Crashed(State::crashed(message)),
                Ok(pool) => {
                    let (sender, done) = oneshot::channel();
                    // Only a run with a timeout needs to know when its body starts.
                    let (started_sender, started) = match task.spec().timeout {
                        Some(_) => {
                            let (sender, receiver) = oneshot::channel();
                            (Some(sender), Some(receiver))
                        }
                        None => (None, None),
                    };
                    let (ctx, task, shared, scope) =
                        (ctx.clone(), task.clone(), shared.clone(), scope.clone());
                    let run_shared = shared.clone();
                    let queued = queued_body::queue(move || {
                        // Once cancelled, a queued body never starts: after a kill
                        // switch trips or the flow run is cancelled, no body starts.
                        let outcome = if scope.is_cancelled() {
                            None
                        } else {
                            let run = TaskRun {
                                ctx: &ctx,
                                task: &task,
                                shared: &shared,
                                scope: &scope,
                            };
                            let slot = tagged.and_then(|wait| {
                                // A body's thread is outside any runtime: it may block here.
                                let slot =
                                    futures::executor::block_on(wait.limiter.acquire(wait.request));
                                run.transition(wait.running.entered_now());
                                slot
                            });
                            if let Some(started) = started_sender {
                                let _ = started.send(());
                            }
                            let outcome = context::with_thread_context(ctx.clone(), || {
                                queued_body::run_as_helper(|| catch_unwind(AssertUnwindSafe(body)))
                            });
                            if let Some(slot) = slot {
                                futures::executor::block_on(slot.release());
                            }
                            Some(outcome)
                        };
                        let _ = sender.send(outcome);
                    });
                    let (helper, to_pool) = run_shared.queue_body(&queued);
                    if let Some(helper) = helper {
                        helper.offer(queued.clone());
                    }
                    if to_pool {
                        pool.spawn(move || {
                            queued.run_here();
                        });
                    }
                    StartedBody::Sync { started, done }
                }
            },
        };
        Started {
            body,
            retry_args,
            cache_key,
        }
    }
}

/// A tagged run's wait for its concurrency slots, before which it is not
/// yet Running: its start time is when it really starts.
pub(super) struct SlotWait {
    limiter: Arc<dyn SlotLimiter>,
    request: SlotRequest,
    running: State,
}

/// Awaits `future`, or gives up after `limit` and returns the limit.
///
/// The timer is boxed: it is the largest part of a run's state, and most tasks
/// have no timeout, so every engine would otherwise carry its space.
pub(super) async fn within<F: std::future::Future>(
    limit: Option<Duration>,
    future: F,
) -> Result<F::Output, Duration> {
    match limit {
        None => Ok(future.await),
        Some(limit) => Box::pin(tokio::time::timeout(limit, future))
            .await
            .map_err(|_| limit),
    }
}

pub(super) fn timeout_message(timeout: Duration) -> String {
    format!(
        "Task run exceeded timeout of {} second(s)",
        timeout.as_secs_f64()
    )
}

pub(super) fn body_outcome<T>(outcome: std::thread::Result<Result<T, BodyError>>) -> Attempt<T> {
    match outcome {
        Ok(Ok(value)) => Attempt::Completed(value),
        Ok(Err(BodyError { message, source })) => Attempt::Failed(State::failed(message), source),
        Err(panic) => Attempt::Final(State::crashed(format!(
            "Task run panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

pub(super) async fn finish_attempt<T: Send + 'static>(
    ctx: &Arc<FlowRunContext>,
    body: StartedBody<T>,
    timeout: Option<Duration>,
    scope: &CancelScope,
) -> Attempt<T> {
    match body {
        StartedBody::Crashed(state) => Attempt::Final(state),
        StartedBody::Cached(value) => Attempt::Cached(value),
        StartedBody::Async(body) => {
            // The flow run stays current inside the body, for the tasks it calls.
            let body = AssertUnwindSafe(body).catch_unwind();
            let body = match context::in_task_context(ctx) {
                true => Either::Left(body),
                false => Either::Right(context::with_task_context(ctx.clone(), body)),
            };
            let timed = async {
                match within(timeout, body).await {
                    Ok(outcome) => body_outcome(outcome),
                    Err(limit) => Attempt::Failed(State::timed_out(timeout_message(limit)), None),
                }
            };
            // The body is polled first, so a body that finishes at once never
            // touches the shared cancellation token; on cancellation the body is
            // dropped at its next `.await`.
            tokio::select! {
                biased;
                attempt = timed => attempt,
                _ = scope.token().cancelled() => Attempt::Final(State::cancelled(scope.reason())),
            }
        }
        StartedBody::Sync { started, done } => {
            // The timeout counts from the start: waiting for a thread is not execution.
            let timeout = match started {
                Some(started) => started.await.ok().and(timeout),
                None => timeout,
            };
            sync_outcome(within(timeout, done).await, scope)
        }
    }
}

type SyncDone<T> = Result<
    Result<Option<std::thread::Result<Result<T, BodyError>>>, oneshot::error::RecvError>,
    Duration,
>;

fn sync_outcome<T>(done: SyncDone<T>, scope: &CancelScope) -> Attempt<T> {
    match done {
        Ok(Ok(Some(outcome))) => body_outcome(outcome),
        Ok(Ok(None)) => Attempt::Final(State::cancelled(scope.reason())),
        Ok(Err(_)) => Attempt::Final(State::crashed(
            "The worker thread running this task run stopped before it finished.",
        )),
        // The thread cannot be interrupted; its late result is dropped.
        Err(limit) => Attempt::Failed(State::timed_out(timeout_message(limit)), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_crashed() {
        let outcome: std::thread::Result<Result<u8, BodyError>> = catch_unwind(|| panic!("boom"));
        match body_outcome(outcome) {
            Attempt::Final(state) => {
                assert!(state.is_crashed());
                assert_eq!(state.message(), Some("Task run panicked: boom"));
            }
            _ => panic!("expected a crash"),
        }
    }
}
