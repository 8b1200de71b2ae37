//! Where a served flow leaves its return value for the parent that ran its
//! deployment: a folder both can reach (the same machine, or a shared
//! mount), one JSON file per flow run:
//!
//! ```text
//! $PREFECTO_RESULTS_DIR/flow-runs/<flow run id>.json   (default: $PREFECTO_HOME/results)
//! ```
//!
//! The file holds the value as `serde_json` writes it, and appears whole
//! (written aside, then renamed), so a reader never sees half of one.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use uuid::Uuid;

/// The environment variable naming the results folder.
pub const RESULTS_DIR_ENV: &str = "PREFECTO_RESULTS_DIR";

/// The results folder: `PREFECTO_RESULTS_DIR`, else `results` in the
/// prefecto home (`PREFECTO_HOME`, else `~/.prefecto`).
///
/// ```
/// let dir = prefecto::deployments::results_dir();
/// assert!(dir.is_absolute() || std::env::var_os("PREFECTO_RESULTS_DIR").is_some());
/// ```
pub fn results_dir() -> PathBuf {
    match std::env::var_os(RESULTS_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => crate::Settings::from_env().home.join("results"),
    }
}

fn file_of(dir: &Path, flow_run: Uuid) -> PathBuf {
    dir.join("flow-runs").join(format!("{flow_run}.json"))
}

/// Leaves `value` as flow run `flow_run`'s result.
pub(crate) fn write(dir: &Path, flow_run: Uuid, value: &Value) -> io::Result<PathBuf> {
    let file = file_of(dir, flow_run);
    let folder = file.parent().expect("a result file is in a folder");
    std::fs::create_dir_all(folder)?;
    let aside = folder.join(format!(".{flow_run}.json.{}", std::process::id()));
    std::fs::write(&aside, serde_json::to_vec(value)?)?;
    std::fs::rename(&aside, &file)?;
    Ok(file)
}

/// Flow run `flow_run`'s result, if it left one.
pub(crate) fn read(dir: &Path, flow_run: Uuid) -> io::Result<Option<Value>> {
    match std::fs::read(file_of(dir, flow_run)) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_back_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("prefecto-results-{}", Uuid::new_v4()));
        let run = Uuid::new_v4();
        assert_eq!(read(&dir, run).unwrap(), None);
        let written = write(&dir, run, &serde_json::json!({"sum": 3})).unwrap();
        assert!(written.ends_with(format!("flow-runs/{run}.json")));
        assert_eq!(
            read(&dir, run).unwrap(),
            Some(serde_json::json!({"sum": 3}))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
