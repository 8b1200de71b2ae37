//! [`EndedRun`]: what a map keeps of a run once it has ended and its lane
//! is done with it: its name, final state and outcome, by value.
//!
//! A collecting map holds every run until its futures are taken. A live
//! run's record ([`RunShared`](crate::run_shared::RunShared)) carries what
//! only a run in progress needs (its lock, its waiters, its clock) in an
//! allocation of its own: 128 bytes and a `malloc` and a `free` per run,
//! a fifth of a quick map's instructions. An ended run is kept as this
//! instead, 56 bytes in the map's own list, and its lane makes its next
//! run in the record it no longer needs.

use sync_wrapper::SyncWrapper;

use crate::names::TaskRunName;
use crate::state::State;
use crate::task::{ErrorSource, TaskSpec};
use crate::task_run_error::TaskRunError;

/// What a finished run leaves besides its state. The error is boxed: it is
/// rare, and a thin pointer keeps every run's slot as small as the value alone.
pub(crate) enum Outcome<T> {
    None,
    Value(T),
    /// The body's own error, for a run that failed with one.
    Error(Box<ErrorSource>),
}

impl<T> Outcome<T> {
    /// The final outcome of a run in `state`: the value if completed, else
    /// the state. Takes the value out; an error stays, for a second look.
    pub(crate) fn take(&mut self, state: &State, name: TaskRunName) -> Result<T, TaskRunError> {
        let completed = state.is_completed();
        let source = match std::mem::replace(self, Outcome::None) {
            Outcome::Value(value) if completed => return Ok(value),
            Outcome::Error(error) => {
                let source = (*error).clone();
                // Kept, so that a second look at a failed run finds it too.
                *self = Outcome::Error(error);
                Some(source)
            }
            _ => None,
        };
        Err(TaskRunError {
            task_run: name.to_string(),
            state: if completed {
                State::failed("The result of this task run was already taken.")
            } else {
                state.clone()
            },
            source,
        })
    }

    /// A clone of a completed run's value, leaving it in place.
    pub(crate) fn clone_value(&self, state: &State, clone: fn(&T) -> T) -> Result<T, State> {
        match (self, state.is_completed()) {
            (Outcome::Value(value), true) => Ok(clone(value)),
            _ => Err(state.clone()),
        }
    }
}

/// A run that has ended, held by value.
pub(crate) struct EndedRun<T> {
    pub(crate) index: u64,
    pub(crate) spec: &'static TaskSpec,
    pub(crate) state: State,
    /// Reached through `&mut` only: a future is `Sync` whatever its value
    /// is, as a live run's is behind its lock.
    pub(crate) outcome: SyncWrapper<Outcome<T>>,
}

impl<T> EndedRun<T> {
    pub(crate) fn name(&self) -> TaskRunName {
        TaskRunName {
            task: self.spec.name,
            index: self.index,
        }
    }

    /// Its final outcome, as [`RunShared::take_outcome`](crate::run_shared::RunShared::take_outcome).
    pub(crate) fn take_outcome(&mut self) -> Result<T, TaskRunError> {
        let name = self.name();
        self.outcome.get_mut().take(&self.state, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ADD: TaskSpec = TaskSpec::new("add", &["a", "b"]);

    fn ended(state: State, outcome: Outcome<u64>) -> EndedRun<u64> {
        EndedRun {
            index: 3,
            spec: &ADD,
            state,
            outcome: SyncWrapper::new(outcome),
        }
    }

    #[test]
    fn an_ended_run_gives_its_value_once_and_its_error_every_time() {
        let mut completed = ended(State::completed(), Outcome::Value(5));
        assert_eq!(completed.name().to_string(), "add-3");
        assert_eq!(completed.take_outcome().unwrap(), 5);
        let again = completed.take_outcome().unwrap_err();
        assert!(again.state.is_failed(), "{again}");
        assert!(again.state.message().unwrap().contains("already taken"));
        let mut failed = ended(State::failed("boom"), Outcome::None);
        for _ in 0..2 {
            let error = failed.take_outcome().unwrap_err();
            assert!(error.state.is_failed());
            assert_eq!(error.task_run, "add-3");
        }
    }

    #[test]
    fn an_ended_run_of_a_word_sized_value_takes_half_a_live_one() {
        // A live run's record took 128 bytes with its `Arc`'s counts.
        assert!(std::mem::size_of::<EndedRun<u64>>() <= 56);
    }
}
