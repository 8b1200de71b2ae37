//! Sync task bodies queued on the pool, and the threads that may run them
//! instead: what keeps a task body that waits for other runs from waiting
//! for a pool thread that it holds itself.
//!
//! A queued body runs once, on whichever thread takes it first: a pool
//! worker, or a [`Helper`], the thread of a running sync body that waits
//! for it (it called a task, or resolved a future or a map). While a helper
//! waits, it runs the bodies offered to it, so the waiter lends its own
//! thread to the runs it waits for: Prefect's "a task called from a task
//! runs in the caller's thread", without unbounded threads. A helper runs
//! only bodies it waits for, so its stack grows with the nesting of task
//! calls, never with the number of inputs.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

/// A sync body on its way to a thread: run by the first to take it.
pub(crate) trait QueuedBody: Send + Sync {
    /// Runs the body here, unless another thread took it first. True if it ran here.
    fn run_here(&self) -> bool;
}

/// Queues `job`: the one allocation a queued body costs.
pub(crate) fn queue(job: impl FnOnce() + Send + 'static) -> Arc<dyn QueuedBody> {
    Arc::new(Once(Mutex::new(Some(job))))
}

struct Once<F>(Mutex<Option<F>>);

impl<F: FnOnce() + Send> QueuedBody for Once<F> {
    fn run_here(&self) -> bool {
        let job = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        job.map(|job| job()).is_some()
    }
}

/// The thread of a running sync body: while it blocks on other runs, it
/// runs the bodies offered to it.
pub(crate) struct Helper {
    thread: Thread,
    offered: Mutex<VecDeque<Arc<dyn QueuedBody>>>,
}

/// What this thread is running: a sync body or not, and the body's helper,
/// made when first asked for (most bodies never start or wait for a run).
#[derive(Default)]
struct BodyThread {
    in_body: bool,
    helper: Option<Arc<Helper>>,
}

thread_local! {
    static BODY: RefCell<BodyThread> = RefCell::new(BodyThread::default());
}

/// Runs a sync body on this thread, which becomes the helper of the runs the
/// body starts and waits for.
pub(crate) fn run_as_helper<R>(body: impl FnOnce() -> R) -> R {
    struct Restore(Option<BodyThread>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take().unwrap_or_default();
            BODY.with(|slot| *slot.borrow_mut() = previous);
        }
    }
    let inside = BodyThread {
        in_body: true,
        helper: None,
    };
    let previous = BODY.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), inside));
    let _restore = Restore(Some(previous));
    body()
}

/// Whether a sync body is running on this thread.
pub(crate) fn in_body() -> bool {
    BODY.with(|slot| slot.borrow().in_body)
}

/// The helper of the sync body running on this thread, if one is.
pub(crate) fn current() -> Option<Arc<Helper>> {
    BODY.with(|slot| {
        let mut slot = slot.borrow_mut();
        if !slot.in_body {
            return None;
        }
        let helper = slot.helper.get_or_insert_with(|| {
            Arc::new(Helper {
                thread: std::thread::current(),
                offered: Mutex::new(VecDeque::new()),
            })
        });
        Some(helper.clone())
    })
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

impl Helper {
    /// Offers a queued body to this helper, and wakes it if it waits.
    pub(crate) fn offer(&self, body: Arc<dyn QueuedBody>) {
        self.offered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(body);
        self.thread.unpark();
    }

    fn next_offered(&self) -> Option<Arc<dyn QueuedBody>> {
        self.offered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Blocks this thread on `future`, running offered bodies while it is
    /// pending. Woken by the future or by an offer: it never polls on a timer.
    pub(crate) fn block_on<F: Future>(&self, future: F) -> F::Output {
        debug_assert_eq!(self.thread.id(), std::thread::current().id());
        let waker = Waker::from(Arc::new(Unpark(self.thread.clone())));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            match self.next_offered() {
                Some(body) => {
                    body.run_here();
                }
                // An offer or the future's wake-up unparks; a spurious one loops.
                None => std::thread::park(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_queued_body_runs_once() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let body = queue(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert!(body.run_here());
        assert!(!body.run_here());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_helper_runs_what_it_is_offered_while_it_waits() {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let value = run_as_helper(|| {
            let helper = current().expect("a helper");
            helper.offer(queue(move || {
                let _ = sender.send(7);
            }));
            helper.block_on(receiver)
        });
        assert_eq!(value.unwrap(), 7);
        assert!(current().is_none(), "the helper ends with its body");
    }

    #[test]
    fn a_helper_wakes_for_an_offer_from_another_thread() {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let value = run_as_helper(|| {
            let helper = current().expect("a helper");
            let offering = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                helper.offer(queue(move || {
                    let _ = sender.send(9);
                }));
            });
            let value = current().unwrap().block_on(receiver);
            offering.join().unwrap();
            value
        });
        assert_eq!(value.unwrap(), 9);
    }
}
