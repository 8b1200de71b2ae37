//! A progress bar for long maps, on stderr when it is a terminal.
//!
//! It shows completed, failed and total, the current batch, the rate and the
//! ETA. `PREFECTO_PROGRESS=off` turns it off; it is off anyway when stderr is
//! not a terminal. Console log lines are written above the bar, never through it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

use crate::state::State;

/// The environment variable that turns the progress bar off.
pub const PROGRESS_ENV: &str = "PREFECTO_PROGRESS";

/// The bars on screen: log lines suspend them while they print.
static ACTIVE: Mutex<Vec<ProgressBar>> = Mutex::new(Vec::new());

fn enabled() -> bool {
    let off = std::env::var(PROGRESS_ENV)
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "false" | "0" | "no"
            )
        })
        .unwrap_or(false);
    !off && std::io::stderr().is_terminal()
}

/// The progress of one map.
pub(crate) struct MapProgress {
    bar: ProgressBar,
    completed: AtomicUsize,
    failed: AtomicUsize,
    batch: AtomicUsize,
    batches: usize,
}

impl MapProgress {
    /// A bar for `total` inputs of `task`, if progress is shown at all.
    pub(crate) fn start(task: &str, total: usize, batches: usize) -> Option<Self> {
        if total == 0 || !enabled() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30.green/white}] {pos}/{len} · {msg} · {per_sec} · ETA {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(task.to_string());
        let progress = MapProgress {
            bar,
            completed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            batch: AtomicUsize::new(0),
            batches,
        };
        progress.show();
        ACTIVE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(progress.bar.clone());
        Some(progress)
    }

    fn show(&self) {
        let failed = self.failed.load(Ordering::Relaxed);
        let completed = self.completed.load(Ordering::Relaxed);
        let message = match self.batches {
            0 => format!("{completed} completed · {failed} failed"),
            n => format!(
                "{completed} completed · {failed} failed · batch {}/{n}",
                self.batch.load(Ordering::Relaxed)
            ),
        };
        self.bar.set_message(message);
    }

    /// Batch `batch` (from 1) has started.
    pub(crate) fn batch(&self, batch: usize) {
        self.batch.store(batch, Ordering::Relaxed);
        self.show();
    }

    /// A run finished in `state`.
    pub(crate) fn finished(&self, state: &State) {
        if state.is_failed() || state.is_crashed() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        } else if state.is_completed() {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
        self.bar.inc(1);
        // The bar redraws at most a few times a second, so the message may change every run.
        self.show();
    }
}

impl Drop for MapProgress {
    fn drop(&mut self) {
        // Runs finishing on several threads at once may set their messages
        // out of order: the last word is the final count.
        self.show();
        self.bar.abandon();
        ACTIVE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|bar| !bar.is_finished());
    }
}

/// Writes console log lines to stderr, above any progress bar.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConsoleWriter;

/// One log line, written whole when dropped.
pub struct ConsoleLine(Vec<u8>);

impl Write for ConsoleLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ConsoleLine {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        match active.first() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

impl<'a> MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleLine;
    fn make_writer(&'a self) -> Self::Writer {
        ConsoleLine(Vec::with_capacity(128))
    }
}
