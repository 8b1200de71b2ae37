//! `BatchTask`: `map` in bounded batches, stopped early by a kill switch.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::kill_switch::{BatchConfigError, KillSwitch, KillSwitchError};
use super::outcome::InputOutcome;
use crate::args::{MapArgs, MapError};
use crate::blocking::block_on;
use crate::context::{self, CancelScope, FlowRunContext, flow_log};
use crate::future::{PrefectFuture, PrefectFutureList, RunShared};
use crate::progress::MapProgress;
use crate::runner::{Started, TaskRun, new_run};
use crate::task::Task;

type SharedSwitch = Arc<Mutex<Box<dyn KillSwitch>>>;

/// How a [`BatchTask`] keeps `size` task runs going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchMode {
    /// The seed's behaviour: submit `size` inputs, wait until every one is
    /// terminal, then submit the next `size`.
    #[default]
    Strict,
    /// Keep `size` runs in flight and start the next input as soon as any one
    /// finishes, so one straggler does not stall a whole batch.
    SlidingWindow,
}

/// Why a [`BatchTask::map`] returned no futures.
#[non_exhaustive]
pub enum BatchError<T> {
    /// The arguments were refused; nothing ran.
    Map(MapError),
    /// A kill switch stopped the map; the error carries every input's outcome.
    KillSwitch(KillSwitchError<T>),
}

impl<T> fmt::Display for BatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Map(e) => e.fmt(f),
            BatchError::KillSwitch(e) => e.fmt(f),
        }
    }
}

impl<T> fmt::Debug for BatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Map(e) => f.debug_tuple("Map").field(e).finish(),
            BatchError::KillSwitch(e) => f.debug_tuple("KillSwitch").field(e).finish(),
        }
    }
}

impl<T> std::error::Error for BatchError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::Map(e) => Some(e),
            BatchError::KillSwitch(_) => None,
        }
    }
}

impl<T> From<MapError> for BatchError<T> {
    fn from(e: MapError) -> Self {
        BatchError::Map(e)
    }
}

impl<T> From<KillSwitchError<T>> for BatchError<T> {
    fn from(e: KillSwitchError<T>) -> Self {
        BatchError::KillSwitch(e)
    }
}

impl<T> BatchError<T> {
    /// The kill switch error, if that is what this is.
    pub fn into_kill_switch(self) -> Option<KillSwitchError<T>> {
        match self {
            BatchError::KillSwitch(e) => Some(e),
            BatchError::Map(_) => None,
        }
    }
}

/// Wraps a task to `map` it in batches of `size`: fewer runs at once, a gentler
/// load on whatever the task calls, and failure detected early by a
/// [kill switch](KillSwitch).
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn my_flow() -> Result<Vec<i64>, prefecto::Error> {
///     let batch_add = BatchTask::new(add, 2)?;
///     Ok(batch_add.map(vec![1, 2, 3, 4], vec![2, 3, 4, 5])?.results()?)
/// }
///
/// assert_eq!(my_flow().unwrap(), vec![3, 5, 7, 9]);
/// ```
///
/// With a kill switch, the map stops at the first failure and says what became
/// of every input:
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
///     s.parse()
/// }
///
/// #[flow]
/// fn parse_all() -> Vec<usize> {
///     let batch = BatchTask::new(parse, 2).unwrap().with_kill_switch(AnyFailedSwitch::new());
///     let inputs = ["1", "x", "3", "4"].map(String::from);
///     let mut err = batch.map(inputs).unwrap_err().into_kill_switch().unwrap();
///     assert_eq!(err.partial_results(), [Some(&1), None, None, None]);
///     err.cancelled_inputs()
/// }
///
/// // Inputs 2 and 3 were never submitted: they are recorded as Cancelled.
/// assert_eq!(parse_all().unwrap(), vec![2, 3]);
/// ```
///
/// `Args` is always the task's own parameter tuple: it is a type parameter
/// only so that `map` can take one argument per parameter, whatever the
/// task's arity (see [`map`](Self::map)); write `BatchTask<T>`.
pub struct BatchTask<T: Task, Args = <T as Task>::Args> {
    task: T,
    size: usize,
    mode: BatchMode,
    kill_switch: Option<SharedSwitch>,
    args: PhantomData<fn(Args)>,
}

impl<T: Task> BatchTask<T> {
    /// Wraps `task` to run `size` inputs at a time; `size` must be at least 1.
    pub fn new(task: T, size: usize) -> Result<Self, BatchConfigError> {
        if size == 0 {
            return Err(BatchConfigError::ZeroBatchSize);
        }
        Ok(BatchTask {
            task,
            size,
            mode: BatchMode::Strict,
            kill_switch: None,
            args: PhantomData,
        })
    }

    /// Stops the map when `switch` trips. The switch keeps its counts across
    /// maps of this `BatchTask`, as in the original.
    pub fn with_kill_switch(mut self, switch: impl KillSwitch) -> Self {
        self.kill_switch = Some(Arc::new(Mutex::new(Box::new(switch))));
        self
    }

    /// Keeps `size` runs in flight instead of waiting for whole batches.
    pub fn sliding_window(self) -> Self {
        self.with_mode(BatchMode::SlidingWindow)
    }

    /// Sets the [`BatchMode`].
    pub fn with_mode(mut self, mode: BatchMode) -> Self {
        self.mode = mode;
        self
    }

    /// The batch size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The mode.
    pub fn mode(&self) -> BatchMode {
        self.mode
    }

    /// As [`map`](Self::map), with every argument in one tuple: for code
    /// generic over the task, which cannot name its arity.
    ///
    /// ```
    /// use prefecto::args::MapArgs;
    /// use prefecto::prelude::*;
    ///
    /// fn first_batch<T: Task>(batch: &BatchTask<T>, args: impl MapArgs<T::Args>) -> usize {
    ///     batch.map_tuple(args).map(|futures| futures.len()).unwrap_or(0)
    /// }
    ///
    /// #[task]
    /// fn add(a: i64, b: i64) -> i64 {
    ///     a + b
    /// }
    ///
    /// #[flow]
    /// fn count() -> usize {
    ///     first_batch(&BatchTask::new(add, 2).unwrap(), (vec![1, 2, 3], unmapped(1)))
    /// }
    ///
    /// assert_eq!(count().unwrap(), 3);
    /// ```
    pub fn map_tuple<M: MapArgs<T::Args>>(
        &self,
        args: M,
    ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        block_on(self.map_tuple_async(args))
    }

    /// As [`map_async`](Self::map_async), with every argument in one tuple.
    pub async fn map_tuple_async<M: MapArgs<T::Args>>(
        &self,
        args: M,
    ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        let inputs = args.into_inputs(self.task.spec().param_names)?;
        let map = Arc::new(MapRun::new(self, context::current(), inputs));
        let total = map.runs.len();
        let name = self.task.spec().name;
        match self.mode {
            BatchMode::Strict => {
                let batches = total.div_ceil(self.size);
                for batch in 1..=batches {
                    if map.tripped.get().is_some() {
                        break;
                    }
                    flow_log!(
                        map.ctx,
                        DEBUG,
                        "Mapping '{}' batch {} of {}.",
                        name,
                        batch,
                        batches
                    );
                    if let Some(progress) = &map.progress {
                        progress.batch_started(batch);
                    }
                    let end = (batch * self.size).min(total);
                    // One lane per input of the batch: each usually takes one input.
                    map.run_lanes(end, end - (batch - 1) * self.size).await;
                }
            }
            BatchMode::SlidingWindow => {
                flow_log!(
                    map.ctx,
                    DEBUG,
                    "Mapping '{}' over {} input(s) with a sliding window of {}.",
                    name,
                    total,
                    self.size
                );
                map.run_lanes(total, self.size.min(total)).await;
            }
        }
        map.finish()
    }
}

/// One `map_async` call: its inputs, its task runs, and what its lanes share.
///
/// A lane is a Tokio task that takes the next input, drives its task run to a
/// terminal state, shows that state to the kill switch, and takes the next.
/// `size` lanes over all inputs make the sliding window; strict mode gives each
/// batch its own lanes and waits for them. Nothing polls: the last lane to end
/// wakes the driver.
struct MapRun<T: Task> {
    ctx: Arc<FlowRunContext>,
    task: T,
    scope: Arc<CancelScope>,
    switch: Option<SharedSwitch>,
    /// One per input, in input order, created `Pending` and announced when submitted.
    runs: Vec<Arc<RunShared<T::Output>>>,
    queue: Mutex<Queue<T::Args>>,
    /// The switch's name and reason, once it has tripped.
    tripped: OnceLock<(String, String)>,
    lanes_running: AtomicUsize,
    lanes_done: Notify,
    progress: Option<Arc<dyn MapProgress>>,
}

/// An input taken from the queue: started already (a sync body, queued on
/// the pool in input order) or to start on its lane.
enum Submitted<T: Task> {
    Started(Started<T>),
    Args(T::Args),
}

/// The inputs not yet taken. Lanes take inputs up to `end`, the end of the
/// current batch (or of all inputs, in window mode).
struct Queue<A> {
    next: usize,
    end: usize,
    inputs: std::vec::IntoIter<A>,
}

impl<T: Task> MapRun<T> {
    fn new(batch: &BatchTask<T>, ctx: Arc<FlowRunContext>, inputs: Vec<T::Args>) -> Self {
        let first = ctx.reserve_run_names(batch.task.spec().name, inputs.len());
        let batches = match batch.mode {
            BatchMode::Strict => inputs.len().div_ceil(batch.size),
            BatchMode::SlidingWindow => 0,
        };
        let progress =
            ctx.seams.progress.as_ref().and_then(|display| {
                display.start_map(batch.task.spec().name, inputs.len(), batches)
            });
        let runs = (first..)
            .take(inputs.len())
            .map(|index| new_run(&batch.task, index))
            .collect();
        MapRun {
            scope: ctx.scope.child(),
            ctx,
            task: batch.task.clone(),
            switch: batch.kill_switch.clone(),
            runs,
            queue: Mutex::new(Queue {
                next: 0,
                end: 0,
                inputs: inputs.into_iter(),
            }),
            tripped: OnceLock::new(),
            lanes_running: AtomicUsize::new(0),
            lanes_done: Notify::new(),
            progress,
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue<T::Args>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits up to `lanes` inputs at once, each on a lane of its own that
    /// then takes further inputs up to `end`, and waits until every lane has ended.
    async fn run_lanes(self: &Arc<Self>, end: usize, lanes: usize) {
        self.queue().end = end;
        // Submitted here, together, as the original submits a batch.
        let firsts: Vec<_> = std::iter::from_fn(|| self.submit_next())
            .take(lanes)
            .collect();
        if firsts.is_empty() {
            return;
        }
        self.lanes_running.store(firsts.len(), Ordering::Release);
        if self.task.spec().is_async {
            // Async bodies run in their lanes: a task each, spread over the runtime's threads.
            for (position, submitted) in firsts {
                let map = self.clone();
                self.ctx.tracker.spawn_on(
                    async move { map.lane(position, submitted).await },
                    &self.ctx.handle,
                );
            }
        } else {
            // Sync bodies run on the pool; their lanes only wait for them, so
            // one task can drive them all rather than one task each.
            let map = self.clone();
            self.ctx.tracker.spawn_on(
                async move {
                    let mut lanes: FuturesUnordered<_> = firsts
                        .into_iter()
                        .map(|(position, submitted)| map.clone().lane(position, submitted))
                        .collect();
                    while lanes.next().await.is_some() {}
                },
                &self.ctx.handle,
            );
        }
        // The last lane leaves a permit, so this cannot miss its wake-up.
        self.lanes_done.notified().await;
    }

    /// Whether no further input may start: the switch tripped, or the flow run was cancelled.
    fn stopped(&self) -> bool {
        self.tripped.get().is_some() || self.scope.is_cancelled()
    }

    /// Takes the next input, unless the map has stopped, and announces its run.
    ///
    /// A sync body is also handed to the thread pool here, under the queue's
    /// lock, so bodies reach the pool in input order: a pool of one runs a
    /// batch in order. An async body starts on its lane, in parallel.
    fn submit_next(&self) -> Option<(usize, Submitted<T>)> {
        if self.stopped() {
            return None;
        }
        let mut queue = self.queue();
        if queue.next >= queue.end {
            return None;
        }
        let args = queue.inputs.next()?;
        let position = queue.next;
        queue.next += 1;
        let run = self.task_run(position);
        run.announce();
        if self.task.spec().is_async {
            return Some((position, Submitted::Args(args)));
        }
        Some((position, Submitted::Started(run.start(args))))
    }

    fn task_run(&self, position: usize) -> TaskRun<'_, T> {
        TaskRun {
            ctx: &self.ctx,
            task: &self.task,
            shared: &self.runs[position],
            scope: &self.scope,
        }
    }

    /// Drives the run of `position`, then of each input it takes, until none is left.
    async fn lane(self: Arc<Self>, position: usize, submitted: Submitted<T>) {
        let mut next = Some((position, submitted));
        while let Some((position, submitted)) = next {
            let run = self.task_run(position);
            let started = match submitted {
                Submitted::Started(started) => started,
                Submitted::Args(args) => run.start(args),
            };
            run.drive_started(started).await;
            self.observe(run.shared);
            next = self.submit_next();
        }
        if self.lanes_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last lane records the inputs that will never be submitted, so
            // that whoever waits for the lanes (a signal handler, say) finds
            // every input with an outcome.
            if self.stopped() {
                self.cancel_unsubmitted();
            }
            self.lanes_done.notify_one();
        }
    }

    /// Ends every input not yet taken in `Cancelled`; later calls find none left.
    fn cancel_unsubmitted(&self) {
        let unsubmitted = {
            let mut queue = self.queue();
            let first = queue.next;
            queue.next = self.runs.len();
            first..self.runs.len()
        };
        if unsubmitted.is_empty() {
            return;
        }
        let message = match self.tripped.get() {
            Some((switch, reason)) => {
                format!("Cancelled by kill switch {switch} before submission: {reason}")
            }
            None => format!("{} It was never submitted.", self.scope.reason()),
        };
        for position in unsubmitted.clone() {
            self.task_run(position).cancel_unsubmitted(&message);
        }
        flow_log!(
            self.ctx,
            WARN,
            "{} input(s) of '{}' were never submitted; their task runs are Cancelled.",
            unsubmitted.len(),
            self.task.spec().name
        );
    }

    /// Shows a finished run's state to the kill switch; on a trip, stops the map.
    fn observe(&self, run: &RunShared<T::Output>) {
        if self.progress.is_none() && self.switch.is_none() {
            return;
        }
        let state = run.state();
        if let Some(progress) = &self.progress {
            progress.run_finished(&state);
        }
        let Some(switch) = &self.switch else {
            return;
        };
        let mut switch = switch.lock().unwrap_or_else(|p| p.into_inner());
        // Once tripped, the switch sees no more states: they are the trip's consequences.
        if self.tripped.get().is_some() || !switch.should_flip_switch(&state) {
            return;
        }
        let (name, reason) = (switch.name(), switch.reason());
        flow_log!(
            self.ctx,
            ERROR,
            "Kill switch {} tripped on task run '{}': {}. No further input of '{}' will be submitted.",
            name,
            run.name,
            reason,
            self.task.spec().name
        );
        // Tripped first, so that no lane takes another input once runs are being cancelled.
        let _ = self.tripped.set((name.clone(), reason.clone()));
        self.scope
            .cancel(format!("Cancelled by kill switch {name}: {reason}"));
    }

    /// Gives every input that was never submitted its `Cancelled` run, then the result.
    fn finish(&self) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        if self.stopped() {
            self.cancel_unsubmitted();
        }
        let futures = self.runs.iter().cloned().map(PrefectFuture::new);
        let Some((switch, reason)) = self.tripped.get().cloned() else {
            return Ok(PrefectFutureList::new(futures.collect()));
        };
        let (outcomes, values) = futures
            .enumerate()
            .map(|(index, future)| {
                let outcome = InputOutcome {
                    index,
                    task_run: future.task_run_name(),
                    state: future.state(),
                };
                (outcome, future.shared.take_outcome().ok())
            })
            .unzip();
        Err(BatchError::KillSwitch(KillSwitchError::of_map(
            switch, reason, outcomes, values,
        )))
    }
}
