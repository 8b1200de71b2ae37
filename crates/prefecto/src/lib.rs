//! Prefect-style flows and tasks for Rust, with [`BatchTask`](concurrency::BatchTask)
//! and kill switches at its heart.
//!
//! # A tour
//!
//! Write tasks and flows as plain functions. `#[task]` turns a function into a
//! task value; `#[flow]` makes each call a flow run with a name like
//! `beryl-moth`, its own runtime, and Prefect-format logs:
//!
//! ```
//! use prefecto::prelude::*;
//!
//! #[task]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[flow]
//! fn my_flow() -> Vec<i64> {
//!     // One task run per input, 2 at a time; the batch lines log at DEBUG.
//!     let batch_add = BatchTask::new(add, 2).unwrap();
//!     batch_add.map((vec![1, 2, 3, 4], vec![2, 3, 4, 5])).unwrap().results().unwrap()
//! }
//!
//! fn main() {
//!     assert_eq!(my_flow().unwrap(), vec![3, 5, 7, 9]);
//! }
//! ```
//!
//! Within a flow:
//! - `add.submit(1, 2)` starts one task run and returns a [`PrefectFuture`];
//! - `add.map((a, b))` starts one per input and returns a [`PrefectFutureList`]
//!   in input order; each argument is an iterable or [`unmapped`]`(value)`;
//! - `add(1, 2)` runs one task run and returns its value (a future of it, for an
//!   `async fn` task).
//!
//! A future gives its [`State`] without blocking, waits (`wait`, `wait_async`),
//! and gives the value or a [`TaskRunError`] carrying the final state
//! (`result`, `result_async`, or `.await`).
//!
//! A task body that returns `Err` ends `Failed`, one that panics ends
//! `Crashed` (the flow and the other runs go on), and one that outlives its
//! `timeout` ends `TimedOut` (a `Failed` state). `retries` and `retry_delay`
//! run failed bodies again.
//!
//! [`concurrency::BatchTask`] maps in bounded batches and stops early when a
//! [`concurrency::KillSwitch`] trips, cancelling what is in flight and
//! recording every input's outcome. See its docs.
//!
//! Sync task bodies run on a bounded pool of OS threads per flow run
//! (`#[flow(max_workers = 8)]`, or `PREFECTO_TASK_RUNNER_MAX_WORKERS`, else one
//! per core); async bodies run on the Tokio runtime.
//!
//! Logging goes through `tracing`: see [`logging`]. Every state transition and
//! engine log line is handed to the installed [`recorder`]s, the first of which
//! is the SQLite run history of [`store`] that the `prefecto` command reads.
//! Tasks with `cache_key` and `persist_result` resume from stored results; a
//! terminal shows a [`progress`] bar; SIGINT and SIGTERM end flow runs
//! `Cancelled` ([`signals`]).
//!
//! With `PREFECT_API_URL` set, [`prefect_api`] also reports every flow run to
//! a Prefect 3 server, task runs as paced event batches, and honours its tag
//! concurrency limits; [`prefect_api::sync_flow_run`] delivers later what an
//! outage kept from it.

// Lets the macros' `::prefecto::` paths resolve inside this crate's own tests.
extern crate self as prefecto;

pub mod args;
pub mod concurrency;
mod context;
pub mod flow;
pub mod future;
pub mod logging;
mod names;
mod parameters;
pub mod prefect_api;
pub mod progress;
pub mod recorder;
pub mod runner;
pub mod signals;
pub mod state;
pub mod store;
pub mod task;

pub use args::{unmapped, MapError, Unmapped};
pub use flow::FlowRunError;
pub use future::{PrefectFuture, PrefectFutureList, TaskRunError, TaskRunName};
pub use prefecto_macros::{flow, task};
pub use state::{State, StateType};
pub use task::Task;

/// Everything a flow file needs: `use prefecto::prelude::*;`.
pub mod prelude {
    pub use crate::args::{unmapped, Unmapped};
    pub use crate::concurrency::{
        AnyFailedSwitch, BatchMode, BatchTask, CountSwitch, KillSwitch, KillSwitchError, RateSwitch,
    };
    pub use crate::flow::FlowRunError;
    pub use crate::future::{PrefectFuture, PrefectFutureList, TaskRunError};
    pub use crate::parameters::{
        Adopt, AdoptParam, AdoptParamFallback, Param, ParamToJson, ParamToJsonFallback,
    };
    pub use crate::state::{State, StateType};
    pub use crate::task::Task;
    pub use prefecto_macros::{flow, task};
    pub use serde_json::{Map as JsonMap, Value as JsonValue};
    pub use std::marker::PhantomData;
}

/// The README's examples, run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// What the macros' expansions use. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{MapArgs, MapError};
    pub use crate::flow::{run_async, run_sync, FlowSpec};
    pub use crate::future::{PrefectFuture, PrefectFutureList, TaskRunError};
    pub use crate::parameters::{
        Adopt, AdoptParam, AdoptParamFallback, Param, ParamToJson, ParamToJsonFallback,
    };
    pub use crate::runner::{call, call_async, map, submit};
    pub use crate::task::{BodyError, Invocation, Task, TaskSpec};
    pub use serde_json;
    pub use serde_json::{Map as JsonMap, Value as JsonValue};
    pub use std::boxed::Box;
    pub use std::future::Future;
    pub use std::marker::PhantomData;
    pub use std::pin::Pin;
    pub use std::result::Result;
    pub use std::time::Duration;
}
