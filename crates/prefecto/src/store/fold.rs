//! Folding a run's transitions, as they arrive, into the one write that
//! stores them: most task runs are written once, whole, at their end.

use std::borrow::Cow;
use std::time::Instant;

use super::event::{FlowRunNames, RunKey, StateRow, TimesRow, implied_states};
use super::outbox::FastMap;
use super::pack;
use crate::state::StateType;

/// A run's transitions not yet written.
pub(super) struct Unwritten {
    pub(super) info: Option<FlowRunNames>,
    pub(super) update: RunUpdate,
    pub(super) first_seen: Instant,
}

/// Adds a transition to the run's unwritten update, or starts one.
pub(super) fn fold(
    unwritten: &mut FastMap<RunKey, Unwritten>,
    key: RunKey,
    info: Option<FlowRunNames>,
    state: &StateRow,
    times: Option<TimesRow>,
    synthesize: bool,
    now: Instant,
) {
    match unwritten.entry(key) {
        std::collections::hash_map::Entry::Vacant(entry) => {
            entry.insert(Unwritten {
                info,
                update: RunUpdate::new(state, times, synthesize),
                first_seen: now,
            });
        }
        std::collections::hash_map::Entry::Occupied(mut entry) => {
            let run = entry.get_mut();
            if info.is_some() {
                run.info = info;
            }
            run.update.add(state, times);
        }
    }
}

/// A run's transitions since it was last written, folded into a single write.
pub(super) struct RunUpdate {
    pub(super) latest: StateRow,
    pub(super) created: i64,
    pub(super) start: Option<i64>,
    pub(super) end: Option<i64>,
    pub(super) run_count: i64,
    pub(super) history: Vec<StateRow>,
    /// Seen whole at its end, with nothing but what its times imply: its
    /// history (Pending, Running, the end) is left for the reader to rebuild.
    implied_only: bool,
}

fn packed_state(row: &StateRow) -> pack::RunState<'_> {
    pack::RunState {
        state_type: row.state_type,
        name: Cow::Borrowed(&*row.name),
        message: row.message.as_deref().map(Cow::Borrowed),
    }
}

impl RunUpdate {
    /// The run as a pack holds it.
    pub(super) fn packed(&self, index: u64) -> pack::Run<'_> {
        pack::Run {
            index,
            created: self.created,
            start: self.start,
            end: self.end,
            run_count: self.run_count as u32,
            state: packed_state(&self.latest),
            // Empty when implied: the reader rebuilds Pending, Running and the end.
            history: if self.implied_only {
                Vec::new()
            } else {
                self.history
                    .iter()
                    .map(|row| (packed_state(row), row.micros))
                    .collect()
            },
        }
    }

    /// Its history as stored in a row: one JSON array per line.
    pub(super) fn history_lines(&self) -> String {
        let mut lines = String::new();
        for state in &self.history {
            push_history_line(&mut lines, state);
        }
        lines
    }

    /// A run's update starting with `state`. With `synthesize`, the Pending
    /// and first Running states that `times` imply (and the engine did not
    /// send) open the history.
    pub(super) fn new(state: &StateRow, times: Option<TimesRow>, synthesize: bool) -> Self {
        let mut update = RunUpdate {
            latest: state.clone(),
            created: times.map_or(state.micros, |t| t.created),
            start: None,
            end: None,
            run_count: 0,
            history: Vec::new(),
            implied_only: false,
        };
        if let (Some(times), true, true) = (times, synthesize, state.state_type.is_terminal()) {
            // The common case, a run that started and ended between two writes.
            update.implied_only = true;
            update.run_count = i64::from(times.run_count);
            update.start = times.started;
            update.end = Some(state.micros);
            return update;
        }
        if let (Some(times), true) = (times, synthesize) {
            // The state at hand may be that first Running itself.
            let started = times.started.filter(|&started| {
                !(state.state_type == StateType::Running && state.micros == started)
            });
            update
                .history
                .extend(implied_states(times.created, started));
        }
        update.add(state, times);
        update
    }

    pub(super) fn add(&mut self, state: &StateRow, times: Option<TimesRow>) {
        debug_assert!(!self.implied_only, "a run seen whole gets no more states");
        match times {
            // The engine's count is the whole run's.
            Some(times) => {
                self.run_count = i64::from(times.run_count);
                if self.start.is_none() {
                    self.start = times.started;
                }
            }
            None if state.state_type == StateType::Running => {
                self.start.get_or_insert(state.micros);
                self.run_count += 1;
            }
            None => {}
        }
        if state.state_type.is_terminal() {
            self.end = Some(state.micros);
        }
        self.history.push(state.clone());
        self.latest = state.clone();
    }
}

/// `"TYPE","Name",message-or-null`: a state, as both line shapes hold it.
pub(super) fn push_state(out: &mut String, state: &StateRow) {
    out.push('"');
    out.push_str(state.state_type.as_api_str());
    out.push_str("\",");
    push_json_str(out, &state.name);
    out.push(',');
    push_json_opt(out, state.message.as_deref());
}

pub(super) fn push_json_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'_' || b == b'-')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(s).to_string());
    }
}

pub(super) fn push_json_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.push_str("null"),
    }
}

/// Appends one JSON array per line, `[type, name, message, timestamp]`, by
/// hand: this runs for every transition of every run, and the common line
/// (no message, a plain name) needs no escaping.
pub(super) fn push_history_line(history: &mut String, state: &StateRow) {
    history.push('[');
    push_state(history, state);
    history.push(',');
    history.push_str(itoa::Buffer::new().format(state.micros));
    history.push_str("]\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn line_of(state: &State) -> (String, String, Option<String>, i64) {
        let mut history = String::new();
        push_history_line(&mut history, &StateRow::of(state));
        assert!(history.ends_with('\n'));
        serde_json::from_str(history.trim_end()).expect("a JSON array")
    }

    #[test]
    fn a_run_seen_whole_packs_as_its_update_would() {
        for end in [
            State::completed(),
            State::cached(),
            State::failed("no"),
            State::cancelled("stop"),
            State::new(StateType::Completed, "Done", None),
            State::new(StateType::Crashed, "Crashed", Some("boom".into())),
        ] {
            let row = StateRow::of(&end);
            for started in [None, Some(row.micros - 5)] {
                let times = TimesRow {
                    created: row.micros - 10,
                    started,
                    run_count: 3,
                };
                let update = RunUpdate::new(&row, Some(times), true);
                let (mut whole, mut updated) = (pack::Pack::default(), pack::Pack::default());
                whole.push_ended(42, (times.created, times.started, times.run_count), &end);
                updated.push(&update.packed(42));
                assert_eq!(whole.body(), updated.body(), "{end}");
                let unpacked = pack::unpack(whole.body()).unwrap();
                assert_eq!(unpacked, [update.packed(42)], "{end}");
            }
        }
    }

    #[test]
    fn history_lines_are_json() {
        let (state_type, name, message, micros) = line_of(&State::completed());
        assert_eq!(
            (&*state_type, &*name, message),
            ("COMPLETED", "Completed", None)
        );
        assert!(micros > 0);
        let awkward = "a \"quoted\" \\ line\nwith 'everything' é";
        let (_, name, message, _) = line_of(&State::failed(awkward));
        assert_eq!(name, "Failed");
        assert_eq!(message.as_deref(), Some(awkward));
        let (_, name, _, _) = line_of(&State::new(StateType::Completed, "Odd \"name\"", None));
        assert_eq!(name, "Odd \"name\"");
    }
}
