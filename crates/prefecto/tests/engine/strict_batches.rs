//! Strict batches of async bodies start a lane per runtime thread and
//! another each time a lane's body waits: a batch whose bodies all wait
//! still runs every one of them at once, and never more than its size.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prefecto::concurrency::BatchTask;
use prefecto::prelude::*;

const SIZE: usize = 10;
const INPUTS: usize = 35;

/// What the bodies of each batch saw.
#[derive(Default)]
struct Meeting {
    /// How many bodies of each batch have started.
    arrived: [AtomicUsize; INPUTS.div_ceil(SIZE)],
    running: AtomicUsize,
    max_running: AtomicUsize,
}

/// Waits until every body of its batch has started (or 20 s went by), and
/// says whether they all did: they can only if the batch runs them at once.
#[task]
async fn meet(i: usize, meeting: Arc<Meeting>) -> bool {
    let running = meeting.running.fetch_add(1, Ordering::SeqCst) + 1;
    meeting.max_running.fetch_max(running, Ordering::SeqCst);
    let batch = i / SIZE;
    let members = SIZE.min(INPUTS - batch * SIZE);
    meeting.arrived[batch].fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let met = loop {
        if meeting.arrived[batch].load(Ordering::SeqCst) >= members {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    meeting.running.fetch_sub(1, Ordering::SeqCst);
    met
}

#[flow]
async fn meetings(meeting: Arc<Meeting>) -> Vec<bool> {
    let batch = BatchTask::new(meet, SIZE).unwrap();
    let futures = batch.map_async(0..INPUTS, unmapped(meeting)).await;
    futures.unwrap().results_async().await.unwrap()
}

#[test]
fn a_strict_batch_whose_bodies_all_wait_runs_them_all_at_once_and_no_more() {
    common::quiet();
    // Two runtime threads: two lanes start each batch, the rest as bodies wait.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let meeting = Arc::new(Meeting::default());
    let met = runtime.block_on(meetings(meeting.clone())).unwrap();
    assert_eq!(met, vec![true; INPUTS], "every body met its whole batch");
    assert_eq!(meeting.max_running.load(Ordering::SeqCst), SIZE);
}
