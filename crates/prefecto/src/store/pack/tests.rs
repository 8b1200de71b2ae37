//! Packs written and read back, against postcard's own bytes.

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
fn a_quick_run_takes_five_bytes() {
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
    // The first run's creation is counted from the epoch: seven bytes more.
    assert_eq!(pack.body().len(), 5 * 1000 + 7);
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

/// The bytes of `runs` as postcard writes them, in `format`: the
/// hand-written writer must agree byte for byte, so that the reader
/// (postcard) reads every pack.
fn postcard_bytes_in(runs: &[Run<'_>], format: PackFormat) -> Vec<u8> {
    let (mut body, mut last_index, mut last_created) = (Vec::new(), 0u64, 0i64);
    for run in runs {
        let short = run.run_count == 1
            && run.history.is_empty()
            && pack_state(&run.state).name.is_none()
            && run.state.message.is_none();
        if let (PackFormat::Tagged, true, Some(start), Some(end)) =
            (format, short, run.start, run.end)
        {
            let tag = short_tag(code_of(run.state.state_type) as u8);
            let numbers = (
                tag,
                run.index.wrapping_sub(last_index) as i64,
                run.created - last_created,
                start - run.created,
                end - run.created,
            );
            body = postcard::to_extend(&numbers, body).unwrap();
            (last_index, last_created) = (run.index, run.created);
            continue;
        }
        if format == PackFormat::Tagged {
            body.push(WHOLE);
        }
        let packed = PackedRun {
            index: run.index.wrapping_sub(last_index) as i64,
            created: run.created - last_created,
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
        body = postcard::to_extend(&packed, body).unwrap();
        (last_index, last_created) = (run.index, run.created);
    }
    body
}

fn postcard_bytes(runs: &[Run<'_>]) -> Vec<u8> {
    postcard_bytes_in(runs, PackFormat::CURRENT)
}

proptest! {
    #[test]
    fn the_writer_writes_what_postcard_writes(runs in prop::collection::vec(any_run(), 0..50)) {
        let mut pack = Pack::default();
        for run in &runs {
            pack.push(run);
        }
        prop_assert_eq!(pack.body(), &postcard_bytes(&runs)[..]);
    }
}

/// Runs a few microseconds apart, most with a plain end: the numbers
/// of most of them fit a byte each (five bytes in all), some do not.
fn close_runs() -> impl Strategy<Value = Vec<Run<'static>>> {
    let step = (
        -3i64..6,
        -70i64..70,
        prop::option::of(-70i64..70),
        prop::option::of(-70i64..70),
        0u32..3,
        0..CODES.len(),
        any::<bool>(),
    );
    prop::collection::vec(step, 0..60).prop_map(|steps| {
        let (mut index, mut created) = (1_000u64, 1_790_000_000_000_000i64);
        steps
            .into_iter()
            .map(
                |(index_step, created_step, start, end, run_count, code, plain)| {
                    index = index.wrapping_add(index_step as u64);
                    created += created_step;
                    let (state_type, usual) = CODES[code];
                    let name = if plain { usual } else { "Renamed" };
                    Run {
                        index,
                        created,
                        start: start.map(|t| created + t),
                        end: end.map(|t| created + t),
                        run_count,
                        state: state(state_type, name, None),
                        history: Vec::new(),
                    }
                },
            )
            .collect()
    })
}

proptest! {
    #[test]
    fn close_runs_are_written_as_postcard_writes_them(runs in close_runs()) {
        let mut pack = Pack::default();
        for run in &runs {
            pack.push(run);
        }
        prop_assert_eq!(pack.body(), &postcard_bytes(&runs)[..]);
        prop_assert_eq!(unpack(pack.body()).unwrap(), runs);
    }
}

#[test]
fn extreme_numbers_are_written_as_postcard_writes_them() {
    let runs: Vec<Run<'static>> = [i64::MIN / 2, -1, 0, 1, 63, 64, 8191, 8192, i64::MAX / 2]
        .into_iter()
        .enumerate()
        .map(|(i, created)| Run {
            index: [0, u64::MAX, 1 << 63, 127, 128][i % 5],
            created,
            start: Some(created / 2),
            end: None,
            run_count: [0, u32::MAX, 127, 128][i % 4],
            state: state(StateType::Failed, "TimedOut", Some(&"é".repeat(100))),
            history: vec![(state(StateType::Running, "Running", None), created)],
        })
        .collect();
    let mut pack = Pack::default();
    for run in &runs {
        pack.push(run);
    }
    assert_eq!(pack.body(), &postcard_bytes(&runs)[..]);
    assert_eq!(unpack(pack.body()).unwrap(), runs);
}

proptest! {
    /// Packs stored before schema version 9, untagged, still read.
    #[test]
    fn untagged_packs_read_as_they_were_written(runs in prop::collection::vec(any_run(), 0..50)) {
        let body = postcard_bytes_in(&runs, PackFormat::Untagged);
        prop_assert_eq!(unpack_in(&body, PackFormat::Untagged).unwrap(), runs);
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
    // A short run cut short, and tags no state has.
    assert!(unpack(&[short_tag(3), 2, 2]).is_err());
    assert!(unpack(&[short_tag(7), 2, 2, 2, 2]).is_err());
    assert!(unpack(&[0xff, 2, 2, 2, 2]).is_err());
    assert!(unpack_in(&[0xff; 3], PackFormat::Untagged).is_err());
    assert!(PackFormat::stored(3).is_err());
}

fn pack_of(runs: &[Run<'_>]) -> Pack {
    let mut pack = Pack::default();
    for run in runs {
        pack.push(run);
    }
    pack
}

proptest! {
    #[test]
    fn plain_ends_packed_by_the_writer_are_the_runs_packed_here(
        runs in close_runs(),
        sub_micros in prop::collection::vec((0i64..1000, 0i64..1000, 0i64..1000), 60),
    ) {
        // Ended plainly, as lanes hand them over: times in nanoseconds.
        let runs: Vec<Run<'static>> = runs
            .into_iter()
            .map(|run| {
                let usual = CODES[code_of(run.state.state_type)].1;
                Run {
                    end: Some(run.end.unwrap_or(run.created + 1)),
                    state: state(run.state.state_type, usual, None),
                    ..run
                }
            })
            .collect();
        let mut by_writer = Pack::default();
        for (run, (c, s, e)) in runs.iter().zip(&sub_micros) {
            by_writer.push_plain_end(&PlainEnd {
                index: run.index,
                created_nanos: run.created * 1000 + c,
                started_nanos: run.start.map_or(0, |t| t * 1000 + s),
                ended_nanos: run.end.unwrap() * 1000 + e,
                run_count: run.run_count,
                state_type: run.state.state_type,
            });
        }
        prop_assert_eq!(by_writer.runs(), runs.len());
        let here = pack_of(&runs);
        prop_assert_eq!(by_writer.body(), here.body());
        prop_assert_eq!(unpack(by_writer.body()).unwrap(), runs);
    }
}
