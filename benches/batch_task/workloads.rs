//! The bench's workloads: what a Rust user would write instead (the
//! baselines), and prefecto's maps and streams, each run once over `n`
//! trivial inputs; and the stragglers' flow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::join_all;
use prefecto::prelude::*;
use rayon::prelude::*;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub const SIZE: usize = 100;

#[task]
async fn add_one(x: u64) -> u64 {
    x + 1
}

#[task]
fn add_one_sync(x: u64) -> u64 {
    x + 1
}

/// What is measured: a baseline, or prefecto in a mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    BufferUnordered,
    JoinSetSemaphore,
    HandStrict,
    Rayon,
    /// `BatchTask::map`, collecting every result.
    Map {
        mode: BatchMode,
        sync_body: bool,
    },
    /// `BatchTask::stream_unordered`, summing outcomes as they come.
    Stream {
        mode: BatchMode,
        sync_body: bool,
    },
}

pub use Workload::*;

pub const BASELINES: [Workload; 4] = [BufferUnordered, JoinSetSemaphore, HandStrict, Rayon];

pub const PREFECTO: [Workload; 6] = [
    Map {
        mode: BatchMode::SlidingWindow,
        sync_body: false,
    },
    Map {
        mode: BatchMode::Strict,
        sync_body: false,
    },
    Map {
        mode: BatchMode::SlidingWindow,
        sync_body: true,
    },
    Map {
        mode: BatchMode::Strict,
        sync_body: true,
    },
    Stream {
        mode: BatchMode::SlidingWindow,
        sync_body: false,
    },
    Stream {
        mode: BatchMode::SlidingWindow,
        sync_body: true,
    },
];

impl Workload {
    pub fn name(self) -> String {
        let body = |sync: bool| if sync { "sync" } else { "async" };
        let mode = |mode: BatchMode| match mode {
            BatchMode::Strict => "strict",
            BatchMode::SlidingWindow => "window",
            _ => "other",
        };
        match self {
            BufferUnordered => "futures buffer_unordered(100)".into(),
            JoinSetSemaphore => "tokio JoinSet + Semaphore(100)".into(),
            HandStrict => "hand-written strict (100 spawns)".into(),
            Rayon => "rayon par_iter (sync)".into(),
            Map { mode: m, sync_body } => format!("map {}, {} body", mode(m), body(sync_body)),
            Stream { mode: m, sync_body } => {
                format!("stream {}, {} body", mode(m), body(sync_body))
            }
        }
    }

    pub fn parse(name: &str) -> Workload {
        *BASELINES
            .iter()
            .chain(PREFECTO.iter())
            .find(|w| w.name() == name)
            .unwrap_or_else(|| panic!("no workload {name:?}"))
    }

    /// Runs once over `n` inputs; the seconds it took. Checks the results.
    pub fn run(self, runtime: &Runtime, n: u64) -> f64 {
        let started = Instant::now();
        let checksum: u64 = match self {
            BufferUnordered => runtime.block_on(async {
                let results: Vec<u64> = futures::stream::iter(0..n)
                    .map(|x| async move { x + 1 })
                    .buffer_unordered(SIZE)
                    .collect()
                    .await;
                results.iter().sum()
            }),
            JoinSetSemaphore => runtime.block_on(join_set(n)),
            HandStrict => runtime.block_on(async {
                let mut results = Vec::with_capacity(n as usize);
                let mut start = 0;
                while start < n {
                    let end = (start + SIZE as u64).min(n);
                    let batch = (start..end).map(|i| tokio::spawn(async move { i + 1 }));
                    results.extend(join_all(batch).await.into_iter().map(Result::unwrap));
                    start = end;
                }
                results.iter().sum()
            }),
            Rayon => {
                let results: Vec<u64> = (0..n).into_par_iter().map(|x| x + 1).collect();
                results.iter().sum()
            }
            Map { mode, sync_body } => runtime
                .block_on(map_flow(n, mode, sync_body))
                .unwrap()
                .iter()
                .sum(),
            Stream { mode, sync_body } => {
                runtime.block_on(stream_flow(n, mode, sync_body)).unwrap()
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(checksum, n * (n + 1) / 2, "{self:?} lost inputs");
        seconds
    }
}

async fn join_set(n: u64) -> u64 {
    let semaphore = Arc::new(Semaphore::new(SIZE));
    let mut set = JoinSet::new();
    let mut results = vec![0u64; n as usize];
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            drop(permit);
            (i, i + 1)
        });
        while let Some(done) = set.try_join_next() {
            let (i, r) = done.unwrap();
            results[i as usize] = r;
        }
    }
    while let Some(done) = set.join_next().await {
        let (i, r) = done.unwrap();
        results[i as usize] = r;
    }
    results.iter().sum()
}

async fn map_all<T: Task<Args = (u64,), Output = u64>>(
    task: T,
    n: u64,
    mode: BatchMode,
) -> Vec<u64> {
    let batch = BatchTask::new(task, SIZE).unwrap().with_mode(mode);
    let futures = batch.map_async(0..n).await.unwrap();
    futures.results_async().await.unwrap()
}

#[flow]
async fn map_flow(n: u64, mode: BatchMode, sync_body: bool) -> Vec<u64> {
    if sync_body {
        map_all(add_one_sync, n, mode).await
    } else {
        map_all(add_one, n, mode).await
    }
}

#[flow]
async fn stream_flow(n: u64, mode: BatchMode, sync_body: bool) -> u64 {
    let mut stream = if sync_body {
        let batch = BatchTask::new(add_one_sync, SIZE).unwrap().with_mode(mode);
        batch.stream_unordered(0..n).unwrap()
    } else {
        let batch = BatchTask::new(add_one, SIZE).unwrap().with_mode(mode);
        batch.stream_unordered(0..n).unwrap()
    };
    let mut sum = 0;
    while let Some(run) = stream.next_async().await {
        sum += run.result.unwrap();
    }
    sum
}

static WORK_NANOS: AtomicU64 = AtomicU64::new(0);

#[task]
async fn straggle(i: u64) -> u64 {
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(straggler_millis(i))).await;
    WORK_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    i
}

pub fn straggler_millis(i: u64) -> u64 {
    if i.is_multiple_of(20) { 50 } else { 1 }
}

#[flow]
pub async fn straggler_flow(mode: BatchMode) -> (f64, f64) {
    WORK_NANOS.store(0, Ordering::Relaxed);
    let batch = BatchTask::new(straggle, 50).unwrap().with_mode(mode);
    let started = Instant::now();
    let results = batch
        .map_async(0..2000u64)
        .await
        .unwrap()
        .results_async()
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(results.len(), 2000);
    (
        seconds,
        WORK_NANOS.load(Ordering::Relaxed) as f64 / 1e9 / 50.0,
    )
}
