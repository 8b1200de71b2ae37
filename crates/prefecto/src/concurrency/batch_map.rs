//! `BatchTask::map(a, b, ..)`: one argument per task parameter, as the
//! task's own `map` takes them.
//!
//! A method cannot take a different number of arguments per task, so there
//! is one `impl` per arity, told apart by the parameter tuple that
//! `BatchTask` carries as its second type parameter.

use super::batch_error::BatchError;
use super::batch_task::BatchTask;
use super::map_stream::MapStream;
use crate::args::{MapArg, MapError};
use crate::future::PrefectFutureList;
use crate::stream_args::StreamArg;
use crate::task::Task;

macro_rules! positional_map {
    ($($arg:ident $param:ident $value:ident),+) => {
        impl<T, $($param: Send + 'static),+> BatchTask<T, ($($param,)+)>
        where
            T: Task<Args = ($($param,)+)>,
        {
            /// Maps the task over the inputs in batches, blocking until every
            /// run is terminal: one argument per task parameter, each an
            /// iterable of inputs, a [`PrefectFutureList`] of upstream runs,
            /// an async stream read as the map goes
            /// ([`from_stream`](crate::stream_args::from_stream)), or
            /// `unmapped(value)`. Returns one future per input, in input
            /// order, or the [`KillSwitchError`](super::KillSwitchError)
            /// with every input's outcome. A stream whose length differs
            /// from the other arguments' ends the map with
            /// [`BatchError::Inputs`]; for many inputs, `stream` hands each
            /// outcome over and holds none.
            ///
            /// Call it from a sync flow; in async code use `map_async`.
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
            /// fn sums() -> Result<Vec<i64>, prefecto::Error> {
            ///     let batch_add = BatchTask::new(add, 2)?;
            ///     Ok(batch_add.map(vec![1, 2, 3], unmapped(10))?.results()?)
            /// }
            ///
            /// assert_eq!(sums().unwrap(), vec![11, 12, 13]);
            /// ```
            #[allow(clippy::too_many_arguments)]
            pub fn map<$($arg: MapArg<$param>),+>(
                &self,
                $($value: $arg),+
            ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
                self.map_tuple(($($value,)+))
            }

            /// As `map`, for async flows: waits without blocking the runtime.
            /// The map runs in a task of its own: a caller that stops
            /// waiting (a timeout around this call, a dropped future) does
            /// not stop it, and its runs all end before the flow run does.
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
            /// async fn doubles() -> Result<Vec<u32>, prefecto::Error> {
            ///     let batch = BatchTask::new(double, 2)?;
            ///     Ok(batch.map_async(1..=3).await?.results_async().await?)
            /// }
            ///
            /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
            /// assert_eq!(doubles().await.unwrap(), vec![2, 4, 6]);
            /// # });
            /// ```
            #[allow(clippy::too_many_arguments)]
            pub async fn map_async<$($arg: MapArg<$param>),+>(
                &self,
                $($value: $arg),+
            ) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
                self.map_tuple_async(($($value,)+)).await
            }

            /// Maps the task over the inputs in batches, reading them as it
            /// goes, and gives each input's outcome, in input order, as soon
            /// as it and every earlier one are ready: one argument per task
            /// parameter, each an iterable (read lazily; its iterator is
            /// `Send + 'static`), an async stream
            /// ([`from_stream`](crate::stream_args::from_stream)) or
            /// `unmapped(value)`. Memory stays bounded
            /// whatever the number of inputs (see
            /// [`with_read_ahead`](BatchTask::with_read_ahead)); the run
            /// history keeps every run. Kill switches stop it as they stop
            /// `map`: the stream then hands over the cancelled inputs too,
            /// and [`MapStream::stop`](super::MapStream::stop) says why.
            ///
            /// Returns at once; the map runs on the flow's runtime while the
            /// stream is read, from a sync flow (as an `Iterator`) or an
            /// async one (`next_async`, `into_stream`). The inputs are read by
            /// the map's lanes, one at a time: an iterator that waits long for
            /// each item (a blocking network cursor) blocks a lane's thread
            /// meanwhile; an async source is better given as a stream
            /// (`from_stream`), which the lanes wait for without holding a thread.
            /// Inputs left when the map stops (a trip, a dropped stream) are
            /// recorded `Cancelled` as far as the iterator is bounded; a
            /// stream's inputs not yet given are left, and named.
            ///
            /// ```
            /// use prefecto::prelude::*;
            ///
            /// #[task]
            /// fn add(a: u64, b: u64) -> u64 {
            ///     a + b
            /// }
            ///
            /// #[flow]
            /// fn offsets() -> Vec<u64> {
            ///     let batch = BatchTask::new(add, 2).unwrap();
            ///     let stream = batch.stream(1..=4u64, unmapped(10)).unwrap();
            ///     stream.map(|run| run.result.unwrap()).collect()
            /// }
            ///
            /// assert_eq!(offsets().unwrap(), [11, 12, 13, 14]);
            /// ```
            #[allow(clippy::too_many_arguments)]
            pub fn stream<$($arg: StreamArg<$param>),+>(
                &self,
                $($value: $arg),+
            ) -> Result<MapStream<T::Output>, MapError> {
                self.stream_tuple(($($value,)+))
            }

            /// As [`stream`](Self::stream), giving each outcome as soon as
            /// it is ready, in completion order (as `buffer_unordered`):
            /// a slow input holds back no outcome but its own.
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
            /// async fn total() -> u32 {
            ///     let batch = BatchTask::new(double, 4).unwrap().sliding_window();
            ///     let stream = batch.stream_unordered(0..100u32).unwrap().into_stream();
            ///     stream.map(|run| run.result.unwrap()).fold(0, |a, b| async move { a + b }).await
            /// }
            ///
            /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
            /// assert_eq!(total().await.unwrap(), 9900);
            /// # });
            /// ```
            #[allow(clippy::too_many_arguments)]
            pub fn stream_unordered<$($arg: StreamArg<$param>),+>(
                &self,
                $($value: $arg),+
            ) -> Result<MapStream<T::Output>, MapError> {
                self.stream_unordered_tuple(($($value,)+))
            }
        }
    };
}

positional_map!(M0 T0 a0);
positional_map!(M0 T0 a0, M1 T1 a1);
positional_map!(M0 T0 a0, M1 T1 a1, M2 T2 a2);
positional_map!(M0 T0 a0, M1 T1 a1, M2 T2 a2, M3 T3 a3);
positional_map!(M0 T0 a0, M1 T1 a1, M2 T2 a2, M3 T3 a3, M4 T4 a4);
positional_map!(M0 T0 a0, M1 T1 a1, M2 T2 a2, M3 T3 a3, M4 T4 a4, M5 T5 a5);
positional_map!(M0 T0 a0, M1 T1 a1, M2 T2 a2, M3 T3 a3, M4 T4 a4, M5 T5 a5, M6 T6 a6);
positional_map!(M0 T0 a0, M1 T1 a1, M2 T2 a2, M3 T3 a3, M4 T4 a4, M5 T5 a5, M6 T6 a6, M7 T7 a7);
