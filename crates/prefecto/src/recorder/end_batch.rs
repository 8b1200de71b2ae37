//! [`EndBatch`]: where one of a map's lanes hands a recorder the ends of
//! its quick task runs, and [`PlainEnd`], how it hands most of them: a list
//! at a time, with one call for a thousand runs.

use crate::names::TaskRunName;
use crate::state::{State, StateType};

use super::RunTimes;

/// Where one of a map's lanes hands a recorder the ends of its quick task
/// runs, one flow run's, a batch at a time ([`Recorder::end_batch`](super::Recorder::end_batch)).
pub trait EndBatch: Send {
    /// A quick task run ended in `state`; `times` hold its creation and
    /// start, which the recorder did not hear as transitions unless it
    /// wants them at once.
    fn ended(&mut self, run: TaskRunName, state: &State, times: RunTimes);

    /// Quick runs of `task` that ended plainly (their state's usual name
    /// and no message: nearly all), in the order they were made. The batch
    /// takes them out of `ends`, which may come back with other room. A
    /// lane keeps these itself and hands them over a list at a time: what
    /// it does per run is a map's critical path. By default each goes to
    /// [`ended`](Self::ended).
    fn plain_ends(&mut self, task: &'static str, ends: &mut Vec<PlainEnd>) {
        for end in ends.drain(..) {
            self.ended(end.run(task), &end.state(), end.times());
        }
    }

    /// The lane is about to wait, or ends: whatever the batch holds goes
    /// where the recorder's other transitions go. Also called before the
    /// batch is dropped.
    fn hand_over(&mut self);
}

/// A quick task run's plain end (its state's usual name, no message), as
/// its lane saw it: its number, its times in nanoseconds since the epoch,
/// and its state's type.
///
/// ```
/// use prefecto::recorder::PlainEnd;
/// use prefecto::StateType;
///
/// let end = PlainEnd::new(3, StateType::Completed, (1_000, Some(2_000), 3_000), 1);
/// assert_eq!(end.run("add").to_string(), "add-3");
/// assert_eq!(end.state().name(), "Completed");
/// assert_eq!(end.times().run_count(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlainEnd {
    pub(crate) index: u64,
    pub(crate) created_nanos: i64,
    /// 0: it never started.
    pub(crate) started_nanos: i64,
    pub(crate) ended_nanos: i64,
    pub(crate) run_count: u32,
    pub(crate) state_type: StateType,
}

impl PlainEnd {
    /// Run `index`'s end in a state of type `state_type`, with its
    /// (created, started, ended) times and how many times it ran.
    pub fn new(
        index: u64,
        state_type: StateType,
        (created, started, ended): (i64, Option<i64>, i64),
        run_count: u32,
    ) -> Self {
        PlainEnd {
            index,
            created_nanos: created,
            started_nanos: started.unwrap_or(0),
            ended_nanos: ended,
            run_count,
            state_type,
        }
    }

    /// Run `index`'s end in `state`, plain, with `times`.
    pub(crate) fn of(index: u64, state: &State, times: RunTimes) -> Self {
        PlainEnd {
            index,
            created_nanos: times.created_nanos(),
            started_nanos: times.started_nanos().unwrap_or(0),
            ended_nanos: state.nanos(),
            run_count: times.run_count(),
            state_type: state.state_type(),
        }
    }

    /// The run's name, as a run of `task`.
    pub fn run(&self, task: &'static str) -> TaskRunName {
        TaskRunName {
            task,
            index: self.index,
        }
    }

    /// The state it ended in.
    pub fn state(&self) -> State {
        State::plain_at(self.state_type, self.ended_nanos)
    }

    /// Its creation and start, and how many times it ran.
    pub fn times(&self) -> RunTimes {
        let started = (self.started_nanos != 0).then_some(self.started_nanos);
        RunTimes::from_nanos(self.created_nanos, started, self.run_count)
    }
}
