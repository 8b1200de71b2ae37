//! One child flow run, from its creation to its result: what each run of
//! a [`DeploymentTask`](super::DeploymentTask) does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use super::cancel::CancelOnDrop;
use super::child_results;
use super::error::DeploymentError;
use super::watch::ChildWatcher;
use super::wire::{
    ChildFlowRunCreate, ChildRead, ChildState, DeploymentRead, ParentTaskRunCreate, StateOfType,
};
use crate::TaskRunName;
use crate::prefect_api::{ApiConfig, ApiError, Client, Sent};
use crate::task::TaskSpec;

/// How long a child's creation may wait for a busy server.
const BUSY_PATIENCE: Duration = Duration::from_secs(300);

/// How long a completed child's result file may lag its state: the child
/// writes it as its flow call returns, while its end is already on its way.
const RESULT_LAG: Duration = Duration::from_secs(10);

/// A deployment task's settings and its server, shared by its runs.
pub(super) struct Inner {
    pub(super) full_name: String,
    pub(super) spec: &'static TaskSpec,
    pub(super) config: ApiConfig,
    pub(super) client: Client,
    pub(super) deployment: tokio::sync::OnceCell<DeploymentRead>,
    pub(super) watcher: Arc<ChildWatcher>,
    pub(super) results: PathBuf,
    pub(super) task_key: String,
    pub(super) requests: std::sync::atomic::AtomicU64,
}

impl Inner {
    fn count(&self, sent: Sent) {
        self.requests
            .fetch_add(sent.requests, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends a create that is safe to send again (an id or an idempotency
    /// key makes a second one the first), through a busy server's 503s: a
    /// local server on SQLite answers them for minutes when many children
    /// report at once, past the client's own retries.
    async fn patiently<T, F, Fut>(&self, send: F) -> Result<T, ApiError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = (Result<T, ApiError>, Sent)>,
    {
        let deadline = Instant::now() + BUSY_PATIENCE;
        let mut pause = Duration::from_secs(1);
        loop {
            let (result, sent) = send().await;
            self.count(sent);
            match result {
                Err(e) if e.is_retryable() && Instant::now() + pause < deadline => {
                    tracing::debug!(target: "prefecto.deployments", "The server is busy ({e}); trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(15));
                }
                other => return other,
            }
        }
    }

    async fn deployment(&self) -> Result<&DeploymentRead, DeploymentError> {
        self.deployment
            .get_or_try_init(|| async {
                let mut sent = Sent::default();
                let read = self
                    .client
                    .send_as::<DeploymentRead>(
                        Method::GET,
                        &format!("/deployments/name/{}", self.full_name),
                        None,
                        &mut sent,
                    )
                    .await;
                self.count(sent);
                read.map_err(|e| match e {
                    ApiError::Status { status: 404, .. } => DeploymentError::NotFound {
                        name: self.full_name.clone(),
                        url: self.config.url.clone(),
                    },
                    other => other.into(),
                })
            })
            .await
    }

    /// Creates the task run a child hangs under, in the calling flow run on
    /// the server, if the caller's flow run is there.
    async fn parent_task_run(&self, run: TaskRunName) -> Option<Uuid> {
        let server = crate::flow::current_flow_run()?.server?;
        let id = run.id_in(server.id);
        let name = run.to_string();
        let dynamic_key = run.index.to_string();
        let create = ParentTaskRunCreate {
            id,
            name: &name,
            flow_run_id: server.id,
            task_key: &self.task_key,
            dynamic_key: &dynamic_key,
            state: StateOfType {
                state_type: "PENDING",
            },
        };
        let created: Result<Value, _> = self
            .patiently(|| async {
                let mut sent = Sent::default();
                let created = self
                    .client
                    .send_json(Method::POST, "/task_runs/", &create, &mut sent)
                    .await;
                (created, sent)
            })
            .await;
        match created {
            Ok(_) => Some(id),
            Err(e) => {
                // The child still runs; the UI shows it without its parent.
                tracing::warn!(
                    target: "prefecto.deployments",
                    "Task run '{name}' could not be created on the server ({e}): its child flow run is shown on its own"
                );
                None
            }
        }
    }

    pub(super) async fn run_child(
        &self,
        run: Option<TaskRunName>,
        parameters: Value,
    ) -> Result<Value, DeploymentError> {
        let parameters = match parameters {
            Value::Null => Value::Object(Default::default()),
            Value::Object(map) => Value::Object(map),
            other => {
                return Err(DeploymentError::NotAnObject {
                    found: crate::text::for_display(&other.to_string(), 80).into_owned(),
                });
            }
        };
        let deployment = self.deployment().await?;
        let parent = match run {
            Some(run) => self.parent_task_run(run).await,
            None => None,
        };
        let create = ChildFlowRunCreate {
            parameters: &parameters,
            state: StateOfType {
                state_type: "SCHEDULED",
            },
            parent_task_run_id: parent,
            // The same child for every try of this one request.
            idempotency_key: Some(Uuid::new_v4().to_string()),
        };
        let path = format!("/deployments/{}/create_flow_run", deployment.id);
        let created: Result<ChildRead, _> = self
            .patiently(|| async {
                let mut sent = Sent::default();
                let created = self
                    .client
                    .send_json(Method::POST, &path, &create, &mut sent)
                    .await;
                (created, sent)
            })
            .await;
        let child =
            created.map_err(|e| DeploymentError::refused_or_api("a run", &self.full_name, e))?;
        let mut cancel = CancelOnDrop {
            config: self.config.clone(),
            child: child.id,
            armed: true,
        };
        tracing::debug!(
            target: "prefecto.deployments",
            "Created child flow run '{}' of deployment '{}'",
            child.name,
            self.full_name
        );
        let ended = self.watcher.wait_final(child.id).await;
        cancel.armed = false;
        if ended.state_type.as_deref() != Some("COMPLETED") {
            let state = ended.state.unwrap_or(ChildState {
                name: None,
                message: None,
            });
            return Err(DeploymentError::ChildNotCompleted {
                name: self.full_name.clone(),
                child: ended.name,
                state: state
                    .name
                    .or(ended.state_type)
                    .unwrap_or_else(|| "in an unknown state".into()),
                message: state.message.filter(|m| !m.is_empty()),
            });
        }
        self.result_of(&ended).await
    }

    async fn result_of(&self, child: &ChildRead) -> Result<Value, DeploymentError> {
        let deadline = Instant::now() + RESULT_LAG;
        loop {
            match child_results::read(&self.results, child.id) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(None) => {
                    return Err(DeploymentError::NoResult {
                        child: child.name.clone(),
                        reason: format!(
                            "is not in {} (a served prefecto binary leaves it there; the child \
                             and this process must share that folder: PREFECTO_RESULTS_DIR)",
                            self.results.display()
                        ),
                    });
                }
                Err(e) => {
                    return Err(DeploymentError::NoResult {
                        child: child.name.clone(),
                        reason: format!("could not be read from {}: {e}", self.results.display()),
                    });
                }
            }
        }
    }
}
