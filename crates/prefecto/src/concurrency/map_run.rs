//! [`MapRun`]: one `BatchTask` map in progress, run on lanes, its inputs
//! read as it goes and, for a stream, its outcomes handed over as they come.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, TryLockError};
use std::task::Poll;

use tokio::sync::Notify;

use super::batch_mode::{BatchMode, SwitchOrder};
use super::kill_switch::KillSwitch;
use super::map_inputs::{MapInputs, Source};
use super::map_queue::{LaneNotes, Queue};
use super::map_stream::Delivery;
use super::spares::{LeftRecords, Spares};
pub(super) use super::taken::{Submitted, Taken};
use crate::context::{CancelScope, FlowRunContext, flow_log};
use crate::future::{PrefectFuture, RunShared};
use crate::inputs::RunArgs;
use crate::prefault::Prefaulted;
use crate::progress::MapProgress;
use crate::queued_body::{self, Helper};
use crate::runner::{TaskRun, new_run};
use crate::task::Task;

/// A kill switch, shared by the maps of one `BatchTask`.
pub(super) type SharedSwitch = Arc<Mutex<Box<dyn KillSwitch>>>;

/// Run names reserved at a time when a stream's length is unknown.
const NAME_BLOCK: u64 = 1024;

/// One map: its inputs, its task runs, and what its lanes share.
///
/// A lane is a Tokio task that takes the next input, drives its task run to a
/// terminal state, shows that state to the kill switch, and takes the next.
/// `size` lanes over all inputs make the sliding window; strict mode gives each
/// batch its own lanes and waits for them. Nothing polls: the last lane to end
/// wakes the driver.
///
/// A collecting map (`map`) keeps every run, for the futures it returns. A
/// stream (`stream`) hands each outcome over as it is ready and forgets the
/// run: it holds the runs from the oldest not yet handed over (or not yet
/// shown to an input-order switch) to the newest taken, never more than its
/// span, so its memory does not grow with the number of inputs.
pub(super) struct MapRun<T: Task> {
    pub(super) ctx: Arc<FlowRunContext>,
    pub(super) task: T,
    pub(super) scope: Arc<CancelScope>,
    pub(super) switch: Option<SharedSwitch>,
    pub(super) switch_order: SwitchOrder,
    pub(super) queue: Mutex<Queue<T>>,
    /// The switch's name and reason, once it has tripped.
    pub(super) tripped: OnceLock<(String, String)>,
    pub(super) lanes_running: AtomicUsize,
    pub(super) lanes_done: Notify,
    /// Woken when a stream forgets runs, or its inputs come, for lanes
    /// waiting for room or inputs.
    pub(super) room: Arc<Notify>,
    pub(super) progress: Option<Arc<dyn MapProgress>>,
    /// Where a stream's outcomes go; `None` for a collecting map.
    pub(super) delivery: Option<Delivery<T::Output>>,
    /// Each run's one attempt runs inline in its lane: a sync body on a
    /// pool lane (`map_pool_lane`), not queued on the pool from a lane on the
    /// runtime; an async one awaited in its lane, not driven by the engine.
    pub(super) inline: bool,
    pub(super) mode: BatchMode,
    pub(super) size: usize,
    /// How many strict batches, if known (else 0), and how many began.
    pub(super) batches: usize,
    pub(super) batches_begun: AtomicUsize,
    /// How many inputs a pool lane took at a time when it ended: the
    /// lanes of the next strict batch start there, not from one.
    pub(super) pool_chunk: AtomicUsize,
    /// The sync body that made the map, if one did: it waits for the map's
    /// runs, and runs them itself when every pool thread is taken.
    pub(super) waiter: Option<Arc<Helper>>,
}

/// What a lane found when it looked for its next input.
pub(super) enum Next<T: Task> {
    Input(Taken<T>),
    /// A stream's span is full, or its inputs are not ready: wait until
    /// runs are handed over or inputs come (`room` is notified).
    Full,
    /// No input for this lane: the batch or the inputs ended, or the map stopped.
    Done,
}

/// Why [`MapRun::take_many`] stopped taking inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Taking {
    /// It holds as many as it was asked for, or another lane was looking
    /// at the queue and it was not to wait: it goes on with what it holds.
    Enough,
    /// As [`Next::Full`].
    Full,
    /// As [`Next::Done`].
    Done,
}

impl<T: Task> MapRun<T> {
    /// A map of `task` over `inputs` (`total` of them, if known), `size` at
    /// a time in `mode`, in `batches` batches (0 for a sliding window or an
    /// unknown count).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        task: &T,
        switch: Option<SharedSwitch>,
        switch_order: SwitchOrder,
        (mode, size, batches): (BatchMode, usize, usize),
        ctx: Arc<FlowRunContext>,
        inputs: Source<T::Args>,
        total: Option<usize>,
        delivery: Option<Delivery<T::Output>>,
    ) -> Self {
        let name = task.spec().name;
        // A known count gets one block of names, as consecutive as the original's.
        let names = match total {
            Some(total) => (ctx.reserve_run_names(name, total), total as u64),
            None => (0, 0),
        };
        let progress = ctx
            .seams
            .progress
            .as_ref()
            .and_then(|display| display.start_map(name, total, batches));
        let inline = crate::runner::runs_inline(&ctx, task);
        // A collecting map holds every run: room for all from the start,
        // not copied at each doubling. A stream holds at most its span.
        let held = match &delivery {
            None => total.unwrap_or(0),
            Some(delivery) => delivery.span.min(total.unwrap_or(usize::MAX)),
        };
        let room = Arc::new(Notify::new());
        let inputs = MapInputs::new(inputs, room.clone());
        // A deque made of a `Vec` keeps its buffer: never popped, nor grown
        // past `total`, a collecting map's list stays where it was faulted in.
        let mut runs = Vec::with_capacity(held);
        let prefaulted = match &delivery {
            None => Prefaulted::of(&mut runs),
            Some(_) => None,
        };
        MapRun {
            scope: ctx.scope.child(),
            ctx,
            task: task.clone(),
            switch,
            switch_order,
            queue: Mutex::new(Queue {
                next: 0,
                end: 0,
                inputs,
                exhausted: false,
                input_error: None,
                runs: VecDeque::from(runs),
                marks: VecDeque::with_capacity(if delivery.is_some() { held } else { 0 }),
                prefaulted,
                stretch: None,
                low: 0,
                spares: Spares::from_left(
                    match delivery {
                        Some(_) => held,
                        None => size,
                    },
                    LeftRecords::process(),
                ),
                next_to_show: 0,
                next_to_hand: 0,
                names,
                unread_from: None,
                given_back: VecDeque::new(),
                held_ahead: 0,
            }),
            tripped: OnceLock::new(),
            lanes_running: AtomicUsize::new(0),
            lanes_done: Notify::new(),
            room,
            progress,
            delivery,
            inline,
            mode,
            size,
            batches,
            batches_begun: AtomicUsize::new(0),
            pool_chunk: AtomicUsize::new(1),
            waiter: queued_body::current(),
        }
    }

    pub(super) fn queue(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs every input, `size` at a time in `mode`, until they run out or
    /// the map stops; then gives the inputs never submitted their outcome.
    pub(super) async fn drive(self: &Arc<Self>) {
        match self.mode {
            BatchMode::Strict => {
                // Pool lanes may begin the batches that follow theirs: the
                // lanes end once no batch follows, or one has to wait.
                while !self.stopped() && self.has_more_inputs().await {
                    let end = self.begin_batch();
                    self.run_lanes(end).await;
                }
            }
            BatchMode::SlidingWindow => {
                flow_log!(
                    self.ctx,
                    DEBUG,
                    "Mapping '{}' with a sliding window of {}.",
                    self.task.spec().name,
                    self.size
                );
                self.run_lanes(usize::MAX).await;
            }
        }
        if self.stopped() {
            self.cancel_unsubmitted().await;
        }
    }

    /// Counts a strict batch in and says so; the end of its inputs.
    pub(super) fn begin_batch(&self) -> usize {
        let batch = self.batches_begun.fetch_add(1, Ordering::Relaxed) + 1;
        let name = self.task.spec().name;
        match self.batches {
            0 => flow_log!(self.ctx, DEBUG, "Mapping '{}' batch {}.", name, batch),
            n => flow_log!(
                self.ctx,
                DEBUG,
                "Mapping '{}' batch {} of {}.",
                name,
                batch,
                n
            ),
        }
        if let Some(progress) = &self.progress {
            progress.batch_started(batch);
        }
        batch * self.size
    }

    /// Whether another batch follows: waits while a stream's inputs are
    /// not ready, unless the map stops or its flow's function returns.
    async fn has_more_inputs(&self) -> bool {
        loop {
            let inputs_come = self.room.notified();
            tokio::pin!(inputs_come);
            inputs_come.as_mut().enable();
            {
                let mut queue = self.queue();
                if queue.exhausted {
                    return false;
                }
                if let Poll::Ready(more) = queue.inputs.poll_has_more() {
                    return more;
                }
            }
            tokio::select! {
                _ = inputs_come => {}
                _ = self.scope.token().cancelled() => return false,
                _ = self.ctx.body_returned.cancelled() => {
                    self.abandon_unread();
                    return false;
                }
            }
        }
    }

    /// Whether no further input may start: the switch tripped, or the map
    /// (a stream dropped) or its flow run was cancelled.
    pub(super) fn stopped(&self) -> bool {
        self.tripped.get().is_some() || self.scope.is_cancelled()
    }

    /// Takes the next input, unless the map has stopped or a stream's span
    /// is full, and announces its run, made now or at `created_at` (a
    /// reading of the clock the lane just took: see `run_inputs`).
    ///
    /// A sync body is also handed to the thread pool here, under the queue's
    /// lock, so bodies reach the pool in input order: a pool of one runs a
    /// batch in order. An async body starts on its lane, in parallel.
    ///
    /// Takes the lane's `notes` first, under the same lock.
    pub(super) fn take_next(
        &self,
        created_at: Option<i64>,
        notes: &mut LaneNotes<T::Output>,
    ) -> Next<T> {
        if self.stopped() && !notes.has_handed() {
            return Next::Done;
        }
        let mut queue = self.queue();
        self.take_notes(&mut queue, notes);
        if self.stopped() {
            return Next::Done;
        }
        let next = self.take_next_locked(&mut queue, created_at);
        Self::let_go(queue);
        next
    }

    /// Lets the queue go, then faults in the stretch of its list of runs
    /// its look planned, if any: not while the other lanes wait for it.
    pub(super) fn let_go(mut queue: MutexGuard<'_, Queue<T>>) {
        let stretch = queue.stretch.take();
        drop(queue);
        if let Some(stretch) = stretch {
            stretch.fault_in();
        }
    }

    /// As [`take_next`](Self::take_next), up to `max()` inputs in all in
    /// `into`, under one look at the queue and one reading of the clock,
    /// for a lane that runs them one after the other anyway; and why it
    /// stopped taking. `max` is asked once the queue is this lane's. With
    /// `wait` false, it takes none if another lane is looking. Takes the
    /// lane's `notes` first, if it looks.
    pub(super) fn take_many(
        &self,
        max: impl FnOnce() -> usize,
        into: &mut VecDeque<Taken<T>>,
        wait: bool,
        notes: &mut LaneNotes<T::Output>,
    ) -> Taking {
        let mut queue = match self.queue.try_lock() {
            Ok(queue) => queue,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) if wait => self.queue(),
            Err(TryLockError::WouldBlock) => return Taking::Enough,
        };
        self.take_notes(&mut queue, notes);
        let max = max();
        // Made together, under one look at the queue: at one time.
        let now = crate::clock::now_nanos();
        let taking = loop {
            if into.len() >= max {
                break Taking::Enough;
            }
            if self.stopped() {
                break Taking::Done;
            }
            match self.take_next_locked(&mut queue, Some(now)) {
                Next::Input(taken) => into.push_back(taken),
                Next::Full => break Taking::Full,
                Next::Done => break Taking::Done,
            }
        };
        Self::let_go(queue);
        taking
    }

    pub(super) fn take_next_locked(
        &self,
        queue: &mut Queue<T>,
        created_at: Option<i64>,
    ) -> Next<T> {
        self.take_next_locked_in(queue, created_at, None)
    }

    /// As [`take_next_locked`](Self::take_next_locked). With `ready`
    /// records (made ahead, for a group of async lanes, by
    /// `lane_group`), a run made now is made in one of them if any is left,
    /// and not announced: its taker announces it once it has let the queue
    /// go. An input given back was announced when it was first taken.
    pub(super) fn take_next_locked_in(
        &self,
        queue: &mut Queue<T>,
        created_at: Option<i64>,
        ready: Option<&mut Vec<Arc<RunShared<T::Output>>>>,
    ) -> Next<T> {
        if let Some(taken) = queue.given_back.pop_front() {
            return Next::Input(taken);
        }
        if queue.none_left_to_read() {
            // Inputs held ahead are given back if their group's lane
            // waits, or run by that lane: wait for either (`room`).
            return match queue.held_ahead {
                0 => Next::Done,
                _ => Next::Full,
            };
        }
        if let Some(delivery) = &self.delivery
            && queue.next - queue.low >= delivery.span
        {
            return Next::Full;
        }
        let announce = ready.is_none();
        let (position, run, args) = match self.read_input(queue, created_at, ready) {
            Poll::Ready(Some(read)) => read,
            Poll::Ready(None) => return Next::Done,
            Poll::Pending => return Next::Full,
        };
        if !announce {
            return Next::Input((position, run, Submitted::Args(args)));
        }
        let task_run = self.task_run(&run);
        task_run.announce(&args.upstream(self.task.spec().param_names));
        let submitted = match args {
            RunArgs::Ready(args) if !self.task.spec().is_async && !self.inline => {
                Submitted::Started(Box::new(task_run.start(args)))
            }
            // Async bodies, and runs that wait for upstream runs, start on their lane.
            args => Submitted::Args(args),
        };
        Next::Input((position, run, submitted))
    }

    /// Reads the next input and makes its run (in a spare record, if the
    /// queue has one), held from now on; `None` once the inputs have run
    /// out or gone wrong; `Pending` while a stream's next input has not come.
    #[allow(clippy::type_complexity)]
    pub(super) fn read_input(
        &self,
        queue: &mut Queue<T>,
        created_at: Option<i64>,
        ready: Option<&mut Vec<Arc<RunShared<T::Output>>>>,
    ) -> Poll<Option<(usize, Arc<RunShared<T::Output>>, RunArgs<T::Args>)>> {
        let args = match queue.inputs.poll_next() {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(args))) => args,
            Poll::Ready(Some(Err(error))) => {
                queue.exhausted = true;
                queue.input_error = Some(error);
                return Poll::Ready(None);
            }
            Poll::Ready(None) => {
                queue.exhausted = true;
                return Poll::Ready(None);
            }
        };
        let position = queue.next;
        queue.next += 1;
        let run = self.new_run(queue, created_at, ready);
        queue.push(PrefectFuture::new(run.clone()), self.delivery.is_some());
        Poll::Ready(Some((position, run, args)))
    }

    /// A new run for the next input, named from the reserved block.
    fn new_run(
        &self,
        queue: &mut Queue<T>,
        created_at: Option<i64>,
        ready: Option<&mut Vec<Arc<RunShared<T::Output>>>>,
    ) -> Arc<RunShared<T::Output>> {
        if queue.names.1 == 0 {
            let first = self
                .ctx
                .reserve_run_names(self.task.spec().name, NAME_BLOCK as usize);
            queue.names = (first, NAME_BLOCK);
        }
        let index = queue.names.0;
        queue.names = (index + 1, queue.names.1 - 1);
        if let Some(mut record) = ready.and_then(Vec::pop)
            && RunShared::rename(&mut record, index)
        {
            return record;
        }
        let spare = queue.spares.take();
        new_run(&self.task, index, self.waiter.clone(), created_at, spare)
    }

    pub(super) fn task_run<'a>(&'a self, run: &'a Arc<RunShared<T::Output>>) -> TaskRun<'a, T> {
        TaskRun {
            ctx: &self.ctx,
            task: &self.task,
            shared: run,
            scope: &self.scope,
        }
    }

    /// The flow's function returned while a stream waited for its reader:
    /// nobody will read it, so the map stops.
    pub(super) fn abandon_unread(&self) {
        self.scope.cancel(
            "The flow's function returned before reading this map's stream to its end.".into(),
        );
    }
}

/// A map's records nobody else holds are left for the next map's runs.
impl<T: Task> Drop for MapRun<T> {
    fn drop(&mut self) {
        let queue = self.queue.get_mut().unwrap_or_else(|p| p.into_inner());
        queue.spares.leave(LeftRecords::process());
    }
}
