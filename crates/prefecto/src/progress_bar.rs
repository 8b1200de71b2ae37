//! A progress bar for long maps, on stderr when it is a terminal: the
//! [`ProgressDisplay`] that [`Prefecto`](crate::Prefecto) installs by default.
//!
//! It shows completed, failed and total, the current batch, the rate and the
//! ETA; for a stream of unknown length, how many are done, without a total. `PREFECTO_PROGRESS=off` (or `progress_bar(false)` on the builder)
//! turns it off; it is off anyway when stderr is not a terminal. Console log
//! lines are written above the bar, never through it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

use crate::progress::{MapProgress, ProgressDisplay};
use crate::state::State;

/// The bars on screen: log lines suspend them while they print.
static ACTIVE: Mutex<Vec<ProgressBar>> = Mutex::new(Vec::new());

/// Progress bars on stderr, when it is a terminal.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalProgress;

impl ProgressDisplay for TerminalProgress {
    fn start_map(
        &self,
        task: &str,
        total: Option<usize>,
        batches: usize,
    ) -> Option<Arc<dyn MapProgress>> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        MapBar::start(task, total, batches).map(|bar| Arc::new(bar) as Arc<dyn MapProgress>)
    }
}

/// The bar of one map.
struct MapBar {
    bar: ProgressBar,
    completed: AtomicUsize,
    failed: AtomicUsize,
    batch: AtomicUsize,
    batches: usize,
}

impl MapBar {
    /// A bar for `total` inputs of `task` (a count without a total if it is
    /// unknown); none for an empty map.
    fn start(task: &str, total: Option<usize>, batches: usize) -> Option<Self> {
        if total == Some(0) {
            return None;
        }
        let bar =
            ProgressBar::with_draw_target(total.map(|n| n as u64), ProgressDrawTarget::stderr());
        let template = match total {
            Some(_) => {
                "{prefix} [{bar:30.green/white}] {pos}/{len} · {msg} · {per_sec} · ETA {eta}"
            }
            None => "{prefix} {pos} done · {msg} · {per_sec}",
        };
        let style = ProgressStyle::with_template(template)
            .expect("the template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(task.to_string());
        let progress = MapBar {
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
        let batch = self.batch.load(Ordering::Relaxed);
        let message = match self.batches {
            0 if batch == 0 => format!("{completed} completed · {failed} failed"),
            0 => format!("{completed} completed · {failed} failed · batch {batch}"),
            n => format!(
                "{completed} completed · {failed} failed · batch {}/{n}",
                self.batch.load(Ordering::Relaxed)
            ),
        };
        self.bar.set_message(message);
    }
}

impl MapProgress for MapBar {
    fn batch_started(&self, batch: usize) {
        self.batch.store(batch, Ordering::Relaxed);
        self.show();
    }

    fn run_finished(&self, state: &State) {
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

impl Drop for MapBar {
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
