//! Run history in an embedded SQLite database, on by default.
//!
//! Every flow run, task run, state transition and engine log line goes to
//! `$PREFECTO_HOME/prefecto.db` (`~/.prefecto` by default) through a
//! background writer that batches them into transactions, off the engine's hot
//! path. A flow run's history is flushed before its flow call returns.
//! `PREFECTO_HISTORY=off`, or `history(false)` on the
//! [`Prefecto`](crate::Prefecto) builder, turns recording off.
//!
//! The database is in WAL mode with a busy timeout, so several processes can
//! run flows against it at once. Its schema has a version; opening a database
//! written by a newer prefecto is an error, never a silent downgrade.

mod backlog;
mod crashed;
mod event;
mod fold;
mod full_disk;
mod history_recorder;
mod lane_pack;
mod left_over;
mod outbox;
mod pack;
mod plain_ends;
mod query;
mod rows;
mod running_runs;
mod schema;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::Connection;
use thiserror::Error;

pub use history_recorder::HistoryRecorder;
pub use rows::{Delivery, FlowRunRow, LogRow, StateRecord, TaskRunRecord, TaskRunRow, UpstreamRow};
pub use schema::SCHEMA_VERSION;

/// The database's file name inside the home folder.
pub const DB_FILE: &str = "prefecto.db";

/// Why the run history could not be opened or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The home folder could not be created.
    #[error("cannot create the prefecto home folder {path}: {source}")]
    CreateHome {
        /// The folder.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The database does not exist (read-only commands do not create it).
    #[error("no run history at {0}: no flow has run with this PREFECTO_HOME yet")]
    Missing(PathBuf),
    /// The database was written by a newer prefecto.
    #[error(
        "the run history at {path} has schema version {found}, newer than the {supported} \
         this prefecto understands: upgrade prefecto, or point PREFECTO_HOME elsewhere"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// The database is too old to read without upgrading it, and it was
    /// opened for reading only.
    #[error(
        "the run history at {path} has schema version {found}, older than this prefecto \
         reads without upgrading it: run any flow (or `prefecto flow-run sync`) with write \
         access to upgrade it"
    )]
    NeedsUpgrade {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
    },
    /// SQLite refused an operation.
    #[error("run history database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The thread that writes the history could not start.
    #[error("cannot start the run history writer thread: {0}")]
    WriterThread(std::io::Error),
    /// Stored history that cannot be read back.
    #[error("run history database {path}: cannot read {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What could not be read, and why.
        what: String,
    },
    /// No flow run has that name or id.
    #[error("no flow run named or with id '{0}'")]
    NoSuchFlowRun(String),
}

/// An open run history database.
///
/// ```
/// use prefecto::prelude::*;
/// use prefecto::store::{self, Store};
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn my_flow() -> String {
///     add.map(vec![1, 2], vec![3, 4]).unwrap().wait();
///     prefecto::flow::current_flow_run().unwrap().name
/// }
///
/// let home = std::env::temp_dir().join(format!("prefecto-doc-{}", std::process::id()));
/// let prefecto = Prefecto::builder().engine_only().history_in(&home).build().unwrap();
/// let name = prefecto.scope(|| my_flow()).unwrap();
///
/// let store = Store::open_existing(home.join(store::DB_FILE)).unwrap();
/// let run = store.flow_run(&name).unwrap();
/// assert_eq!(run.state_type.as_api_str(), "COMPLETED");
/// let task_runs = store.task_runs(run.id, None).unwrap();
/// assert_eq!(task_runs.len(), 2);
/// assert_eq!(task_runs[1].name, "add-1");
/// # drop((store, prefecto)); let _ = std::fs::remove_dir_all(&home);
/// ```
pub struct Store {
    path: PathBuf,
    conn: Connection,
    /// Opened for reading only: nothing is ever written, and runs whose
    /// process is gone are shown `Crashed` rather than marked so.
    read_only: bool,
    /// The schema version found (older ones can be read, not written).
    schema_version: i64,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrating it forward.
    ///
    /// Another process creating or migrating the same database at the same
    /// moment can hold locks that SQLite's busy timeout does not wait out (a
    /// journal-mode change, say), so a busy open is tried again for a while.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut pause = Duration::from_millis(5);
        loop {
            match Store::open_once(path) {
                Err(StoreError::Sqlite { source, .. })
                    if is_busy(&source) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateHome {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut store = Store {
            path,
            conn,
            read_only: false,
            schema_version: SCHEMA_VERSION,
        };
        store.configure()?;
        schema::migrate(&mut store.conn, &store.path)?;
        Ok(store)
    }

    /// Opens an existing database for reading only: what the `prefecto`
    /// command's read commands use, so that they work on a read-only
    /// filesystem or a database they may not write, and never change it.
    ///
    /// ```
    /// use prefecto::prelude::*;
    /// use prefecto::store::{self, Store};
    ///
    /// #[flow]
    /// fn noop() {}
    ///
    /// let home = std::env::temp_dir().join(format!("prefecto-doc-ro-{}", std::process::id()));
    /// Prefecto::builder().engine_only().history_in(&home).build().unwrap().scope(noop).unwrap();
    ///
    /// let store = Store::open_read_only(home.join(store::DB_FILE)).unwrap();
    /// assert_eq!(store.flow_runs(10, None, None).unwrap().len(), 1);
    /// # drop(store); let _ = std::fs::remove_dir_all(&home);
    /// ```
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(StoreError::Missing(path));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let uri = |query: &str| {
            let mut uri = url_path(&path);
            uri.push_str(query);
            uri
        };
        // A WAL database on read-only media cannot get its shared-memory
        // file; opened as immutable it is read as it stands.
        let conn = Connection::open_with_flags(uri("?mode=ro"), flags)
            .and_then(|conn| {
                conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))
                    .map(|_| conn)
            })
            .or_else(|_| Connection::open_with_flags(uri("?mode=ro&immutable=1"), flags))
            .map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let _ = conn.busy_timeout(Duration::from_secs(30));
        let schema_version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                source,
            })?;
        schema::check_readable(&path, schema_version)?;
        Ok(Store {
            path,
            conn,
            read_only: true,
            schema_version,
        })
    }

    /// Opens an existing database; a missing one is [`StoreError::Missing`].
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        Store::open(path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        // Several processes may write at once: WAL lets readers and one writer
        // proceed together, and the busy timeout makes writers wait their turn.
        let conn = &self.conn;
        conn.busy_timeout(Duration::from_secs(30))
            .and_then(|_| {
                let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    conn.pragma_update(None, "journal_mode", "WAL")?;
                }
                conn.pragma_update(None, "synchronous", "NORMAL")
            })
            .map_err(|source| self.sqlite(source))
    }

    pub(crate) fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// `path` as the path part of an SQLite `file:` URI.
fn url_path(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'?' | b'#' | b'%' => uri.push_str(&format!("%{byte:02X}")),
            byte => uri.push(byte as char),
        }
    }
    uri
}

/// The database of the home folder the environment names:
/// `$PREFECTO_HOME/prefecto.db`, else `~/.prefecto/prefecto.db`.
pub fn default_path() -> PathBuf {
    crate::settings::Settings::from_env().home.join(DB_FILE)
}

/// This machine's name, for telling whether a run's process is still alive.
pub(crate) fn hostname() -> &'static str {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    HOSTNAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(system_hostname)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// The name the system gives itself, where there is no `/proc` (macOS, the BSDs).
#[cfg(unix)]
fn system_hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return None;
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8(buffer[..end].to_vec()).ok()
}

/// Windows names the machine in the environment.
#[cfg(not(unix))]
fn system_hostname() -> Option<String> {
    std::env::var("COMPUTERNAME").ok()
}
