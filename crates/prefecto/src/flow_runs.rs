//! The flow runs active in this process, so that something outside a flow
//! call (a signal, a cancellation asked for on a Prefect server) can cancel
//! them cleanly: in-flight task runs cancelled, the run ended `Cancelled`.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use uuid::Uuid;

use crate::context::{FlowRunContext, flow_log};
use crate::state::State;

static ACTIVE: Mutex<Vec<Weak<FlowRunContext>>> = Mutex::new(Vec::new());

fn active() -> MutexGuard<'static, Vec<Weak<FlowRunContext>>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a flow run as active.
pub(crate) fn started(ctx: &Arc<FlowRunContext>) {
    let mut active = active();
    active.retain(|weak| weak.strong_count() > 0);
    active.push(Arc::downgrade(ctx));
}

/// Unregisters a flow run that has ended.
pub(crate) fn ended(ctx: &FlowRunContext) {
    active().retain(|weak| weak.upgrade().is_some_and(|c| !std::ptr::eq(&*c, ctx)));
}

/// Cancels an active flow run of this process, from any thread: its
/// in-flight task runs are cancelled, inputs not yet submitted are recorded
/// `Cancelled`, and its flow call ends it `Cancelled`. False if no flow run
/// with that id is active.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// async fn forever() {
///     std::future::pending::<()>().await
/// }
///
/// #[flow]
/// async fn stoppable() -> State {
///     let id = prefecto::flow::current_flow_run().unwrap().id;
///     let run = forever.submit();
///     assert!(prefecto::flow_runs::cancel(id, "Stopped by the operator.".into()));
///     run.wait_async().await
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let err = stoppable().await.unwrap_err();
/// assert!(err.state().unwrap().is_cancelled());
/// # });
/// ```
pub fn cancel(id: Uuid, reason: String) -> bool {
    let flow_run = active()
        .iter()
        .filter_map(Weak::upgrade)
        .find(|ctx| ctx.id == id);
    match flow_run {
        Some(ctx) => {
            flow_log!(ctx, WARN, "{}", reason);
            ctx.scope.cancel(reason);
            true
        }
        None => false,
    }
}

/// Cancels every active flow run, gives their in-flight task runs `grace`
/// to reach a terminal state, and ends each run `Cancelled` and records it,
/// unless its flow call is ending it already (then this waits for that).
/// For a process about to exit: the flow calls themselves may never return.
#[cfg_attr(not(feature = "signals"), allow(dead_code))]
pub(crate) async fn cancel_all_and_end(reason: &str, grace: Duration) {
    let flow_runs: Vec<Arc<FlowRunContext>> = active().iter().filter_map(Weak::upgrade).collect();
    for ctx in &flow_runs {
        ctx.scope.cancel(reason.to_string());
    }
    for ctx in &flow_runs {
        // Closing only lets `wait` finish once the tracked runs are done.
        ctx.tracker.close();
        if tokio::time::timeout(grace, ctx.tracker.wait())
            .await
            .is_err()
        {
            flow_log!(
                ctx,
                WARN,
                "{} task run(s) still running {} s after the cancellation; ending without them.",
                ctx.tracker.len(),
                grace.as_secs()
            );
        }
        ctx.end_once(|| {
            let state = State::cancelled(reason);
            flow_log!(ctx, WARN, "Finished in state {}", state);
            ctx.record_transition(None, &state);
            ctx.record_end();
        });
    }
}
