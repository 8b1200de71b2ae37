//! [`MapRun`]: one `BatchTask` map in progress, run on lanes.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::batch_error::BatchError;
use super::batch_mode::SwitchOrder;
use super::kill_switch::{KillSwitch, KillSwitchError};
use super::outcome::InputOutcome;
use crate::context::{CancelScope, FlowRunContext, flow_log};
use crate::future::{PrefectFuture, PrefectFutureList, RunShared};
use crate::inputs::RunArgs;
use crate::progress::MapProgress;
use crate::runner::{Started, TaskRun, new_run};
use crate::task::{Task, panic_message};

/// A kill switch, shared by the maps of one `BatchTask`.
pub(super) type SharedSwitch = Arc<Mutex<Box<dyn KillSwitch>>>;

/// One `map_async` call: its inputs, its task runs, and what its lanes share.
///
/// A lane is a Tokio task that takes the next input, drives its task run to a
/// terminal state, shows that state to the kill switch, and takes the next.
/// `size` lanes over all inputs make the sliding window; strict mode gives each
/// batch its own lanes and waits for them. Nothing polls: the last lane to end
/// wakes the driver.
pub(super) struct MapRun<T: Task> {
    pub(super) ctx: Arc<FlowRunContext>,
    task: T,
    scope: Arc<CancelScope>,
    switch: Option<SharedSwitch>,
    switch_order: SwitchOrder,
    /// In input order, the first input the switch has not been shown yet.
    next_to_show: AtomicUsize,
    /// One per input, in input order, created `Pending` and announced when submitted.
    pub(super) runs: Vec<Arc<RunShared<T::Output>>>,
    queue: Mutex<Queue<RunArgs<T::Args>>>,
    /// The switch's name and reason, once it has tripped.
    pub(super) tripped: OnceLock<(String, String)>,
    lanes_running: AtomicUsize,
    lanes_done: Notify,
    pub(super) progress: Option<Arc<dyn MapProgress>>,
}

/// An input taken from the queue: started already (a sync body, queued on
/// the pool in input order) or to start on its lane.
enum Submitted<T: Task> {
    Started(Started<T>),
    Args(RunArgs<T::Args>),
}

/// The inputs not yet taken. Lanes take inputs up to `end`, the end of the
/// current batch (or of all inputs, in window mode).
struct Queue<A> {
    next: usize,
    end: usize,
    inputs: std::vec::IntoIter<A>,
}

impl<T: Task> MapRun<T> {
    /// A map of `task` over `inputs`, in `batches` batches (0 for a sliding window).
    pub(super) fn new(
        task: &T,
        switch: Option<SharedSwitch>,
        switch_order: SwitchOrder,
        batches: usize,
        ctx: Arc<FlowRunContext>,
        inputs: Vec<RunArgs<T::Args>>,
    ) -> Self {
        let first = ctx.reserve_run_names(task.spec().name, inputs.len());
        let progress = ctx
            .seams
            .progress
            .as_ref()
            .and_then(|display| display.start_map(task.spec().name, inputs.len(), batches));
        let runs = (first..)
            .take(inputs.len())
            .map(|index| new_run(task, index))
            .collect();
        MapRun {
            scope: ctx.scope.child(),
            ctx,
            task: task.clone(),
            switch,
            switch_order,
            next_to_show: AtomicUsize::new(0),
            runs,
            queue: Mutex::new(Queue {
                next: 0,
                end: 0,
                inputs: inputs.into_iter(),
            }),
            tripped: OnceLock::new(),
            lanes_running: AtomicUsize::new(0),
            lanes_done: Notify::new(),
            progress,
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue<RunArgs<T::Args>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits up to `lanes` inputs at once, each on a lane of its own that
    /// then takes further inputs up to `end`, and waits until every lane has ended.
    pub(super) async fn run_lanes(self: &Arc<Self>, end: usize, lanes: usize) {
        self.queue().end = end;
        // Submitted here, together, as the original submits a batch.
        let firsts: Vec<_> = std::iter::from_fn(|| self.submit_next())
            .take(lanes)
            .collect();
        if firsts.is_empty() {
            return;
        }
        self.lanes_running.store(firsts.len(), Ordering::Release);
        if self.task.spec().is_async {
            // Async bodies run in their lanes: a task each, spread over the runtime's threads.
            for (position, submitted) in firsts {
                let map = self.clone();
                self.ctx.tracker.spawn_on(
                    async move { map.lane(position, submitted).await },
                    &self.ctx.handle,
                );
            }
        } else {
            // Sync bodies run on the pool; their lanes only wait for them, so
            // one task can drive them all rather than one task each.
            let map = self.clone();
            self.ctx.tracker.spawn_on(
                async move {
                    let mut lanes: FuturesUnordered<_> = firsts
                        .into_iter()
                        .map(|(position, submitted)| map.clone().lane(position, submitted))
                        .collect();
                    while lanes.next().await.is_some() {}
                },
                &self.ctx.handle,
            );
        }
        // The last lane leaves a permit, so this cannot miss its wake-up.
        self.lanes_done.notified().await;
    }

    /// Whether no further input may start: the switch tripped, or the flow run was cancelled.
    fn stopped(&self) -> bool {
        self.tripped.get().is_some() || self.scope.is_cancelled()
    }

    /// Takes the next input, unless the map has stopped, and announces its run.
    ///
    /// A sync body is also handed to the thread pool here, under the queue's
    /// lock, so bodies reach the pool in input order: a pool of one runs a
    /// batch in order. An async body starts on its lane, in parallel.
    fn submit_next(&self) -> Option<(usize, Submitted<T>)> {
        if self.stopped() {
            return None;
        }
        let mut queue = self.queue();
        if queue.next >= queue.end {
            return None;
        }
        let args = queue.inputs.next()?;
        let position = queue.next;
        queue.next += 1;
        let run = self.task_run(position);
        run.announce(&args.upstream(self.task.spec().param_names));
        match args {
            RunArgs::Ready(args) if !self.task.spec().is_async => {
                Some((position, Submitted::Started(run.start(args))))
            }
            // Async bodies, and runs that wait for upstream runs, start on their lane.
            args => Some((position, Submitted::Args(args))),
        }
    }

    fn task_run(&self, position: usize) -> TaskRun<'_, T> {
        TaskRun {
            ctx: &self.ctx,
            task: &self.task,
            shared: &self.runs[position],
            scope: &self.scope,
        }
    }

    /// Drives the run of `position`, then of each input it takes, until none is left.
    async fn lane(self: Arc<Self>, position: usize, submitted: Submitted<T>) {
        let mut next = Some((position, submitted));
        while let Some((position, submitted)) = next {
            let run = self.task_run(position);
            let started = match submitted {
                Submitted::Started(started) => Some(started),
                Submitted::Args(args) => run.inputs_ready(args).await.map(|args| run.start(args)),
            };
            if let Some(started) = started {
                run.drive_started(started).await;
            }
            self.observe(position);
            next = self.submit_next();
        }
        if self.lanes_running.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last lane records the inputs that will never be submitted, so
            // that whoever waits for the lanes (a signal handler, say) finds
            // every input with an outcome.
            if self.stopped() {
                self.cancel_unsubmitted();
            }
            self.lanes_done.notify_one();
        }
    }

    /// Ends every input not yet taken in `Cancelled`; later calls find none left.
    fn cancel_unsubmitted(&self) {
        let unsubmitted = {
            let mut queue = self.queue();
            let first = queue.next;
            queue.next = self.runs.len();
            first..self.runs.len()
        };
        if unsubmitted.is_empty() {
            return;
        }
        let message = match self.tripped.get() {
            Some((switch, reason)) => {
                format!("Cancelled by kill switch {switch} before submission: {reason}")
            }
            None => format!("{} It was never submitted.", self.scope.reason()),
        };
        for position in unsubmitted.clone() {
            self.task_run(position).cancel_unsubmitted(&message);
        }
        flow_log!(
            self.ctx,
            WARN,
            "{} input(s) of '{}' were never submitted; their task runs are Cancelled.",
            unsubmitted.len(),
            self.task.spec().name
        );
    }

    /// Counts a finished run into the progress bar, and shows the kill
    /// switch what it is due to see: this run, in completion order; in input
    /// order, every finished run not yet shown whose earlier inputs all were.
    fn observe(&self, position: usize) {
        if self.progress.is_none() && self.switch.is_none() {
            return;
        }
        if let Some(progress) = &self.progress {
            progress.run_finished(&self.runs[position].state());
        }
        let Some(switch) = &self.switch else {
            return;
        };
        let mut switch = switch.lock().unwrap_or_else(|p| p.into_inner());
        match self.switch_order {
            SwitchOrder::Completion => self.show(&mut switch, position),
            SwitchOrder::Input => {
                // Only read and written under the switch's lock.
                let mut next = self.next_to_show.load(Ordering::Relaxed);
                while next < self.runs.len()
                    && self.runs[next].is_terminal()
                    && self.tripped.get().is_none()
                {
                    self.show(&mut switch, next);
                    next += 1;
                }
                self.next_to_show.store(next, Ordering::Relaxed);
            }
        }
    }

    /// Shows one finished run's state to the switch; on a trip, stops the map.
    /// A switch that panics trips, with the panic as its reason: the map ends
    /// rather than losing the lane that showed it.
    fn show(&self, switch: &mut Box<dyn KillSwitch>, position: usize) {
        // Once tripped, the switch sees no more states: they are the trip's consequences.
        if self.tripped.get().is_some() {
            return;
        }
        let run = &self.runs[position];
        let state = run.state();
        let verdict = catch_unwind(AssertUnwindSafe(|| switch.should_flip_switch(&state)));
        let name = catch_unwind(AssertUnwindSafe(|| switch.name()))
            .unwrap_or_else(|_| "KillSwitch".to_string());
        let reason = match verdict {
            Ok(false) => return,
            Ok(true) => {
                catch_unwind(AssertUnwindSafe(|| switch.reason())).unwrap_or_else(|panic| {
                    format!("its reason panicked: {}", panic_message(panic.as_ref()))
                })
            }
            Err(panic) => format!("the switch panicked: {}", panic_message(panic.as_ref())),
        };
        flow_log!(
            self.ctx,
            ERROR,
            "Kill switch {} tripped on task run '{}': {}. No further input of '{}' will be submitted.",
            name,
            run.name,
            reason,
            self.task.spec().name
        );
        // Tripped first, so that no lane takes another input once runs are being cancelled.
        let _ = self.tripped.set((name.clone(), reason.clone()));
        self.scope
            .cancel(format!("Cancelled by kill switch {name}: {reason}"));
    }

    /// Gives every input that was never submitted its `Cancelled` run, then the result.
    pub(super) fn finish(&self) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        if self.stopped() {
            self.cancel_unsubmitted();
        }
        let futures = self.runs.iter().cloned().map(PrefectFuture::new);
        let Some((switch, reason)) = self.tripped.get().cloned() else {
            return Ok(PrefectFutureList::new(futures.collect()));
        };
        let (outcomes, values) = futures
            .enumerate()
            .map(|(index, future)| {
                let outcome = InputOutcome {
                    index,
                    task_run: future.task_run_name(),
                    state: future.state(),
                };
                (outcome, future.shared.take_outcome().ok())
            })
            .unzip();
        Err(BatchError::KillSwitch(KillSwitchError::of_map(
            switch, reason, outcomes, values,
        )))
    }
}
