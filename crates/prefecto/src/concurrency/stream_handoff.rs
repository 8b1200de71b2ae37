//! How a streaming map's outcomes reach its reader: a chunk at a time, not
//! one channel message per outcome.
//!
//! Each group of lanes (the lanes one task drives, or one pool lane) puts
//! its outcomes in a buffer of its own, which goes through the channel as
//! one message once it holds a chunk. A reader that finds the channel
//! empty gives the lanes a few microseconds to fill a chunk (yielding its
//! thread, or asleep: see [`Filling`]), then takes what the buffers hold;
//! only if they are empty does it wait, marked as waiting, and then every
//! outcome handed over goes at once. So no outcome
//! sits in a buffer while its reader waits, whatever the bodies do, and no
//! lane has to hand anything over before it waits.
//!
//! The outcomes between the lanes and the reader's hands, buffered, in the
//! channel or taken and not read yet, are bounded by a count of room, as
//! a bounded channel bounds its messages: a lane takes room before it
//! buffers an outcome (a chunk's worth at a time), and the reader gives it
//! back once it has read what it took.
//!
//! Why: a message per outcome (a permit, a slot in the channel, a wake-up
//! of the reader's thread) cost a quick stream about a third of its time,
//! and much more when the host made those threads' shared cache lines slow
//! to pass between cores.
//!
//! In input order, every outcome goes through one buffer, in order, and
//! the reader looks at the channel under that buffer's lock before it
//! takes from it: what the channel holds was handed over first.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, TryAcquireError, mpsc};

use super::stream_stop::StreamStop;
use crate::future::{PrefectFuture, RunShared, TaskRunError};
use crate::names::TaskRunName;

/// Outcomes per message, at most, when there is room for four times as
/// many: a full buffer goes through the channel.
const CHUNK: usize = 32;

/// How long a reader that finds nothing in the channel lets the lanes fill
/// a chunk before it takes what their buffers hold: lanes going straight
/// on fill one within this, and taking a few outcomes at a time would pass
/// each buffer between threads for every few.
const FILLING: Duration = Duration::from_micros(10);

/// How long a reader of pool lanes sleeps instead (see [`Filling`]); the
/// kernel's timer slack (50 µs by default) makes any shorter sleep about as long.
const POOL_FILLING: Duration = Duration::from_micros(50);

/// How a reader that finds nothing in the channel lets the lanes fill a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filling {
    /// It yields its thread for up to [`FILLING`], looking between yields:
    /// for lanes on the runtime's threads (async bodies).
    Yield,
    /// It sleeps for [`POOL_FILLING`], then looks: for pool lanes (sync
    /// bodies), which keep every core busy. A reader yielding its thread
    /// again and again (a `sched_yield` each time) took a core's share
    /// from them: at 10,000 inputs it spent half as much of the machine as
    /// they did (`perf record`, the reader's thread 3,900-4,400 samples, the
    /// pool's 7,100-8,000). Asleep, it wakes to a few hundred outcomes and
    /// takes them in one go; `batch_task --rss 'stream window, sync body'`,
    /// five processes of each by turns: 0.159 -> 0.134 µs at 10,000
    /// inputs, 0.155 -> 0.124 at 100,000, 0.141 -> 0.124 at 1,000,000.
    /// Async streams gained nothing at 1,000,000 and lost at 10,000 (0.195
    /// -> 0.25 µs). It holds its thread while it sleeps, as it did while
    /// it yielded (up to 10 µs); an outcome handed over meanwhile waits in
    /// a buffer until it wakes.
    Sleep,
}

/// A finished run's outcome on its way to the reader, taken by the lane
/// that finished it, so that the reader never touches the run's record.
/// Its error is boxed: errors are rare, and a chunk's items are moved.
pub(super) struct HandedRun<T> {
    pub(super) index: usize,
    pub(super) task_run: TaskRunName,
    pub(super) result: Result<T, Box<TaskRunError>>,
}

impl<T> HandedRun<T> {
    /// Takes a finished run's outcome.
    pub(super) fn of(index: usize, run: &RunShared<T>) -> Self {
        HandedRun {
            index,
            task_run: run.name(),
            result: run.take_outcome().map_err(Box::new),
        }
    }

    /// Takes the outcome of a finished run a map holds.
    pub(super) fn of_future(index: usize, run: &mut PrefectFuture<T>) -> Self {
        HandedRun {
            index,
            task_run: run.task_run_name(),
            result: run.take_outcome().map_err(Box::new),
        }
    }
}

/// What the map sends its reader: outcomes, oldest first, with the room
/// they hold; or the end.
pub(super) enum Streamed<T> {
    Runs(Vec<HandedRun<T>>, usize),
    End(Option<Box<StreamStop>>),
}

/// A group of lanes' outcomes handed over and not sent yet.
pub(super) struct Buffer<T>(Mutex<Held<T>>);

struct Held<T> {
    runs: Vec<HandedRun<T>>,
    /// Room taken for them: at least as much as they are.
    room: usize,
}

impl<T> Buffer<T> {
    fn lock(&self) -> MutexGuard<'_, Held<T>> {
        // Every writer leaves it whole: a panic cannot leave it half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What both ends see.
struct Shared<T> {
    buffers: Mutex<Vec<Arc<Buffer<T>>>>,
    /// How many buffers there are, for the reader to see a new one.
    count: AtomicUsize,
    /// The reader found nothing and waits: every outcome goes at once.
    /// Read by a lane under its buffer's lock, set by the reader before it
    /// looks at the buffers: one of the two sees the other's outcome.
    reader_waits: AtomicBool,
    /// Room for outcomes not read yet. Closed once the reader is gone.
    room: Semaphore,
}

/// The map's end: where lanes hand over outcomes.
pub(super) struct Handoff<T> {
    sender: mpsc::UnboundedSender<Streamed<T>>,
    shared: Arc<Shared<T>>,
    /// Outcomes a buffer holds before it goes through the channel.
    chunk: usize,
}

/// The reader's end, inside a [`MapStream`](super::MapStream).
pub(super) struct Reader<T> {
    receiver: mpsc::UnboundedReceiver<Streamed<T>>,
    shared: Arc<Shared<T>>,
    /// The buffers, as many as it knows of.
    buffers: Vec<Arc<Buffer<T>>>,
    /// What it has taken and not read yet, oldest first. Emptied, its
    /// room goes back as a lane's next buffer.
    at_hand: VecDeque<HandedRun<T>>,
    /// The room what it has taken holds, given back once it is read.
    held: usize,
    /// The end, once it came: read after what is at hand.
    end: Option<Option<Box<StreamStop>>>,
    filling: Filling,
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        // Lanes waiting for room hand over into nothing instead.
        self.shared.room.close();
    }
}

/// A map's two ends, with room for `outcomes` not read yet.
pub(super) fn handoff<T>(outcomes: usize) -> (Handoff<T>, Reader<T>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let outcomes = outcomes.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        buffers: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
        reader_waits: AtomicBool::new(false),
        room: Semaphore::new(outcomes),
    });
    let reader = Reader {
        receiver,
        shared: shared.clone(),
        buffers: Vec::new(),
        at_hand: VecDeque::new(),
        held: 0,
        end: None,
        filling: Filling::Yield,
    };
    let chunk = (outcomes / 4).clamp(1, CHUNK);
    (
        Handoff {
            sender,
            shared,
            chunk,
        },
        reader,
    )
}

/// Room for `n` outcomes, without waiting: `None` if there is not enough;
/// `Some(false)` if the reader is gone (nothing needs room).
fn try_take_room(room: &Semaphore, n: usize) -> Option<bool> {
    match room.try_acquire_many(n.min(u32::MAX as usize) as u32) {
        Ok(permit) => {
            permit.forget();
            Some(true)
        }
        Err(TryAcquireError::NoPermits) => None,
        Err(TryAcquireError::Closed) => Some(false),
    }
}

impl<T> Handoff<T> {
    /// Buffer `group`, made on the first ask. Lanes that run at once had
    /// best have buffers of their own; sharing one is correct, only slower.
    pub(super) fn buffer(&self, group: usize) -> Arc<Buffer<T>> {
        let mut buffers = self
            .shared
            .buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while buffers.len() <= group {
            buffers.push(Arc::new(Buffer(Mutex::new(Held {
                runs: Vec::new(),
                room: 0,
            }))));
        }
        self.shared.count.store(buffers.len(), Ordering::Release);
        buffers[group].clone()
    }

    /// Hands over `count` outcomes, which `take` pushes, into `buffer`, if
    /// that needs no wait for room. Whether it did; if not, `take` was not
    /// called.
    pub(super) fn try_hand(
        &self,
        buffer: &Buffer<T>,
        count: usize,
        take: impl FnOnce(&mut Vec<HandedRun<T>>),
    ) -> bool {
        let mut held = buffer.lock();
        let need = (held.runs.len() + count).saturating_sub(held.room);
        let mut reader_gone = false;
        if need > 0 {
            // A chunk's room at a time, so that most hand-overs take none;
            // only what is needed if that is all there is.
            let got = try_take_room(&self.shared.room, need.max(self.chunk))
                .map(|taken| (taken, need.max(self.chunk)))
                .or_else(|| try_take_room(&self.shared.room, need).map(|taken| (taken, need)));
            match got {
                Some((true, taken)) => held.room += taken,
                Some((false, _)) => reader_gone = true,
                None => return false,
            }
        }
        if held.runs.capacity() == 0 {
            held.runs.reserve(self.chunk);
        }
        take(&mut held.runs);
        if reader_gone {
            // Nobody will read them: the history has them.
            held.runs.clear();
            return true;
        }
        // Ordered after the reader's mark by the buffer's lock: see `Shared`.
        let reader_waits = self.shared.reader_waits.load(Ordering::Relaxed);
        if held.runs.len() >= self.chunk || reader_waits {
            self.send(&mut held);
        }
        true
    }

    fn send(&self, held: &mut Held<T>) {
        let runs = std::mem::take(&mut held.runs);
        // The rest of the room taken stays for the next ones.
        let room = runs.len().min(held.room);
        held.room -= room;
        // The reader is gone if this fails: the history has them.
        let _ = self.sender.send(Streamed::Runs(runs, room));
    }

    /// Hands over outcomes already taken, after what `buffer` holds,
    /// waiting for room. Cancel-safe: dropped while it waits, it hands
    /// over nothing and holds no room.
    pub(super) async fn hand(&self, buffer: &Buffer<T>, runs: Vec<HandedRun<T>>) {
        loop {
            let need = {
                let mut held = buffer.lock();
                let need = (held.runs.len() + runs.len()).saturating_sub(held.room);
                if need == 0 {
                    held.runs.extend(runs);
                    self.send(&mut held);
                    return;
                }
                need
            };
            let n = need.min(u32::MAX as usize) as u32;
            match self.shared.room.acquire_many(n).await {
                Ok(permit) => permit.forget(),
                // The reader is gone: the outcomes go with it.
                Err(_) => return,
            }
            // Looked at again: the reader may have taken the buffer meanwhile.
            buffer.lock().room += n as usize;
        }
    }

    /// Sends what the buffers hold, then the end.
    pub(super) fn end(&self, stop: Option<Box<StreamStop>>) {
        let buffers = self
            .shared
            .buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        for buffer in buffers {
            let mut held = buffer.lock();
            if !held.runs.is_empty() {
                self.send(&mut held);
            }
        }
        let _ = self.sender.send(Streamed::End(stop));
    }
}

/// What the reader finds.
pub(super) enum Read<T> {
    Run(HandedRun<T>),
    /// The map ended, having said why if it stopped early; or it is gone
    /// without a word (its runtime shut down).
    End(Option<Box<StreamStop>>),
}

impl<T> Reader<T> {
    /// As it is, letting the lanes fill a chunk as `filling` says.
    pub(super) fn filling(mut self, filling: Filling) -> Self {
        self.filling = filling;
        self
    }

    /// The next outcome at hand, in the channel, or in a buffer, without
    /// waiting for longer than lanes going straight on take to fill a
    /// chunk; `None` if there is none yet: then wait for a message on the
    /// [`receiver`](Self::receiver), and give it to [`read`](Self::read).
    pub(super) fn try_read(&mut self) -> Option<Read<T>> {
        loop {
            if let Some(run) = self.at_hand.pop_front() {
                return Some(Read::Run(run));
            }
            if let Some(stop) = self.end.take() {
                return Some(Read::End(stop));
            }
            if !self.look() {
                return None;
            }
        }
    }

    /// Brings in what the channel and the buffers hold; false if nothing
    /// (then it is marked as waiting).
    fn look(&mut self) -> bool {
        // What it took is read: its room goes back, before any wait for more.
        self.shared.room.add_permits(std::mem::take(&mut self.held));
        let until = Instant::now() + FILLING;
        let mut slept = false;
        let mut closed = loop {
            match self.receiver.try_recv() {
                Ok(message) => {
                    self.held += accept(&mut self.at_hand, &mut self.end, message);
                    return true;
                }
                Err(TryRecvError::Empty) => match self.filling {
                    Filling::Yield if Instant::now() < until => std::thread::yield_now(),
                    Filling::Sleep if !slept => {
                        slept = true;
                        std::thread::sleep(POOL_FILLING);
                    }
                    Filling::Yield | Filling::Sleep => break false,
                },
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        // Marked first: a lane handing over after its look below sends at once.
        self.shared.reader_waits.store(true, Ordering::SeqCst);
        if self.shared.count.load(Ordering::Acquire) != self.buffers.len() {
            self.buffers = self
                .shared
                .buffers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
        }
        let mut found = false;
        for buffer in &self.buffers {
            let mut held = buffer.lock();
            // The channel first: what it holds was handed over before what is buffered.
            loop {
                match self.receiver.try_recv() {
                    Ok(message) => {
                        self.held += accept(&mut self.at_hand, &mut self.end, message);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
                found = true;
            }
            // Its room too, even with nothing in it: a lane waiting for
            // room must not wait for room another holds for nothing.
            self.held += std::mem::take(&mut held.room);
            if held.runs.is_empty() {
                continue;
            }
            found = true;
            if self.at_hand.is_empty() {
                // Its room becomes the lanes' next buffer.
                let mut spare = Vec::from(std::mem::take(&mut self.at_hand));
                std::mem::swap(&mut spare, &mut held.runs);
                self.at_hand = VecDeque::from(spare);
            } else {
                self.at_hand.extend(held.runs.drain(..));
            }
        }
        if closed && !found {
            // Gone without a word: only if its runtime was shut down.
            self.end = Some(None);
            found = true;
        }
        match found {
            true => self.shared.reader_waits.store(false, Ordering::Relaxed),
            // Nothing at hand: no room held while it waits.
            false => self.shared.room.add_permits(std::mem::take(&mut self.held)),
        }
        found
    }

    /// The channel, to wait on when [`try_read`](Self::try_read) found nothing.
    pub(super) fn receiver(&mut self) -> &mut mpsc::UnboundedReceiver<Streamed<T>> {
        &mut self.receiver
    }

    /// What a message waited for brings; `None` if nothing (look again).
    pub(super) fn read(&mut self, message: Option<Streamed<T>>) -> Option<Read<T>> {
        self.shared.reader_waits.store(false, Ordering::Relaxed);
        match message {
            Some(message) => self.held += accept(&mut self.at_hand, &mut self.end, message),
            None => self.end = Some(None),
        }
        if let Some(run) = self.at_hand.pop_front() {
            return Some(Read::Run(run));
        }
        self.end.take().map(Read::End)
    }
}

/// Puts a message's outcomes after those at hand, or keeps its end; the
/// room they hold.
fn accept<T>(
    at_hand: &mut VecDeque<HandedRun<T>>,
    end: &mut Option<Option<Box<StreamStop>>>,
    message: Streamed<T>,
) -> usize {
    match message {
        Streamed::Runs(runs, room) => {
            match at_hand.is_empty() {
                true => *at_hand = VecDeque::from(runs),
                false => at_hand.extend(runs),
            }
            room
        }
        Streamed::End(stop) => {
            *end = Some(stop);
            0
        }
    }
}

#[cfg(test)]
mod tests;
