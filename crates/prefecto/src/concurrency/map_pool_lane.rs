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
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::batch_mode::BatchMode;
use super::map_queue::LaneNotes;
use super::map_run::{MapRun, Submitted, Taken, Taking};
use super::stream_handoff::Buffer;
use crate::context;
use crate::future::RunShared;
use crate::inputs::RunArgs;
use crate::runner::{LaneEnds, late_running};
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

/// A pool lane: the inputs it has taken and not run yet, in input order,
/// and how many it takes at a time.
struct PoolLane<T: Task> {
    taken: VecDeque<Taken<T>>,
    pace: Pace,
    /// Where it hands a stream's outcomes over.
    buffer: Option<Arc<Buffer<T::Output>>>,
    /// What it tells the queue at its next look.
    notes: LaneNotes<T::Output>,
}

/// How many inputs a pool lane holds at most: one, doubling while its runs
/// are quick, up to its share of the map's size.
struct Pace {
    chunk: usize,
    /// Its share of the map's size: all lanes together never hold more.
    max_chunk: usize,
    /// Since when it counts its runs, and how many it ran since.
    since: Instant,
    runs_since: u32,
}

impl<T: Task> PoolLane<T> {
    fn new(
        first: Option<Taken<T>>,
        chunk: usize,
        max_chunk: usize,
        buffer: Option<Arc<Buffer<T::Output>>>,
    ) -> Self {
        let max_chunk = max_chunk.max(1);
        PoolLane {
            taken: first.into_iter().collect(),
            pace: Pace {
                chunk: chunk.clamp(1, max_chunk),
                max_chunk,
                since: Instant::now(),
                runs_since: 0,
            },
            buffer,
            notes: LaneNotes::default(),
        }
    }

    /// Whether it is time to top its inputs up: half of them are run.
    fn running_low(&self) -> bool {
        self.pace.chunk > 1 && self.taken.len() <= self.pace.chunk / 2
    }
}

impl Pace {
    /// How many inputs to hold from now on, from how long the runs since
    /// the last time it took inputs took.
    fn adapt(&mut self) -> usize {
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
}

/// Why a pool lane left its thread: what it does on the runtime before it
/// goes on.
enum Detour<T: Task> {
    /// An input whose arguments come from runs not finished yet: wait for them.
    Resolve(Taken<T>),
    /// An outcome the stream's reader has no room for yet: hand it over.
    HandOver(usize, Arc<RunShared<T::Output>>),
    /// The stream's span was full, or the slice ran out: go on, waiting
    /// for room if need be.
    Next,
    /// No input is left for it.
    End,
}

impl<T: Task> MapRun<T> {
    /// Starts a pool lane for each of the inputs taken first, sharing the
    /// map's size between them: together they never hold more. A lane
    /// without one waits on the runtime for a stream's first input.
    pub(super) fn start_pool_lanes(self: &Arc<Self>, firsts: Vec<Option<Taken<T>>>) {
        let share = self.size / firsts.len().max(1);
        let chunk = self.pool_chunk.load(Ordering::Relaxed);
        for (index, first) in firsts.into_iter().enumerate() {
            let waiting = first.is_none();
            let lane = PoolLane::new(first, chunk, share, self.lane_buffer(index));
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
                        self.run_inputs(Some(taken), lane.buffer.as_deref(), None)
                            .await;
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
        // The flow run is this thread's for the whole slice, not set and
        // reset around each body.
        let detour = context::with_thread_context(self.ctx.clone(), || {
            late_running::watching(&self.ctx, self.task.spec(), || self.run_slice(&mut lane))
        });
        // A lane with no input left ends here, with no trip to the runtime:
        // in strict mode every batch ends so. Not when the map has stopped:
        // the last lane then records the inputs never submitted, on the runtime.
        if matches!(detour, Detour::End) && !self.stopped() {
            self.pool_chunk.store(lane.pace.chunk, Ordering::Relaxed);
            if self.lanes_running.fetch_sub(1, Ordering::AcqRel) > 1 {
                return;
            }
            if !self.stopped() {
                if !self.begin_next_batch() {
                    self.lanes_done.notify_one();
                }
                return;
            }
            // It stopped meanwhile: count this lane in again, to end it there.
            self.lanes_running.fetch_add(1, Ordering::AcqRel);
        }
        let ctx = self.ctx.clone();
        ctx.tracker
            .spawn_on(self.off_pool(detour, lane), &ctx.handle);
    }

    /// Runs the lane's inputs until it has to leave its thread, and says why.
    fn run_slice(self: &Arc<Self>, lane: &mut PoolLane<T>) -> Detour<T> {
        let slice_end = Instant::now() + SLICE;
        let mut runs = 0u32;
        // The ends of its quick runs, handed over as the slice ends (dropped).
        let mut ends = LaneEnds::new(&self.ctx);
        loop {
            // Topped up early, if no other lane is looking at the queue, so
            // that it seldom has to wait for one when it runs out.
            if lane.running_low() {
                let _runtime = self.ctx.handle.enter();
                let pace = &mut lane.pace;
                self.take_many(|| pace.adapt(), &mut lane.taken, false, &mut lane.notes);
            }
            let Some((position, run, submitted)) = lane.taken.pop_front() else {
                // An async stream of inputs may need the runtime to be read.
                let _runtime = self.ctx.handle.enter();
                let pace = &mut lane.pace;
                match self.take_many(|| pace.adapt(), &mut lane.taken, true, &mut lane.notes) {
                    _ if !lane.taken.is_empty() => continue,
                    Taking::Full => break Detour::Next,
                    _ => break Detour::End,
                }
            };
            let args = match submitted {
                Submitted::Args(RunArgs::Ready(args)) => args,
                waiting => break Detour::Resolve((position, run, waiting)),
            };
            self.task_run(&run).run_inline(args, &mut ends);
            self.observe(&run);
            if !self.deliver_now(
                position,
                &run,
                lane.buffer.as_deref(),
                Some(&mut lane.notes),
            ) {
                break Detour::HandOver(position, run);
            }
            lane.notes.ended(position, run);
            runs += 1;
            lane.pace.runs_since += 1;
            // Slow runs (taken one at a time) look every time.
            if (lane.pace.chunk == 1 || runs.is_multiple_of(RUNS_PER_LOOK))
                && Instant::now() >= slice_end
            {
                break Detour::Next;
            }
        }
    }

    /// The last lane of a strict batch begins the next batch here, on its
    /// pool thread: no trip to the map's task on the runtime and back
    /// between batches. False if no batch follows for sure (the inputs
    /// ended, or a stream's next has not come), or the map stopped: the
    /// map's task then takes over.
    fn begin_next_batch(self: &Arc<Self>) -> bool {
        if self.mode != BatchMode::Strict || self.stopped() {
            return false;
        }
        // An async stream of inputs may need the runtime to be read.
        let _runtime = self.ctx.handle.enter();
        {
            let mut queue = self.queue();
            if queue.exhausted || queue.inputs.poll_has_more() != Poll::Ready(true) {
                return false;
            }
        }
        let end = self.begin_batch();
        let firsts = self.take_firsts(end);
        if firsts.is_empty() {
            return false;
        }
        self.start_pool_lanes(firsts);
        true
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
                        task_run.drive_started(*started).await;
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
                        self.deliver(position, &run, lane.buffer.as_deref()).await;
                    }
                }
            }
            Detour::HandOver(position, run) => {
                self.deliver(position, &run, lane.buffer.as_deref()).await
            }
            Detour::Next | Detour::End => {}
        }
        if lane.taken.is_empty() {
            match self.take_next_waiting(&mut lane.notes).await {
                Some(taken) => lane.taken.push_back(taken),
                None => return self.end_lane().await,
            }
        }
        self.to_pool(lane);
    }
}
