//! [`GroupTake`]: the inputs a group of async lanes takes ahead, together.
//!
//! A collecting window's async lanes are driven a group per runtime
//! thread, and the lanes of a group never run at once. A lane whose body
//! ends in its first poll goes straight on to its next input, so one lane
//! of each group runs nearly every quick run. Taking one input per look,
//! the two threads of this machine ran a map of quick bodies slower than
//! one thread did (0.26 µs per input against 0.17), as the queue's lock
//! and its lines went back and forth. So while runs are quick a look takes
//! several inputs, doubling up to the group's share of the window: one for
//! the lane, the others held for whichever lane of its group is free next.
//!
//! A held input never waits behind a body that waits: a lane about to wait
//! gives its group's held inputs back to the queue, where any lane takes
//! them first, and its group takes one at a time again. The queue counts
//! the inputs groups hold ahead; a lane that finds none left to take waits
//! while any are held, rather than ending while they may come back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use super::map_queue::{LaneNotes, Queue};
use super::map_run::{MapRun, Next};
use super::taken::{Submitted, Taken};
use crate::future::RunShared;
use crate::names::TaskRunName;
use crate::state::State;
use crate::task::Task;

/// How many times a look that takes several inputs tries the queue's lock
/// before it sleeps on it.
const SPINS: u32 = 1000;

/// How many records of its ended runs a group keeps for its next runs.
const KEPT_RECORDS: usize = 2 * MAX_TAKE;

/// The most inputs one look takes: its group's share of the window, up to
/// this, so that the other threads never wait long for the lock.
const MAX_TAKE: usize = 64;

/// Inputs taken ahead by a group of lanes, in input order, and how many to
/// take at the next look.
pub(super) struct GroupTake<T: Task> {
    inner: Mutex<Held<T>>,
}

/// What a group holds, behind its lock.
pub(super) struct Held<T: Task> {
    taken: VecDeque<Taken<T>>,
    size: TakeSize,
    /// Records of its lanes' ended runs, which nobody else holds, and
    /// those made ready for a look and not used: its next runs are made
    /// in them before it looks at the queue, not under the queue's lock.
    records: Vec<Arc<RunShared<T::Output>>>,
    ready: Vec<Arc<RunShared<T::Output>>>,
    /// How many of the inputs it took the queue counts as held ahead: those
    /// it holds, and those its lanes took from it since its last look.
    counted: usize,
}

impl<T: Task> GroupTake<T> {
    /// A group that takes at most `share` inputs at a look (its share of
    /// the window, up to [`MAX_TAKE`]).
    pub(super) fn new(share: usize) -> Self {
        GroupTake {
            inner: Mutex::new(Held {
                taken: VecDeque::new(),
                size: TakeSize::new(share),
                records: Vec::new(),
                ready: Vec::new(),
                counted: 0,
            }),
        }
    }

    // The lanes of a group never run at once: never contended.
    fn lock(&self) -> MutexGuard<'_, Held<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How many inputs a group takes at a look: one, doubling while its runs
/// are quick, up to its most.
#[derive(Debug)]
struct TakeSize {
    take: usize,
    most: usize,
}

impl TakeSize {
    fn new(share: usize) -> Self {
        TakeSize {
            take: 1,
            most: share.clamp(1, MAX_TAKE),
        }
    }

    /// How many inputs to take at this look, beyond the lane's own: more
    /// while runs end in their first poll (`quick`), none once one waited.
    fn more(&mut self, quick: bool) -> usize {
        self.take = match quick {
            true => (self.take * 2).min(self.most),
            false => 1,
        };
        self.take - 1
    }

    /// Its lane waits: one input at a time from now on.
    fn slow_down(&mut self) {
        self.take = 1;
    }
}

impl<T: Task> MapRun<T> {
    /// A lane's next input, and whether its group held it: one the group
    /// took ahead, else the queue's next, made at `ended_at` (the end of
    /// the lane's last run, if it ended in its first poll), with more for
    /// the group while runs end so.
    pub(super) fn take_next_ahead(
        &self,
        ahead: Option<&GroupTake<T>>,
        ended_at: Option<i64>,
        notes: &mut LaneNotes<T::Output>,
    ) -> (Next<T>, bool) {
        let Some(ahead) = ahead else {
            return (self.take_next(ended_at, notes), false);
        };
        let mut held = ahead.lock();
        if let Some(taken) = held.taken.pop_front() {
            return (Next::Input(taken), true);
        }
        let more = held.size.more(ended_at.is_some());
        // Made at one time, the lane's last run's end or now.
        let created_at = ended_at.unwrap_or_else(crate::clock::now_nanos);
        self.make_ready(&mut held, more + 1, created_at);
        let next = self.take_next_and_more(Some(created_at), notes, &mut held, more);
        let held = &mut *held;
        held.records.append(&mut held.ready);
        if let Some(records) = &mut notes.records {
            held.records.append(records);
        }
        held.records.truncate(KEPT_RECORDS);
        (next, false)
    }

    /// Makes up to `count` of the group's records ready for runs made at
    /// `created_at`, named once the look reads their inputs.
    fn make_ready(&self, held: &mut Held<T>, count: usize, created_at: i64) {
        let spec = self.task.spec();
        let name = TaskRunName {
            task: spec.name,
            index: 0,
        };
        while held.ready.len() < count {
            let Some(mut record) = held.records.pop() else {
                return;
            };
            let pending = State::pending_at(created_at);
            RunShared::renew(&mut record, name, spec, pending, self.waiter.clone());
            held.ready.push(record);
        }
    }

    /// As [`take_next`](MapRun::take_next), and, if it took one, up to
    /// `more` further inputs for the group to hold ahead (`held`, empty),
    /// made at the same time and under the same look.
    fn take_next_and_more(
        &self,
        created_at: Option<i64>,
        notes: &mut LaneNotes<T::Output>,
        held: &mut Held<T>,
        more: usize,
    ) -> Next<T> {
        if self.stopped() && !notes.has_handed() {
            return Next::Done;
        }
        let mut queue = match more {
            0 => self.queue(),
            _ => self.queue_spinning(),
        };
        self.take_notes(&mut queue, notes);
        // The inputs it held are all run: no longer held ahead.
        self.settle(&mut queue, held);
        if self.stopped() {
            return Next::Done;
        }
        // Given back first: announced already, when they were first taken.
        let given_back = queue.given_back.len();
        let next = self.take_next_locked_in(&mut queue, created_at, Some(&mut held.ready));
        if let Next::Input(_) = &next {
            while held.taken.len() < more {
                match self.take_next_locked_in(&mut queue, created_at, Some(&mut held.ready)) {
                    Next::Input(taken) => held.taken.push_back(taken),
                    _ => break,
                }
            }
            // Counted under the lock that took them: no lane finds the
            // inputs ended without seeing them held.
            held.counted = held.taken.len();
            queue.held_ahead += held.counted;
        }
        Self::let_go(queue);
        // Announced with the queue let go: the other threads' lanes wait
        // for it only as long as reading the inputs takes.
        let fresh = std::iter::once(&next)
            .filter_map(|next| match next {
                Next::Input(taken) => Some(taken),
                _ => None,
            })
            .chain(held.taken.iter())
            .skip(given_back);
        for (_, run, submitted) in fresh {
            if let Submitted::Args(args) = submitted {
                self.task_run(run)
                    .announce(&args.upstream(self.task.spec().param_names));
            }
        }
        next
    }

    /// The queue, for a look that takes several inputs: spinning a while
    /// before it sleeps, as another thread's look takes about as long as a
    /// few quick runs. Sleeping at once, the threads took turns through the
    /// kernel (futex waits and wakes were a fifth of the time, `perf`).
    fn queue_spinning(&self) -> MutexGuard<'_, Queue<T>> {
        for _ in 0..SPINS {
            match self.queue.try_lock() {
                Ok(queue) => return queue,
                Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => std::hint::spin_loop(),
            }
        }
        self.queue()
    }

    /// A group's inputs held ahead are run or given back: the queue no
    /// longer counts them. Lanes that found no input left wait until no
    /// group holds any: the last to settle wakes them, to end.
    fn settle(&self, queue: &mut Queue<T>, held: &mut Held<T>) {
        let counted = std::mem::take(&mut held.counted);
        queue.held_ahead -= counted;
        if counted > 0 && queue.held_ahead == 0 && queue.none_left_to_read() {
            self.room.notify_waiters();
        }
    }

    /// The lane of a group that holds inputs ahead is about to wait: it
    /// gives them back to the queue, for whichever lane looks next, and its
    /// group takes one input at a time until its runs are quick again.
    pub(super) fn give_back(&self, ahead: &GroupTake<T>) {
        let mut held = ahead.lock();
        held.size.slow_down();
        if held.counted == 0 {
            return;
        }
        let given = !held.taken.is_empty();
        let mut queue = self.queue();
        queue.given_back.extend(held.taken.drain(..));
        self.settle(&mut queue, &mut held);
        if given {
            // Lanes that found no input left wait for these.
            self.room.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_take_doubles_while_runs_are_quick_up_to_the_share() {
        let mut size = TakeSize::new(50);
        let more: Vec<usize> = (0..8).map(|_| size.more(true)).collect();
        assert_eq!(more, [1, 3, 7, 15, 31, 49, 49, 49]);
        // A run that waited: one at a time, then doubling again.
        assert_eq!(size.more(false), 0);
        assert_eq!(size.more(true), 1);
        size.slow_down();
        assert_eq!(size.more(false), 0);
    }

    #[test]
    fn a_take_is_at_least_one_and_at_most_max_take() {
        let mut small = TakeSize::new(0);
        assert_eq!((0..5).map(|_| small.more(true)).max(), Some(0));
        let mut large = TakeSize::new(10_000);
        assert_eq!((0..20).map(|_| large.more(true)).max(), Some(MAX_TAKE - 1));
    }
}
