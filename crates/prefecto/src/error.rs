//! One error type for the happy path: every error a flow body meets on its
//! way (a bad batch size, refused map arguments, a tripped kill switch, a
//! task run that did not complete, a nested flow that failed) converts into
//! [`Error`], so `?` composes in a function that returns it.

use crate::args::MapError;
use crate::concurrency::{BatchConfigError, BatchError, KillSwitchError};
use crate::flow::FlowRunError;
use crate::future::TaskRunError;

/// Any of prefecto's errors, for `?`.
///
/// A kill switch's error keeps every input's state through `?`, not its
/// value, and inputs that went wrong part-way keep their error, not the
/// futures of the inputs before: match the [`BatchError`] before `?` to keep them.
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `BatchTask` or a kill switch got an argument it cannot work with.
    #[error(transparent)]
    BatchConfig(#[from] BatchConfigError),
    /// `map` refused its arguments, or they went wrong part-way.
    #[error(transparent)]
    Map(#[from] MapError),
    /// A kill switch stopped a map: every input's state (not its value).
    #[error(transparent)]
    KillSwitch(KillSwitchError),
    /// A task run did not complete; `source()` reaches the body's own error.
    #[error(transparent)]
    TaskRun(#[from] TaskRunError),
    /// A flow run did not complete.
    #[error(transparent)]
    FlowRun(#[from] FlowRunError),
    /// A deployment could not be run, or its child flow run did not
    /// complete: a `prefecto::deployments::DeploymentError`, to downcast
    /// (the engine does not name the Prefect client's types).
    #[error(transparent)]
    Deployment(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl<T> From<BatchError<T>> for Error {
    fn from(error: BatchError<T>) -> Self {
        match error {
            BatchError::Map(error) | BatchError::Inputs { error, .. } => Error::Map(error),
            BatchError::KillSwitch(error) => Error::KillSwitch(error.without_values()),
        }
    }
}

impl<T> From<KillSwitchError<T>> for Error {
    fn from(error: KillSwitchError<T>) -> Self {
        Error::KillSwitch(error.without_values())
    }
}
