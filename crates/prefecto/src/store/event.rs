//! The events the engine's recorder hands the writer thread, and the rows
//! they become.

use std::borrow::Cow;
use std::sync::mpsc::SyncSender;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::pack::{Pack, PlainEnd};
use crate::names::UpstreamRun;
use crate::recorder::RunTimes;
use crate::state::{State, StateType};

#[derive(Clone)]
pub(super) struct StateRow {
    pub(super) state_type: StateType,
    pub(super) name: Cow<'static, str>,
    pub(super) message: Option<String>,
    pub(super) micros: i64,
}

impl StateRow {
    pub(super) fn of(state: &State) -> Self {
        StateRow {
            state_type: state.state_type(),
            name: state.name_cow(),
            message: state.message().map(str::to_string),
            micros: state.micros(),
        }
    }
}

pub(super) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// A task run's times, as stored.
#[derive(Clone, Copy)]
pub(super) struct TimesRow {
    pub(super) created: i64,
    pub(super) started: Option<i64>,
    pub(super) run_count: u32,
}

impl TimesRow {
    pub(super) fn of(times: &RunTimes) -> Self {
        TimesRow {
            created: times.created_nanos().div_euclid(1000),
            started: times.started_nanos().map(|t| t.div_euclid(1000)),
            run_count: times.run_count(),
        }
    }
}

/// What the writer thread is handed.
pub(super) enum Event {
    FlowRun {
        id: Uuid,
        name: String,
        flow: String,
        state: StateRow,
    },
    /// A transition of a task run the outbox did not pack (a retry, a run
    /// that lingered), with the state as the engine made it: half a row's
    /// size, made a row only if the run is not written whole at its end.
    TaskRun {
        flow_run: Uuid,
        task: &'static str,
        index: u64,
        state: State,
        times: Option<TimesRow>,
    },
    Log {
        flow_run: Uuid,
        task_run: Option<(&'static str, u64)>,
        level: &'static str,
        logger: &'static str,
        message: String,
        micros: i64,
    },
    /// The runs a task run depends on, heard with its `Pending` transition.
    Upstream {
        flow_run: Uuid,
        task: &'static str,
        index: u64,
        upstream: Vec<UpstreamRun>,
    },
    /// A persisted result.
    Result {
        task: &'static str,
        cache_key: String,
        value: String,
        created: i64,
        expires: Option<i64>,
    },
    /// Quick task runs of one task of a flow run, packed by the outbox as
    /// they ended (see `outbox.rs`): written as they are.
    Packed {
        flow_run: Uuid,
        task: &'static str,
        pack: Pack,
    },
    /// Quick task runs of one task of a flow run that ended plainly, in
    /// the order one lane made them (`lane_pack.rs`): packed by the writer.
    Ended {
        flow_run: Uuid,
        task: &'static str,
        ends: Vec<PlainEnd>,
    },
    /// Answered once everything sent before it is committed.
    Flush(SyncSender<()>),
}

impl Event {
    /// What it counts for in the writer's backlog, which bounds the memory
    /// of what waits for it: one, or a pack's bytes in events of about
    /// the size of one (a pack holds runs at five to a dozen bytes each).
    pub(super) fn weight(&self) -> usize {
        match self {
            Event::Packed { pack, .. } => 1 + pack.body().len() / size_of::<Event>(),
            Event::Ended { ends, .. } => {
                1 + ends.len() * size_of::<PlainEnd>() / size_of::<Event>()
            }
            _ => 1,
        }
    }
}

/// A flow run, or a task run by flow run, task and number.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub(super) enum RunKey {
    Flow(Uuid),
    Task(Uuid, &'static str, u64),
}

/// The same field equality as derived, in the order that tells runs apart
/// soonest (the number, then the flow run), and a task's name compared by
/// address first: keys are compared for every task run recorded.
impl PartialEq for RunKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RunKey::Flow(a), RunKey::Flow(b)) => a == b,
            (RunKey::Task(flow_a, task_a, index_a), RunKey::Task(flow_b, task_b, index_b)) => {
                index_a == index_b
                    && flow_a == flow_b
                    && (std::ptr::eq(*task_a, *task_b) || task_a == task_b)
            }
            _ => false,
        }
    }
}

/// Hashes a task's name by its length, not its text: equal keys still hash
/// equal, and runs of one flow run are told apart by their numbers.
impl std::hash::Hash for RunKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            RunKey::Flow(id) => id.as_u128().hash(state),
            RunKey::Task(flow_run, task, index) => {
                (flow_run.as_u128() ^ task.len() as u128, *index).hash(state)
            }
        }
    }
}

/// What a flow run's row holds beside its states.
pub(super) struct FlowRunNames {
    pub(super) name: String,
    pub(super) flow: String,
}

/// The states a task run's times imply before its later ones: `Pending` when
/// it was created and, if it ran, `Running` when it first started. A run
/// written whole at its end stores none of them (its reader rebuilds them
/// here); a run written while still going has them written out.
pub(super) fn implied_states(created: i64, started: Option<i64>) -> impl Iterator<Item = StateRow> {
    let state = |state_type: StateType, name: &'static str, micros: i64| StateRow {
        state_type,
        name: Cow::Borrowed(name),
        message: None,
        micros,
    };
    std::iter::once(state(StateType::Pending, "Pending", created))
        .chain(started.map(|started| state(StateType::Running, "Running", started)))
}
