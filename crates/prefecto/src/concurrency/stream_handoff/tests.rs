use std::collections::HashSet;
use std::time::Duration;

use super::*;

fn outcome(index: usize) -> HandedRun<usize> {
    HandedRun {
        index,
        task_run: TaskRunName {
            task: "t",
            index: index as u64,
        },
        result: Ok(index),
    }
}

fn hand_now(handoff: &Handoff<usize>, buffer: &Buffer<usize>, index: usize) -> bool {
    handoff.try_hand(buffer, 1, |into| into.push(outcome(index)))
}

/// Reads to the end, waiting as a `MapStream` does: the indices read.
async fn read_all(reader: &mut Reader<usize>) -> Vec<usize> {
    let mut read = Vec::new();
    loop {
        let next = match reader.try_read() {
            Some(next) => next,
            None => {
                let message = reader.receiver().recv().await;
                match reader.read(message) {
                    Some(next) => next,
                    None => continue,
                }
            }
        };
        match next {
            Read::Run(run) => read.push(run.index),
            Read::End(_) => return read,
        }
    }
}

#[test]
fn every_outcome_reaches_the_reader_once_while_lanes_hand_over_at_once() {
    every_outcome_reaches_a_reader_once(Filling::Yield);
}

#[test]
fn every_outcome_reaches_a_sleeping_reader_once() {
    every_outcome_reaches_a_reader_once(Filling::Sleep);
}

fn every_outcome_reaches_a_reader_once(filling: Filling) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Room for two messages: lanes often find the channel full and wait.
        let (handoff, reader) = handoff::<usize>(2 * CHUNK);
        let mut reader = reader.filling(filling);
        let handoff = Arc::new(handoff);
        const LANES: usize = 4;
        const EACH: usize = 20_000;
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                let handoff = handoff.clone();
                tokio::spawn(async move {
                    let buffer = handoff.buffer(lane);
                    for i in 0..EACH {
                        let index = lane * EACH + i;
                        if !hand_now(&handoff, &buffer, index) {
                            handoff.hand(&buffer, vec![outcome(index)]).await;
                        }
                        if i % 1000 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        let ending = tokio::spawn(async move {
            for lane in lanes {
                lane.await.unwrap();
            }
            handoff.end(None);
        });
        let read = tokio::time::timeout(Duration::from_secs(60), read_all(&mut reader))
            .await
            .expect("the reader waited for an outcome that never came");
        ending.await.unwrap();
        assert_eq!(
            read.len(),
            LANES * EACH,
            "an outcome was lost or read twice"
        );
        let distinct: HashSet<_> = read.iter().collect();
        assert_eq!(distinct.len(), LANES * EACH);
    });
}

#[test]
fn a_waiting_reader_is_sent_a_lone_outcome_at_once() {
    a_waiting_reader_is_sent_a_lone_outcome(Filling::Yield);
}

#[test]
fn a_sleeping_reader_that_found_nothing_is_sent_a_lone_outcome_at_once() {
    a_waiting_reader_is_sent_a_lone_outcome(Filling::Sleep);
}

fn a_waiting_reader_is_sent_a_lone_outcome(filling: Filling) {
    let (handoff, reader) = handoff::<usize>(1024);
    let mut reader = reader.filling(filling);
    let buffer = handoff.buffer(0);
    // Nothing yet: the reader is marked as waiting.
    assert!(reader.try_read().is_none());
    assert!(hand_now(&handoff, &buffer, 7));
    // Not left in the buffer for a chunk to fill: it is in the channel.
    let message = reader.receiver().try_recv().ok();
    assert!(
        message.is_some(),
        "the outcome waits in a buffer while its reader waits"
    );
    match reader.read(message) {
        Some(Read::Run(run)) => assert_eq!(run.index, 7),
        _ => panic!("the message did not bring the outcome"),
    }
}

#[test]
fn a_reader_takes_what_the_buffers_hold_rather_than_wait() {
    a_reader_takes_what_the_buffers_hold(Filling::Yield);
}

#[test]
fn a_sleeping_reader_takes_what_the_buffers_hold_once_awake() {
    a_reader_takes_what_the_buffers_hold(Filling::Sleep);
}

fn a_reader_takes_what_the_buffers_hold(filling: Filling) {
    let (handoff, reader) = handoff::<usize>(1024);
    let mut reader = reader.filling(filling);
    let (first, second) = (handoff.buffer(0), handoff.buffer(1));
    for index in 0..3 {
        assert!(hand_now(&handoff, &first, index));
    }
    assert!(hand_now(&handoff, &second, 3));
    // Fewer than a chunk, and the reader was not waiting: none was sent.
    assert!(reader.receiver().is_empty());
    let mut read = Vec::new();
    while let Some(Read::Run(run)) = reader.try_read() {
        read.push(run.index);
    }
    read.sort();
    assert_eq!(read, [0, 1, 2, 3]);
    // The buffers are empty and the reader waits: the next goes at once.
    assert!(hand_now(&handoff, &second, 4));
    assert!(!reader.receiver().is_empty());
}

#[test]
fn outcomes_of_one_buffer_are_read_in_the_order_they_were_handed_over() {
    let runtime = current_thread();
    runtime.block_on(async {
        let (handoff, mut reader) = handoff::<usize>(1024);
        let buffer = handoff.buffer(0);
        // Full chunks go through the channel, the rest stays buffered, and
        // the reader takes some in between.
        let count = 5 * handoff.chunk + 3;
        let mut read = Vec::new();
        for index in 0..count {
            assert!(hand_now(&handoff, &buffer, index));
            if index % 45 == 0 {
                while let Some(Read::Run(run)) = reader.try_read() {
                    read.push(run.index);
                }
            }
        }
        handoff.end(None);
        read.extend(read_all(&mut reader).await);
        assert_eq!(read, (0..count).collect::<Vec<_>>());
    });
}

#[test]
fn outcomes_not_read_never_hold_more_than_the_room_and_reading_gives_it_back() {
    let (handoff, mut reader) = handoff::<usize>(100);
    let (first, second) = (handoff.buffer(0), handoff.buffer(1));
    // Two buffers taking room a chunk at a time, sending full chunks.
    let mut handed = 0;
    while hand_now(&handoff, [&first, &second][handed % 2], handed) {
        handed += 1;
        assert!(handed <= 100, "handed over more than the room");
    }
    assert_eq!(handed, 100, "refused while there was room");
    let mut taken = false;
    assert!(!handoff.try_hand(&first, 1, |_| taken = true));
    assert!(
        !taken,
        "an outcome was taken though it could not be handed over"
    );
    // Reading what it took does not give room back until the reader looks again.
    let Some(Read::Run(_)) = reader.try_read() else {
        panic!("nothing to read")
    };
    assert!(!hand_now(&handoff, &first, handed));
    while reader.at_hand.pop_front().is_some() {}
    let Some(Read::Run(_)) = reader.try_read() else {
        panic!("nothing to read")
    };
    assert!(hand_now(&handoff, &first, handed));
}

#[test]
fn a_lane_waiting_for_room_stops_waiting_when_the_reader_is_dropped() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (handoff, reader) = handoff::<usize>(4);
        let buffer = handoff.buffer(0);
        for index in 0..4 {
            assert!(hand_now(&handoff, &buffer, index));
        }
        let waiting = handoff.hand(&buffer, vec![outcome(4)]);
        tokio::pin!(waiting);
        let timeout = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(timeout.is_err(), "it did not wait for room");
        drop(reader);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("it waits for room from a reader that is gone");
        // Nothing needs room any more: hand-overs go into nothing.
        assert!(hand_now(&handoff, &buffer, 5));
    });
}

#[test]
fn the_end_comes_after_every_buffered_outcome() {
    let runtime = current_thread();
    runtime.block_on(async {
        let (handoff, mut reader) = handoff::<usize>(1024);
        for (lane, index) in [(0, 0), (1, 1), (2, 2), (1, 3)] {
            assert!(hand_now(&handoff, &handoff.buffer(lane), index));
        }
        handoff.end(None);
        let mut read = read_all(&mut reader).await;
        read.sort();
        assert_eq!(read, [0, 1, 2, 3]);
    });
}

#[test]
fn a_reader_whose_map_is_gone_reads_what_was_handed_over_then_ends() {
    let (handoff, mut reader) = handoff::<usize>(1024);
    assert!(hand_now(&handoff, &handoff.buffer(0), 9));
    let buffer = handoff.buffer(0);
    drop(handoff);
    assert!(matches!(reader.try_read(), Some(Read::Run(run)) if run.index == 9));
    assert!(matches!(reader.try_read(), Some(Read::End(None))));
    drop(buffer);
}

/// One step of a property test: a lane hands an outcome over from its
/// group's buffer, or the reader reads what it can without waiting.
#[derive(Clone, Debug)]
enum Step {
    Hand(usize),
    Read,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![3 => (0..3usize).prop_map(Step::Hand), 1 => Just(Step::Read)]
}

proptest::proptest! {
    /// Any room, any interleaving of three groups' hand-overs and reads:
    /// every outcome handed over is read once, none before those its
    /// buffer took earlier, never more held than the room, and a refused
    /// hand-over takes nothing; at the end, the rest comes before the end.
    #[test]
    fn every_outcome_handed_over_is_read_once_in_its_buffers_order_within_the_room(
        room in 1usize..80,
        steps in proptest::collection::vec(step(), 0..400),
    ) {
        let (handoff, mut reader) = handoff::<usize>(room);
        let buffers: Vec<_> = (0..3).map(|group| handoff.buffer(group)).collect();
        let mut handed: Vec<Vec<usize>> = vec![Vec::new(); 3];
        let mut read: Vec<usize> = Vec::new();
        let mut next = 0;
        for step in steps {
            match step {
                Step::Hand(group) => {
                    let index = next;
                    let mut taken = false;
                    let done = handoff.try_hand(&buffers[group], 1, |into| {
                        taken = true;
                        into.push(outcome(index));
                    });
                    proptest::prop_assert_eq!(done, taken);
                    if done {
                        handed[group].push(index);
                        next += 1;
                    }
                    // Held: handed over and not read.
                    let held = handed.iter().map(Vec::len).sum::<usize>() - read.len();
                    proptest::prop_assert!(held <= room, "{} held, room for {}", held, room);
                }
                Step::Read => {
                    while let Some(Read::Run(run)) = reader.try_read() {
                        read.push(run.index);
                    }
                }
            }
        }
        handoff.end(None);
        loop {
            match reader.try_read() {
                Some(Read::Run(run)) => read.push(run.index),
                Some(Read::End(_)) => break,
                None => {
                    let message = reader.receiver().try_recv().ok();
                    proptest::prop_assert!(message.is_some(), "no end after the last outcome");
                    match reader.read(message) {
                        Some(Read::Run(run)) => read.push(run.index),
                        Some(Read::End(_)) => break,
                        None => {}
                    }
                }
            }
        }
        let mut all: Vec<usize> = handed.concat();
        all.sort_unstable();
        let mut sorted = read.clone();
        sorted.sort_unstable();
        proptest::prop_assert_eq!(sorted, all, "lost or read twice");
        for group in handed {
            let order: Vec<usize> = read.iter().copied().filter(|i| group.contains(i)).collect();
            proptest::prop_assert_eq!(order, group, "a buffer's outcomes out of order");
        }
    }
}

/// A runtime on the test's own thread: lanes and reader take turns.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}
