//! Run states, shaped after Prefect's: a type, a name, an optional message and a
//! timestamp for the transition that produced the state.
//!
//! Over 500 lines, kept in one file: the compact layout (a name's code, one
//! thin box for a custom name and the message, the time in nanoseconds) and every
//! constructor and reader of it are one invariant, and a sixth of the file
//! is its unit tests.

use std::borrow::Cow;
use std::fmt;
#[cfg(any(test, not(unix)))]
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
#[derive(Clone, PartialEq)]
pub struct State {
    state_type: StateType,
    /// The name's place in [`NAMES`], or [`CUSTOM`]: the name is then the
    /// start of `text`, `custom_len` bytes long.
    name: u8,
    has_message: bool,
    custom_len: u32,
    /// A custom name, then the message: none for most states. Boxed twice,
    /// so that the pointer here is thin: a collecting map keeps a state per
    /// input, and 24 bytes instead of 32 made each of its ended runs 56
    /// bytes instead of 64.
    text: Option<Box<Box<str>>>,
    /// When it was entered, in nanoseconds since the epoch: converted once,
    /// when read from the clock, since every recorder, the run's times and
    /// the history all count in these (a `SystemTime` was converted seven
    /// times per task run). A map keeps a state per input, so a state is
    /// kept small (24 bytes).
    nanos: i64,
}

/// The names Prefect and this engine give states, kept as their place here.
const NAMES: [&str; 16] = [
    "Pending",
    "Running",
    "Retrying",
    "AwaitingRetry",
    "Completed",
    "Cached",
    "Failed",
    "TimedOut",
    "Crashed",
    "Cancelled",
    "NotReady",
    "Scheduled",
    "Late",
    "Paused",
    "Cancelling",
    "AwaitingConcurrencySlot",
];
const CUSTOM: u8 = u8::MAX;

/// A known name's place in [`NAMES`], looked up when compiling.
const fn code(name: &str) -> u8 {
    let (name, mut i) = (name.as_bytes(), 0);
    'names: while i < NAMES.len() {
        let known = NAMES[i].as_bytes();
        if known.len() == name.len() {
            let mut j = 0;
            while j < name.len() {
                if known[j] != name[j] {
                    i += 1;
                    continue 'names;
                }
                j += 1;
            }
            return i as u8;
        }
        i += 1;
    }
    panic!("not one of NAMES")
}

/// The code of a state type's own name: `Completed` for COMPLETED.
fn usual_code(state_type: StateType) -> u8 {
    match state_type {
        StateType::Pending => const { code("Pending") },
        StateType::Scheduled => const { code("Scheduled") },
        StateType::Running => const { code("Running") },
        StateType::Completed => const { code("Completed") },
        StateType::Failed => const { code("Failed") },
        StateType::Crashed => const { code("Crashed") },
        StateType::Cancelled => const { code("Cancelled") },
    }
}

impl State {
    /// A state of the given type and name, stamped now.
    pub fn new(
        state_type: StateType,
        name: impl Into<Cow<'static, str>>,
        message: Option<String>,
    ) -> Self {
        let name = name.into();
        let mut state = match NAMES.iter().position(|known| *known == name) {
            Some(code) => State::unstamped(state_type, code as u8),
            None => State {
                custom_len: name.len() as u32,
                text: Some(Box::new(name.into())),
                ..State::unstamped(state_type, CUSTOM)
            },
        };
        if let Some(message) = message {
            state.has_message = true;
            state.text = Some(Box::new(match state.text.take() {
                Some(custom) => format!("{custom}{message}").into_boxed_str(),
                None => message.into_boxed_str(),
            }));
        }
        state.nanos = crate::clock::now_nanos();
        state
    }

    /// A state with a known name: no string to look up.
    // This and the constructors of the states every run goes through are
    // inlined: returned from a call, a state was written field by field and
    // read back 16 bytes at a time, a stall on every run's transitions.
    #[inline]
    fn known(state_type: StateType, code: u8, message: Option<String>) -> Self {
        State {
            has_message: message.is_some(),
            text: message.map(|message| Box::new(message.into_boxed_str())),
            nanos: crate::clock::now_nanos(),
            ..State::unstamped(state_type, code)
        }
    }

    /// `Pending()`.
    #[inline]
    pub fn pending() -> Self {
        State::known(StateType::Pending, const { code("Pending") }, None)
    }
    /// `Running()`.
    #[inline]
    pub fn running() -> Self {
        State::known(StateType::Running, const { code("Running") }, None)
    }
    /// `Pending()` entered at `nanos` since the epoch: a run a map's lane
    /// makes with a reading of the clock it just took (its last run's end,
    /// or the time it took several inputs at once).
    #[inline]
    pub(crate) fn pending_at(nanos: i64) -> Self {
        State {
            nanos,
            ..State::unstamped(StateType::Pending, const { code("Pending") })
        }
    }
    /// `Running()` entered at `nanos` since the epoch: a run's first
    /// `Running` read back from its start time.
    #[inline]
    pub(crate) fn running_at(nanos: i64) -> Self {
        State {
            nanos,
            ..State::unstamped(StateType::Running, const { code("Running") })
        }
    }
    /// `Retrying()`: running again after a failure.
    pub fn retrying() -> Self {
        State::known(StateType::Running, const { code("Retrying") }, None)
    }
    /// `AwaitingRetry()`: failed, and waiting for its retry delay.
    pub fn awaiting_retry(message: impl Into<String>) -> Self {
        State::known(
            StateType::Scheduled,
            const { code("AwaitingRetry") },
            Some(message.into()),
        )
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
    #[inline]
    pub(crate) fn completed_unstamped() -> Self {
        State::unstamped(StateType::Completed, const { code("Completed") })
    }
    /// `Cached()`, stamped when it is entered.
    #[inline]
    pub(crate) fn cached_unstamped() -> Self {
        State::unstamped(StateType::Completed, const { code("Cached") })
    }

    #[inline]
    fn unstamped(state_type: StateType, name: u8) -> Self {
        State {
            state_type,
            name,
            has_message: false,
            custom_len: 0,
            text: None,
            nanos: 0,
        }
    }
    /// `Failed('message')`.
    pub fn failed(message: impl Into<String>) -> Self {
        State::known(
            StateType::Failed,
            const { code("Failed") },
            Some(message.into()),
        )
    }
    /// `TimedOut('message')`: a failure because the run exceeded its timeout.
    pub fn timed_out(message: impl Into<String>) -> Self {
        State::known(
            StateType::Failed,
            const { code("TimedOut") },
            Some(message.into()),
        )
    }
    /// `Crashed('message')`.
    pub fn crashed(message: impl Into<String>) -> Self {
        State::known(
            StateType::Crashed,
            const { code("Crashed") },
            Some(message.into()),
        )
    }
    /// `Cancelled('message')`.
    pub fn cancelled(message: impl Into<String>) -> Self {
        State::known(
            StateType::Cancelled,
            const { code("Cancelled") },
            Some(message.into()),
        )
    }

    /// Whether its name is its type's own (`Completed` for COMPLETED) and
    /// it has no message: how nearly every task run ends, and all the run
    /// history then needs of it besides its type and time.
    #[cfg_attr(not(feature = "history"), allow(dead_code))]
    pub(crate) fn is_plain(&self) -> bool {
        self.name == usual_code(self.state_type) && !self.has_message
    }

    /// A state of its type's own name and no message, at `nanos`: a plain
    /// end as a lane kept it ([`PlainEnd`](crate::recorder::PlainEnd)).
    pub(crate) fn plain_at(state_type: StateType, nanos: i64) -> Self {
        State {
            nanos,
            ..State::unstamped(state_type, usual_code(state_type))
        }
    }

    /// The state's type.
    pub fn state_type(&self) -> StateType {
        self.state_type
    }
    /// Its custom name and message, one after the other.
    fn text(&self) -> Option<&str> {
        self.text.as_deref().map(|text| &**text)
    }
    /// The state's name, such as `Completed` or `AwaitingRetry`.
    pub fn name(&self) -> &str {
        match NAMES.get(self.name as usize) {
            Some(known) => known,
            None => self.text().map_or("", |text| {
                text.get(..self.custom_len as usize).unwrap_or(text)
            }),
        }
    }
    #[cfg_attr(not(feature = "history"), allow(dead_code))]
    pub(crate) fn name_cow(&self) -> Cow<'static, str> {
        match NAMES.get(self.name as usize) {
            Some(known) => Cow::Borrowed(known),
            None => Cow::Owned(self.name().to_string()),
        }
    }

    /// The same state, entered at `time`: a state read back from the history.
    #[cfg_attr(not(all(feature = "history", feature = "prefect")), allow(dead_code))]
    pub(crate) fn at(mut self, time: DateTime<Utc>) -> Self {
        self.nanos = time
            .timestamp_nanos_opt()
            .unwrap_or(if time.timestamp() < 0 {
                i64::MIN
            } else {
                i64::MAX
            });
        self
    }

    /// The same state, entered now: a run's final state is stamped when the
    /// run is recorded as finished, after any lines logged about its end.
    #[inline]
    pub(crate) fn entered_now(mut self) -> Self {
        self.nanos = crate::clock::now_nanos();
        self
    }

    /// The message, if the state has one (failures always do).
    pub fn message(&self) -> Option<&str> {
        let text = self.text().filter(|_| self.has_message)?;
        match self.name {
            CUSTOM => text.get(self.custom_len as usize..),
            _ => Some(text),
        }
    }
    /// When the run entered this state, by the realtime clock (on x86-64
    /// Linux read through the CPU's time-stamp counter, within microseconds
    /// of it: the crate's `clock` module says how).
    ///
    /// ```
    /// let before = chrono::Utc::now();
    /// let state = prefecto::State::completed();
    /// assert!(state.timestamp() >= before - chrono::TimeDelta::milliseconds(1));
    /// ```
    pub fn timestamp(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.nanos)
    }
    #[cfg(test)]
    pub(crate) fn system_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(self.nanos as u64)
    }
    /// [`timestamp`](Self::timestamp) as nanoseconds since the epoch.
    pub(crate) fn nanos(&self) -> i64 {
        self.nanos
    }
    /// [`timestamp`](Self::timestamp) as microseconds since the epoch, as
    /// the run history stores times.
    #[cfg_attr(not(feature = "history"), allow(dead_code))]
    pub(crate) fn micros(&self) -> i64 {
        self.nanos.div_euclid(1000)
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
        f.write_str(self.name())?;
        f.write_str("(")?;
        if let Some(message) = self.message() {
            write_python_repr(f, message)?;
        }
        f.write_str(")")
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("state_type", &self.state_type)
            .field("name", &self.name())
            .field("message", &self.message())
            .field("timestamp", &self.timestamp())
            .finish()
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
    fn a_plain_state_has_its_types_own_name_and_no_message() {
        for plain in [State::pending(), State::running(), State::completed()] {
            assert!(plain.is_plain(), "{plain}");
        }
        let others = [
            State::cached(),
            State::retrying(),
            State::failed("no"),
            State::timed_out("late"),
            State::cancelled("stop"),
            State::new(
                StateType::Completed,
                "Completed",
                Some("with a word".into()),
            ),
            State::new(StateType::Completed, "Done", None),
        ];
        for other in others {
            assert!(!other.is_plain(), "{other}");
        }
        assert!(State::new(StateType::Crashed, "Crashed", None).is_plain());
    }

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
    fn names_and_messages_read_back_as_given() {
        let custom = State::new(StateType::Failed, "NotQuiteFailed", Some("why".into()));
        assert_eq!(
            (custom.name(), custom.message()),
            ("NotQuiteFailed", Some("why"))
        );
        assert_eq!(custom.to_string(), "NotQuiteFailed('why')");
        let bare = State::new(StateType::Running, "Warming", None);
        assert_eq!((bare.name(), bare.message()), ("Warming", None));
        let empty = State::new(StateType::Failed, "", Some(String::new()));
        assert_eq!((empty.name(), empty.message()), ("", Some("")));
        // A known name given as text is the same state as the constructor's.
        let failed = State::new(StateType::Failed, String::from("Failed"), Some("x".into()));
        assert_eq!(failed, State::failed("x").at(failed.timestamp()));
        assert_eq!(State::cached().name(), "Cached");
        assert_eq!(State::awaiting_retry("later").message(), Some("later"));
        assert!(std::mem::size_of::<State>() <= 24);
    }

    #[test]
    fn timestamps_survive_the_round_trip() {
        let state = State::completed();
        assert_eq!(state.clone().system_time(), state.system_time());
        let before_the_epoch = DateTime::from_timestamp(-86_400, 5_000).unwrap();
        assert_eq!(
            state.clone().at(before_the_epoch).timestamp(),
            before_the_epoch
        );
        let time: DateTime<Utc> = state.system_time().into();
        assert_eq!(time, state.timestamp());
    }

    #[test]
    fn timestamps_advance() {
        let first = State::pending();
        let second = State::completed();
        assert!(second.timestamp() >= first.timestamp());
    }
}
