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

/// The bytes a quick run takes in a pack of such runs, each `step` µs
/// after the one before and numbered `numbered` after it, started 3 µs
/// after its creation and ended `took` µs after its start.
fn bytes_per_run(step: i64, numbered: u64, took: i64) -> usize {
    // The first run's number and creation are counted from zero.
    (pack_length(1001, step, numbered, took) - pack_length(1, step, numbered, took)) / 1000
}

fn pack_length(runs: i64, step: i64, numbered: u64, took: i64) -> usize {
    let mut pack = Pack::default();
    let base = 1_790_000_000_000_000;
    for i in 0..runs {
        let created = base + i * step;
        pack.push(&Run {
            index: 5 + i as u64 * numbered,
            created,
            start: Some(created + 3),
            end: Some(created + 3 + took),
            run_count: 1,
            state: state(StateType::Completed, "Completed", None),
            history: Vec::new(),
        });
    }
    assert_eq!(pack.runs(), runs as usize);
    pack.body().len()
}

#[test]
fn a_quick_run_takes_two_bytes_three_or_five() {
    // The next number, created with or just after the run before, ended within 3 µs.
    assert_eq!(bytes_per_run(0, 1, 0), 2);
    assert_eq!(bytes_per_run(1, 1, 3), 2);
    // Created up to 7 µs after it, or ended up to 255 µs after its start.
    assert_eq!(bytes_per_run(7, 1, 0), 3);
    assert_eq!(bytes_per_run(1, 1, 255), 3);
    // Another number, or later: the short form's five bytes.
    assert_eq!(bytes_per_run(1, 2, 0), 5);
    assert_eq!(bytes_per_run(8, 1, 0), 5);
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
        let tagged = matches!(format, PackFormat::Tagged | PackFormat::Compact);
        if let (true, true, Some(start), Some(end)) = (tagged, short, run.start, run.end) {
            let code = code_of(run.state.state_type) as u8;
            let (index, created) = (
                run.index.wrapping_sub(last_index) as i64,
                run.created - last_created,
            );
            let (start, end) = (start - run.created, end - run.created);
            (last_index, last_created) = (run.index, run.created);
            let took = end - start;
            let compact = format == PackFormat::Compact
                && index == 1
                && (0..=7).contains(&created)
                && (0..=255).contains(&start)
                && (0..=255).contains(&took);
            if compact && created <= 1 && took <= 3 {
                let tag = 0b1000_0000 | code << 4 | (created as u8) << 2 | took as u8;
                body.extend([tag, start as u8]);
            } else if compact {
                let tag = 0b1000_1000 | code << 4 | created as u8;
                body.extend([tag, start as u8, took as u8]);
            } else {
                let numbers = (short_tag(code), index, created, start, end);
                body = postcard::to_extend(&numbers, body).unwrap();
            }
            continue;
        }
        if tagged {
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

    /// Packs stored before schema version 10, with no compact run, still read.
    #[test]
    fn tagged_packs_read_as_they_were_written(runs in close_runs()) {
        let body = postcard_bytes_in(&runs, PackFormat::Tagged);
        prop_assert_eq!(unpack_in(&body, PackFormat::Tagged).unwrap(), runs);
    }

    /// Runs near each limit of the compact forms, on both sides of it.
    #[test]
    fn runs_at_the_compact_limits_are_written_as_the_format_says(runs in compact_edge_runs()) {
        let mut pack = Pack::default();
        for run in &runs {
            pack.push(run);
        }
        prop_assert_eq!(pack.body(), &postcard_bytes(&runs)[..]);
        prop_assert_eq!(unpack(pack.body()).unwrap(), runs);
    }
}

/// Plain quick runs whose numbers sit at the compact forms' limits: the
/// number one on (or not), created 0-8 µs after the run before, started
/// -1 to 256 µs after its creation, ended -1 to 256 µs after its start.
fn compact_edge_runs() -> impl Strategy<Value = Vec<Run<'static>>> {
    let near = |limits: &[i64]| {
        let values: Vec<i64> = limits.iter().flat_map(|&l| [l - 1, l, l + 1]).collect();
        prop::sample::select(values)
    };
    let step = (
        prop_oneof![4 => Just(1u64), 1 => 0u64..3],
        near(&[0, 1, 7]),
        near(&[0, 255]),
        near(&[0, 3, 255]),
        0..CODES.len(),
    );
    prop::collection::vec(step, 0..60).prop_map(|steps| {
        let (mut index, mut created) = (1_000u64, 1_790_000_000_000_000i64);
        steps
            .into_iter()
            .map(|(index_step, created_step, start, took, code)| {
                index += index_step;
                created += created_step;
                let (state_type, usual) = CODES[code];
                Run {
                    index,
                    created,
                    start: Some(created + start),
                    end: Some(created + start + took),
                    run_count: 1,
                    state: state(state_type, usual, None),
                    history: Vec::new(),
                }
            })
            .collect()
    })
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
    // Compact runs cut short, and one whose code no state has.
    assert!(unpack(&[0b1011_0000]).is_err());
    assert!(unpack(&[0b1011_1000, 3]).is_err());
    assert!(unpack(&[0b1111_0000, 3]).is_err());
    assert!(unpack(&[0b1011_0000, 3]).is_ok());
    assert!(unpack_in(&[0xff; 3], PackFormat::Untagged).is_err());
    assert!(PackFormat::stored(4).is_err());
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
        // Some lists start just before the epoch: their times go from
        // negative to positive, which the short path leaves to the general one.
        shift in prop_oneof![Just(0i64), Just(-1_790_000_000_000_040i64)],
    ) {
        // Ended plainly, as lanes hand them over: times in nanoseconds.
        let runs: Vec<Run<'static>> = runs
            .into_iter()
            .map(|run| {
                let usual = CODES[code_of(run.state.state_type)].1;
                let run = Run {
                    created: run.created + shift,
                    start: run.start.map(|t| t + shift),
                    end: run.end.map(|t| t + shift),
                    ..run
                };
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

#[test]
fn a_state_types_code_is_its_place_in_the_codes() {
    for (code, (state_type, _)) in CODES.iter().enumerate() {
        assert_eq!(code_of(*state_type), code);
    }
}
