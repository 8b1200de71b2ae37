//! A stream's outcomes are handed over in chunks, but none waits for a
//! chunk to fill while its reader waits: the quick runs' outcomes reach the
//! reader while a run of the same lanes is still running, whatever its
//! body does meanwhile (sleeps on its thread, awaits, or blocks the
//! runtime's thread). The slow run here holds until the reader has read
//! the outcome of every run that finished before it began, those of its
//! own lane too: an outcome held back hangs the test, which then fails at
//! its time limit.

use crate::common::{self, within};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prefecto::prelude::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Inputs per map, and the one that holds.
const INPUTS: u64 = 200;
const HELD: u64 = 150;

/// Per test and input: whether its run finished, and whether its reader read it.
static FINISHED: [[AtomicBool; INPUTS as usize]; 3] =
    [const { [const { AtomicBool::new(false) }; INPUTS as usize] }; 3];
static READ: [[AtomicBool; INPUTS as usize]; 3] =
    [const { [const { AtomicBool::new(false) }; INPUTS as usize] }; 3];

/// Holds run `HELD` until the outcome of every run that finished before it
/// began is read, and marks every other run finished: `wait` waits a
/// millisecond.
async fn hold_or_count<W: Future<Output = ()>>(x: u64, test: u64, wait: impl Fn() -> W) -> u64 {
    let (finished, read) = (&FINISHED[test as usize], &READ[test as usize]);
    if x == HELD {
        let before: Vec<usize> = (0..INPUTS as usize)
            .filter(|&i| finished[i].load(Ordering::SeqCst))
            .collect();
        while !before.iter().all(|&i| read[i].load(Ordering::SeqCst)) {
            wait().await;
        }
    } else {
        finished[x as usize].store(true, Ordering::SeqCst);
    }
    x
}

#[task]
fn held_on_its_thread(x: u64, test: u64) -> u64 {
    let wait = || async { std::thread::sleep(Duration::from_millis(1)) };
    futures::executor::block_on(hold_or_count(x, test, wait))
}

#[task]
async fn held_awaiting(x: u64, test: u64) -> u64 {
    hold_or_count(x, test, || tokio::time::sleep(Duration::from_millis(1))).await
}

/// Blocks the runtime's thread it runs on, as an async body should not.
#[task]
async fn held_blocking(x: u64, test: u64) -> u64 {
    let wait = || async { std::thread::sleep(Duration::from_millis(1)) };
    hold_or_count(x, test, wait).await
}

/// Reads a stream of `INPUTS` inputs, counting into `test`'s count: the
/// indices in the order read. A little slower than the lanes, so that they
/// keep outcomes in their buffers rather than send each to a reader that waits.
fn read_all(stream: MapStream<u64>, test: u64) -> Vec<usize> {
    stream
        .map(|run| {
            std::thread::sleep(Duration::from_micros(50));
            READ[test as usize][run.index].store(true, Ordering::SeqCst);
            run.index
        })
        .collect()
}

fn assert_every_input_read(order: &[usize]) {
    let mut order = order.to_vec();
    order.sort_unstable();
    assert_eq!(order, (0..INPUTS as usize).collect::<Vec<_>>());
}

#[test]
fn quick_outcomes_reach_the_reader_while_a_sync_body_runs_on() {
    common::quiet();
    #[flow]
    fn streamed() -> Vec<usize> {
        let batch = BatchTask::new(held_on_its_thread, 4)
            .unwrap()
            .sliding_window();
        let stream = batch.stream_unordered(0..INPUTS, unmapped(0u64));
        read_all(stream.unwrap(), 0)
    }
    let order = within(LIMIT, "outcomes held back behind a sync body", streamed).unwrap();
    assert_every_input_read(&order);
}

#[test]
fn quick_outcomes_reach_the_reader_while_an_async_body_awaits() {
    common::quiet();
    #[flow]
    fn streamed() -> Vec<usize> {
        let batch = BatchTask::new(held_awaiting, 4).unwrap().sliding_window();
        let stream = batch.stream_unordered(0..INPUTS, unmapped(1u64));
        read_all(stream.unwrap(), 1)
    }
    let order = within(LIMIT, "outcomes held back behind an async body", streamed).unwrap();
    assert_every_input_read(&order);
}

#[test]
fn quick_outcomes_reach_the_reader_while_an_async_body_blocks_its_thread() {
    common::quiet();
    #[flow]
    fn streamed() -> Vec<usize> {
        let batch = BatchTask::new(held_blocking, 4).unwrap().sliding_window();
        let stream = batch.stream_unordered(0..INPUTS, unmapped(2u64));
        read_all(stream.unwrap(), 2)
    }
    let order = within(
        LIMIT,
        "outcomes held back behind a blocking async body",
        streamed,
    )
    .unwrap();
    assert_every_input_read(&order);
}
