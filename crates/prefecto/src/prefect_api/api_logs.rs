//! Which log lines go to the server: those Prefect's own Python client
//! sends. It sends the lines of its run loggers (`prefect.flow_runs`,
//! `prefect.task_runs`) at `PREFECT_LOGGING_LEVEL` (default INFO) or above,
//! raised by the API handler's own level (`PREFECT_LOGGING_HANDLERS_API_LEVEL`),
//! and none with `PREFECT_LOGGING_TO_API_ENABLED=false`. At INFO that is
//! one line per task run ("Finished in state Completed()") and two per flow
//! run ("Beginning flow run …", "Finished in state …"); the engine's other
//! lines stay on the console and in the run history.

use tracing::Level;

use crate::recorder::ENGINE;

/// The least severe level sent, from Prefect's settings as `setting` reads
/// them; `None` when nothing is sent.
pub(crate) fn least_level_sent(setting: impl Fn(&str) -> Option<String>) -> Option<Level> {
    let enabled = setting("PREFECT_LOGGING_TO_API_ENABLED").is_none_or(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    });
    if !enabled {
        return None;
    }
    let logger = setting("PREFECT_LOGGING_LEVEL")
        .and_then(|v| python_level(&v))
        .unwrap_or(Level::INFO);
    let handler = setting("PREFECT_LOGGING_HANDLERS_API_LEVEL")
        .and_then(|v| python_level(&v))
        .unwrap_or(Level::TRACE);
    // The stricter of the two: in `tracing`, the more severe level is the lesser.
    Some(logger.min(handler))
}

/// A Python logging level, by name or number, as the nearest `tracing` level
/// that lets through the same lines (0 and NOTSET let through everything).
fn python_level(text: &str) -> Option<Level> {
    let text = text.trim();
    let number = match text.to_ascii_uppercase().as_str() {
        "NOTSET" => 0,
        "DEBUG" => 10,
        "INFO" => 20,
        "WARNING" | "WARN" => 30,
        "ERROR" => 40,
        "CRITICAL" | "FATAL" => 50,
        _ => text.parse::<u32>().ok()?,
    };
    Some(match number {
        0..=9 => Level::TRACE,
        10..=19 => Level::DEBUG,
        20..=29 => Level::INFO,
        30..=39 => Level::WARN,
        _ => Level::ERROR,
    })
}

/// Whether a line of `logger` at `level` goes to the server.
pub(crate) fn sent(least: Option<Level>, logger: &str, level: Level) -> bool {
    logger != ENGINE && least.is_some_and(|least| level <= least)
}

/// Prefect's first line of a flow run, which the server gets in place of
/// the engine's "Created flow run" line.
pub(crate) fn beginning_line(flow_run: &str, flow: &str) -> String {
    format!("Beginning flow run '{flow_run}' for flow '{flow}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn info_by_default_as_prefect_sends() {
        assert_eq!(least_level_sent(settings(&[])), Some(Level::INFO));
    }

    #[test]
    fn the_stricter_of_the_logger_and_handler_levels() {
        let least = |pairs: &[(&str, &str)]| least_level_sent(settings(pairs));
        assert_eq!(
            least(&[("PREFECT_LOGGING_LEVEL", "WARNING")]),
            Some(Level::WARN)
        );
        assert_eq!(
            least(&[("PREFECT_LOGGING_LEVEL", "debug")]),
            Some(Level::DEBUG)
        );
        assert_eq!(
            least(&[
                ("PREFECT_LOGGING_LEVEL", "DEBUG"),
                ("PREFECT_LOGGING_HANDLERS_API_LEVEL", "40")
            ]),
            Some(Level::ERROR)
        );
        assert_eq!(
            least(&[("PREFECT_LOGGING_LEVEL", "nonsense")]),
            Some(Level::INFO)
        );
        assert_eq!(least(&[("PREFECT_LOGGING_TO_API_ENABLED", "False")]), None);
    }

    #[test]
    fn engine_lines_and_lines_below_the_level_stay_home() {
        let info = Some(Level::INFO);
        assert!(sent(info, "prefecto.task_runs", Level::INFO));
        assert!(sent(info, "prefecto.flow_runs", Level::ERROR));
        assert!(!sent(info, "prefecto.flow_runs", Level::DEBUG));
        assert!(!sent(info, ENGINE, Level::ERROR));
        assert!(!sent(None, "prefecto.task_runs", Level::ERROR));
    }
}
