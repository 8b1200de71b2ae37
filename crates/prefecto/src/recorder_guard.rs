//! A recorder that panics is dropped, not allowed to stop the flow run: the
//! engine hands every event through a [`PanicGuard`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::recorder::ENGINE;
use crate::recorder::{FlowRunRef, LogEvent, Recorder, TransitionEvent};
use crate::task::panic_message;

/// Wraps a recorder: the first panic is caught, logged once as a warning,
/// and the recorder hears nothing more.
pub(crate) struct PanicGuard {
    inner: Arc<dyn Recorder>,
    dropped: AtomicBool,
}

impl PanicGuard {
    pub(crate) fn wrap(inner: Arc<dyn Recorder>) -> Arc<dyn Recorder> {
        Arc::new(PanicGuard {
            inner,
            dropped: AtomicBool::new(false),
        })
    }

    fn hand(&self, event: &str, call: impl FnOnce(&dyn Recorder)) {
        if self.dropped.load(Ordering::Relaxed) {
            return;
        }
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| call(&*self.inner))) {
            if !self.dropped.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: ENGINE,
                    "A recorder panicked on {event} ({}); it is dropped and hears nothing more \
                     from this process. The flow run goes on.",
                    panic_message(panic.as_ref())
                );
            }
        }
    }
}

impl Recorder for PanicGuard {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        self.hand("a transition", |recorder| recorder.on_transition(event));
    }

    fn wants_pending(&self) -> bool {
        // Asked once, at install: a panic here only hands it everything.
        catch_unwind(AssertUnwindSafe(|| self.inner.wants_pending())).unwrap_or(true)
    }

    fn wants_running(&self) -> bool {
        catch_unwind(AssertUnwindSafe(|| self.inner.wants_running())).unwrap_or(true)
    }

    fn on_log(&self, event: &LogEvent<'_>) {
        self.hand("a log line", |recorder| recorder.on_log(event));
    }

    fn on_flow_run_end(&self, flow_run: FlowRunRef<'_>) {
        self.hand("a flow run's end", |recorder| {
            recorder.on_flow_run_end(flow_run)
        });
    }
}
