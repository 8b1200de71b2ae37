//! The schema and its forward migrations, tracked in SQLite's `user_version`.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::StoreError;

/// One step of the schema: SQL, or (for moving data between forms) Rust.
enum Migration {
    Sql(&'static str),
    Rust(fn(&Transaction<'_>) -> rusqlite::Result<()>),
}

use Migration::{Rust, Sql};

/// Each entry takes the schema from its index to the next version.
const MIGRATIONS: &[Migration] = &[
    // Version 1. Times are Unix microseconds. `history` holds every state
    // transition of the run, one JSON array per line:
    // [type, name, message, timestamp]. A run's transitions are appended in
    // one write per batch rather than a row each.
    Sql("
    CREATE TABLE flow_runs (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        flow          TEXT NOT NULL,
        state_type    TEXT NOT NULL,
        state_name    TEXT NOT NULL,
        state_message TEXT,
        created       INTEGER NOT NULL,
        start_time    INTEGER,
        end_time      INTEGER,
        host          TEXT NOT NULL,
        pid           INTEGER NOT NULL,
        history       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX flow_runs_by_created ON flow_runs (created);
    CREATE INDEX flow_runs_by_name ON flow_runs (name);

    CREATE TABLE task_runs (
        flow_run_id   TEXT NOT NULL,
        task          TEXT NOT NULL,
        idx           INTEGER NOT NULL,
        state_type    TEXT NOT NULL,
        state_name    TEXT NOT NULL,
        state_message TEXT,
        created       INTEGER NOT NULL,
        start_time    INTEGER,
        end_time      INTEGER,
        run_count     INTEGER NOT NULL DEFAULT 0,
        history       TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (flow_run_id, task, idx)
    ) WITHOUT ROWID;

    CREATE TABLE logs (
        flow_run_id TEXT NOT NULL,
        task        TEXT,
        idx         INTEGER,
        level       TEXT NOT NULL,
        logger      TEXT NOT NULL,
        message     TEXT NOT NULL,
        timestamp   INTEGER NOT NULL
    );
    CREATE INDEX logs_by_flow_run ON logs (flow_run_id);
    "),
    // Version 2: persisted results, by task and cache key, for resuming.
    Sql("
    CREATE TABLE results (
        task      TEXT NOT NULL,
        cache_key TEXT NOT NULL,
        value     TEXT NOT NULL,
        created   INTEGER NOT NULL,
        expires   INTEGER,
        PRIMARY KEY (task, cache_key)
    ) WITHOUT ROWID;
    "),
    // Version 3: finished task runs stored many to a row. At a million runs a
    // row each costs more than the runs; a chunk is one JSON line per run.
    Sql("
    CREATE TABLE task_run_chunks (
        flow_run_id TEXT NOT NULL,
        runs        INTEGER NOT NULL,
        body        TEXT NOT NULL
    );
    CREATE INDEX task_run_chunks_by_flow_run ON task_run_chunks (flow_run_id);
    "),
    // Version 4: flow runs a Prefect server did not get whole, for `prefecto flow-run sync`.
    Sql("
    CREATE TABLE prefect_delivery (
        flow_run_id        TEXT PRIMARY KEY,
        api_url            TEXT NOT NULL,
        server_flow_run_id TEXT,
        parameters         TEXT NOT NULL DEFAULT '{}',
        delivered          INTEGER NOT NULL DEFAULT 0,
        reason             TEXT
    );
    "),
    // Version 5: finished task runs packed in a compact binary form, by flow
    // run and task (see `pack.rs`): about a dozen bytes a run instead of a
    // JSON line's hundred.
    Sql("
    CREATE TABLE task_run_packs (
        flow_run_id TEXT NOT NULL,
        task        TEXT NOT NULL,
        runs        INTEGER NOT NULL,
        body        BLOB NOT NULL
    );
    CREATE INDEX task_run_packs_by_flow_run ON task_run_packs (flow_run_id);
    "),
    // Version 6: version 3's JSON chunks become plain task-run rows, which
    // every reader reads; the chunk table goes, and its reader with it.
    Rust(unchunk),
    // Version 7: the runs each task run depended on (the futures it was
    // given, its `wait_for`), one row per edge; most runs have none.
    Sql("
    CREATE TABLE task_run_inputs (
        flow_run_id TEXT NOT NULL,
        task        TEXT NOT NULL,
        idx         INTEGER NOT NULL,
        input       TEXT NOT NULL,
        upstream    TEXT NOT NULL
    );
    CREATE INDEX task_run_inputs_by_flow_run ON task_run_inputs (flow_run_id);
    "),
    // Version 8: which process (`host:pid`) is delivering a flow run an
    // earlier process left undelivered, so that two do not both send it.
    Sql("
    ALTER TABLE prefect_delivery ADD COLUMN claimed_by TEXT;
    "),
    // Version 9: how each pack's runs are written (`pack::PackFormat`): the
    // packs already stored are untagged; packs from now on tag each run, and
    // a quick run takes five bytes instead of eleven.
    Sql("
    ALTER TABLE task_run_packs ADD COLUMN format INTEGER NOT NULL DEFAULT 1;
    "),
    // Version 10: packs may be written compact (format 3,
    // `pack::PackFormat::Compact`: a quick run of the next number in two or
    // three bytes). The tables stay as they are; the version is what tells
    // an earlier build that it cannot read the packs, before it fails on one.
    Rust(|_| Ok(())),
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The oldest schema a read-only reader can read as it stands: version 6
/// dropped the chunk format; version 7 only added the upstream edges.
const OLDEST_READABLE: i64 = 6;

/// Whether a database of `version` can be read without migrating it.
pub(super) fn check_readable(path: &Path, version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < OLDEST_READABLE {
        return Err(StoreError::NeedsUpgrade {
            path: path.to_path_buf(),
            found: version,
        });
    }
    Ok(())
}

/// The column that says how a pack of a database of `version` is written:
/// before version 9 every pack was untagged.
pub(super) fn pack_format_column(version: i64) -> &'static str {
    if version >= 9 { "format" } else { "1" }
}

/// Whether a database of `version` records upstream runs.
pub(super) fn has_upstream(version: i64) -> bool {
    version >= 7
}

/// Brings the database to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sqlite = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    // IMMEDIATE takes the write lock first, so two processes opening a new
    // database at once cannot both apply the same migration.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for migration in &MIGRATIONS[found as usize..] {
        match migration {
            Sql(sql) => tx.execute_batch(sql),
            Rust(step) => step(&tx),
        }
        .map_err(sqlite)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

/// A task run as a line of a version-3 chunk holds it: task, index, state
/// type, name and message, created, start and end (µs), run count, history.
type ChunkLine = (
    String,
    u64,
    String,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
    u32,
    Vec<(String, String, Option<String>, i64)>,
);

/// Version 6: every line of every chunk becomes a `task_runs` row, its
/// history in the rows' form (one JSON array a line; empty when its times
/// imply it, as in a pack).
fn unchunk(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let chunks: Vec<(String, String)> = tx
        .prepare("SELECT flow_run_id, body FROM task_run_chunks ORDER BY rowid")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut insert = tx.prepare(
        "INSERT OR IGNORE INTO task_runs (flow_run_id, task, idx, state_type, state_name,
             state_message, created, start_time, end_time, run_count, history)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for (flow_run_id, body) in &chunks {
        for line in body.lines() {
            let unreadable = |e: serde_json::Error| {
                rusqlite::Error::ToSqlConversionFailure(
                    format!("a task-run chunk of flow run {flow_run_id}: {e}").into(),
                )
            };
            let (task, index, state_type, name, message, created, start, end, run_count, states): ChunkLine =
                serde_json::from_str(line).map_err(unreadable)?;
            let mut history = String::new();
            for state in &states {
                history.push_str(&serde_json::to_string(state).map_err(unreadable)?);
                history.push('\n');
            }
            insert.execute(params![
                flow_run_id,
                task,
                index as i64,
                state_type,
                name,
                message,
                created,
                start,
                end,
                run_count,
                history
            ])?;
        }
    }
    drop(insert);
    tx.execute_batch("DROP TABLE task_run_chunks;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A database path in a fresh folder, removed when the test ends.
    struct TempDb {
        dir: std::path::PathBuf,
        path: std::path::PathBuf,
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn temp_db(name: &str) -> TempDb {
        let dir =
            std::env::temp_dir().join(format!("prefecto-schema-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("prefecto.db");
        TempDb { dir, path }
    }

    #[test]
    fn a_new_database_gets_the_current_version() {
        let db = temp_db("new");
        let path = db.path.clone();
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(store);
        // Opening again is a no-op.
        Store::open(&path).unwrap();
    }

    #[test]
    fn an_older_database_is_migrated_forward() {
        let db = temp_db("older");
        let path = db.path.clone();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        let Sql(first) = MIGRATIONS[0] else {
            unreachable!("version 1 is SQL")
        };
        conn.execute_batch(first).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO flow_runs (id, name, flow, state_type, state_name, created, host, pid)
             VALUES ('00000000-0000-4000-8000-00000000000a', 'old-run', 'f', 'COMPLETED', 'Completed', 0, 'h', 1)",
            [],
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let results: i64 = store
            .conn
            .query_row("SELECT count(*) FROM results", [], |r| r.get(0))
            .unwrap();
        assert_eq!(results, 0);
        assert_eq!(store.flow_run("old-run").unwrap().flow, "f");
    }

    #[test]
    fn task_runs_chunked_as_json_lines_are_migrated_to_rows() {
        let db = temp_db("chunks");
        let path = db.path.clone();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let conn = Connection::open(&path).unwrap();
        for migration in &MIGRATIONS[..4] {
            let Sql(sql) = migration else {
                unreachable!("versions 1 to 4 are SQL")
            };
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 4).unwrap();
        conn.execute(
            "INSERT INTO flow_runs (id, name, flow, state_type, state_name, created, host, pid)
             VALUES ('00000000-0000-4000-8000-00000000000a', 'chunked-run', 'f', 'COMPLETED', 'Completed', 0, 'h', 1)",
            [],
        )
        .unwrap();
        // Two runs as version 3 wrote them: one seen whole, one retried.
        let body = concat!(
            r#"["add",0,"COMPLETED","Completed",null,100,110,120,1,[]]"#,
            "\n",
            r#"["add",1,"FAILED","Failed","boom",101,111,150,2,[["PENDING","Pending",null,101],"#,
            r#"["RUNNING","Running",null,111],["SCHEDULED","AwaitingRetry","boom",120],"#,
            r#"["RUNNING","Retrying",null,130],["FAILED","Failed","boom",150]]]"#,
            "\n"
        );
        conn.execute(
            "INSERT INTO task_run_chunks (flow_run_id, runs, body) VALUES ('00000000-0000-4000-8000-00000000000a', 2, ?1)",
            [body],
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let id: uuid::Uuid = "00000000-0000-4000-8000-00000000000a".parse().unwrap();
        let runs = store.task_runs_with_history(id).unwrap();
        assert_eq!(runs.len(), 2);
        let names: Vec<_> = runs[0].history.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["Pending", "Running", "Completed"]);
        assert_eq!(runs[1].row.state_message.as_deref(), Some("boom"));
        assert_eq!(runs[1].row.run_count, 2);
        assert_eq!(runs[1].history.len(), 5);
        assert_eq!(runs[1].history[2].name, "AwaitingRetry");
        assert_eq!(runs[1].history[2].message.as_deref(), Some("boom"));
        let chunk_tables: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'task_run_chunks'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(chunk_tables, 0, "the chunk table is gone");
    }

    #[test]
    fn packs_stored_untagged_before_version_9_still_read() {
        let db = temp_db("untagged");
        let path = db.path.clone();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..8] {
            match migration {
                Sql(sql) => tx.execute_batch(sql),
                Rust(step) => step(&tx),
            }
            .unwrap();
        }
        tx.pragma_update(None, "user_version", 8).unwrap();
        tx.commit().unwrap();
        conn.execute(
            "INSERT INTO flow_runs (id, name, flow, state_type, state_name, created, host, pid)
             VALUES ('00000000-0000-4000-8000-00000000000a', 'packed-run', 'f', 'COMPLETED', 'Completed', 0, 'h', 1)",
            [],
        )
        .unwrap();
        // Two runs as version 8 packed them: run 0 created at 10 µs, started
        // 3 µs and ended 40 µs later, Completed; run 1 a microsecond after,
        // Failed and named "Oops".
        let body: &[u8] = &[
            0, 20, 1, 6, 1, 80, 1, 3, 0, 0, 0, //
            2, 2, 1, 6, 1, 80, 1, 4, 1, 4, b'O', b'o', b'p', b's', 0, 0,
        ];
        conn.execute(
            "INSERT INTO task_run_packs (flow_run_id, task, runs, body)
             VALUES ('00000000-0000-4000-8000-00000000000a', 'add', 2, ?1)",
            [body],
        )
        .unwrap();
        drop(conn);
        let id: uuid::Uuid = "00000000-0000-4000-8000-00000000000a".parse().unwrap();
        let check = |store: &Store| {
            let runs = store.task_runs_with_history(id).unwrap();
            let seen: Vec<_> = runs
                .iter()
                .map(|r| (r.row.index, r.row.state_name.as_str(), r.created))
                .collect();
            assert_eq!(seen, [(0, "Completed", 10), (1, "Oops", 11)]);
            assert_eq!(runs[0].row.end_time.unwrap().timestamp_micros(), 50);
            let counts = store.task_run_counts(id).unwrap();
            assert_eq!(counts[&crate::state::StateType::Completed], 1);
            assert_eq!(counts[&crate::state::StateType::Failed], 1);
        };
        // Read as it stands, then migrated: the stored pack says it is untagged.
        check(&Store::open_read_only(&path).unwrap());
        let store = Store::open(&path).unwrap();
        check(&store);
        let format: i64 = store
            .conn
            .query_row("SELECT format FROM task_run_packs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(format, 1);
    }

    #[test]
    fn a_newer_database_is_refused_untouched() {
        let db = temp_db("newer");
        let path = db.path.clone();
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade prefecto"), "{err}");
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION + 1);
    }
}
