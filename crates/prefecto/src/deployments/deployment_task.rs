//! A deployment as a task: each run creates one flow run of the deployment
//! on the server (a child, under a task run of the calling flow run, as
//! Python's `run_deployment` makes it), waits for it to end, and gives its
//! result. Everything a task gets, it gets: `submit`, `map`, `BatchTask`
//! with its batches, window and kill switches, the run history, resume by
//! cache key. A run that stops waiting (a kill switch, a cancelled flow)
//! cancels its child on the server.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::cancel::CancelOnDrop;
use super::child_results;
use super::error::DeploymentError;
use super::watch::ChildWatcher;
use super::wire::{
    ChildFlowRunCreate, ChildRead, DeploymentRead, ParentTaskRunCreate, ScheduledState,
};
use crate::concurrency::BatchTask;
use crate::prefect_api::{ApiConfig, ApiError, Client, Sent};
use crate::task::{BodyError, Invocation, Task, TaskSpec};
use crate::{PrefectFuture, TaskRunName};

/// How long a completed child's result file may lag its state: the child
/// writes it as its flow call returns, while its end is already on its way.
const RESULT_LAG: Duration = Duration::from_secs(10);

/// Runs of a deployment, as a task: `P` is the parameters (serialized to a
/// JSON object), `R` the child flow's result.
///
/// ```no_run
/// use prefecto::prelude::*;
/// use prefecto::deployments::DeploymentTask;
///
/// #[flow]
/// fn fan_out() -> Result<Vec<u64>, prefecto::Error> {
///     // With PREFECT_API_URL set, and `sum-to/fan-out` deployed on a pool with workers.
///     let sum_to = DeploymentTask::<serde_json::Value, u64>::typed("sum-to/fan-out")?;
///     let batch = BatchTask::new(sum_to, 4)?.sliding_window();
///     let inputs = (1..=40).map(|n| serde_json::json!({ "n": n })).collect::<Vec<_>>();
///     Ok(batch.map(inputs)?.results()?)
/// }
/// ```
pub struct DeploymentTask<P = Value, R = Value> {
    inner: Arc<Inner>,
    cache_key: Option<fn(&P) -> String>,
    types: PhantomData<fn(P) -> R>,
}

impl<P, R> Clone for DeploymentTask<P, R> {
    fn clone(&self) -> Self {
        DeploymentTask {
            inner: self.inner.clone(),
            cache_key: self.cache_key,
            types: PhantomData,
        }
    }
}

impl<P, R> std::fmt::Debug for DeploymentTask<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentTask")
            .field("deployment", &self.inner.full_name)
            .field("server", &self.inner.config.url)
            .finish_non_exhaustive()
    }
}

struct Inner {
    full_name: String,
    spec: &'static TaskSpec,
    config: ApiConfig,
    client: Client,
    deployment: tokio::sync::OnceCell<DeploymentRead>,
    watcher: Arc<ChildWatcher>,
    results: PathBuf,
    task_key: String,
    requests: std::sync::atomic::AtomicU64,
}

impl DeploymentTask {
    /// Runs of deployment `flow/deployment` on the server `PREFECT_API_URL`
    /// names, with JSON parameters and results.
    pub fn new(name: &str) -> Result<Self, DeploymentError> {
        Self::typed(name)
    }
}

/// Splits `flow/deployment`.
fn split_name(name: &str) -> Result<(&str, &str), DeploymentError> {
    match name.split_once('/') {
        Some((flow, deployment))
            if !flow.is_empty() && !deployment.is_empty() && !deployment.contains('/') =>
        {
            Ok((flow, deployment))
        }
        _ => Err(DeploymentError::BadName {
            name: name.to_string(),
        }),
    }
}

impl<P, R> DeploymentTask<P, R>
where
    P: Serialize + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// Runs of deployment `flow/deployment`, with parameters of type `P`
    /// and a result of type `R`, on the server of the environment.
    pub fn typed(name: &str) -> Result<Self, DeploymentError> {
        split_name(name)?;
        let config = ApiConfig::from_env()?.ok_or(DeploymentError::NoServer)?;
        Self::on(name, config)
    }

    /// The same, on the server `config` names.
    pub fn on(name: &str, config: ApiConfig) -> Result<Self, DeploymentError> {
        split_name(name)?;
        let client = Client::new(config.clone())?;
        let full_name: &'static str = Box::leak(name.to_string().into_boxed_str());
        let mut spec = TaskSpec::new(full_name, &["parameters"]);
        spec.is_async = true;
        Ok(DeploymentTask {
            inner: Arc::new(Inner {
                full_name: name.to_string(),
                spec: Box::leak(Box::new(spec)),
                watcher: ChildWatcher::new(client.clone()),
                config,
                client,
                deployment: tokio::sync::OnceCell::new(),
                results: child_results::results_dir(),
                task_key: format!("prefecto.run_deployment.{}", slug(name)),
                requests: Default::default(),
            }),
            cache_key: None,
            types: PhantomData,
        })
    }

    /// Inputs with the same key as a child that completed earlier take its
    /// result instead of running again (the run history keeps it).
    pub fn cache_key(mut self, key: fn(&P) -> String) -> Self {
        self.cache_key = Some(key);
        self
    }

    /// Where children's results are read (see [`results_dir`](super::results_dir)).
    pub fn results_dir(mut self, dir: PathBuf) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.results = dir;
        }
        self
    }

    /// One run of the deployment, as a task run of the calling flow run.
    pub fn submit(&self, parameters: P) -> PrefectFuture<R> {
        crate::runner::submit(self, (parameters,))
    }

    /// HTTP requests made to the server so far by this task's runs.
    pub fn requests(&self) -> u64 {
        self.inner
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            + self.inner.watcher.requests()
    }
}

impl DeploymentTask<Value, Value> {
    /// A `BatchTask` whose inputs are runs of deployment `flow/deployment`:
    /// `size` children at a time, in strict batches or (with
    /// `.sliding_window()`) a window.
    pub fn batch(name: &str, size: usize) -> Result<BatchTask<Self>, DeploymentError> {
        Ok(BatchTask::new(Self::new(name)?, size)?)
    }
}

impl BatchTask<DeploymentTask> {
    /// Maps inputs (JSON parameter objects) over runs of deployment
    /// `flow/deployment`, `size` at a time: see [`DeploymentTask`].
    pub fn over_deployment(name: &str, size: usize) -> Result<Self, DeploymentError> {
        DeploymentTask::batch(name, size)
    }
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

impl<P, R> Task for DeploymentTask<P, R>
where
    P: Serialize + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Args = (P,);
    type Output = R;

    fn spec(&self) -> &'static TaskSpec {
        self.inner.spec
    }

    fn invoke(&self, (parameters,): Self::Args) -> Invocation<R> {
        self.start(None, parameters)
    }

    fn invoke_as(&self, run: TaskRunName, (parameters,): Self::Args) -> Invocation<R> {
        self.start(Some(run), parameters)
    }

    fn cache_key(&self, (parameters,): &Self::Args) -> Option<String> {
        self.cache_key.map(|key| key(parameters))
    }

    fn persist(&self, value: &R) -> Option<String> {
        self.cache_key?;
        serde_json::to_string(value).ok()
    }

    fn restore(&self, stored: &str) -> Option<R> {
        serde_json::from_str(stored).ok()
    }
}

impl<P, R> DeploymentTask<P, R>
where
    P: Serialize + Send + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn start(&self, run: Option<TaskRunName>, parameters: P) -> Invocation<R> {
        let inner = self.inner.clone();
        let parameters = serde_json::to_value(&parameters);
        Invocation::Async(Box::pin(async move {
            let parameters = parameters.map_err(BodyError::from_error)?;
            let value = inner
                .run_child(run, parameters)
                .await
                .map_err(BodyError::from_error)?;
            serde_json::from_value(value.clone()).map_err(|e| {
                BodyError::from_error(format!(
                    "the child's result {value} is not a {}: {e}",
                    std::any::type_name::<R>()
                ))
            })
        }))
    }
}

impl Inner {
    fn count(&self, sent: Sent) {
        self.requests
            .fetch_add(sent.requests, std::sync::atomic::Ordering::Relaxed);
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
            state: ScheduledState {
                state_type: "PENDING",
            },
        };
        let mut sent = Sent::default();
        let created: Result<Value, _> = self
            .client
            .send_json(Method::POST, "/task_runs/", &create, &mut sent)
            .await;
        self.count(sent);
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

    async fn run_child(
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
            state: ScheduledState {
                state_type: "SCHEDULED",
            },
            parent_task_run_id: parent,
            // The same child for every try of this one request.
            idempotency_key: Some(Uuid::new_v4().to_string()),
        };
        let mut sent = Sent::default();
        let created: Result<ChildRead, _> = self
            .client
            .send_json(
                Method::POST,
                &format!("/deployments/{}/create_flow_run", deployment.id),
                &create,
                &mut sent,
            )
            .await;
        self.count(sent);
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
            let state = ended.state.unwrap_or(super::wire::ChildState {
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

/// Runs deployment `flow/deployment` once, as a task run of the calling flow
/// run, and gives a future of its child flow run's result.
///
/// ```no_run
/// use prefecto::prelude::*;
///
/// #[flow]
/// async fn nightly() -> Result<serde_json::Value, prefecto::Error> {
///     let child = prefecto::deployments::run_deployment("sum-to/fan-out", serde_json::json!({"n": 10}))?;
///     Ok(child.await?)
/// }
/// ```
pub fn run_deployment(
    name: &str,
    parameters: impl Serialize,
) -> Result<PrefectFuture<Value>, DeploymentError> {
    let parameters =
        serde_json::to_value(parameters).map_err(|e| DeploymentError::NotAnObject {
            found: e.to_string(),
        })?;
    Ok(DeploymentTask::new(name)?.submit(parameters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_flow_slash_deployment() {
        assert_eq!(split_name("a/b").unwrap(), ("a", "b"));
        for bad in ["a", "/b", "a/", "a/b/c", ""] {
            assert!(
                matches!(split_name(bad), Err(DeploymentError::BadName { .. })),
                "{bad}"
            );
        }
        assert_eq!(slug("Sum To/fan out"), "sum-to-fan-out");
    }
}
