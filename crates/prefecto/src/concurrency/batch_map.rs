//! `BatchTask::map(a, b, ..)`: one argument per task parameter, as the
//! task's own `map` takes them.
//!
//! A method cannot take a different number of arguments per task, so there
//! is one `impl` per arity, told apart by the parameter tuple that
//! `BatchTask` carries as its second type parameter.

use super::batch_error::BatchError;
use super::batch_task::BatchTask;
use crate::args::MapArg;
use crate::future::PrefectFutureList;
use crate::task::Task;

macro_rules! positional_map {
    ($($arg:ident $param:ident $value:ident),+) => {
        impl<T, $($param: Send + 'static),+> BatchTask<T, ($($param,)+)>
        where
            T: Task<Args = ($($param,)+)>,
        {
            /// Maps the task over the inputs in batches, blocking until every
            /// run is terminal: one argument per task parameter, each an
            /// iterable of inputs or `unmapped(value)`. Returns one future per
            /// input, in input order, or the [`KillSwitchError`](super::KillSwitchError)
            /// with every input's outcome.
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
