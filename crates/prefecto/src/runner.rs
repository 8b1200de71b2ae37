//! The engine of a task run: states, retries, timeouts, panics and cancellation.
//!
//! Each task run is one Tokio task that walks the run through its states.
//! Async bodies run on the Tokio runtime; sync bodies run on the flow run's
//! bounded pool of OS threads (as Prefect's `ThreadPoolTaskRunner(max_workers)`),
//! so a CPU-bound body never blocks the runtime and never gets a thread of its own.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;

use crate::args::{MapArgs, MapError};
use crate::blocking::block_on;
use crate::context::{self, implied_log, task_log, CancelScope, FlowRunContext};
use crate::future::{PrefectFuture, PrefectFutureList, RunShared, TaskRunError};
use crate::names::TaskRunName;
use crate::progress::MapProgress;
use crate::recorder::{CreatedLine, FinishedLine, SubmittedLine};
use crate::slot_limiter::{SlotLimiter, SlotRequest};
use crate::state::State;
use crate::task::{panic_message, BodyError, Invocation, Task};

/// Submits one task run of `task` in the caller's flow run: what the
/// generated `task.submit(..)` calls, with the arguments as a tuple.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn one() -> i64 {
///     prefecto::runner::submit(&add, (1, 2)).result().unwrap()
/// }
///
/// assert_eq!(one().unwrap(), 3);
/// ```
pub fn submit<T: Task>(task: &T, args: T::Args) -> PrefectFuture<T::Output> {
    let ctx = context::current();
    let index = ctx.reserve_run_names(task.spec().name, 1);
    let scope = ctx.scope.clone();
    spawn_run(&ctx, task, args, index, &scope)
}

/// A plain `map` of more inputs than this shows a progress bar.
const PROGRESS_ABOVE: usize = 8;

/// Submits one task run per input, in input order: what `task.map(..)` calls.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn many() -> Vec<i64> {
///     let futures = prefecto::runner::map(&add, (vec![1, 2], unmapped(10))).unwrap();
///     futures.results().unwrap()
/// }
///
/// assert_eq!(many().unwrap(), vec![11, 12]);
/// ```
pub fn map<T: Task, M: MapArgs<T::Args>>(
    task: &T,
    args: M,
) -> Result<PrefectFutureList<T::Output>, MapError> {
    let inputs = args.into_inputs(task.spec().param_names)?;
    let ctx = context::current();
    let first = ctx.reserve_run_names(task.spec().name, inputs.len());
    let scope = ctx.scope.clone();
    // More than a handful of inputs gets a progress bar, in a terminal.
    let progress = match &ctx.seams.progress {
        Some(display) if inputs.len() > PROGRESS_ABOVE => {
            display.start_map(task.spec().name, inputs.len(), 0)
        }
        _ => None,
    };
    let futures = inputs
        .into_iter()
        .zip(first..)
        .map(|(args, index)| {
            spawn_run_on(
                &ctx,
                &ctx.handle,
                task,
                args,
                index,
                &scope,
                progress.as_ref(),
            )
        })
        .collect();
    Ok(PrefectFutureList::new(futures))
}

/// Runs `task` as a task run and blocks until it is terminal: what calling a sync task does.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn halve(x: u32) -> Result<u32, String> {
///     if x % 2 == 0 { Ok(x / 2) } else { Err(format!("{x} is odd")) }
/// }
///
/// #[flow]
/// fn halves() -> (u32, String) {
///     let half = prefecto::runner::call(&halve, (8,)).unwrap();
///     let odd = halve(3).unwrap_err(); // the same, through the task value
///     (half, odd.to_string())
/// }
///
/// assert_eq!(halves().unwrap(), (4, "Task run 'halve-1' finished in state Failed('3 is odd')".to_string()));
/// ```
///
/// Called from async code on a current-thread runtime, the run's engine goes
/// to prefecto's own runtime: the caller's cannot run it while it waits.
pub fn call<T: Task>(task: &T, args: T::Args) -> Result<T::Output, TaskRunError> {
    let on_current_thread_runtime = matches!(
        Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(RuntimeFlavor::CurrentThread)
    );
    if !on_current_thread_runtime {
        return block_on(submit(task, args).result_async());
    }
    let ctx = context::current();
    let index = ctx.reserve_run_names(task.spec().name, 1);
    let scope = ctx.scope.clone();
    let handle = context::own_runtime().handle().clone();
    let future = spawn_run_on(&ctx, &handle, task, args, index, &scope, None);
    futures::executor::block_on(future.result_async())
}

/// Runs `task` as a task run: what calling an async task does.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// async fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// #[flow]
/// async fn doubled() -> u32 {
///     prefecto::runner::call_async(&double, (4,)).await.unwrap() + double(1).await.unwrap()
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(doubled().await.unwrap(), 10);
/// # });
/// ```
pub fn call_async<T: Task>(
    task: &T,
    args: T::Args,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T::Output, TaskRunError>> + Send>> {
    Box::pin(submit(task, args).result_async())
}

/// Creates the task run `{task}-{index}` and starts its engine on the flow run's runtime.
pub(crate) fn spawn_run<T: Task>(
    ctx: &Arc<FlowRunContext>,
    task: &T,
    args: T::Args,
    index: u64,
    scope: &Arc<CancelScope>,
) -> PrefectFuture<T::Output> {
    spawn_run_on(ctx, &ctx.handle, task, args, index, scope, None)
}

/// As [`spawn_run`], with the engine on the given runtime.
fn spawn_run_on<T: Task>(
    ctx: &Arc<FlowRunContext>,
    handle: &Handle,
    task: &T,
    args: T::Args,
    index: u64,
    scope: &Arc<CancelScope>,
    progress: Option<&Arc<dyn MapProgress>>,
) -> PrefectFuture<T::Output> {
    let shared = new_run(task, index);
    announce_run(ctx, &shared);
    let (ctx_, task_, shared_, scope_) = (ctx.clone(), task.clone(), shared.clone(), scope.clone());
    let progress = progress.cloned();
    let engine = async move {
        drive_run(&ctx_, &task_, args, &shared_, &scope_).await;
        if let Some(progress) = progress {
            progress.run_finished(&shared_.state());
        }
    };
    ctx.tracker.spawn_on(engine, handle);
    PrefectFuture::new(shared)
}

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

/// How one attempt of the body ended.
enum Attempt<T> {
    Completed(T),
    /// Found in the cache: the body did not run.
    Cached(T),
    /// Failed or timed out: may be retried.
    Failed(State),
    /// Crashed or cancelled: final.
    Final(State),
}

fn transition<T>(ctx: &FlowRunContext, shared: &RunShared<T>, state: State) {
    record(ctx, shared, &state);
    shared.set_state(state);
}

/// Hands a task run's transition to the recorders, with its times.
fn record<T>(ctx: &FlowRunContext, shared: &RunShared<T>, state: &State) {
    if ctx.has_recorders() {
        let times = shared.times_with(state);
        ctx.record_task_transition(Some((shared.name, shared.spec)), state, times);
    }
}

/// An attempt whose body has been handed over: a sync body to the pool, an
/// async one ready to poll. Starting is synchronous so that a caller can start
/// runs in input order.
pub(crate) struct Started<T: Task> {
    body: StartedBody<T::Output>,
    /// The arguments for the next attempt, if the task retries.
    retry_args: Option<T::Args>,
    /// Where a completed result is persisted, if the task caches.
    cache_key: Option<String>,
}

enum StartedBody<T> {
    Sync(oneshot::Receiver<Option<std::thread::Result<Result<T, BodyError>>>>),
    Async(std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, BodyError>> + Send>>),
    /// The pool could not start: the run crashes.
    Crashed(State),
    /// An earlier run's persisted result: the body does not run.
    Cached(T),
}

/// The persisted result for the run's cache key, if there is a valid one.
fn cached_value<T: Task>(ctx: &FlowRunContext, task: &T, key: &str) -> Option<T::Output> {
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

/// Moves the run to `Running` (or `Retrying`) and starts one attempt.
pub(crate) fn start_attempt<T: Task>(
    ctx: &Arc<FlowRunContext>,
    task: &T,
    args: T::Args,
    shared: &Arc<RunShared<T::Output>>,
    scope: &Arc<CancelScope>,
    retries_done: u32,
    cache_key: Option<String>,
) -> Started<T> {
    if retries_done == 0 {
        if let Some(value) = cache_key
            .as_deref()
            .and_then(|key| cached_value(ctx, task, key))
        {
            return Started {
                body: StartedBody::Cached(value),
                retry_args: None,
                cache_key: None,
            };
        }
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
                task_run_id: shared.name.id_in(ctx.id),
            },
            running,
        }),
        _ => {
            transition(ctx, shared, running);
            None
        }
    };
    let body = match task.invoke(args) {
        Invocation::Async(body) => match tagged {
            None => StartedBody::Async(body),
            Some(wait) => {
                let (ctx, shared) = (ctx.clone(), shared.clone());
                StartedBody::Async(Box::pin(async move {
                    let slot = wait.limiter.acquire(wait.request).await;
                    transition(&ctx, &shared, wait.running.entered_now());
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
                let (sender, receiver) = oneshot::channel();
                let (worker_ctx, worker_scope) = (ctx.clone(), scope.clone());
                let worker_shared = shared.clone();
                pool.spawn(move || {
                    // Queued bodies are skipped once cancelled: after a kill switch trips, no body starts.
                    let outcome = if worker_scope.is_cancelled() {
                        None
                    } else {
                        let slot = tagged.and_then(|wait| {
                            // A pool thread is outside any runtime: it may block here.
                            let slot =
                                futures::executor::block_on(wait.limiter.acquire(wait.request));
                            transition(&worker_ctx, &worker_shared, wait.running.entered_now());
                            slot
                        });
                        let outcome = context::with_thread_context(worker_ctx, || {
                            catch_unwind(AssertUnwindSafe(body))
                        });
                        if let Some(slot) = slot {
                            futures::executor::block_on(slot.release());
                        }
                        Some(outcome)
                    };
                    let _ = sender.send(outcome);
                });
                StartedBody::Sync(receiver)
            }
        },
    };
    Started {
        body,
        retry_args,
        cache_key,
    }
}

/// A tagged run's wait for its concurrency slots, before which it is not
/// yet Running: its start time is when it really starts.
struct SlotWait {
    limiter: Arc<dyn SlotLimiter>,
    request: SlotRequest,
    running: State,
}

/// Starts a run's first attempt, or finds its cached result.
pub(crate) fn start_run<T: Task>(
    ctx: &Arc<FlowRunContext>,
    task: &T,
    args: T::Args,
    shared: &Arc<RunShared<T::Output>>,
    scope: &Arc<CancelScope>,
) -> Started<T> {
    let cache_key = task.cache_key(&args);
    start_attempt(ctx, task, args, shared, scope, 0, cache_key)
}

/// Walks one task run through its states to a terminal one: the engine.
pub(crate) async fn drive_run<T: Task>(
    ctx: &Arc<FlowRunContext>,
    task: &T,
    args: T::Args,
    shared: &Arc<RunShared<T::Output>>,
    scope: &Arc<CancelScope>,
) {
    if scope.is_cancelled() {
        return finish_run(ctx, shared, State::cancelled(scope.reason()), None);
    }
    let started = start_run(ctx, task, args, shared, scope);
    drive_started(ctx, task, shared, scope, started).await;
}

/// Drives a run whose first attempt has started, through retries, to a terminal state.
pub(crate) async fn drive_started<T: Task>(
    ctx: &Arc<FlowRunContext>,
    task: &T,
    shared: &Arc<RunShared<T::Output>>,
    scope: &Arc<CancelScope>,
    first: Started<T>,
) {
    let spec = task.spec();
    let name = shared.name;
    let mut retries_done = 0u32;
    let mut started = first;
    let (state, value) =
        loop {
            let retry_args = started.retry_args.take();
            let cache_key = started.cache_key.take();
            match finish_attempt(ctx, started.body, spec.timeout, scope).await {
                Attempt::Cached(value) => break (State::cached(), Some(value)),
                Attempt::Completed(value) => {
                    if let (Some(key), Some(store)) = (cache_key, &ctx.seams.result_store) {
                        if let Some(stored) = task.persist(&value) {
                            store.put(spec.name, key, stored, spec.cache_expiration);
                        }
                    }
                    break (State::completed(), Some(value));
                }
                Attempt::Failed(failed) => {
                    let message = failed.message().unwrap_or_default().to_string();
                    let Some(next_args) = retry_args else {
                        task_log!(
                            ctx,
                            name,
                            ERROR,
                            "Task run failed with error: {} - Retries are exhausted",
                            message
                        );
                        break (failed, None);
                    };
                    retries_done += 1;
                    task_log!(
                    ctx, name, WARN,
                    "Task run failed with error: {} - Retry {}/{} will start {} second(s) from now",
                    message, retries_done, spec.retries, spec.retry_delay.as_secs_f64()
                );
                    transition(ctx, shared, State::awaiting_retry(message));
                    // Boxed for the same reason as the timeout: retries are rare.
                    if !Box::pin(sleep_unless_cancelled(spec.retry_delay, scope)).await
                        || scope.is_cancelled()
                    {
                        break (State::cancelled(scope.reason()), None);
                    }
                    started =
                        start_attempt(ctx, task, next_args, shared, scope, retries_done, cache_key);
                }
                Attempt::Final(state) => break (state, None),
            }
        };
    finish_run(ctx, shared, state, value);
}

fn finish_run<T>(ctx: &FlowRunContext, shared: &RunShared<T>, state: State, value: Option<T>) {
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

/// Sleeps, unless the scope is cancelled first. True if the sleep finished.
async fn sleep_unless_cancelled(delay: Duration, scope: &CancelScope) -> bool {
    if delay.is_zero() {
        return !scope.is_cancelled();
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = scope.token().cancelled() => false,
    }
}

/// Awaits `future`, or gives up after `limit` and returns the limit.
///
/// The timer is boxed: it is the largest part of a run's state, and most tasks
/// have no timeout, so every engine would otherwise carry its space.
async fn within<F: std::future::Future>(
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

fn timeout_message(timeout: Duration) -> String {
    format!(
        "Task run exceeded timeout of {} second(s)",
        timeout.as_secs_f64()
    )
}

fn body_outcome<T>(outcome: std::thread::Result<Result<T, BodyError>>) -> Attempt<T> {
    match outcome {
        Ok(Ok(value)) => Attempt::Completed(value),
        Ok(Err(BodyError(message))) => Attempt::Failed(State::failed(message)),
        Err(panic) => Attempt::Final(State::crashed(format!(
            "Task run panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

async fn finish_attempt<T: Send + 'static>(
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
            let body =
                context::with_task_context(ctx.clone(), AssertUnwindSafe(body).catch_unwind());
            let timed = async {
                match within(timeout, body).await {
                    Ok(outcome) => body_outcome(outcome),
                    Err(limit) => Attempt::Failed(State::timed_out(timeout_message(limit))),
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
        StartedBody::Sync(receiver) => match within(timeout, receiver).await {
            Ok(Ok(Some(outcome))) => body_outcome(outcome),
            Ok(Ok(None)) => Attempt::Final(State::cancelled(scope.reason())),
            Ok(Err(_)) => Attempt::Final(State::crashed(
                "The worker thread running this task run stopped before it finished.",
            )),
            // The thread cannot be interrupted; its late result is dropped.
            Err(limit) => Attempt::Failed(State::timed_out(timeout_message(limit))),
        },
    }
}

/// Drains a runtime's task runs: used by flows before they end.
pub(crate) async fn wait_for_task_runs(ctx: &FlowRunContext) {
    ctx.tracker.close();
    ctx.tracker.wait().await;
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
