//! Flow runs whose process is gone: marked `Crashed` when the history is
//! read, since no one else is left to end them.

use chrono::Utc;
use rusqlite::params;

use super::{Store, StoreError, hostname};

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
            let message = format!(
                "The process that ran this flow run (pid {pid} on {host}) is gone; it ended without finishing the run."
            );
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

fn process_alive(pid: u32) -> bool {
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
