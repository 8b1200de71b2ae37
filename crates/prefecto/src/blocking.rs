//! Blocking the calling thread on a future: what the sync halves of the API
//! (`future.result()`, `BatchTask::map`, calling a sync task) do while they wait.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Blocks the calling thread on `future`. On a worker of a multi-threaded
/// runtime the worker first hands its other tasks to another thread, so the
/// runs being waited for can still make progress.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        }
        _ => futures::executor::block_on(future),
    }
}
