//! Flow runs: what calling a `#[flow]` function does.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use futures::FutureExt;
use uuid::Uuid;

use crate::context::{self, FlowRunContext, flow_log};
use crate::names::generate_run_name;
use crate::runner::wait_for_task_runs;
use crate::state::State;
use crate::task::{BodyError, ErrorSource, panic_message};

/// A flow's name and options, fixed at compile time by `#[flow]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSpec {
    /// The flow's name: the function's name with `_` as `-`, as Prefect names flows.
    pub name: &'static str,
    /// Worker threads for sync task bodies (`None`: `PREFECTO_TASK_RUNNER_MAX_WORKERS`, else one per core).
    pub max_workers: Option<usize>,
}

/// Why a flow call returned no result.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[flow]
/// fn doomed() -> Result<u8, String> {
///     Err("no data for today".to_string())
/// }
///
/// let err = doomed().unwrap_err();
/// let state = err.state().unwrap();
/// assert!(state.is_failed());
/// assert_eq!(state.message(), Some("Flow run encountered an error: no data for today"));
/// assert!(err.to_string().starts_with("Flow run '"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum FlowRunError {
    /// The flow run ended `Failed` (the body returned an error), `Crashed`
    /// (it panicked) or `Cancelled` (by a signal, a kill switch's flow-level
    /// cancel, or the Prefect server).
    Finished {
        /// The flow run's name.
        flow_run: String,
        /// The flow's name.
        flow: String,
        /// Its final state, with the reason as its message.
        state: Box<State>,
        /// The body's own error, when it returned one: `source()` gives it, to downcast.
        source: Option<ErrorSource>,
    },
    /// The async runtime for the flow run could not start.
    Startup {
        /// The flow's name.
        flow: String,
        /// What could not start.
        what: &'static str,
        /// The system's reason.
        message: String,
    },
    /// An async flow was awaited outside a Tokio runtime.
    NoRuntime {
        /// The flow's name.
        flow: String,
    },
}

impl std::fmt::Display for FlowRunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowRunError::Finished {
                flow_run,
                flow,
                state,
                ..
            } => write!(
                f,
                "Flow run '{flow_run}' of flow '{flow}' finished in state {state}"
            ),
            FlowRunError::Startup {
                flow,
                what,
                message,
            } => write!(f, "Flow '{flow}' could not start its {what}: {message}"),
            FlowRunError::NoRuntime { flow } => write!(
                f,
                "Async flow '{flow}' must be awaited inside a Tokio runtime \
                 (for example under #[tokio::main])"
            ),
        }
    }
}

impl std::error::Error for FlowRunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The error itself, not the `Arc` that shares it: so that it downcasts.
            FlowRunError::Finished {
                source: Some(error),
                ..
            } => Some(&**error as &(dyn std::error::Error + 'static)),
            _ => None,
        }
    }
}

impl FlowRunError {
    /// The final state of the flow run, if it ran.
    pub fn state(&self) -> Option<&State> {
        match self {
            FlowRunError::Finished { state, .. } => Some(state),
            _ => None,
        }
    }
}

/// The flow run the caller is inside.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowRunInfo {
    /// Its id.
    pub id: Uuid,
    /// Its name, such as `beryl-moth`.
    pub name: String,
    /// The flow's name.
    pub flow: String,
    /// The flow run on the Prefect server it is reported to, once the
    /// server has it: its id there (a run adopted from a worker has the
    /// same id here and there) and its page in the UI.
    pub server: Option<crate::RemoteFlowRun>,
}

/// The flow run the caller is inside, if any: in a flow body or a task body.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[flow]
/// fn whoami() -> String {
///     prefecto::flow::current_flow_run().unwrap().flow
/// }
///
/// assert_eq!(whoami().unwrap(), "whoami");
/// assert!(prefecto::flow::current_flow_run().is_none());
/// ```
pub fn current_flow_run() -> Option<FlowRunInfo> {
    context::current_flow_run().map(|ctx| FlowRunInfo {
        id: ctx.id,
        name: ctx.name.clone(),
        flow: ctx.flow.clone(),
        server: ctx.remote.get().cloned(),
    })
}

fn startup_error(
    spec: &FlowSpec,
    what: &'static str,
    error: impl std::fmt::Display,
) -> FlowRunError {
    FlowRunError::Startup {
        flow: spec.name.to_string(),
        what,
        message: error.to_string(),
    }
}

/// The parameters a flow call was given, as JSON, by name.
pub type Parameters = Vec<(&'static str, serde_json::Value)>;

/// The parameters of an adopted flow run, from the server.
pub type AdoptedParameters = Option<serde_json::Map<String, serde_json::Value>>;

fn begin(
    spec: &FlowSpec,
    handle: tokio::runtime::Handle,
    parameters: Parameters,
) -> (Arc<FlowRunContext>, AdoptedParameters) {
    let seams = crate::seams::current();
    // A flow run created for us elsewhere (by a Prefect worker) is adopted:
    // its id, its name and its parameters come from there.
    let adopted = seams
        .adopter
        .as_ref()
        .and_then(|adopter| adopter.adopt(spec.name));
    let (id, name, parameters, adopted_parameters) = match adopted {
        Some(run) => (
            run.id,
            run.name,
            serde_json::Value::Object(run.parameters.clone()),
            Some(run.parameters),
        ),
        None => (
            Uuid::new_v4(),
            generate_run_name(),
            serde_json::Value::Object(crate::parameters::recorded_parameters(parameters)),
            None,
        ),
    };
    let ctx = FlowRunContext::new(
        id,
        name,
        spec.name.to_string(),
        parameters,
        handle,
        spec.max_workers,
        seams,
    );
    ctx.record_transition(None, &State::pending());
    // A run a worker created is taken over, not created, here.
    let verb = if adopted_parameters.is_some() {
        "Adopted"
    } else {
        "Created"
    };
    tracing::info!(
        target: "prefecto.engine",
        "{verb} flow run '{}' for flow '{}'",
        ctx.name,
        ctx.flow
    );
    if ctx.has_recorders() {
        let message = format!("{verb} flow run '{}' for flow '{}'", ctx.name, ctx.flow);
        ctx.record_log(
            None,
            tracing::Level::INFO,
            crate::recorder::ENGINE,
            &message,
        );
    }
    ctx.record_transition(None, &State::running());
    if let Some(remote) = ctx.seams.adopter.as_ref().and_then(|a| a.started(ctx.id)) {
        if let Some(url) = &remote.url {
            // As Python prints it: on the console only.
            tracing::info!(target: "prefecto.flow_runs", flow_run = %ctx.name, "View at {url}");
        }
        let _ = ctx.remote.set(remote);
    }
    crate::flow_runs::started(&ctx);
    (ctx, adopted_parameters)
}

/// How a flow run's body ended: its final state, its value if it completed,
/// and its own error if it returned one. `Cancelled` if the flow run was
/// cancelled (by a signal, say) while it ran.
struct Settled<T> {
    state: State,
    value: Option<T>,
    source: Option<ErrorSource>,
}

fn settle<T>(
    ctx: &FlowRunContext,
    outcome: std::thread::Result<Result<T, BodyError>>,
) -> Settled<T> {
    crate::flow_runs::ended(ctx);
    let (state, value, source) = match outcome {
        _ if ctx.scope.is_cancelled() => (State::cancelled(ctx.scope.reason()), None, None),
        Ok(Ok(value)) => (State::completed(), Some(value), None),
        Ok(Err(BodyError { message, source })) => (
            State::failed(format!("Flow run encountered an error: {message}")),
            None,
            source,
        ),
        Err(panic) => (
            State::crashed(format!(
                "Flow run panicked: {}",
                panic_message(panic.as_ref())
            )),
            None,
            None,
        ),
    };
    Settled {
        state,
        value,
        source,
    }
}

/// Logs and records the flow run's end, then waits for its recorders to
/// flush (the history's last commit, the Prefect server's read-back): this
/// blocks. False if a signal had ended the run already.
fn record_end(ctx: &FlowRunContext, state: &State) -> bool {
    ctx.end_once(|| {
        if state.is_completed() {
            flow_log!(ctx, INFO, "Finished in state {}", state);
        } else {
            flow_log!(ctx, ERROR, "Finished in state {}", state);
        }
        ctx.record_transition(None, state);
        ctx.record_end();
    })
    .is_some()
}

/// The flow call's result, once its end is recorded (`recorded`).
fn result<T>(ctx: &FlowRunContext, settled: Settled<T>, recorded: bool) -> Result<T, FlowRunError> {
    match (recorded, settled.value) {
        (true, Some(value)) => Ok(value),
        // Ended here without a value, or already ended by a signal (the process is exiting).
        _ => Err(FlowRunError::Finished {
            flow_run: ctx.name.clone(),
            flow: ctx.flow.clone(),
            state: Box::new(if recorded {
                settled.state
            } else {
                State::cancelled(ctx.scope.reason())
            }),
            source: settled.source,
        }),
    }
}

/// Runs a sync flow body as a flow run: what calling a sync `#[flow]` does.
///
/// The flow run gets its own multi-threaded runtime, so a plain `fn main()`
/// needs no runtime of its own. The body runs on the calling thread; it waits
/// for every task run it submitted before the flow run ends.
pub fn run_sync<T, F>(
    spec: &'static FlowSpec,
    parameters: Parameters,
    body: F,
) -> Result<T, FlowRunError>
where
    F: FnOnce(AdoptedParameters) -> Result<T, BodyError> + Send,
    T: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // A runtime cannot be started, or dropped, on a thread that is already
        // inside one, so a sync flow called from async code runs on a thread of its own.
        return std::thread::scope(|scope| {
            scope
                .spawn(|| run_sync_here(spec, parameters, body))
                .join()
                .unwrap_or_else(|panic| resume_unwind(panic))
        });
    }
    run_sync_here(spec, parameters, body)
}

fn run_sync_here<T, F>(
    spec: &'static FlowSpec,
    parameters: Parameters,
    body: F,
) -> Result<T, FlowRunError>
where
    F: FnOnce(AdoptedParameters) -> Result<T, BodyError>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("prefecto-runtime")
        .build()
        .map_err(|e| startup_error(spec, "async runtime", e))?;
    let _entered = runtime.enter();
    let (ctx, adopted) = begin(spec, runtime.handle().clone(), parameters);
    let outcome = context::with_thread_context(ctx.clone(), || {
        catch_unwind(AssertUnwindSafe(|| body(adopted)))
    });
    runtime.block_on(wait_for_task_runs(&ctx));
    let settled = settle(&ctx, outcome);
    let recorded = record_end(&ctx, &settled.state);
    result(&ctx, settled, recorded)
}

/// Runs an async flow body as a flow run: what calling an async `#[flow]` does.
/// It uses the caller's Tokio runtime.
pub async fn run_async<T, F, Fut>(
    spec: &'static FlowSpec,
    parameters: Parameters,
    body: F,
) -> Result<T, FlowRunError>
where
    F: FnOnce(AdoptedParameters) -> Fut,
    Fut: Future<Output = Result<T, BodyError>>,
{
    let handle = tokio::runtime::Handle::try_current().map_err(|_| FlowRunError::NoRuntime {
        flow: spec.name.to_string(),
    })?;
    let (ctx, adopted) = begin(spec, handle, parameters);
    let outcome = context::with_task_context(
        ctx.clone(),
        AssertUnwindSafe(async move { body(adopted).await }).catch_unwind(),
    )
    .await;
    wait_for_task_runs(&ctx).await;
    let settled = settle(&ctx, outcome);
    // The recorders' flush blocks: on the blocking pool, not on a thread
    // that runs the caller's other tasks (on a current-thread runtime, the only one).
    let (end_ctx, state) = (ctx.clone(), settled.state.clone());
    let recorded = match tokio::task::spawn_blocking(move || record_end(&end_ctx, &state)).await {
        Ok(recorded) => recorded,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        // The runtime is shutting down: record here.
        Err(_) => record_end(&ctx, &settled.state),
    };
    result(&ctx, settled, recorded)
}
