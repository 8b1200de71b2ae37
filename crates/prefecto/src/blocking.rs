//! Blocking the calling thread on a future: what the sync halves of the API
//! (`future.result()`, `BatchTask::map`, calling a sync task) do while they wait.

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::queued_body;

/// Blocks the calling thread on `future`, for the blocking API call `call`
/// whose async form is `instead`.
///
/// On the thread of a sync task body, the thread runs the queued bodies of
/// the runs it waits for meanwhile (see [`queued_body`]). On a worker of a
/// multi-threaded runtime, the worker first hands its other tasks to another
/// thread, so the runs being waited for can still make progress. On a
/// current-thread runtime it panics at once: the runs it would wait for need
/// the very thread it would block, so it could only hang.
pub(crate) fn block_on<F: std::future::Future>(future: F, call: &str, instead: &str) -> F::Output {
    if let Some(helper) = queued_body::current() {
        return helper.block_on(future);
    }
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => {
            tokio::task::block_in_place(|| futures::executor::block_on(future))
        }
        Ok(RuntimeFlavor::CurrentThread) => panic!("{}", current_thread_message(call, instead)),
        _ => futures::executor::block_on(future),
    }
}

fn current_thread_message(call: &str, instead: &str) -> String {
    format!(
        "`{call}` blocks its thread until task runs finish, but it was called inside a \
         current-thread Tokio runtime, whose only thread those runs need: it would hang. \
         In async code use `{instead}` instead, or run on a multi-thread runtime."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_it_blocks() {
        assert_eq!(block_on(async { 3 }, "f", "g"), 3);
    }

    #[test]
    fn on_a_current_thread_runtime_it_panics_naming_the_async_call() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let panic = std::panic::catch_unwind(|| {
            runtime.block_on(async { block_on(async { 3 }, "future.result()", ".await") })
        })
        .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("`.await`") && message.contains("current-thread"));
    }
}
