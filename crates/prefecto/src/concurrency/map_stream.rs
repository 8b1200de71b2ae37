//! [`MapStream`]: the outcomes of a streaming map, one per input, handed
//! over as they are ready and then forgotten by the map.

use std::fmt;
use std::sync::Arc;

#[cfg(doc)]
use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::args::MapError;
use crate::blocking::block_on;
use crate::context::CancelScope;
use crate::future::{RunShared, TaskRunError};
use crate::names::TaskRunName;

/// The outcome of one input of a [`MapStream`].
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn half(x: u32) -> Result<u32, String> {
///     if x % 2 == 0 { Ok(x / 2) } else { Err(format!("{x} is odd")) }
/// }
///
/// #[flow]
/// fn halves() -> Vec<(usize, bool)> {
///     let batch = BatchTask::new(half, 2).unwrap();
///     batch
///         .stream(vec![2, 3])
///         .unwrap()
///         .map(|run| (run.index, run.result.is_ok()))
///         .collect()
/// }
///
/// assert_eq!(halves().unwrap(), [(0, true), (1, false)]);
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamedRun<T> {
    /// The input's position in the map, from 0.
    pub index: usize,
    /// The task run created for it.
    pub task_run: TaskRunName,
    /// Its value if it completed; else its final state, and the body's own
    /// error as `source()` when it returned one.
    pub result: Result<T, TaskRunError>,
}

impl<T> StreamedRun<T> {
    /// Takes a finished run's outcome.
    fn of(index: usize, run: &Arc<RunShared<T>>) -> Self {
        StreamedRun {
            index,
            task_run: run.name(),
            result: run.take_outcome(),
        }
    }
}

/// Why a [`MapStream`] ended before every input ran, as
/// [`MapStream::stop`] tells once it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStop {
    /// A kill switch tripped. The runs in flight were cancelled and, like
    /// every input read after the trip, handed over `Cancelled`.
    KillSwitch {
        /// The switch's name.
        switch: String,
        /// Why it tripped.
        reason: String,
        /// The first input never read, if the inputs were left unread
        /// because their iterator may be endless.
        unread_from: Option<usize>,
    },
    /// The map was cancelled: its flow run was, or the stream was dropped.
    Cancelled {
        /// Why.
        reason: String,
        /// As for [`StreamStop::KillSwitch`].
        unread_from: Option<usize>,
    },
    /// The inputs went wrong: mapped iterators of unequal lengths.
    Inputs(MapError),
}

impl fmt::Display for StreamStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unread = |f: &mut fmt::Formatter<'_>, unread_from: &Option<usize>| match unread_from {
            Some(first) => write!(f, " (inputs from #{first} on were never read)"),
            None => Ok(()),
        };
        match self {
            StreamStop::KillSwitch {
                switch,
                reason,
                unread_from,
            } => {
                write!(f, "Kill switch {switch} stopped the map: {reason}")?;
                unread(f, unread_from)
            }
            StreamStop::Cancelled {
                reason,
                unread_from,
            } => {
                write!(f, "The map was cancelled: {reason}")?;
                unread(f, unread_from)
            }
            StreamStop::Inputs(error) => write!(f, "The map's inputs went wrong: {error}"),
        }
    }
}

impl std::error::Error for StreamStop {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StreamStop::Inputs(error) => Some(error),
            _ => None,
        }
    }
}

/// What the map sends its stream: a finished run, whose outcome the reader
/// takes, or the end. Small, as it is moved several times per run on its
/// way: the outcome and an end's reasons stay behind pointers.
pub(super) enum Streamed<T> {
    Run(usize, Arc<RunShared<T>>),
    End(Option<Box<StreamStop>>),
}

/// The map's end of a stream.
pub(super) struct Delivery<T> {
    pub(super) sender: mpsc::Sender<Streamed<T>>,
    pub(super) in_input_order: bool,
    /// Held while handing over in input order, so outcomes leave in order.
    pub(super) sending: tokio::sync::Mutex<()>,
    /// At most this many runs held, from the oldest not handed over to the newest taken.
    pub(super) span: usize,
}

/// The outcomes of a streaming map ([`BatchTask::stream`]), one per input:
/// an [`Iterator`] in sync flows; in async ones, [`next_async`](Self::next_async)
/// or [`into_stream`](Self::into_stream).
///
/// The map reads its inputs as it has room and forgets each run once its
/// outcome is handed over, so a map of any length holds only what is in
/// flight, waiting, or not yet read (see [`BatchTask::with_read_ahead`]).
/// The run history keeps every run. Dropping the stream before its end
/// cancels the map: the runs in flight end `Cancelled`.
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
/// fn sum_of_squares() -> u64 {
///     let batch = BatchTask::new(square, 100).unwrap().sliding_window();
///     // A million inputs, never a million runs in memory.
///     let stream = batch.stream_unordered(0..1_000_000u64).unwrap();
///     stream.map(|run| run.result.unwrap()).sum()
/// }
///
/// # let prefecto = Prefecto::builder().engine_only().build().unwrap();
/// # prefecto.scope(|| {
/// assert_eq!(sum_of_squares().unwrap(), 333_332_833_333_500_000);
/// # });
/// ```
///
/// [`BatchTask::stream`]: super::BatchTask::stream
/// [`BatchTask::with_read_ahead`]: super::BatchTask::with_read_ahead
pub struct MapStream<T> {
    receiver: mpsc::Receiver<Streamed<T>>,
    scope: Arc<CancelScope>,
    total: Option<usize>,
    ended: bool,
    stop: Option<StreamStop>,
}

impl<T> MapStream<T> {
    pub(super) fn new(
        receiver: mpsc::Receiver<Streamed<T>>,
        scope: Arc<CancelScope>,
        total: Option<usize>,
    ) -> Self {
        MapStream {
            receiver,
            scope,
            total,
            ended: false,
            stop: None,
        }
    }

    /// The number of inputs, if every mapped iterator knew its length.
    pub fn total(&self) -> Option<usize> {
        self.total
    }

    /// Why the map stopped before every input ran, once the stream has
    /// ended; `None` while it runs, or if every input ran.
    pub fn stop(&self) -> Option<&StreamStop> {
        self.stop.as_ref()
    }

    /// Whether the stream has handed over its last outcome.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn take(&mut self, item: Option<Streamed<T>>) -> Option<StreamedRun<T>> {
        match item {
            Some(Streamed::Run(index, run)) => Some(StreamedRun::of(index, &run)),
            Some(Streamed::End(stop)) => {
                self.ended = true;
                self.stop = stop.map(|stop| *stop);
                None
            }
            // The map is gone without an end: only if its runtime was shut down.
            None => {
                self.ended = true;
                None
            }
        }
    }
}

impl<T> Iterator for MapStream<T> {
    type Item = StreamedRun<T>;

    /// The next outcome, blocking until it is ready. In async code, use
    /// [`next_async`](MapStream::next_async) or [`into_stream`](MapStream::into_stream) instead.
    fn next(&mut self) -> Option<StreamedRun<T>> {
        if self.ended {
            return None;
        }
        // An outcome already waiting is taken without blocking: a
        // `block_on` per outcome cost about 460 instructions, as much as a
        // third of a quick run.
        let item = match self.receiver.try_recv() {
            Ok(item) => Some(item),
            Err(TryRecvError::Disconnected) => None,
            Err(TryRecvError::Empty) => block_on(
                self.receiver.recv(),
                "MapStream::next",
                "stream.next_async().await",
            ),
        };
        self.take(item)
    }
}

impl<T: Send + 'static> MapStream<T> {
    /// The next outcome, waiting without blocking: for async flows.
    pub async fn next_async(&mut self) -> Option<StreamedRun<T>> {
        if self.ended {
            return None;
        }
        let item = self.receiver.recv().await;
        self.take(item)
    }

    /// The outcomes as a [`Stream`], for async code and its combinators.
    ///
    /// ```
    /// use futures::StreamExt;
    /// use prefecto::prelude::*;
    ///
    /// #[task]
    /// async fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// #[flow]
    /// async fn doubles() -> Vec<u32> {
    ///     let batch = BatchTask::new(double, 2).unwrap();
    ///     let outcomes = batch.stream(1..=3u32).unwrap().into_stream();
    ///     outcomes.map(|run| run.result.unwrap()).collect().await
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// assert_eq!(doubles().await.unwrap(), [2, 4, 6]);
    /// # });
    /// ```
    pub fn into_stream(self) -> BoxStream<'static, StreamedRun<T>> {
        futures::stream::unfold(self, |mut outcomes| async move {
            outcomes.next_async().await.map(|run| (run, outcomes))
        })
        .boxed()
    }
}

impl<T> Drop for MapStream<T> {
    fn drop(&mut self) {
        if !self.ended {
            self.scope
                .cancel("The map's stream was dropped before its end.".into());
        }
    }
}

impl<T> fmt::Debug for MapStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapStream")
            .field("total", &self.total)
            .field("ended", &self.ended)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}
