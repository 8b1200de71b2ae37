//! `BatchTask`: `map` in bounded batches, stopped early by a kill switch.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use super::batch_error::BatchError;
use super::batch_mode::{BatchMode, SwitchOrder};
use super::kill_switch::{BatchConfigError, KillSwitch};
use super::map_inputs::Source;
use super::map_run::{MapRun, SharedSwitch};
use super::map_stream::{Delivery, MapStream};
use super::stream_handoff::{self, Filling};
use crate::args::{MapArgs, MapError, Zipped};
use crate::blocking::block_on;
use crate::context;
use crate::future::PrefectFutureList;
use crate::stream_args::StreamArgs;
use crate::task::Task;

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
/// Where the bodies run: a task with one attempt (no retries, no timeout,
/// no tag concurrency limits under a Prefect server) runs in the map's
/// lanes, with nothing around the body but its run's record. A sync body
/// runs on the flow run's pool (`#[flow(max_workers = ..)]`): each pool
/// thread takes inputs from the map's queue and runs them, several taken
/// at a time while runs take under 20 µs each (so a slow run holds back
/// at most the few inputs its thread took with it; the lanes of a strict
/// batch start with as many as the last batch's took), and gives its
/// thread up every 10 ms and whenever it would wait, so other work queued
/// on the pool still runs; the last lane of a strict batch begins the next
/// on its thread. Async bodies run in lanes that one task per runtime
/// thread drives (a strict batch's first group by the map's own task); a
/// strict batch of `map` submits its inputs together but starts a lane per
/// runtime thread, and another each time a lane's body waits, up to the
/// batch's size; while the runs of a sliding window's `map` end as soon as
/// they start, each group takes several inputs at a time for its lanes,
/// and gives back those it holds whenever one of its lanes would wait, so
/// none waits behind a slow run. Other tasks' runs go through the full
/// engine, as `submit` does.
///
/// `Args` is always the task's own parameter tuple: it is a type parameter
/// only so that `map` can take one argument per parameter, whatever the
/// task's arity (see [`map`](Self::map)); write `BatchTask<T>`.
pub struct BatchTask<T: Task, Args = <T as Task>::Args> {
    task: T,
    size: usize,
    mode: BatchMode,
    kill_switch: Option<SharedSwitch>,
    switch_order: Option<SwitchOrder>,
    read_ahead: Option<usize>,
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
            switch_order: None,
            read_ahead: None,
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

    /// Sets the order in which the kill switch is shown finished runs; by
    /// default [`SwitchOrder::Input`] in strict mode and
    /// [`SwitchOrder::Completion`] with a sliding window.
    ///
    /// ```
    /// use prefecto::prelude::*;
    ///
    /// #[task]
    /// fn id(x: u32) -> u32 {
    ///     x
    /// }
    ///
    /// let batch = BatchTask::new(id, 10).unwrap();
    /// assert_eq!(batch.switch_order(), SwitchOrder::Input);
    /// let batch = batch.sliding_window();
    /// assert_eq!(batch.switch_order(), SwitchOrder::Completion);
    /// let batch = batch.with_switch_order(SwitchOrder::Input);
    /// assert_eq!(batch.switch_order(), SwitchOrder::Input);
    /// ```
    pub fn with_switch_order(mut self, order: SwitchOrder) -> Self {
        self.switch_order = Some(order);
        self
    }

    /// The order in which the kill switch is shown finished runs.
    pub fn switch_order(&self) -> SwitchOrder {
        self.switch_order.unwrap_or(match self.mode {
            BatchMode::Strict => SwitchOrder::Input,
            BatchMode::SlidingWindow => SwitchOrder::Completion,
        })
    }

    /// How many inputs a [stream](Self::stream) may read beyond `size`,
    /// counted from the oldest input whose outcome it has not handed over
    /// yet (or, with an input-order switch, not shown the switch yet): what
    /// bounds a stream's memory. A straggler holds the window once the
    /// inputs after it reach `size + read_ahead`. By default
    /// `max(size, 1024)`; at least 1.
    ///
    /// ```
    /// use prefecto::prelude::*;
    ///
    /// #[task]
    /// fn id(x: u32) -> u32 {
    ///     x
    /// }
    ///
    /// let batch = BatchTask::new(id, 10).unwrap();
    /// assert_eq!(batch.read_ahead(), 1024);
    /// assert_eq!(batch.with_read_ahead(50).read_ahead(), 50);
    /// ```
    pub fn with_read_ahead(mut self, inputs: usize) -> Self {
        self.read_ahead = Some(inputs.max(1));
        self
    }

    /// See [`with_read_ahead`](Self::with_read_ahead).
    pub fn read_ahead(&self) -> usize {
        self.read_ahead.unwrap_or(self.size.max(1024))
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
        block_on(
            self.map_tuple_async(args),
            "BatchTask::map",
            "map_async(..).await",
        )
    }

    /// As [`map_async`](Self::map_async), with every argument in one tuple.
    pub async fn map_tuple_async<M: MapArgs<T::Args>>(
        &self,
        args: M,
    ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        let (inputs, total) = match args.into_inputs(self.task.spec().param_names)? {
            Zipped::Listed(inputs) => {
                let total = inputs.len();
                (Source::Listed(inputs), Some(total))
            }
            Zipped::Streamed { inputs, .. } => (Source::Streamed(inputs), None),
        };
        let batches = match (self.mode, total) {
            (BatchMode::Strict, Some(total)) => total.div_ceil(self.size),
            _ => 0,
        };
        let ctx = context::current();
        let map = Arc::new(MapRun::new(
            &self.task,
            self.kill_switch.clone(),
            self.switch_order(),
            (self.mode, self.size, batches),
            ctx.clone(),
            inputs,
            total,
            None,
        ));
        // Driven by a task of its own on the runtime: a batch's end wakes
        // it there, not the caller's thread, and a caller that stops
        // waiting does not leave a batch's runs unfinished.
        let driver = {
            let map = map.clone();
            let drive = async move { map.drive().await };
            ctx.tracker.spawn_on(drive, &ctx.handle)
        };
        if let Err(error) = driver.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
        map.finish()
    }

    /// As [`stream`](Self::stream), with every argument in one tuple.
    pub fn stream_tuple<S: StreamArgs<T::Args>>(
        &self,
        args: S,
    ) -> Result<MapStream<T::Output>, MapError> {
        self.start_stream(args, true)
    }

    /// As [`stream_unordered`](Self::stream_unordered), with every argument in one tuple.
    pub fn stream_unordered_tuple<S: StreamArgs<T::Args>>(
        &self,
        args: S,
    ) -> Result<MapStream<T::Output>, MapError> {
        self.start_stream(args, false)
    }

    /// Starts a streaming map on the flow's runtime and gives its outcomes' stream.
    fn start_stream<S: StreamArgs<T::Args>>(
        &self,
        args: S,
        in_input_order: bool,
    ) -> Result<MapStream<T::Output>, MapError> {
        let (inputs, total) = args.into_input_stream(self.task.spec().param_names)?;
        let batches = match (self.mode, total) {
            (BatchMode::Strict, Some(total)) => total.div_ceil(self.size),
            _ => 0,
        };
        let span = self.size + self.read_ahead();
        let (handoff, reader) = stream_handoff::handoff(span);
        let delivery = Delivery {
            shared_buffer: handoff.buffer(0),
            handoff,
            in_input_order,
            sending: tokio::sync::Mutex::new(()),
            span,
        };
        let ctx = context::current();
        let map = Arc::new(MapRun::new(
            &self.task,
            self.kill_switch.clone(),
            self.switch_order(),
            (self.mode, self.size, batches),
            ctx.clone(),
            Source::Streamed(inputs),
            total,
            Some(delivery),
        ));
        let reader = reader.filling(match map.on_pool_lanes() {
            true => Filling::Sleep,
            false => Filling::Yield,
        });
        let stream = MapStream::new(reader, map.scope.clone(), total);
        ctx.tracker.spawn_on(
            async move {
                map.drive().await;
                map.end_stream().await;
            },
            &ctx.handle,
        );
        Ok(stream)
    }
}
