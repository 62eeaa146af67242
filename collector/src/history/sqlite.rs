//! The history on SQLite, the embedded default (`history_path`): one file in WAL mode, one
//! write connection owned by the writer thread, a read-only connection per query.
//!
//! Schema: `PRAGMA user_version` says which; opening a file of an older schema adds what is
//! missing (columns with defaults, tables, indexes) in one transaction, never dropping a row,
//! and a file of a newer schema is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::db::{Cell, Db, DbError, Param};

/// The schema this build writes (`PRAGMA user_version`).
/// 1: conditions, alert_events, actions. 2: alert_events.priority, actions.audit_hash, the
/// events table, and (node, time), (device, time) and (subject, time) indexes.
/// 3: alert_events.since_ms (indexed with the fingerprint: the alert's episodes, see
/// `write.rs`), events.dedup with its unique index, and `holders`.
pub(super) const SCHEMA_VERSION: i64 = 3;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conditions (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    subject TEXT NOT NULL,
    device TEXT NOT NULL,
    code TEXT NOT NULL,
    severity INTEGER NOT NULL,
    message TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    UNIQUE (node, subject, code, since_ms)
);
CREATE INDEX IF NOT EXISTS conditions_open ON conditions (node, ended_ms);
CREATE TABLE IF NOT EXISTS alert_events (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    node TEXT NOT NULL,
    subject TEXT NOT NULL,
    device TEXT NOT NULL,
    alertname TEXT NOT NULL,
    code TEXT NOT NULL,
    severity INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at_ms);
CREATE TABLE IF NOT EXISTS actions (
    node TEXT NOT NULL,
    action_id TEXT NOT NULL,
    device TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    message TEXT NOT NULL,
    caller TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (node, action_id)
);
CREATE INDEX IF NOT EXISTS actions_started ON actions (started_ms);
";

/// What schema 2 adds to schema 1; run after the columns have been added.
const SCHEMA_2: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    spell INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    ended_ms INTEGER,
    node TEXT NOT NULL,
    subject TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    ref TEXT NOT NULL,
    caller TEXT NOT NULL,
    priority TEXT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_spell ON events (kind, node, ref) WHERE spell = 1;
CREATE INDEX IF NOT EXISTS events_at ON events (at_ms);
CREATE INDEX IF NOT EXISTS events_node ON events (node, at_ms);
CREATE INDEX IF NOT EXISTS alert_events_node ON alert_events (node, at_ms);
CREATE INDEX IF NOT EXISTS actions_node ON actions (node, started_ms);
CREATE INDEX IF NOT EXISTS conditions_since ON conditions (since_ms);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, at_ms);
CREATE INDEX IF NOT EXISTS alert_events_device ON alert_events (device, at_ms);
CREATE INDEX IF NOT EXISTS alert_events_subject ON alert_events (subject, at_ms);
CREATE INDEX IF NOT EXISTS actions_device ON actions (device, started_ms);
CREATE INDEX IF NOT EXISTS conditions_device ON conditions (device, since_ms);
CREATE INDEX IF NOT EXISTS conditions_subject ON conditions (subject, since_ms);
";

/// Columns schema 2 added to schema 1's tables: (table, column, definition).
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("alert_events", "priority", "TEXT NOT NULL DEFAULT ''"),
    ("actions", "audit_hash", "TEXT NOT NULL DEFAULT ''"),
    ("alert_events", "since_ms", "INTEGER NOT NULL DEFAULT 0"),
];

/// Columns schema 3 added to schema 2's `events`.
const ADDED_COLUMNS_3: [(&str, &str, &str); 1] = [("events", "dedup", "TEXT NOT NULL DEFAULT ''")];

/// What schema 3 adds: a transition or escalation seen by two collectors (a failover) or
/// again after a restart is one row; `holders` says which collector last had each node.
const SCHEMA_3: &str = "
CREATE INDEX IF NOT EXISTS alert_events_spell ON alert_events (fingerprint, since_ms);
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events (dedup) WHERE dedup <> '';
CREATE TABLE IF NOT EXISTS holders (
    node TEXT PRIMARY KEY,
    collector TEXT NOT NULL,
    seen_ms INTEGER NOT NULL
);
";

/// The writer's connection: the file opened (created if needed) for writing, in WAL mode, at
/// `SCHEMA_VERSION`. Fails, saying why, if it is not a SQLite file or holds a newer schema.
pub(super) fn open_for_writing(path: &Path) -> Result<SqliteDb, String> {
    if path.is_dir() {
        return Err("is a directory, expected a SQLite file".to_string());
    }
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open: {e}"))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    // The first statement to read the file: a corrupt or foreign file fails here.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| format!("not a usable SQLite database: {e}"))?;
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        return Err("opened read-only: the file or its directory is not writable".to_string());
    }
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode = %mode, "history database not in WAL mode; queries may wait on writes");
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| format!("not a usable SQLite database: {e}"))?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "written by a newer collector (schema {version}, this build knows {SCHEMA_VERSION})"
        ));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL;")
        .map_err(|e| e.to_string())?;
    migrate(&mut conn).map_err(|e| format!("cannot create or update the tables: {e}"))?;
    Ok(SqliteDb { conn })
}

/// Brings the file to `SCHEMA_VERSION` in one transaction: creates what does not exist, adds
/// the columns an older schema lacks (existing rows get their defaults).
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    add_columns(&tx, &ADDED_COLUMNS)?;
    tx.execute_batch(SCHEMA_2)?;
    add_columns(&tx, &ADDED_COLUMNS_3)?;
    tx.execute_batch(SCHEMA_3)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()
}

fn add_columns(conn: &Connection, columns: &[(&str, &str, &str)]) -> rusqlite::Result<()> {
    for (table, column, definition) in columns {
        let present: Option<i64> = conn
            .query_row(
                &format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![column],
                |row| row.get(0),
            )
            .optional()?;
        if present.is_none() {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// A read-only connection for one query.
pub(super) fn open_for_reading(path: &PathBuf) -> Result<SqliteDb, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(SqliteDb { conn })
}

/// A SQLite connection behind [`Db`]; statements are prepared once and cached.
pub(crate) struct SqliteDb {
    pub(super) conn: Connection,
}

impl SqliteDb {
    #[cfg(test)]
    pub(crate) fn in_memory() -> SqliteDb {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        migrate(&mut conn).expect("schema");
        SqliteDb { conn }
    }
}

fn values(params: &[Param<'_>]) -> Vec<Value> {
    params
        .iter()
        .map(|param| match param {
            Param::Int(value) => Value::Integer(*value),
            Param::Text(text) => Value::Text((*text).to_string()),
            Param::Null => Value::Null,
        })
        .collect()
}

fn failed(error: rusqlite::Error) -> DbError {
    // A busy or locked file is a moment's wait, not a bad record: retried like an outage.
    let busy = matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    DbError {
        message: error.to_string(),
        unavailable: busy,
    }
}

impl Db for SqliteDb {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(failed)?;
        let changed = statement
            .execute(rusqlite::params_from_iter(values(params)))
            .map_err(failed)?;
        Ok(changed as u64)
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Vec<Cell>>, DbError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(failed)?;
        let columns = statement.column_count();
        let rows = statement
            .query_map(rusqlite::params_from_iter(values(params)), |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Integer(value) => Cell::Int(value),
                            ValueRef::Text(text) => {
                                Cell::Text(String::from_utf8_lossy(text).into_owned())
                            }
                            ValueRef::Null => Cell::Null,
                            // Never written by the history; read as what it is closest to.
                            ValueRef::Real(value) => Cell::Int(value as i64),
                            ValueRef::Blob(_) => Cell::Null,
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })
            .map_err(failed)?;
        rows.collect::<rusqlite::Result<_>>().map_err(failed)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(failed)
    }

    fn row_id(&self) -> &'static str {
        "rowid"
    }
}
