//! `prefecto deploy` and `flow.deploy()`'s counterpart: registers a
//! deployment of a flow in a binary on a work pool, the pool first if the
//! server has none of that name. Sending it again updates it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::DeploymentError;
use super::wire::{
    DeploymentCreate, DeploymentRead, DeploymentsPage, JobVariables, ScheduleCreate,
    SchedulePayload, WorkPoolCreate, WorkPoolRead,
};
use crate::ServedFlow;
use crate::prefect_api::schemas::{FlowCreate, FlowRead, WithId};
use crate::prefect_api::{ApiError, Client, Sent};

/// When a deployment's runs are scheduled.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Schedule {
    /// A cron expression, in UTC.
    Cron(String),
    /// Every so often.
    Interval(Duration),
}

/// A deployment to register: which flow, which command a worker runs, on
/// which pool, and how the UI offers its runs.
///
/// ```
/// use prefecto::deployments::Deployment;
///
/// let deployment = Deployment::new("add-numbers", "nightly", "/opt/bin/my-flows")
///     .work_pool("rust-pool")
///     .tag("rust")
///     .concurrency_limit(4);
/// assert_eq!(deployment.full_name(), "add-numbers/nightly");
/// ```
#[derive(Clone, Debug)]
pub struct Deployment {
    flow: String,
    name: String,
    command: String,
    work_pool: String,
    env: Map<String, Value>,
    working_dir: Option<String>,
    parameter_schema: Value,
    parameters: Map<String, Value>,
    description: Option<String>,
    tags: Vec<String>,
    schedule: Option<Schedule>,
    concurrency_limit: Option<u32>,
    create_pool: bool,
}

impl Deployment {
    /// Deployment `name` of flow `flow`, whose runs a worker starts with
    /// `command` (split as a shell would, not run by one), on the pool
    /// `default-rust-pool` unless [`work_pool`](Self::work_pool) says otherwise.
    pub fn new(flow: &str, name: &str, command: &str) -> Self {
        Deployment {
            flow: flow.to_string(),
            name: name.to_string(),
            command: command.to_string(),
            work_pool: "default-rust-pool".to_string(),
            env: Map::new(),
            working_dir: None,
            parameter_schema: crate::parameter_schema::flow_parameter_schema(&[]),
            parameters: Map::new(),
            description: None,
            tags: Vec::new(),
            schedule: None,
            concurrency_limit: None,
            create_pool: true,
        }
    }

    /// A deployment of a served flow: its name, parameter schema and description.
    pub fn of(flow: &ServedFlow, name: &str, command: &str) -> Self {
        let mut deployment = Deployment::new(flow.name, name, command);
        deployment.parameter_schema = flow.parameter_schema();
        if !flow.description.is_empty() {
            deployment.description = Some(flow.description.to_string());
        }
        deployment
    }

    /// `flow/deployment`, as `run_deployment` names it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.flow, self.name)
    }

    /// The work pool whose workers run it.
    pub fn work_pool(mut self, pool: &str) -> Self {
        self.work_pool = pool.to_string();
        self
    }

    /// An environment variable for its runs' processes.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), Value::from(value));
        self
    }

    /// The folder its runs' processes start in (else a fresh temporary one).
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_string());
        self
    }

    /// The parameters' JSON schema (a [`ServedFlow`] gives it).
    pub fn parameter_schema(mut self, schema: Value) -> Self {
        self.parameter_schema = schema;
        self
    }

    /// A default parameter value for its runs.
    pub fn parameter(mut self, name: &str, value: Value) -> Self {
        self.parameters.insert(name.to_string(), value);
        self
    }

    /// Its description in the UI.
    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_string());
        self
    }

    /// A tag.
    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.to_string());
        self
    }

    /// When its runs are scheduled.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// At most `limit` of its runs at once (the server holds back the rest).
    pub fn concurrency_limit(mut self, limit: u32) -> Self {
        self.concurrency_limit = Some(limit);
        self
    }

    /// Fail, rather than create a `process` pool, when the pool is missing.
    pub fn require_existing_pool(mut self) -> Self {
        self.create_pool = false;
        self
    }
}

/// What [`deploy`] registered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deployed {
    /// The deployment's id.
    pub id: Uuid,
    /// Its flow's id.
    pub flow_id: Uuid,
    /// Whether the work pool was created for it.
    pub created_pool: bool,
}

fn schedule_payload(schedule: &Schedule) -> SchedulePayload<'_> {
    match schedule {
        Schedule::Cron(cron) => SchedulePayload::Cron {
            cron,
            timezone: "UTC",
        },
        Schedule::Interval(every) => SchedulePayload::Interval {
            interval: every.as_secs_f64(),
        },
    }
}

/// Registers `deployment` on the server `client` talks to.
pub async fn deploy(client: &Client, deployment: &Deployment) -> Result<Deployed, DeploymentError> {
    let mut sent = Sent::default();
    let url = client.config().url.clone();
    let pool_path = format!("/work_pools/{}", deployment.work_pool);
    let created_pool = match client
        .send_as::<WorkPoolRead>(Method::GET, &pool_path, None, &mut sent)
        .await
    {
        Ok(pool) => {
            if pool.pool_type != "process" {
                tracing::warn!(
                    target: "prefecto.deployments",
                    "Work pool '{}' is a '{}' pool: its job template must take the `command` job variable",
                    deployment.work_pool,
                    pool.pool_type
                );
            }
            false
        }
        Err(ApiError::Status { status: 404, .. }) if deployment.create_pool => {
            let template: Value = serde_json::from_str(include_str!("process_pool_template.json"))
                .expect("the process pool's template is JSON");
            let create = WorkPoolCreate {
                name: &deployment.work_pool,
                pool_type: "process",
                base_job_template: template,
            };
            let _: WithId = client
                .send_json(Method::POST, "/work_pools/", &create, &mut sent)
                .await?;
            true
        }
        Err(ApiError::Status { status: 404, .. }) => {
            return Err(DeploymentError::NoWorkPool {
                pool: deployment.work_pool.clone(),
                url,
            });
        }
        Err(other) => return Err(other.into()),
    };
    let flow: WithId = client
        .send_json(
            Method::POST,
            "/flows/",
            &FlowCreate {
                name: &deployment.flow,
            },
            &mut sent,
        )
        .await?;
    let create = DeploymentCreate {
        name: &deployment.name,
        flow_id: flow.id,
        work_pool_name: &deployment.work_pool,
        job_variables: JobVariables {
            command: &deployment.command,
            env: deployment.env.clone(),
            working_dir: deployment.working_dir.as_deref(),
        },
        parameter_openapi_schema: &deployment.parameter_schema,
        enforce_parameter_schema: true,
        parameters: &deployment.parameters,
        description: deployment.description.as_deref(),
        tags: &deployment.tags,
        schedules: deployment
            .schedule
            .iter()
            .map(|s| ScheduleCreate {
                schedule: schedule_payload(s),
                active: true,
            })
            .collect(),
        concurrency_limit: deployment.concurrency_limit,
        paused: false,
        entrypoint: None,
    };
    let created: WithId = client
        .send_json(Method::POST, "/deployments/", &create, &mut sent)
        .await
        .map_err(|e| {
            DeploymentError::refused_or_api("the registration", &deployment.full_name(), e)
        })?;
    Ok(Deployed {
        id: created.id,
        flow_id: flow.id,
        created_pool,
    })
}

/// A deployment as [`list_deployments`] gives it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DeploymentInfo {
    /// `flow/deployment`.
    pub full_name: String,
    /// Its id.
    pub id: Uuid,
    /// Its work pool.
    pub work_pool: Option<String>,
    /// The command its runs start with.
    pub command: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

/// Every deployment on the server, by full name.
pub async fn list_deployments(client: &Client) -> Result<Vec<DeploymentInfo>, DeploymentError> {
    let mut sent = Sent::default();
    let mut out = Vec::new();
    let mut flow_names: std::collections::HashMap<Uuid, String> = Default::default();
    let mut offset = 0;
    loop {
        let page: Vec<DeploymentRead> = client
            .send_json(
                Method::POST,
                "/deployments/filter",
                &DeploymentsPage {
                    limit: 200,
                    offset,
                    sort: "NAME_ASC",
                },
                &mut sent,
            )
            .await?;
        let count = page.len();
        for deployment in page {
            if let std::collections::hash_map::Entry::Vacant(entry) =
                flow_names.entry(deployment.flow_id)
            {
                let flow: FlowRead = client
                    .send_as(
                        Method::GET,
                        &format!("/flows/{}", deployment.flow_id),
                        None,
                        &mut sent,
                    )
                    .await?;
                entry.insert(flow.name);
            }
            out.push(DeploymentInfo {
                full_name: format!("{}/{}", flow_names[&deployment.flow_id], deployment.name),
                id: deployment.id,
                work_pool: deployment.work_pool_name,
                command: deployment
                    .job_variables
                    .get("command")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                tags: deployment.tags,
            });
        }
        if count < 200 {
            break;
        }
        offset += count;
    }
    out.sort_by(|a, b| a.full_name.cmp(&b.full_name));
    Ok(out)
}
