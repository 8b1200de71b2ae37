//! The HTTP client: one place for auth, the API version header and the
//! retry policy the Python SDK uses (408/429/502/503 and dropped
//! connections, `Retry-After` honoured, else exponential back-off with jitter).

use std::time::Duration;

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiConfig, ApiError, Auth, ConfigError};

/// How many times a request is tried before it gives up: about a minute of
/// back-off. A server on SQLite answers 503 while its database is locked,
/// which under load lasts longer than the SDK's five retries ride out.
const ATTEMPTS: u32 = 12;
/// The longest back-off between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A client of one Prefect server's REST API.
///
/// ```
/// use prefecto::prefect_api::{ApiConfig, ApiError, Client};
///
/// // Nothing listens on port 9: one clear error, at once, naming the URL.
/// let client = Client::new(ApiConfig::new("http://127.0.0.1:9/api").unwrap()).unwrap();
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
/// let err = runtime.block_on(client.check()).unwrap_err();
/// assert!(matches!(err, ApiError::Unreachable { .. }));
/// assert!(err.to_string().starts_with("cannot reach the Prefect server at http://127.0.0.1:9/api"));
/// assert!(err.is_retryable());
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    config: ApiConfig,
}

/// Why a request sent once failed, and whether the server may have stored it.
#[derive(Debug)]
pub(crate) struct SentOnce {
    pub(crate) error: ApiError,
    /// The request may have been stored (its reply was lost, or the server
    /// failed midway): ask the server before sending it again.
    pub(crate) in_doubt: bool,
}

impl SentOnce {
    fn not_stored(error: ApiError) -> Self {
        SentOnce {
            error,
            in_doubt: false,
        }
    }

    fn in_doubt(error: ApiError) -> Self {
        SentOnce {
            error,
            in_doubt: true,
        }
    }
}

/// How a request turned out, for the reporter's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// HTTP requests made, retries included.
    pub requests: u64,
    /// Of those, retries.
    pub retries: u64,
}

impl Client {
    /// A client for the server `config` names.
    pub fn new(config: ApiConfig) -> Result<Self, ConfigError> {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "x-prefect-api-version",
            reqwest::header::HeaderValue::from_static("0.8.4"),
        );
        let credential = match &config.auth {
            Auth::None => None,
            Auth::ApiKey(key) => Some(format!("Bearer {key}")),
            Auth::AuthString(auth) => {
                use base64::Engine;
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(auth)
                ))
            }
        };
        if let Some(credential) = credential {
            let mut value = reqwest::header::HeaderValue::from_str(&credential).map_err(|_| {
                ConfigError::Client(
                    "the API key or auth string holds characters HTTP headers cannot carry".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Client { http, config })
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// Checks that a Prefect server answers at the URL and accepts the
    /// credentials: one clear error if not.
    pub async fn check(&self) -> Result<String, ApiError> {
        self.check_with(&mut Sent::default()).await
    }

    pub(crate) async fn check_with(&self, sent: &mut Sent) -> Result<String, ApiError> {
        let version = self
            .send(Method::GET, "/admin/version", None, sent)
            .await
            .map_err(|e| match e {
                // A Prefect API always has this endpoint: anything else is not one.
                ApiError::Status { url, status, body } => ApiError::NotPrefect {
                    url,
                    detail: format!("HTTP {status} for its version: {body}"),
                },
                other => other,
            })?;
        match version {
            Value::String(version) => Ok(version),
            other => Err(ApiError::NotPrefect {
                url: self.url("/admin/version"),
                detail: format!("its version answer was {}", truncate(&other.to_string())),
            }),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.url, path)
    }

    /// Sends a request, retrying what the SDK retries, and parses the JSON
    /// answer (`null` for an empty one).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        sent: &mut Sent,
    ) -> Result<Value, ApiError> {
        self.send_as(method, path, body, sent).await
    }

    /// [`Client::send`], parsing the answer as `T`.
    pub async fn send_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        sent: &mut Sent,
    ) -> Result<T, ApiError> {
        let body = body.map(|body| self.encode(path, body)).transpose()?;
        self.exchange(method, path, body, sent).await
    }

    /// [`Client::send`] with a typed payload, parsing the answer as `T`.
    pub async fn send_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        sent: &mut Sent,
    ) -> Result<T, ApiError> {
        let body = self.encode(path, body)?;
        self.exchange(method, path, Some(body), sent).await
    }

    /// The payload as JSON bytes, encoded once for every try.
    fn encode<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(body).map_err(|e| ApiError::Status {
            url: self.url(path),
            status: 0,
            body: format!("the request could not be encoded as JSON: {e}"),
        })
    }

    /// One request, sent once, for records the server keeps no id of (log
    /// lines) or stores twice if sent twice (events): on failure, whether
    /// the server may have stored it ([`SentOnce::in_doubt`]), so that the
    /// caller asks the server before it sends it again.
    pub(crate) async fn send_json_once<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        sent: &mut Sent,
    ) -> Result<(), SentOnce> {
        let url = self.url(path);
        let body = self.encode(path, body).map_err(SentOnce::not_stored)?;
        sent.requests += 1;
        let request = self
            .http
            .request(method, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            // Nothing listened: nothing was stored.
            Err(e) if e.is_connect() => {
                return Err(SentOnce::not_stored(ApiError::Unreachable {
                    url,
                    reason: error_chain(&e),
                }));
            }
            // Sent, and the reply lost: the server may have stored it.
            Err(e) => {
                return Err(SentOnce::in_doubt(ApiError::RetriesExhausted {
                    url,
                    attempts: 1,
                    last: error_chain(&e),
                }));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let error = ApiError::Status {
            url,
            status: status.as_u16(),
            body: truncate(&text),
        };
        Err(match status {
            // Turned away before any work: nothing stored, send again later.
            StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::SERVICE_UNAVAILABLE => SentOnce::not_stored(error),
            _ => SentOnce::in_doubt(error),
        })
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        sent: &mut Sent,
    ) -> Result<T, ApiError> {
        let attempts = ATTEMPTS;
        let url = self.url(path);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                sent.retries += 1;
            }
            sent.requests += 1;
            let mut request = self.http.request(method.clone(), &url);
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let wait = match request.send().await {
                Err(e) if e.is_connect() => {
                    // Nothing listening (the server is down, or the URL wrong):
                    // say so now rather than after a minute of retries.
                    return Err(ApiError::Unreachable {
                        url,
                        reason: error_chain(&e),
                    });
                }
                Err(e) => {
                    last = error_chain(&e);
                    backoff(attempt)
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(&response);
                    if status.is_success() {
                        // Cut off after the server answered: it acted, so this is
                        // no refused connection.
                        let bytes = response.bytes().await.map_err(|e| ApiError::NotPrefect {
                            url: url.clone(),
                            detail: format!("an answer cut off: {}", error_chain(&e)),
                        })?;
                        let bytes = if bytes.is_empty() {
                            &b"null"[..]
                        } else {
                            &bytes[..]
                        };
                        return serde_json::from_slice(bytes).map_err(|e| ApiError::NotPrefect {
                            url: url.clone(),
                            detail: format!(
                                "an answer that is not the expected JSON ({e}): {}",
                                truncate(&String::from_utf8_lossy(bytes))
                            ),
                        });
                    }
                    let text = response.text().await.unwrap_or_default();
                    match status {
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            return Err(ApiError::Unauthorized {
                                url,
                                status: status.as_u16(),
                            });
                        }
                        StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE => {
                            last = format!("HTTP {}: {}", status.as_u16(), truncate(&text));
                            retry_after.unwrap_or_else(|| backoff(attempt))
                        }
                        _ => {
                            return Err(ApiError::Status {
                                url,
                                status: status.as_u16(),
                                body: truncate(&text),
                            });
                        }
                    }
                }
            };
            if attempt + 1 < attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(ApiError::RetriesExhausted {
            url,
            attempts,
            last,
        })
    }

    /// [`Client::send`], trying again for as long as `budget` while the
    /// server stays busy (a SQLite server can be locked for minutes under
    /// load). A server that is down, or a refusal, ends it at once.
    pub async fn send_patiently<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        budget: Duration,
        sent: &mut Sent,
    ) -> Result<T, ApiError> {
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            match self.send_json(method.clone(), path, body, sent).await {
                Err(err @ ApiError::RetriesExhausted { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(target: "prefecto.engine", "Still trying: {err}");
                }
                result => return result,
            }
        }
    }

    /// A request whose answer's status matters more than its body: for
    /// concurrency slots, where 423 means "full, come back later".
    pub async fn send_raw<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        sent: &mut Sent,
    ) -> Result<(u16, Option<Duration>, Value), ApiError> {
        let url = self.url(path);
        sent.requests += 1;
        let response = self
            .http
            .request(method, &url)
            .json(body)
            .send()
            .await
            .map_err(|e| ApiError::Unreachable {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(ApiError::Unauthorized { url, status });
        }
        let retry_after = retry_after(&response);
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(truncate(&text)));
        Ok((status, retry_after, value))
    }
}

/// Every row a `/filter` endpoint has for `filter`, a page of 200 at a time.
pub(crate) async fn fetch_all<F: Serialize, T: DeserializeOwned>(
    client: &Client,
    path: &str,
    filter: &F,
    sent: &mut Sent,
) -> Result<Vec<T>, ApiError> {
    const PAGE: usize = 200;
    let mut rows = Vec::new();
    loop {
        let body = super::schemas::Page {
            filter,
            limit: PAGE,
            offset: rows.len(),
        };
        let page: Vec<T> = client.send_json(Method::POST, path, &body, sent).await?;
        let n = page.len();
        rows.extend(page);
        if n < PAGE {
            return Ok(rows);
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: f64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(seconds.clamp(0.0, 60.0)))
}

/// Exponential back-off with full jitter: 0.5 s, 1 s, 2 s ... at most 10 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(500)
        .saturating_mul(1 << attempt.min(6))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// reqwest's errors keep their cause in `source()`: show the chain (reqwest's
/// own text repeats the URL, which the callers already name).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = String::from(if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    });
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert!(backoff(0) <= Duration::from_millis(500));
        assert!(backoff(0) >= Duration::from_millis(250));
        assert!(backoff(20) <= MAX_BACKOFF);
    }

    #[test]
    fn long_bodies_are_cut() {
        let cut = truncate(&"x".repeat(1000));
        assert!(cut.chars().count() <= 301);
    }
}
