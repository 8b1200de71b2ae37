//! [`FlowPool`]: the thread pool that runs a flow run's sync task bodies,
//! lent from the pools that earlier flow runs left idle.
//!
//! Building a pool starts its threads (about 0.15 ms on a 2-core machine),
//! and fresh threads run their first bodies slowly (cold caches, a new
//! allocator arena each): a program that calls many short flows paid that
//! on every call, and a map of 10,000 quick inputs ran 1.2–1.4× slower per
//! input than one of 1,000,000. A flow run now takes an idle pool of the
//! size it needs, if one is left, and gives it back when it ends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Idle pools kept for later flow runs, at most (the most recent): enough
/// for flows of a few sizes, or a few flows at once, without holding many threads.
const MAX_IDLE: usize = 4;

static IDLE: Mutex<Vec<rayon::ThreadPool>> = Mutex::new(Vec::new());

/// A flow run's pool for sync bodies, back among the idle ones when dropped.
pub(crate) struct FlowPool {
    pool: Option<rayon::ThreadPool>,
    /// Jobs spawned and not yet ended.
    jobs: Arc<AtomicUsize>,
}

impl FlowPool {
    /// A pool of `max_workers` threads (else one per core): an idle one if
    /// there is one of that size, else a new one.
    pub(crate) fn lend(max_workers: Option<usize>) -> Result<Self, rayon::ThreadPoolBuildError> {
        // Asked once per process: it reads the cgroup's files.
        static CORES: OnceLock<usize> = OnceLock::new();
        let workers = max_workers.filter(|&n| n > 0).unwrap_or_else(|| {
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
        });
        let idle = {
            let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
            // The most recently idle: its threads are the likeliest to be warm.
            let found = idle
                .iter()
                .rposition(|p| p.current_num_threads() == workers);
            found.map(|i| idle.swap_remove(i))
        };
        let pool = match idle {
            Some(pool) => pool,
            None => rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .thread_name(|i| format!("prefecto-worker-{i}"))
                .build()?,
        };
        Ok(FlowPool {
            pool: Some(pool),
            jobs: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn pool(&self) -> &rayon::ThreadPool {
        self.pool.as_ref().expect("taken only on drop")
    }

    /// Runs `job` on one of the pool's threads.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        struct Ended(Arc<AtomicUsize>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Release);
            }
        }
        self.jobs.fetch_add(1, Ordering::Relaxed);
        let ended = Ended(self.jobs.clone());
        self.pool().spawn(move || {
            // Counted out even if the job panics.
            let _ended = ended;
            job();
        });
    }

    pub(crate) fn current_num_threads(&self) -> usize {
        self.pool().current_num_threads()
    }
}

impl Drop for FlowPool {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        // A job still going (the body of a run that timed out, or one the
        // flow run stopped waiting for) holds a thread: the next flow run
        // would get fewer than it asked for. Such a pool ends with its jobs.
        if self.jobs.load(Ordering::Acquire) > 0 {
            return;
        }
        let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
        // The oldest idle pool goes (its threads end) to keep this one.
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_has_the_size_asked_for() {
        let pool = FlowPool::lend(Some(3)).unwrap();
        assert_eq!(pool.current_num_threads(), 3);
    }

    #[test]
    fn an_idle_pool_is_lent_again_and_a_busy_one_is_not() {
        // A size no other test asks for: the idle pools are the process's.
        let first = FlowPool::lend(Some(7)).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        first.spawn(move || sender.send(std::thread::current().id()).unwrap());
        let thread = receiver.recv().unwrap();
        // Counted out once the job's closure has returned.
        while first.jobs.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
        }
        drop(first);
        let second = FlowPool::lend(Some(7)).unwrap();
        let mut seen = std::collections::HashSet::new();
        let (sender, receiver) = std::sync::mpsc::channel();
        let release = Arc::new(std::sync::Barrier::new(8));
        for _ in 0..7 {
            let (sender, release) = (sender.clone(), release.clone());
            second.spawn(move || {
                sender.send(std::thread::current().id()).unwrap();
                release.wait();
            });
        }
        for _ in 0..7 {
            seen.insert(receiver.recv().unwrap());
        }
        assert!(seen.contains(&thread), "the same threads, lent again");
        // Dropped with its jobs still going: not kept.
        drop(second);
        let third = FlowPool::lend(Some(7)).unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        third.spawn(move || sender.send(std::thread::current().id()).unwrap());
        assert!(!seen.contains(&receiver.recv().unwrap()), "a new pool");
        release.wait();
    }
}
