//! What became of each input of a map that a kill switch stopped.

use crate::names::TaskRunName;
use crate::state::State;

/// What became of one input of a [`BatchTask::map`](super::BatchTask::map)
/// that a kill switch stopped: its run and final state. The values of the
/// inputs that completed are the error's
/// [`partial_results`](super::KillSwitchError::partial_results).
#[derive(Debug, Clone, PartialEq)]
pub struct InputOutcome {
    /// The input's position in the map.
    pub index: usize,
    /// The task run created for it.
    pub task_run: TaskRunName,
    /// Its final state: `Cancelled` for inputs that were never submitted.
    pub state: State,
}
