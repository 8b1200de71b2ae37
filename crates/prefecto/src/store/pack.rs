//! Finished task runs stored many to a row, in a compact binary form.
//!
//! A map of a million quick task runs would cost a row each, or about 110
//! bytes each as JSON lines, and the writer's time goes mostly on bytes. A
//! pack holds the finished runs of one task of one flow run: numbers are
//! varints ([postcard]), each run's number and creation time are differences
//! from the run before, its other times differences from its creation, and a
//! state's usual name ("Completed" for COMPLETED) is left out.
//!
//! Since schema version 9 each run starts with a tag ([`PackFormat::Tagged`]).
//! Nearly every run of a large map ran once and ended plainly (no name,
//! message or history beyond what its times imply): its tag is its state's
//! code, and four varints follow (number, creation, start, end), five bytes
//! for a quick run. Every other run is tag 0 and the postcard bytes of
//! [`PackedRun`], as packs before version 9 held every run (eleven bytes for
//! a quick run). The writer's work is mostly its bytes: written to the WAL,
//! checksummed, read back and written again by the checkpoint. Five bytes a
//! run instead of eleven took the writer's thread from 833-928 samples to
//! 625-636 for 3,000,000 quick runs (`perf record` of `batch_task --rss 'map
//! window, async body' 100000 --history --times 30`, three of each).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(super) use crate::names::same_task;
pub(super) use crate::recorder::PlainEnd;
use crate::state::{State, StateType};

/// A run's numbers, as written ahead of its state.
#[derive(Clone, Copy)]
struct Numbers {
    index: u64,
    created: i64,
    start: Option<i64>,
    end: Option<i64>,
    run_count: u32,
}

/// How a stored pack's runs are written (the `format` column of
/// `task_run_packs`; packs before schema version 9 are untagged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PackFormat {
    /// Every run as the postcard bytes of a [`PackedRun`].
    Untagged = 1,
    /// Every run after a tag: 0 for a [`PackedRun`], a state's code plus one
    /// for a short run (see [`short_tag`]).
    Tagged = 2,
}

impl PackFormat {
    /// How [`Pack`] writes.
    pub const CURRENT: PackFormat = PackFormat::Tagged;

    /// The format a stored pack names.
    pub fn stored(code: i64) -> Result<Self, String> {
        match code {
            1 => Ok(PackFormat::Untagged),
            2 => Ok(PackFormat::Tagged),
            other => Err(format!("unknown pack format {other}")),
        }
    }
}

/// The tag of a run written whole, as a [`PackedRun`].
const WHOLE: u8 = 0;

/// The tag of a short run ending in the state of `code`: it ran once and
/// ended plainly, and four signed varints follow (number and creation less
/// the previous run's, start and end less its creation).
fn short_tag(code: u8) -> u8 {
    code + 1
}

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

/// Packs, each with the flow run and task whose runs it holds: a flow run's
/// task may have many.
pub(super) type Packs = Vec<((Uuid, &'static str), Pack)>;

/// The finished runs of one task of one flow run, packed as they come.
#[derive(Default)]
pub(super) struct Pack {
    body: Vec<u8>,
    runs: usize,
    last_index: u64,
    last_created: i64,
}

impl Pack {
    /// Writes the run in postcard's format of [`PackedRun`] (which
    /// [`unpack`] reads), by hand: this runs for every task run recorded,
    /// and serde's generic path cost several times the engine's own work
    /// per run. A test checks the bytes against postcard's.
    pub fn push(&mut self, run: &Run<'_>) {
        let state = pack_state(&run.state);
        let plain = state.name.is_none() && state.message.is_none() && run.history.is_empty();
        let numbers = Numbers {
            index: run.index,
            created: run.created,
            start: run.start,
            end: run.end,
            run_count: run.run_count,
        };
        self.push_head(numbers, state.code, plain);
        if !plain {
            let body = &mut self.body;
            put_text(body, state.name.as_deref());
            put_text(body, state.message.as_deref());
            put_varint(body, run.history.len() as u64);
            for (state, at) in &run.history {
                put_state(body, state);
                put_signed(body, at - run.created);
            }
        }
    }

    /// A run seen whole as it ended in `end`, `index` created and first
    /// started (µs) as given, after `run_count` attempts: its history is
    /// what its times imply (Pending, Running if it ran, the end), left for
    /// the reader to rebuild. Nearly every run is packed so, most with a
    /// plain end, whose bytes are written here without building the run.
    pub fn push_ended(
        &mut self,
        index: u64,
        (created, start, run_count): (i64, Option<i64>, u32),
        end: &State,
    ) {
        let numbers = Numbers {
            index,
            created,
            start,
            end: Some(end.micros()),
            run_count,
        };
        if end.is_plain() {
            let code = code_of(end.state_type()) as u8;
            return self.push_head(numbers, code, true);
        }
        self.push(&Run {
            index,
            created,
            start,
            end: numbers.end,
            run_count,
            state: RunState {
                state_type: end.state_type(),
                name: Cow::Borrowed(end.name()),
                message: end.message().map(Cow::Borrowed),
            },
            history: Vec::new(),
        });
    }

    /// A quick run that ended plainly, as its lane saw it (times in
    /// nanoseconds): as [`push_ended`](Self::push_ended) would pack it.
    pub fn push_plain_end(&mut self, end: &PlainEnd) {
        let micros = |nanos: i64| nanos.div_euclid(1000);
        let numbers = Numbers {
            index: end.index,
            created: micros(end.created_nanos),
            start: (end.started_nanos != 0).then(|| micros(end.started_nanos)),
            end: Some(micros(end.ended_nanos)),
            run_count: end.run_count,
        };
        self.push_head(numbers, code_of(end.state_type) as u8, true);
    }

    /// Counts the run and writes it: a short run (plain, once, started and
    /// ended) whole; any other run's tag, numbers and state code, and for a
    /// `plain` one the zeros that say it has no name, message or history.
    fn push_head(&mut self, run: Numbers, code: u8, plain: bool) {
        let index = run.index.wrapping_sub(self.last_index) as i64;
        let created = run.created - self.last_created;
        (self.last_index, self.last_created) = (run.index, run.created);
        self.runs += 1;
        let mut head = Head::new();
        match (plain && run.run_count == 1, run.start, run.end) {
            (true, Some(start), Some(end)) => {
                let numbers = [index, created, start - run.created, end - run.created].map(zigzag);
                if numbers.iter().all(|&n| n < 0x80) {
                    // Most quick runs: every number fits a byte.
                    let [index, created, start, end] = numbers.map(|n| n as u8);
                    let bytes = [short_tag(code), index, created, start, end];
                    return self.body.extend_from_slice(&bytes);
                }
                head.put(short_tag(code));
                numbers.into_iter().for_each(|n| head.varint(n));
            }
            _ => {
                head.put(WHOLE);
                head.signed(index);
                head.signed(created);
                head.option(run.start.map(|t| t - run.created));
                head.option(run.end.map(|t| t - run.created));
                head.varint(u64::from(run.run_count));
                head.put(code);
                if plain {
                    // No name, no message, no history: three zeros.
                    head.len += 3;
                }
            }
        }
        self.body.extend_from_slice(head.written());
    }

    /// Empties it, keeping its room.
    pub fn clear(&mut self) {
        self.body.clear();
        (self.runs, self.last_index, self.last_created) = (0, 0, 0);
    }

    /// An empty pack with room for `bytes` before it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        Pack {
            body: Vec::with_capacity(bytes),
            ..Pack::default()
        }
    }

    /// The bytes it holds before it grows.
    pub fn capacity(&self) -> usize {
        self.body.capacity()
    }

    pub fn runs(&self) -> usize {
        self.runs
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// The runs of a pack's body, in the order they were pushed.
#[cfg(test)]
pub(super) fn unpack(body: &[u8]) -> Result<Vec<Run<'_>>, String> {
    unpack_in(body, PackFormat::CURRENT)
}

/// The runs of a stored pack's body, written in `format`.
pub(super) fn unpack_in(body: &[u8], format: PackFormat) -> Result<Vec<Run<'_>>, String> {
    let (mut rest, mut runs) = (body, Vec::new());
    let mut last = (0u64, 0i64);
    while let Some((&tag, tail)) = rest.split_first() {
        let run = match format {
            PackFormat::Untagged => next_run(&mut rest, &mut last)?,
            PackFormat::Tagged if tag == WHOLE => {
                rest = tail;
                next_run(&mut rest, &mut last)?
            }
            PackFormat::Tagged => {
                rest = tail;
                next_short_run(tag, &mut rest, &mut last)?
            }
        };
        runs.push(run);
    }
    Ok(runs)
}

/// Reads the run at the start of `rest`, whose number and creation are
/// counted from `last`'s, and moves both past it.
fn next_run<'a>(rest: &mut &'a [u8], last: &mut (u64, i64)) -> Result<Run<'a>, String> {
    let (packed, tail): (PackedRun<'_>, _) =
        postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
    *rest = tail;
    let index = last.0.wrapping_add(packed.index as u64);
    let created = last.1 + packed.created;
    *last = (index, created);
    let mut history = Vec::with_capacity(packed.history.len());
    for (state, at) in packed.history {
        history.push((unpack_state(state)?, created + at));
    }
    Ok(Run {
        index,
        created,
        start: packed.start.map(|t| created + t),
        end: packed.end.map(|t| created + t),
        run_count: packed.run_count,
        state: unpack_state(packed.state)?,
        history,
    })
}

/// Reads the short run tagged `tag` at the start of `rest`, as
/// [`next_run`] reads a whole one.
fn next_short_run<'a>(tag: u8, rest: &mut &[u8], last: &mut (u64, i64)) -> Result<Run<'a>, String> {
    let (state_type, usual_name) = *CODES
        .get(usize::from(tag) - 1)
        .ok_or_else(|| format!("unknown run tag {tag}"))?;
    let mut numbers = [0i64; 4];
    for number in &mut numbers {
        let (value, tail): (i64, _) = postcard::take_from_bytes(rest).map_err(|e| e.to_string())?;
        (*number, *rest) = (value, tail);
    }
    let [index, created, start, end] = numbers;
    let index = last.0.wrapping_add(index as u64);
    let created = last.1 + created;
    *last = (index, created);
    Ok(Run {
        index,
        created,
        start: Some(created + start),
        end: Some(created + end),
        run_count: 1,
        state: RunState {
            state_type,
            name: Cow::Borrowed(usual_name),
            message: None,
        },
        history: Vec::new(),
    })
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

fn code_of(state_type: StateType) -> usize {
    CODES
        .iter()
        .position(|(t, _)| *t == state_type)
        .expect("every state type has a code")
}

fn pack_state<'a>(state: &'a RunState<'_>) -> PackedState<'a> {
    let code = code_of(state.state_type);
    PackedState {
        code: code as u8,
        name: (state.name != CODES[code].1).then_some(Cow::Borrowed(&*state.name)),
        message: state.message.as_deref().map(Cow::Borrowed),
    }
}

/// A run's numbers, written on the stack and copied into the body at once
/// (a capacity check per byte cost more than the rest): a tag, two varints
/// of at most 10 bytes, two options of at most 11, a count of at most 5, a
/// state code, and three zeros, 52 bytes at most. Positions are taken modulo its
/// length, which they never reach, so that no write needs a bounds check.
struct Head {
    bytes: [u8; 64],
    len: usize,
}

impl Head {
    fn new() -> Self {
        Head {
            bytes: [0; 64],
            len: 0,
        }
    }

    fn put(&mut self, byte: u8) {
        self.bytes[self.len % 64] = byte;
        self.len += 1;
    }

    /// Postcard's varint: seven bits a byte, least significant first.
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.put(value as u8 | 0x80);
            value >>= 7;
        }
        self.put(value as u8);
    }

    /// Postcard's signed integers: zigzag, then a varint.
    fn signed(&mut self, value: i64) {
        self.varint(zigzag(value));
    }

    fn option(&mut self, value: Option<i64>) {
        match value {
            None => self.put(0),
            Some(value) => {
                self.put(1);
                self.signed(value);
            }
        }
    }

    fn written(&self) -> &[u8] {
        &self.bytes[..self.len.min(64)]
    }
}

/// Postcard's zigzag: small magnitudes, of either sign, to small numbers.
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn put_varint(body: &mut Vec<u8>, value: u64) {
    let mut head = Head::new();
    head.varint(value);
    body.extend_from_slice(head.written());
}

fn put_signed(body: &mut Vec<u8>, value: i64) {
    let mut head = Head::new();
    head.signed(value);
    body.extend_from_slice(head.written());
}

fn put_text(body: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => body.push(0),
        Some(text) => {
            body.push(1);
            put_varint(body, text.len() as u64);
            body.extend_from_slice(text.as_bytes());
        }
    }
}

/// As [`PackedState`] holds it.
fn put_state(body: &mut Vec<u8>, state: &RunState<'_>) {
    let packed = pack_state(state);
    body.push(packed.code);
    put_text(body, packed.name.as_deref());
    put_text(body, packed.message.as_deref());
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
mod tests;
