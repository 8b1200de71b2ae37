//! Where the Prefect server is, read as the Python SDK reads it: the
//! environment first, then the active profile of `profiles.toml`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

/// How requests authenticate. Never printed: `Debug` shows only the kind.
///
/// ```
/// use prefecto::prefect_api::Auth;
///
/// let auth = Auth::ApiKey("pnu_secret".into());
/// assert_eq!(format!("{auth:?}"), "ApiKey(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials (a local server).
    None,
    /// `PREFECT_API_KEY`, sent as a Bearer token (Prefect Cloud).
    ApiKey(String),
    /// `PREFECT_API_AUTH_STRING`, sent as HTTP Basic auth (a self-hosted server with auth).
    AuthString(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::None => "None",
            Auth::ApiKey(_) => "ApiKey(<redacted>)",
            Auth::AuthString(_) => "AuthString(<redacted>)",
        })
    }
}

/// The Prefect server to report to, and how to pace the reports.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The API's base URL, without a trailing `/` (`http://127.0.0.1:4200/api`).
    pub url: String,
    /// The credentials.
    pub auth: Auth,
    /// Task-run events sent per second at most (`PREFECTO_EVENTS_PER_SECOND`,
    /// default 1,000). The pace that matters is set by the server itself:
    /// no more of our task runs wait in its queue than a window, since a
    /// server drops what overflows its queue, silently.
    pub events_per_second: f64,
    /// How long a flow call waits, at its end, for the server to have
    /// everything (`PREFECTO_REPORT_WAIT`, seconds, default 300).
    pub report_wait: Duration,
    /// How often the flow run's state is polled for a cancellation from the
    /// UI (`PREFECTO_CANCEL_POLL`, seconds, default 5).
    pub cancel_poll: Duration,
    /// The least severe level of the log lines sent to the server, as
    /// Prefect's Python client decides it: `PREFECT_LOGGING_LEVEL` (default
    /// INFO), raised by `PREFECT_LOGGING_HANDLERS_API_LEVEL`; `None` with
    /// `PREFECT_LOGGING_TO_API_ENABLED=false`. Only lines about runs are
    /// sent, as Prefect sends its run loggers' lines only.
    pub log_level_sent: Option<tracing::Level>,
    /// The server's UI (`PREFECT_UI_URL`, else inferred from the API URL
    /// as Prefect infers it), where the "View at" line points.
    pub ui_url: String,
}

impl ApiConfig {
    /// A configuration for the server at `url`, with defaults for the rest.
    ///
    /// ```
    /// use prefecto::prefect_api::ApiConfig;
    ///
    /// let config = ApiConfig::new("http://127.0.0.1:4200/api/").unwrap();
    /// assert_eq!(config.url, "http://127.0.0.1:4200/api");
    /// assert!(ApiConfig::new("127.0.0.1:4200").is_err());
    /// ```
    ///
    /// Credentials in the URL (`http://user:secret@host/api`) become the
    /// Basic auth (as `PREFECT_API_AUTH_STRING`) and leave the URL, so that
    /// no message, log line or run history ever holds them.
    ///
    /// ```
    /// use prefecto::prefect_api::{ApiConfig, Auth};
    ///
    /// let config = ApiConfig::new("http://admin:s3cret@127.0.0.1:4200/api").unwrap();
    /// assert_eq!(config.url, "http://127.0.0.1:4200/api");
    /// assert!(matches!(config.auth, Auth::AuthString(ref a) if a == "admin:s3cret"));
    /// ```
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        let (url, credentials) = split_userinfo(url.trim().trim_end_matches('/'));
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::BadUrl { url });
        }
        Ok(ApiConfig {
            auth: credentials.map_or(Auth::None, Auth::AuthString),
            events_per_second: 1_000.0,
            report_wait: Duration::from_secs(300),
            cancel_poll: Duration::from_secs(5),
            log_level_sent: Some(tracing::Level::INFO),
            ui_url: ui_url_of(&url),
            url,
        })
    }

    /// A flow run's page in the server's UI.
    ///
    /// ```
    /// use prefecto::prefect_api::ApiConfig;
    ///
    /// let config = ApiConfig::new("http://127.0.0.1:4200/api").unwrap();
    /// assert_eq!(
    ///     config.ui_url_of_flow_run(uuid::Uuid::nil()),
    ///     "http://127.0.0.1:4200/runs/flow-run/00000000-0000-0000-0000-000000000000"
    /// );
    /// ```
    pub fn ui_url_of_flow_run(&self, id: uuid::Uuid) -> String {
        format!("{}/runs/flow-run/{id}", self.ui_url)
    }

    /// The configuration from the environment and the active profile, or
    /// `None` if no API URL is set (prefecto then runs embedded only).
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        let profile = active_profile()?;
        let setting = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| profile.as_ref().and_then(|p| p.get(name)))
        };
        let Some(url) = setting("PREFECT_API_URL") else {
            return Ok(None);
        };
        let mut config = ApiConfig::new(&url)?;
        match (
            setting("PREFECT_API_KEY"),
            setting("PREFECT_API_AUTH_STRING"),
        ) {
            (Some(key), _) => config.auth = Auth::ApiKey(key),
            (None, Some(auth)) => config.auth = Auth::AuthString(auth),
            // Credentials in the URL, if any, stay.
            (None, None) => {}
        };
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<f64>().ok());
        if let Some(rate) = number("PREFECTO_EVENTS_PER_SECOND").filter(|r| *r > 0.0) {
            config.events_per_second = rate;
        }
        if let Some(wait) = number("PREFECTO_REPORT_WAIT").filter(|w| *w >= 0.0) {
            config.report_wait = Duration::from_secs_f64(wait);
        }
        if let Some(poll) = number("PREFECTO_CANCEL_POLL").filter(|p| *p > 0.0) {
            config.cancel_poll = Duration::from_secs_f64(poll);
        }
        if let Some(ui) = setting("PREFECT_UI_URL") {
            config.ui_url = ui.trim_end_matches('/').to_string();
        }
        config.log_level_sent = super::api_logs::least_level_sent(setting);
        Ok(Some(config))
    }
}

/// The UI of the server at API URL `api`, as Prefect infers it: the API
/// URL without its `/api`, and Cloud's API host and paths mapped to its app's.
fn ui_url_of(api: &str) -> String {
    let ui = api.replace(
        "https://api.prefect.cloud/api",
        "https://app.prefect.cloud/api",
    );
    let ui = ui.strip_suffix("/api").unwrap_or(&ui).replace("/api/", "/");
    ui.replace("/accounts/", "/account/")
        .replace("/workspaces/", "/workspace/")
}

/// Splits the credentials out of a URL's authority: the URL without them
/// and, if there were any, `user:password` (percent-decoded). Works on any
/// text, so that even a malformed URL is never shown with its secret.
fn split_userinfo(url: &str) -> (String, Option<String>) {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end].rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &url[scheme_end..scheme_end + at];
    let without = format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]);
    let decoded = percent_decode(userinfo);
    (without, (!decoded.is_empty()).then_some(decoded))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, ..) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The settings of the active profile, if there is a profiles file.
struct Profile(toml::Table);

impl Profile {
    fn get(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            toml::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

fn profiles_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PREFECT_PROFILES_PATH") {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("PREFECT_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".prefect")))?;
    Some(home.join("profiles.toml"))
}

/// Reads `profiles.toml` as Prefect writes it: `active = "name"` and a
/// `[profiles.name]` table of settings. `PREFECT_PROFILE` picks another.
fn active_profile() -> Result<Option<Profile>, ConfigError> {
    let Some(path) = profiles_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConfigError::Profiles {
                path,
                reason: e.to_string(),
            });
        }
    };
    parse_profiles(&text, std::env::var("PREFECT_PROFILE").ok())
        .map_err(|reason| ConfigError::Profiles { path, reason })
}

/// The settings of the profile `chosen` (else the file's `active` one).
fn parse_profiles(text: &str, chosen: Option<String>) -> Result<Option<Profile>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| e.message().to_string())?;
    let active = chosen
        .or_else(|| table.get("active")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "ephemeral".to_string());
    let settings = table
        .get("profiles")
        .and_then(|p| p.get(&active))
        .and_then(|p| p.as_table())
        .cloned();
    Ok(settings.map(Profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_url_is_inferred_as_prefect_infers_it() {
        assert_eq!(
            ui_url_of("http://127.0.0.1:4200/api"),
            "http://127.0.0.1:4200"
        );
        assert_eq!(
            ui_url_of("https://api.prefect.cloud/api/accounts/a1/workspaces/w1"),
            "https://app.prefect.cloud/account/a1/workspace/w1"
        );
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let mut config = ApiConfig::new("https://api.example.com/api").unwrap();
        config.auth = Auth::ApiKey("pnu_secret".into());
        assert!(!format!("{config:?}").contains("pnu_secret"));
        config.auth = Auth::AuthString("admin:hunter2".into());
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn credentials_in_the_url_leave_it_for_the_auth() {
        let config = ApiConfig::new("https://user%40corp:p%3Ass@host:4200/api/").unwrap();
        assert_eq!(config.url, "https://host:4200/api");
        assert!(matches!(config.auth, Auth::AuthString(ref a) if a == "user@corp:p:ss"));
        // Even a URL refused as malformed is never shown with its secret.
        for bad in ["ftp://user:hunter2@host", "user:hunter2@host:4200"] {
            let err = ApiConfig::new(bad).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        // An `@` after the authority is not userinfo.
        let (url, credentials) = split_userinfo("http://host/api?mail=a@b");
        assert_eq!(
            (url.as_str(), credentials),
            ("http://host/api?mail=a@b", None)
        );
    }

    #[test]
    fn the_active_profile_is_read_as_prefect_writes_it() {
        let text = r#"
            active = "local"

            [profiles.ephemeral]
            PREFECT_SERVER_ALLOW_EPHEMERAL_MODE = "true"

            [profiles.local]
            PREFECT_API_URL = "http://127.0.0.1:4200/api"
            PREFECT_API_AUTH_STRING = "admin:pass"

            [profiles.cloud]
            PREFECT_API_URL = "https://api.prefect.cloud/api/accounts/a/workspaces/w"
            PREFECT_API_KEY = "pnu_key"
        "#;
        let local = parse_profiles(text, None).unwrap().unwrap();
        assert_eq!(
            local.get("PREFECT_API_URL").as_deref(),
            Some("http://127.0.0.1:4200/api")
        );
        assert_eq!(
            local.get("PREFECT_API_AUTH_STRING").as_deref(),
            Some("admin:pass")
        );
        // PREFECT_PROFILE picks another.
        let cloud = parse_profiles(text, Some("cloud".into())).unwrap().unwrap();
        assert_eq!(cloud.get("PREFECT_API_KEY").as_deref(), Some("pnu_key"));
        assert!(
            parse_profiles(text, Some("missing".into()))
                .unwrap()
                .is_none()
        );
        assert!(parse_profiles("active = ", None).is_err());
    }

    #[test]
    fn urls_must_be_http() {
        assert!(matches!(
            ApiConfig::new("ftp://x/api"),
            Err(ConfigError::BadUrl { .. })
        ));
    }
}
