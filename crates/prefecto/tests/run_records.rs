//! A collecting map makes its next runs in the records of runs it keeps by
//! value, and its strict batches of async bodies start a lane per runtime
//! thread, not per input: a quick map of 200,000 inputs allocates far less
//! than once per input. Counted by a counting allocator in a binary of its
//! own (nothing here is timed).
//!
//! Not streams: their outcomes go to the reader a chunk to a message, and
//! how full the chunks are depends on how busy the host is (a sync stream
//! measured 0.04-0.09 allocations per input, and 0.15-0.19 while another
//! build ran). How many records a stream keeps for its next runs is tested
//! with `Spares`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use prefecto::Prefecto;
use prefecto::prelude::*;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

#[task]
fn double(x: u64) -> u64 {
    x * 2
}

#[task]
async fn double_async(x: u64) -> u64 {
    x * 2
}

const INPUTS: u64 = 200_000;

#[flow]
async fn collected(sync_body: bool) -> u64 {
    let futures = match sync_body {
        true => {
            let batch = BatchTask::new(double, 100).unwrap().sliding_window();
            batch.map_async(0..INPUTS).await
        }
        false => {
            let batch = BatchTask::new(double_async, 100).unwrap().sliding_window();
            batch.map_async(0..INPUTS).await
        }
    };
    futures.unwrap().results_async().await.unwrap().iter().sum()
}

#[flow]
async fn strict_batches() -> u64 {
    let batch = BatchTask::new(double_async, 100).unwrap();
    let futures = batch.map_async(0..INPUTS).await;
    futures.unwrap().results_async().await.unwrap().iter().sum()
}

/// Allocations per input of `map`, run in a set-up with no history, logs
/// or progress bar, after a first run that warms the runtime and the pools.
fn allocations_per_input(map: impl Fn() -> u64) -> f64 {
    let engine_only = Prefecto::builder().engine_only().build().unwrap();
    let expected = INPUTS * (INPUTS - 1);
    engine_only.scope(|| {
        assert_eq!(map(), expected);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(map(), expected);
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / INPUTS as f64
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A collecting window keeps each run by value and makes its next run in
/// the record: 0.001-0.014 measured, against the list of futures it grows.
const COLLECTED: f64 = 0.05;

/// A strict batch of 100 quick async bodies: its lists, its lanes and
/// their tasks, a dozen or so allocations a batch (0.15 measured; with a
/// lane per input, made and dropped each batch, 2.18).
const STRICT: f64 = 0.5;

// The only test of this binary: no other test's allocations are counted.
#[test]
fn a_collecting_map_makes_its_runs_in_the_records_of_runs_it_keeps_by_value() {
    let runtime = runtime();
    for sync_body in [true, false] {
        let per_input = allocations_per_input(|| runtime.block_on(collected(sync_body)).unwrap());
        assert!(
            per_input < COLLECTED,
            "sync body {sync_body}: {per_input:.3} allocations per input"
        );
    }
    let per_input = allocations_per_input(|| runtime.block_on(strict_batches()).unwrap());
    assert!(
        per_input < STRICT,
        "strict batches: {per_input:.3} allocations per input"
    );
}
