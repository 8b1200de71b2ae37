//! `BatchTask`: `map` in bounded batches, stopped early by a kill switch.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::kill_switch::{ConfigError, KillSwitch, KillSwitchError};
use crate::args::{MapArgs, MapError};
use crate::context::{self, flow_log, CancelScope, FlowRunContext};
use crate::future::{PrefectFuture, PrefectFutureList, TaskRunName};
use crate::runner::{record_unsubmitted, spawn_run, Completion};
use crate::state::State;
use crate::task::Task;

/// How a [`BatchTask`] keeps `size` task runs going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchMode {
    /// The seed's behaviour: submit `size` inputs, wait until every one is
    /// terminal, then submit the next `size`.
    #[default]
    Strict,
    /// Keep `size` runs in flight and start the next input as soon as any one
    /// finishes, so one straggler does not stall a whole batch.
    SlidingWindow,
}

/// What became of one input of a [`BatchTask::map`] that a kill switch stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct InputOutcome<T> {
    /// The input's position in the map.
    pub index: usize,
    /// The task run created for it.
    pub task_run: TaskRunName,
    /// Its final state: `Cancelled` for inputs that were never submitted.
    pub state: State,
    /// Its value, if it completed.
    pub value: Option<T>,
}

/// Why a [`BatchTask::map`] returned no futures.
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
/// fn my_flow() -> Result<Vec<i64>, Box<dyn std::error::Error + Send + Sync>> {
///     let batch_add = BatchTask::new(add, 2)?;
///     Ok(batch_add.map((vec![1, 2, 3, 4], vec![2, 3, 4, 5]))?.results()?)
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
///     let err = batch.map((inputs,)).unwrap_err().into_kill_switch().unwrap();
///     assert_eq!(err.partial_results(), [Some(&1), None, None, None]);
///     err.cancelled_inputs()
/// }
///
/// // Inputs 2 and 3 were never submitted: they are recorded as Cancelled.
/// assert_eq!(parse_all().unwrap(), vec![2, 3]);
/// ```
pub struct BatchTask<T: Task> {
    task: T,
    size: usize,
    mode: BatchMode,
    kill_switch: Option<Mutex<Box<dyn KillSwitch>>>,
}

impl<T: Task> BatchTask<T> {
    /// Wraps `task` to run `size` inputs at a time; `size` must be at least 1.
    pub fn new(task: T, size: usize) -> Result<Self, ConfigError> {
        if size == 0 {
            return Err(ConfigError::ZeroBatchSize);
        }
        Ok(BatchTask {
            task,
            size,
            mode: BatchMode::Strict,
            kill_switch: None,
        })
    }

    /// Stops the map when `switch` trips. The switch keeps its counts across
    /// maps of this `BatchTask`, as in the original.
    pub fn with_kill_switch(mut self, switch: impl KillSwitch) -> Self {
        self.kill_switch = Some(Mutex::new(Box::new(switch)));
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

    /// Maps the task over the inputs in batches, blocking until every run is
    /// terminal. Returns one future per input, in input order, or the
    /// [`KillSwitchError`] with every input's outcome.
    ///
    /// Call it from a sync flow; in async code use [`map_async`](Self::map_async).
    pub fn map<M: MapArgs<T::Args>>(
        &self,
        args: M,
    ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        futures::executor::block_on(self.map_async(args))
    }

    /// As [`map`](Self::map), for async flows.
    pub async fn map_async<M: MapArgs<T::Args>>(
        &self,
        args: M,
    ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        let inputs = args.into_inputs(self.task.spec().param_names)?;
        let ctx = context::current();
        let mut driver = Driver::new(self, ctx, inputs.len());
        let mut inputs = inputs.into_iter();
        match self.mode {
            BatchMode::Strict => {
                let batches = driver.total.div_ceil(self.size);
                for batch in 1..=batches {
                    if driver.tripped.is_some() {
                        break;
                    }
                    flow_log!(
                        driver.ctx,
                        DEBUG,
                        "Mapping '{}' batch {} of {}.",
                        self.task.spec().name,
                        batch,
                        batches
                    );
                    for args in inputs.by_ref().take(self.size) {
                        driver.submit(args);
                    }
                    driver.drain_until_in_flight(0).await;
                }
            }
            BatchMode::SlidingWindow => {
                flow_log!(
                    driver.ctx,
                    DEBUG,
                    "Mapping '{}' over {} input(s) with a sliding window of {}.",
                    self.task.spec().name,
                    driver.total,
                    self.size
                );
                loop {
                    while driver.tripped.is_none() && driver.in_flight < self.size {
                        match inputs.next() {
                            Some(args) => driver.submit(args),
                            None => break,
                        }
                    }
                    if driver.in_flight == 0 {
                        break;
                    }
                    driver.drain_until_in_flight(driver.in_flight - 1).await;
                }
            }
        }
        driver.finish(inputs.count())
    }
}

/// The state of one `map_async` call.
struct Driver<'a, T: Task> {
    batch: &'a BatchTask<T>,
    ctx: Arc<FlowRunContext>,
    scope: Arc<CancelScope>,
    total: usize,
    first_index: u64,
    futures: Vec<PrefectFuture<T::Output>>,
    in_flight: usize,
    finished_sender: mpsc::UnboundedSender<usize>,
    finished: mpsc::UnboundedReceiver<usize>,
    /// The switch's name and reason, once it has tripped.
    tripped: Option<(String, String)>,
}

impl<'a, T: Task> Driver<'a, T> {
    fn new(batch: &'a BatchTask<T>, ctx: Arc<FlowRunContext>, total: usize) -> Self {
        let first_index = ctx.reserve_run_names(batch.task.spec().name, total);
        let scope = ctx.scope.child();
        let (finished_sender, finished) = mpsc::unbounded_channel();
        Driver {
            batch,
            ctx,
            scope,
            total,
            first_index,
            futures: Vec::with_capacity(total),
            in_flight: 0,
            finished_sender,
            finished,
            tripped: None,
        }
    }

    fn next_index(&self) -> u64 {
        self.first_index + self.futures.len() as u64
    }

    fn submit(&mut self, args: T::Args) {
        let completion = Completion {
            sender: self.finished_sender.clone(),
            position: self.futures.len(),
        };
        let future = spawn_run(
            &self.ctx,
            &self.batch.task,
            args,
            self.next_index(),
            &self.scope,
            Some(completion),
        );
        self.futures.push(future);
        self.in_flight += 1;
    }

    /// Waits for runs to finish, showing each to the kill switch as it
    /// finishes, until at most `target` are in flight.
    async fn drain_until_in_flight(&mut self, target: usize) {
        while self.in_flight > target {
            let position = self
                .finished
                .recv()
                .await
                .expect("the driver holds a sender, so the channel stays open");
            self.in_flight -= 1;
            if self.tripped.is_none() {
                self.observe(position);
            }
        }
    }

    fn observe(&mut self, position: usize) {
        let Some(switch) = &self.batch.kill_switch else {
            return;
        };
        let state = self.futures[position].state();
        let mut switch = switch.lock().unwrap_or_else(|p| p.into_inner());
        if switch.should_flip_switch(&state) {
            let (name, reason) = (switch.name(), switch.reason());
            drop(switch);
            flow_log!(
                self.ctx, ERROR,
                "Kill switch {} tripped on task run '{}': {}. No further input of '{}' will be submitted.",
                name, self.futures[position].task_run_name(), reason, self.batch.task.spec().name
            );
            self.scope
                .cancel(format!("Cancelled by kill switch {name}: {reason}"));
            self.tripped = Some((name, reason));
        }
    }

    /// Gives the `unsubmitted` inputs their `Cancelled` records, then the result.
    fn finish(
        mut self,
        unsubmitted: usize,
    ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        let Some((switch, reason)) = self.tripped.take() else {
            return Ok(PrefectFutureList::new(self.futures));
        };
        if unsubmitted > 0 {
            let message = format!("Cancelled by kill switch {switch} before submission: {reason}");
            for _ in 0..unsubmitted {
                let name = TaskRunName {
                    task: self.batch.task.spec().name,
                    index: self.next_index(),
                };
                self.futures
                    .push(record_unsubmitted(&self.ctx, name, &message));
            }
            flow_log!(
                self.ctx,
                WARN,
                "{} input(s) of '{}' were never submitted; their task runs are Cancelled.",
                unsubmitted,
                self.batch.task.spec().name
            );
        }
        let outcomes = self
            .futures
            .into_iter()
            .enumerate()
            .map(|(index, future)| {
                let state = future.state();
                let task_run = future.task_run_name();
                let value = future.shared.take_outcome().ok();
                InputOutcome {
                    index,
                    task_run,
                    state,
                    value,
                }
            })
            .collect();
        Err(BatchError::KillSwitch(KillSwitchError {
            switch,
            reason,
            outcomes,
        }))
    }
}
