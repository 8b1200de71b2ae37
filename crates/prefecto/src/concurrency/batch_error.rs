//! [`BatchError`]: why a `BatchTask` map returned no futures.

use std::fmt;

use super::kill_switch::KillSwitchError;
use crate::args::MapError;
use crate::future::PrefectFutureList;

/// Why a [`BatchTask`](super::BatchTask) map returned no futures.
#[non_exhaustive]
pub enum BatchError<T> {
    /// The arguments were refused; nothing ran.
    Map(MapError),
    /// A kill switch stopped the map; the error carries every input's outcome.
    KillSwitch(KillSwitchError<T>),
    /// The inputs went wrong part-way, after the map had started: a
    /// [`from_stream`](crate::from_stream) argument's length differed from
    /// the others', or reading an input panicked. The inputs before it ran.
    Inputs {
        /// What went wrong.
        error: MapError,
        /// The runs of the inputs before it, in input order.
        futures: PrefectFutureList<T>,
    },
}

impl<T> fmt::Display for BatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Map(e) => e.fmt(f),
            BatchError::KillSwitch(e) => e.fmt(f),
            BatchError::Inputs { error, futures } => {
                write!(f, "{error} The {} input(s) before it ran.", futures.len())
            }
        }
    }
}

impl<T> fmt::Debug for BatchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Map(e) => f.debug_tuple("Map").field(e).finish(),
            BatchError::KillSwitch(e) => f.debug_tuple("KillSwitch").field(e).finish(),
            BatchError::Inputs { error, futures } => f
                .debug_struct("Inputs")
                .field("error", error)
                .field("ran", &futures.len())
                .finish(),
        }
    }
}

impl<T> std::error::Error for BatchError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BatchError::Map(e) | BatchError::Inputs { error: e, .. } => Some(e),
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
            BatchError::Map(_) | BatchError::Inputs { .. } => None,
        }
    }
}
