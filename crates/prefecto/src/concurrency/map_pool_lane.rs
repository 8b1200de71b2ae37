//! Pool lanes: the lanes of a map whose sync task runs inline
//! ([`runs_inline`](crate::runner::runs_inline)).
//!
//! A pool lane takes an input from the map's queue on a thread of the flow
//! run's pool, runs the body there, and takes the next: no channel, no
//! wake-up and no task per run. It leaves its thread for the runtime
//! whenever it would wait (for an input's upstream runs, a stream's reader,
//! room in a stream's span) and every few milliseconds, so that bodies
//! queued on the pool behind it (other runs of the flow, a task its
//! stream's reader calls) get a thread; it queues again once it can go on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::map_run::{MapRun, Next, Submitted, Taken};
use crate::future::RunShared;
use crate::inputs::RunArgs;
use crate::task::Task;

/// How long a pool lane keeps its thread before it queues again behind
/// whatever else waits for one.
const SLICE: Duration = Duration::from_millis(10);

/// Quick runs between two looks at the clock: a look costs as much as a run.
const RUNS_PER_LOOK: u32 = 32;

/// Runs this quick take their inputs several at a time: one look at the
/// queue for many runs, so that lanes seldom wait for each other there.
/// Slower ones take one at a time, so that none waits behind a slow run on
/// its lane while another lane could run it.
const QUICK: Duration = Duration::from_micros(20);

/// A pool lane: the inputs it has taken and not run yet, in input order.
struct PoolLane<T: Task> {
    taken: VecDeque<Taken<T>>,
    /// How many inputs it holds at most now: one, doubling while runs are
    /// quick, up to `max_chunk`.
    chunk: usize,
    /// Its share of the map's size: all lanes together never hold more.
    max_chunk: usize,
    /// Since when it counts its runs, and how many it ran since.
    since: Instant,
    runs_since: u32,
}

impl<T: Task> PoolLane<T> {
    fn new(first: Option<Taken<T>>, max_chunk: usize) -> Self {
        PoolLane {
            taken: first.into_iter().collect(),
            chunk: 1,
            max_chunk: max_chunk.max(1),
            since: Instant::now(),
            runs_since: 0,
        }
    }

    /// How many inputs to hold from now on, from how long the runs since
    /// the last look took.
    fn adapt_chunk(&mut self) -> usize {
        let now = Instant::now();
        if self.runs_since > 0 {
            let quick = now.duration_since(self.since) < QUICK * self.runs_since;
            self.chunk = match quick {
                true => (self.chunk * 2).min(self.max_chunk),
                false => 1,
            };
        }
        (self.since, self.runs_since) = (now, 0);
        self.chunk
    }

    /// Whether it is time to top its inputs up: half of them are run.
    fn running_low(&self) -> bool {
        self.chunk > 1 && self.taken.len() <= self.chunk / 2
    }
}

/// Why a pool lane left its thread: what it does on the runtime before it
/// goes on.
enum Detour<T: Task> {
    /// An input whose arguments come from runs not finished yet: wait for them.
    Resolve(Taken<T>),
    /// An outcome the stream's reader has no room for yet: finish handing it over.
    HandOver(BoxFuture<'static, ()>),
    /// The stream's span was full, or the slice ran out: go on, waiting
    /// for room if need be.
    Next,
    /// No input is left for it.
    End,
}

impl<T: Task> MapRun<T> {
    /// Starts a pool lane for each of the inputs taken first, sharing `size`
    /// between them: together they never hold more. A lane without one
    /// waits on the runtime for a stream's first input.
    pub(super) fn start_pool_lanes(self: &Arc<Self>, firsts: Vec<Option<Taken<T>>>, size: usize) {
        let share = size / firsts.len().max(1);
        for first in firsts {
            let waiting = first.is_none();
            let lane = PoolLane::new(first, share);
            match waiting {
                true => {
                    let off_pool = self.clone().off_pool(Detour::Next, lane);
                    self.ctx.tracker.spawn_on(off_pool, &self.ctx.handle);
                }
                false => self.clone().to_pool(lane),
            }
        }
    }

    /// Queues a pool lane on the pool. From the runtime, so that it queues
    /// behind what is queued already.
    fn to_pool(self: Arc<Self>, mut lane: PoolLane<T>) {
        let ctx = self.ctx.clone();
        match ctx.pool() {
            Ok(pool) => pool.spawn(move || self.pool_lane(lane)),
            // Not while the pool runs: a map runs inline only once it has.
            Err(_) => {
                let handle = ctx.handle.clone();
                let lane_inputs = async move {
                    while let Some(taken) = lane.taken.pop_front() {
                        self.run_inputs(Some(taken)).await;
                    }
                    self.end_lane().await;
                };
                ctx.tracker.spawn_on(lane_inputs, &handle);
            }
        }
    }

    /// Runs inputs on this pool thread until the lane has to wait, its
    /// slice runs out, or no input is left; then goes to the runtime.
    fn pool_lane(self: Arc<Self>, mut lane: PoolLane<T>) {
        let slice_end = Instant::now() + SLICE;
        let mut runs = 0u32;
        let detour = loop {
            // Topped up early, if no other lane is looking at the queue, so
            // that it seldom has to wait for one when it runs out.
            if lane.running_low() {
                let chunk = lane.adapt_chunk();
                let _runtime = self.ctx.handle.enter();
                self.take_many(chunk, &mut lane.taken, false);
            }
            let Some((position, run, submitted)) = lane.taken.pop_front() else {
                let chunk = lane.adapt_chunk();
                // An async stream of inputs may need the runtime to be read.
                let _runtime = self.ctx.handle.enter();
                match self.take_many(chunk, &mut lane.taken, true) {
                    None => continue,
                    Some(Next::Full) => break Detour::Next,
                    Some(_) => break Detour::End,
                }
            };
            let args = match submitted {
                Submitted::Args(RunArgs::Ready(args)) => args,
                waiting => break Detour::Resolve((position, run, waiting)),
            };
            self.task_run(&run).run_inline(args);
            self.observe(&run);
            if self.delivery.is_some()
                && let Some(rest) = self.clone().hand_over_now(position, run)
            {
                break Detour::HandOver(rest);
            }
            runs += 1;
            lane.runs_since += 1;
            // Slow runs (taken one at a time) look every time.
            if (lane.chunk == 1 || runs % RUNS_PER_LOOK == 0) && Instant::now() >= slice_end {
                break Detour::Next;
            }
        };
        let ctx = self.ctx.clone();
        ctx.tracker
            .spawn_on(self.off_pool(detour, lane), &ctx.handle);
    }

    /// Hands a stream's outcome over, if the reader has room for it now;
    /// else returns the rest of the hand-over, to finish on the runtime.
    fn hand_over_now(
        self: Arc<Self>,
        position: usize,
        run: Arc<RunShared<T::Output>>,
    ) -> Option<BoxFuture<'static, ()>> {
        let mut rest: BoxFuture<'static, ()> =
            Box::pin(async move { self.deliver(position, &run).await });
        // Polled again, with a real waker, on the runtime if it is not done.
        let mut cx = Context::from_waker(Waker::noop());
        match rest.as_mut().poll(&mut cx) {
            Poll::Ready(()) => None,
            Poll::Pending => Some(rest),
        }
    }

    /// Waits on the runtime for what the lane could not wait for on its
    /// thread, then queues it on the pool again, or counts it out.
    async fn off_pool(self: Arc<Self>, detour: Detour<T>, mut lane: PoolLane<T>) {
        match detour {
            Detour::Resolve((position, run, submitted)) => {
                let task_run = self.task_run(&run);
                let ready = match submitted {
                    Submitted::Args(args) => task_run.inputs_ready(args).await,
                    // Not made for a map that runs inline; driven here if it was.
                    Submitted::Started(started) => {
                        task_run.drive_started(started).await;
                        None
                    }
                };
                match ready {
                    Some(args) => {
                        let ready = Submitted::Args(RunArgs::Ready(args));
                        lane.taken.push_front((position, run.clone(), ready));
                    }
                    // It ended without running: cancelled, or an upstream run did not complete.
                    None => {
                        self.observe(&run);
                        self.deliver(position, &run).await;
                    }
                }
            }
            Detour::HandOver(rest) => rest.await,
            Detour::Next | Detour::End => {}
        }
        if lane.taken.is_empty() {
            match self.take_next_waiting().await {
                Some(taken) => lane.taken.push_back(taken),
                None => return self.end_lane().await,
            }
        }
        self.to_pool(lane);
    }
}
