//! The seams a flow run is handed: where its history goes, where cached
//! results are kept, who grants concurrency slots, what shows progress, and
//! who may hand it a flow run to adopt. The engine knows only these; the
//! composition root ([`Prefecto`](crate::Prefecto)) fills them in.
//!
//! A flow call takes the seams current on its thread when it starts: those
//! of a [`Prefecto::scope`](crate::Prefecto::scope) around it, else the
//! process-wide ones of [`Prefecto::install`](crate::Prefecto::install).

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use crate::adopt::FlowRunAdopter;
use crate::progress::ProgressDisplay;
use crate::recorder::Recorder;
use crate::result_store::ResultStore;
use crate::slot_limiter::SlotLimiter;

/// Recorders, in the order they hear events.
pub(crate) type Recorders = Arc<[Arc<dyn Recorder>]>;

/// Everything a flow run needs from outside the engine.
#[derive(Clone, Default)]
pub(crate) struct Seams {
    /// Hear every transition and log line, in this order.
    pub(crate) recorders: Recorders,
    /// Those of `recorders` that hear a task run's `Pending` transition as
    /// it is submitted ([`Recorder::wants_pending`]).
    pub(crate) pending_recorders: Recorders,
    /// Those of `recorders` that hear a task run's first `Running` as it is
    /// made ([`Recorder::wants_running`]) ...
    pub(crate) running_recorders: Recorders,
    /// ... and the others: they hear it once the run is seen still running.
    pub(crate) late_running_recorders: Recorders,
    pub(crate) result_store: Option<Arc<dyn ResultStore>>,
    pub(crate) slot_limiter: Option<Arc<dyn SlotLimiter>>,
    pub(crate) progress: Option<Arc<dyn ProgressDisplay>>,
    pub(crate) adopter: Option<Arc<dyn FlowRunAdopter>>,
    /// Threads for sync task bodies when the flow names none (`None`: one per core).
    pub(crate) max_workers: Option<usize>,
    /// Run every caching task's body again.
    pub(crate) refresh_cache: bool,
}

static GLOBAL: OnceLock<Arc<Seams>> = OnceLock::new();

thread_local! {
    static SCOPED: RefCell<Option<Arc<Seams>>> = const { RefCell::new(None) };
}

tokio::task_local! {
    static SCOPED_TASK: Arc<Seams>;
}

/// Makes `seams` the process-wide ones; gives them back if some were already.
pub(crate) fn set_global(seams: Arc<Seams>) -> Result<(), Arc<Seams>> {
    GLOBAL.set(seams)
}

/// Whether a [`scope`] or [`scope_async`] is active here.
pub(crate) fn in_scope() -> bool {
    SCOPED_TASK.try_with(|_| ()).is_ok() || SCOPED.with(|slot| slot.borrow().is_some())
}

/// The seams for a flow call starting now: the innermost scope's, else the
/// process-wide ones, else none at all.
pub(crate) fn current() -> Arc<Seams> {
    if let Ok(seams) = SCOPED_TASK.try_with(Arc::clone) {
        return seams;
    }
    if let Some(seams) = SCOPED.with(|slot| slot.borrow().clone()) {
        return seams;
    }
    GLOBAL.get().cloned().unwrap_or_else(|| {
        static NONE: OnceLock<Arc<Seams>> = OnceLock::new();
        NONE.get_or_init(Default::default).clone()
    })
}

/// Runs `f` with `seams` current on this thread.
pub(crate) fn scope<R>(seams: Arc<Seams>, f: impl FnOnce() -> R) -> R {
    crate::thread_scope::with_value(&SCOPED, seams, f)
}

/// Runs `future` with `seams` current in it.
pub(crate) async fn scope_async<F: std::future::Future>(seams: Arc<Seams>, future: F) -> F::Output {
    SCOPED_TASK.scope(seams, future).await
}
