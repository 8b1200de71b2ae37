//! The `PREFECTO_*` environment variables, read in one place: they are the
//! defaults of [`Prefecto::builder`](crate::Prefecto::builder), which a
//! program can override in code.
//!
//! The Prefect client reads Prefect's own variables (`PREFECT_API_URL`, ...)
//! as the Python SDK does, in `prefect_api`.

use std::path::PathBuf;

use tracing::level_filters::LevelFilter;

/// The environment variable naming prefecto's home folder (the run history lives there).
pub const HOME_ENV: &str = "PREFECTO_HOME";
/// The environment variable that turns the run history off (`off`, `false`, `0`, `no`).
pub const HISTORY_ENV: &str = "PREFECTO_HISTORY";
/// The environment variable that sets the worker threads for sync task bodies.
pub const MAX_WORKERS_ENV: &str = "PREFECTO_TASK_RUNNER_MAX_WORKERS";
/// The environment variable that sets the console log level.
pub const LEVEL_ENV: &str = "PREFECTO_LOGGING_LEVEL";
/// The environment variable that turns the progress bar off.
pub const PROGRESS_ENV: &str = "PREFECTO_PROGRESS";
/// The environment variable that leaves SIGINT and SIGTERM to the program.
pub const HANDLE_SIGNALS_ENV: &str = "PREFECTO_HANDLE_SIGNALS";
/// The environment variable that runs every caching task's body again.
pub const REFRESH_CACHE_ENV: &str = "PREFECTO_REFRESH_CACHE";
/// The variable for [`Settings::history_reserve_mb`].
pub const HISTORY_RESERVE_ENV: &str = "PREFECTO_HISTORY_RESERVE_MB";

/// What the environment asks for, with prefecto's defaults for the rest.
///
/// ```
/// let settings = prefecto::Settings::from_env();
/// assert!(settings.home.ends_with(".prefecto") || std::env::var_os("PREFECTO_HOME").is_some());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Settings {
    /// `PREFECTO_HOME`, else `~/.prefecto`: where the run history is kept.
    pub home: PathBuf,
    /// `PREFECTO_HISTORY`: record runs in the SQLite history (default on).
    pub history: bool,
    /// `PREFECTO_TASK_RUNNER_MAX_WORKERS`: threads for sync task bodies (default: one per core).
    pub max_workers: Option<usize>,
    /// `PREFECTO_LOGGING_LEVEL`: the console log level (default INFO).
    pub logging_level: LevelFilter,
    /// `PREFECTO_PROGRESS`: a progress bar for long maps in a terminal (default on).
    pub progress: bool,
    /// `PREFECTO_HANDLE_SIGNALS`: SIGINT and SIGTERM cancel flow runs cleanly (default on).
    pub handle_signals: bool,
    /// `PREFECTO_REFRESH_CACHE`: run caching tasks' bodies again (default off).
    pub refresh_cache: bool,
    /// `PREFECTO_HISTORY_RESERVE_MB`: space the run history keeps in a file
    /// beside its database and gives up when the disk fills, so that the
    /// runs going on are still recorded (default 4; 0 keeps none).
    pub history_reserve_mb: u64,
}

impl Default for Settings {
    /// The defaults, whatever the environment says.
    fn default() -> Self {
        Settings {
            home: default_home(),
            history: true,
            max_workers: None,
            logging_level: LevelFilter::INFO,
            progress: true,
            handle_signals: true,
            refresh_cache: false,
            history_reserve_mb: 4,
        }
    }
}

impl Settings {
    /// The defaults, overridden by every `PREFECTO_*` variable that is set.
    /// A value that cannot be read is named in a warning on stderr (no
    /// logger may exist yet) and the default is kept.
    pub fn from_env() -> Self {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`Settings::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let defaults = Settings::default();
        let flag = |name: &str, default: bool| match lookup(name) {
            None => default,
            Some(value) => parse_flag(&value).unwrap_or_else(|| {
                eprintln!("prefecto: {name}={value:?} is neither on nor off; using {default}");
                default
            }),
        };
        Settings {
            home: lookup(HOME_ENV)
                .filter(|home| !home.is_empty())
                .map(PathBuf::from)
                .unwrap_or(defaults.home),
            history: flag(HISTORY_ENV, defaults.history),
            max_workers: lookup(MAX_WORKERS_ENV).and_then(|value| {
                match value.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        eprintln!("prefecto: {MAX_WORKERS_ENV}={value:?} is not a positive number; using one worker per core");
                        None
                    }
                }
            }),
            logging_level: match lookup(LEVEL_ENV) {
                None => defaults.logging_level,
                Some(name) => parse_level(&name).unwrap_or_else(|| {
                    eprintln!(
                        "prefecto: {LEVEL_ENV}={name:?} is not a level \
                         (TRACE, DEBUG, INFO, WARNING, ERROR, OFF); using INFO"
                    );
                    LevelFilter::INFO
                }),
            },
            progress: flag(PROGRESS_ENV, defaults.progress),
            handle_signals: flag(HANDLE_SIGNALS_ENV, defaults.handle_signals),
            refresh_cache: flag(REFRESH_CACHE_ENV, defaults.refresh_cache),
            history_reserve_mb: lookup(HISTORY_RESERVE_ENV).map_or(
                defaults.history_reserve_mb,
                |value| {
                    value.trim().parse::<u64>().unwrap_or_else(|_| {
                        eprintln!("prefecto: {HISTORY_RESERVE_ENV}={value:?} is not a number of MiB; using {}", defaults.history_reserve_mb);
                        defaults.history_reserve_mb
                    })
                },
            ),
        }
    }
}

/// `~/.prefecto`, or a `.prefecto` folder in the temporary folder when there is no home.
fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".prefecto")
}

/// `on`/`off` and their usual spellings; `None` for anything else.
fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses a Prefect-style level name; `None` if it is not one.
///
/// ```
/// use tracing::level_filters::LevelFilter;
/// assert_eq!(prefecto::settings::parse_level("warning"), Some(LevelFilter::WARN));
/// assert_eq!(prefecto::settings::parse_level("loud"), None);
/// ```
pub fn parse_level(name: &str) -> Option<LevelFilter> {
    match name.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Some(LevelFilter::TRACE),
        "DEBUG" => Some(LevelFilter::DEBUG),
        "INFO" => Some(LevelFilter::INFO),
        "WARN" | "WARNING" => Some(LevelFilter::WARN),
        "ERROR" | "CRITICAL" => Some(LevelFilter::ERROR),
        "OFF" | "NONE" => Some(LevelFilter::OFF),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Settings {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn unset_variables_give_the_defaults() {
        assert_eq!(with(&[]), Settings::default());
    }

    #[test]
    fn every_variable_is_read() {
        let settings = with(&[
            (HOME_ENV, "/tmp/p"),
            (HISTORY_ENV, "off"),
            (MAX_WORKERS_ENV, " 3 "),
            (LEVEL_ENV, "debug"),
            (PROGRESS_ENV, "0"),
            (HANDLE_SIGNALS_ENV, "No"),
            (REFRESH_CACHE_ENV, "true"),
        ]);
        assert_eq!(settings.home, PathBuf::from("/tmp/p"));
        assert!(!settings.history && !settings.progress && !settings.handle_signals);
        assert!(settings.refresh_cache);
        assert_eq!(settings.max_workers, Some(3));
        assert_eq!(settings.logging_level, LevelFilter::DEBUG);
    }

    #[test]
    fn unreadable_values_keep_the_defaults() {
        let settings = with(&[
            (HISTORY_ENV, "maybe"),
            (MAX_WORKERS_ENV, "0"),
            (LEVEL_ENV, "loud"),
            (HOME_ENV, ""),
        ]);
        assert_eq!(settings, Settings::default());
    }
}
