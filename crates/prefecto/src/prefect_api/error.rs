//! What can go wrong talking to a Prefect server. Messages name the URL and
//! never the API key or auth string.

use thiserror::Error;

/// An error from the Prefect server, or from reaching it.
///
/// ```
/// use prefecto::prefect_api::ApiError;
///
/// let refused = ApiError::Unauthorized { url: "https://api.example.com/api".into(), status: 401 };
/// assert!(!refused.is_retryable());
/// assert!(refused.to_string().contains("check PREFECT_API_KEY or PREFECT_API_AUTH_STRING"));
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Nothing answered at the URL: wrong host or port, or the server is down.
    #[error("cannot reach the Prefect server at {url}: {reason}")]
    Unreachable {
        /// The URL tried (no credentials).
        url: String,
        /// Why, as the network said.
        reason: String,
    },
    /// The server refused the credentials (401/403).
    #[error(
        "the Prefect server at {url} refused the credentials (HTTP {status}): check \
         PREFECT_API_KEY or PREFECT_API_AUTH_STRING"
    )]
    Unauthorized {
        /// The URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Something answered, but not as a Prefect server's API does.
    #[error(
        "{url} does not look like a Prefect server's API ({detail}): PREFECT_API_URL should \
         end in /api, as in http://127.0.0.1:4200/api"
    )]
    NotPrefect {
        /// The URL.
        url: String,
        /// What came back instead.
        detail: String,
    },
    /// The server answered with an error status.
    #[error("the Prefect server at {url} answered HTTP {status}: {body}")]
    Status {
        /// The request's URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The server stayed busy or unreachable through every retry.
    #[error("the Prefect server at {url} was still failing after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// The request's URL.
        url: String,
        /// How many tries were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

impl ApiError {
    /// Whether trying again later may succeed (the server was down or busy),
    /// as opposed to a refusal that will not change on its own.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } | ApiError::RetriesExhausted { .. } => true,
            ApiError::Status { status, .. } => matches!(status, 408 | 429 | 502 | 503 | 504),
            ApiError::Unauthorized { .. } | ApiError::NotPrefect { .. } => false,
        }
    }
}

/// An error in the Prefect settings.
///
/// ```
/// use prefecto::prefect_api::{ApiConfig, ConfigError};
///
/// let err = ApiConfig::new("localhost:4200").unwrap_err();
/// assert!(matches!(err, ConfigError::BadUrl { .. }));
/// ```
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `PREFECT_API_URL` is not an http(s) URL.
    #[error("PREFECT_API_URL {url:?} is not an http:// or https:// URL")]
    BadUrl {
        /// The value found.
        url: String,
    },
    /// The profiles file could not be read or parsed.
    #[error("cannot read the Prefect profiles file {path}: {reason}")]
    Profiles {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}
