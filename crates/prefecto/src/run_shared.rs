//! [`RunShared`]: what a task run's future and its engine share: its state,
//! its clock, its outcome, and where its queued sync bodies may run.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

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

/// What a finished run leaves besides its state. The error is boxed: it is
/// rare, and a thin pointer keeps every run's slot as small as the value alone.
enum Outcome<T> {
    None,
    Value(T),
    /// The body's own error, for a run that failed with one.
    Error(Box<ErrorSource>),
}

/// 0 is "not yet": a time the clock cannot give (the epoch itself).
fn from_nanos(nanos: u64) -> Option<i64> {
    (nanos != 0).then_some(nanos as i64)
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
    // that the flag below fills their padding: a map's run then takes 128
    // bytes with the `Arc`'s counts, which glibc's allocator frees to its
    // fast bins (144 bytes went through its slower general bins: a fifth of
    // a window map's instructions were malloc and free).
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
        let terminal = state.is_terminal();
        // A run made Pending is created then: noted here, so that its
        // announce need not read its state back when no recorder hears it.
        let created = match state.is_pending() {
            true => state.nanos().max(1) as u64,
            false => 0,
        };
        debug_assert_eq!(name.task, spec.name);
        Arc::new(RunShared {
            index: name.index,
            spec,
            slot: Mutex::new(Slot {
                state,
                outcome: Outcome::None,
                waiting: waiter.map(|helper| {
                    Box::new(Waiting {
                        route: Some(Route {
                            helper,
                            only: false,
                        }),
                        ..Waiting::default()
                    })
                }),
            }),
            created: AtomicU64::new(created),
            started: AtomicU64::new(0),
            run_count: AtomicU32::new(0),
            terminal: AtomicBool::new(terminal),
        })
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
        match (&slot.outcome, slot.state.is_completed()) {
            (Outcome::Value(value), true) => Ok(clone(value)),
            _ => Err(slot.state.clone()),
        }
    }

    /// The final outcome: the value if completed, else the state. Takes the value out.
    pub(crate) fn take_outcome(&self) -> Result<T, TaskRunError> {
        let mut slot = self.slot();
        let completed = slot.state.is_completed();
        let source = match std::mem::replace(&mut slot.outcome, Outcome::None) {
            Outcome::Value(value) if completed => return Ok(value),
            Outcome::Error(error) => {
                let source = (*error).clone();
                // Kept, so that a second look at a failed run finds it too.
                slot.outcome = Outcome::Error(error);
                Some(source)
            }
            _ => None,
        };
        Err(TaskRunError {
            task_run: self.name().to_string(),
            state: if completed {
                State::failed("The result of this task run was already taken.")
            } else {
                slot.state.clone()
            },
            source,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// The name of the runs of these tests, and of the future's.
    pub(crate) fn name() -> TaskRunName {
        TaskRunName {
            task: "add",
            index: 3,
        }
    }

    pub(crate) static ADD: crate::task::TaskSpec = crate::task::TaskSpec::new("add", &["a", "b"]);

    #[test]
    fn every_waiter_wakes_when_the_run_ends_and_a_late_one_does_not_wait() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let shared = RunShared::<u8>::new(name(), &ADD, State::pending(), None);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let shared = shared.clone();
                runtime.spawn(async move { shared.wait().await })
            })
            .collect();
        // A waiter polled again before the end registers once.
        let again = shared.clone();
        let twice = runtime.spawn(async move {
            let wait = again.wait();
            tokio::pin!(wait);
            let polled = tokio::time::timeout(Duration::from_millis(20), &mut wait).await;
            assert!(polled.is_err(), "the run has not ended yet");
            wait.await
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!shared.is_terminal());
        shared.finish(State::completed(), Some(1));
        runtime.block_on(async {
            for waiter in waiters.into_iter().chain([twice]) {
                tokio::time::timeout(Duration::from_secs(10), waiter)
                    .await
                    .expect("woken")
                    .unwrap();
            }
            shared.wait().await;
        });
        assert_eq!(shared.take_outcome().unwrap(), 1);
    }

    #[test]
    fn a_run_of_a_word_sized_value_fits_glibcs_fast_bins() {
        // The `Arc`'s two counts and the run, within the 120 bytes glibc
        // serves from its fast bins (see the fields' comment).
        assert!(std::mem::size_of::<RunShared<u64>>() + 16 <= 120);
    }

    #[test]
    fn a_run_counts_its_times() {
        // Never Pending: no times.
        let never = RunShared::<u8>::new(name(), &ADD, State::cancelled("x"), None);
        assert_eq!(never.times_with(&State::cancelled("x")), None);
        // Made Pending: created then, whenever its Pending is counted.
        let pending = State::pending();
        let shared = RunShared::<u8>::new(name(), &ADD, pending.clone(), None);
        let created = shared.times_with(&State::pending()).unwrap();
        assert_eq!((created.started(), created.run_count()), (None, 0));
        assert_eq!(created.created(), pending.timestamp());
        let first = State::running();
        let running = shared.times_with(&first).unwrap();
        assert_eq!(running.created(), created.created());
        assert_eq!(running.started(), Some(first.timestamp()));
        let retried = shared.times_with(&State::retrying()).unwrap();
        assert_eq!(
            retried.started(),
            Some(first.timestamp()),
            "the first start stays"
        );
        assert_eq!(retried.run_count(), 2);
        assert_eq!(
            shared.times_with(&State::completed()).unwrap().run_count(),
            2
        );
    }
}
