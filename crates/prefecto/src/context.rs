//! The flow run a task run belongs to: found from the task-local of an async
//! flow, the thread-local of a sync flow's body or a sync task's worker thread,
//! or else a process-wide context for task runs outside any flow (as Prefect 3
//! runs them).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub(crate) use crate::cancel_scope::CancelScope;
use crate::flow_pool::FlowPool;
use crate::names::TaskRunName;
use crate::names::UpstreamRun;
use crate::recorder::{FlowRunRef, LogEvent, Recorder, RunTimes, TransitionEvent};
use crate::seams::Seams;
use crate::state::State;
use crate::task::TaskSpec;

/// Everything a task run needs from its flow run.
pub(crate) struct FlowRunContext {
    pub(crate) id: Uuid,
    /// The flow run's name; empty for the context of task runs outside a flow.
    pub(crate) name: String,
    pub(crate) flow: String,
    /// The flow call's parameters, as a JSON object.
    pub(crate) parameters: serde_json::Value,
    pub(crate) handle: Handle,
    max_workers: Option<usize>,
    /// Started by the first sync task run: flows of async tasks never start it.
    pool: OnceLock<Result<FlowPool, String>>,
    pub(crate) scope: Arc<CancelScope>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the flow's function has returned and the flow run
    /// waits for its task runs: a stream nobody reads any more stops.
    pub(crate) body_returned: CancellationToken,
    run_counts: Mutex<HashMap<&'static str, u64>>,
    /// Taken by whichever ends the flow run: its body, or a signal. Held
    /// while it records the end, so the other waits rather than exiting midway.
    ended: Mutex<bool>,
    /// Where its history goes, its cached results, its slots, its progress.
    pub(crate) seams: Arc<Seams>,
    /// The flow run as a server knows it, once the server has it running.
    pub(crate) remote: OnceLock<crate::adopt::RemoteFlowRun>,
}

impl FlowRunContext {
    pub(crate) fn new(
        id: Uuid,
        name: String,
        flow: String,
        parameters: serde_json::Value,
        handle: Handle,
        max_workers: Option<usize>,
        seams: Arc<Seams>,
    ) -> Arc<Self> {
        Arc::new(FlowRunContext {
            id,
            name,
            flow,
            parameters,
            handle,
            max_workers: max_workers.or(seams.max_workers),
            pool: OnceLock::new(),
            scope: CancelScope::root(),
            tracker: TaskTracker::new(),
            body_returned: CancellationToken::new(),
            run_counts: Mutex::new(HashMap::new()),
            ended: Mutex::new(false),
            seams,
            remote: OnceLock::new(),
        })
    }

    /// The pool for sync task bodies, started on first use.
    pub(crate) fn pool(&self) -> Result<&FlowPool, &str> {
        self.pool
            .get_or_init(|| {
                FlowPool::lend(self.max_workers)
                    .map_err(|e| format!("The thread pool for sync task runs could not start: {e}"))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Runs `end` if the flow run has not been ended yet; `None` if it had.
    pub(crate) fn end_once<R>(&self, end: impl FnOnce() -> R) -> Option<R> {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        if *ended {
            return None;
        }
        let result = end();
        *ended = true;
        Some(result)
    }

    pub(crate) fn is_flow_run(&self) -> bool {
        !self.name.is_empty()
    }

    /// Reserves `count` consecutive run numbers for a task, so one `map`
    /// takes the lock once rather than once per input.
    pub(crate) fn reserve_run_names(&self, task: &'static str, count: usize) -> u64 {
        let mut counts = self
            .run_counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = counts.entry(task).or_insert(0);
        let first = *next;
        *next += count as u64;
        first
    }

    pub(crate) fn flow_run_ref(&self) -> FlowRunRef<'_> {
        FlowRunRef {
            id: self.id,
            name: &self.name,
            flow: &self.flow,
            parameters: &self.parameters,
        }
    }

    pub(crate) fn has_recorders(&self) -> bool {
        !self.seams.recorders.is_empty()
    }

    /// Whether a task run's submission (its `Pending`, naming these
    /// upstream runs) goes to any recorder.
    pub(crate) fn records_submission(&self, upstream: &[UpstreamRun]) -> bool {
        !self.submission_recorders(upstream).is_empty()
    }

    /// Who hears a task run's submission: a `Pending` naming upstream runs
    /// goes to every recorder, else only to those that want it; its time
    /// reaches the others with the run's later transitions.
    fn submission_recorders(&self, upstream: &[UpstreamRun]) -> &[Arc<dyn Recorder>] {
        match upstream.is_empty() {
            true => &self.seams.pending_recorders,
            false => &self.seams.recorders,
        }
    }

    pub(crate) fn record_transition(
        &self,
        task_run: Option<(TaskRunName, &'static TaskSpec)>,
        state: &State,
    ) {
        self.record_task_transition(task_run, state, None, &[]);
    }

    pub(crate) fn record_task_transition(
        &self,
        task_run: Option<(TaskRunName, &'static TaskSpec)>,
        state: &State,
        times: Option<RunTimes>,
        upstream: &[UpstreamRun],
    ) {
        // A submission's Pending (it has times) may go to fewer.
        let recorders: &[Arc<dyn Recorder>] = match state.is_pending() && times.is_some() {
            true => self.submission_recorders(upstream),
            false => &self.seams.recorders,
        };
        self.record_task_transition_to(recorders, task_run, state, times, upstream);
    }

    /// Whether any recorder hears a task run's first `Running` at once.
    pub(crate) fn hears_running_at_once(&self) -> bool {
        !self.seams.running_recorders.is_empty()
    }

    /// Hands a task run's first `Running` to the recorders that hear it at
    /// once. Others, if any ([`owes_running`](Self::owes_running),
    /// [`Recorder::wants_running`]), hear it from
    /// [`record_owed_running`](Self::record_owed_running) once the run is
    /// seen still running.
    pub(crate) fn record_first_running(
        &self,
        task_run: (TaskRunName, &'static TaskSpec),
        state: &State,
        times: Option<RunTimes>,
    ) {
        let at_once = &self.seams.running_recorders;
        self.record_task_transition_to(at_once, Some(task_run), state, times, &[]);
    }

    /// Whether any recorder hears a first `Running` only once the run is
    /// seen still running.
    pub(crate) fn owes_running(&self) -> bool {
        !self.seams.late_running_recorders.is_empty()
    }

    /// A first `Running` that [`record_first_running`](Self::record_first_running)
    /// owed: the run is still running.
    pub(crate) fn record_owed_running(
        &self,
        task_run: (TaskRunName, &'static TaskSpec),
        state: &State,
        times: Option<RunTimes>,
    ) {
        let later = &self.seams.late_running_recorders;
        self.record_task_transition_to(later, Some(task_run), state, times, &[]);
    }

    /// Hands a task run's transition to `recorders` only.
    pub(crate) fn record_task_transition_to(
        &self,
        recorders: &[Arc<dyn Recorder>],
        task_run: Option<(TaskRunName, &'static TaskSpec)>,
        state: &State,
        times: Option<RunTimes>,
        upstream: &[UpstreamRun],
    ) {
        if recorders.is_empty() {
            return;
        }
        let event = TransitionEvent {
            flow_run: self.flow_run_ref(),
            task_run: task_run.map(|(name, _)| name),
            task: task_run.map(|(_, spec)| spec),
            times,
            state,
            upstream,
        };
        for recorder in recorders.iter() {
            recorder.on_transition(&event);
        }
    }

    pub(crate) fn record_log(
        &self,
        task_run: Option<TaskRunName>,
        level: tracing::Level,
        logger: &'static str,
        message: &str,
    ) {
        let event = LogEvent {
            flow_run: self.flow_run_ref(),
            task_run,
            level,
            logger,
            message,
            timestamp: chrono::Utc::now(),
        };
        for recorder in self.seams.recorders.iter() {
            recorder.on_log(&event);
        }
    }

    pub(crate) fn record_end(&self) {
        for recorder in self.seams.recorders.iter() {
            recorder.on_flow_run_end(self.flow_run_ref());
        }
    }
}

/// Logs a line about the flow run: to `tracing`, and to the recorders.
macro_rules! flow_log {
    ($ctx:expr, $level:ident, $($arg:tt)+) => {{
        let ctx: &$crate::context::FlowRunContext = &$ctx;
        if ctx.is_flow_run() {
            ::tracing::event!(target: "prefecto.flow_runs", ::tracing::Level::$level, flow_run = %ctx.name, $($arg)+);
        } else {
            ::tracing::event!(target: "prefecto.engine", ::tracing::Level::$level, $($arg)+);
        }
        if ctx.has_recorders() {
            ctx.record_log(None, ::tracing::Level::$level, "prefecto.flow_runs", &format!($($arg)+));
        }
    }};
}

/// Logs a line about one task run: to `tracing`, and to the recorders.
macro_rules! task_log {
    ($ctx:expr, $run:expr, $level:ident, $($arg:tt)+) => {{
        let ctx: &$crate::context::FlowRunContext = &$ctx;
        let run: $crate::names::TaskRunName = $run;
        ::tracing::event!(target: "prefecto.task_runs", ::tracing::Level::$level, task_run = %run, $($arg)+);
        if ctx.has_recorders() {
            ctx.record_log(Some(run), ::tracing::Level::$level, "prefecto.task_runs", &format!($($arg)+));
        }
    }};
}

/// Logs a line that a transition implies: to `tracing` only, as recorders
/// rebuild it with [`crate::recorder::implied_lines`].
macro_rules! implied_log {
    ($ctx:expr, None, $level:ident, $($arg:tt)+) => {{
        let ctx: &$crate::context::FlowRunContext = &$ctx;
        if ctx.is_flow_run() {
            ::tracing::event!(target: "prefecto.flow_runs", ::tracing::Level::$level, flow_run = %ctx.name, $($arg)+);
        } else {
            ::tracing::event!(target: "prefecto.engine", ::tracing::Level::$level, $($arg)+);
        }
    }};
    ($run:expr, $level:ident, $($arg:tt)+) => {{
        let run: $crate::names::TaskRunName = $run;
        ::tracing::event!(target: "prefecto.task_runs", ::tracing::Level::$level, task_run = %run, $($arg)+);
    }};
}

pub(crate) use {flow_log, implied_log, task_log};

tokio::task_local! {
    static TASK_CONTEXT: Arc<FlowRunContext>;
}

thread_local! {
    static THREAD_CONTEXT: RefCell<Option<Arc<FlowRunContext>>> = const { RefCell::new(None) };
}

/// Runs `f` with `ctx` as this thread's flow run, restoring the previous one after.
pub(crate) fn with_thread_context<R>(ctx: Arc<FlowRunContext>, f: impl FnOnce() -> R) -> R {
    crate::thread_scope::with_value(&THREAD_CONTEXT, ctx, f)
}

/// Whether `ctx` is this thread's flow run already: a map's pool lane sets
/// it once for all the sync bodies it runs, instead of once per run (a
/// reference count shared by every lane of the map, touched twice a run).
pub(crate) fn in_thread_context(ctx: &Arc<FlowRunContext>) -> bool {
    THREAD_CONTEXT
        .try_with(|slot| {
            slot.borrow()
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, ctx))
        })
        .unwrap_or(false)
}

/// Whether `ctx` is the flow run of the task being polled already: a map's
/// lane sets it once for all the bodies it runs.
pub(crate) fn in_task_context(ctx: &Arc<FlowRunContext>) -> bool {
    TASK_CONTEXT
        .try_with(|current| Arc::ptr_eq(current, ctx))
        .unwrap_or(false)
}

/// Runs a future with `ctx` as its flow run.
pub(crate) async fn with_task_context<F: std::future::Future>(
    ctx: Arc<FlowRunContext>,
    future: F,
) -> F::Output {
    TASK_CONTEXT.scope(ctx, future).await
}

/// The flow run of the caller, or the context for task runs outside any flow.
pub(crate) fn current() -> Arc<FlowRunContext> {
    inside().unwrap_or_else(outside_any_flow)
}

/// The context the caller runs in (a flow run, or task runs outside any
/// flow), if it runs in one: set by the engine, never made here.
fn inside() -> Option<Arc<FlowRunContext>> {
    TASK_CONTEXT
        .try_with(Arc::clone)
        .ok()
        .or_else(|| THREAD_CONTEXT.with(|slot| slot.borrow().clone()))
}

/// The flow run of the caller, if it is inside one.
pub(crate) fn current_flow_run() -> Option<Arc<FlowRunContext>> {
    // Asking must not start the context (and runtime) of task runs outside any flow.
    inside().filter(|ctx| ctx.is_flow_run())
}

/// A runtime of prefecto's own, always driven by its own threads: it runs task
/// runs outside any flow, and the engines of blocking calls made from a
/// current-thread runtime, which cannot run anything while its thread waits.
pub(crate) fn own_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("prefecto-runtime")
            .build()
            .expect("prefecto's async runtime could not start")
    })
}

/// Task runs outside any flow run: on prefecto's own runtime, with a pool of
/// their own, one context per set of seams, kept for the life of the process.
fn outside_any_flow() -> Arc<FlowRunContext> {
    static CONTEXTS: Mutex<Vec<Arc<FlowRunContext>>> = Mutex::new(Vec::new());
    let seams = crate::seams::current();
    let mut contexts = CONTEXTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = contexts.iter().find(|ctx| Arc::ptr_eq(&ctx.seams, &seams)) {
        return ctx.clone();
    }
    let ctx = FlowRunContext::new(
        Uuid::new_v4(),
        String::new(),
        String::new(),
        serde_json::Value::Object(Default::default()),
        own_runtime().handle().clone(),
        None,
        seams,
    );
    contexts.push(ctx.clone());
    ctx
}
