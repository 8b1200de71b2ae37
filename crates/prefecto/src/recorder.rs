//! The seam where run history is taken: every state transition and every
//! engine log line of a flow run is handed to each installed [`Recorder`].
//!
//! The SQLite run history and the Prefect server reporter are recorders. With
//! none installed, the engine pays one branch per transition. A recorder
//! that keeps only each run's latest state may decline a task run's
//! `Pending` transition ([`Recorder::wants_pending`]), and the first
//! `Running` of a run that ends at once ([`Recorder::wants_running`]): their
//! times come with the run's later transitions.
//!
//! A task run's routine lines ("Created task run", "Submitted task run",
//! "Finished in state") follow from its transitions, so they are not handed
//! over: at a million task runs, formatting and storing them would cost more
//! than the runs. A recorder that shows logs rebuilds them with
//! [`implied_lines`] when it needs them.

use crate::names::UpstreamRun;
use chrono::{DateTime, Utc};
use tracing::Level;
use uuid::Uuid;

use crate::names::TaskRunName;
use crate::state::State;

mod end_batch;
pub use end_batch::{EndBatch, PlainEnd};

/// The logger of engine-wide lines, such as flow run creation.
pub const ENGINE: &str = "prefecto.engine";
/// The logger of lines about one flow run.
pub const FLOW_RUNS: &str = "prefecto.flow_runs";
/// The logger of lines about one task run.
pub const TASK_RUNS: &str = "prefecto.task_runs";

/// Which flow run an event belongs to.
#[derive(Clone, Copy, Debug)]
pub struct FlowRunRef<'a> {
    /// The flow run's id.
    pub id: Uuid,
    /// The flow run's name (`beryl-moth`); empty for task runs outside any flow.
    pub name: &'a str,
    /// The flow's name.
    pub flow: &'a str,
    /// The flow call's parameters, as a JSON object (`{}` outside a flow run).
    pub parameters: &'a serde_json::Value,
}

/// A task run's times so far: when it was created (announced Pending), when
/// it first ran, and how many times its body ran. With these on every
/// task-run transition, a recorder can keep only a run's last state.
///
/// ```
/// use prefecto::recorder::{Recorder, TransitionEvent};
///
/// /// Prints how long each task run waited for its first start.
/// struct Waits;
/// impl Recorder for Waits {
///     fn on_transition(&self, event: &TransitionEvent<'_>) {
///         let (Some(run), Some(times)) = (event.task_run, event.times) else { return };
///         if let (true, Some(started)) = (event.state.is_terminal(), times.started()) {
///             let waited = started - times.created();
///             println!("{run} waited {waited} and ran {} time(s)", times.run_count());
///         }
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunTimes {
    /// Nanoseconds since the epoch, as [`State`] keeps its time: recorders
    /// see these on every transition, and converting them is left to those
    /// that show them.
    created: i64,
    started: Option<i64>,
    run_count: u32,
}

impl RunTimes {
    pub(crate) fn from_nanos(created: i64, started: Option<i64>, run_count: u32) -> Self {
        RunTimes {
            created,
            started,
            run_count,
        }
    }

    /// When it was created.
    pub fn created(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.created)
    }

    /// When its body first started, if it has.
    pub fn started(&self) -> Option<DateTime<Utc>> {
        self.started.map(DateTime::from_timestamp_nanos)
    }

    /// How many times its body has started (retries included).
    pub fn run_count(&self) -> u32 {
        self.run_count
    }

    /// [`created`](Self::created) in nanoseconds since the epoch.
    #[cfg_attr(not(feature = "history"), allow(dead_code))]
    pub(crate) fn created_nanos(&self) -> i64 {
        self.created
    }

    /// [`started`](Self::started) in nanoseconds since the epoch.
    pub(crate) fn started_nanos(&self) -> Option<i64> {
        self.started
    }
}

/// A run entered a new state.
#[derive(Clone, Copy, Debug)]
pub struct TransitionEvent<'a> {
    /// The flow run, or the flow run the task run belongs to.
    pub flow_run: FlowRunRef<'a>,
    /// The task run, or `None` for the flow run's own transitions.
    pub task_run: Option<TaskRunName>,
    /// The task run's task: its tags and parameter names.
    pub task: Option<&'static crate::task::TaskSpec>,
    /// The task run's times, this transition included; `None` for flow runs
    /// and for inputs never submitted.
    pub times: Option<RunTimes>,
    /// The new state, with its timestamp.
    pub state: &'a State,
    /// With a task run's `Pending` transition, the runs it depends on: the
    /// futures it was given as arguments, and its `wait_for` runs.
    pub upstream: &'a [UpstreamRun],
}

/// An engine log line.
#[derive(Clone, Copy, Debug)]
pub struct LogEvent<'a> {
    /// The flow run it is about.
    pub flow_run: FlowRunRef<'a>,
    /// The task run it is about, if any.
    pub task_run: Option<TaskRunName>,
    /// Its level.
    pub level: Level,
    /// The logger, as Prefect names them: `prefecto.engine`, `prefecto.flow_runs`, `prefecto.task_runs`.
    pub logger: &'static str,
    /// The formatted message.
    pub message: &'a str,
    /// When it was logged.
    pub timestamp: DateTime<Utc>,
}

/// Receives the history of every flow run of the [`Prefecto`](crate::Prefecto)
/// it was added to.
///
/// Calls come from the engine's threads as events happen, so a recorder must
/// be quick: queue the event and do slow work elsewhere.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use prefecto::prelude::*;
/// use prefecto::recorder::{Recorder, TransitionEvent};
///
/// #[derive(Default)]
/// struct Finished(Mutex<Vec<String>>);
///
/// impl Recorder for Finished {
///     fn on_transition(&self, event: &TransitionEvent<'_>) {
///         if let (Some(run), true) = (event.task_run, event.state.is_terminal()) {
///             self.0.lock().unwrap().push(format!("{run} {}", event.state));
///         }
///     }
/// }
///
/// #[task]
/// fn noop(x: u8) -> u8 {
///     x
/// }
///
/// #[flow]
/// fn recorded() {
///     noop.submit(1).wait();
/// }
///
/// let finished = Arc::new(Finished::default());
/// let prefecto = Prefecto::builder().engine_only().recorder(finished.clone()).build().unwrap();
/// prefecto.scope(|| recorded()).unwrap();
/// assert_eq!(*finished.0.lock().unwrap(), ["noop-0 Completed()"]);
/// ```
pub trait Recorder: Send + Sync + 'static {
    /// A flow run or task run entered a new state.
    fn on_transition(&self, event: &TransitionEvent<'_>);

    /// Whether to hear a task run's `Pending` transition, made as it is
    /// submitted. Its later transitions carry its [`RunTimes`], whose
    /// [`created`](RunTimes::created) is that transition's time, so a
    /// recorder that keeps only each run's latest state can answer `false`
    /// and save a call per task run. A `Pending` transition that names
    /// upstream runs is handed to every recorder. Asked once, when the
    /// recorder is installed; the default is `true`.
    ///
    /// ```
    /// use prefecto::recorder::{Recorder, TransitionEvent};
    ///
    /// /// Counts finished task runs; their submissions do not matter to it.
    /// #[derive(Default)]
    /// struct Finished(std::sync::atomic::AtomicU64);
    ///
    /// impl Recorder for Finished {
    ///     fn on_transition(&self, event: &TransitionEvent<'_>) {
    ///         if event.task_run.is_some() && event.state.is_terminal() {
    ///             self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ///         }
    ///     }
    ///
    ///     fn wants_pending(&self) -> bool {
    ///         false
    ///     }
    /// }
    /// # assert!(!Finished::default().wants_pending());
    /// ```
    fn wants_pending(&self) -> bool {
        true
    }

    /// Whether to hear a task run's first `Running` transition as soon as
    /// it is made. A recorder answering `false` hears it only once the run
    /// is seen still running, for the runs of a map's lanes: not at all for
    /// a run whose body ends at once, whose later transitions carry its
    /// [`RunTimes`], with [`started`](RunTimes::started) the `Running`
    /// time; late, and with its own time, for a body that does not (an
    /// async body that waits, at once; a sync body still going a fifth of a
    /// second later, then). Other runs are heard running at once, and a
    /// retry's `Running` goes to every recorder. Asked once, when the
    /// recorder is installed; the default is `true`.
    ///
    /// ```
    /// use std::sync::Mutex;
    /// use prefecto::prelude::*;
    /// use prefecto::recorder::{Recorder, TransitionEvent};
    ///
    /// /// Keeps each task run's latest state, and when it started.
    /// #[derive(Default)]
    /// struct Latest(Mutex<Vec<(String, String, bool)>>);
    ///
    /// impl Recorder for Latest {
    ///     fn on_transition(&self, event: &TransitionEvent<'_>) {
    ///         if let (Some(run), Some(times)) = (event.task_run, event.times) {
    ///             let started = times.started().is_some();
    ///             let latest = (run.to_string(), event.state.name().to_string(), started);
    ///             self.0.lock().unwrap().push(latest);
    ///         }
    ///     }
    ///
    ///     fn wants_running(&self) -> bool {
    ///         false
    ///     }
    /// }
    ///
    /// #[task]
    /// async fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// #[flow]
    /// async fn doubled() -> Vec<u32> {
    ///     let batch = BatchTask::new(double, 2).unwrap();
    ///     batch.map_async(vec![1]).await.unwrap().results_async().await.unwrap()
    /// }
    ///
    /// let latest = std::sync::Arc::new(Latest::default());
    /// let prefecto = Prefecto::builder().engine_only().recorder(latest.clone()).build().unwrap();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// prefecto.scope_async(doubled()).await.unwrap();
    /// # });
    /// // Its body ended at once: its Running was not heard, its start was.
    /// let heard = latest.0.lock().unwrap();
    /// let heard: Vec<_> = heard.iter().map(|(run, state, started)| (&**run, &**state, *started)).collect();
    /// assert_eq!(heard, [("double-0", "Pending", false), ("double-0", "Completed", true)]);
    /// ```
    fn wants_running(&self) -> bool {
        true
    }

    /// A batch for one of a map's lanes in `flow_run` to hand the ends of
    /// its quick task runs to, instead of one [`on_transition`](Self::on_transition)
    /// each; `None` (the default) hears them one by one.
    ///
    /// A quick run is a run of a map's lane, with one attempt, whose body
    /// ended at once: an async body in its first poll, a sync body on a
    /// pool lane before the engine's watcher saw it running. Its `Running`
    /// went only to the recorders that want it at once
    /// ([`wants_running`](Self::wants_running)), and nothing else of it
    /// happened but its `Pending` (heard as usual: see
    /// [`wants_pending`](Self::wants_pending)). The lane hands the batch over ([`EndBatch::hand_over`])
    /// before it waits for anything, and when it ends, so a batch holds
    /// ends only while its lane is busy, and every end is handed over
    /// before its flow run ends. A recorder taking batches saves a call
    /// (and whatever each call locks) per quick run.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use prefecto::prelude::*;
    /// use prefecto::recorder::{EndBatch, FlowRunRef, Recorder, RunTimes, TransitionEvent};
    /// use prefecto::{State, TaskRunName};
    ///
    /// /// Counts finished task runs, quick ones a batch at a time.
    /// #[derive(Default)]
    /// struct Finished(Arc<Mutex<usize>>);
    ///
    /// struct Count(usize, Arc<Mutex<usize>>);
    ///
    /// impl EndBatch for Count {
    ///     fn ended(&mut self, _run: TaskRunName, _state: &State, _times: RunTimes) {
    ///         self.0 += 1;
    ///     }
    ///     fn hand_over(&mut self) {
    ///         *self.1.lock().unwrap() += std::mem::take(&mut self.0);
    ///     }
    /// }
    ///
    /// impl Recorder for Finished {
    ///     fn on_transition(&self, event: &TransitionEvent<'_>) {
    ///         if event.task_run.is_some() && event.state.is_terminal() {
    ///             *self.0.lock().unwrap() += 1;
    ///         }
    ///     }
    ///     fn end_batch(&self, _flow_run: FlowRunRef<'_>) -> Option<Box<dyn EndBatch>> {
    ///         Some(Box::new(Count(0, self.0.clone())))
    ///     }
    /// }
    ///
    /// #[task]
    /// async fn double(x: u32) -> u32 {
    ///     x * 2
    /// }
    ///
    /// #[flow]
    /// async fn doubled() -> Vec<u32> {
    ///     let batch = BatchTask::new(double, 4).unwrap();
    ///     batch.map_async(0..100).await.unwrap().results_async().await.unwrap()
    /// }
    ///
    /// let finished = Arc::new(Finished::default());
    /// let prefecto = Prefecto::builder().engine_only().recorder(finished.clone()).build().unwrap();
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// prefecto.scope_async(doubled()).await.unwrap();
    /// # });
    /// assert_eq!(*finished.0.lock().unwrap(), 100);
    /// ```
    fn end_batch(&self, _flow_run: FlowRunRef<'_>) -> Option<Box<dyn EndBatch>> {
        None
    }

    /// The engine logged a line about a flow run or task run, other than the
    /// lines a task run's transitions imply (see [`implied_lines`]).
    fn on_log(&self, _event: &LogEvent<'_>) {}

    /// The flow run has ended and no more events will come for it: flush.
    fn on_flow_run_end(&self, _flow_run: FlowRunRef<'_>) {}
}

/// A log line that a task run's transition implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImpliedLine {
    /// Its level.
    pub level: Level,
    /// Its logger: `prefecto.flow_runs` for lines about the flow run, else `prefecto.task_runs`.
    pub logger: &'static str,
    /// Whether the line is about the task run (else about its flow run).
    pub about_task_run: bool,
    /// The message.
    pub message: String,
    /// The level at which Prefect's own Python client sends its version of
    /// this line to the server: `None` for a line Prefect 3 does not have.
    pub prefect_level: Option<Level>,
}

/// The lines the engine logs, but does not hand to recorders, when task run
/// `run` of `task` enters `state`. `submitted` says whether the run was
/// submitted: inputs a kill switch stopped before submission go straight to
/// `Cancelled` and get no lines.
///
/// ```
/// use prefecto::recorder::implied_lines;
/// use prefecto::State;
///
/// let lines = implied_lines("add-0", "add", &State::pending(), true);
/// assert_eq!(lines[0].message, "Created task run 'add-0' for task 'add'");
/// assert_eq!(lines[1].message, "Submitted task run 'add-0' for execution.");
///
/// let lines = implied_lines("add-0", "add", &State::failed("boom"), true);
/// assert_eq!(lines[0].message, "Finished in state Failed('boom')");
/// assert_eq!(lines[0].level, tracing::Level::ERROR);
/// assert!(implied_lines("add-0", "add", &State::running(), true).is_empty());
/// ```
pub fn implied_lines(run: &str, task: &str, state: &State, submitted: bool) -> Vec<ImpliedLine> {
    let flow_line = |message: String, prefect_level| ImpliedLine {
        level: Level::INFO,
        logger: "prefecto.flow_runs",
        about_task_run: false,
        message,
        prefect_level,
    };
    if state.is_pending() {
        return vec![
            // Prefect 3 logs its "Created task run" at DEBUG, and no
            // "Submitted" line at all.
            flow_line(CreatedLine(run, task).to_string(), Some(Level::DEBUG)),
            flow_line(SubmittedLine(run).to_string(), None),
        ];
    }
    if state.is_terminal() && submitted {
        let level = finished_level(state);
        return vec![ImpliedLine {
            level,
            logger: "prefecto.task_runs",
            about_task_run: true,
            message: FinishedLine(state).to_string(),
            prefect_level: Some(level),
        }];
    }
    Vec::new()
}

// The texts of the implied lines, shared by the console (which formats them
// only when its level shows them) and by whoever rebuilds them.

/// `Created task run 'add-0' for task 'add'`.
pub(crate) struct CreatedLine<'a, R>(pub R, pub &'a str);

impl<R: std::fmt::Display> std::fmt::Display for CreatedLine<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Created task run '{}' for task '{}'", self.0, self.1)
    }
}

/// `Submitted task run 'add-0' for execution.`
pub(crate) struct SubmittedLine<R>(pub R);

impl<R: std::fmt::Display> std::fmt::Display for SubmittedLine<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Submitted task run '{}' for execution.", self.0)
    }
}

/// `Finished in state Completed()`.
pub(crate) struct FinishedLine<'a>(pub &'a State);

impl std::fmt::Display for FinishedLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Finished in state {}", self.0)
    }
}

/// Prefect's name for a level, as logs show and store it.
pub(crate) fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// Failures and crashes finish at ERROR, as in Prefect.
fn finished_level(state: &State) -> Level {
    if state.is_completed() || state.is_cancelled() {
        Level::INFO
    } else {
        Level::ERROR
    }
}
