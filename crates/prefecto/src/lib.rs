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
//!     batch_add.map(vec![1, 2, 3, 4], vec![2, 3, 4, 5]).unwrap().results().unwrap()
//! }
//!
//! fn main() {
//!     assert_eq!(my_flow().unwrap(), vec![3, 5, 7, 9]);
//! }
//! ```
//!
//! Within a flow:
//! - `add.submit(1, 2)` starts one task run and returns a [`PrefectFuture`];
//! - `add.map(a, b)` starts one per input and returns a [`PrefectFutureList`]
//!   in input order; each argument is an iterable or [`unmapped`]`(value)`;
//! - `add(1, 2)` runs one task run and returns its value (a future of it, for an
//!   `async fn` task).
//!
//! A future gives its [`State`] without blocking, waits (`wait`, `wait_async`),
//! and gives the value or a [`TaskRunError`] carrying the final state
//! (`result`, `result_async`, or `.await`).
//!
//! A task parameter of type `T` takes a `T` or a [`PrefectFuture<T>`] (in
//! `map`, a [`PrefectFutureList<T>`]): the run waits for the upstream run
//! without holding a worker, and never runs if it did not complete
//! ([`inputs`]); `submit_after` and `map_after` wait for runs (`wait_for=`).
//!
//! A task body may call, submit and map tasks too: a called task runs in its
//! caller's thread, and a body waiting for runs runs their queued bodies
//! itself, so nested runs never deadlock the pool. The blocking calls
//! (`result`, `wait`, `results`, `BatchTask::map`) panic on a current-thread
//! Tokio runtime, naming the async call to use there.
//!
//! A task body that returns `Err` ends `Failed`, one that panics ends
//! `Crashed` (the flow and the other runs go on), and one that outlives its
//! `timeout` ends `TimedOut` (a `Failed` state). `retries` and `retry_delay`
//! run failed bodies again. A [`TaskRunError`]'s `source()` is the body's own
//! error, to downcast; a flow returning `Result<T, `[`Error`]`>` uses `?` on
//! every step of the way (a batch size, map arguments, a kill switch, a task
//! run), without boxing.
//!
//! [`concurrency::BatchTask`] maps in bounded batches and stops early when a
//! [`concurrency::KillSwitch`] trips, cancelling what is in flight and
//! recording every input's outcome. See its docs. For millions of inputs,
//! or inputs read from a file, `batch.stream(iter)` reads them lazily (an
//! async stream too: `batch.stream(`[`from_stream`]`(receiver))`) and
//! hands over each input's outcome as it is ready ([`concurrency::MapStream`]),
//! in memory that does not grow with the number of inputs. `batch.map`
//! takes a `from_stream` argument too, and reads it as it goes.
//!
//! To scale out over machines, a binary whose `main` is
//! [`serve!`]`(my_flow, ...)` runs the flow a Prefect worker asks for;
//! `prefecto deploy` registers it on a work pool, and
//! [`deployments::DeploymentTask`] (with `feature = "prefect"`) maps inputs
//! over its flow runs with `BatchTask`'s batches and kill switches.
//!
//! Sync task bodies run on a bounded pool of OS threads per flow run
//! (`#[flow(max_workers = 8)]`, or `PREFECTO_TASK_RUNNER_MAX_WORKERS`, else one
//! per core); async bodies run on the Tokio runtime.
//!
//! # How it is put together
//!
//! The engine (tasks, flows, futures, [`BatchTask`](concurrency::BatchTask))
//! knows only seams: [`Recorder`]s hear every transition and log line, a
//! [`ResultStore`] keeps cached results, a [`SlotLimiter`] grants concurrency
//! slots, a [`ProgressDisplay`] shows long maps, a [`FlowRunAdopter`] may hand
//! a flow call a run created elsewhere. [`Prefecto`], the composition root,
//! fills them in: by default from the environment ([`Settings`]), at the
//! first flow call; or as the program builds it with [`Prefecto::builder`].
//!
//! Each part that fills a seam is a Cargo feature, all on by default:
//!
//! | feature | part |
//! | --- | --- |
//! | `history` | the SQLite run history of [`store`] that the `prefecto` command reads, and resume from cached results |
//! | `prefect` | [`prefect_api`]: reporting to a Prefect 3 server, its tag concurrency limits, adopting runs a Prefect worker created |
//! | `progress` | [`progress_bar`]: a progress bar for long maps in a terminal |
//! | `signals` | SIGINT and SIGTERM end flow runs `Cancelled` (Unix; Ctrl-C elsewhere) |
//!
//! With `default-features = false` the engine runs alone, with Prefect-format
//! console logs ([`logging`]).

// Lets the macros' `::prefecto::` paths resolve inside this crate's own tests.
extern crate self as prefecto;

// The engine: it knows only the seams below, never the parts that fill them.
mod adopt;
pub mod args;
mod blocking;
mod cancel_scope;
mod clock;
pub mod concurrency;
mod context;
mod ended_run;
mod error;
pub mod flow;
mod flow_pool;
pub mod flow_runs;
pub mod future;
pub mod inputs;
mod names;
mod parameter_schema;
mod parameters;
mod prefault;
pub mod progress;
mod queued_body;
pub mod recorder;
mod recorder_guard;
mod result_store;
mod run_shared;
pub mod runner;
mod seams;
mod serve;
mod served;
pub mod settings;
mod slot_limiter;
pub mod state;
pub mod stream_args;
pub mod task;
mod task_run_error;
pub mod text;
mod thread_scope;

// The parts that fill the seams, each behind its Cargo feature.
#[cfg(feature = "prefect")]
pub mod deployments;
pub mod logging;
#[cfg(feature = "prefect")]
pub mod prefect_api;
#[cfg(feature = "progress")]
pub mod progress_bar;
#[cfg(feature = "signals")]
mod signals;
#[cfg(feature = "history")]
pub mod store;

// The composition root: puts the parts into the seams.
mod builder;

pub use adopt::{AdoptedFlowRun, FlowRunAdopter, RemoteFlowRun};
pub use args::{MapError, Unmapped, unmapped};
pub use builder::{Prefecto, PrefectoBuilder, SetupError, shutdown};
pub use error::Error;
pub use flow::FlowRunError;
pub use future::{PrefectFuture, PrefectFutureList, TaskRunError};
pub use names::TaskRunName;
pub use parameter_schema::ParameterSchema;
pub use prefecto_macros::{flow, serve, served_flow, task};
pub use progress::{MapProgress, ProgressDisplay};
pub use recorder::Recorder;
pub use result_store::ResultStore;
pub use serve::serve;
pub use served::{ServeError, ServedFlow, ServedParameter};
pub use settings::Settings;
pub use slot_limiter::{BoxFuture, Slot, SlotLimiter, SlotRequest};
pub use state::{State, StateType};
pub use stream_args::from_stream;
pub use task::Task;

/// Everything a flow file needs: `use prefecto::prelude::*;`.
pub mod prelude {
    pub use crate::args::{MapError, Unmapped, unmapped};
    pub use crate::builder::Prefecto;
    pub use crate::concurrency::{
        AnyFailedSwitch, BatchError, BatchMode, BatchTask, CountSwitch, InputOutcome, KillSwitch,
        KillSwitchError, MapStream, RateSwitch, StreamStop, StreamedRun, SwitchOrder,
    };
    pub use crate::flow::FlowRunError;
    pub use crate::future::{PrefectFuture, PrefectFutureList, TaskRunError};
    pub use crate::state::{State, StateType};
    pub use crate::stream_args::from_stream;
    pub use crate::task::Task;
    pub use prefecto_macros::{flow, task};
}

/// The README's examples, run as doc tests (they use the default features).
#[doc = include_str!("../../../README.md")]
#[cfg(all(
    doctest,
    feature = "history",
    feature = "prefect",
    feature = "progress",
    feature = "signals"
))]
pub struct ReadmeDoctests;

/// What the macros' expansions use. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::args::{MapArg, MapArgs, MapError};
    pub use crate::flow::{AdoptedParameters, FlowSpec, Parameters};
    pub use crate::future::{PrefectFuture, PrefectFutureList, TaskRunError};
    pub use crate::inputs::{IntoRunArgs, RunArgs, TaskInput, Upstream};
    pub use crate::parameter_schema::{SchemaOf, SchemaOfAny, SchemaOfKnown};
    pub use crate::parameters::{
        Adopt, AdoptParam, AdoptParamFallback, Param, ParamToJson, ParamToJsonFallback,
    };
    pub use crate::served::{Given, GivenParam, GivenParamFallback, ServeError};
    pub use crate::task::{
        BodyError, BodyErrorOf, Invocation, Task, TaskSpec, ToBodyError, ToBodyErrorFallback,
    };
    pub use serde_json;
    pub use serde_json::{Map as JsonMap, Value as JsonValue};
    pub use std::boxed::Box;
    pub use std::future::Future;
    pub use std::marker::PhantomData;
    pub use std::pin::Pin;
    pub use std::result::Result;
    pub use std::time::Duration;

    /// A served flow, as `#[flow]` describes it.
    pub fn served_flow(
        name: &'static str,
        description: &'static str,
        parameters: Vec<crate::ServedParameter>,
        call: fn(JsonMap<String, JsonValue>) -> Result<JsonValue, ServeError>,
    ) -> crate::ServedFlow {
        crate::ServedFlow {
            name,
            description,
            parameters,
            call,
        }
    }

    /// Runs a served async flow's call to its end, on a runtime of its own.
    pub fn block_on_served<F: Future<Output = Result<JsonValue, ServeError>>>(
        flow: &'static str,
        call: F,
    ) -> Result<JsonValue, ServeError> {
        match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(call),
            Err(e) => Err(ServeError::FlowRun(crate::FlowRunError::Startup {
                flow: flow.to_string(),
                what: "its async runtime",
                message: e.to_string(),
            })),
        }
    }

    // The entry points: each installs the default set-up first, if the
    // program installed none, then enters the engine.
    use crate::builder::ensure_installed;

    pub fn run_sync<T, F>(
        spec: &'static FlowSpec,
        parameters: Parameters,
        body: F,
    ) -> Result<T, crate::FlowRunError>
    where
        F: FnOnce(AdoptedParameters) -> Result<T, BodyError> + Send,
        T: Send,
    {
        ensure_installed();
        crate::flow::run_sync(spec, parameters, body)
    }

    pub async fn run_async<T, F, Fut>(
        spec: &'static FlowSpec,
        parameters: Parameters,
        body: F,
    ) -> Result<T, crate::FlowRunError>
    where
        F: FnOnce(AdoptedParameters) -> Fut,
        Fut: Future<Output = Result<T, BodyError>>,
    {
        ensure_installed();
        crate::flow::run_async(spec, parameters, body).await
    }

    pub fn submit_with_inputs<T: Task>(
        task: &T,
        args: RunArgs<T::Args>,
    ) -> PrefectFuture<T::Output> {
        ensure_installed();
        crate::runner::submit_with_inputs(task, args)
    }

    pub fn map<T: Task, M: MapArgs<T::Args>>(
        task: &T,
        args: M,
        wait_for: &[&dyn Upstream],
    ) -> Result<PrefectFutureList<T::Output>, MapError> {
        ensure_installed();
        crate::runner::map_after(task, args, wait_for)
    }

    pub fn call<T: Task>(
        task: &T,
        args: T::Args,
        wait_for: &[&dyn Upstream],
    ) -> Result<T::Output, TaskRunError> {
        ensure_installed();
        crate::runner::call_after(task, args, wait_for)
    }

    pub fn call_async<T: Task>(
        task: &T,
        args: T::Args,
        wait_for: &[&dyn Upstream],
    ) -> Pin<Box<dyn Future<Output = Result<T::Output, TaskRunError>> + Send>> {
        ensure_installed();
        crate::runner::call_async_after(task, args, wait_for)
    }
}
