//! Streaming maps (`BatchTask::stream`, `stream_unordered`): inputs read
//! lazily, outcomes handed over as they are ready, memory bounded by the
//! window and the read-ahead, and every input accounted for when a kill
//! switch, a dropped stream or bad inputs stop the map.

use crate::common::{self, within};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use prefecto::concurrency::{StreamStop, StreamedRun};
use prefecto::prelude::*;
use proptest::prelude::*;

const LIMIT: Duration = Duration::from_secs(60);

#[task]
pub(crate) fn double(x: u64) -> u64 {
    x * 2
}

#[task]
pub(crate) async fn double_async(x: u64) -> u64 {
    x * 2
}

#[task]
pub(crate) fn fail_on(x: u64, bad: u64) -> Result<u64, String> {
    if x == bad {
        Err(format!("{x} is bad"))
    } else {
        Ok(x)
    }
}

#[task]
async fn slow_first(x: u64) -> u64 {
    if x == 0 {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    x
}

/// An iterator that counts what the map has read from it.
fn counted(n: u64, read: Arc<AtomicUsize>) -> impl Iterator<Item = u64> + Send + 'static {
    (0..n).inspect(move |_| {
        read.fetch_add(1, Ordering::SeqCst);
    })
}

fn indexes<T>(runs: &[StreamedRun<T>]) -> Vec<usize> {
    runs.iter().map(|r| r.index).collect()
}

#[test]
fn a_stream_in_input_order_gives_every_outcome_in_order() {
    common::quiet();
    #[flow]
    fn doubled(window: bool) -> Vec<(usize, u64)> {
        let batch = BatchTask::new(double, 7).unwrap();
        let batch = if window {
            batch.sliding_window()
        } else {
            batch
        };
        let stream = batch.stream(0..10_000u64).unwrap();
        assert_eq!(stream.total(), Some(10_000));
        stream.map(|r| (r.index, r.result.unwrap())).collect()
    }
    for window in [false, true] {
        let out = within(LIMIT, "a stream of 10,000", move || doubled(window)).unwrap();
        let expected: Vec<(usize, u64)> = (0..10_000).map(|i| (i, 2 * i as u64)).collect();
        assert_eq!(out, expected, "window: {window}");
    }
}

#[test]
fn an_unordered_stream_gives_every_outcome_once_and_a_straggler_holds_back_only_its_own() {
    common::quiet();
    #[flow]
    async fn first_outcomes() -> Vec<usize> {
        let batch = BatchTask::new(slow_first, 4).unwrap().sliding_window();
        let stream = batch.stream_unordered(0..50u64).unwrap().into_stream();
        stream.map(|r| r.index).collect().await
    }
    let order = within(LIMIT, "an unordered stream", || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(first_outcomes())
    })
    .unwrap();
    assert_eq!(order.iter().copied().collect::<BTreeSet<_>>().len(), 50);
    assert_eq!(order.len(), 50);
    assert_ne!(order[0], 0, "input 0 sleeps: others come first ({order:?})");
    assert_eq!(*order.last().unwrap(), 0, "{order:?}");
}

#[test]
fn a_stream_reads_no_further_ahead_than_size_plus_read_ahead() {
    common::quiet();
    #[flow]
    fn bounded(read: Arc<AtomicUsize>) -> usize {
        let batch = BatchTask::new(double, 4)
            .unwrap()
            .sliding_window()
            .with_read_ahead(8);
        let mut stream = batch.stream(counted(2_000, read.clone())).unwrap();
        let mut handed = 0;
        let mut worst = 0;
        // A slow reader: the map must wait for it rather than read on.
        for run in stream.by_ref() {
            assert_eq!(run.index, handed);
            handed += 1;
            std::thread::sleep(Duration::from_micros(200));
            worst = worst.max(read.load(Ordering::SeqCst) - handed);
        }
        assert_eq!(handed, 2_000);
        worst
    }
    let read = Arc::new(AtomicUsize::new(0));
    let worst = within(LIMIT, "a slow reader", move || bounded(read)).unwrap();
    // Held (on their way to the reader too): size + read-ahead; in the
    // stream's buffer: as many; one peeked.
    assert!(
        worst <= 2 * (4 + 8) + 1,
        "read {worst} inputs ahead of the reader"
    );
}

/// Streams 100 inputs through a kill switch that trips on input 3.
#[flow]
fn stopped_at_input_3(window: bool) -> (Vec<StreamedRun<u64>>, Option<StreamStop>) {
    // A span of 3 (2 running, 1 read ahead): no input is taken 3 past
    // one the switch has not seen, however the threads are scheduled.
    let batch = BatchTask::new(fail_on, 2)
        .unwrap()
        .with_read_ahead(1)
        .with_kill_switch(AnyFailedSwitch::new());
    let batch = if window {
        batch.sliding_window()
    } else {
        batch
    };
    let mut stream = batch.stream(0..100u64, unmapped(3)).unwrap();
    let runs: Vec<_> = stream.by_ref().collect();
    (runs, stream.stop().cloned())
}

#[test]
fn a_kill_switch_stops_a_stream_and_every_input_is_handed_over() {
    common::quiet();
    for window in [false, true] {
        let (runs, stop) = within(LIMIT, "a stopped stream", move || {
            stopped_at_input_3(window)
        })
        .unwrap();
        assert_stopped_at_the_failure(&runs, stop, window);
    }
}

/// Shows its maps' finished runs slowly when they failed: the lane that
/// finished one shows it to the switch late, while other lanes go on.
struct SlowOnFailure;

impl prefecto::ProgressDisplay for SlowOnFailure {
    fn start_map(
        &self,
        _task: &str,
        _total: Option<usize>,
        _batches: usize,
    ) -> Option<Arc<dyn prefecto::MapProgress>> {
        Some(Arc::new(SlowOnFailure))
    }
}

impl prefecto::MapProgress for SlowOnFailure {
    fn run_finished(&self, state: &State) {
        if state.is_failed() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_stream_never_hands_over_a_run_before_its_lane_showed_it_to_the_switch() {
    common::quiet();
    // Two threads, so that another lane runs while the failed run's lane
    // is slow to show it to the switch.
    let prefecto = Arc::new(
        Prefecto::builder()
            .engine_only()
            .max_workers(2)
            .progress_display(Arc::new(SlowOnFailure))
            .build()
            .unwrap(),
    );
    for window in [false, true] {
        let (runs, stop) = within(LIMIT, "a stream with a slow switch", {
            let prefecto = prefecto.clone();
            move || prefecto.scope(|| stopped_at_input_3(window))
        })
        .unwrap();
        assert_stopped_at_the_failure(&runs, stop, window);
    }
}

/// Every one of the 100 inputs handed over; input 3 failed, and the switch
/// stopped the map within its span of 3 of it.
fn assert_stopped_at_the_failure(
    runs: &[StreamedRun<u64>],
    stop: Option<StreamStop>,
    window: bool,
) {
    assert_eq!(
        indexes(runs),
        (0..100).collect::<Vec<_>>(),
        "window: {window}"
    );
    let failed = &runs[3].result.as_ref().unwrap_err().state;
    assert!(failed.is_failed(), "{failed:?}");
    // Inputs 0 to 5 at most were taken before the switch saw input 3.
    let cancelled = runs
        .iter()
        .filter(|r| r.result.as_ref().is_err_and(|e| e.state.is_cancelled()))
        .count();
    let states: Vec<String> = runs
        .iter()
        .map(|r| match &r.result {
            Ok(_) => "Completed".to_string(),
            Err(e) => e.state.name().to_string(),
        })
        .collect();
    assert!(
        cancelled >= 94,
        "window: {window}: {cancelled} cancelled: {states:?}"
    );
    match stop {
        Some(StreamStop::KillSwitch {
            switch,
            unread_from: None,
            ..
        }) => assert_eq!(switch, "AnyFailedSwitch"),
        other => panic!("expected the switch's stop, got {other:?}"),
    }
}

#[test]
fn an_endless_stream_stops_on_its_switch_and_names_the_first_unread_input() {
    common::quiet();
    #[flow]
    fn endless() -> (usize, Option<StreamStop>, uuid::Uuid) {
        let batch = BatchTask::new(fail_on, 3)
            .unwrap()
            .with_kill_switch(AnyFailedSwitch::new());
        let mut stream = batch.stream(0u64.., unmapped(10)).unwrap();
        assert_eq!(stream.total(), None);
        let count = stream.by_ref().count();
        (count, stream.stop().cloned(), common::flow_run_id())
    }
    let (count, stop, flow_run) = within(LIMIT, "an endless stream", endless).unwrap();
    let Some(StreamStop::KillSwitch {
        unread_from: Some(first),
        ..
    }) = stop
    else {
        panic!("expected the switch's stop naming the unread inputs, got {stop:?}");
    };
    assert_eq!(count, first, "every input read was handed over");
    let logs = common::Recording::installed().logs(flow_run);
    let unread: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("were never read"))
        .collect();
    assert_eq!(unread.len(), 1, "said once: {unread:?}");
    assert!(
        unread[0].contains(&format!("from #{first} on")),
        "{unread:?}"
    );
    assert!((11..=13).contains(&first), "{first}");
}

#[test]
fn iterators_of_unequal_lengths_end_the_stream_with_the_error() {
    common::quiet();
    #[flow]
    fn unequal() -> (usize, Option<StreamStop>) {
        let batch = BatchTask::new(fail_on, 4).unwrap();
        let mut stream = batch
            .stream((0..10u64).filter(|_| true), vec![99u64; 6])
            .unwrap();
        let count = stream.by_ref().count();
        (count, stream.stop().cloned())
    }
    let (count, stop) = within(LIMIT, "unequal inputs", unequal).unwrap();
    assert_eq!(count, 6);
    let stop = stop.expect("the stream says why it stopped");
    assert_eq!(
        stop.to_string(),
        "The map's inputs went wrong: 'bad' ran out after 6 input(s) while 'x' had more: \
         the mapped iterables must have equal lengths."
    );
    // Lengths known up front are refused before anything runs.
    #[flow]
    fn refused() -> String {
        let batch = BatchTask::new(fail_on, 4).unwrap();
        batch
            .stream(0..10u64, vec![1u64; 3])
            .unwrap_err()
            .to_string()
    }
    assert_eq!(
        refused().unwrap(),
        "Expected all iterables to be of length 3 like 'bad'. 'x' is length 10."
    );
}

#[test]
fn dropping_a_stream_cancels_its_map_and_the_flow_ends() {
    common::quiet();
    #[task]
    async fn sleepy(x: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        x
    }
    #[flow]
    fn dropped() -> usize {
        let batch = BatchTask::new(sleepy, 4).unwrap().sliding_window();
        let mut stream = batch.stream(0..1_000_000u64).unwrap();
        let taken = stream.by_ref().take(10).count();
        drop(stream);
        taken
    }
    assert_eq!(within(LIMIT, "a dropped stream", dropped).unwrap(), 10);
}

#[test]
fn a_stream_left_unread_when_the_flow_returns_does_not_hang_it() {
    common::quiet();
    #[flow]
    fn forgotten() -> u8 {
        let batch = BatchTask::new(double, 4).unwrap().sliding_window();
        let stream = batch.stream(0..1_000_000u64).unwrap();
        // Neither read nor dropped: its map fills its buffer and waits.
        std::mem::forget(stream);
        1
    }
    assert_eq!(within(LIMIT, "a forgotten stream", forgotten).unwrap(), 1);
}

#[test]
fn async_bodies_stream_in_an_async_flow() {
    common::quiet();
    #[flow]
    async fn sum() -> u64 {
        let batch = BatchTask::new(double_async, 16).unwrap();
        let mut stream = batch.stream(0..5_000u64).unwrap();
        let mut total = 0;
        while let Some(run) = stream.next_async().await {
            total += run.result.unwrap();
        }
        total
    }
    let total = within(LIMIT, "an async stream", || {
        tokio::runtime::Runtime::new().unwrap().block_on(sum())
    })
    .unwrap();
    assert_eq!(total, (0..5_000u64).map(|x| x * 2).sum::<u64>());
}

/// One case of the property below.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: u64,
    size: usize,
    read_ahead: usize,
    window: bool,
    ordered: bool,
    switch: bool,
    bad: u64,
    /// The inputs come from an async stream that is not ready at every third look.
    hesitant: bool,
}

/// An iterator's items as an async stream that is not ready at every third
/// poll (and asks at once to be polled again): the map must wait and come back.
struct Hesitant<I> {
    inputs: I,
    polls: u32,
}

impl<I: Iterator + Unpin> futures::Stream for Hesitant<I> {
    type Item = I::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        self.polls += 1;
        if self.polls.is_multiple_of(3) {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(self.inputs.next())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inputs.size_hint()
    }
}

/// Streams `fail_on` over `case.n` inputs: what was handed over (index,
/// completed), how far ahead of the reader the map read at worst, and why
/// it stopped.
#[flow]
fn streamed(case: Case, read: Arc<AtomicUsize>) -> (Vec<(usize, bool)>, usize, Option<StreamStop>) {
    let mut batch = BatchTask::new(fail_on, case.size)
        .unwrap()
        .with_read_ahead(case.read_ahead);
    if case.window {
        batch = batch.sliding_window();
    }
    if case.switch {
        batch = batch.with_kill_switch(AnyFailedSwitch::new());
    }
    let inputs = counted(case.n, read.clone());
    let mut stream = match (case.hesitant, case.ordered) {
        (false, true) => batch.stream(inputs, unmapped(case.bad)),
        (false, false) => batch.stream_unordered(inputs, unmapped(case.bad)),
        (true, ordered) => {
            let inputs = from_stream(Hesitant { inputs, polls: 0 });
            match ordered {
                true => batch.stream(inputs, unmapped(case.bad)),
                false => batch.stream_unordered(inputs, unmapped(case.bad)),
            }
        }
    }
    .unwrap();
    let mut seen = Vec::new();
    let mut worst = 0;
    for run in stream.by_ref() {
        seen.push((run.index, run.result.is_ok()));
        worst = worst.max(read.load(Ordering::SeqCst).saturating_sub(seen.len()));
    }
    (seen, worst, stream.stop().cloned())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any size, read-ahead, mode, order, failure and source (an iterator,
    /// or a stream not always ready): every input is handed
    /// over once, in input order when asked, never read further ahead of the
    /// reader than the bound, and a switch stops it where it should.
    #[test]
    fn every_input_is_handed_over_once_within_the_bound(
        n in 0u64..300,
        size in 1usize..12,
        read_ahead in 1usize..20,
        window: bool,
        ordered: bool,
        switch: bool,
        bad in 0u64..400,
        hesitant: bool,
    ) {
        common::quiet();
        let case = Case { n, size, read_ahead, window, ordered, switch, bad, hesitant };
        let read = Arc::new(AtomicUsize::new(0));
        let (seen, worst, stop) =
            within(LIMIT, "a streaming map", move || streamed(case, read)).unwrap();
        // A stop may leave a stream's inputs unread (it is not drained while
        // not ready): every input before the first unread one is handed over.
        let unread_from = match &stop {
            Some(StreamStop::KillSwitch { unread_from, .. }) => *unread_from,
            _ => None,
        };
        prop_assert!(unread_from.is_none() || hesitant, "{:?}", stop);
        let handed = unread_from.unwrap_or(n as usize);
        let mut positions: Vec<usize> = seen.iter().map(|s| s.0).collect();
        if ordered {
            prop_assert_eq!(&positions, &(0..handed).collect::<Vec<_>>());
        }
        positions.sort_unstable();
        prop_assert_eq!(positions, (0..handed).collect::<Vec<_>>());
        // Held (on their way to the reader too): size + read-ahead; in the
        // stream's buffer: as many; one peeked.
        prop_assert!(worst <= 2 * (size + read_ahead) + 1, "read {} ahead", worst);
        let tripped = switch && bad < n;
        prop_assert_eq!(stop.is_some(), tripped, "{:?}", stop);
        for &(index, ok) in &seen {
            if !tripped {
                prop_assert_eq!(ok, index as u64 != bad);
            } else if index as u64 == bad {
                prop_assert!(!ok);
            }
        }
    }
}
