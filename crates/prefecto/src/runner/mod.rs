//! The engine of a task run: states, retries, timeouts, panics and cancellation.
//!
//! Each task run is one Tokio task that walks the run through its states.
//! Async bodies run on the Tokio runtime; sync bodies run on the flow run's
//! bounded pool of OS threads (as Prefect's `ThreadPoolTaskRunner(max_workers)`),
//! so a CPU-bound body never blocks the runtime and never gets a thread of its own.
//!
//! This file holds what `#[task]` calls (`submit`, `map`, calling the task);
//! `TaskRun` is one run and records its transitions, `attempt` starts and
//! awaits one attempt of its body, and `drive` walks it through its
//! attempts to its end.

mod attempt;
mod drive;
mod inline;
mod lane_ends;
pub(crate) mod late_running;
mod task_run;

pub(crate) use attempt::Started;
pub(crate) use inline::runs_inline;
pub(crate) use lane_ends::LaneEnds;
pub(crate) use task_run::{TaskRun, new_run};

use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::args::{MapArgs, MapError, Zipped};
use crate::context::{self, CancelScope, FlowRunContext};
use crate::future::{PrefectFuture, PrefectFutureList, TaskRunError};
use crate::inputs::{RunArgs, Upstream};
use crate::progress::MapProgress;
use crate::task::Task;

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
    submit_with_inputs(task, RunArgs::Ready(args))
}

/// As [`submit`], with arguments that may come from futures, and runs to
/// wait for: what the generated `task.submit(..)` and `task.submit_after(..)`
/// call. The run waits for them (holding no worker) before it starts.
///
/// ```
/// use prefecto::inputs::{Input, IntoRunArgs};
/// use prefecto::prelude::*;
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn chained() -> i64 {
///     let first = add.submit(1, 2);
///     let args = (Input::Future(first), Input::Value(10)).into_run_args();
///     prefecto::runner::submit_with_inputs(&add, args).result().unwrap()
/// }
///
/// assert_eq!(chained().unwrap(), 13);
/// ```
pub fn submit_with_inputs<T: Task>(task: &T, args: RunArgs<T::Args>) -> PrefectFuture<T::Output> {
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
    map_after(task, args, &[])
}

/// As [`map`], each run starting only once every run of `wait_for` has
/// completed: what `task.map_after(..)` calls.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn setup() -> u8 {
///     0
/// }
///
/// #[task]
/// fn step(x: u8) -> u8 {
///     x + 1
/// }
///
/// #[flow]
/// fn after_setup() -> Vec<u8> {
///     let ready = setup.submit();
///     let steps = prefecto::runner::map_after(&step, (vec![1, 2],), &[&ready]).unwrap();
///     steps.results().unwrap()
/// }
///
/// assert_eq!(after_setup().unwrap(), vec![2, 3]);
/// ```
pub fn map_after<T: Task, M: MapArgs<T::Args>>(
    task: &T,
    args: M,
    wait_for: &[&dyn Upstream],
) -> Result<PrefectFutureList<T::Output>, MapError> {
    let inputs = match args.into_inputs(task.spec().param_names)? {
        // Every input zipped before any is submitted: a user's `Clone` of an
        // unmapped value that panics does so before any run starts.
        Zipped::Listed(inputs) => inputs.collect::<Vec<_>>(),
        Zipped::Streamed { param, .. } => return Err(MapError::StreamNeedsBatchTask { param }),
    };
    let ctx = context::current();
    let first = ctx.reserve_run_names(task.spec().name, inputs.len());
    let scope = ctx.scope.clone();
    // More than a handful of inputs gets a progress bar, in a terminal.
    let progress = match &ctx.seams.progress {
        Some(display) if inputs.len() > PROGRESS_ABOVE => {
            display.start_map(task.spec().name, Some(inputs.len()), 0)
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
                args.after(wait_for),
                index,
                &scope,
                progress.as_ref(),
                false,
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
/// Called from a sync task body, the run's body runs on the caller's thread
/// (as in Prefect), so it never waits for a pool thread that its caller
/// holds. Called from async code on a current-thread runtime, the run's
/// engine goes to prefecto's own runtime: the caller's cannot run it while it waits.
pub fn call<T: Task>(task: &T, args: T::Args) -> Result<T::Output, TaskRunError> {
    call_after(task, args, &[])
}

/// As [`call`], the run starting only once every run of `wait_for` has
/// completed: what `task.call_after(..)` does for a sync task.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn setup() -> u8 {
///     1
/// }
///
/// #[task]
/// fn step(x: u8) -> u8 {
///     x + 1
/// }
///
/// #[flow]
/// fn after_setup() -> u8 {
///     let ready = setup.submit();
///     step.call_after(&[&ready], 1).unwrap()
/// }
///
/// assert_eq!(after_setup().unwrap(), 2);
/// ```
pub fn call_after<T: Task>(
    task: &T,
    args: T::Args,
    wait_for: &[&dyn Upstream],
) -> Result<T::Output, TaskRunError> {
    let on_current_thread_runtime = matches!(
        Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(RuntimeFlavor::CurrentThread)
    );
    let ctx = context::current();
    let index = ctx.reserve_run_names(task.spec().name, 1);
    let scope = ctx.scope.clone();
    let handle = if on_current_thread_runtime {
        context::own_runtime().handle().clone()
    } else {
        ctx.handle.clone()
    };
    let args = RunArgs::Ready(args).after(wait_for);
    let future = spawn_run_on(&ctx, &handle, task, args, index, &scope, None, true);
    if on_current_thread_runtime {
        futures::executor::block_on(future.result_async())
    } else {
        future.result()
    }
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
    call_async_after(task, args, &[])
}

/// As [`call_async`], the run starting only once every run of `wait_for`
/// has completed: what `task.call_after(..)` does for an async task.
pub fn call_async_after<T: Task>(
    task: &T,
    args: T::Args,
    wait_for: &[&dyn Upstream],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T::Output, TaskRunError>> + Send>> {
    let args = RunArgs::Ready(args).after(wait_for);
    Box::pin(submit_with_inputs(task, args).result_async())
}

/// Creates the task run `{task}-{index}` and starts its engine on the flow run's runtime.
pub(crate) fn spawn_run<T: Task>(
    ctx: &Arc<FlowRunContext>,
    task: &T,
    args: RunArgs<T::Args>,
    index: u64,
    scope: &Arc<CancelScope>,
) -> PrefectFuture<T::Output> {
    spawn_run_on(ctx, &ctx.handle, task, args, index, scope, None, false)
}

/// As [`spawn_run`], with the engine on the given runtime; with
/// `on_calling_thread`, a sync body runs on the calling sync body's thread.
#[allow(clippy::too_many_arguments)]
fn spawn_run_on<T: Task>(
    ctx: &Arc<FlowRunContext>,
    handle: &Handle,
    task: &T,
    args: RunArgs<T::Args>,
    index: u64,
    scope: &Arc<CancelScope>,
    progress: Option<&Arc<dyn MapProgress>>,
    on_calling_thread: bool,
) -> PrefectFuture<T::Output> {
    let shared = new_run(task, index, crate::queued_body::current(), None, None);
    if on_calling_thread {
        shared.run_on_calling_thread();
    }
    TaskRun {
        ctx,
        task,
        shared: &shared,
        scope,
    }
    .announce(&args.upstream(task.spec().param_names));
    let (ctx, task, run_shared, scope) = (ctx.clone(), task.clone(), shared.clone(), scope.clone());
    let progress = progress.cloned();
    let handle_ctx = ctx.clone();
    let engine = async move {
        let run = TaskRun {
            ctx: &ctx,
            task: &task,
            shared: &run_shared,
            scope: &scope,
        };
        run.drive(args).await;
        if let Some(progress) = progress {
            progress.run_finished(&run_shared.state());
        }
    };
    handle_ctx.tracker.spawn_on(engine, handle);
    PrefectFuture::new(shared)
}

/// Drains a runtime's task runs: used by flows before they end.
pub(crate) async fn wait_for_task_runs(ctx: &FlowRunContext) {
    ctx.body_returned.cancel();
    ctx.tracker.close();
    ctx.tracker.wait().await;
}
