//! The seam where task runs wait for concurrency slots before they run.
//!
//! A task run with tags asks the [`SlotLimiter`] for a slot before it enters
//! `Running`, holds it while its body runs, and gives it back after. The
//! Prefect client is one (Prefect's tag concurrency limits); with none
//! installed, runs start at once.

use std::future::Future;
use std::pin::Pin;

use uuid::Uuid;

/// A boxed future, as the seams return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Which run asks for a slot.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct SlotRequest {
    /// The task's tags (never empty: untagged runs do not ask).
    pub tags: &'static [&'static str],
    /// The task run's id, as a Prefect server knows it.
    pub task_run_id: Uuid,
}

/// Grants concurrency slots to tagged task runs.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use prefecto::prelude::*;
/// use prefecto::{BoxFuture, Slot, SlotLimiter, SlotRequest};
///
/// #[derive(Default)]
/// struct CountingLimiter(AtomicUsize);
///
/// impl SlotLimiter for CountingLimiter {
///     fn acquire(&self, _request: SlotRequest) -> BoxFuture<Option<Box<dyn Slot>>> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         Box::pin(async { None }) // no limit applies
///     }
/// }
///
/// #[task(tags = ["db"])]
/// fn query(x: u8) -> u8 {
///     x
/// }
///
/// #[flow]
/// fn queries() -> Vec<u8> {
///     query.map(vec![1, 2, 3]).unwrap().results().unwrap()
/// }
///
/// let limiter = Arc::new(CountingLimiter::default());
/// let prefecto = Prefecto::builder().engine_only().slot_limiter(limiter.clone()).build().unwrap();
/// assert_eq!(prefecto.scope(|| queries()).unwrap(), vec![1, 2, 3]);
/// assert_eq!(limiter.0.load(Ordering::Relaxed), 3);
/// ```
pub trait SlotLimiter: Send + Sync + 'static {
    /// Waits until the run may start; the slot it holds, or `None` if no
    /// limit applies. It must not fail the run: a limiter that cannot ask
    /// its limits lets the run go ahead, and says so.
    fn acquire(&self, request: SlotRequest) -> BoxFuture<Option<Box<dyn Slot>>>;
}

/// A slot held while a task run's body runs.
///
/// Dropped without [`release`](Slot::release) (the run was cancelled or
/// panicked), it must still be given back, in the background.
pub trait Slot: Send + 'static {
    /// Gives the slot back once the body has finished.
    fn release(self: Box<Self>) -> BoxFuture<()>;
}
