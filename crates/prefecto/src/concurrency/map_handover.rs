//! What a [`MapRun`] does with a finished run: shows it to the kill
//! switch, hands its outcome to a stream's reader, and forgets it; and the
//! end of a map (the stream's last word, or a collecting map's result).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::batch_error::BatchError;
use super::batch_mode::SwitchOrder;
use super::kill_switch::{KillSwitch, KillSwitchError};
use super::map_queue::{LaneNotes, Queue};
use super::map_run::MapRun;
use super::map_stream::Delivery;
use super::outcome::InputOutcome;
use super::stream_handoff::{Buffer, HandedRun};
use super::stream_stop::StreamStop;
use crate::context::flow_log;
use crate::future::{PrefectFutureList, RunShared};
use crate::names::TaskRunName;
use crate::state::State;
use crate::task::{Task, panic_message};

impl<T: Task> MapRun<T> {
    /// Counts a finished run into the progress bar, and shows the kill
    /// switch what it is due to see: this run, in completion order; in input
    /// order, every finished run not yet shown whose earlier inputs all were.
    // Inlined, with the rest out of line: most maps have neither, and the
    // call cost a quick run more than the two checks.
    #[inline(always)]
    pub(super) fn observe(&self, run: &Arc<RunShared<T::Output>>) {
        if self.progress.is_some() || self.switch.is_some() {
            self.show_observers(run);
        }
    }

    fn show_observers(&self, run: &Arc<RunShared<T::Output>>) {
        if let Some(progress) = &self.progress {
            progress.run_finished(&run.state());
        }
        let Some(switch) = &self.switch else {
            return;
        };
        match self.switch_order {
            SwitchOrder::Completion => {
                let mut switch = switch.lock().unwrap_or_else(|p| p.into_inner());
                self.show(&mut switch, run.name(), &run.state());
            }
            SwitchOrder::Input => {
                let mut queue = self.queue();
                let mut switch = switch.lock().unwrap_or_else(|p| p.into_inner());
                while self.tripped.get().is_none() {
                    let next = queue.next_to_show;
                    let Some(run) = queue.run(next) else {
                        break;
                    };
                    if !run.is_done() {
                        break;
                    }
                    let (name, state) = (run.task_run_name(), run.state());
                    self.show(&mut switch, name, &state);
                    queue.next_to_show = next + 1;
                }
                drop(switch);
                self.forget_handed_over(&mut queue);
            }
        }
    }

    /// Shows one finished run's state to the switch; on a trip, stops the map.
    /// A switch that panics trips, with the panic as its reason: the map ends
    /// rather than losing the lane that showed it.
    fn show(&self, switch: &mut Box<dyn KillSwitch>, run: TaskRunName, state: &State) {
        // Once tripped, the switch sees no more states: they are the trip's consequences.
        if self.tripped.get().is_some() {
            return;
        }
        let verdict = catch_unwind(AssertUnwindSafe(|| switch.should_flip_switch(state)));
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
            run,
            reason,
            self.task.spec().name
        );
        // Tripped first, so that no lane takes another input once runs are being cancelled.
        let _ = self.tripped.set((name.clone(), reason.clone()));
        self.scope
            .cancel(format!("Cancelled by kill switch {name}: {reason}"));
        self.room.notify_waiters();
    }

    /// Hands a stream's reader the outcomes now due: this run's, in
    /// completion order; in input order, every run its lane has finished
    /// with, from the first not yet handed over. Then forgets what no longer
    /// needs holding. Called by the run's lane once it has [`observe`](Self::observe)d it.
    /// `lane` is the buffer of the lane that hands it over, if any.
    pub(super) async fn deliver(
        &self,
        position: usize,
        run: &Arc<RunShared<T::Output>>,
        lane: Option<&Buffer<T::Output>>,
    ) {
        if !self.deliver_now(position, run, lane, None) {
            self.deliver_later(position, run, lane).await;
        }
    }

    /// The buffer of a lane, or group of lanes, of a stream: lanes that
    /// run at once had best have `group`s of their own.
    pub(super) fn lane_buffer(&self, group: usize) -> Option<Arc<Buffer<T::Output>>> {
        let delivery = self.delivery.as_ref()?;
        Some(delivery.handoff.buffer(group))
    }

    /// What [`deliver`](Self::deliver) does once [`deliver_now`](Self::deliver_now)
    /// could not: waits for the reader's room, or for another lane handing over.
    pub(super) async fn deliver_later(
        &self,
        position: usize,
        run: &Arc<RunShared<T::Output>>,
        lane: Option<&Buffer<T::Output>>,
    ) {
        let Some(delivery) = &self.delivery else {
            return;
        };
        let buffer = delivery.buffer(lane);
        // A run is forgotten only once its outcome is on its way to the
        // reader: runs waiting to be count against the span too.
        if !delivery.in_input_order {
            self.hand(delivery, buffer, vec![HandedRun::of(position, run)])
                .await;
            self.handed_over(position..position + 1);
            return;
        }
        // One lane at a time, so that outcomes leave in the order they were
        // taken. `deliver_now` marked this run finished.
        let _sending = delivery.sending.lock().await;
        loop {
            let (due, runs): (_, Vec<_>) = {
                let mut queue = self.queue();
                let due = queue.due_in_order();
                let runs = due
                    .clone()
                    .filter_map(|position| {
                        let run = queue.run(position)?;
                        Some(HandedRun::of_future(position, run))
                    })
                    .collect();
                queue.next_to_hand = due.end;
                (due, runs)
            };
            if due.is_empty() {
                return;
            }
            self.hand(delivery, buffer, runs).await;
            self.handed_over(due);
        }
    }

    /// As [`deliver`](Self::deliver), if it needs no wait: the reader has
    /// room for all that is due, and no other lane is handing over in input
    /// order. Whether it did; if not, nothing due is lost: `deliver` hands
    /// it over. Out of order, a lane's hand-over is marked in the queue at
    /// its next look (`notes`), if it has one.
    // Inlined, with the rest out of line, as `observe`.
    #[inline(always)]
    pub(super) fn deliver_now(
        &self,
        position: usize,
        run: &Arc<RunShared<T::Output>>,
        lane: Option<&Buffer<T::Output>>,
        notes: Option<&mut LaneNotes<T::Output>>,
    ) -> bool {
        match &self.delivery {
            None => true,
            Some(delivery) => self.deliver_now_to(delivery, position, run, lane, notes),
        }
    }

    fn deliver_now_to(
        &self,
        delivery: &Delivery<T::Output>,
        position: usize,
        run: &Arc<RunShared<T::Output>>,
        lane: Option<&Buffer<T::Output>>,
        notes: Option<&mut LaneNotes<T::Output>>,
    ) -> bool {
        let buffer = delivery.buffer(lane);
        if !delivery.in_input_order {
            let handed = delivery
                .handoff
                .try_hand(buffer, 1, |into| into.push(HandedRun::of(position, run)));
            match notes {
                _ if !handed => {}
                Some(notes) => notes.handed(position),
                None => self.handed_over(position..position + 1),
            }
            return handed;
        }
        // One look at the queue: what is due cannot change while it is held.
        let mut queue = self.queue();
        if let Some(marks) = queue.marks(position) {
            marks.finished = true;
        }
        // A lane sending in `deliver` holds this while it waits for the
        // reader; it hands over what this one finished when it looks again.
        let Ok(_sending) = delivery.sending.try_lock() else {
            return false;
        };
        let due = queue.due_in_order();
        if due.is_empty() {
            return true;
        }
        let handed = delivery.handoff.try_hand(buffer, due.len(), |into| {
            for position in due.clone() {
                if let Some(run) = queue.run(position) {
                    into.push(HandedRun::of_future(position, run));
                }
                if let Some(marks) = queue.marks(position) {
                    marks.delivered = true;
                }
            }
        });
        if !handed {
            return false;
        }
        queue.next_to_hand = due.end;
        self.forget_handed_over(&mut queue);
        true
    }

    /// Takes what a lane noted: marks its hand-overs, forgets what no
    /// longer needs holding, then takes the runs it is done with.
    pub(super) fn take_notes(&self, queue: &mut Queue<T>, notes: &mut LaneNotes<T::Output>) {
        if queue.mark(notes) {
            self.forget_handed_over(queue);
        }
        queue.take_ended(notes, self.delivery.is_none());
    }

    /// Marks runs as handed over, and forgets what no longer needs holding.
    fn handed_over(&self, positions: std::ops::Range<usize>) {
        let mut queue = self.queue();
        for position in positions {
            if let Some(marks) = queue.marks(position) {
                marks.delivered = true;
            }
        }
        self.forget_handed_over(&mut queue);
    }

    /// Hands over outcomes, waiting while the reader is behind: unless the
    /// reader is gone (the outcomes are dropped: the history has them), or
    /// the flow's function returned without reading on.
    async fn hand(
        &self,
        delivery: &Delivery<T::Output>,
        buffer: &Buffer<T::Output>,
        runs: Vec<HandedRun<T::Output>>,
    ) {
        tokio::select! {
            _ = delivery.handoff.hand(buffer, runs) => {}
            _ = self.ctx.body_returned.cancelled() => self.abandon_unread(),
        }
    }

    /// Forgets, from the front, the runs a stream has handed over and an
    /// input-order switch has seen; wakes lanes waiting for room.
    pub(super) fn forget_handed_over(&self, queue: &mut Queue<T>) {
        if self.delivery.is_none() {
            return;
        }
        let input_switch = self.switch.is_some() && self.switch_order == SwitchOrder::Input;
        let mut forgot = false;
        while let Some(front) = queue.marks.front() {
            let seen =
                !input_switch || queue.low < queue.next_to_show || self.tripped.get().is_some();
            if !(front.delivered && seen) {
                break;
            }
            queue.pop();
            forgot = true;
        }
        if forgot {
            self.room.notify_waiters();
        }
    }

    /// Ends a stream: the reader learns why it stopped, if it did.
    pub(super) async fn end_stream(&self) {
        let Some(delivery) = &self.delivery else {
            return;
        };
        let stop = {
            let queue = self.queue();
            let unread_from = queue.unread_from;
            match (self.tripped.get(), &queue.input_error) {
                (Some((switch, reason)), _) => Some(StreamStop::KillSwitch {
                    switch: switch.clone(),
                    reason: reason.clone(),
                    unread_from,
                }),
                (None, Some(error)) => Some(StreamStop::Inputs(error.clone())),
                (None, None) if self.scope.is_cancelled() => Some(StreamStop::Cancelled {
                    reason: self.scope.reason(),
                    unread_from,
                }),
                (None, None) => None,
            }
        };
        if let Some(StreamStop::Inputs(error)) = &stop {
            flow_log!(self.ctx, ERROR, "{}", error);
        }
        delivery.handoff.end(stop.map(Box::new));
    }

    /// A collecting map's result: every run's future; or the kill switch
    /// error with every input's outcome; or the inputs' error (a stream's
    /// length differed) with the futures of the inputs before it.
    pub(super) fn finish(&self) -> Result<PrefectFutureList<T::Output>, BatchError<T::Output>> {
        // Taken, not cloned: a million runs' counts are not touched twice.
        let (runs, input_error) = {
            let mut queue = self.queue();
            (std::mem::take(&mut queue.runs), queue.input_error.take())
        };
        // A collecting map's runs are never popped: the deque is one run
        // of futures already, the list's own (no second list of them).
        let futures = Vec::from(runs);
        let Some((switch, reason)) = self.tripped.get().cloned() else {
            let futures = PrefectFutureList::new(futures);
            return match input_error {
                None => Ok(futures),
                Some(error) => {
                    flow_log!(self.ctx, ERROR, "{}", error);
                    Err(BatchError::Inputs { error, futures })
                }
            };
        };
        let (outcomes, values) = futures
            .into_iter()
            .enumerate()
            .map(|(index, mut future)| {
                let outcome = InputOutcome {
                    index,
                    task_run: future.task_run_name(),
                    state: future.state(),
                };
                (outcome, future.take_outcome().ok())
            })
            .unzip();
        Err(BatchError::KillSwitch(KillSwitchError::of_map(
            switch, reason, outcomes, values,
        )))
    }
}
