//! A recorder that panics is dropped, not allowed to stop the flow run: the
//! engine hands every event through a [`PanicGuard`].

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::names::TaskRunName;
use crate::recorder::ENGINE;
use crate::recorder::{
    EndBatch, FlowRunRef, LogEvent, PlainEnd, Recorder, RunTimes, TransitionEvent,
};
use crate::state::State;
use crate::task::panic_message;

/// Wraps a recorder: the first panic is caught, logged once as a warning,
/// and the recorder hears nothing more.
pub(crate) struct PanicGuard {
    inner: Arc<dyn Recorder>,
    /// Shared with its batches: a panic in one drops the recorder.
    dropped: Arc<AtomicBool>,
}

impl PanicGuard {
    pub(crate) fn wrap(inner: Arc<dyn Recorder>) -> Arc<dyn Recorder> {
        Arc::new(PanicGuard {
            inner,
            dropped: Arc::default(),
        })
    }

    fn hand(&self, event: &str, call: impl FnOnce(&dyn Recorder)) {
        guarded(&self.dropped, event, || call(&*self.inner));
    }
}

/// Makes a recorder's call, unless it was dropped; the first panic drops it.
fn guarded(dropped: &AtomicBool, event: &str, call: impl FnOnce()) {
    if dropped.load(Ordering::Relaxed) {
        return;
    }
    if let Err(panic) = catch_unwind(AssertUnwindSafe(call))
        && !dropped.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            target: ENGINE,
            "A recorder panicked on {event} ({}); it is dropped and hears nothing more \
             from this process. The flow run goes on.",
            panic_message(panic.as_ref())
        );
    }
}

/// A recorder's batch, guarded as the recorder is.
struct GuardedBatch {
    inner: Box<dyn EndBatch>,
    dropped: Arc<AtomicBool>,
}

impl EndBatch for GuardedBatch {
    fn ended(&mut self, run: TaskRunName, state: &State, times: RunTimes) {
        let inner = &mut self.inner;
        guarded(&self.dropped, "a task run's end", || {
            inner.ended(run, state, times)
        });
    }

    fn plain_ends(&mut self, task: &'static str, ends: &mut Vec<PlainEnd>) {
        let inner = &mut self.inner;
        guarded(&self.dropped, "a list of ends", || {
            inner.plain_ends(task, ends)
        });
        // Whatever a panic left in it is not handed over twice.
        ends.clear();
    }

    fn hand_over(&mut self) {
        let inner = &mut self.inner;
        guarded(&self.dropped, "a batch of ends", || inner.hand_over());
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

    fn end_batch(&self, flow_run: FlowRunRef<'_>) -> Option<Box<dyn EndBatch>> {
        let mut batch = None;
        self.hand("a batch's making", |recorder| {
            batch = recorder.end_batch(flow_run)
        });
        let batch = GuardedBatch {
            inner: batch?,
            dropped: self.dropped.clone(),
        };
        Some(Box::new(batch))
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
