//! Streaming maps over async streams of inputs (`from_stream`): read as
//! their items come, holding no thread while none has, in both batch
//! modes, with sync and async bodies; zipped with iterators; stopped by a
//! kill switch while the stream has nothing to give; and ended by inputs
//! that panic.

use crate::common::{self, within};

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prefecto::concurrency::StreamStop;
use prefecto::prelude::*;

use crate::streams::{double, double_async, fail_on};

const LIMIT: Duration = Duration::from_secs(60);

#[task]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// A stream of `0..n` whose items come from another task, with a pause
/// every `every` items: the map finds it not ready many times.
pub(crate) fn trickle(n: u64, every: u64) -> futures::channel::mpsc::Receiver<u64> {
    let (mut sender, receiver) = futures::channel::mpsc::channel(4);
    std::thread::spawn(move || {
        futures::executor::block_on(async {
            for x in 0..n {
                if x % every == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if sender.send(x).await.is_err() {
                    return;
                }
            }
        })
    });
    receiver
}

#[flow]
async fn doubles_in_order(mode: BatchMode) -> Vec<(usize, u64)> {
    let batch = BatchTask::new(double_async, 10).unwrap().with_mode(mode);
    let mut stream = batch.stream(from_stream(trickle(300, 7))).unwrap();
    assert_eq!(stream.total(), None);
    let mut outcomes = Vec::new();
    while let Some(run) = stream.next_async().await {
        outcomes.push((run.index, run.result.unwrap()));
    }
    assert!(stream.stop().is_none(), "{:?}", stream.stop());
    outcomes
}

#[test]
fn an_async_stream_is_read_as_its_items_come_in_both_modes() {
    common::quiet();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for mode in [BatchMode::SlidingWindow, BatchMode::Strict] {
        let outcomes = runtime
            .block_on(async {
                tokio::time::timeout(LIMIT, doubles_in_order(mode))
                    .await
                    .expect("the map ended")
            })
            .unwrap();
        let expected: Vec<(usize, u64)> = (0..300).map(|i| (i as usize, i * 2)).collect();
        assert_eq!(outcomes, expected, "{mode:?}");
    }
}

#[flow(max_workers = 1)]
fn sync_bodies_over_a_slow_stream() -> (u64, u64) {
    let batch = BatchTask::new(double, 10).unwrap().sliding_window();
    let mut stream = batch.stream(from_stream(trickle(50, 1))).unwrap();
    let first = stream.next().unwrap().result.unwrap();
    // Needs the pool's only thread, which a lane waiting for the stream's
    // next item must not hold.
    let called = double(21).unwrap();
    let rest: u64 = stream.map(|run| run.result.unwrap()).sum();
    (called, first + rest)
}

#[test]
fn a_sync_map_waiting_for_its_stream_holds_no_pool_thread() {
    common::quiet();
    let (called, sum) = within(LIMIT, "sync bodies over a slow stream", || {
        sync_bodies_over_a_slow_stream().unwrap()
    });
    assert_eq!(called, 42);
    assert_eq!(sum, (0..50).map(|x| x * 2).sum::<u64>());
}

#[flow]
fn a_stream_zipped_with_a_shorter_iterator() -> (usize, Option<StreamStop>) {
    let batch = BatchTask::new(add, 4).unwrap();
    let mut stream = batch.stream(from_stream(trickle(10, 3)), 0..6u64).unwrap();
    let count = stream.by_ref().count();
    (count, stream.stop().cloned())
}

#[test]
fn a_stream_zipped_with_a_shorter_iterator_ends_with_the_error() {
    common::quiet();
    let (count, stop) = within(LIMIT, "a stream and a shorter iterator", || {
        a_stream_zipped_with_a_shorter_iterator().unwrap()
    });
    assert_eq!(count, 6);
    match stop {
        Some(StreamStop::Inputs(MapError::UnequalLengths {
            ended,
            after,
            longer,
        })) => {
            assert_eq!((ended, after, longer), ("b", 6, "a"));
        }
        other => panic!("expected unequal lengths, got {other:?}"),
    }
}

#[flow]
async fn a_switch_trips_while_the_stream_has_nothing() -> (usize, Option<StreamStop>) {
    let batch = BatchTask::new(fail_on, 4)
        .unwrap()
        .with_kill_switch(AnyFailedSwitch::new());
    // Three inputs, then a stream that never gives another.
    let inputs = futures::stream::iter(0..3u64).chain(futures::stream::pending());
    let mut stream = batch.stream(from_stream(inputs), unmapped(1)).unwrap();
    let mut count = 0;
    while stream.next_async().await.is_some() {
        count += 1;
    }
    (count, stream.stop().cloned())
}

#[test]
fn a_kill_switch_stops_a_map_waiting_for_its_stream() {
    common::quiet();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (count, stop) = runtime
        .block_on(async {
            tokio::time::timeout(LIMIT, a_switch_trips_while_the_stream_has_nothing())
                .await
                .expect("the map ended")
        })
        .unwrap();
    assert_eq!(count, 3, "every input read was handed over");
    match stop {
        Some(StreamStop::KillSwitch {
            switch,
            unread_from: Some(3),
            ..
        }) => assert_eq!(switch, "AnyFailedSwitch"),
        other => panic!("expected the switch's stop naming input 3, got {other:?}"),
    }
}

#[flow(max_workers = 2)]
fn sync_bodies_over_a_timed_stream() -> Vec<u64> {
    // Each item comes after a tokio timer: the stream needs the runtime to
    // be polled, from the pool threads that run the bodies too.
    let ticks = futures::stream::unfold(0u64, |i| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        (i < 30).then_some((i, i + 1))
    });
    let batch = BatchTask::new(double, 4).unwrap().sliding_window();
    let stream = batch.stream(from_stream(ticks)).unwrap();
    stream.map(|run| run.result.unwrap()).collect()
}

#[test]
fn a_stream_that_needs_the_runtime_feeds_sync_bodies() {
    common::quiet();
    let doubled = within(LIMIT, "sync bodies over a timed stream", || {
        sync_bodies_over_a_timed_stream().unwrap()
    });
    assert_eq!(doubled, (0..30).map(|x| x * 2).collect::<Vec<u64>>());
}

#[flow(max_workers = 1)]
fn inputs_that_panic(sync_body: bool) -> (Vec<usize>, Option<StreamStop>) {
    let inputs = (0..20u64).inspect(|&x| {
        if x == 7 {
            panic!("the cursor broke");
        }
    });
    let mut stream = match sync_body {
        true => BatchTask::new(double, 3).unwrap().stream(inputs),
        false => BatchTask::new(double_async, 3).unwrap().stream(inputs),
    }
    .unwrap();
    let indexes = stream.by_ref().map(|run| run.index).collect();
    (indexes, stream.stop().cloned())
}

#[test]
fn an_input_iterator_that_panics_ends_the_stream_with_an_error() {
    common::quiet();
    for sync_body in [true, false] {
        let (indexes, stop) = within(LIMIT, "inputs that panic", move || {
            inputs_that_panic(sync_body).unwrap()
        });
        assert_eq!(
            indexes,
            (0..7).collect::<Vec<_>>(),
            "sync body: {sync_body}"
        );
        match stop {
            Some(StreamStop::Inputs(MapError::InputPanicked { after, message })) => {
                assert_eq!((after, message.as_str()), (7, "the cursor broke"));
            }
            other => panic!("expected the inputs' panic, got {other:?}"),
        }
    }
}
