//! SIGINT and SIGTERM during a flow run: its in-flight task runs are
//! cancelled, it ends `Cancelled`, its history is flushed, and the process
//! exits with 128 + the signal's number, as a shell reports a killed process.
//!
//! The listener starts with the first flow run and stays for the process: a
//! signal handler, once set, cannot be unset, so with no flow run active a
//! signal ends the process at once, as it would have without prefecto.
//! `PREFECTO_HANDLE_SIGNALS=off` leaves signals to the program.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::context::{flow_log, FlowRunContext};
use crate::state::State;

/// The environment variable that leaves signal handling to the program.
pub const HANDLE_SIGNALS_ENV: &str = "PREFECTO_HANDLE_SIGNALS";

/// How long in-flight task runs get to reach a terminal state after a signal:
/// async runs stop at their next `.await`, sync ones must finish their body.
const GRACE: Duration = Duration::from_secs(10);

static ACTIVE: Mutex<Vec<Weak<FlowRunContext>>> = Mutex::new(Vec::new());

fn active() -> std::sync::MutexGuard<'static, Vec<Weak<FlowRunContext>>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers a flow run as active, starting the listener on first use.
pub(crate) fn flow_run_started(ctx: &Arc<FlowRunContext>) {
    static LISTENING: OnceLock<()> = OnceLock::new();
    let handle_signals = std::env::var(HANDLE_SIGNALS_ENV)
        .map(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "false" | "0" | "no"
            )
        })
        .unwrap_or(true);
    if handle_signals {
        LISTENING.get_or_init(|| {
            crate::context::own_runtime().spawn(listen());
        });
    }
    let mut active = active();
    active.retain(|weak| weak.strong_count() > 0);
    active.push(Arc::downgrade(ctx));
}

/// Cancels an active flow run, as a signal would but without ending the
/// process: its in-flight task runs are cancelled and it ends `Cancelled`.
/// False if no such flow run is active.
pub(crate) fn cancel_flow_run(id: uuid::Uuid, reason: String) -> bool {
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

/// Unregisters a flow run that has ended.
pub(crate) fn flow_run_ended(ctx: &FlowRunContext) {
    active().retain(|weak| weak.upgrade().is_some_and(|c| !std::ptr::eq(&*c, ctx)));
}

async fn listen() {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!(target: "prefecto.engine", "Could not listen for SIGINT and SIGTERM; a signal will not cancel flow runs cleanly.");
        return;
    };
    let (name, number) = tokio::select! {
        _ = interrupt.recv() => ("SIGINT", 2),
        _ = terminate.recv() => ("SIGTERM", 15),
    };
    let flow_runs: Vec<Arc<FlowRunContext>> = active().iter().filter_map(Weak::upgrade).collect();
    let reason = format!("The flow run was cancelled by {name}.");
    for ctx in &flow_runs {
        ctx.scope.cancel(reason.clone());
    }
    for ctx in &flow_runs {
        // Closing only lets `wait` finish once the tracked runs are done.
        ctx.tracker.close();
        if tokio::time::timeout(GRACE, ctx.tracker.wait())
            .await
            .is_err()
        {
            flow_log!(
                ctx,
                WARN,
                "{} task run(s) still running {} s after {}; ending without them.",
                ctx.tracker.len(),
                GRACE.as_secs(),
                name
            );
        }
        // If the body is ending the run right now, this waits until it has recorded it.
        ctx.end_once(|| {
            let state = State::cancelled(reason.clone());
            flow_log!(ctx, WARN, "Finished in state {}", state);
            ctx.record_transition(None, &state);
            ctx.record_end();
        });
    }
    std::process::exit(128 + number);
}
