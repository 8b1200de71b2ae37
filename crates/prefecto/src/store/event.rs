//! The events the engine's recorder hands the writer thread, and the rows
//! they become.

use std::borrow::Cow;
use std::sync::mpsc::SyncSender;

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
            micros: system_micros(state.system_time()),
        }
    }
}

pub(super) fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// Microseconds since the epoch, without chrono's calendar arithmetic: this
/// runs for every transition.
pub(super) fn system_micros(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) => since.as_micros() as i64,
        Err(before) => -(before.duration().as_micros() as i64),
    }
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
            created: system_micros(times.created),
            started: times.started.map(system_micros),
            run_count: times.run_count,
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
    TaskRun {
        flow_run: Uuid,
        task: &'static str,
        index: u64,
        state: StateRow,
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
    /// Answered once everything sent before it is committed.
    Flush(SyncSender<()>),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// A flow run, or a task run by flow run, task and number.
pub(super) enum RunKey {
    Flow(Uuid),
    Task(Uuid, &'static str, u64),
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
