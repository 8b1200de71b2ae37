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
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::child_results;
use super::child_run::Inner;
use super::error::DeploymentError;
use super::watch::ChildWatcher;
use crate::concurrency::BatchTask;
use crate::prefect_api::{ApiConfig, Client};
use crate::task::{BodyError, Invocation, Task, TaskSpec};
use crate::{PrefectFuture, TaskRunName};

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

    /// A child that has not ended `limit` after its creation is cancelled
    /// on the server and its run ends `TimedOut` (a failure a kill switch
    /// counts): the bound on a wait for a child whose worker or machine
    /// died without a word (Prefect marks such a run `Crashed` only with a
    /// zombie-detection automation). Without it, a wait lasts as long as
    /// the child does.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let config = prefecto::prefect_api::ApiConfig::new("http://127.0.0.1:4200/api").unwrap();
    /// let task = prefecto::deployments::DeploymentTask::<serde_json::Value, u64>::on("sum-to/fan-out", config)
    ///     .unwrap()
    ///     .timeout(Duration::from_secs(3600));
    /// use prefecto::Task;
    /// assert_eq!(task.spec().timeout, Some(Duration::from_secs(3600)));
    /// ```
    pub fn timeout(mut self, limit: Duration) -> Self {
        let mut spec = self.inner.spec.clone();
        spec.timeout = Some(limit);
        self.own().spec = Box::leak(Box::new(spec));
        self
    }

    /// Where children's results are read (see [`results_dir`](super::results_dir)).
    pub fn results_dir(mut self, dir: PathBuf) -> Self {
        self.own().results = dir;
        self
    }

    /// This task's settings, its own: a clone shares them until one changes.
    fn own(&mut self) -> &mut Inner {
        if Arc::get_mut(&mut self.inner).is_none() {
            let inner = &self.inner;
            self.inner = Arc::new(Inner {
                full_name: inner.full_name.clone(),
                spec: inner.spec,
                config: inner.config.clone(),
                client: inner.client.clone(),
                deployment: inner.deployment.clone(),
                watcher: inner.watcher.clone(),
                results: inner.results.clone(),
                task_key: inner.task_key.clone(),
                requests: Default::default(),
            });
        }
        Arc::get_mut(&mut self.inner).expect("not shared now")
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

impl BatchTask<DeploymentTask> {
    /// Maps inputs (JSON parameter objects) over runs of deployment
    /// `flow/deployment`, `size` at a time: see [`DeploymentTask`].
    pub fn over_deployment(name: &str, size: usize) -> Result<Self, DeploymentError> {
        Ok(BatchTask::new(DeploymentTask::new(name)?, size)?)
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
