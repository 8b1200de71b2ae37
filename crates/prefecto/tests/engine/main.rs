//! The engine's integration tests, in one binary so that the library is
//! linked once: flows, task runs, maps, `BatchTask` and its properties, and
//! (with the `history` feature) the run history and resume. They share the
//! set-up `common::quiet` installs; those that need their own run under a
//! `Prefecto::scope`.

#[path = "../common/mod.rs"]
mod common;

mod abandoned_maps;
mod async_stream_inputs;
mod batch_properties;
mod batch_task;
mod blocking_in_async;
mod ended_map_futures;
mod flows;
mod future_inputs;
#[cfg(feature = "history")]
mod history;
mod inputs_held_ahead;
mod map;
mod maps_over_streams;
mod nested_runs;
mod panicking_parts;
mod recorder_interest;
#[cfg(feature = "history")]
mod resume;
mod stream_outcomes_at_once;
mod streams;
mod strict_batches;
mod sync_maps_on_the_pool;
mod task_runs;
mod timeouts;
