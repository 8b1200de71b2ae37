//! What became of each input of a map that a kill switch stopped.

use crate::names::TaskRunName;
use crate::state::State;

/// What became of one input of a [`BatchTask::map`](super::BatchTask::map) that a kill switch stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct InputOutcome<T> {
    /// The input's position in the map.
    pub index: usize,
    /// The task run created for it.
    pub task_run: TaskRunName,
    /// Its final state: `Cancelled` for inputs that were never submitted.
    pub state: State,
    /// Its value, if it completed.
    pub value: Option<T>,
}
