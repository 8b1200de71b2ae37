//! [`MapInputs`]: a map's inputs as its lanes read them, one at a time,
//! under the queue's lock: an iterator is always ready; an async stream
//! may not be, and then wakes the lanes waiting for room when it is.
//!
//! A stream may need the runtime (its timers, its I/O) to be polled: its
//! readers are on the runtime's threads, or (pool lanes) enter its context
//! to read. Iterators, which need nothing, are also read by the collecting
//! `map` from the caller's thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::StreamExt;
use tokio::sync::Notify;

use crate::args::{ListedInputs, MapError};
use crate::inputs::RunArgs;
use crate::stream_args::InputStream;
use crate::task::panic_message;

type Input<Args> = Result<RunArgs<Args>, MapError>;

/// Where a map's inputs come from.
pub(super) enum Source<Args> {
    /// All at hand, as a collecting map's are: read with no poll.
    Listed(ListedInputs<Args>),
    /// As a stream (of an iterator or of a user's stream) gives them.
    Streamed(InputStream<Args>),
}

/// A map's inputs, with one looked at ahead (to tell whether another batch follows).
pub(super) struct MapInputs<Args> {
    inputs: Source<Args>,
    peeked: Option<Option<Input<Args>>>,
    /// Wakes whoever waits for room or inputs.
    waker: Waker,
    /// How many inputs it gave.
    read: usize,
}

/// Wakes every lane (and the driver) waiting on the map's `room`: the one
/// wake-up a map waits for, whether for room or for inputs.
struct WakeWaiters(Arc<Notify>);

impl Wake for WakeWaiters {
    fn wake(self: Arc<Self>) {
        self.0.notify_waiters();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_waiters();
    }
}

impl<Args: Send + 'static> MapInputs<Args> {
    pub(super) fn new(inputs: Source<Args>, room: Arc<Notify>) -> Self {
        MapInputs {
            inputs,
            peeked: None,
            waker: Waker::from(Arc::new(WakeWaiters(room))),
            read: 0,
        }
    }

    /// The next input, `Ready(None)` after the last; `Pending` while an
    /// async stream has none ready (its waiters are woken when it has). A
    /// user's iterator or stream that panics gives an error, and no input
    /// after it: the lane reading it goes on, and the map ends as for bad inputs.
    pub(super) fn poll_next(&mut self) -> Poll<Option<Input<Args>>> {
        if let Some(peeked) = self.peeked.take() {
            return Poll::Ready(peeked);
        }
        match &mut self.inputs {
            // Values read from the columns they were given as: none of the
            // user's code runs.
            Source::Listed(inputs) if !inputs.clones() => {
                return Poll::Ready(inputs.next().map(Ok));
            }
            _ => {}
        }
        let mut cx = Context::from_waker(&self.waker);
        // The user's code may run here: an iterator's or a stream's, or the
        // `Clone` of an unmapped value, cloned for each input as it is read.
        let read = catch_unwind(AssertUnwindSafe(|| match &mut self.inputs {
            Source::Listed(inputs) => Poll::Ready(inputs.next().map(Ok)),
            Source::Streamed(inputs) => inputs.poll_next_unpin(&mut cx),
        }));
        let next = match read {
            Ok(next) => next,
            Err(panic) => {
                self.inputs = Source::Streamed(Box::pin(futures::stream::empty()));
                Poll::Ready(Some(Err(MapError::InputPanicked {
                    after: self.read,
                    message: panic_message(panic.as_ref()),
                })))
            }
        };
        if let Poll::Ready(Some(Ok(_))) = next {
            self.read += 1;
        }
        next
    }

    /// Whether another input follows, once that is known.
    pub(super) fn poll_has_more(&mut self) -> Poll<bool> {
        if self.peeked.is_none() {
            match self.poll_next() {
                Poll::Ready(next) => self.peeked = Some(next),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(matches!(self.peeked, Some(Some(_))))
    }

    /// At most how many inputs are left, if that is known: a stopped map
    /// reads the rest only then (an endless iterator is left unread).
    pub(super) fn upper_bound(&self) -> Option<usize> {
        let peeked = usize::from(matches!(self.peeked, Some(Some(_))));
        let left = match &self.inputs {
            Source::Listed(inputs) => Some(inputs.len()),
            Source::Streamed(inputs) => inputs.size_hint().1,
        };
        left.map(|left| left + peeked)
    }
}
