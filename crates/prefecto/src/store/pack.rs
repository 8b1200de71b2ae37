//! Finished task runs stored many to a row, in a compact binary form.
//!
//! A map of a million quick task runs would cost a row each, or about 110
//! bytes each as JSON lines, and the writer's time goes mostly on bytes. A
//! pack holds the finished runs of one task of one flow run: numbers are
//! varints ([postcard]), each run's number and creation time are differences
//! from the run before, its other times differences from its creation, and a
//! state's usual name ("Completed" for COMPLETED) is left out. A run seen
//! whole takes about a dozen bytes.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::state::StateType;

/// A state as packed: its type's code, and its name and message when they
/// say more than the type.
#[derive(Serialize, Deserialize)]
struct PackedState<'a> {
    code: u8,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
struct PackedRun<'a> {
    /// Its number, less the previous run's.
    index: i64,
    /// Microseconds since the previous run's creation (the first run's: since the epoch).
    created: i64,
    /// Microseconds after its creation.
    start: Option<i64>,
    end: Option<i64>,
    run_count: u32,
    #[serde(borrow)]
    state: PackedState<'a>,
    /// Its states, each with its time after the run's creation; empty when
    /// they follow from its times (Pending, Running if it ran, the end).
    #[serde(borrow)]
    history: Vec<(PackedState<'a>, i64)>,
}

/// A state of a packed run, as the writer gives it and the reader gets it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct RunState<'a> {
    pub state_type: StateType,
    pub name: Cow<'a, str>,
    pub message: Option<Cow<'a, str>>,
}

/// A finished task run, as the writer gives it and the reader gets it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Run<'a> {
    pub index: u64,
    /// Microseconds since the epoch.
    pub created: i64,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub run_count: u32,
    pub state: RunState<'a>,
    /// With their times (µs since the epoch); empty when implied.
    pub history: Vec<(RunState<'a>, i64)>,
}

/// The finished runs of one task of one flow run, packed as they come.
#[derive(Default)]
pub(super) struct Pack {
    body: Vec<u8>,
    runs: usize,
    last_index: u64,
    last_created: i64,
}

impl Pack {
    pub fn push(&mut self, run: &Run<'_>) {
        let packed = PackedRun {
            index: run.index.wrapping_sub(self.last_index) as i64,
            created: run.created - self.last_created,
            start: run.start.map(|t| t - run.created),
            end: run.end.map(|t| t - run.created),
            run_count: run.run_count,
            state: pack_state(&run.state),
            history: run
                .history
                .iter()
                .map(|(state, at)| (pack_state(state), at - run.created))
                .collect(),
        };
        // Serialising into a Vec cannot fail: postcard fails only on a full buffer.
        self.body = postcard::to_extend(&packed, std::mem::take(&mut self.body))
            .expect("postcard writes into a Vec");
        self.runs += 1;
        self.last_index = run.index;
        self.last_created = run.created;
    }

    pub fn runs(&self) -> usize {
        self.runs
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// The runs of a pack's body, in the order they were pushed.
pub(super) fn unpack(body: &[u8]) -> Result<Vec<Run<'_>>, String> {
    let (mut rest, mut runs) = (body, Vec::new());
    let (mut last_index, mut last_created) = (0u64, 0i64);
    while !rest.is_empty() {
        let (packed, tail): (PackedRun<'_>, _) =
            postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
        rest = tail;
        let index = last_index.wrapping_add(packed.index as u64);
        let created = last_created + packed.created;
        (last_index, last_created) = (index, created);
        let mut history = Vec::with_capacity(packed.history.len());
        for (state, at) in packed.history {
            history.push((unpack_state(state)?, created + at));
        }
        runs.push(Run {
            index,
            created,
            start: packed.start.map(|t| created + t),
            end: packed.end.map(|t| created + t),
            run_count: packed.run_count,
            state: unpack_state(packed.state)?,
            history,
        });
    }
    Ok(runs)
}

/// Codes as stored: never renumber.
const CODES: [(StateType, &str); 7] = [
    (StateType::Pending, "Pending"),
    (StateType::Scheduled, "Scheduled"),
    (StateType::Running, "Running"),
    (StateType::Completed, "Completed"),
    (StateType::Failed, "Failed"),
    (StateType::Crashed, "Crashed"),
    (StateType::Cancelled, "Cancelled"),
];

fn pack_state<'a>(state: &'a RunState<'_>) -> PackedState<'a> {
    let code = CODES
        .iter()
        .position(|(t, _)| *t == state.state_type)
        .expect("every state type has a code");
    PackedState {
        code: code as u8,
        name: (state.name != CODES[code].1).then_some(Cow::Borrowed(&*state.name)),
        message: state.message.as_deref().map(Cow::Borrowed),
    }
}

fn unpack_state(state: PackedState<'_>) -> Result<RunState<'_>, String> {
    let (state_type, usual_name) = *CODES
        .get(state.code as usize)
        .ok_or_else(|| format!("unknown state code {}", state.code))?;
    Ok(RunState {
        state_type,
        name: state.name.unwrap_or(Cow::Borrowed(usual_name)),
        message: state.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(state_type: StateType, name: &str, message: Option<&str>) -> RunState<'static> {
        RunState {
            state_type,
            name: Cow::Owned(name.to_string()),
            message: message.map(|m| Cow::Owned(m.to_string())),
        }
    }

    #[test]
    fn a_quick_run_takes_about_a_dozen_bytes() {
        let mut pack = Pack::default();
        let base = 1_790_000_000_000_000;
        for i in 0..1000 {
            pack.push(&Run {
                index: i,
                created: base + i as i64,
                start: Some(base + i as i64 + 3),
                end: Some(base + i as i64 + 40),
                run_count: 1,
                state: state(StateType::Completed, "Completed", None),
                history: Vec::new(),
            });
        }
        assert_eq!(pack.runs(), 1000);
        let per_run = pack.body().len() as f64 / 1000.0;
        assert!(per_run <= 12.0, "{per_run} bytes per run");
    }

    fn any_state() -> impl Strategy<Value = RunState<'static>> {
        (
            0..CODES.len(),
            prop::option::of("[A-Za-z ]{0,12}"),
            prop::option::of(".{0,40}"),
        )
            .prop_map(|(code, name, message)| {
                let (state_type, usual) = CODES[code];
                state(
                    state_type,
                    &name.unwrap_or(usual.to_string()),
                    message.as_deref(),
                )
            })
    }

    fn any_run() -> impl Strategy<Value = Run<'static>> {
        (
            any::<u64>(),
            -(1i64 << 52)..(1i64 << 52),
            prop::option::of(-1_000_000i64..1_000_000_000),
            prop::option::of(-1_000_000i64..1_000_000_000),
            any::<u32>(),
            any_state(),
            prop::collection::vec((any_state(), -1_000_000i64..1_000_000_000), 0..4),
        )
            .prop_map(
                |(index, created, start, end, run_count, state, history)| Run {
                    index,
                    created,
                    start: start.map(|t| created + t),
                    end: end.map(|t| created + t),
                    run_count,
                    state,
                    history: history
                        .into_iter()
                        .map(|(s, at)| (s, created + at))
                        .collect(),
                },
            )
    }

    proptest! {
        #[test]
        fn runs_come_back_as_they_went_in(runs in prop::collection::vec(any_run(), 0..50)) {
            let mut pack = Pack::default();
            for run in &runs {
                pack.push(run);
            }
            prop_assert_eq!(pack.runs(), runs.len());
            prop_assert_eq!(unpack(pack.body()).unwrap(), runs);
        }
    }

    #[test]
    fn a_damaged_body_is_an_error_not_a_panic() {
        let mut pack = Pack::default();
        pack.push(&Run {
            index: 7,
            created: 1,
            start: None,
            end: None,
            run_count: 0,
            state: state(StateType::Cancelled, "Cancelled", Some("stopped")),
            history: Vec::new(),
        });
        let body = pack.body();
        assert!(unpack(&body[..body.len() - 2]).is_err());
        assert!(unpack(&[0xff; 3]).is_err());
    }
}
