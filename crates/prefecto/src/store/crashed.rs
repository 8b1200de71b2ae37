//! Flow runs whose process is gone: marked `Crashed` when the history is
//! read, since no one else is left to end them; shown `Crashed`, without
//! writing, by a reader that may not write.

use chrono::Utc;
use rusqlite::params;

use super::rows::{FlowRunRow, TaskRunRecord};
use super::{Store, StoreError, hostname};
use crate::state::StateType;

impl Store {
    /// Marks as `Crashed` the unfinished flow runs of this machine whose process
    /// is gone (killed, say, with SIGKILL), with their unfinished task runs.
    pub fn mark_crashed(&self) -> Result<usize, StoreError> {
        let host = hostname();
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, pid FROM flow_runs
                 WHERE host = ?1 AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')",
            )
            .map_err(|e| self.sqlite(e))?;
        let unfinished: Vec<(String, u32)> = statement
            .query_map(params![host], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.sqlite(e))?;
        let mut marked = 0;
        for (id, pid) in unfinished {
            if process_alive(pid) {
                continue;
            }
            let message = crash_message(pid, host);
            let now = Utc::now().timestamp_micros();
            let line = format!(
                "{}\n",
                serde_json::json!(["CRASHED", "Crashed", message, now])
            );
            self.conn
                .execute(
                    "UPDATE flow_runs SET state_type = 'CRASHED', state_name = 'Crashed',
                        state_message = ?2, end_time = ?3, history = history || ?4
                     WHERE id = ?1 AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')",
                    params![id, message, now, line],
                )
                .and_then(|_| {
                    self.conn.execute(
                        "UPDATE task_runs SET state_type = 'CRASHED', state_name = 'Crashed',
                            state_message = ?2, end_time = ?3, history = history || ?4
                         WHERE flow_run_id = ?1 AND state_type IN ('PENDING', 'RUNNING', 'SCHEDULED')",
                        params![id, message, now, line],
                    )
                })
                .map_err(|e| self.sqlite(e))?;
            marked += 1;
        }
        Ok(marked)
    }
}

fn crash_message(pid: u32, host: &str) -> String {
    format!(
        "The process that ran this flow run (pid {pid} on {host}) is gone without recording how the run ended: it was killed, or could not write the run history (a full disk)."
    )
}

fn is_unfinished(state_type: StateType) -> bool {
    matches!(
        state_type,
        StateType::Pending | StateType::Running | StateType::Scheduled
    )
}

/// Whether an unfinished run of `host` and `pid` has lost its process.
fn is_gone(state_type: StateType, host: &str, pid: u32) -> bool {
    is_unfinished(state_type) && host == hostname() && !process_alive(pid)
}

/// Shows a flow run whose process is gone as `Crashed`, as
/// [`Store::mark_crashed`] would have marked it. True if it did.
pub(super) fn present_crashed(row: &mut FlowRunRow) -> bool {
    if !is_gone(row.state_type, &row.host, row.pid) {
        return false;
    }
    row.state_type = StateType::Crashed;
    row.state_name = "Crashed".to_string();
    row.state_message = Some(crash_message(row.pid, &row.host));
    true
}

/// Shows the unfinished task runs of a flow run whose process is gone as `Crashed`.
pub(super) fn present_crashed_task_runs(flow_run: &FlowRunRow, task_runs: &mut [TaskRunRecord]) {
    for record in task_runs {
        if is_unfinished(record.row.state_type) {
            record.row.state_type = StateType::Crashed;
            record.row.state_name = "Crashed".to_string();
            record.row.state_message = flow_run.state_message.clone();
        }
    }
}

pub(super) fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    process_exists(pid)
}

#[cfg(target_os = "linux")]
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(all(unix, not(target_os = "linux")))]
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // Signal 0 only asks whether the process exists; EPERM says it does,
    // under another user.
    // SAFETY: kill with signal 0 sends nothing and touches no memory.
    unsafe { libc::kill(pid, 0) == 0 }
    || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Where liveness cannot be asked, a run is never taken for crashed.
#[cfg(not(unix))]
fn process_exists(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has: that of a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_only_reader_shows_a_gone_process_crashed_and_writes_nothing() {
        let home = std::env::temp_dir().join(format!("prefecto-crashed-ro-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let path = home.join(super::super::DB_FILE);
        let store = Store::open(&path).unwrap();
        let pid = dead_pid();
        store
            .conn
            .execute(
                "INSERT INTO flow_runs (id, name, flow, state_type, state_name, created, host, pid)
                 VALUES ('00000000-0000-0000-0000-000000000001', 'gone-run', 'f', 'RUNNING',
                         'Running', 1, ?1, ?2)",
                params![hostname(), pid],
            )
            .unwrap();
        drop(store);

        // Every read of a reader that may not write: SQLite refuses any write.
        let reader = Store::open_read_only(&path).unwrap();
        let runs = reader.flow_runs(10, None, None).unwrap();
        assert_eq!(runs[0].state_name, "Crashed");
        assert!(
            runs[0]
                .state_message
                .as_deref()
                .unwrap()
                .contains(&format!("pid {pid}"))
        );
        assert_eq!(
            reader.flow_runs(10, Some("CRASHED"), None).unwrap().len(),
            1
        );
        assert!(
            reader
                .flow_runs(10, Some("RUNNING"), None)
                .unwrap()
                .is_empty()
        );
        let run = reader.flow_run("gone-run").unwrap();
        assert_eq!(run.state_name, "Crashed");
        reader.task_runs(run.id, None).unwrap();
        reader.logs(run.id).unwrap();

        // Nothing was written: the stored state is still the one left behind.
        let raw = Store::open_read_only(&path).unwrap();
        let stored: String = raw
            .conn
            .query_row("SELECT state_type FROM flow_runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, "RUNNING");
        let _ = std::fs::remove_dir_all(&home);
    }
}
