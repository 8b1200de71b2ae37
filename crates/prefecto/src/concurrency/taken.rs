//! [`Taken`]: an input a lane took from its map's queue, with its run.

use std::sync::Arc;

use crate::future::RunShared;
use crate::inputs::RunArgs;
use crate::runner::Started;
use crate::task::Task;

/// An input taken from the queue: started already (a sync body, queued on
/// the pool in input order) or to start on its lane.
///
/// A started run is boxed: it is rare on the paths that matter (a queued
/// sync body pays for channels anyway), and unboxed it made every taken
/// input ~90 bytes, which a lane moved several times per run.
pub(super) enum Submitted<T: Task> {
    Started(Box<Started<T>>),
    Args(RunArgs<T::Args>),
}

/// A run taken by a lane: its position, its run, how it starts.
pub(super) type Taken<T> = (usize, Arc<RunShared<<T as Task>::Output>>, Submitted<T>);
