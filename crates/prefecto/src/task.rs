//! What a task is: a named body with its options. `#[task]` writes the
//! implementation of [`Task`]; the engine in [`crate::runner`] runs it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A task's name, parameter names and run options, fixed at compile time by `#[task]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// The task's name (`add`); task runs are named `{name}-{k}`.
    pub name: &'static str,
    /// The parameter names, in order; `map` errors name them.
    pub param_names: &'static [&'static str],
    /// How many times a failed run is run again.
    pub retries: u32,
    /// How long to wait before each retry.
    pub retry_delay: Duration,
    /// A run that takes longer than this ends `TimedOut` (a `Failed` state).
    pub timeout: Option<Duration>,
    /// Tags, as Prefect's; later used for tag concurrency limits.
    pub tags: &'static [&'static str],
    /// How long a persisted result stays valid for its cache key (`None`: forever).
    pub cache_expiration: Option<Duration>,
    /// Run the body even when a result is cached, and store the new one.
    pub refresh_cache: bool,
    /// An `async fn` body (run on the runtime) rather than a plain `fn` (run on the pool).
    pub is_async: bool,
}

impl TaskSpec {
    /// A spec with no retries, no timeout and no tags.
    pub const fn new(name: &'static str, param_names: &'static [&'static str]) -> Self {
        TaskSpec {
            name,
            param_names,
            retries: 0,
            retry_delay: Duration::ZERO,
            timeout: None,
            tags: &[],
            cache_expiration: None,
            refresh_cache: false,
            is_async: false,
        }
    }
}

/// The error a task or flow body returned, shared by everyone who reads it.
pub type ErrorSource = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Why one attempt of a task body did not produce a value: the text its state
/// shows, and the body's own error where it is one, kept for `source()`.
#[derive(Debug, Clone)]
pub struct BodyError {
    /// The error's text, as the run's state shows it.
    pub message: String,
    /// The body's own error, if it converts into one.
    pub source: Option<ErrorSource>,
}

impl BodyError {
    /// Takes any displayable value, keeping only its text.
    pub fn from_display(error: impl fmt::Display) -> Self {
        BodyError {
            message: error.to_string(),
            source: None,
        }
    }

    /// Takes an error (or a `String`, an `anyhow::Error`, a boxed error),
    /// keeping it for `source()` and downcasting.
    pub fn from_error(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        let error: Box<dyn std::error::Error + Send + Sync + 'static> = error.into();
        BodyError {
            message: error.to_string(),
            source: Some(error.into()),
        }
    }
}

/// What `#[task]` and `#[flow]` wrap a body's `Err` value in to pick the
/// conversion: [`ToBodyError`] keeps an error as a source,
/// [`ToBodyErrorFallback`] keeps the text of anything displayable. The
/// first that applies wins (autoref specialisation, as for parameters).
#[doc(hidden)]
pub struct BodyErrorOf<E>(std::cell::Cell<Option<E>>);

impl<E> BodyErrorOf<E> {
    #[doc(hidden)]
    pub fn new(error: E) -> Self {
        BodyErrorOf(std::cell::Cell::new(Some(error)))
    }

    fn take(&self) -> E {
        self.0.take().expect("a body's error is converted once")
    }
}

#[doc(hidden)]
pub trait ToBodyError {
    fn prefecto_body_error(&self) -> BodyError;
}

impl<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>> ToBodyError for BodyErrorOf<E> {
    fn prefecto_body_error(&self) -> BodyError {
        BodyError::from_error(self.take())
    }
}

#[doc(hidden)]
pub trait ToBodyErrorFallback {
    fn prefecto_body_error(&self) -> BodyError;
}

impl<E: fmt::Display> ToBodyErrorFallback for &BodyErrorOf<E> {
    fn prefecto_body_error(&self) -> BodyError {
        BodyError::from_display(self.take())
    }
}

/// One invocation of a task body, ready to run.
pub enum Invocation<T> {
    /// A plain `fn`: run on the flow's thread pool, never on the async runtime.
    Sync(Box<dyn FnOnce() -> Result<T, BodyError> + Send>),
    /// An `async fn`: run on the async runtime.
    Async(Pin<Box<dyn Future<Output = Result<T, BodyError>> + Send>>),
}

/// A task: implemented by `#[task]`, rarely by hand.
///
/// ```
/// use prefecto::prelude::*;
///
/// /// Adds two numbers.
/// #[task(retries = 2, retry_delay = 0.01, tags = ["math"])]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// assert_eq!(add.spec().name, "add");
/// assert_eq!(add.spec().param_names, ["a", "b"]);
/// assert_eq!(add.spec().retries, 2);
/// assert_eq!(add.spec().tags, ["math"]);
/// ```
pub trait Task: Clone + Send + Sync + 'static {
    /// The parameters as a tuple, in order: `(i64, i64)` for `add(a, b)`.
    type Args: Send + 'static;
    /// What a completed run returns: `T` for a body that returns `T` or `Result<T, E>`.
    type Output: Send + 'static;

    /// The task's name and options.
    fn spec(&self) -> &'static TaskSpec;

    /// Starts one attempt of the body with these arguments.
    fn invoke(&self, args: Self::Args) -> Invocation<Self::Output>;

    /// Starts one attempt of the body as task run `run`: for a body that
    /// needs to know its run (a child flow run hangs under it on the
    /// server). By default, [`Task::invoke`].
    fn invoke_as(&self, _run: crate::TaskRunName, args: Self::Args) -> Invocation<Self::Output> {
        self.invoke(args)
    }

    /// Runs one attempt of a sync body here and now, as task run `run`:
    /// how a map runs a body on its lanes, without boxing it for a queue.
    /// `None` if the body is async. `#[task]` calls the function directly;
    /// by default, through [`Task::invoke_as`].
    fn call_sync(
        &self,
        run: crate::TaskRunName,
        args: Self::Args,
    ) -> Option<Result<Self::Output, BodyError>> {
        match self.invoke_as(run, args) {
            Invocation::Sync(body) => Some(body()),
            Invocation::Async(_) => None,
        }
    }

    /// As [`Task::call_sync`], for an async body: its one attempt, as a
    /// future of its own type, not boxed. `None` if the body is sync.
    fn call_async(
        &self,
        run: crate::TaskRunName,
        args: Self::Args,
    ) -> impl Future<Output = Option<Result<Self::Output, BodyError>>> + Send {
        let invocation = self.invoke_as(run, args);
        async move {
            match invocation {
                Invocation::Async(body) => Some(body.await),
                Invocation::Sync(_) => None,
            }
        }
    }

    /// A copy of the arguments for a later retry. `#[task(retries = ..)]`
    /// requires `Clone` arguments and returns a copy; tasks without retries
    /// return `None` and so never need `Clone`.
    fn retry_args(&self, _args: &Self::Args) -> Option<Self::Args> {
        None
    }

    /// The cache key of a run with these arguments: `#[task(cache_key = f)]`
    /// returns `f`'s key. A completed run's result is stored under it, and a
    /// later run with the same task and key returns it without running.
    fn cache_key(&self, _args: &Self::Args) -> Option<String> {
        None
    }

    /// The value as stored text: `#[task(persist_result = true)]` uses
    /// serde JSON. `None` when the task does not persist results.
    fn persist(&self, _value: &Self::Output) -> Option<String> {
        None
    }

    /// A stored value back; `None` if it no longer reads (the type changed).
    fn restore(&self, _stored: &str) -> Option<Self::Output> {
        None
    }
}

/// The panic message, as the default panic hook would print it.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_string()
    }
}
