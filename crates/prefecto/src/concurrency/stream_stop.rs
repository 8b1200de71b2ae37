//! [`StreamStop`]: why a streaming map ended before every input ran.

use std::fmt;

use crate::args::MapError;

#[cfg(doc)]
use super::MapStream;

/// Why a [`MapStream`] ended before every input ran, as
/// [`MapStream::stop`] tells once it has ended.
///
/// ```
/// use prefecto::prelude::*;
/// use prefecto::concurrency::StreamStop;
///
/// #[task]
/// fn check(x: u32) -> Result<u32, String> {
///     if x == 2 { Err("2 is bad".into()) } else { Ok(x) }
/// }
///
/// #[flow]
/// fn checked() -> Option<StreamStop> {
///     let batch = BatchTask::new(check, 1).unwrap().with_kill_switch(AnyFailedSwitch::new());
///     let mut stream = batch.stream(0..10u32).unwrap();
///     stream.by_ref().for_each(drop);
///     stream.stop().cloned()
/// }
///
/// let stop = checked().unwrap().unwrap();
/// assert!(matches!(stop, StreamStop::KillSwitch { .. }), "{stop}");
/// ```
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
