//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use prefecto::recorder::{LogEvent, Recorder, TransitionEvent};
use prefecto::{Prefecto, PrefectoBuilder, State, TaskRunName};
use tracing::level_filters::LevelFilter;
use uuid::Uuid;

/// Installs the test binary's set-up, once: the environment's defaults with
/// console logs off (tests check states, not the console) and the
/// [`Recording`].
pub fn quiet() {
    install_with(|builder| builder);
}

/// As [`quiet`], with changes to the builder; the first call of the binary wins.
pub fn install_with(configure: impl FnOnce(PrefectoBuilder) -> PrefectoBuilder) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let builder = Prefecto::builder()
            .console_logs(Some(LevelFilter::OFF))
            .recorder(Recording::installed().clone());
        configure(builder)
            .build()
            .expect("the test set-up builds")
            .install()
            .expect("nothing ran a flow before the test set-up");
    });
}

/// A set-up with a run history of its own, in a fresh folder: for the tests
/// that read the history back. Their flows run under `prefecto.scope(..)`.
#[cfg(feature = "history")]
pub struct HistoryHome {
    /// The history's folder (its database is `home/prefecto.db`).
    pub home: std::path::PathBuf,
    /// Records into it, and nothing else.
    pub prefecto: Prefecto,
}

#[cfg(feature = "history")]
impl HistoryHome {
    /// A fresh one, in a folder named after `name` and this process.
    pub fn new(name: &str) -> Self {
        quiet();
        let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("prefecto-{name}-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let prefecto = Prefecto::builder()
            .engine_only()
            .history_in(&home)
            .build()
            .expect("the history opens");
        HistoryHome { home, prefecto }
    }
}

/// The transitions of one flow run: `None` for the flow run's own.
type Transitions = Vec<(Option<TaskRunName>, State)>;

/// Everything the engine hands to recorders, by flow run.
#[derive(Default)]
pub struct Recording {
    transitions: Mutex<HashMap<Uuid, Transitions>>,
    logs: Mutex<HashMap<Uuid, Vec<String>>>,
}

impl Recorder for Recording {
    fn on_transition(&self, event: &TransitionEvent<'_>) {
        self.transitions
            .lock()
            .unwrap()
            .entry(event.flow_run.id)
            .or_default()
            .push((event.task_run, event.state.clone()));
    }

    fn on_log(&self, event: &LogEvent<'_>) {
        self.logs
            .lock()
            .unwrap()
            .entry(event.flow_run.id)
            .or_default()
            .push(event.message.to_string());
    }
}

impl Recording {
    /// The recording of this test binary's set-up (see [`quiet`]).
    pub fn installed() -> &'static Arc<Recording> {
        static RECORDING: OnceLock<Arc<Recording>> = OnceLock::new();
        RECORDING.get_or_init(Default::default)
    }

    /// The transitions of one run of a flow run, in order: `None` for the flow run's own.
    fn history(&self, flow_run: Uuid, task_run: Option<&str>) -> Vec<State> {
        self.transitions
            .lock()
            .unwrap()
            .get(&flow_run)
            .into_iter()
            .flatten()
            .filter(|(run, _)| run.map(|r| r.to_string()).as_deref() == task_run)
            .map(|(_, state)| state.clone())
            .collect()
    }

    /// Every transition of one task run, in order.
    pub fn task_run_history(&self, flow_run: Uuid, task_run: &str) -> Vec<State> {
        self.history(flow_run, Some(task_run))
    }

    /// The flow run's own transitions.
    pub fn flow_run_history(&self, flow_run: Uuid) -> Vec<State> {
        self.history(flow_run, None)
    }

    /// The last recorded state of every task run of a flow run, by name.
    pub fn final_task_states(&self, flow_run: Uuid) -> BTreeMap<String, State> {
        let mut last = BTreeMap::new();
        for (run, state) in self
            .transitions
            .lock()
            .unwrap()
            .get(&flow_run)
            .into_iter()
            .flatten()
        {
            if let Some(run) = run {
                last.insert(run.to_string(), state.clone());
            }
        }
        last
    }

    /// The engine log lines of a flow run.
    pub fn logs(&self, flow_run: Uuid) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .get(&flow_run)
            .cloned()
            .unwrap_or_default()
    }
}

/// The id of the flow run the caller is in.
pub fn flow_run_id() -> Uuid {
    prefecto::flow::current_flow_run()
        .expect("called inside a flow")
        .id
}

/// Runs `f` on a thread of its own and returns what it returns, or fails the
/// test if it takes longer than `limit`: for tests of programs that could
/// deadlock, so that a deadlock fails instead of hanging the test run.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = sender.send(outcome);
    });
    match receiver.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what} did not finish within {limit:?}: it hangs"),
    }
}
