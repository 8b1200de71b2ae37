//! Kill switches: conditions on finished task runs that stop a [`BatchTask`](super::BatchTask).

use std::fmt;

use sync_wrapper::SyncWrapper;
use thiserror::Error;

use super::outcome::InputOutcome;
use crate::state::State;

/// A [`BatchTask`](super::BatchTask) or kill switch was given arguments it cannot work with.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum BatchConfigError {
    /// `BatchTask::new(task, 0)`.
    #[error("BatchTask size must be at least 1, got 0")]
    ZeroBatchSize,
    /// `CountSwitch::new(0)`.
    #[error("CountSwitch max_count must be at least 1, got 0")]
    ZeroMaxCount,
    /// `RateSwitch::new(_, rate)` with a rate outside 0..=1.
    #[error("RateSwitch max_fail_rate must be between 0 and 1, got {0}")]
    RateOutOfRange(f64),
}

/// A kill switch tripped. It names the switch and why it tripped and, when a
/// [`BatchTask`](super::BatchTask) raised it, carries the outcome of every input:
/// the values of the runs that completed and the final states of the rest.
///
/// ```
/// use prefecto::concurrency::{AnyFailedSwitch, KillSwitch};
/// use prefecto::State;
///
/// let mut switch = AnyFailedSwitch::new();
/// assert!(switch.raise_if_triggered(&State::completed()).is_ok());
/// let err = switch.raise_if_triggered(&State::failed("bad input")).unwrap_err();
/// assert_eq!(err.switch, "AnyFailedSwitch");
/// assert_eq!(
///     err.to_string(),
///     "Kill switch AnyFailedSwitch tripped: a task run finished in state Failed('bad input')"
/// );
/// ```
///
/// The error is `Send + Sync` whenever the values are `Send`, so `?` can box
/// it (into `anyhow::Error`, say) whatever the task returns: the values are
/// reached through `&mut self` or by value.
#[derive(Error)]
#[error("Kill switch {switch} tripped: {reason}")]
pub struct KillSwitchError<T = ()> {
    /// The switch's name.
    pub switch: String,
    /// Why it tripped.
    pub reason: String,
    /// One outcome per input of the map, in input order (empty when raised
    /// by [`KillSwitch::raise_if_triggered`] alone).
    pub outcomes: Vec<InputOutcome>,
    /// The value of each input that completed, in input order. Only ever
    /// reached exclusively, which makes the error `Sync` for any `Send` value.
    values: SyncWrapper<Vec<Option<T>>>,
}

impl<T> KillSwitchError<T> {
    /// An error with no outcomes yet.
    pub fn new(switch: impl Into<String>, reason: impl Into<String>) -> Self {
        KillSwitchError {
            switch: switch.into(),
            reason: reason.into(),
            outcomes: Vec::new(),
            values: SyncWrapper::new(Vec::new()),
        }
    }

    /// The error of a map the switch stopped: each input's outcome, and the
    /// values of those that completed (`None` for the rest), in input order.
    pub(crate) fn of_map(
        switch: String,
        reason: String,
        outcomes: Vec<InputOutcome>,
        values: Vec<Option<T>>,
    ) -> Self {
        KillSwitchError {
            switch,
            reason,
            outcomes,
            values: SyncWrapper::new(values),
        }
    }

    /// The same error without the values: every input's state, for an
    /// error that must not carry `T` (such as [`crate::Error`]).
    pub fn without_values(self) -> KillSwitchError {
        let values = self
            .values
            .into_inner()
            .into_iter()
            .map(|value| value.map(drop))
            .collect();
        KillSwitchError::of_map(self.switch, self.reason, self.outcomes, values)
    }

    /// The values of the inputs that completed, `None` for the rest, in input order.
    pub fn partial_results(&mut self) -> Vec<Option<&T>> {
        self.values.get_mut().iter().map(Option::as_ref).collect()
    }

    /// As [`partial_results`](Self::partial_results), taking the values.
    pub fn into_partial_results(self) -> Vec<Option<T>> {
        self.values.into_inner()
    }

    /// The positions of the inputs whose runs ended in a state of this kind.
    pub fn inputs_where(&self, pred: impl Fn(&State) -> bool) -> Vec<usize> {
        self.outcomes
            .iter()
            .filter(|o| pred(&o.state))
            .map(|o| o.index)
            .collect()
    }

    /// The positions of the inputs that completed.
    pub fn completed_inputs(&self) -> Vec<usize> {
        self.inputs_where(State::is_completed)
    }

    /// The positions of the inputs that failed or crashed.
    pub fn failed_inputs(&self) -> Vec<usize> {
        self.inputs_where(|s| s.is_failed() || s.is_crashed())
    }

    /// The positions of the inputs that were cancelled, in flight or before submission.
    pub fn cancelled_inputs(&self) -> Vec<usize> {
        self.inputs_where(State::is_cancelled)
    }
}

/// A summary rather than every outcome: a map may have millions.
impl<T> fmt::Debug for KillSwitchError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillSwitchError")
            .field("switch", &self.switch)
            .field("reason", &self.reason)
            .field("inputs", &self.outcomes.len())
            .field("completed", &self.completed_inputs().len())
            .field("failed", &self.failed_inputs().len())
            .field("cancelled", &self.cancelled_inputs().len())
            .finish()
    }
}

/// Decides, one finished task run at a time, whether to stop a [`BatchTask`](super::BatchTask).
///
/// Each call of [`should_flip_switch`](Self::should_flip_switch) advances the
/// switch's state and says whether it trips. Write your own by implementing it:
///
/// ```
/// use prefecto::concurrency::KillSwitch;
/// use prefecto::State;
///
/// /// Trips on the first run that timed out.
/// struct TimeoutSwitch;
///
/// impl KillSwitch for TimeoutSwitch {
///     fn should_flip_switch(&mut self, state: &State) -> bool {
///         state.name() == "TimedOut"
///     }
///     fn reason(&self) -> String {
///         "a task run timed out".into()
///     }
/// }
///
/// let mut switch = TimeoutSwitch;
/// assert!(!switch.should_flip_switch(&State::failed("error")));
/// let err = switch.raise_if_triggered(&State::timed_out("slow")).unwrap_err();
/// assert_eq!(err.to_string(), "Kill switch TimeoutSwitch tripped: a task run timed out");
/// ```
pub trait KillSwitch: Send + 'static {
    /// Advances the switch with one terminal state; true if it trips.
    fn should_flip_switch(&mut self, state: &State) -> bool;

    /// The switch's name, for errors and logs: its type's name by default.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        let without_generics = full.split('<').next().unwrap_or(full);
        without_generics
            .rsplit("::")
            .next()
            .unwrap_or(without_generics)
            .to_string()
    }

    /// Why the switch tripped, in words.
    fn reason(&self) -> String {
        "its condition was met".to_string()
    }

    /// Advances the switch, and returns an error if it trips.
    fn raise_if_triggered(&mut self, state: &State) -> Result<(), KillSwitchError> {
        if self.should_flip_switch(state) {
            Err(KillSwitchError::new(self.name(), self.reason()))
        } else {
            Ok(())
        }
    }
}

fn is_failure(state: &State) -> bool {
    state.is_failed() || state.is_crashed()
}

/// Trips on the first task run that fails or crashes.
#[derive(Debug, Clone, Default)]
pub struct AnyFailedSwitch {
    tripped_by: Option<State>,
}

impl AnyFailedSwitch {
    /// A new switch.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KillSwitch for AnyFailedSwitch {
    fn should_flip_switch(&mut self, state: &State) -> bool {
        if is_failure(state) {
            self.tripped_by = Some(state.clone());
            true
        } else {
            false
        }
    }

    fn reason(&self) -> String {
        match &self.tripped_by {
            Some(state) => format!("a task run finished in state {state}"),
            None => "a task run failed or crashed".to_string(),
        }
    }
}

/// Trips when the count of failed and crashed task runs reaches `max_count`.
///
/// ```
/// use prefecto::concurrency::{CountSwitch, KillSwitch};
/// use prefecto::State;
///
/// let mut switch = CountSwitch::new(2).unwrap();
/// assert!(!switch.should_flip_switch(&State::failed("x")));
/// assert!(!switch.should_flip_switch(&State::completed()));
/// assert!(switch.should_flip_switch(&State::crashed("y")));
/// assert!(CountSwitch::new(0).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct CountSwitch {
    max_count: usize,
    count: usize,
}

impl CountSwitch {
    /// A switch that trips at `max_count` failures; `max_count` must be at least 1.
    pub fn new(max_count: usize) -> Result<Self, BatchConfigError> {
        if max_count == 0 {
            return Err(BatchConfigError::ZeroMaxCount);
        }
        Ok(CountSwitch {
            max_count,
            count: 0,
        })
    }

    /// Failures seen so far.
    pub fn count(&self) -> usize {
        self.count
    }
}

impl KillSwitch for CountSwitch {
    fn should_flip_switch(&mut self, state: &State) -> bool {
        if is_failure(state) {
            self.count += 1;
        }
        self.count >= self.max_count
    }

    fn reason(&self) -> String {
        format!(
            "{} task run(s) failed or crashed, reaching max_count {}",
            self.count, self.max_count
        )
    }
}

/// Counts every state seen, and trips once at least `min_sample` have been
/// seen and the share of failed and crashed ones reaches `max_fail_rate`.
///
/// ```
/// use prefecto::concurrency::{KillSwitch, RateSwitch};
/// use prefecto::State;
///
/// let mut switch = RateSwitch::new(3, 0.5).unwrap();
/// assert!(switch.raise_if_triggered(&State::completed()).is_ok());
/// assert!(switch.raise_if_triggered(&State::failed("x")).is_ok());
/// assert!(switch.raise_if_triggered(&State::crashed("y")).is_err());
/// assert!(RateSwitch::new(3, 1.5).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct RateSwitch {
    min_sample: usize,
    max_fail_rate: f64,
    seen: usize,
    failed: usize,
}

impl RateSwitch {
    /// `max_fail_rate` must be within 0..=1.
    pub fn new(min_sample: usize, max_fail_rate: f64) -> Result<Self, BatchConfigError> {
        if !(0.0..=1.0).contains(&max_fail_rate) {
            return Err(BatchConfigError::RateOutOfRange(max_fail_rate));
        }
        Ok(RateSwitch {
            min_sample,
            max_fail_rate,
            seen: 0,
            failed: 0,
        })
    }

    /// The share of failed and crashed runs so far.
    pub fn fail_rate(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.failed as f64 / self.seen as f64
        }
    }
}

impl KillSwitch for RateSwitch {
    fn should_flip_switch(&mut self, state: &State) -> bool {
        self.seen += 1;
        if is_failure(state) {
            self.failed += 1;
        }
        self.seen >= self.min_sample && self.fail_rate() >= self.max_fail_rate
    }

    fn reason(&self) -> String {
        format!(
            "{} of {} task runs failed or crashed (rate {:.3}), reaching max_fail_rate {} after min_sample {}",
            self.failed,
            self.seen,
            self.fail_rate(),
            self.max_fail_rate,
            self.min_sample
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_failed_trips_on_failed_and_crashed() {
        assert!(
            AnyFailedSwitch::new()
                .raise_if_triggered(&State::failed("x"))
                .is_err()
        );
        assert!(
            AnyFailedSwitch::new()
                .raise_if_triggered(&State::crashed("x"))
                .is_err()
        );
        let mut switch = AnyFailedSwitch::new();
        for state in [State::completed(), State::cancelled("x"), State::running()] {
            assert!(switch.raise_if_triggered(&state).is_ok());
        }
    }

    #[test]
    fn count_switch_counts_failures_only() {
        let mut switch = CountSwitch::new(2).unwrap();
        assert!(switch.raise_if_triggered(&State::failed("a")).is_ok());
        assert!(switch.raise_if_triggered(&State::completed()).is_ok());
        let err = switch.raise_if_triggered(&State::failed("b")).unwrap_err();
        assert_eq!(err.switch, "CountSwitch");
        assert_eq!(
            err.reason,
            "2 task run(s) failed or crashed, reaching max_count 2"
        );
    }

    #[test]
    fn rate_switch_as_the_original() {
        let mut switch = RateSwitch::new(3, 0.5).unwrap();
        assert!(switch.raise_if_triggered(&State::completed()).is_ok());
        assert!(switch.raise_if_triggered(&State::failed("x")).is_ok());
        let err = switch.raise_if_triggered(&State::crashed("y")).unwrap_err();
        assert_eq!(err.switch, "RateSwitch");
        assert!(err.reason.starts_with("2 of 3 task runs"), "{}", err.reason);
    }

    #[test]
    fn rate_switch_waits_for_min_sample() {
        let mut switch = RateSwitch::new(4, 0.25).unwrap();
        for _ in 0..3 {
            assert!(!switch.should_flip_switch(&State::failed("x")));
        }
        assert!(switch.should_flip_switch(&State::completed()));
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert_eq!(
            CountSwitch::new(0).unwrap_err(),
            BatchConfigError::ZeroMaxCount
        );
        for rate in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                RateSwitch::new(1, rate),
                Err(BatchConfigError::RateOutOfRange(_))
            ));
        }
        assert!(RateSwitch::new(0, 0.0).is_ok());
        assert!(RateSwitch::new(0, 1.0).is_ok());
        assert_eq!(
            BatchConfigError::RateOutOfRange(2.0).to_string(),
            "RateSwitch max_fail_rate must be between 0 and 1, got 2"
        );
    }
}
