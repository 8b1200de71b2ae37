//! SIGINT and SIGTERM during a flow run: its in-flight task runs are
//! cancelled, it ends `Cancelled`, its history is flushed, and the process
//! exits with 128 + the signal's number, as a shell reports a killed process.
//!
//! [`Prefecto::install`](crate::Prefecto::install) starts the listener
//! (unless `handle_signals(false)` or `PREFECTO_HANDLE_SIGNALS=off`), and it
//! stays for the process: a signal handler, once set, cannot be unset, so
//! with no flow run active a signal ends the process at once, as it would
//! have without prefecto. Unix only: elsewhere signals are left to the program.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once the process is exiting (waiting for its reports to be
/// delivered): a signal then ends it at once.
pub(crate) static EXITING: AtomicBool = AtomicBool::new(false);

/// How long in-flight task runs get to reach a terminal state after a signal:
/// async runs stop at their next `.await`, sync ones must finish their body.
const GRACE: Duration = Duration::from_secs(10);

/// Starts listening for SIGINT and SIGTERM, once per process.
pub(crate) fn listen() {
    static LISTENING: OnceLock<()> = OnceLock::new();
    LISTENING.get_or_init(|| {
        crate::context::own_runtime().spawn(wait_for_signal());
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
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
    if EXITING.load(Ordering::SeqCst) {
        exit_at_once(number);
    }
    // A second signal while the process winds down (its flow runs ending,
    // its reports being delivered) ends it at once: what is undelivered
    // stays noted in the run history for the next process.
    crate::context::own_runtime().spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        exit_at_once(number);
    });
    let reason = format!("The flow run was cancelled by {name}.");
    crate::flow_runs::cancel_all_and_end(&reason, GRACE).await;
    std::process::exit(128 + number);
}

/// Ends the process now, without waiting for its reports: what the server
/// lacks stays noted in the run history for the next process.
#[cfg(unix)]
fn exit_at_once(number: i32) -> ! {
    eprintln!(
        "prefecto: exiting at once on a signal; what the Prefect server lacks stays in the run history for the next process."
    );
    // SAFETY: `_exit` ends the process without running exit handlers,
    // which is the point: an exit already under way is waiting in them.
    unsafe { libc::_exit(128 + number) }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    // Ctrl-C is the one signal every platform has.
    if tokio::signal::ctrl_c().await.is_ok() {
        let reason = "The flow run was cancelled by Ctrl-C.".to_string();
        crate::flow_runs::cancel_all_and_end(&reason, GRACE).await;
        std::process::exit(130);
    }
}
