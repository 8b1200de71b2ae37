//! [`RunShared`]: what a task run's future and its engine share: its state,
//! its clock, its outcome, and where its queued sync bodies may run.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use sync_wrapper::SyncWrapper;

use crate::ended_run::{EndedRun, Outcome};
use crate::names::TaskRunName;
use crate::queued_body::{self, Helper, QueuedBody};
use crate::state::State;
use crate::task::ErrorSource;
use crate::task_run_error::TaskRunError;

struct Slot<T> {
    state: State,
    outcome: Outcome<T>,
    /// Who waits for it, if anyone does before it ends, and its queued
    /// body: boxed, as most runs of a map are waited for by nobody, or
    /// only once they have ended, and run where they are taken.
    waiting: Option<Box<Waiting>>,
}

/// Who waits for a run that has not ended, and the body they may run.
#[derive(Default)]
struct Waiting {
    /// The thread of the sync body that waits for it, if one does.
    route: Option<Route>,
    /// The tasks to wake when it ends.
    wakers: Vec<Waker>,
    /// The body of its current attempt, once queued: a sync body that
    /// waits for the run may take it (empty once a thread took it).
    queued: Option<Arc<dyn QueuedBody>>,
}

/// Where a run's queued bodies go besides the pool.
struct Route {
    /// They are offered to this sync body's thread, which waits for the run.
    helper: Arc<Helper>,
    /// They go to the helper only: a task called from a sync body, which
    /// runs on the caller's thread, as in Prefect.
    only: bool,
}

/// 0 is "not yet": a time the clock cannot give (the epoch itself).
fn from_nanos(nanos: u64) -> Option<i64> {
    (nanos != 0).then_some(nanos as i64)
}

/// When a run made in `state` was created, as its record keeps it: a run
/// made Pending is created then, noted so that its announce need not read
/// its state back when no recorder hears it.
fn created_nanos(state: &State) -> u64 {
    match state.is_pending() {
        true => state.nanos().max(1) as u64,
        false => 0,
    }
}

/// A run's waiting list, for a run made for a sync body (`waiter`) that
/// waits for it.
fn waiting_of(waiter: Option<Arc<Helper>>) -> Option<Box<Waiting>> {
    waiter.map(|helper| {
        Box::new(Waiting {
            route: Some(Route {
                helper,
                only: false,
            }),
            ..Waiting::default()
        })
    })
}

/// What a task run's future and its engine share.
pub(crate) struct RunShared<T> {
    /// The index of its name, `{task}-{index}`: the task's name is the spec's.
    index: u64,
    pub(crate) spec: &'static crate::task::TaskSpec,
    slot: Mutex<Slot<T>>,
    // When the run was announced (Pending) and first ran, and how many
    // times it ran. Atomics, not the slot's lock: they are counted on every
    // transition that is recorded, and a run's transitions never race each
    // other. Fields of the run itself, not of a struct of their own, so
    // that the flag below fills their padding: a record then takes 128
    // bytes with the `Arc`'s counts, which glibc's allocator frees to its
    // fast bins (144 bytes went through its slower general bins). A map's
    // lanes reuse their records (`renew`); runs submitted one by one each
    // allocate one.
    /// Nanoseconds since the epoch; 0 until announced.
    created: AtomicU64,
    /// Nanoseconds since the epoch; 0 until it first ran.
    started: AtomicU64,
    run_count: AtomicU32,
    /// Set under the slot's lock, so that a waiter that registers under it
    /// either sees it or is woken.
    terminal: AtomicBool,
}

impl<T> RunShared<T> {
    /// A run whose queued bodies are also offered to `waiter`, the helper
    /// of the sync body that waits for it (a map's runs, made on the
    /// runtime for a body that called the map).
    pub(crate) fn new(
        name: TaskRunName,
        spec: &'static crate::task::TaskSpec,
        state: State,
        waiter: Option<Arc<Helper>>,
    ) -> Arc<Self> {
        Arc::new(Self::unshared(name, spec, state, waiter))
    }

    /// As [`new`](Self::new), made in `record` when nobody else holds it
    /// (a lane's record of its last run, which the map no longer needs):
    /// a map's runs then cost no allocation, and their records stay in
    /// the lane's cache.
    pub(crate) fn renew(
        record: &mut Arc<Self>,
        name: TaskRunName,
        spec: &'static crate::task::TaskSpec,
        state: State,
        waiter: Option<Arc<Helper>>,
    ) {
        let Some(run) = Arc::get_mut(record) else {
            *record = Self::new(name, spec, state, waiter);
            return;
        };
        // Field by field: a whole new record built and moved in cost a
        // quick run a twelfth of its instructions (callgrind).
        debug_assert_eq!(name.task, spec.name);
        run.index = name.index;
        run.spec = spec;
        *run.created.get_mut() = created_nanos(&state);
        *run.started.get_mut() = 0;
        *run.run_count.get_mut() = 0;
        *run.terminal.get_mut() = state.is_terminal();
        let slot = run.slot.get_mut().unwrap_or_else(|p| p.into_inner());
        slot.state = state;
        slot.outcome = Outcome::None;
        slot.waiting = waiting_of(waiter);
    }

    /// Gives a record nobody else holds yet (made by [`renew`](Self::renew)
    /// ahead of its run's name) the name of run `index`; false if another
    /// holds it.
    pub(crate) fn rename(record: &mut Arc<Self>, index: u64) -> bool {
        match Arc::get_mut(record) {
            Some(run) => {
                run.index = index;
                true
            }
            None => false,
        }
    }

    /// Lets go of what a record nobody else holds keeps of its last run
    /// (its outcome, and whoever waited for it), so that it may wait for a
    /// later map without keeping them alive; false if another holds it.
    pub(crate) fn empty(record: &mut Arc<Self>) -> bool {
        let Some(run) = Arc::get_mut(record) else {
            return false;
        };
        let slot = run.slot.get_mut().unwrap_or_else(|p| p.into_inner());
        slot.outcome = Outcome::None;
        slot.waiting = None;
        true
    }

    fn unshared(
        name: TaskRunName,
        spec: &'static crate::task::TaskSpec,
        state: State,
        waiter: Option<Arc<Helper>>,
    ) -> Self {
        debug_assert_eq!(name.task, spec.name);
        RunShared {
            index: name.index,
            spec,
            created: AtomicU64::new(created_nanos(&state)),
            started: AtomicU64::new(0),
            run_count: AtomicU32::new(0),
            terminal: AtomicBool::new(state.is_terminal()),
            slot: Mutex::new(Slot {
                state,
                outcome: Outcome::None,
                waiting: waiting_of(waiter),
            }),
        }
    }

    pub(crate) fn name(&self) -> TaskRunName {
        TaskRunName {
            task: self.spec.name,
            index: self.index,
        }
    }

    fn slot(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock cannot leave the slot half-written:
        // every writer assigns whole fields.
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves to a non-terminal state. Ignored once terminal: a run never leaves a terminal state.
    #[inline(always)]
    pub(crate) fn set_state(&self, state: State) {
        debug_assert!(!state.is_terminal());
        let mut slot = self.slot();
        if !slot.state.is_terminal() {
            slot.state = state;
        }
    }

    /// Counts `state` into the run's times, and returns them: `None` for a
    /// run never Pending. Its creation was noted when it was made.
    pub(crate) fn times_with(&self, state: &State) -> Option<crate::recorder::RunTimes> {
        self.count_into_times(state);
        self.times()
    }

    /// Counts `state` into the run's times: a `Running` is a start.
    #[inline]
    pub(crate) fn count_into_times(&self, state: &State) {
        if state.is_running() {
            let _ = self.started.compare_exchange(
                0,
                state.nanos().max(1) as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            self.run_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// When it was made `Pending`, in nanoseconds since the epoch; `None`
    /// for a run never Pending.
    pub(crate) fn created_nanos(&self) -> Option<i64> {
        from_nanos(self.created.load(Ordering::Relaxed))
    }

    /// Its times as they stand: `None` until it is announced.
    pub(crate) fn times(&self) -> Option<crate::recorder::RunTimes> {
        let created = from_nanos(self.created.load(Ordering::Relaxed))?;
        let run_count = self.run_count.load(Ordering::Relaxed);
        let started = from_nanos(self.started.load(Ordering::Relaxed));
        Some(crate::recorder::RunTimes::from_nanos(
            created, started, run_count,
        ))
    }

    /// Sends the run's bodies to the calling sync body's thread only: a
    /// task called from a task runs in its caller's thread.
    pub(crate) fn run_on_calling_thread(&self) {
        if let Some(route) = self
            .slot()
            .waiting
            .as_mut()
            .and_then(|waiting| waiting.route.as_mut())
        {
            route.only = true;
        }
    }

    /// Notes the body of the run's next attempt as queued, and says where
    /// it goes: to the helper (if any), and to the pool unless the run is
    /// its caller's alone.
    pub(crate) fn queue_body(&self, body: &Arc<dyn QueuedBody>) -> (Option<Arc<Helper>>, bool) {
        let mut slot = self.slot();
        let waiting = slot.waiting.get_or_insert_with(Box::default);
        waiting.queued = Some(body.clone());
        match waiting.route.as_ref() {
            Some(route) => (Some(route.helper.clone()), !route.only),
            None => (None, true),
        }
    }

    /// Blocks until the run is terminal. On the thread of a sync body, the
    /// thread runs the run's queued bodies itself meanwhile, so that a body
    /// waiting for a run never waits for a pool thread it holds.
    pub(crate) fn wait_blocking(&self, call: &str, instead: &str) {
        if self.is_terminal() {
            return;
        }
        match queued_body::current() {
            Some(helper) => {
                self.lend_thread(&helper);
                helper.block_on(self.wait());
            }
            None => crate::blocking::block_on(self.wait(), call, instead),
        }
    }

    /// Offers the run's queued body to `helper`, and its later attempts'
    /// bodies too if no other thread waits for it.
    pub(crate) fn lend_thread(&self, helper: &Arc<Helper>) {
        if self.is_terminal() {
            return;
        }
        let mut slot = self.slot();
        let waiting = slot.waiting.get_or_insert_with(Box::default);
        if waiting.route.is_none() {
            waiting.route = Some(Route {
                helper: helper.clone(),
                only: false,
            });
        }
        if let Some(body) = &waiting.queued {
            helper.offer(body.clone());
        }
    }

    /// Keeps the body's error for the run's `TaskRunError`; before [`finish`](Self::finish).
    pub(crate) fn keep_error(&self, error: ErrorSource) {
        self.slot().outcome = Outcome::Error(Box::new(error));
    }

    /// Moves to a terminal state, with the value if it completed, and wakes every waiter.
    #[inline(always)]
    pub(crate) fn finish(&self, state: State, value: Option<T>) {
        debug_assert!(state.is_terminal());
        let waiting = {
            let mut slot = self.slot();
            slot.state = state;
            if let Some(value) = value {
                slot.outcome = Outcome::Value(value);
            }
            self.terminal.store(true, Ordering::Release);
            slot.waiting.take()
        };
        if let Some(waiting) = waiting {
            for waker in waiting.wakers {
                waker.wake();
            }
        }
    }

    pub(crate) fn state(&self) -> State {
        self.slot().state.clone()
    }

    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        std::future::poll_fn(|cx| {
            if self.is_terminal() {
                return Poll::Ready(());
            }
            let mut slot = self.slot();
            // Checked again under the lock it is set under: a waker
            // registered here is one `finish` takes.
            if self.is_terminal() {
                return Poll::Ready(());
            }
            let wakers = &mut slot.waiting.get_or_insert_with(Box::default).wakers;
            if !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// A clone of the value of a completed run, leaving it in place: for an
    /// `unmapped(future)`, whose value every run of a map takes.
    pub(crate) fn clone_value(&self, clone: fn(&T) -> T) -> Result<T, State> {
        let slot = self.slot();
        slot.outcome.clone_value(&slot.state, clone)
    }

    /// The final outcome: the value if completed, else the state. Takes the value out.
    pub(crate) fn take_outcome(&self) -> Result<T, TaskRunError> {
        let mut slot = self.slot();
        let slot = &mut *slot;
        slot.outcome.take(&slot.state, self.name())
    }

    /// What the ended run leaves, moved out of a record held by nobody
    /// else, which is then made into another run (a map's lane reuses its
    /// record: no allocation per run).
    pub(crate) fn take_ended(&mut self) -> EndedRun<T> {
        let slot = self.slot.get_mut().unwrap_or_else(|p| p.into_inner());
        debug_assert!(slot.state.is_terminal());
        EndedRun {
            index: self.index,
            spec: self.spec,
            // Any state: the record is made into another run before it is read.
            state: std::mem::replace(&mut slot.state, State::completed_unstamped()),
            outcome: SyncWrapper::new(std::mem::replace(&mut slot.outcome, Outcome::None)),
        }
    }

    /// A record of a run that ended already, for who needs one (an
    /// `unmapped(future)` of a map's future).
    pub(crate) fn of_ended(ended: EndedRun<T>) -> Arc<Self> {
        let mut run = Self::unshared(ended.name(), ended.spec, ended.state, None);
        run.slot
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .outcome = ended.outcome.into_inner();
        Arc::new(run)
    }
}

#[cfg(test)]
pub(crate) mod tests;
