//! The seam where a caching task's results are kept between runs.
//!
//! A task with `cache_key` and `persist_result` asks the [`ResultStore`] for
//! an earlier result before it runs, and hands it its result when it
//! completes. The run history is one; with none installed, every run runs.

use std::time::Duration;

/// Keeps persisted task results by task and cache key.
///
/// Calls come from the engine's threads: a store must answer quickly, and
/// may do its writing elsewhere.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use prefecto::prelude::*;
/// use prefecto::ResultStore;
///
/// #[derive(Default)]
/// struct InMemory(Mutex<HashMap<(String, String), String>>);
///
/// impl ResultStore for InMemory {
///     fn get(&self, task: &str, key: &str) -> Option<String> {
///         self.0.lock().unwrap().get(&(task.into(), key.into())).cloned()
///     }
///     fn put(&self, task: &'static str, key: String, value: String, _expires: Option<Duration>) {
///         self.0.lock().unwrap().insert((task.into(), key), value);
///     }
/// }
///
/// fn same(x: &u32) -> String {
///     x.to_string()
/// }
///
/// #[task(cache_key = same, persist_result = true)]
/// fn slow(x: u32) -> u32 {
///     x * 2
/// }
///
/// #[flow]
/// fn twice() -> State {
///     slow(1).unwrap();
///     slow.submit(1).wait() // found in the store: the body does not run
/// }
///
/// let prefecto = Prefecto::builder().engine_only().result_store(Arc::new(InMemory::default())).build().unwrap();
/// let state = prefecto.scope(|| twice()).unwrap();
/// assert_eq!(state.name(), "Cached");
/// ```
pub trait ResultStore: Send + Sync + 'static {
    /// The stored result of `task` for `key`, if one is there and not expired.
    fn get(&self, task: &str, key: &str) -> Option<String>;

    /// Stores a completed run's result, valid for `expires_after` (`None`: forever).
    fn put(&self, task: &'static str, key: String, value: String, expires_after: Option<Duration>);
}
