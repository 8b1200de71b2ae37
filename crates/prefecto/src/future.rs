//! Futures of task runs: a handle to a run's state and, once it completes, its value.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::blocking::block_on;
use crate::names::TaskRunName;
use crate::state::State;
use crate::task::ErrorSource;
pub use crate::task_run_error::TaskRunError;

struct Slot<T> {
    state: State,
    outcome: Outcome<T>,
}

/// What a finished run leaves besides its state. The error is boxed: it is
/// rare, and a thin pointer keeps every run's slot as small as the value alone.
enum Outcome<T> {
    None,
    Value(T),
    /// The body's own error, for a run that failed with one.
    Error(Box<ErrorSource>),
}

/// When a run was announced (Pending) and first ran, and how many times it
/// ran. Atomics, not the slot's lock: they are counted on every transition
/// that is recorded, and a run's transitions never race each other.
#[derive(Default)]
struct RunClock {
    /// Nanoseconds since the epoch; 0 until announced.
    created: AtomicU64,
    /// Nanoseconds since the epoch; 0 until it first ran.
    started: AtomicU64,
    run_count: AtomicU32,
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos().max(1) as u64)
}

fn from_nanos(nanos: u64) -> Option<SystemTime> {
    (nanos != 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// What a task run's future and its engine share.
pub(crate) struct RunShared<T> {
    pub(crate) name: TaskRunName,
    pub(crate) spec: &'static crate::task::TaskSpec,
    slot: Mutex<Slot<T>>,
    clock: RunClock,
    terminal: AtomicBool,
    finished: Notify,
}

impl<T> RunShared<T> {
    pub(crate) fn new(
        name: TaskRunName,
        spec: &'static crate::task::TaskSpec,
        state: State,
    ) -> Arc<Self> {
        let terminal = state.is_terminal();
        Arc::new(RunShared {
            name,
            spec,
            slot: Mutex::new(Slot {
                state,
                outcome: Outcome::None,
            }),
            clock: RunClock::default(),
            terminal: AtomicBool::new(terminal),
            finished: Notify::new(),
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock cannot leave the slot half-written:
        // every writer assigns whole fields.
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves to a non-terminal state. Ignored once terminal: a run never leaves a terminal state.
    pub(crate) fn set_state(&self, state: State) {
        debug_assert!(!state.is_terminal());
        let mut slot = self.slot();
        if !slot.state.is_terminal() {
            slot.state = state;
        }
    }

    /// Counts `state` into the run's times, and returns them: `None` for a
    /// run never announced (an input a kill switch stopped before submission).
    pub(crate) fn times_with(&self, state: &State) -> Option<crate::recorder::RunTimes> {
        let clock = &self.clock;
        if state.is_pending() {
            let _ = clock.created.compare_exchange(
                0,
                nanos(state.system_time()),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        let created = from_nanos(clock.created.load(Ordering::Relaxed))?;
        let mut run_count = clock.run_count.load(Ordering::Relaxed);
        if state.is_running() {
            let _ = clock.started.compare_exchange(
                0,
                nanos(state.system_time()),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            run_count = clock.run_count.fetch_add(1, Ordering::Relaxed) + 1;
        }
        Some(crate::recorder::RunTimes {
            created,
            started: from_nanos(clock.started.load(Ordering::Relaxed)),
            run_count,
        })
    }

    /// Keeps the body's error for the run's `TaskRunError`; before [`finish`](Self::finish).
    pub(crate) fn keep_error(&self, error: ErrorSource) {
        self.slot().outcome = Outcome::Error(Box::new(error));
    }

    /// Moves to a terminal state, with the value if it completed, and wakes every waiter.
    pub(crate) fn finish(&self, state: State, value: Option<T>) {
        debug_assert!(state.is_terminal());
        {
            let mut slot = self.slot();
            slot.state = state;
            if let Some(value) = value {
                slot.outcome = Outcome::Value(value);
            }
        }
        self.terminal.store(true, Ordering::Release);
        self.finished.notify_waiters();
    }

    pub(crate) fn state(&self) -> State {
        self.slot().state.clone()
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        if self.is_terminal() {
            return;
        }
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            // Registering before the check closes the gap between checking and sleeping.
            notified.as_mut().enable();
            if self.is_terminal() {
                return;
            }
            notified.await;
        }
    }

    /// The final outcome: the value if completed, else the state. Takes the value out.
    pub(crate) fn take_outcome(&self) -> Result<T, TaskRunError> {
        let mut slot = self.slot();
        let completed = slot.state.is_completed();
        let source = match std::mem::replace(&mut slot.outcome, Outcome::None) {
            Outcome::Value(value) if completed => return Ok(value),
            Outcome::Error(error) => {
                let source = (*error).clone();
                // Kept, so that a second look at a failed run finds it too.
                slot.outcome = Outcome::Error(error);
                Some(source)
            }
            _ => None,
        };
        Err(TaskRunError {
            task_run: self.name.to_string(),
            state: if completed {
                State::failed("The result of this task run was already taken.")
            } else {
                slot.state.clone()
            },
            source,
        })
    }
}

/// The future of one task run, as returned by `submit` and `map`.
///
/// It never blocks to give a [`state`](Self::state); [`wait`](Self::wait) and
/// [`result`](Self::result) block the calling thread (use them in sync flows),
/// while [`wait_async`](Self::wait_async) and `.await` suit async flows.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// async fn double(x: u32) -> u32 {
///     x * 2
/// }
///
/// #[flow]
/// async fn doubled() -> u32 {
///     let future = double.submit(21);
///     let state = future.wait_async().await;
///     assert!(state.is_completed());
///     future.await.unwrap()
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(doubled().await.unwrap(), 42);
/// # });
/// ```
pub struct PrefectFuture<T> {
    pub(crate) shared: Arc<RunShared<T>>,
}

impl<T> PrefectFuture<T> {
    pub(crate) fn new(shared: Arc<RunShared<T>>) -> Self {
        PrefectFuture { shared }
    }

    /// The task run's name, `add-0`.
    pub fn task_run_name(&self) -> TaskRunName {
        self.shared.name
    }

    /// A snapshot of the run's current state. Never blocks on the run.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Whether the run has reached a terminal state.
    pub fn is_done(&self) -> bool {
        self.shared.is_terminal()
    }

    /// Blocks the calling thread until the run is terminal, and returns that state.
    pub fn wait(&self) -> State {
        block_on(self.shared.wait());
        self.state()
    }

    /// Waits until the run is terminal, and returns that state.
    pub async fn wait_async(&self) -> State {
        self.shared.wait().await;
        self.state()
    }

    /// Blocks until the run is terminal; its value, or an error with its final state.
    pub fn result(self) -> Result<T, TaskRunError> {
        block_on(self.shared.wait());
        self.shared.take_outcome()
    }

    /// Waits until the run is terminal; its value, or an error with its final state.
    pub async fn result_async(self) -> Result<T, TaskRunError> {
        self.shared.wait().await;
        self.shared.take_outcome()
    }
}

impl<T: Send + 'static> IntoFuture for PrefectFuture<T> {
    type Output = Result<T, TaskRunError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result_async())
    }
}

impl<T> fmt::Debug for PrefectFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefectFuture")
            .field("task_run", &self.shared.name.to_string())
            .field("state", &self.state())
            .finish()
    }
}

/// The futures of a `map`, in input order.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[flow]
/// fn squares() -> Vec<u64> {
///     let futures = square.map(1..=4).unwrap();
///     assert_eq!(futures.len(), 4);
///     assert!(futures.wait().iter().all(|s| s.is_completed()));
///     futures.results().unwrap()
/// }
///
/// assert_eq!(squares().unwrap(), vec![1, 4, 9, 16]);
/// ```
pub struct PrefectFutureList<T> {
    futures: Vec<PrefectFuture<T>>,
}

impl<T> PrefectFutureList<T> {
    pub(crate) fn new(futures: Vec<PrefectFuture<T>>) -> Self {
        PrefectFutureList { futures }
    }

    /// Blocks until every run is terminal; their states, in input order.
    pub fn wait(&self) -> Vec<State> {
        block_on(self.wait_async())
    }

    /// Waits until every run is terminal; their states, in input order.
    pub async fn wait_async(&self) -> Vec<State> {
        let mut states = Vec::with_capacity(self.futures.len());
        for future in &self.futures {
            states.push(future.wait_async().await);
        }
        states
    }

    /// The current states, in input order, without waiting.
    pub fn states(&self) -> Vec<State> {
        self.futures.iter().map(PrefectFuture::state).collect()
    }

    /// Blocks until every run is terminal; all values in input order, or the
    /// error of the first run (in input order) that did not complete.
    pub fn results(self) -> Result<Vec<T>, TaskRunError> {
        block_on(self.results_async())
    }

    /// Waits until every run is terminal; all values in input order, or the
    /// error of the first run (in input order) that did not complete.
    pub async fn results_async(self) -> Result<Vec<T>, TaskRunError> {
        self.wait_async().await;
        self.futures
            .into_iter()
            .map(|future| future.shared.take_outcome())
            .collect()
    }

    /// The futures themselves.
    pub fn into_inner(self) -> Vec<PrefectFuture<T>> {
        self.futures
    }
}

impl<T> Deref for PrefectFutureList<T> {
    type Target = [PrefectFuture<T>];
    fn deref(&self) -> &Self::Target {
        &self.futures
    }
}

impl<T> IntoIterator for PrefectFutureList<T> {
    type Item = PrefectFuture<T>;
    type IntoIter = std::vec::IntoIter<PrefectFuture<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.futures.into_iter()
    }
}

impl<T> fmt::Debug for PrefectFutureList<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.futures).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> TaskRunName {
        TaskRunName {
            task: "add",
            index: 3,
        }
    }

    static ADD: crate::task::TaskSpec = crate::task::TaskSpec::new("add", &["a", "b"]);

    #[test]
    fn name_is_task_dash_index() {
        assert_eq!(name().to_string(), "add-3");
    }

    #[test]
    fn a_run_counts_its_times() {
        let shared = RunShared::<u8>::new(name(), &ADD, State::pending());
        // Not announced: no times (an input stopped before submission).
        assert_eq!(shared.times_with(&State::cancelled("x")), None);
        let pending = State::pending();
        let created = shared.times_with(&pending).unwrap();
        assert_eq!((created.started, created.run_count), (None, 0));
        let first = State::running();
        let running = shared.times_with(&first).unwrap();
        assert_eq!(running.created, created.created);
        assert_eq!(running.started, Some(first.system_time()));
        let retried = shared.times_with(&State::retrying()).unwrap();
        assert_eq!(
            retried.started,
            Some(first.system_time()),
            "the first start stays"
        );
        assert_eq!(retried.run_count, 2);
        assert_eq!(shared.times_with(&State::completed()).unwrap().run_count, 2);
    }

    #[test]
    fn waiters_wake_on_finish() {
        let shared = RunShared::<u8>::new(name(), &ADD, State::pending());
        let future = PrefectFuture::new(shared.clone());
        assert!(!future.is_done());
        let finisher = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            shared.finish(State::completed(), Some(7));
        });
        assert!(future.wait().is_completed());
        assert_eq!(future.result(), Ok(7));
        finisher.join().unwrap();
    }

    #[test]
    fn terminal_state_is_final() {
        let shared = RunShared::<u8>::new(name(), &ADD, State::pending());
        shared.finish(State::cancelled("stopped"), None);
        shared.set_state(State::running());
        assert!(shared.state().is_cancelled());
        let err = PrefectFuture::new(shared).result().unwrap_err();
        assert_eq!(err.task_run, "add-3");
        assert!(err.state.is_cancelled());
    }
}
