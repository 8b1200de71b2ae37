//! The task runs a shard of the outbox knows to be running, so that the
//! writer can show those that linger.
//!
//! Every task run is added when it starts and removed when it ends, and most
//! end a few microseconds later, before many others start: a short list of
//! the latest, searched from its newest end, finds them at a compare or two,
//! where a hash map cost a hash of the key and a probe each way. Runs that
//! outlast the list move to a map.

use std::collections::{HashMap, VecDeque};

use super::event::RunKey;

/// How many of the runs started last a shard keeps in its list.
const RECENT: usize = 32;

/// A task run that is running and not yet written.
pub(super) struct RunningRun {
    /// When it was created and started, in microseconds since the epoch.
    pub created: i64,
    pub started: i64,
    /// Already written as it stands (it lingered).
    pub written: bool,
}

#[derive(Default)]
pub(super) struct RunningRuns {
    /// The runs started last, the newest at the back.
    recent: VecDeque<(RunKey, RunningRun)>,
    /// Older runs still going.
    older: HashMap<RunKey, RunningRun, foldhash::fast::RandomState>,
}

impl RunningRuns {
    pub fn insert(&mut self, key: RunKey, run: RunningRun) {
        if self.recent.len() == RECENT
            && let Some((old_key, old_run)) = self.recent.pop_front()
        {
            self.older.insert(old_key, old_run);
        }
        self.recent.push_back((key, run));
    }

    /// Takes the run out, if it is running.
    #[inline]
    pub fn take(&mut self, key: &RunKey) -> Option<RunningRun> {
        // Most often none is: quick runs are not noted running at all
        // (`Recorder::wants_running`).
        if self.recent.is_empty() && self.older.is_empty() {
            return None;
        }
        self.take_noted(key)
    }

    fn take_noted(&mut self, key: &RunKey) -> Option<RunningRun> {
        // Most often the run started last: a run's body ran on the thread
        // that recorded its start, and no other run started between.
        if self.recent.back().is_some_and(|(last, _)| last == key) {
            self.recent.pop_back().map(|(_, run)| run)
        } else if let Some(at) = self.recent.iter().rposition(|(k, _)| k == key) {
            self.recent.remove(at).map(|(_, run)| run)
        } else if !self.older.is_empty() {
            self.older.remove(key)
        } else {
            None
        }
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&RunKey, &mut RunningRun)> {
        let recent = self.recent.iter_mut().map(|(key, run)| (&*key, run));
        recent.chain(self.older.iter_mut())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.recent.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn key(index: u64) -> RunKey {
        RunKey::Task(uuid::Uuid::nil(), "t", index)
    }

    fn run(started: i64) -> RunningRun {
        RunningRun {
            created: started,
            started,
            written: false,
        }
    }

    proptest! {
        /// Whatever the order runs start and end in, it holds exactly those
        /// started and not ended, each with its own times.
        #[test]
        fn it_holds_the_runs_started_and_not_ended(ops in prop::collection::vec((any::<bool>(), 0u64..80), 0..400)) {
            let (mut runs, mut model) = (RunningRuns::default(), BTreeSet::new());
            for (start, index) in ops {
                if start && !model.contains(&index) {
                    runs.insert(key(index), run(index as i64));
                    model.insert(index);
                } else if !start {
                    let taken = runs.take(&key(index));
                    prop_assert_eq!(taken.map(|run| run.started), model.take(&index).map(|i| i as i64));
                }
            }
            prop_assert_eq!(runs.len(), model.len());
            let mut held = BTreeSet::new();
            for (key, run) in runs.iter_mut() {
                let RunKey::Task(_, _, index) = *key else { unreachable!() };
                prop_assert_eq!(run.started, index as i64);
                held.insert(index);
            }
            prop_assert_eq!(held, model);
        }
    }

    #[test]
    fn a_run_that_outlasts_the_list_is_still_found() {
        let mut runs = RunningRuns::default();
        runs.insert(key(0), run(0));
        for index in 1..(RECENT as u64 * 3) {
            runs.insert(key(index), run(0));
            assert!(runs.take(&key(index)).is_some());
        }
        assert_eq!(runs.len(), 1);
        runs.iter_mut().next().unwrap().1.written = true;
        assert!(runs.take(&key(0)).is_some_and(|run| run.written));
        assert_eq!(runs.len(), 0);
        assert!(runs.take(&key(0)).is_none());
    }
}
