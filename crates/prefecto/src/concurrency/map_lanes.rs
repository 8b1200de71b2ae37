//! The lanes of a [`MapRun`]: how a map submits its inputs, a batch or a
//! window at a time, and how an async lane drives its runs. Sync bodies
//! that run inline go on pool lanes instead (`map_pool_lane`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::stream::{FuturesUnordered, StreamExt};

use super::batch_mode::BatchMode;
use super::lane_group::GroupTake;
use super::map_queue::LaneNotes;
use super::map_run::{MapRun, Next, Submitted, Taken, Taking};
use super::stream_handoff::Buffer;
use crate::context;
use crate::inputs::RunArgs;
use crate::runner::LaneEnds;
use crate::task::Task;

impl<T: Task> MapRun<T> {
    /// Submits up to `size` inputs at once, each on a lane of its own that
    /// then takes further inputs up to `end` (a collecting map's strict
    /// batch of async bodies: a lane per runtime thread, and more as bodies
    /// wait; see `starts_lanes_as_bodies_wait`), and waits until every lane
    /// has ended.
    pub(super) async fn run_lanes(self: &Arc<Self>, end: usize) {
        let mut firsts = self.take_firsts(end);
        if firsts.is_empty() {
            return;
        }
        if self.on_pool_lanes() {
            self.start_pool_lanes(firsts);
        } else {
            // Async bodies run in their lanes, which one task per runtime
            // thread drives together: a few spawns per batch, not one per input,
            // and every thread busy. Sync bodies run on the pool; their lanes
            // only wait for them, so one task drives them all.
            let tasks = match self.task.spec().is_async {
                true => self.ctx.handle.metrics().num_workers().max(1),
                false => 1,
            };
            if self.starts_lanes_as_bodies_wait() && firsts.len() > tasks {
                // One lane per runtime thread; the batch's other inputs,
                // submitted with theirs, wait in the queue for them.
                let rest = firsts.split_off(tasks);
                self.queue().given_back.extend(rest.into_iter().flatten());
                self.lanes_running.store(tasks, Ordering::Release);
            }
            let mut groups: Vec<Vec<Option<Taken<T>>>> = (0..tasks).map(|_| Vec::new()).collect();
            for (i, taken) in firsts.into_iter().enumerate() {
                groups[i % tasks].push(taken);
            }
            // A collecting window's quick runs spread over every runtime
            // thread, its groups each taking inputs ahead (below).
            let spread = self.mode == BatchMode::SlidingWindow && self.delivery.is_none();
            let drive_group = |(index, group): (usize, Vec<Option<Taken<T>>>)| {
                let map = self.clone();
                // A stream's outcomes go in a buffer per group: its lanes
                // never run at once.
                let buffer = self.lane_buffer(index);
                // Quick async runs of a collecting window: a look at the
                // queue takes inputs for the group's lanes ahead
                // (`lane_group`). Not for a strict batch, whose lanes take
                // all its inputs first; nor for a stream, whose reader's
                // thread the lanes' second thread only slowed down (bench).
                let ahead = (spread && self.task.spec().is_async && self.inline)
                    .then(|| Arc::new(GroupTake::new(self.size / tasks)));
                let lanes = async move {
                    let mut lanes: FuturesUnordered<_> = group
                        .into_iter()
                        .map(|taken| map.clone().lane(taken, buffer.clone(), ahead.clone()))
                        .collect();
                    while lanes.next().await.is_some() {}
                };
                // The flow run is current for all the bodies its lanes run.
                context::with_task_context(self.ctx.clone(), lanes)
            };
            let mut groups = groups
                .into_iter()
                .enumerate()
                .filter(|(_, group)| !group.is_empty());
            // A collecting window's groups are all spawned, so that each
            // runtime thread may take one: a task spawned by a worker waits
            // in its slot for the next task, which no other worker steals,
            // so the map's task driving a group of quick runs itself kept
            // the other group waiting until its own had run every input.
            // Otherwise the first group is driven here, by the map's own
            // task: one task fewer to wake per strict batch, whose end
            // usually finds this task awake already.
            let first = match spread {
                true => None,
                false => groups.next(),
            };
            for group in groups {
                self.ctx
                    .tracker
                    .spawn_on(drive_group(group), &self.ctx.handle);
            }
            if let Some(group) = first {
                drive_group(group).await;
            }
        }
        // The last lane leaves a permit, so this cannot miss its wake-up.
        self.lanes_done.notified().await;
    }

    /// Takes the first input of each of up to `lanes` lanes (fewer for
    /// pool lanes than the pool has threads), which take further inputs up
    /// to `end`, and counts them in. A lane's first is `None` when a
    /// stream's input has not come yet: it waits for one.
    pub(super) fn take_firsts(&self, end: usize) -> Vec<Option<Taken<T>>> {
        self.queue().end = end;
        let lanes = self.size;
        // A pool lane runs its bodies on a thread of its own: more lanes than
        // the pool has threads would only wait for one. Only a map of sync
        // bodies starts its flow run's pool.
        let lanes = match self.on_pool_lanes().then(|| self.ctx.pool()) {
            Some(Ok(pool)) => lanes.min(pool.current_num_threads()),
            _ => lanes,
        };
        // Submitted here, together, as the original submits a batch.
        let mut firsts = VecDeque::with_capacity(lanes);
        // Fewer inputs than lanes: the inputs ended (fewer lanes are
        // needed), or a stream's have not come yet (every lane is: those
        // without a first input wait for one).
        let waiting =
            self.take_many(|| lanes, &mut firsts, true, &mut LaneNotes::default()) == Taking::Full;
        let count = if waiting { lanes } else { firsts.len() };
        self.lanes_running.store(count, Ordering::Release);
        firsts
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None))
            .take(count)
            .collect()
    }

    /// Whether its lanes are pool lanes: sync bodies that run inline.
    pub(super) fn on_pool_lanes(&self) -> bool {
        self.inline && !self.task.spec().is_async
    }

    /// Whether a batch starts one lane per runtime thread, and a lane
    /// about to wait for a body starts another (`start_another_lane`):
    /// a collecting map's strict batches of async bodies run inline. Most
    /// such bodies end in their first poll, and a lane per input, made and
    /// dropped each batch, was most of what such a batch cost (perf: moving
    /// the lanes' futures, allocating and freeing them). A stream keeps a
    /// lane per input: its lanes hand outcomes over through a buffer per
    /// group, which no two of its lanes may use at once.
    fn starts_lanes_as_bodies_wait(&self) -> bool {
        self.mode == BatchMode::Strict
            && self.delivery.is_none()
            && self.inline
            && self.task.spec().is_async
    }

    /// A lane is about to wait for its body: another takes the batch's
    /// inputs meanwhile, if any wait and fewer lanes than the map's size run.
    fn start_another_lane(self: &Arc<Self>) {
        if self.stopped() || self.queue().given_back.is_empty() {
            return;
        }
        let size = self.size;
        let counted =
            self.lanes_running
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                    (running < size).then_some(running + 1)
                });
        if counted.is_ok() {
            let lane = self.clone().lane(None, None, None);
            let lane = context::with_task_context(self.ctx.clone(), lane);
            self.ctx.tracker.spawn_on(lane, &self.ctx.handle);
        }
    }

    /// As [`take_next`](Self::take_next), waiting while a stream's span is
    /// full (until its reader takes outcomes, the map stops, or its flow's
    /// function returns).
    /// Takes the lane's `notes` first.
    pub(super) async fn take_next_waiting(
        &self,
        notes: &mut LaneNotes<T::Output>,
    ) -> Option<Taken<T>> {
        // Most looks find an input or the end: no need to arm a wake-up first.
        match self.take_next(None, notes) {
            Next::Input(taken) => return Some(taken),
            Next::Done => return None,
            Next::Full => {}
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.take_next(None, notes) {
                Next::Input(taken) => return Some(taken),
                Next::Done => return None,
                Next::Full => {}
            }
            tokio::select! {
                _ = room => {}
                _ = self.scope.token().cancelled() => {}
                _ = self.ctx.body_returned.cancelled() => self.abandon_unread(),
            }
        }
    }

    /// Drives the run it was given (if any), then of each input it takes, until none is left.
    /// `buffer` is where it hands a stream's outcomes over.
    pub(super) async fn lane(
        self: Arc<Self>,
        taken: Option<Taken<T>>,
        buffer: Option<Arc<Buffer<T::Output>>>,
        ahead: Option<Arc<GroupTake<T>>>,
    ) {
        self.run_inputs(taken, buffer.as_deref(), ahead.as_deref())
            .await;
        self.end_lane().await;
    }

    /// A lane's work: the run it was given (if any: else it waits for a
    /// stream's first input), then each input it takes.
    pub(super) async fn run_inputs(
        self: &Arc<Self>,
        taken: Option<Taken<T>>,
        buffer: Option<&Buffer<T::Output>>,
        ahead: Option<&GroupTake<T>>,
    ) {
        let mut next = match taken {
            Some(taken) => Some(taken),
            None => self.take_next_waiting(&mut LaneNotes::default()).await,
        };
        // When the run in `next` starts, if the lane knows it without the
        // clock: it went straight on to it, with no recorder hearing its
        // submission, from the end of its last run (or the run's making, if
        // later: `run_inline_async`).
        let heard_submitted = self.ctx.records_submission(&[]);
        let mut starts_at = None;
        // When the lane's last run ended, if it ended in its first poll and
        // the lane has not waited since: the next run is made at that time
        // (the lane's own steps between take a fraction of a microsecond,
        // the history's unit), one reading of the clock fewer per run.
        let mut ended_at = None;
        // The ends of its quick runs, handed over before the lane waits.
        let inline_async = self.inline && self.task.spec().is_async;
        // What it tells the queue at its next look: its hand-overs to a
        // stream's reader, and the runs it is done with.
        let mut notes = LaneNotes::default();
        let give_back = || {
            if let Some(ahead) = ahead {
                self.give_back(ahead);
            }
        };
        let start_another = || self.start_another_lane();
        let mut ends = match inline_async {
            true => LaneEnds::new(&self.ctx),
            false => LaneEnds::none(),
        };
        if ahead.is_some() {
            // Its ended runs' records come back to its group, and before it
            // waits it gives back what its group holds ahead (`lane_group`).
            notes.records = Some(Vec::new());
            ends = ends.before_waiting(&give_back);
        } else if self.starts_lanes_as_bodies_wait() {
            ends = ends.before_waiting(&start_another);
        }
        while let Some((position, run, submitted)) = next {
            let task_run = self.task_run(&run);
            let started = match submitted {
                Submitted::Started(started) => Some(*started),
                // Nothing to wait for: straight to the body, which is not
                // started if the map was cancelled meanwhile.
                Submitted::Args(RunArgs::Ready(args)) if inline_async => {
                    ended_at = task_run.run_inline_async(args, starts_at, &mut ends).await;
                    None
                }
                Submitted::Args(args) => {
                    ends.hand_over();
                    match task_run.inputs_ready(args).await {
                        Some(args) if inline_async => {
                            task_run.run_inline_async(args, None, &mut ends).await;
                            None
                        }
                        ready => ready.map(|args| task_run.start(args)),
                    }
                }
            };
            if let Some(started) = started {
                ends.hand_over();
                task_run.drive_started(started).await;
            }
            self.observe(&run);
            // No async call when there is nothing to wait for (nothing to
            // hand over, or room for it; an input at hand): making and
            // dropping their futures cost a quick run 8% of its instructions.
            if !self.deliver_now(position, &run, buffer, Some(&mut notes)) {
                ends.hand_over();
                self.deliver_later(position, &run, buffer).await;
                ended_at = None;
            }
            notes.ended(position, run);
            let ended = ended_at.take();
            (next, starts_at) = match self.take_next_ahead(ahead, ended, &mut notes) {
                (Next::Input(taken), held) => {
                    // A run its group held was made at an earlier look.
                    let made = taken.1.created_nanos();
                    let starts = match held {
                        false => made,
                        true => ended.zip(made).map(|(ended, made)| ended.max(made)),
                    };
                    (Some(taken), starts.filter(|_| !heard_submitted))
                }
                (Next::Done, _) => (None, None),
                (Next::Full, _) => {
                    ends.hand_over();
                    (self.take_next_waiting(&mut notes).await, None)
                }
            };
        }
        // Dropped, it hands over the rest: the lane has ended.
        drop(ends);
    }

    /// Counts a lane out: the last one ends the map.
    pub(super) async fn end_lane(&self) {
        if self.lanes_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last lane records the inputs that will never be submitted, so
            // that whoever waits for the lanes (a signal handler, say) finds
            // every input with an outcome.
            if self.stopped() {
                self.cancel_unsubmitted().await;
            }
            self.lanes_done.notify_one();
        }
    }
}
