//! Futures of task runs: a handle to a run's state and, once it completes, its value.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

use crate::ended_run::EndedRun;
use crate::names::TaskRunName;
pub(crate) use crate::run_shared::RunShared;
use crate::state::State;
pub use crate::task_run_error::TaskRunError;

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
    run: FutureRun<T>,
}

/// The run a future stands for: in progress (or may be), or ended and
/// kept by value, as a map keeps the runs its lanes are done with.
enum FutureRun<T> {
    Live(Arc<RunShared<T>>),
    Ended(EndedRun<T>),
}

impl<T> PrefectFuture<T> {
    pub(crate) fn new(shared: Arc<RunShared<T>>) -> Self {
        PrefectFuture {
            run: FutureRun::Live(shared),
        }
    }

    /// The run's record while it may be in progress; `None` once it is
    /// kept by value, ended.
    pub(crate) fn live(&self) -> Option<&Arc<RunShared<T>>> {
        match &self.run {
            FutureRun::Live(shared) => Some(shared),
            FutureRun::Ended(_) => None,
        }
    }

    /// Keeps the run by value from now on, if `lane`'s handle and this
    /// future's are its record's only ones (the lane that ran it is done
    /// with it); then gives the record back, for another run.
    pub(crate) fn keep_ended(&mut self, lane: Arc<RunShared<T>>) -> Option<Arc<RunShared<T>>> {
        let FutureRun::Live(held) = &mut self.run else {
            return None;
        };
        if !Arc::ptr_eq(held, &lane) || !held.is_terminal() {
            return None;
        }
        drop(lane);
        // `None` when another handle is left: it stays live for its holder.
        let ended = Arc::get_mut(held)?.take_ended();
        match std::mem::replace(&mut self.run, FutureRun::Ended(ended)) {
            FutureRun::Live(record) => Some(record),
            FutureRun::Ended(_) => None,
        }
    }

    /// The run's record, unless it is kept by value.
    pub(crate) fn into_live(self) -> Option<Arc<RunShared<T>>> {
        match self.run {
            FutureRun::Live(shared) => Some(shared),
            FutureRun::Ended(_) => None,
        }
    }

    /// The run's record, made for it if it is kept by value.
    pub(crate) fn into_shared(self) -> Arc<RunShared<T>> {
        match self.run {
            FutureRun::Live(shared) => shared,
            FutureRun::Ended(ended) => RunShared::of_ended(ended),
        }
    }

    /// The task run's name, `add-0`.
    pub fn task_run_name(&self) -> TaskRunName {
        match &self.run {
            FutureRun::Live(shared) => shared.name(),
            FutureRun::Ended(ended) => ended.name(),
        }
    }

    /// A snapshot of the run's current state. Never blocks on the run.
    pub fn state(&self) -> State {
        match &self.run {
            FutureRun::Live(shared) => shared.state(),
            FutureRun::Ended(ended) => ended.state.clone(),
        }
    }

    /// Whether the run has reached a terminal state.
    pub fn is_done(&self) -> bool {
        self.live().is_none_or(|shared| shared.is_terminal())
    }

    /// Blocks the calling thread until the run is terminal, and returns that state.
    ///
    /// # Panics
    ///
    /// Inside a current-thread Tokio runtime, whose only thread the run
    /// needs: use [`wait_async`](Self::wait_async) there.
    pub fn wait(&self) -> State {
        if let Some(shared) = self.live() {
            shared.wait_blocking("PrefectFuture::wait", "wait_async().await");
        }
        self.state()
    }

    /// Waits until the run is terminal, and returns that state.
    pub async fn wait_async(&self) -> State {
        self.until_done().await;
        self.state()
    }

    /// Waits until the run is terminal.
    pub(crate) async fn until_done(&self) {
        if let Some(shared) = self.live() {
            shared.wait().await;
        }
    }

    /// Blocks until the run is terminal; its value, or an error with its final state.
    ///
    /// # Panics
    ///
    /// Inside a current-thread Tokio runtime, whose only thread the run
    /// needs: use `.await` (or [`result_async`](Self::result_async)) there.
    pub fn result(mut self) -> Result<T, TaskRunError> {
        if let Some(shared) = self.live() {
            shared.wait_blocking("PrefectFuture::result", ".await");
        }
        self.take_outcome()
    }

    /// Waits until the run is terminal; its value, or an error with its final state.
    pub async fn result_async(mut self) -> Result<T, TaskRunError> {
        self.until_done().await;
        self.take_outcome()
    }

    /// The outcome of a run that has ended (else its state, as an error).
    /// Takes the value out.
    pub(crate) fn take_outcome(&mut self) -> Result<T, TaskRunError> {
        match &mut self.run {
            FutureRun::Live(shared) => shared.take_outcome(),
            FutureRun::Ended(ended) => ended.take_outcome(),
        }
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
            .field("task_run", &self.task_run_name().to_string())
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
    ///
    /// # Panics
    ///
    /// Inside a current-thread Tokio runtime, whose only thread the runs
    /// need: use [`wait_async`](Self::wait_async) there.
    pub fn wait(&self) -> Vec<State> {
        wait_blocking(
            &self.futures,
            "PrefectFutureList::wait",
            "wait_async().await",
        );
        self.states()
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
    ///
    /// # Panics
    ///
    /// Inside a current-thread Tokio runtime, whose only thread the runs
    /// need: use [`results_async`](Self::results_async) there.
    pub fn results(self) -> Result<Vec<T>, TaskRunError> {
        let mut futures = self.futures.into_iter();
        let mut collected = Collected::new(futures.len());
        while let Some(future) = futures.next() {
            if !future.is_done() {
                // Once, for this run and every later one, not once per run.
                let left = std::slice::from_ref(&future)
                    .iter()
                    .chain(futures.as_slice());
                wait_blocking(left, "PrefectFutureList::results", "results_async().await");
            }
            collected.take(future);
        }
        collected.into_result()
    }

    /// Waits until every run is terminal; all values in input order, or the
    /// error of the first run (in input order) that did not complete.
    pub async fn results_async(self) -> Result<Vec<T>, TaskRunError> {
        let mut collected = Collected::new(self.futures.len());
        for future in self.futures {
            // Most have ended: no wait made for them.
            if !future.is_done() {
                future.until_done().await;
            }
            collected.take(future);
        }
        collected.into_result()
    }

    /// The futures themselves.
    pub fn into_inner(self) -> Vec<PrefectFuture<T>> {
        self.futures
    }
}

/// Blocks once until every run of `futures` is terminal. On the thread of
/// a sync body, the thread is lent to every run first, as a single
/// future's wait lends it.
fn wait_blocking<'a, T: 'a>(
    futures: impl IntoIterator<Item = &'a PrefectFuture<T>> + Clone,
    call: &str,
    instead: &str,
) {
    let all_terminal = async {
        for future in futures.clone() {
            future.until_done().await;
        }
    };
    match crate::queued_body::current() {
        Some(helper) => {
            for shared in futures.clone().into_iter().filter_map(PrefectFuture::live) {
                shared.lend_thread(&helper);
            }
            helper.block_on(all_terminal);
        }
        None => crate::blocking::block_on(all_terminal, call, instead),
    }
}

/// The values taken from a list's runs, in input order, as each is
/// waited for: one pass over the runs, each looked at once (a map's runs
/// were read twice, waited for and then taken, and at a million runs each
/// pass over them was mostly cache misses), and then freed.
struct Collected<T> {
    values: Vec<T>,
    /// The first run that did not complete: the later ones are waited for,
    /// not taken.
    error: Option<TaskRunError>,
}

impl<T> Collected<T> {
    fn new(runs: usize) -> Self {
        Collected {
            values: Vec::with_capacity(runs),
            error: None,
        }
    }

    /// Takes the outcome of a terminal run.
    fn take(&mut self, mut future: PrefectFuture<T>) {
        if self.error.is_none() {
            match future.take_outcome() {
                Ok(value) => self.values.push(value),
                Err(error) => self.error = Some(error),
            }
        }
    }

    fn into_result(self) -> Result<Vec<T>, TaskRunError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self.values),
        }
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
    use crate::run_shared::tests::{ADD, name};
    use crate::state::State;

    #[test]
    fn a_future_of_a_word_sized_value_is_no_larger_than_its_ended_run() {
        // A collecting map holds one per input.
        assert!(std::mem::size_of::<PrefectFuture<u64>>() <= 56);
    }

    #[test]
    fn name_is_task_dash_index() {
        assert_eq!(name().to_string(), "add-3");
    }

    #[test]
    fn waiters_wake_on_finish() {
        let shared = RunShared::<u8>::new(name(), &ADD, State::pending(), None);
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
        let shared = RunShared::<u8>::new(name(), &ADD, State::pending(), None);
        shared.finish(State::cancelled("stopped"), None);
        shared.set_state(State::running());
        assert!(shared.state().is_cancelled());
        let err = PrefectFuture::new(shared).result().unwrap_err();
        assert_eq!(err.task_run, "add-3");
        assert!(err.state.is_cancelled());
    }
}
