//! The seam where the progress of long maps is shown.
//!
//! `BatchTask::map`, and a plain `map` of more than a handful of inputs, ask
//! the installed [`ProgressDisplay`] for a [`MapProgress`] and tell it of each
//! batch and each finished run. The terminal progress bar is one.

use std::sync::Arc;

use crate::state::State;

/// Shows the progress of maps.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use prefecto::prelude::*;
/// use prefecto::{MapProgress, ProgressDisplay};
///
/// #[derive(Default)]
/// struct Count(AtomicUsize);
///
/// impl MapProgress for Count {
///     fn run_finished(&self, _state: &State) {
///         self.0.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// struct Counting(Arc<Count>);
///
/// impl ProgressDisplay for Counting {
///     fn start_map(&self, _task: &str, _total: Option<usize>, _batches: usize) -> Option<Arc<dyn MapProgress>> {
///         Some(self.0.clone())
///     }
/// }
///
/// #[task]
/// fn id(x: u32) -> u32 {
///     x
/// }
///
/// #[flow]
/// fn ids() {
///     BatchTask::new(id, 2).unwrap().map(0..5).unwrap();
/// }
///
/// let count = Arc::new(Count::default());
/// let prefecto = Prefecto::builder().engine_only().progress_display(Arc::new(Counting(count.clone()))).build().unwrap();
/// prefecto.scope(|| ids()).unwrap();
/// assert_eq!(count.0.load(Ordering::Relaxed), 5);
/// ```
pub trait ProgressDisplay: Send + Sync + 'static {
    /// A map of `total` inputs of `task` starts (`None`: a stream whose
    /// length is unknown), in `batches` batches (0 for a plain map, a
    /// sliding window, or batches whose count is unknown); `None` to show
    /// nothing for it.
    fn start_map(
        &self,
        task: &str,
        total: Option<usize>,
        batches: usize,
    ) -> Option<Arc<dyn MapProgress>>;
}

/// The progress of one map. Dropped when the map has finished.
pub trait MapProgress: Send + Sync {
    /// Batch `batch` (from 1) has started.
    fn batch_started(&self, _batch: usize) {}

    /// A run of the map finished in `state`.
    fn run_finished(&self, state: &State);
}
