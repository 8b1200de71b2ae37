//! Futures as task inputs, as in Prefect: a parameter of type `T` takes a
//! `T` or a [`PrefectFuture<T>`] (in `map`, a [`PrefectFutureList<T>`] or
//! `unmapped(future)`), and `submit_after` / `map_after` take runs to wait
//! for (Prefect's `wait_for=`).
//!
//! A run whose inputs are not all ready waits for them after it is
//! submitted and before it starts, without holding a worker. If one of them
//! did not complete, its body never runs: it ends `NotReady` (a `Failed`
//! state) with a message naming the upstream run, and its recorders hear
//! which runs it depended on ([`UpstreamRun`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

#[cfg(doc)]
use crate::future::PrefectFutureList;
use crate::future::{PrefectFuture, RunShared};
use crate::names::TaskRunName;
pub use crate::names::UpstreamRun;
use crate::state::State;

/// One argument of a task run: a value, or the future of the run that makes it.
pub enum Input<T> {
    /// A value, ready now.
    Value(T),
    /// The value of an upstream run, taken once it completes.
    Future(PrefectFuture<T>),
    /// The value of an upstream run, cloned for each of many runs
    /// (`unmapped(future)` in a `map`).
    Shared(SharedValue<T>),
}

/// The value of an upstream run that many runs take a clone of.
pub struct SharedValue<T> {
    pub(crate) run: Arc<RunShared<T>>,
    pub(crate) clone: fn(&T) -> T,
}

impl<T> Clone for SharedValue<T> {
    fn clone(&self) -> Self {
        SharedValue {
            run: self.run.clone(),
            clone: self.clone,
        }
    }
}

/// What a task parameter of type `T` accepts: a `T`, or a
/// [`PrefectFuture<T>`] whose value is passed once its run completes.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn chained() -> i64 {
///     let first = add.submit(1, 2);
///     // Waits for `first` without holding a worker, then adds.
///     add.submit(first, 10).result().unwrap()
/// }
///
/// assert_eq!(chained().unwrap(), 13);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed for a `{T}` parameter",
    label = "expected a `{T}`, or a `PrefectFuture<{T}>` of a run that returns one"
)]
pub trait TaskInput<T> {
    /// The argument, as the engine takes it.
    fn into_input(self) -> Input<T>;
}

impl<T> TaskInput<T> for T {
    fn into_input(self) -> Input<T> {
        Input::Value(self)
    }
}

impl<T> TaskInput<T> for PrefectFuture<T> {
    fn into_input(self) -> Input<T> {
        Input::Future(self)
    }
}

/// A run to wait for before a task run starts: any [`PrefectFuture`], of
/// any output type. See `submit_after`.
pub trait Upstream: Send + Sync {
    #[doc(hidden)]
    fn upstream(&self) -> WaitFor;
}

impl<T: Send + 'static> Upstream for PrefectFuture<T> {
    fn upstream(&self) -> WaitFor {
        match self.live() {
            Some(shared) => WaitFor(shared.clone()),
            None => WaitFor(Arc::new(Ended {
                name: self.task_run_name(),
                state: self.state(),
            })),
        }
    }
}

/// A run waited for that has ended, kept by value: its name and final state.
struct Ended {
    name: TaskRunName,
    state: State,
}

impl AnyRun for Ended {
    fn run_name(&self) -> TaskRunName {
        self.name
    }
    fn final_state(&self) -> State {
        self.state.clone()
    }
    fn until_terminal(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A run waited for, whatever its output type.
#[doc(hidden)]
pub struct WaitFor(Arc<dyn AnyRun>);

/// What waiting needs of a run, whatever its output type.
pub(crate) trait AnyRun: Send + Sync {
    fn run_name(&self) -> TaskRunName;
    fn final_state(&self) -> State;
    fn until_terminal(&self) -> BoxFuture<'_, ()>;
}

impl<T: Send + 'static> AnyRun for RunShared<T> {
    fn run_name(&self) -> TaskRunName {
        self.name()
    }
    fn final_state(&self) -> State {
        self.state()
    }
    fn until_terminal(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wait())
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The message of a run whose upstream run did not complete, as Prefect's.
fn not_completed(upstream: TaskRunName) -> String {
    format!("Upstream task run '{upstream}' did not reach a 'COMPLETED' state.")
}

/// The state of a run whose body never ran because an upstream run did not complete.
pub(crate) fn not_ready(message: String) -> State {
    State::new(crate::state::StateType::Failed, "NotReady", Some(message))
}

impl<T: Send + 'static> Input<T> {
    fn upstream(&self) -> Option<TaskRunName> {
        match self {
            Input::Value(_) => None,
            Input::Future(future) => Some(future.task_run_name()),
            Input::Shared(shared) => Some(shared.run.name()),
        }
    }

    /// The value, once the upstream run (if any) has completed.
    async fn resolve(self) -> Result<T, String> {
        match self {
            Input::Value(value) => Ok(value),
            Input::Future(future) => {
                let name = future.task_run_name();
                future.result_async().await.map_err(|_| not_completed(name))
            }
            Input::Shared(SharedValue { run, clone }) => {
                run.wait().await;
                run.clone_value(clone)
                    .map_err(|_| not_completed(run.name()))
            }
        }
    }
}

/// The arguments of one task run: ready, or waiting for upstream runs.
pub enum RunArgs<Args> {
    /// Every argument is a value: the run starts at once.
    Ready(Args),
    /// Some argument comes from a future, or the run waits for other runs.
    Waiting(Box<dyn WaitingArgs<Args>>),
}

impl<Args: Send + 'static> RunArgs<Args> {
    /// The same arguments, waiting for the runs of `wait_for` first.
    pub fn after(self, wait_for: &[&dyn Upstream]) -> Self {
        if wait_for.is_empty() {
            return self;
        }
        RunArgs::Waiting(Box::new(After {
            wait_for: wait_for.iter().map(|run| run.upstream().0).collect(),
            then: self,
        }))
    }

    /// The upstream runs, for the run's `Pending` transition.
    pub(crate) fn upstream(&self, param_names: &[&'static str]) -> Vec<UpstreamRun> {
        match self {
            RunArgs::Ready(_) => Vec::new(),
            RunArgs::Waiting(waiting) => waiting.upstream(param_names),
        }
    }
}

/// Arguments that wait for upstream runs.
pub trait WaitingArgs<Args>: Send {
    #[doc(hidden)]
    fn upstream(&self, param_names: &[&'static str]) -> Vec<UpstreamRun>;
    #[doc(hidden)]
    fn resolve(self: Box<Self>) -> BoxFuture<'static, Result<Args, String>>;
}

struct After<Args> {
    wait_for: Vec<Arc<dyn AnyRun>>,
    then: RunArgs<Args>,
}

impl<Args: Send + 'static> WaitingArgs<Args> for After<Args> {
    fn upstream(&self, param_names: &[&'static str]) -> Vec<UpstreamRun> {
        let mut upstream = self.then.upstream(param_names);
        upstream.extend(self.wait_for.iter().map(|run| UpstreamRun {
            input: "wait_for",
            task_run: run.run_name(),
        }));
        upstream
    }

    fn resolve(self: Box<Self>) -> BoxFuture<'static, Result<Args, String>> {
        Box::pin(async move {
            for run in &self.wait_for {
                run.until_terminal().await;
                if !run.final_state().is_completed() {
                    return Err(not_completed(run.run_name()));
                }
            }
            match self.then {
                RunArgs::Ready(args) => Ok(args),
                RunArgs::Waiting(waiting) => waiting.resolve().await,
            }
        })
    }
}

/// A tuple of [`Input`]s, one per parameter, as the arguments of one run.
pub trait IntoRunArgs<Args> {
    /// Ready if every input is a value.
    fn into_run_args(self) -> RunArgs<Args>;
}

impl IntoRunArgs<()> for () {
    fn into_run_args(self) -> RunArgs<()> {
        RunArgs::Ready(())
    }
}

macro_rules! run_args {
    ($($param:ident $value:ident $index:tt),+) => {
        impl<$($param: Send + 'static),+> IntoRunArgs<($($param,)+)> for ($(Input<$param>,)+) {
            fn into_run_args(self) -> RunArgs<($($param,)+)> {
                match self {
                    ($(Input::Value($value),)+) => RunArgs::Ready(($($value,)+)),
                    waiting => RunArgs::Waiting(Box::new(waiting)),
                }
            }
        }

        impl<$($param: Send + 'static),+> WaitingArgs<($($param,)+)> for ($(Input<$param>,)+) {
            fn upstream(&self, param_names: &[&'static str]) -> Vec<UpstreamRun> {
                let mut upstream = Vec::new();
                $(
                    if let Some(task_run) = self.$index.upstream() {
                        upstream.push(UpstreamRun {
                            input: param_names.get($index).copied().unwrap_or("?"),
                            task_run,
                        });
                    }
                )+
                upstream
            }

            fn resolve(self: Box<Self>) -> BoxFuture<'static, Result<($($param,)+), String>> {
                Box::pin(async move {
                    let ($($value,)+) = *self;
                    Ok(($($value.resolve().await?,)+))
                })
            }
        }
    };
}

run_args!(T0 v0 0);
run_args!(T0 v0 0, T1 v1 1);
run_args!(T0 v0 0, T1 v1 1, T2 v2 2);
run_args!(T0 v0 0, T1 v1 1, T2 v2 2, T3 v3 3);
run_args!(T0 v0 0, T1 v1 1, T2 v2 2, T3 v3 3, T4 v4 4);
run_args!(T0 v0 0, T1 v1 1, T2 v2 2, T3 v3 3, T4 v4 4, T5 v5 5);
run_args!(T0 v0 0, T1 v1 1, T2 v2 2, T3 v3 3, T4 v4 4, T5 v5 5, T6 v6 6);
run_args!(T0 v0 0, T1 v1 1, T2 v2 2, T3 v3 3, T4 v4 4, T5 v5 5, T6 v6 6, T7 v7 7);
