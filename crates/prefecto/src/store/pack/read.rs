//! Reading a stored pack back: its runs, in the order they were packed,
//! in whichever format (`PackFormat`) it was written.

use std::borrow::Cow;

use super::{
    CODES, COMPACT, COMPACT_WIDE, PackFormat, PackedRun, PackedState, Run, RunState, WHOLE,
};
use crate::state::StateType;

/// The runs of a pack's body, in the order they were pushed.
#[cfg(test)]
pub(in crate::store) fn unpack(body: &[u8]) -> Result<Vec<Run<'_>>, String> {
    unpack_in(body, PackFormat::CURRENT)
}

/// The runs of a stored pack's body, written in `format`.
pub(in crate::store) fn unpack_in(body: &[u8], format: PackFormat) -> Result<Vec<Run<'_>>, String> {
    let (mut rest, mut runs) = (body, Vec::new());
    let mut last = (0u64, 0i64);
    while let Some((&tag, tail)) = rest.split_first() {
        let run = match format {
            PackFormat::Untagged => next_run(&mut rest, &mut last)?,
            PackFormat::Tagged | PackFormat::Compact if tag == WHOLE => {
                rest = tail;
                next_run(&mut rest, &mut last)?
            }
            PackFormat::Compact if tag & COMPACT != 0 => {
                rest = tail;
                next_compact_run(tag, &mut rest, &mut last)?
            }
            PackFormat::Tagged | PackFormat::Compact => {
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
    Ok(short_run(numbers, (state_type, usual_name), last))
}

/// Reads the compact run tagged `tag` (see [`compact`](super::compact)) at the start of
/// `rest`, as [`next_run`] reads a whole one.
fn next_compact_run<'a>(
    tag: u8,
    rest: &mut &[u8],
    last: &mut (u64, i64),
) -> Result<Run<'a>, String> {
    let (state_type, usual_name) = *CODES
        .get(usize::from(tag >> 4 & 0x07))
        .ok_or_else(|| format!("unknown run tag {tag}"))?;
    let wide = tag & COMPACT_WIDE != 0;
    let (created, took, length) = match wide {
        true => (tag & 0x07, None, 2),
        false => (tag >> 2 & 0x01, Some(tag & 0x03), 1),
    };
    let Some(bytes) = rest.get(..length) else {
        return Err(format!("a compact run cut short after tag {tag}"));
    };
    let start = i64::from(bytes[0]);
    let took = i64::from(took.unwrap_or_else(|| bytes[1]));
    *rest = &rest[length..];
    let numbers = [1, i64::from(created), start, start + took];
    Ok(short_run(numbers, (state_type, usual_name), last))
}

/// A short run of these numbers (number and creation less `last`'s, start
/// and end less its creation), ended plainly in its state's usual name.
fn short_run<'a>(
    numbers: [i64; 4],
    (state_type, usual_name): (StateType, &'static str),
    last: &mut (u64, i64),
) -> Run<'a> {
    let [index, created, start, end] = numbers;
    let index = last.0.wrapping_add(index as u64);
    let created = last.1 + created;
    *last = (index, created);
    Run {
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
