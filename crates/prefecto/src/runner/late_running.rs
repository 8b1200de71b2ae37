//! A task run's first `Running`, owed to the recorders that hear it only
//! once the run is seen still running ([`Recorder::wants_running`]), and
//! the watch that pays it for sync bodies.
//!
//! An async body of a map's lane shows by its first poll whether it ends at
//! once. A sync body does not: it runs to its end on its pool thread. So a
//! pool lane's thread notes the run it is in, in a slot of its own, and a
//! watcher thread that looks at every slot a few times a second hands the
//! `Running` over for a body still going. A quick body costs its thread two
//! uncontended locks instead of a recorder call, and the run is heard
//! running while it runs, as a recorder showing what is in progress needs.
//!
//! [`Recorder::wants_running`]: crate::recorder::Recorder::wants_running

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

/// What a pool thread is doing, as the watcher sees it.
#[derive(Default)]
struct Slot {
    /// The flow run of the lane's slice, while one runs.
    ctx: Option<Arc<FlowRunContext>>,
    /// The run whose body runs here, while its `Running` is owed.
    owed: Option<OwedRunning>,
}

thread_local! {
    /// This thread's slot, once it has run a slice of a lane.
    static SLOT: OnceLock<Arc<Mutex<Slot>>> = const { OnceLock::new() };
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A panic under this lock (a recorder's, caught by its guard) leaves
    // whole fields.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a pool lane's slice of `ctx`'s runs with this thread watched, if
/// any recorder of the flow run wants a `Running` only once it is seen.
pub(crate) fn watching<R>(ctx: &Arc<FlowRunContext>, slice: impl FnOnce() -> R) -> R {
    if !ctx.owes_running() {
        return slice();
    }
    let Some(slot) = this_threads_slot() else {
        return slice();
    };
    struct Unwatch(Arc<Mutex<Slot>>);
    impl Drop for Unwatch {
        fn drop(&mut self) {
            let mut slot = lock(&self.0);
            slot.ctx = None;
            slot.owed = None;
        }
    }
    lock(&slot).ctx = Some(ctx.clone());
    let _unwatch = Unwatch(slot);
    slice()
}

/// This thread's slot, registered with the watcher; `None` if the watcher
/// could not be started.
fn this_threads_slot() -> Option<Arc<Mutex<Slot>>> {
    let watch = watch()?;
    let slot = SLOT.with(|slot| {
        slot.get_or_init(|| {
            let slot = Arc::new(Mutex::new(Slot::default()));
            watch.register(&slot);
            slot
        })
        .clone()
    });
    Some(slot)
}

/// The run `owed` is of starts its body here: its `Running` is paid by the
/// watcher if the body is still going at its next look. Gives it back if
/// this thread is not watched (its caller then pays it at once), else a
/// guard that forgets it when the body ends.
pub(crate) fn owe(owed: OwedRunning) -> Result<BodyWatched, OwedRunning> {
    SLOT.with(|slot| {
        let Some(slot) = slot.get() else {
            return Err(owed);
        };
        let mut watched = lock(slot);
        // Not in a lane's slice, or in a body that runs another run's body
        // on its thread: not watched.
        if watched.ctx.is_none() || watched.owed.is_some() {
            return Err(owed);
        }
        watched.owed = Some(owed);
        Ok(BodyWatched(std::marker::PhantomData))
    })
}

/// A body watched on its thread: ended (or dropped) when it ends, on that
/// thread (it is not `Send`). If the watcher paid its `Running`, it did so
/// under the slot's lock, which this takes: the run's end is recorded after it.
pub(crate) struct BodyWatched(std::marker::PhantomData<*const ()>);

impl BodyWatched {
    /// The body ended: whether the watcher paid its `Running` meanwhile.
    pub(crate) fn ended(self) -> bool {
        let paid = forget_owed();
        std::mem::forget(self);
        paid
    }
}

impl Drop for BodyWatched {
    fn drop(&mut self) {
        forget_owed();
    }
}

/// Forgets this thread's owed `Running`; true if there was none left (the
/// watcher paid it).
fn forget_owed() -> bool {
    SLOT.with(|slot| {
        slot.get()
            .is_none_or(|slot| lock(slot).owed.take().is_none())
    })
}

/// The watcher: the slots of the threads that ran lanes' slices.
struct Watch {
    slots: Mutex<Vec<Weak<Mutex<Slot>>>>,
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
    fn register(&self, slot: &Arc<Mutex<Slot>>) {
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
            let live: Vec<Arc<Mutex<Slot>>> = {
                let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                slots.iter().filter_map(Weak::upgrade).collect()
            };
            let now = crate::clock::now_nanos();
            for slot in live {
                let mut watched = lock(&slot);
                let due = watched.owed.as_ref().is_some_and(|owed| {
                    now.saturating_sub(owed.state.nanos()) >= LOOK_EVERY.as_nanos() as i64
                });
                if !due {
                    continue;
                }
                if let (Some(ctx), Some(owed)) = (watched.ctx.clone(), watched.owed.take()) {
                    owed.pay(&ctx);
                }
            }
        }
    }
}
