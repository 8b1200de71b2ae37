//! Run states, shaped after Prefect's: a type, a name, an optional message and a
//! timestamp for the transition that produced the state.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// The kind of a [`State`], as Prefect's `StateType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateType {
    /// Created, not yet running.
    Pending,
    /// Waiting for a later start; `AwaitingRetry` is a state of this type.
    Scheduled,
    /// Running; `Retrying` is a state of this type.
    Running,
    /// Finished with a result.
    Completed,
    /// Finished with an error, or timed out.
    Failed,
    /// The body panicked: something went wrong outside the user's error handling.
    Crashed,
    /// Stopped before it could finish, for example by a kill switch.
    Cancelled,
}

impl StateType {
    /// Whether a run in this state will not change state again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateType::Completed | StateType::Failed | StateType::Crashed | StateType::Cancelled
        )
    }

    /// The upper-case name Prefect's API uses (`COMPLETED`).
    pub fn as_api_str(self) -> &'static str {
        match self {
            StateType::Pending => "PENDING",
            StateType::Scheduled => "SCHEDULED",
            StateType::Running => "RUNNING",
            StateType::Completed => "COMPLETED",
            StateType::Failed => "FAILED",
            StateType::Crashed => "CRASHED",
            StateType::Cancelled => "CANCELLED",
        }
    }

    /// The type Prefect's API names `name` (`COMPLETED`), if any.
    ///
    /// ```
    /// use prefecto::StateType;
    ///
    /// assert_eq!(StateType::from_api_str("FAILED"), Some(StateType::Failed));
    /// assert_eq!(StateType::from_api_str("failed"), None);
    /// ```
    pub fn from_api_str(name: &str) -> Option<StateType> {
        Some(match name {
            "PENDING" => StateType::Pending,
            "SCHEDULED" => StateType::Scheduled,
            "RUNNING" => StateType::Running,
            "COMPLETED" => StateType::Completed,
            "FAILED" => StateType::Failed,
            "CRASHED" => StateType::Crashed,
            "CANCELLED" => StateType::Cancelled,
            _ => return None,
        })
    }
}

/// The state of a flow run or task run.
///
/// ```
/// use prefecto::State;
///
/// let done = State::completed();
/// assert!(done.is_completed() && done.is_terminal());
/// assert_eq!(done.to_string(), "Completed()");
///
/// let failed = State::failed("invalid digit found in string");
/// assert!(failed.is_failed());
/// assert_eq!(failed.to_string(), "Failed('invalid digit found in string')");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    state_type: StateType,
    name: Cow<'static, str>,
    /// Boxed: a run keeps its state, and most states have no message.
    message: Option<Box<str>>,
    /// Kept as `SystemTime`, converted when asked: runs take three timestamps
    /// each, and the calendar arithmetic is only needed to show them.
    timestamp: SystemTime,
}

impl State {
    /// A state of the given type and name, stamped now.
    pub fn new(
        state_type: StateType,
        name: impl Into<Cow<'static, str>>,
        message: Option<String>,
    ) -> Self {
        State {
            state_type,
            name: name.into(),
            message: message.map(String::into_boxed_str),
            timestamp: SystemTime::now(),
        }
    }

    /// `Pending()`.
    pub fn pending() -> Self {
        State::new(StateType::Pending, "Pending", None)
    }
    /// `Running()`.
    pub fn running() -> Self {
        State::new(StateType::Running, "Running", None)
    }
    /// `Retrying()`: running again after a failure.
    pub fn retrying() -> Self {
        State::new(StateType::Running, "Retrying", None)
    }
    /// `AwaitingRetry()`: failed, and waiting for its retry delay.
    pub fn awaiting_retry(message: impl Into<String>) -> Self {
        State::new(StateType::Scheduled, "AwaitingRetry", Some(message.into()))
    }
    /// `Completed()`.
    pub fn completed() -> Self {
        State::completed_unstamped().entered_now()
    }
    /// `Cached()`: completed by returning the result of an earlier run.
    pub fn cached() -> Self {
        State::cached_unstamped().entered_now()
    }

    /// `Completed()`, stamped when it is entered ([`entered_now`](Self::entered_now)):
    /// a run's end is stamped once, not also when it is decided.
    pub(crate) fn completed_unstamped() -> Self {
        State::unstamped(StateType::Completed, "Completed")
    }
    /// `Cached()`, stamped when it is entered.
    pub(crate) fn cached_unstamped() -> Self {
        State::unstamped(StateType::Completed, "Cached")
    }

    fn unstamped(state_type: StateType, name: &'static str) -> Self {
        State {
            state_type,
            name: Cow::Borrowed(name),
            message: None,
            timestamp: SystemTime::UNIX_EPOCH,
        }
    }
    /// `Failed('message')`.
    pub fn failed(message: impl Into<String>) -> Self {
        State::new(StateType::Failed, "Failed", Some(message.into()))
    }
    /// `TimedOut('message')`: a failure because the run exceeded its timeout.
    pub fn timed_out(message: impl Into<String>) -> Self {
        State::new(StateType::Failed, "TimedOut", Some(message.into()))
    }
    /// `Crashed('message')`.
    pub fn crashed(message: impl Into<String>) -> Self {
        State::new(StateType::Crashed, "Crashed", Some(message.into()))
    }
    /// `Cancelled('message')`.
    pub fn cancelled(message: impl Into<String>) -> Self {
        State::new(StateType::Cancelled, "Cancelled", Some(message.into()))
    }

    /// The state's type.
    pub fn state_type(&self) -> StateType {
        self.state_type
    }
    /// The state's name, such as `Completed` or `AwaitingRetry`.
    pub fn name(&self) -> &str {
        &self.name
    }
    #[cfg_attr(not(feature = "history"), allow(dead_code))]
    pub(crate) fn name_cow(&self) -> Cow<'static, str> {
        self.name.clone()
    }

    /// The same state, entered at `time`: a state read back from the history.
    #[cfg_attr(not(all(feature = "history", feature = "prefect")), allow(dead_code))]
    pub(crate) fn at(mut self, time: DateTime<Utc>) -> Self {
        self.timestamp = time.into();
        self
    }

    /// The same state, entered now: a run's final state is stamped when the
    /// run is recorded as finished, after any lines logged about its end.
    pub(crate) fn entered_now(mut self) -> Self {
        self.timestamp = SystemTime::now();
        self
    }

    /// The message, if the state has one (failures always do).
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    /// When the run entered this state.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp.into()
    }
    pub(crate) fn system_time(&self) -> SystemTime {
        self.timestamp
    }

    /// Whether the run will not change state again.
    pub fn is_terminal(&self) -> bool {
        self.state_type.is_terminal()
    }
    /// Type `Pending`.
    pub fn is_pending(&self) -> bool {
        self.state_type == StateType::Pending
    }
    /// Type `Scheduled` (includes `AwaitingRetry`).
    pub fn is_scheduled(&self) -> bool {
        self.state_type == StateType::Scheduled
    }
    /// Type `Running` (includes `Retrying`).
    pub fn is_running(&self) -> bool {
        self.state_type == StateType::Running
    }
    /// Type `Completed`.
    pub fn is_completed(&self) -> bool {
        self.state_type == StateType::Completed
    }
    /// Type `Failed` (includes `TimedOut`).
    pub fn is_failed(&self) -> bool {
        self.state_type == StateType::Failed
    }
    /// Type `Crashed`.
    pub fn is_crashed(&self) -> bool {
        self.state_type == StateType::Crashed
    }
    /// Type `Cancelled`.
    pub fn is_cancelled(&self) -> bool {
        self.state_type == StateType::Cancelled
    }
}

/// Prefect's rendering: `Completed()`, `Failed('message')`.
impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        f.write_str("(")?;
        if let Some(message) = &self.message {
            write_python_repr(f, message)?;
        }
        f.write_str(")")
    }
}

/// Quotes as Python's `repr` of a `str` does, so that messages read as in Prefect.
fn write_python_repr(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    write!(f, "{quote}")?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c == quote => write!(f, "\\{c}")?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "{quote}")
}

/// As Prefect's API writes it: `"COMPLETED"`.
impl serde::Serialize for StateType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_api_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_prefect() {
        assert_eq!(State::completed().to_string(), "Completed()");
        assert_eq!(State::pending().to_string(), "Pending()");
        assert_eq!(State::failed("boom").to_string(), "Failed('boom')");
        assert_eq!(
            State::crashed("it's gone").to_string(),
            "Crashed(\"it's gone\")"
        );
        assert_eq!(
            State::failed("a 'b' \"c\"\n").to_string(),
            "Failed('a \\'b\\' \"c\"\\n')"
        );
    }

    #[test]
    fn terminal_types() {
        assert!(!State::pending().is_terminal());
        assert!(!State::running().is_terminal());
        assert!(!State::retrying().is_terminal());
        assert!(!State::awaiting_retry("x").is_terminal());
        for s in [
            State::completed(),
            State::failed("x"),
            State::timed_out("x"),
            State::crashed("x"),
            State::cancelled("x"),
        ] {
            assert!(s.is_terminal(), "{s}");
        }
        assert!(State::timed_out("x").is_failed());
        assert_eq!(State::timed_out("x").name(), "TimedOut");
        assert!(State::retrying().is_running());
        assert!(State::awaiting_retry("x").is_scheduled());
    }

    #[test]
    fn timestamps_advance() {
        let first = State::pending();
        let second = State::completed();
        assert!(second.timestamp() >= first.timestamp());
    }
}
