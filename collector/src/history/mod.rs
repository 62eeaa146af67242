//! The collector's history: conditions (from when to when), alert transitions (pending,
//! firing, resolved, cleared, with their priority), the actions agents ran (with their audit
//! hash), and the generic events of `events.rs` (maintenance, silences, escalations,
//! restarts, notes), kept in an embedded SQLite file (`history_path`) for `QueryHistory` /
//! `agent-ctl history` (`query.rs`), across collector restarts.
//!
//! Ingest never waits on the disk: the alert book hands records to a `HistorySink`, which
//! `try_send`s them into a bounded channel; when the channel is full the record is dropped
//! and counted. One dedicated thread owns the write connection: it takes whatever has
//! queued (up to `BATCH` records) and writes it in one transaction, in WAL mode so queries
//! (each on its own read-only connection, on the blocking pool) run beside it. The same
//! thread deletes rows older than `history_retention` at start and then periodically.
//!
//! A condition row is keyed by (node, subject, code, since): the agent keeps a condition's
//! `since` across polls and reports, so the same condition seen again after a collector
//! restart is the same row. When a node is first seen after a restart, its rows still open
//! but no longer reported are closed (`node_seen`): they ended while the collector was away.
//!
//! Schema: `PRAGMA user_version` says which; opening a file of an older schema adds what is
//! missing (columns with defaults, tables, indexes) in one transaction, never dropping a row.
//!
//! Only WARNING and CRITICAL conditions are recorded: they are what alerts are made of, and
//! INFO conditions would multiply the rows without helping an investigation.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use health_proto::v1::{ActionOutcome, ActionResult, Alert, HistoryKind};
use prost_types::Timestamp;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::priority::Priority;

mod events;
mod query;
mod write;
pub use events::{HistoryEvent, MaintenanceSpells};
pub use query::{HistoryQuery, HistoryReader};
use write::{prune, write_batch};

/// Records written per transaction at most.
const BATCH: usize = 1000;
/// How long the writer waits for a record before looking at the stop flag and the pruning
/// schedule again.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Most rows one query returns, and the number when the request says 0.
pub const MAX_LIMIT: u32 = 10_000;
pub const DEFAULT_LIMIT: u32 = 100;
/// The schema this build writes (`PRAGMA user_version`).
/// 1: conditions, alert_events, actions. 2: alert_events.priority, actions.audit_hash, the
/// events table, and (node, time), (device, time) and (subject, time) indexes.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
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
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [
    ("alert_events", "priority", "TEXT NOT NULL DEFAULT ''"),
    ("actions", "audit_hash", "TEXT NOT NULL DEFAULT ''"),
];

/// An alert's step, as written to the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertTransition {
    Pending,
    Firing,
    Resolved,
    /// Was pending, and the condition went away before its `for` passed: it never fired.
    Cleared,
}

impl AlertTransition {
    fn as_str(self) -> &'static str {
        match self {
            AlertTransition::Pending => "PENDING",
            AlertTransition::Firing => "FIRING",
            AlertTransition::Resolved => "RESOLVED",
            AlertTransition::Cleared => "CLEARED",
        }
    }
}

/// One change for the writer thread.
#[derive(Debug)]
enum Record {
    ConditionStarted {
        node: String,
        subject: String,
        device: String,
        code: String,
        severity: i32,
        message: String,
        since_ms: i64,
    },
    ConditionEnded {
        node: String,
        subject: String,
        code: String,
        at_ms: i64,
    },
    /// The node's first report since this collector started, with the conditions it has.
    NodeSeen {
        node: String,
        active: Vec<(String, String)>,
        at_ms: i64,
    },
    Alert {
        fingerprint: String,
        node: String,
        subject: String,
        device: String,
        alertname: String,
        code: String,
        severity: i32,
        status: &'static str,
        message: String,
        at_ms: i64,
        priority: String,
    },
    Action {
        node: String,
        action_id: String,
        device: String,
        action: String,
        outcome: String,
        message: String,
        caller: String,
        started_ms: i64,
        duration_ms: i64,
        audit_hash: String,
    },
    Event(HistoryEvent),
    /// A spell (see `events.rs`) closed by id.
    SpellEnded {
        kind: HistoryKind,
        node: String,
        id: String,
        at_ms: i64,
    },
    /// The node's first report since this collector started, with the spells it carries.
    SpellsSeen {
        kind: HistoryKind,
        node: String,
        open: Vec<String>,
        at_ms: i64,
    },
}

/// Counters of the history path, for logs and metrics.
#[derive(Debug, Default)]
pub struct HistoryStats {
    /// Records not queued because the writer was behind (the channel was full).
    pub dropped_total: AtomicU64,
    /// Records written.
    pub written_total: AtomicU64,
    /// Batches whose transaction failed (disk full, I/O error); their records are lost.
    pub write_errors_total: AtomicU64,
    /// Rows deleted by retention.
    pub pruned_total: AtomicU64,
}

/// The alert book's handle on the history: every method returns at once.
#[derive(Clone)]
pub struct HistorySink {
    records: SyncSender<Record>,
    stats: Arc<HistoryStats>,
}

impl HistorySink {
    pub fn condition_started(&self, alert: &Alert) {
        self.send(Record::ConditionStarted {
            node: alert.node.clone(),
            subject: alert.subject.clone(),
            device: alert.device.clone(),
            code: alert.name.clone(),
            severity: alert.severity,
            message: alert.message.clone(),
            since_ms: alert.starts_at.as_ref().map_or(0, timestamp_ms),
        });
    }

    pub fn condition_ended(&self, alert: &Alert, now: SystemTime) {
        self.send(Record::ConditionEnded {
            node: alert.node.clone(),
            subject: alert.subject.clone(),
            code: alert.name.clone(),
            at_ms: system_ms(now),
        });
    }

    pub fn node_seen<'a>(
        &self,
        node: &str,
        active: impl Iterator<Item = &'a Alert>,
        now: SystemTime,
    ) {
        self.send(Record::NodeSeen {
            node: node.to_string(),
            active: active
                .map(|alert| (alert.subject.clone(), alert.name.clone()))
                .collect(),
            at_ms: system_ms(now),
        });
    }

    pub fn alert(&self, alert: &Alert, transition: AlertTransition, now: SystemTime) {
        self.send(Record::Alert {
            fingerprint: alert.fingerprint.clone(),
            node: alert.node.clone(),
            subject: alert.subject.clone(),
            device: alert.device.clone(),
            alertname: alert.alertname.clone(),
            code: alert.name.clone(),
            severity: alert.severity,
            status: transition.as_str(),
            message: alert.message.clone(),
            at_ms: system_ms(now),
            priority: alert.priority.clone(),
        });
    }

    /// An alert escalated from `from` (to its current priority) after firing for `after`.
    pub fn escalation(&self, alert: &Alert, from: Priority, after: Duration, now: SystemTime) {
        self.event(HistoryEvent {
            name: alert.alertname.clone(),
            status: "ESCALATED".to_string(),
            message: format!(
                "{} escalated from {from} to {} after firing for {}",
                alert.alertname,
                alert.priority,
                humantime::format_duration(after)
            ),
            id: alert.fingerprint.clone(),
            priority: alert.priority.clone(),
            ..HistoryEvent::new(HistoryKind::Escalation, now, &alert.node, &alert.subject)
        });
    }

    /// Writes a generic event (see `HistoryEvent`): a point in time, or for MAINTENANCE and
    /// SILENCE a spell created or updated by `id`, closed when `ended_at` is set.
    pub fn event(&self, event: HistoryEvent) {
        self.send(Record::Event(event));
    }

    /// Closes the spell `id` of `kind` on `node` (if open) at `now`: status ENDED.
    pub fn spell_ended(&self, kind: HistoryKind, node: &str, id: &str, now: SystemTime) {
        self.send(Record::SpellEnded {
            kind,
            node: node.to_string(),
            id: id.to_string(),
            at_ms: system_ms(now),
        });
    }

    /// After a collector restart: the spells of `kind` still open for `node` other than `open`
    /// ended while the collector was away.
    pub fn spells_seen(&self, kind: HistoryKind, node: &str, open: Vec<String>, now: SystemTime) {
        self.send(Record::SpellsSeen {
            kind,
            node: node.to_string(),
            open,
            at_ms: system_ms(now),
        });
    }

    pub fn action(&self, node: &str, action: &ActionResult) {
        let outcome = ActionOutcome::try_from(action.outcome).map_or_else(
            |_| format!("OUTCOME_{}", action.outcome),
            |outcome| {
                outcome
                    .as_str_name()
                    .trim_start_matches("ACTION_OUTCOME_")
                    .to_string()
            },
        );
        self.send(Record::Action {
            node: node.to_string(),
            action_id: action.action_id.clone(),
            device: action.device_id.clone(),
            action: action.action.clone(),
            outcome,
            message: action.message.clone(),
            caller: action.caller.clone(),
            started_ms: action.started_at.as_ref().map_or(0, timestamp_ms),
            duration_ms: i64::try_from(action.duration_ms).unwrap_or(i64::MAX),
            audit_hash: action.audit_hash.clone(),
        });
    }

    fn send(&self, record: Record) {
        match self.records.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.stats.dropped_total.fetch_add(1, Ordering::Relaxed) + 1;
                // 1, 2, 4, 8, ...: visible without flooding the log while the disk is slow.
                if dropped.is_power_of_two() {
                    tracing::warn!(
                        dropped_total = dropped,
                        "history writer behind: records dropped"
                    );
                }
            }
            // The writer has stopped (shutdown): nothing more is kept.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Why the history database could not be used; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot use the history database (history_path): {reason}", path.display())]
pub struct HistoryError {
    pub path: PathBuf,
    pub reason: String,
}

/// The open history: its writer thread and a way to query it.
pub struct History {
    path: PathBuf,
    sink: HistorySink,
    stats: Arc<HistoryStats>,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl History {
    /// Opens (creating if needed) the database and starts its writer thread. Fails, naming
    /// the file, if it cannot be opened for writing, is not a SQLite database, or holds a
    /// newer schema.
    pub fn open(path: &Path, retention: Duration, queue: usize) -> Result<History, HistoryError> {
        let error = |reason: String| HistoryError {
            path: path.to_path_buf(),
            reason,
        };
        let conn = open_for_writing(path).map_err(error)?;
        let (records, inbox) = mpsc::sync_channel(queue.max(1));
        let stats = Arc::new(HistoryStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("history-writer".to_string())
                .spawn(move || write_loop(conn, inbox, retention, &stats, &stop))
                .map_err(|e| error(format!("cannot start the writer thread: {e}")))?
        };
        Ok(History {
            path: path.to_path_buf(),
            sink: HistorySink {
                records,
                stats: Arc::clone(&stats),
            },
            stats,
            stop,
            writer: Some(writer),
        })
    }

    pub fn sink(&self) -> HistorySink {
        self.sink.clone()
    }

    pub fn reader(&self) -> HistoryReader {
        HistoryReader {
            path: self.path.clone(),
        }
    }

    /// Writes what is queued and stops the writer; blocks until it has (call it from a
    /// blocking context at shutdown).
    pub fn close(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::warn!("history writer thread panicked");
            }
        }
        tracing::info!(
            written = self.stats.written_total.load(Ordering::Relaxed),
            dropped = self.stats.dropped_total.load(Ordering::Relaxed),
            write_errors = self.stats.write_errors_total.load(Ordering::Relaxed),
            pruned = self.stats.pruned_total.load(Ordering::Relaxed),
            "history closed"
        );
    }
}

fn open_for_writing(path: &Path) -> Result<Connection, String> {
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
    Ok(conn)
}

/// Brings the file to `SCHEMA_VERSION` in one transaction: creates what does not exist, adds
/// the columns an older schema lacks (existing rows get their defaults).
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    for (table, column, definition) in ADDED_COLUMNS {
        let present: Option<i64> = tx
            .query_row(
                &format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"),
                params![column],
                |row| row.get(0),
            )
            .optional()?;
        if present.is_none() {
            tx.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    tx.execute_batch(SCHEMA_2)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    tx.commit()
}

/// The writer thread: batches, transactions, retention, until stopped.
fn write_loop(
    mut conn: Connection,
    inbox: Receiver<Record>,
    retention: Duration,
    stats: &HistoryStats,
    stop: &AtomicBool,
) {
    let prune_every = (retention / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    let mut last_prune: Option<Instant> = None;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if !stopping {
            match inbox.recv_timeout(IDLE_WAIT) {
                Ok(record) => batch.push(record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        while batch.len() < BATCH {
            match inbox.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let count = batch.len() as u64;
            match write_batch(&mut conn, &batch) {
                Ok(()) => {
                    stats.written_total.fetch_add(count, Ordering::Relaxed);
                }
                Err(error) => {
                    stats.write_errors_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, records = count, "history write failed: records lost");
                }
            }
            batch.clear();
            continue;
        }
        if stopping {
            break;
        }
        if last_prune.is_none_or(|at| at.elapsed() >= prune_every) {
            last_prune = Some(Instant::now());
            match prune(&conn, SystemTime::now(), retention) {
                Ok(0) => {}
                Ok(rows) => {
                    stats.pruned_total.fetch_add(rows, Ordering::Relaxed);
                    tracing::info!(rows, retention = %humantime::format_duration(retention), "history pruned");
                }
                Err(error) => tracing::warn!(%error, "history pruning failed"),
            }
        }
    }
    tracing::debug!("history writer stopped");
}

pub(super) fn system_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

pub(super) fn timestamp_ms(at: &Timestamp) -> i64 {
    at.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(at.nanos / 1_000_000))
}

pub(super) fn ms_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_proto::v1::{HistoryEntry, Severity};

    use query::query_on;

    fn conn() -> Connection {
        let mut conn = Connection::open_in_memory().expect("in-memory database");
        migrate(&mut conn).expect("schema");
        conn
    }

    fn day_ms(days: i64) -> i64 {
        days * 24 * 3600 * 1000
    }

    fn started(node: &str, code: &str, since_ms: i64) -> Record {
        Record::ConditionStarted {
            node: node.to_string(),
            subject: "loihi-0".to_string(),
            device: "loihi-0".to_string(),
            code: code.to_string(),
            severity: Severity::Critical as i32,
            message: "91 C".to_string(),
            since_ms,
        }
    }

    fn ended(node: &str, code: &str, at_ms: i64) -> Record {
        Record::ConditionEnded {
            node: node.to_string(),
            subject: "loihi-0".to_string(),
            code: code.to_string(),
            at_ms,
        }
    }

    fn alert_event(at_ms: i64) -> Record {
        Record::Alert {
            fingerprint: "n1/loihi-0/THERMAL_CRITICAL".to_string(),
            node: "n1".to_string(),
            subject: "loihi-0".to_string(),
            device: "loihi-0".to_string(),
            alertname: "DeviceOverheating".to_string(),
            code: "THERMAL_CRITICAL".to_string(),
            severity: Severity::Critical as i32,
            status: "FIRING",
            message: "91 C".to_string(),
            at_ms,
            priority: "P0".to_string(),
        }
    }

    fn action(id: &str, started_ms: i64) -> Record {
        Record::Action {
            node: "n1".to_string(),
            action_id: id.to_string(),
            device: "loihi-0".to_string(),
            action: "reset-soft".to_string(),
            outcome: "SUCCEEDED".to_string(),
            message: String::new(),
            caller: "uid 0".to_string(),
            started_ms,
            duration_ms: 40,
            audit_hash: format!("hash-{id}"),
        }
    }

    fn write(conn: &mut Connection, records: Vec<Record>) {
        write_batch(conn, &records).expect("write");
    }

    fn all(conn: &Connection) -> Vec<HistoryEntry> {
        query_on(
            conn,
            &HistoryQuery {
                limit: MAX_LIMIT,
                ..Default::default()
            },
        )
        .expect("query")
    }

    #[test]
    fn retention_prunes_what_ended_before_the_cutoff_and_keeps_open_conditions() {
        let mut conn = conn();
        let now = UNIX_EPOCH + Duration::from_millis(u64::try_from(day_ms(100)).unwrap_or(0));
        write(
            &mut conn,
            vec![
                // Ended 40 days before `now`: gone with a 30-day retention.
                started("n1", "THERMAL_CRITICAL", day_ms(50)),
                ended("n1", "THERMAL_CRITICAL", day_ms(60)),
                // Began 60 days ago and still active: kept however old.
                started("n1", "CALIBRATION_DRIFT", day_ms(40)),
                // Ended 5 days ago: kept.
                started("n1", "DEVICE_MISSING", day_ms(90)),
                ended("n1", "DEVICE_MISSING", day_ms(95)),
                alert_event(day_ms(50)),
                alert_event(day_ms(99)),
                action("b-1", day_ms(10)),
                action("b-2", day_ms(99)),
            ],
        );
        assert_eq!(all(&conn).len(), 7);

        let deleted = prune(&conn, now, Duration::from_secs(30 * 24 * 3600)).expect("prune");
        assert_eq!(deleted, 3);
        let left: Vec<(String, String)> =
            all(&conn).into_iter().map(|e| (e.name, e.status)).collect();
        assert_eq!(
            left,
            vec![
                ("DeviceOverheating".to_string(), "FIRING".to_string()),
                ("reset-soft".to_string(), "SUCCEEDED".to_string()),
                ("DEVICE_MISSING".to_string(), "ENDED".to_string()),
                ("CALIBRATION_DRIFT".to_string(), "ACTIVE".to_string()),
            ]
        );
        // Nothing more to prune at the same instant.
        assert_eq!(
            prune(&conn, now, Duration::from_secs(30 * 24 * 3600)).expect("prune"),
            0
        );
    }

    #[test]
    fn the_same_condition_seen_again_is_one_row_and_a_restart_closes_what_ended_meanwhile() {
        let mut conn = conn();
        write(
            &mut conn,
            vec![
                started("n1", "THERMAL_CRITICAL", 1_000),
                started("n1", "DEVICE_MISSING", 1_000),
                // A collector restart: the node's first report still has THERMAL_CRITICAL
                // (same since), DEVICE_MISSING is gone.
                Record::NodeSeen {
                    node: "n1".to_string(),
                    active: vec![("loihi-0".to_string(), "THERMAL_CRITICAL".to_string())],
                    at_ms: 9_000,
                },
                started("n1", "THERMAL_CRITICAL", 1_000),
            ],
        );
        let rows = all(&conn);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let missing = rows
            .iter()
            .find(|e| e.name == "DEVICE_MISSING")
            .expect("DEVICE_MISSING row");
        assert_eq!(missing.status, "ENDED");
        assert_eq!(missing.ended_at, Some(ms_timestamp(9_000)));
        let thermal = rows
            .iter()
            .find(|e| e.name == "THERMAL_CRITICAL")
            .expect("THERMAL_CRITICAL row");
        assert_eq!(thermal.status, "ACTIVE");
    }

    #[test]
    fn actions_are_kept_once_per_id_and_queries_filter() {
        let mut conn = conn();
        write(
            &mut conn,
            vec![
                action("b-1", 1_000),
                action("b-1", 1_000),
                action("b-2", 2_000),
                alert_event(3_000),
            ],
        );
        let rows = all(&conn);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].kind, HistoryKind::Alert as i32, "newest first");
        let since = query_on(
            &conn,
            &HistoryQuery {
                since: Some(UNIX_EPOCH + Duration::from_millis(1_500)),
                ..Default::default()
            },
        )
        .expect("query");
        assert_eq!(since.len(), 2);
        let other_device = query_on(
            &conn,
            &HistoryQuery {
                device: Some("xbar-0".to_string()),
                ..Default::default()
            },
        )
        .expect("query");
        assert!(other_device.is_empty());
        let limited = query_on(
            &conn,
            &HistoryQuery {
                node: Some("n1".to_string()),
                limit: 1,
                ..Default::default()
            },
        )
        .expect("query");
        assert_eq!(limited.len(), 1);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.db");
        std::fs::write(&path, vec![0x5a_u8; 8192]).expect("write garbage");
        let error = History::open(&path, Duration::from_secs(3600), 16)
            .err()
            .expect("garbage is refused")
            .to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains("not a usable SQLite database"), "{error}");
    }

    #[test]
    fn records_reach_the_file_through_the_writer_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.db");
        let history = History::open(&path, Duration::from_secs(3600), 16).expect("open");
        let sink = history.sink();
        let result = ActionResult {
            action_id: "b-7".to_string(),
            device_id: "xbar-0".to_string(),
            action: "calibrate".to_string(),
            outcome: ActionOutcome::Succeeded as i32,
            started_at: Some(ms_timestamp(5_000)),
            ..Default::default()
        };
        sink.action("n1", &result);
        let reader = history.reader();
        history.close();
        let rows = reader.query(&HistoryQuery::default()).expect("query");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "calibrate");
        assert_eq!(rows[0].status, "SUCCEEDED");
        assert_eq!(rows[0].subject, "xbar-0");
    }

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    fn query(conn: &Connection, query: HistoryQuery) -> Vec<HistoryEntry> {
        query_on(conn, &query).expect("query")
    }

    #[test]
    fn until_is_exclusive_and_oldest_first_counts_from_the_start() {
        let mut conn = conn();
        write(
            &mut conn,
            vec![
                alert_event(1_000),
                action("b-1", 2_000),
                alert_event(3_000),
                action("b-2", 4_000),
            ],
        );
        let times = |entries: Vec<HistoryEntry>| -> Vec<i64> {
            entries
                .iter()
                .filter_map(|e| e.at.as_ref().map(timestamp_ms))
                .collect()
        };
        let before_3s = query(
            &conn,
            HistoryQuery {
                until: Some(at(3_000)),
                ..Default::default()
            },
        );
        assert_eq!(times(before_3s), vec![2_000, 1_000], "until excludes 3 s");
        let window = query(
            &conn,
            HistoryQuery {
                since: Some(at(2_000)),
                until: Some(at(4_000)),
                oldest_first: true,
                ..Default::default()
            },
        );
        assert_eq!(times(window), vec![2_000, 3_000]);
        let first_two = query(
            &conn,
            HistoryQuery {
                oldest_first: true,
                limit: 2,
                ..Default::default()
            },
        );
        assert_eq!(times(first_two), vec![1_000, 2_000]);
        let newest = query(
            &conn,
            HistoryQuery {
                limit: 1,
                ..Default::default()
            },
        );
        assert_eq!(times(newest), vec![4_000]);
    }

    #[test]
    fn priority_and_audit_hash_are_kept() {
        let mut conn = conn();
        write(&mut conn, vec![alert_event(1_000), action("b-1", 2_000)]);
        let rows = all(&conn);
        assert_eq!(rows[0].audit_hash, "hash-b-1");
        assert_eq!(rows[1].priority, "P0");
    }

    fn maintenance(id: &str, at_ms: i64, ended_ms: Option<i64>, hash: &str) -> Record {
        Record::Event(HistoryEvent {
            name: "MAINTENANCE".to_string(),
            message: format!("loihi-0 in maintenance ({hash})"),
            id: id.to_string(),
            caller: "uid 1000".to_string(),
            audit_hash: hash.to_string(),
            ended_at: ended_ms.map(at),
            ..HistoryEvent::new(HistoryKind::Maintenance, at(at_ms), "n1", "loihi-0")
        })
    }

    #[test]
    fn spells_are_updated_by_id_and_points_are_rows_of_their_own() {
        let mut conn = conn();
        let escalation = || {
            Record::Event(HistoryEvent {
                name: "DeviceOverheating".to_string(),
                priority: "P0".to_string(),
                id: "n1/loihi-0/THERMAL_CRITICAL".to_string(),
                ..HistoryEvent::new(HistoryKind::Escalation, at(5_000), "n1", "loihi-0")
            })
        };
        write(
            &mut conn,
            vec![
                maintenance("loihi-0@1000", 1_000, None, "h1"),
                // Extended: same id, new audit entry; it still began at 1 s.
                maintenance("loihi-0@1000", 3_000, None, "h2"),
                escalation(),
                escalation(),
                Record::Event(HistoryEvent::collector_started(at(6_000))),
            ],
        );
        let rows = all(&conn);
        assert_eq!(rows.len(), 4, "{rows:?}");
        let spell = rows
            .iter()
            .find(|e| e.kind == HistoryKind::Maintenance as i32)
            .expect("maintenance row");
        assert_eq!(spell.at, Some(ms_timestamp(1_000)));
        assert_eq!(spell.audit_hash, "h2");
        assert_eq!(spell.status, "ACTIVE");
        assert_eq!(spell.caller, "uid 1000");
        assert_eq!(spell.ended_at, None);
        let restart = &rows[0];
        assert_eq!(restart.kind, HistoryKind::Restart as i32);
        assert_eq!(restart.subject, "collector");
        assert_eq!(restart.node, "");

        write(
            &mut conn,
            vec![Record::SpellEnded {
                kind: HistoryKind::Maintenance,
                node: "n1".to_string(),
                id: "loihi-0@1000".to_string(),
                at_ms: 8_000,
            }],
        );
        // A spell that ended matches a `since` within it, and the device filter.
        let during = query(
            &conn,
            HistoryQuery {
                device: Some("loihi-0".to_string()),
                since: Some(at(7_000)),
                ..Default::default()
            },
        );
        assert_eq!(during.len(), 1, "{during:?}");
        assert_eq!(during[0].status, "ENDED");
        assert_eq!(during[0].ended_at, Some(ms_timestamp(8_000)));
    }

    #[test]
    fn a_restart_closes_the_spells_the_node_no_longer_carries() {
        let mut conn = conn();
        write(
            &mut conn,
            vec![
                maintenance("loihi-0@1000", 1_000, None, "h1"),
                maintenance("node@1000", 1_000, None, "h3"),
                Record::SpellsSeen {
                    kind: HistoryKind::Maintenance,
                    node: "n1".to_string(),
                    open: vec!["node@1000".to_string()],
                    at_ms: 9_000,
                },
            ],
        );
        let rows = all(&conn);
        let status: Vec<(&str, &str)> = rows
            .iter()
            .map(|e| (e.id.as_str(), e.status.as_str()))
            .collect();
        assert!(status.contains(&("loihi-0@1000", "ENDED")), "{status:?}");
        assert!(status.contains(&("node@1000", "ACTIVE")), "{status:?}");
    }

    #[test]
    fn queries_by_node_device_and_time_use_indexes() {
        let conn = conn();
        let plan = query::plan(
            &conn,
            &HistoryQuery {
                node: Some("n1".to_string()),
                since: Some(at(1_000)),
                until: Some(at(2_000)),
                ..Default::default()
            },
        );
        for index in ["alert_events_node", "actions_node", "events_node"] {
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{index}: {plan:?}"
            );
        }
        let plan = query::plan(
            &conn,
            &HistoryQuery {
                since: Some(at(1_000)),
                ..Default::default()
            },
        );
        for index in ["alert_events_at", "actions_started"] {
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{index}: {plan:?}"
            );
        }
        let plan = query::plan(
            &conn,
            &HistoryQuery {
                device: Some("loihi-0".to_string()),
                ..Default::default()
            },
        );
        for index in [
            "alert_events_device",
            "alert_events_subject",
            "actions_device",
            "events_subject",
            "conditions_device",
            "conditions_subject",
        ] {
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{index}: {plan:?}"
            );
        }
    }

    /// Schema 1 as the previous collector wrote it, with one row in each table.
    const SCHEMA_1_ROWS: &str = "
        INSERT INTO conditions (node, subject, device, code, severity, message, since_ms)
            VALUES ('n1', 'loihi-0', 'loihi-0', 'THERMAL_CRITICAL', 3, '91 C', 1000);
        INSERT INTO alert_events (fingerprint, node, subject, device, alertname, code,
            severity, status, message, at_ms) VALUES ('n1/loihi-0/THERMAL_CRITICAL', 'n1',
            'loihi-0', 'loihi-0', 'DeviceOverheating', 'THERMAL_CRITICAL', 3, 'FIRING', '91 C',
            2000);
        INSERT INTO actions (node, action_id, device, action, outcome, message, caller,
            started_ms, duration_ms) VALUES ('n1', 'b-1', 'loihi-0', 'reset-soft', 'SUCCEEDED',
            '', 'uid 0', 3000, 40);
        PRAGMA user_version = 1;
    ";

    #[test]
    fn a_schema_1_file_is_migrated_keeping_every_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("history.db");
        {
            let old = Connection::open(&path).expect("create");
            old.execute_batch(SCHEMA).expect("schema 1");
            old.execute_batch(SCHEMA_1_ROWS).expect("rows");
        }
        let history = History::open(&path, Duration::from_secs(3600), 16).expect("migrates");
        history
            .sink()
            .event(HistoryEvent::collector_started(at(4_000)));
        let reader = history.reader();
        history.close();
        let rows = reader.query(&HistoryQuery::default()).expect("query");
        let kinds: Vec<i32> = rows.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            vec![
                HistoryKind::Restart as i32,
                HistoryKind::Action as i32,
                HistoryKind::Alert as i32,
                HistoryKind::Condition as i32
            ]
        );
        assert_eq!(
            rows[1].audit_hash, "",
            "old rows get the new columns' defaults"
        );
        assert_eq!(rows[2].priority, "");
        let version: i64 = Connection::open(&path)
            .expect("open")
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        // Opening it again changes nothing.
        let again = History::open(&path, Duration::from_secs(3600), 16).expect("reopens");
        again.close();
        assert_eq!(
            reader.query(&HistoryQuery::default()).expect("query").len(),
            4
        );
    }

    #[test]
    fn maintenance_windows_in_snapshots_become_spells_from_first_seen_to_gone() {
        use health_proto::v1::{Device, DeviceIdentity, Maintenance, NodeSnapshot};
        let dir = tempfile::tempdir().expect("tempdir");
        let history =
            History::open(&dir.path().join("h.db"), Duration::from_secs(3600), 64).expect("open");
        let sink = history.sink();
        let window = |until: i64, hash: &str| Maintenance {
            until: Some(ms_timestamp(until)),
            reason: "swap the fan".to_string(),
            by: "uid 1000".to_string(),
            started_at: Some(ms_timestamp(1_000)),
            audit_hash: hash.to_string(),
            source: "operator".to_string(),
        };
        let node = |maintenance: Option<Maintenance>| NodeSnapshot {
            devices: vec![Device {
                identity: Some(DeviceIdentity {
                    id: "loihi-0".to_string(),
                    ..Default::default()
                }),
                maintenance,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut spells = MaintenanceSpells::default();
        spells.observe(&sink, "n1", &node(Some(window(9_000, "h1"))), at(2_000));
        spells.observe(&sink, "n1", &node(Some(window(9_000, "h1"))), at(3_000));
        // Extended: same window, new end and audit entry.
        spells.observe(&sink, "n1", &node(Some(window(19_000, "h2"))), at(4_000));
        spells.observe(&sink, "n1", &node(None), at(5_000));
        let reader = history.reader();
        history.close();
        let rows = reader.query(&HistoryQuery::default()).expect("query");
        assert_eq!(rows.len(), 1, "{rows:?}");
        let spell = &rows[0];
        assert_eq!(spell.kind, HistoryKind::Maintenance as i32);
        assert_eq!(spell.subject, "loihi-0");
        assert_eq!(spell.at, Some(ms_timestamp(1_000)));
        assert_eq!(spell.ended_at, Some(ms_timestamp(5_000)));
        assert_eq!(spell.status, "ENDED");
        assert_eq!(spell.audit_hash, "h2");
        assert_eq!(spell.caller, "uid 1000");
        assert!(spell.message.contains("swap the fan"), "{}", spell.message);
        assert!(
            spell.message.contains("1970-01-01T00:00:19Z"),
            "{}",
            spell.message
        );
    }
}
