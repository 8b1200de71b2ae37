//! Scaling out on Prefect's work pools: deploy a binary's flows, and run
//! them from Rust on the workers, one run or a `BatchTask` of them.
//!
//! - [`crate::serve!`] makes a binary deployable: it runs the flow a worker
//!   asks for, with the run's parameters from the server.
//! - [`deploy()`] (and `prefecto deploy`) registers a deployment of it on a
//!   work pool, with its parameters' schema for the UI's run form.
//! - [`run_deployment`] runs a deployment once and gives the child's result;
//!   [`DeploymentTask`] makes a deployment a task, so that
//!   `BatchTask::over_deployment` maps inputs over child flow runs with
//!   batches, a window and kill switches; a tripped switch cancels the
//!   children in flight on the server.
//!
//! A child's result travels through a folder both sides reach
//! ([`results_dir`]).

mod cancel;
mod child_results;
mod child_run;
mod deploy;
mod deployment_task;
mod error;
mod watch;
mod wire;
mod worker_loss;
mod worker_run;

pub use child_results::{RESULTS_DIR_ENV, results_dir};
pub use deploy::{Deployed, Deployment, DeploymentInfo, Schedule, deploy, list_deployments};
pub use deployment_task::{DeploymentTask, run_deployment};
pub use error::DeploymentError;
pub use worker_run::FLOW_NAME_ENV;

pub(crate) use cancel::wait_for_cancellations;
pub(crate) use child_results::write as write_result;
pub(crate) use worker_run::{WorkerRunState, read_worker_run, worker_run};
