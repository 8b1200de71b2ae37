//! The composition root: [`Prefecto`] puts the engine's seams together (the
//! run history, the Prefect client, the progress bar, your own recorders) and
//! owns the process-wide side effects (console logs, signal handling).
//!
//! A program that does nothing gets [`Prefecto::builder`]'s defaults, read
//! from the environment ([`Settings`]), installed by its first flow call.
//! A program that wants a say builds its own, before any flow runs:
//!
//! ```
//! use prefecto::prelude::*;
//! use prefecto::logging::LevelFilter;
//!
//! #[task]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[flow]
//! fn my_flow() -> i64 {
//!     add(1, 2).unwrap()
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     Prefecto::builder()
//!         .engine_only()          // no history, Prefect client, progress bar or signals
//!         .console_logs(Some(LevelFilter::WARN))
//!         .max_workers(4)
//!         .build()?
//!         .install()?;
//!     assert_eq!(my_flow()?, 3);
//!     Ok(())
//! }
//! ```
//!
//! [`Prefecto::scope`] runs flows with a set of seams on one thread only,
//! beside the installed ones: what tests and benchmarks use to compare
//! set-ups in one process.

#[cfg(any(feature = "history", feature = "prefect"))]
use std::path::Path;
#[cfg(feature = "history")]
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use thiserror::Error;
use tracing::level_filters::LevelFilter;

use crate::progress::ProgressDisplay;
use crate::recorder::Recorder;
use crate::recorder_guard::PanicGuard;
use crate::result_store::ResultStore;
use crate::seams::{self, Seams};
use crate::settings::Settings;
use crate::slot_limiter::SlotLimiter;

#[cfg(feature = "history")]
use crate::store::{DB_FILE, HistoryRecorder, StoreError};

#[cfg(feature = "prefect")]
use crate::prefect_api::{ApiConfig, ConfigError, PrefectReporter, ReportCounters};

/// Why a [`Prefecto`] could not be built or installed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The run history could not be opened.
    #[cfg(feature = "history")]
    #[error("the run history could not be opened: {0}")]
    History(#[source] StoreError),
    /// The Prefect client could not be configured or started.
    #[cfg(feature = "prefect")]
    #[error("cannot report to Prefect: {0}")]
    Prefect(#[source] ConfigError),
    /// [`Prefecto::install`] was called after another installation (or
    /// after the first flow call installed the defaults).
    #[error(
        "prefecto is already installed for this process: install it before the first flow call, \
         or use Prefecto::scope"
    )]
    AlreadyInstalled,
}

/// A set-up of prefecto: the seams its flow runs report to, and the side
/// effects it owns. Build one with [`Prefecto::builder`].
pub struct Prefecto {
    seams: Arc<Seams>,
    console_logs: Option<LevelFilter>,
    #[cfg_attr(not(feature = "signals"), allow(dead_code))]
    handle_signals: bool,
    #[cfg(feature = "history")]
    history: Option<Arc<HistoryRecorder>>,
    #[cfg(feature = "prefect")]
    prefect: Option<Arc<PrefectReporter>>,
}

static INSTALLED: OnceLock<Prefecto> = OnceLock::new();

impl Prefecto {
    /// A builder whose defaults are the environment's ([`Settings::from_env`]).
    pub fn builder() -> PrefectoBuilder {
        PrefectoBuilder::from_settings(Settings::from_env())
    }

    /// Makes this set-up the process's: every flow run started from now on
    /// (outside a [`scope`](Self::scope)) reports to its seams. Installs the
    /// console logs (unless the program has its own `tracing` subscriber)
    /// and, on Unix, the SIGINT/SIGTERM handling it was built with.
    pub fn install(self) -> Result<&'static Prefecto, SetupError> {
        let mut offered = Some(self);
        let installed = INSTALLED.get_or_init(|| offered.take().expect("offered once"));
        if offered.is_some() {
            return Err(SetupError::AlreadyInstalled);
        }
        installed.install_side_effects();
        // Only this function sets it, once, after INSTALLED.
        let _ = seams::set_global(installed.seams.clone());
        Ok(installed)
    }

    /// The installed set-up, if any.
    pub fn installed() -> Option<&'static Prefecto> {
        INSTALLED.get()
    }

    /// Runs `f` with this set-up's seams for every flow call it makes on
    /// this thread (and the task runs of those flows), whatever is
    /// installed. Side effects (console logs, signals) are not installed.
    ///
    /// ```
    /// use prefecto::prelude::*;
    ///
    /// #[flow]
    /// fn hello() -> &'static str {
    ///     "hello"
    /// }
    ///
    /// let quiet = Prefecto::builder().engine_only().build().unwrap();
    /// assert_eq!(quiet.scope(|| hello()).unwrap(), "hello");
    /// ```
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        seams::scope(self.seams.clone(), f)
    }

    /// As [`scope`](Self::scope), for an async flow call and what it awaits.
    pub async fn scope_async<F: std::future::Future>(&self, future: F) -> F::Output {
        seams::scope_async(self.seams.clone(), future).await
    }

    /// The run history's database file, if this set-up records one.
    #[cfg(feature = "history")]
    pub fn history_path(&self) -> Option<&Path> {
        self.history.as_deref().map(HistoryRecorder::path)
    }

    /// What reporting to Prefect has cost so far, if this set-up reports.
    #[cfg(feature = "prefect")]
    pub fn prefect_counters(&self) -> Option<ReportCounters> {
        self.prefect.as_ref().map(|reporter| reporter.counters())
    }

    /// Waits until the background work of this set-up's flow runs is done:
    /// until the Prefect server has every flow run that ended (within
    /// `PREFECTO_REPORT_WAIT`, with a progress line every few seconds;
    /// what it still lacks then is named in a warning and kept in the run
    /// history, for the next process to deliver). Flow calls return before
    /// the server has everything, as Python's do; the process waits for the
    /// installed set-up when it exits (on Unix), and a set-up that is not
    /// installed waits when it is dropped. Call it yourself to wait sooner.
    /// Flows can still be called afterwards.
    ///
    /// ```
    /// use prefecto::prelude::*;
    ///
    /// #[flow]
    /// fn hello() -> u32 {
    ///     42
    /// }
    ///
    /// let set_up = Prefecto::builder().engine_only().build().unwrap();
    /// assert_eq!(set_up.scope(|| hello()).unwrap(), 42);
    /// set_up.shutdown(); // nothing to wait for without a server
    /// ```
    pub fn shutdown(&self) {
        #[cfg(feature = "prefect")]
        if let Some(reporter) = &self.prefect {
            // Children a stopped map cancels first: their ends are reports too.
            crate::deployments::wait_for_cancellations(std::time::Duration::from_secs(15));
            reporter.wait_for_delivery();
        }
    }

    fn install_side_effects(&self) {
        if let Some(level) = self.console_logs
            && !tracing::dispatcher::has_been_set()
        {
            crate::logging::init(level);
        }
        #[cfg(feature = "signals")]
        if self.handle_signals {
            crate::signals::listen();
        }
        #[cfg(feature = "prefect")]
        if let Some(reporter) = &self.prefect {
            // Only the installed set-up: one that loses the race to install
            // must not take (and then wait for) earlier processes' runs.
            reporter.deliver_left_over();
            #[cfg(unix)]
            wait_at_exit();
        }
    }
}

/// Makes the process wait, when it exits, until the installed set-up's
/// reports are delivered: a program's `main` returns right after its flow
/// calls, and without this the server would get none of what is still on
/// its way.
#[cfg(all(feature = "prefect", unix))]
fn wait_at_exit() {
    extern "C" fn at_exit() {
        // A panic must not cross into C. The wait runs on a thread of its
        // own: the exiting thread's thread-locals (which logging uses) are
        // already gone.
        #[cfg(feature = "signals")]
        crate::signals::EXITING.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::panic::catch_unwind(|| {
            let waiter = std::thread::Builder::new()
                .name("prefecto-exit".into())
                .spawn(|| {
                    if let Some(installed) = Prefecto::installed() {
                        installed.shutdown();
                    }
                });
            if let Ok(waiter) = waiter {
                let _ = waiter.join();
            }
        });
    }
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: `at_exit` is a plain function that lives for the whole
        // program; registering it has no other effect.
        unsafe {
            libc::atexit(at_exit);
        }
    });
}

/// A set-up that was never installed waits for its own deliveries when dropped.
impl Drop for Prefecto {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Waits until the installed set-up's background work is done (see
/// [`Prefecto::shutdown`]); nothing to do if none is installed.
///
/// ```
/// prefecto::shutdown();
/// ```
pub fn shutdown() {
    if let Some(installed) = Prefecto::installed() {
        installed.shutdown();
    }
}

impl std::fmt::Debug for Prefecto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefecto")
            .field("recorders", &self.seams.recorders.len())
            .field("console_logs", &self.console_logs)
            .finish_non_exhaustive()
    }
}

/// Installs the environment's defaults unless a set-up is installed or a
/// scope is active: what the first flow or task call does.
pub(crate) fn ensure_installed() {
    if INSTALLED.get().is_some() || seams::in_scope() {
        return;
    }
    let builder = Prefecto::builder();
    // Console logs first, so that a part left out is warned about where it shows.
    if let Some(level) = builder.console_logs
        && !tracing::dispatcher::has_been_set()
    {
        crate::logging::init(level);
    }
    // Two first calls at once: one installs, the other's set-up is dropped.
    let _ = builder.build_lenient().install();
}

/// Whether to report to a Prefect server, and which.
#[cfg(feature = "prefect")]
#[derive(Clone, Debug)]
enum PrefectChoice {
    /// The server `PREFECT_API_URL` or the active Prefect profile names, if any.
    FromEnv,
    Off,
    Server(ApiConfig),
}

/// Builds a [`Prefecto`]. Every option starts at the environment's value.
#[must_use]
pub struct PrefectoBuilder {
    settings: Settings,
    /// The history's database, when not the one in the settings' home.
    #[cfg(feature = "history")]
    history_path: Option<PathBuf>,
    #[cfg(feature = "prefect")]
    prefect: PrefectChoice,
    console_logs: Option<LevelFilter>,
    recorders: Vec<Arc<dyn Recorder>>,
    result_store: Option<Arc<dyn ResultStore>>,
    slot_limiter: Option<Arc<dyn SlotLimiter>>,
    progress_display: Option<Arc<dyn ProgressDisplay>>,
}

impl PrefectoBuilder {
    /// A builder with these settings as its defaults.
    pub fn from_settings(settings: Settings) -> Self {
        PrefectoBuilder {
            console_logs: Some(settings.logging_level),
            settings,
            #[cfg(feature = "history")]
            history_path: None,
            #[cfg(feature = "prefect")]
            prefect: PrefectChoice::FromEnv,
            recorders: Vec::new(),
            result_store: None,
            slot_limiter: None,
            progress_display: None,
        }
    }

    /// Nothing but the engine: no run history, no Prefect client, no
    /// progress bar, no signal handling, no console logs. Seams added with
    /// the other methods still count.
    pub fn engine_only(mut self) -> Self {
        self.settings.history = false;
        self.settings.progress = false;
        self.settings.handle_signals = false;
        self.console_logs = None;
        #[cfg(feature = "prefect")]
        {
            self.prefect = PrefectChoice::Off;
        }
        self
    }

    /// Records every run in the SQLite run history (`PREFECTO_HISTORY`).
    #[cfg(feature = "history")]
    pub fn history(mut self, on: bool) -> Self {
        self.settings.history = on;
        self
    }

    /// Records the run history in `home` (as `PREFECTO_HOME` would), and turns it on.
    #[cfg(feature = "history")]
    pub fn history_in(mut self, home: impl Into<PathBuf>) -> Self {
        self.settings.history = true;
        self.history_path = Some(home.into().join(DB_FILE));
        self
    }

    /// Reports to the Prefect server the environment names (`PREFECT_API_URL`
    /// or the active Prefect profile), if it names one; `false` never reports.
    #[cfg(feature = "prefect")]
    pub fn prefect(mut self, on: bool) -> Self {
        self.prefect = if on {
            PrefectChoice::FromEnv
        } else {
            PrefectChoice::Off
        };
        self
    }

    /// Reports to this Prefect server.
    #[cfg(feature = "prefect")]
    pub fn prefect_server(mut self, config: ApiConfig) -> Self {
        self.prefect = PrefectChoice::Server(config);
        self
    }

    /// Shows a progress bar for long maps when stderr is a terminal (`PREFECTO_PROGRESS`).
    #[cfg(feature = "progress")]
    pub fn progress_bar(mut self, on: bool) -> Self {
        self.settings.progress = on;
        self
    }

    /// SIGINT and SIGTERM end active flow runs `Cancelled` and exit
    /// (`PREFECTO_HANDLE_SIGNALS`). Takes effect on [`Prefecto::install`].
    #[cfg(feature = "signals")]
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.settings.handle_signals = on;
        self
    }

    /// Installs Prefect-format console logs at this level on
    /// [`Prefecto::install`] (`PREFECTO_LOGGING_LEVEL`); `None` leaves
    /// logging to the program.
    pub fn console_logs(mut self, level: Option<LevelFilter>) -> Self {
        self.console_logs = level;
        self
    }

    /// Threads for sync task bodies of flows that name none (`PREFECTO_TASK_RUNNER_MAX_WORKERS`).
    pub fn max_workers(mut self, workers: usize) -> Self {
        self.settings.max_workers = Some(workers).filter(|&n| n > 0);
        self
    }

    /// Runs caching tasks' bodies again instead of returning stored results (`PREFECTO_REFRESH_CACHE`).
    pub fn refresh_cache(mut self, on: bool) -> Self {
        self.settings.refresh_cache = on;
        self
    }

    /// Adds a recorder, after the run history and the Prefect client.
    pub fn recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        self.recorders.push(recorder);
        self
    }

    /// Keeps cached task results here instead of in the run history.
    pub fn result_store(mut self, store: Arc<dyn ResultStore>) -> Self {
        self.result_store = Some(store);
        self
    }

    /// Grants tagged task runs their slots, instead of Prefect's tag limits.
    pub fn slot_limiter(mut self, limiter: Arc<dyn SlotLimiter>) -> Self {
        self.slot_limiter = Some(limiter);
        self
    }

    /// Shows maps' progress here, instead of the terminal progress bar.
    pub fn progress_display(mut self, display: Arc<dyn ProgressDisplay>) -> Self {
        self.progress_display = Some(display);
        self
    }

    /// Opens the run history and starts the Prefect client, as asked.
    pub fn build(self) -> Result<Prefecto, SetupError> {
        self.assemble(false)
    }

    /// As [`build`](Self::build), but a part that cannot start is left out
    /// with a warning: the flow runs anyway. What the first flow call does.
    fn build_lenient(self) -> Prefecto {
        match self.assemble(true) {
            Ok(prefecto) => prefecto,
            Err(_) => unreachable!("a lenient build leaves out what fails"),
        }
    }

    // Which seams are filled in depends on the features built.
    #[allow(unused_mut, unused_variables)]
    fn assemble(self, lenient: bool) -> Result<Prefecto, SetupError> {
        let warn = |what: &str, err: &dyn std::fmt::Display| {
            tracing::warn!(target: "prefecto.engine", "{what}: {err}");
        };
        let mut recorders: Vec<Arc<dyn Recorder>> = Vec::new();
        let mut result_store = self.result_store;
        let mut slot_limiter = self.slot_limiter;
        let mut progress = self.progress_display;
        let mut adopter: Option<Arc<dyn crate::adopt::FlowRunAdopter>> = None;

        #[cfg(feature = "history")]
        let history = if self.settings.history {
            let path = self
                .history_path
                .clone()
                .unwrap_or_else(|| self.settings.home.join(DB_FILE));
            match HistoryRecorder::start_with_reserve(&path, self.settings.history_reserve_mb) {
                Ok(history) => Some(Arc::new(history)),
                Err(err) if lenient => {
                    warn("Run history is off", &err);
                    None
                }
                Err(err) => return Err(SetupError::History(err)),
            }
        } else {
            None
        };
        #[cfg(feature = "history")]
        if let Some(history) = &history {
            recorders.push(history.clone());
            result_store.get_or_insert_with(|| history.clone());
        }

        #[cfg(feature = "prefect")]
        let prefect = {
            #[cfg(feature = "history")]
            let history_path = history.as_deref().map(HistoryRecorder::path);
            #[cfg(not(feature = "history"))]
            let history_path: Option<&Path> = None;
            let config = match self.prefect {
                PrefectChoice::Off => Ok(None),
                PrefectChoice::FromEnv => ApiConfig::from_env(),
                PrefectChoice::Server(config) => Ok(Some(config)),
            };
            let started = config.and_then(|config| {
                config
                    .map(|config| PrefectReporter::start(config, history_path))
                    .transpose()
            });
            match started {
                Ok(reporter) => reporter.map(Arc::new),
                Err(err) if lenient => {
                    warn("Not reporting to Prefect", &err);
                    None
                }
                Err(err) => return Err(SetupError::Prefect(err)),
            }
        };
        #[cfg(feature = "prefect")]
        match &prefect {
            Some(reporter) => {
                recorders.push(reporter.clone());
                slot_limiter.get_or_insert_with(|| Arc::new(reporter.slot_limiter()));
                adopter = Some(reporter.clone());
            }
            None => warn_if_asked_to_adopt(),
        }

        #[cfg(feature = "progress")]
        if self.settings.progress {
            progress.get_or_insert_with(|| Arc::new(crate::progress_bar::TerminalProgress));
        }

        recorders.extend(self.recorders);
        // A recorder that panics is dropped, with a warning: the flow run goes on.
        let recorders: Arc<[Arc<dyn Recorder>]> =
            recorders.into_iter().map(PanicGuard::wrap).collect();
        let pending_recorders = recorders
            .iter()
            .filter(|recorder| recorder.wants_pending())
            .cloned()
            .collect();
        let (running_recorders, late_running_recorders): (Vec<_>, Vec<_>) = recorders
            .iter()
            .cloned()
            .partition(|recorder| recorder.wants_running());
        Ok(Prefecto {
            seams: Arc::new(Seams {
                recorders,
                pending_recorders,
                running_recorders: running_recorders.into(),
                late_running_recorders: late_running_recorders.into(),
                result_store,
                slot_limiter,
                progress,
                adopter,
                max_workers: self.settings.max_workers,
                refresh_cache: self.settings.refresh_cache,
            }),
            console_logs: self.console_logs,
            handle_signals: self.settings.handle_signals,
            #[cfg(feature = "history")]
            history,
            #[cfg(feature = "prefect")]
            prefect,
        })
    }
}

/// A Prefect worker started us for a flow run, but no server is configured to read it from.
#[cfg(feature = "prefect")]
fn warn_if_asked_to_adopt() {
    use crate::prefect_api::FLOW_RUN_ID_ENV;
    if let Some(id) = std::env::var(FLOW_RUN_ID_ENV)
        .ok()
        .filter(|v| !v.is_empty())
    {
        tracing::warn!(target: "prefecto.engine", "{FLOW_RUN_ID_ENV} is set to {id:?}, but no Prefect server is configured (PREFECT_API_URL): flow runs start as new flow runs.");
    }
}

impl std::fmt::Debug for PrefectoBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefectoBuilder")
            .field("settings", &self.settings)
            .field("console_logs", &self.console_logs)
            .field("recorders", &self.recorders.len())
            .finish_non_exhaustive()
    }
}
