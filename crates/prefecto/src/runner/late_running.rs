//! A task run's first `Running`, owed to the recorders that hear it only
//! once the run is seen still running
//! ([`Recorder::wants_running`](crate::recorder::Recorder::wants_running)),
//! and the watch that pays it for sync bodies.
//!
//! An async body of a map's lane shows by its first poll whether it ends at
//! once. A sync body does not: it runs to its end on its pool thread. So a
//! pool lane's thread notes the run it is in, in a slot of its own, and a
//! watcher thread that looks at every slot a few times a second hands the
//! `Running` over for a body still going. The run is heard running while
//! it runs, as a recorder showing what is in progress needs.
//!
//! A quick body costs its thread a few stores and one compare-and-swap:
//! the run's numbers sit in the slot's atomics, behind a phase word that
//! says whether a body's `Running` is owed and which body it is. With a
//! lock and the owed `Running` moved in and out of the slot instead, the
//! watch was over half of what the run history added to a sync run
//! (callgrind: ~180 of ~310 instructions, `batch_task --rss 'stream window,
//! sync body' 100000 --history`).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use crate::context::FlowRunContext;
use crate::names::TaskRunName;
use crate::recorder::RunTimes;
use crate::state::State;
use crate::task::TaskSpec;

/// How often the watcher looks, and how long a body must have been
/// running before its `Running` is handed over.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// A run's first `Running`, not yet heard by the recorders that want it
/// only once the run is seen still running.
pub(crate) struct OwedRunning {
    pub(super) name: TaskRunName,
    pub(super) spec: &'static TaskSpec,
    pub(super) state: State,
    pub(super) times: Option<RunTimes>,
}

impl OwedRunning {
    /// Hands it to the recorders it is owed to.
    pub(super) fn pay(self, ctx: &FlowRunContext) {
        ctx.record_owed_running((self.name, self.spec), &self.state, self.times);
    }
}

/// A lane's slice, as the watcher pays a `Running` in it.
struct Slice {
    ctx: Arc<FlowRunContext>,
    spec: &'static TaskSpec,
}

/// What the watcher reads of a body to pay its `Running`: its run's number
/// and times (nanoseconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
struct BodyNumbers {
    index: u64,
    created: i64,
    started: i64,
    run_count: u32,
}

/// The low bits of a slot's phase word; the rest count the bodies owed.
const IDLE: u64 = 0;
const OWED: u64 = 1;
/// The watcher took the body's `Running` to pay it, under the slot's lock.
const TAKEN: u64 = 2;
const PHASE_BITS: u64 = 3;

/// What a pool thread is doing, as the watcher sees it. `W` is what the
/// watcher needs of the thread's slice (the flow run and task), set as the
/// slice begins.
struct Slot<W> {
    /// The slice running here, if one is. The watcher pays under this lock;
    /// a body's end that finds its `Running` taken waits here until paid.
    slice: Mutex<Option<W>>,
    /// The task of the slice (its spec's address; 0 between slices), read
    /// by this thread only: a run of another task is paid at once.
    slice_task: AtomicUsize,
    /// `IDLE`, `OWED` or `TAKEN`, above a count of the bodies owed here:
    /// a watcher that read one body's numbers cannot take the next's.
    phase: AtomicU64,
    index: AtomicU64,
    created: AtomicI64,
    started: AtomicI64,
    run_count: AtomicU32,
}

impl<W> Default for Slot<W> {
    fn default() -> Self {
        Slot {
            slice: Mutex::new(None),
            slice_task: AtomicUsize::new(0),
            phase: AtomicU64::new(IDLE),
            index: AtomicU64::new(0),
            created: AtomicI64::new(0),
            started: AtomicI64::new(0),
            run_count: AtomicU32::new(0),
        }
    }
}

fn lock<W>(slice: &Mutex<Option<W>>) -> MutexGuard<'_, Option<W>> {
    // A panic under this lock (a recorder's, caught by its guard) leaves
    // the slice whole.
    slice.lock().unwrap_or_else(|p| p.into_inner())
}

impl<W> Slot<W> {
    /// A slice of `task`'s runs begins on this thread.
    fn begin_slice(&self, slice: W, task: usize) {
        *lock(&self.slice) = Some(slice);
        self.slice_task.store(task, Ordering::Relaxed);
    }

    /// The slice ends: a body still owed (its end unwound past its guard)
    /// is forgotten.
    fn end_slice(&self) {
        self.slice_task.store(0, Ordering::Relaxed);
        if self.phase.load(Ordering::Relaxed) & PHASE_BITS != IDLE {
            self.end_body();
        }
        *lock(&self.slice) = None;
    }

    /// A body of `task`'s run starts here: false if this thread is in no
    /// slice of that task, or already in a body owed (a body that runs
    /// another run's body on its thread): its `Running` is then paid at once.
    fn owe(&self, task: usize, numbers: BodyNumbers) -> bool {
        if self.slice_task.load(Ordering::Relaxed) != task {
            return false;
        }
        let phase = self.phase.load(Ordering::Relaxed);
        if phase & PHASE_BITS != IDLE {
            return false;
        }
        self.index.store(numbers.index, Ordering::Relaxed);
        self.created.store(numbers.created, Ordering::Relaxed);
        self.started.store(numbers.started, Ordering::Relaxed);
        self.run_count.store(numbers.run_count, Ordering::Relaxed);
        // Published with the numbers: a watcher that reads this phase reads them.
        let next = (phase & !PHASE_BITS).wrapping_add(PHASE_BITS + 1) | OWED;
        self.phase.store(next, Ordering::Release);
        true
    }

    /// The body owed here ended: whether the watcher paid its `Running`
    /// meanwhile. If it was paying it, this waits until it has: the run's
    /// end is recorded after its `Running`.
    fn end_body(&self) -> bool {
        let phase = self.phase.load(Ordering::Relaxed);
        let idle = phase & !PHASE_BITS;
        if phase & PHASE_BITS == OWED
            && self
                .phase
                .compare_exchange(phase, idle, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return false;
        }
        // Taken: the watcher holds the lock until it has paid.
        let _paid = lock(&self.slice);
        self.phase.store(idle, Ordering::Relaxed);
        true
    }

    /// The watcher's look: pays (`pay`) the `Running` of a body that
    /// started at least `LOOK_EVERY` before `now`, once, under the lock.
    fn pay_if_due(&self, now: i64, pay: impl FnOnce(&W, BodyNumbers)) {
        let slice = lock(&self.slice);
        let Some(slice) = slice.as_ref() else { return };
        let phase = self.phase.load(Ordering::Acquire);
        if phase & PHASE_BITS != OWED {
            return;
        }
        let numbers = BodyNumbers {
            index: self.index.load(Ordering::Relaxed),
            created: self.created.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            run_count: self.run_count.load(Ordering::Relaxed),
        };
        if now.saturating_sub(numbers.started) < LOOK_EVERY.as_nanos() as i64 {
            return;
        }
        // Still the body whose numbers were read (else they may be torn
        // between two bodies): taken, its thread leaves them be until paid.
        let taken = (phase & !PHASE_BITS) | TAKEN;
        if self
            .phase
            .compare_exchange(phase, taken, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            pay(slice, numbers);
        }
    }
}

thread_local! {
    /// This thread's slot, once it has run a slice of a lane.
    static SLOT: OnceLock<Arc<Slot<Slice>>> = const { OnceLock::new() };
}

fn task_address(spec: &'static TaskSpec) -> usize {
    spec as *const TaskSpec as usize
}

/// Runs a pool lane's slice of `ctx`'s runs of the task `spec` with this
/// thread watched, if any recorder of the flow run wants a `Running` only
/// once it is seen.
pub(crate) fn watching<R>(
    ctx: &Arc<FlowRunContext>,
    spec: &'static TaskSpec,
    slice: impl FnOnce() -> R,
) -> R {
    if !ctx.owes_running() {
        return slice();
    }
    let Some(slot) = this_threads_slot() else {
        return slice();
    };
    struct Unwatch(Arc<Slot<Slice>>);
    impl Drop for Unwatch {
        fn drop(&mut self) {
            self.0.end_slice();
        }
    }
    let watched = Slice {
        ctx: ctx.clone(),
        spec,
    };
    slot.begin_slice(watched, task_address(spec));
    let _unwatch = Unwatch(slot);
    slice()
}

/// This thread's slot, registered with the watcher; `None` if the watcher
/// could not be started.
fn this_threads_slot() -> Option<Arc<Slot<Slice>>> {
    let watch = watch()?;
    let slot = SLOT.with(|slot| {
        slot.get_or_init(|| {
            let slot = Arc::new(Slot::default());
            watch.register(&slot);
            slot
        })
        .clone()
    });
    Some(slot)
}

/// Run `index` of `spec`'s task, with these times, starts its body here:
/// its `Running` is paid by the watcher if the body is still going at its
/// next look. `None` if this thread is not watched, or the run has no
/// start time (its caller then pays the `Running` at once); else a guard
/// to end when the body ends.
pub(crate) fn owe(
    index: u64,
    spec: &'static TaskSpec,
    times: Option<RunTimes>,
) -> Option<BodyWatched> {
    let times = times?;
    let numbers = BodyNumbers {
        index,
        created: times.created_nanos(),
        started: times.started_nanos()?,
        run_count: times.run_count(),
    };
    SLOT.with(|slot| {
        let owed = slot.get()?.owe(task_address(spec), numbers);
        owed.then_some(BodyWatched(std::marker::PhantomData))
    })
}

/// A body watched on its thread: ended (or dropped) when it ends, on that
/// thread (it is not `Send`). If the watcher was paying its `Running`, this
/// waits until it has: the run's end is recorded after it.
pub(crate) struct BodyWatched(std::marker::PhantomData<*const ()>);

impl BodyWatched {
    /// The body ended: whether the watcher paid its `Running` meanwhile.
    pub(crate) fn ended(self) -> bool {
        let paid = end_body();
        std::mem::forget(self);
        paid
    }
}

impl Drop for BodyWatched {
    fn drop(&mut self) {
        end_body();
    }
}

fn end_body() -> bool {
    SLOT.with(|slot| slot.get().is_none_or(|slot| slot.end_body()))
}

/// The watcher: the slots of the threads that ran lanes' slices.
struct Watch {
    slots: Mutex<Vec<Weak<Slot<Slice>>>>,
    /// Woken when a slot is registered: with none, the watcher sleeps.
    registered: Condvar,
}

fn watch() -> Option<&'static Watch> {
    static WATCH: OnceLock<Option<&'static Watch>> = OnceLock::new();
    *WATCH.get_or_init(|| {
        let watch: &'static Watch = Box::leak(Box::new(Watch {
            slots: Mutex::new(Vec::new()),
            registered: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("prefecto-watch".into())
            .spawn(move || watch.run())
            .ok()
            .map(|_| watch)
    })
}

impl Watch {
    fn register(&self, slot: &Arc<Slot<Slice>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.push(Arc::downgrade(slot));
        self.registered.notify_one();
    }

    /// Looks at every slot each `LOOK_EVERY`, for as long as the process
    /// lives; sleeps while no thread has a slot.
    fn run(&self) {
        loop {
            {
                let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                slots.retain(|slot| slot.strong_count() > 0);
                while slots.is_empty() {
                    slots = self
                        .registered
                        .wait(slots)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            std::thread::sleep(LOOK_EVERY);
            let live: Vec<Arc<Slot<Slice>>> = {
                let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                slots.iter().filter_map(Weak::upgrade).collect()
            };
            let now = crate::clock::now_nanos();
            for slot in live {
                slot.pay_if_due(now, |slice, numbers| {
                    let owed = OwedRunning {
                        name: TaskRunName {
                            task: slice.spec.name,
                            index: numbers.index,
                        },
                        spec: slice.spec,
                        state: State::running_at(numbers.started),
                        times: Some(RunTimes::from_nanos(
                            numbers.created,
                            Some(numbers.started),
                            numbers.run_count,
                        )),
                    };
                    owed.pay(&slice.ctx);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
