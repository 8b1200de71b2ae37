//! What can go wrong deploying a flow or running a deployment.

use crate::prefect_api::{ApiError, ConfigError};

/// An error deploying a flow, or running one of its deployments.
///
/// ```
/// use prefecto::deployments::{DeploymentError, DeploymentTask};
///
/// let err = DeploymentTask::new("no-slash").unwrap_err();
/// assert!(matches!(err, DeploymentError::BadName { .. }));
/// assert!(err.to_string().contains("'flow/deployment'"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// A deployment is named `flow/deployment`.
    #[error("{name:?} is not a deployment name: write it as 'flow/deployment', as Prefect does")]
    BadName {
        /// What was given.
        name: String,
    },
    /// No Prefect server is configured.
    #[error(
        "deployments live on a Prefect server, and none is configured: set PREFECT_API_URL \
         (for example http://127.0.0.1:4200/api)"
    )]
    NoServer,
    /// The Prefect settings are wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server has no such deployment.
    #[error(
        "the Prefect server at {url} has no deployment '{name}': deploy it first \
         (`prefecto deploy`), or see `prefecto deployment ls`"
    )]
    NotFound {
        /// The deployment.
        name: String,
        /// The server.
        url: String,
    },
    /// The server has no such work pool, and it was not to be created.
    #[error("the Prefect server at {url} has no work pool '{pool}'")]
    NoWorkPool {
        /// The pool.
        pool: String,
        /// The server.
        url: String,
    },
    /// The parameters are not a JSON object.
    #[error(
        "a flow run's parameters are a JSON object of name → value; these serialize to {found}"
    )]
    NotAnObject {
        /// What they serialize to.
        found: String,
    },
    /// The server refused the flow run (parameters that do not match the
    /// deployment's schema, a deployment without a work pool…).
    #[error("the Prefect server refused {what} of deployment '{name}': {reason}")]
    Refused {
        /// What was refused: "a run", "the registration".
        what: &'static str,
        /// The deployment.
        name: String,
        /// What the server said.
        reason: String,
    },
    /// The child flow run did not complete.
    #[error("child flow run '{child}' of deployment '{name}' ended {state}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    ChildNotCompleted {
        /// The deployment.
        name: String,
        /// The child flow run's name.
        child: String,
        /// Its final state's name (`Failed`, `Crashed`, `Cancelled`).
        state: String,
        /// Its final state's message.
        message: Option<String>,
    },
    /// The child completed, but its result could not be read.
    #[error("child flow run '{child}' completed, but its result {reason}")]
    NoResult {
        /// The child flow run's name.
        child: String,
        /// Why.
        reason: String,
    },
    /// A batch of zero children.
    #[error(transparent)]
    Batch(#[from] crate::concurrency::BatchConfigError),
    /// The server could not be reached, or answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// `?` on a deployment's errors in a flow that returns [`crate::Error`].
impl From<DeploymentError> for crate::Error {
    fn from(error: DeploymentError) -> Self {
        crate::Error::Deployment(Box::new(error))
    }
}

impl DeploymentError {
    /// The server's refusal of a request, as the error a user reads.
    pub(super) fn refused_or_api(what: &'static str, name: &str, error: ApiError) -> Self {
        match error {
            ApiError::Status {
                status: 400 | 409 | 422,
                body,
                ..
            } => DeploymentError::Refused {
                what,
                name: name.to_string(),
                reason: server_detail(&body),
            },
            other => DeploymentError::Api(other),
        }
    }
}

/// What a Prefect error body says: its `detail`, or each validation
/// error's field and message; else the body.
fn server_detail(body: &str) -> String {
    use serde_json::Value;
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    if let Some(Value::Array(errors)) = value.get("exception_detail") {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let field: Vec<String> = e
                    .get("loc")
                    .and_then(Value::as_array)
                    .map(|loc| {
                        loc.iter()
                            .map(|p| p.to_string().trim_matches('"').to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let message = e.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                format!("{}: {message}", field.join("."))
            })
            .collect();
        return parts.join("; ");
    }
    match value.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_reason_is_read_out_of_its_body() {
        assert_eq!(
            server_detail(r#"{"detail": "Validation failed"}"#),
            "Validation failed"
        );
        assert_eq!(
            server_detail(
                r#"{"exception_detail": [{"loc": ["body", "x"], "msg": "Extra inputs are not permitted"}]}"#
            ),
            "body.x: Extra inputs are not permitted"
        );
        assert_eq!(server_detail("plain"), "plain");
    }
}
