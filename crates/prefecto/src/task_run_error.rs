//! The error of a task run that did not complete: its name, its final state
//! and, when its body returned one, the body's own error.

use std::fmt;

use crate::state::State;
use crate::task::ErrorSource;

/// A task run did not complete, so it has no value. The error carries its final state.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
///     s.parse()
/// }
///
/// #[flow]
/// fn parse_x() -> String {
///     let err = parse.submit(String::from("x")).result().unwrap_err();
///     assert!(err.state.is_failed());
///     err.to_string()
/// }
///
/// assert_eq!(
///     parse_x().unwrap(),
///     "Task run 'parse-0' finished in state Failed('invalid digit found in string')"
/// );
/// ```
///
/// When the body returned an error, [`source`](std::error::Error::source)
/// gives that error itself, to downcast:
///
/// ```
/// use std::error::Error;
/// use prefecto::prelude::*;
///
/// #[task]
/// fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
///     s.parse()
/// }
///
/// #[flow]
/// fn kind() -> std::num::IntErrorKind {
///     let err = parse("".into()).unwrap_err();
///     let parse_error: &std::num::ParseIntError = err.source().unwrap().downcast_ref().unwrap();
///     parse_error.kind().clone()
/// }
///
/// assert_eq!(kind().unwrap(), std::num::IntErrorKind::Empty);
/// ```
#[derive(Debug, Clone)]
pub struct TaskRunError {
    /// The task run's name.
    pub task_run: String,
    /// Its final state.
    pub state: State,
    /// The body's own error, when it returned one.
    pub(crate) source: Option<ErrorSource>,
}

impl fmt::Display for TaskRunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Task run '{}' finished in state {}",
            self.task_run, self.state
        )
    }
}

impl std::error::Error for TaskRunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The error itself, not the `Arc` that shares it: so that it downcasts.
        self.source
            .as_deref()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}

impl TaskRunError {
    /// The body's own error, when it returned one (the same as `source()`,
    /// keeping `Send + Sync`).
    pub fn body_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

/// Two errors are equal when they name the same run in the same state.
impl PartialEq for TaskRunError {
    fn eq(&self, other: &Self) -> bool {
        self.task_run == other.task_run && self.state == other.state
    }
}
