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
//!
//! Since schema version 10 ([`PackFormat::Compact`]) a short run whose
//! number follows the run before's takes two or three bytes: a tag of its
//! own (high bit set) holding its state's code and its creation less the
//! previous run's, then its start less its creation and its end less its
//! start, each a byte (see [`compact`]). A lane's runs are numbered one
//! after another and start and end within microseconds: 97-98% of a window
//! map's or a stream's runs take two bytes, a strict batch's three (its
//! runs start together and end one after another).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub(super) use crate::names::same_task;
pub(super) use crate::recorder::PlainEnd;
use crate::state::{State, StateType};
use bytes::{Head, put_signed, put_text, put_varint, zigzag};

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
/// `task_run_packs`; packs before schema version 9 are untagged, and
/// before version 10 none is compact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PackFormat {
    /// Every run as the postcard bytes of a [`PackedRun`].
    Untagged = 1,
    /// Every run after a tag: 0 for a [`PackedRun`], a state's code plus one
    /// for a short run (see [`short_tag`]).
    Tagged = 2,
    /// As [`Tagged`](Self::Tagged), and a tag with its high bit set for a
    /// short run of the next number, in two or three bytes (see [`compact`]).
    Compact = 3,
}

impl PackFormat {
    /// How [`Pack`] writes.
    pub const CURRENT: PackFormat = PackFormat::Compact;

    /// The format a stored pack names.
    pub fn stored(code: i64) -> Result<Self, String> {
        match code {
            1 => Ok(PackFormat::Untagged),
            2 => Ok(PackFormat::Tagged),
            3 => Ok(PackFormat::Compact),
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

/// The high bit of a compact run's tag.
const COMPACT: u8 = 0x80;
/// The bit of a compact tag that says a third byte follows.
const COMPACT_WIDE: u8 = 0x08;

/// A short run's bytes in the compact format, if it has them: its number
/// follows the previous run's (`numbers[0]`, the difference, is 1), it was
/// created at most 7 µs after it, started at most 255 µs after its
/// creation and ended at most 255 µs after its start. Two bytes when it
/// was created at most 1 µs after the previous run and ended at most 3 µs
/// after its start, `1ccc 0dee` and its start: `ccc` its state's code, `d`
/// its creation less the previous run's, `ee` its end less its start;
/// else three, `1ccc 1ddd`, its start, and its end less its start. The
/// numbers are the four of a short run: number, creation (both less the
/// previous run's), start and end (less its creation).
fn compact(numbers: [i64; 4], code: u8) -> Option<([u8; 3], usize)> {
    let [index, created, start, end] = numbers;
    let took = end - start;
    let fits = index == 1
        && (0..8).contains(&created)
        && (0..256).contains(&start)
        && (0..256).contains(&took);
    if !fits {
        return None;
    }
    let tag = COMPACT | code << 4;
    Some(if created <= 1 && took <= 3 {
        ([tag | (created as u8) << 2 | took as u8, start as u8, 0], 2)
    } else {
        (
            [tag | COMPACT_WIDE | created as u8, start as u8, took as u8],
            3,
        )
    })
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
    /// [`unpack_in`] reads), by hand: this runs for every task run recorded,
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
        if self.push_short_plain_end(end) {
            return;
        }
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

    /// Writes the usual plain end (it ran once, and it is compact, or its
    /// four numbers each fit a byte) as [`push_head`](Self::push_head)
    /// would, and says whether it did. The writer packs nearly every quick
    /// run here: its times are positive, so micros are an unsigned
    /// division, not a Euclidean one; and each length is stored as a
    /// constant, not copied by a call to `memcpy` (`perf record`, `batch_task
    /// --rss 'map window, async body' 100000 --history --times 30`, two of
    /// each: the writer's packing 3.1% and 2.8% of the samples, then 2.5%).
    #[inline]
    fn push_short_plain_end(&mut self, end: &PlainEnd) -> bool {
        let (created, started, ended) = (end.created_nanos, end.started_nanos, end.ended_nanos);
        if end.run_count != 1 || started == 0 || (created | started | ended) < 0 {
            return false;
        }
        let micros = |nanos: i64| (nanos as u64 / 1000) as i64;
        let created = micros(created);
        let numbers = [
            end.index.wrapping_sub(self.last_index) as i64,
            created - self.last_created,
            micros(started) - created,
            micros(ended) - created,
        ];
        if !self.put_short(numbers, code_of(end.state_type) as u8) {
            return false;
        }
        (self.last_index, self.last_created) = (end.index, created);
        self.runs += 1;
        true
    }

    /// Writes a short run's four numbers (number and creation less the
    /// previous run's, start and end less its creation) compact, or in five
    /// bytes if each fits one; false if neither, and nothing written. Each
    /// length is stored as a constant, not copied by a call to `memcpy`.
    /// Inlined into both callers: it runs for nearly every run packed.
    #[inline(always)]
    fn put_short(&mut self, numbers: [i64; 4], code: u8) -> bool {
        match compact(numbers, code) {
            Some((bytes, 2)) => self.body.extend_from_slice(&bytes[..2]),
            Some((bytes, _)) => self.body.extend_from_slice(&bytes),
            // Zigzagged, each fits a byte's seven bits.
            None if numbers.iter().all(|n| (-64..64).contains(n)) => {
                let [index, created, start, end] = numbers.map(|n| zigzag(n) as u8);
                let bytes = [short_tag(code), index, created, start, end];
                self.body.extend_from_slice(&bytes);
            }
            None => return false,
        }
        true
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
                let numbers = [index, created, start - run.created, end - run.created];
                if self.put_short(numbers, code) {
                    return;
                }
                head.put(short_tag(code));
                numbers.into_iter().for_each(|n| head.signed(n));
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
                    head.zeros(3);
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

/// A state type's place in [`CODES`], by a match rather than a search:
/// it runs for every run packed (a test checks the two agree).
fn code_of(state_type: StateType) -> usize {
    match state_type {
        StateType::Pending => 0,
        StateType::Scheduled => 1,
        StateType::Running => 2,
        StateType::Completed => 3,
        StateType::Failed => 4,
        StateType::Crashed => 5,
        StateType::Cancelled => 6,
    }
}

fn pack_state<'a>(state: &'a RunState<'_>) -> PackedState<'a> {
    let code = code_of(state.state_type);
    PackedState {
        code: code as u8,
        name: (state.name != CODES[code].1).then_some(Cow::Borrowed(&*state.name)),
        message: state.message.as_deref().map(Cow::Borrowed),
    }
}

/// As [`PackedState`] holds it.
fn put_state(body: &mut Vec<u8>, state: &RunState<'_>) {
    let packed = pack_state(state);
    body.push(packed.code);
    put_text(body, packed.name.as_deref());
    put_text(body, packed.message.as_deref());
}

mod bytes;
mod read;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub(super) use read::unpack;
pub(super) use read::unpack_in;
