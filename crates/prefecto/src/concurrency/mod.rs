//! Bounded concurrency for `map`: [`BatchTask`] and its [kill switches](KillSwitch).
//!
//! The names are the Python prefecto's, so a Prefect user recognises them.

mod batch_error;
mod batch_map;
mod batch_mode;
mod batch_task;
mod kill_switch;
mod lane_group;
mod map_handover;
mod map_inputs;
mod map_lanes;
mod map_pool_lane;
mod map_queue;
mod map_run;
mod map_stream;
mod map_unsubmitted;
mod outcome;
mod spares;
mod stream_handoff;
mod stream_stop;
mod taken;

pub use batch_error::BatchError;
pub use batch_mode::{BatchMode, SwitchOrder};
pub use batch_task::BatchTask;
pub use kill_switch::{
    AnyFailedSwitch, BatchConfigError, CountSwitch, KillSwitch, KillSwitchError, RateSwitch,
};
pub use map_stream::{MapStream, StreamedRun};
pub use outcome::InputOutcome;
pub use stream_stop::StreamStop;
