//! [`MapStream`]: the outcomes of a streaming map, one per input, handed
//! over as they are ready and then forgotten by the map.

use std::fmt;
use std::sync::Arc;

#[cfg(doc)]
use futures::Stream;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::stream_handoff::{Buffer, HandedRun, Handoff, Read, Reader};
use super::stream_stop::StreamStop;
use crate::blocking::block_on;
use crate::context::CancelScope;
use crate::future::TaskRunError;
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

impl<T> From<HandedRun<T>> for StreamedRun<T> {
    fn from(run: HandedRun<T>) -> Self {
        StreamedRun {
            index: run.index,
            task_run: run.task_run,
            result: run.result.map_err(|error| *error),
        }
    }
}

/// The map's end of a stream.
pub(super) struct Delivery<T> {
    pub(super) handoff: Handoff<T>,
    pub(super) in_input_order: bool,
    /// Held while handing over in input order, so outcomes leave in order.
    pub(super) sending: tokio::sync::Mutex<()>,
    /// At most this many runs held, from the oldest not handed over to the newest taken.
    pub(super) span: usize,
    /// The buffer of hand-overs in input order, and of those no lane makes.
    pub(super) shared_buffer: Arc<Buffer<T>>,
}

impl<T> Delivery<T> {
    /// The buffer a hand-over goes into: the lane's own, if it has one and
    /// order does not matter.
    pub(super) fn buffer<'a>(&'a self, lane: Option<&'a Buffer<T>>) -> &'a Buffer<T> {
        match lane {
            Some(lane) if !self.in_input_order => lane,
            _ => &self.shared_buffer,
        }
    }
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
    reader: Reader<T>,
    scope: Arc<CancelScope>,
    total: Option<usize>,
    ended: bool,
    stop: Option<StreamStop>,
}

impl<T> MapStream<T> {
    pub(super) fn new(reader: Reader<T>, scope: Arc<CancelScope>, total: Option<usize>) -> Self {
        MapStream {
            reader,
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

    fn take(&mut self, read: Read<T>) -> Option<StreamedRun<T>> {
        match read {
            Read::Run(run) => Some(run.into()),
            Read::End(stop) => {
                self.ended = true;
                self.stop = stop.map(|stop| *stop);
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
        // An outcome already at hand is taken without blocking: a
        // `block_on` per outcome cost about 460 instructions, as much as a
        // third of a quick run.
        let read = loop {
            if let Some(read) = self.reader.try_read() {
                break read;
            }
            let message = block_on(
                self.reader.receiver().recv(),
                "MapStream::next",
                "stream.next_async().await",
            );
            if let Some(read) = self.reader.read(message) {
                break read;
            }
        };
        self.take(read)
    }
}

impl<T: Send + 'static> MapStream<T> {
    /// The next outcome, waiting without blocking: for async flows.
    pub async fn next_async(&mut self) -> Option<StreamedRun<T>> {
        if self.ended {
            return None;
        }
        let read = loop {
            if let Some(read) = self.reader.try_read() {
                break read;
            }
            let message = self.reader.receiver().recv().await;
            if let Some(read) = self.reader.read(message) {
                break read;
            }
        };
        self.take(read)
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
