//! Waiting for child flow runs to end: one loop per set of children reads
//! all of their states in one request (`POST /flow_runs/filter` by id),
//! every 0.5 s while states change and backing off to every 2 s while
//! none does, rather than one poll per child as Python's `run_deployment`
//! does (every 5 s each). The events websocket would push the states, but
//! a lost connection would then lose an end; a read always has the truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::wire::{AnyOfIds, ChildRead, FlowRunsWithIds, IdsAnyOf};
use super::worker_loss::{LOOK_EVERY, crash_children_of_lost_workers};
use crate::prefect_api::{Client, Sent, is_final};

const FASTEST: Duration = Duration::from_millis(500);
const SLOWEST: Duration = Duration::from_secs(2);
/// Ids per read, well under what a request may carry.
const IDS_PER_READ: usize = 200;

/// The children being waited for, and whether a loop reads them.
pub(crate) struct ChildWatcher {
    client: Client,
    waiting: Mutex<Waiting>,
    requests: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Waiting {
    children: HashMap<Uuid, Vec<oneshot::Sender<ChildRead>>>,
    looping: bool,
}

/// Marks the loop gone if it is dropped mid-way (its runtime shut down), so
/// the next waiter starts another. A loop that ends by itself says so
/// under the lock, where no waiter can have started a new one yet.
struct LoopGuard {
    watcher: Arc<ChildWatcher>,
    ended: bool,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Ok(mut waiting) = self.watcher.waiting.lock() {
            waiting.looping = false;
        }
    }
}

impl ChildWatcher {
    pub(crate) fn new(client: Client) -> Arc<Self> {
        Arc::new(ChildWatcher {
            client,
            waiting: Mutex::new(Waiting::default()),
            requests: Default::default(),
        })
    }

    /// HTTP requests the watcher has made.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The child's run once it is final. Dropping the future stops waiting.
    pub(crate) async fn wait_final(self: &Arc<Self>, child: Uuid) -> ChildRead {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut waiting = self.waiting.lock().expect("the watcher's lock");
            waiting.children.entry(child).or_default().push(tx);
            !std::mem::replace(&mut waiting.looping, true)
        };
        if start {
            let guard = LoopGuard {
                watcher: self.clone(),
                ended: false,
            };
            tokio::spawn(self.clone().read_loop(guard));
        }
        match rx.await {
            Ok(read) => read,
            // The loop's runtime went away under it: wait again, with a new loop.
            Err(_) => Box::pin(self.wait_final(child)).await,
        }
    }

    async fn read_loop(self: Arc<Self>, mut guard: LoopGuard) {
        let mut pause = FASTEST;
        let mut last_look = std::time::Instant::now();
        loop {
            tokio::time::sleep(pause).await;
            let ids: Vec<Uuid> = {
                let mut waiting = self.waiting.lock().expect("the watcher's lock");
                waiting.children.retain(|_, senders| {
                    senders.retain(|s| !s.is_closed());
                    !senders.is_empty()
                });
                if waiting.children.is_empty() {
                    waiting.looping = false;
                    guard.ended = true;
                    return;
                }
                waiting.children.keys().copied().collect()
            };
            let mut ended = 0;
            let look = last_look.elapsed() >= LOOK_EVERY;
            let mut unfinished = Vec::new();
            for chunk in ids.chunks(IDS_PER_READ) {
                let mut sent = Sent::default();
                let reads: Result<Vec<ChildRead>, _> = self
                    .client
                    .send_json(
                        Method::POST,
                        "/flow_runs/filter",
                        &FlowRunsWithIds {
                            flow_runs: IdsAnyOf {
                                id: AnyOfIds { any_: chunk },
                            },
                            limit: chunk.len(),
                        },
                        &mut sent,
                    )
                    .await;
                self.requests
                    .fetch_add(sent.requests, std::sync::atomic::Ordering::Relaxed);
                let Ok(reads) = reads else {
                    // The client retried already; the next round reads again.
                    continue;
                };
                let mut waiting = self.waiting.lock().expect("the watcher's lock");
                for read in reads {
                    if !read.state_type.as_deref().is_some_and(is_final) {
                        if look {
                            unfinished.push(read);
                        }
                        continue;
                    }
                    if let Some(senders) = waiting.children.remove(&read.id) {
                        ended += 1;
                        for sender in senders {
                            let _ = sender.send(read.clone());
                        }
                    }
                }
            }
            if look {
                last_look = std::time::Instant::now();
                let mut sent = Sent::default();
                // Crashed here, they are read as final in the next round.
                let crashed =
                    crash_children_of_lost_workers(&self.client, &unfinished, &mut sent).await;
                self.requests
                    .fetch_add(sent.requests, std::sync::atomic::Ordering::Relaxed);
                ended += crashed.len();
            }
            pause = if ended > 0 {
                FASTEST
            } else {
                (pause * 3 / 2).min(SLOWEST)
            };
        }
    }
}
