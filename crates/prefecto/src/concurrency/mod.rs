//! Bounded concurrency for `map`: [`BatchTask`] and its [kill switches](KillSwitch).
//!
//! The names are the Python prefecto's, so a Prefect user recognises them.

mod batch_task;
mod kill_switch;

pub use batch_task::{BatchError, BatchMode, BatchTask, InputOutcome};
pub use kill_switch::{
    AnyFailedSwitch, ConfigError, CountSwitch, KillSwitch, KillSwitchError, RateSwitch,
};
