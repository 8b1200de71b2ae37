//! Console logs in Prefect's format, `HH:MM:SS.mmm | LEVEL   | logger - message`,
//! through `tracing`.
//!
//! [`Prefecto::install`](crate::Prefecto::install) (which the first flow call
//! does, if the program did not) installs [`PrefectFormat`] as the global
//! subscriber unless one is already set, at the level named by
//! `PREFECTO_LOGGING_LEVEL` (`DEBUG`, `INFO` (the default), `WARNING`,
//! `ERROR`, or `OFF`) or by the builder's `console_logs`. Install your own
//! subscriber first to take over; [`init`] and [`init_with_writer`] set ours
//! up explicitly.
//!
//! The engine logs to three targets, as Prefect's loggers:
//! `prefecto.engine`, `prefecto.flow_runs` (with a `flow_run` field, shown as
//! `Flow run 'beryl-moth' - ...`) and `prefecto.task_runs` (with a `task_run`
//! field, shown as `Task run 'add-0' - ...`).

use crate::text::escape_controls;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

pub use crate::recorder::{ENGINE, FLOW_RUNS, TASK_RUNS};
/// The level filter that [`init`] and the builder's `console_logs` take.
pub use tracing::level_filters::LevelFilter;

/// Formats events as Prefect's console handler does.
///
/// ```
/// use prefecto::logging::PrefectFormat;
///
/// let subscriber = tracing_subscriber::fmt()
///     .event_format(PrefectFormat)
///     .with_writer(std::io::sink)
///     .finish();
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(target: "prefecto.flow_runs", flow_run = "beryl-moth", "Hello");
/// });
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PrefectFormat;

#[derive(Default)]
struct Fields {
    message: String,
    flow_run: Option<String>,
    task_run: Option<String>,
    extra: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "flow_run" => self.flow_run = Some(value.to_string()),
            "task_run" => self.task_run = Some(value.to_string()),
            _ => self.record_debug(field, &value),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "flow_run" => self.flow_run = Some(format!("{value:?}")),
            "task_run" => self.task_run = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.extra, " {name}={value:?}");
            }
        }
    }
}

impl<S, N> FormatEvent<S, N> for PrefectFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(
            writer,
            "{} | {:<7} | ",
            chrono::Local::now().format("%H:%M:%S%.3f"),
            crate::recorder::level_name(metadata.level())
        )?;
        // One record per line, and nothing that drives the terminal: task
        // errors and results are untrusted text.
        match (&fields.task_run, &fields.flow_run) {
            (Some(task_run), _) => write!(writer, "Task run '{}' - ", escape_controls(task_run))?,
            (None, Some(flow_run)) => {
                write!(writer, "Flow run '{}' - ", escape_controls(flow_run))?
            }
            (None, None) => write!(writer, "{} - ", metadata.target())?,
        }
        writeln!(
            writer,
            "{}{}",
            escape_controls(&fields.message),
            escape_controls(&fields.extra)
        )
    }
}

/// Installs Prefect-format console logs on stderr as the global subscriber.
/// Returns false if a global subscriber was already set (it is kept).
///
/// ```
/// use tracing::level_filters::LevelFilter;
///
/// // Before the first flow run: DEBUG shows the `Mapping 'add' batch 1 of 2.` lines.
/// assert!(prefecto::logging::init(LevelFilter::DEBUG));
/// // A second subscriber is refused; the first stays.
/// assert!(!prefecto::logging::init(LevelFilter::INFO));
/// ```
pub fn init(level: LevelFilter) -> bool {
    // Lines go above any progress bar rather than through it.
    #[cfg(feature = "progress")]
    return init_with_writer(level, crate::progress_bar::ConsoleWriter);
    #[cfg(not(feature = "progress"))]
    return init_with_writer(level, std::io::stderr);
}

/// As [`init`], writing to any `tracing_subscriber` writer.
pub fn init_with_writer<W>(level: LevelFilter, writer: W) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // The HTTP stack beneath the Prefect reporter speaks only when something
    // is wrong: at DEBUG it would drown the flow's own lines.
    let quiet = level.min(LevelFilter::WARN);
    let targets = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_targets(["hyper", "hyper_util", "reqwest", "rustls", "h2"].map(|t| (t, quiet)));
    tracing_subscriber::fmt()
        .event_format(PrefectFormat)
        .with_max_level(level)
        .with_writer(writer)
        .finish()
        .with(targets)
        .try_init()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(PrefectFormat)
            .with_max_level(LevelFilter::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn formats_as_prefect() {
        let out = capture(|| {
            tracing::info!(target: "prefecto.engine", "Created flow run 'beryl-moth' for flow 'my-flow'");
            tracing::debug!(target: "prefecto.flow_runs", flow_run = %"beryl-moth", "Mapping 'add' batch 1 of 2.");
            tracing::warn!(target: "prefecto.task_runs", task_run = %"add-0", "Finished in state Completed()");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        let tail = |line: &str| line.split_once(" | ").unwrap().1.to_string();
        assert_eq!(
            tail(lines[0]),
            "INFO    | prefecto.engine - Created flow run 'beryl-moth' for flow 'my-flow'"
        );
        assert_eq!(
            tail(lines[1]),
            "DEBUG   | Flow run 'beryl-moth' - Mapping 'add' batch 1 of 2."
        );
        assert_eq!(
            tail(lines[2]),
            "WARNING | Task run 'add-0' - Finished in state Completed()"
        );
        let time = lines[0].split(" | ").next().unwrap();
        assert_eq!(time.len(), "01:31:51.012".len(), "{time}");
        assert_eq!(&time[2..3], ":");
        assert_eq!(&time[8..9], ".");
    }
}
