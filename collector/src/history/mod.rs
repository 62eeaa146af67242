//! The collector's history: conditions (from when to when), alert transitions (pending,
//! firing, resolved, cleared, with their priority), the actions agents ran (with their audit
//! hash), and the generic events of `events.rs` (maintenance, silences, escalations,
//! restarts, notes), for `QueryHistory` / `agent-ctl history` and incidents (`query.rs`),
//! across collector restarts. Kept in an embedded SQLite file (`history_path`, `sqlite.rs`)
//! or in a PostgreSQL database several collectors share (`history_url`, `postgres.rs`): the
//! same statements, writer and queries run on both through `db.rs`.
//!
//! Ingest never waits on the database: the alert book hands records to a `HistorySink`,
//! which `try_send`s them into a bounded channel; when the channel is full the record is
//! dropped and counted. One dedicated thread owns the write connection (`writer.rs`): it
//! writes what has queued in one transaction per batch, keeps the batch through a database
//! outage, and deletes what is past `history_retention` in short batches.
//!
//! A condition row is keyed by (node, subject, code, since): the agent keeps a condition's
//! `since` across polls and reports, so the same condition seen again after a collector
//! restart, or by another collector after a failover, is the same row. When a node is first
//! seen after a restart, its rows still open but no longer reported are closed
//! (`node_seen`): they ended while the collector was away. `write.rs` says how every other
//! record is kept once however many collectors write it.
//!
//! Only WARNING and CRITICAL conditions are recorded: they are what alerts are made of, and
//! INFO conditions would multiply the rows without helping an investigation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use health_proto::v1::{ActionOutcome, ActionResult, Alert, HistoryKind};
use prost_types::Timestamp;

use crate::priority::Priority;
use health_metrics::histogram::{Histogram, LATENCY_BUCKETS};

mod db;
mod events;
mod postgres;
mod query;
mod sqlite;
mod write;
mod writer;
use db::{Db, DbError};
pub use events::{HistoryEvent, MaintenanceSpells};
use postgres::PgReaders;
pub use postgres::PgTarget;
pub use query::{HistoryQuery, HistoryReader};
use writer::Writer;

/// How often, at most, a node's report is noted in `holders` (see `Record::Held`).
pub const HELD_EVERY: Duration = Duration::from_secs(10);
/// Most rows one query returns, and the number when the request says 0.
pub const MAX_LIMIT: u32 = 10_000;
pub const DEFAULT_LIMIT: u32 = 100;
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
    Alert(Box<AlertRecord>),
    Action(Box<ActionRecord>),
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
    /// This collector heard from the node at `at_ms` (sent at most every `HELD_EVERY` per
    /// node): what tells another collector that the node has moved here.
    Held {
        node: String,
        at_ms: i64,
    },
    /// Written only because this collector stopped hearing from `node`, which it last heard
    /// from at `last_heard_ms`: skipped if another collector has heard from it since (see
    /// `write.rs`).
    Absent {
        node: String,
        last_heard_ms: i64,
        inner: Box<Record>,
    },
}

impl Record {
    /// When the collector made the record, for the write lag: alert transitions and holds
    /// only (the other records carry the agent's times).
    fn made_ms(&self) -> Option<i64> {
        match self {
            Record::Alert(alert) => Some(alert.at_ms),
            Record::Held { at_ms, .. } => Some(*at_ms),
            _ => None,
        }
    }

    /// The node a record is about, for `Record::Absent`.
    fn node(&self) -> &str {
        match self {
            Record::ConditionStarted { node, .. }
            | Record::ConditionEnded { node, .. }
            | Record::NodeSeen { node, .. }
            | Record::SpellEnded { node, .. }
            | Record::SpellsSeen { node, .. }
            | Record::Held { node, .. }
            | Record::Absent { node, .. } => node,
            Record::Alert(alert) => &alert.node,
            Record::Action(action) => &action.node,
            Record::Event(event) => &event.node,
        }
    }
}

/// An alert transition.
#[derive(Debug)]
struct AlertRecord {
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
    /// When the condition began, by the agent's clock (0 when unknown): the same on every
    /// collector that sees the alert, so it keys the transition.
    since_ms: i64,
}

/// An action an agent ran.
#[derive(Debug)]
struct ActionRecord {
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
}

/// Counters of the history path, for logs and metrics.
#[derive(Debug)]
pub struct HistoryStats {
    /// Records not queued because the writer was behind (the channel was full).
    pub dropped_total: AtomicU64,
    /// Records written.
    pub written_total: AtomicU64,
    /// Batches whose transaction failed (disk full, I/O error); their records are lost.
    pub write_errors_total: AtomicU64,
    /// Rows deleted by retention.
    pub pruned_total: AtomicU64,
    /// Records handed to the sink (queued or dropped).
    pub offered_total: AtomicU64,
    /// Records lost after being queued: a batch the database refused, or what was still
    /// queued when the collector stopped with the database away.
    pub lost_total: AtomicU64,
    /// Whether the writer has a working connection to the database.
    pub available: AtomicBool,
    /// When it last became unavailable (ms since the epoch).
    pub unavailable_since_ms: AtomicI64,
    /// From a transition (or a report noted in `holders`) to its commit: how far the database
    /// is behind the collector.
    pub write_lag: Histogram,
}

impl Default for HistoryStats {
    fn default() -> Self {
        HistoryStats {
            dropped_total: AtomicU64::new(0),
            written_total: AtomicU64::new(0),
            write_errors_total: AtomicU64::new(0),
            pruned_total: AtomicU64::new(0),
            offered_total: AtomicU64::new(0),
            lost_total: AtomicU64::new(0),
            available: AtomicBool::new(false),
            unavailable_since_ms: AtomicI64::new(0),
            write_lag: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

impl HistoryStats {
    /// The history's series on the collector's `/metrics`.
    pub fn render(&self, out: &mut health_metrics::Exposition) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        out.gauge(
            "health_collector_history_up",
            "1 while the history writer has a working connection to its database, 0 during an outage (events then queue up to the bound, then are dropped).",
        )
        .sample(&[], f64::from(u8::from(self.available.load(Ordering::Relaxed))));
        for (name, help, value) in [
            ("health_collector_history_offered_total", "History records handed to the writer's queue.", &self.offered_total),
            ("health_collector_history_written_total", "History records written to the database.", &self.written_total),
            ("health_collector_history_dropped_total", "History records dropped because the queue was full (the database slow or away).", &self.dropped_total),
            ("health_collector_history_lost_total", "History records lost after queueing: a batch the database refused, or the queue at a shutdown during an outage.", &self.lost_total),
            ("health_collector_history_write_errors_total", "History batches the database refused.", &self.write_errors_total),
            ("health_collector_history_pruned_total", "History rows deleted by retention.", &self.pruned_total),
        ] {
            out.counter(name, help).sample(&[], load(value));
        }
        let in_flight = self.offered_total.load(Ordering::Relaxed).saturating_sub(
            self.written_total.load(Ordering::Relaxed)
                + self.dropped_total.load(Ordering::Relaxed)
                + self.lost_total.load(Ordering::Relaxed),
        );
        let (buckets, sum, count) = self.write_lag.read();
        out.histogram(
            "health_collector_history_write_lag_seconds",
            "From an alert transition, or a report noted as held, to the commit of its row.",
        )
        .histogram(&[], &buckets, sum, count);
        out.gauge(
            "health_collector_history_queued",
            "History records queued or in the batch being written.",
        )
        .sample(&[], in_flight as f64);
    }
}

/// The alert book's handle on the history: every method returns at once.
#[derive(Clone)]
pub struct HistorySink {
    records: SyncSender<Record>,
    stats: Arc<HistoryStats>,
    /// See `for_absent_node`: when this collector last heard from the node (ms).
    absent: Option<i64>,
    /// Whether other collectors may write to the same database (PostgreSQL): without them,
    /// `holders` and the absence check have nothing to say.
    shared: bool,
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
        self.send(Record::Alert(Box::new(AlertRecord {
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
            since_ms: alert.starts_at.as_ref().map_or(0, timestamp_ms),
        })));
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
            // Once per alert, episode and priority, however many collectors escalate it.
            dedup: alert
                .starts_at
                .as_ref()
                .map(|since| {
                    format!(
                        "escalation|{}|{}|{}",
                        alert.fingerprint,
                        timestamp_ms(since),
                        alert.priority
                    )
                })
                .unwrap_or_default(),
            episode_of: alert
                .starts_at
                .as_ref()
                .map(|since| (alert.fingerprint.clone(), timestamp_ms(since))),
            ..HistoryEvent::new(HistoryKind::Escalation, now, &alert.node, &alert.subject)
        });
    }

    /// Since when the writer has had no working connection to the database, if it has none.
    pub fn unavailable_since(&self) -> Option<SystemTime> {
        if self.stats.available.load(Ordering::Relaxed) {
            return None;
        }
        let ms = self.stats.unavailable_since_ms.load(Ordering::Relaxed);
        Some(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// This collector has just heard from `node` (call it at most every `HELD_EVERY` per
    /// node; see `Record::Held`).
    pub fn held(&self, node: &str, now: SystemTime) {
        // During an outage the queue is for what cannot be had again; the next hold after
        // the database is back says the same.
        if !self.shared || !self.stats.available.load(Ordering::Relaxed) {
            return;
        }
        self.send(Record::Held {
            node: node.to_string(),
            at_ms: system_ms(now),
        });
    }

    /// The same sink, for what this collector writes only because it stopped hearing from a
    /// node (NODE_STALE, forgetting it), which it last heard from at `last_heard`: each record
    /// is written only if no other collector has heard from the node since.
    pub fn for_absent_node(&self, last_heard: SystemTime) -> HistorySink {
        HistorySink {
            absent: Some(system_ms(last_heard)),
            ..self.clone()
        }
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
        self.send(Record::Action(Box::new(ActionRecord {
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
        })));
    }

    fn send(&self, record: Record) {
        let record = match self.absent.filter(|_| self.shared) {
            Some(last_heard_ms) => Record::Absent {
                node: record.node().to_string(),
                last_heard_ms,
                inner: Box::new(record),
            },
            None => record,
        };
        self.stats.offered_total.fetch_add(1, Ordering::Relaxed);
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

/// Why the history database could not be used; names the file or URL and its key.
#[derive(Debug, thiserror::Error)]
#[error("{target}: cannot use the history database ({key}): {reason}")]
pub struct HistoryError {
    /// The file, or the URL (which never holds a password).
    pub target: String,
    pub key: &'static str,
    pub reason: String,
}

/// Where the history lives: `history_path` (SQLite) or `history_url` (PostgreSQL).
#[derive(Debug, Clone)]
pub enum HistoryBackend {
    Sqlite(PathBuf),
    Postgres(Box<PgTarget>),
}

/// The open store, as readers reach it.
#[derive(Clone)]
pub(super) enum Store {
    Sqlite(PathBuf),
    Postgres(Arc<PgReaders>),
}

impl Store {
    pub(super) fn describe(&self) -> String {
        match self {
            Store::Sqlite(path) => path.display().to_string(),
            Store::Postgres(readers) => readers.target().url().to_string(),
        }
    }

    pub(super) fn with_reader<T>(
        &self,
        work: &mut dyn FnMut(&mut dyn Db) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self {
            Store::Sqlite(path) => {
                let mut db = sqlite::open_for_reading(path).map_err(DbError::refused)?;
                work(&mut db)
            }
            Store::Postgres(readers) => readers.with(work),
        }
    }

    /// The writer's connection (schema brought up to date).
    fn open_for_writing(&self) -> Result<Box<dyn Db>, DbError> {
        match self {
            Store::Sqlite(path) => sqlite::open_for_writing(path)
                .map(|db| Box::new(db) as Box<dyn Db>)
                .map_err(DbError::refused),
            Store::Postgres(readers) => readers
                .target()
                .open_for_writing()
                .map(|db| Box::new(db) as Box<dyn Db>),
        }
    }
}

/// The open history: its writer thread and a way to query it.
pub struct History {
    store: Store,
    sink: HistorySink,
    stats: Arc<HistoryStats>,
    stop: Arc<AtomicBool>,
    writer: Option<JoinHandle<()>>,
}

impl History {
    /// Opens (creating if needed) a SQLite history file; see `open_backend`.
    #[cfg(test)]
    pub fn open(
        path: &std::path::Path,
        retention: Duration,
        queue: usize,
    ) -> Result<History, HistoryError> {
        History::open_backend(
            &HistoryBackend::Sqlite(path.to_path_buf()),
            "",
            retention,
            queue,
        )
    }

    /// Opens the history and starts its writer thread; `collector` names this collector in
    /// `holders`. Fails, naming the file or URL, if it cannot be used: not a SQLite file, a
    /// newer schema, a password the server refuses. A PostgreSQL server that cannot be
    /// reached is not a failure: the collector starts, and the writer connects when it can
    /// (see `HistoryStats::available`).
    pub fn open_backend(
        backend: &HistoryBackend,
        collector: &str,
        retention: Duration,
        queue: usize,
    ) -> Result<History, HistoryError> {
        let (store, key) = match backend {
            HistoryBackend::Sqlite(path) => (Store::Sqlite(path.clone()), "history_path"),
            HistoryBackend::Postgres(target) => (
                Store::Postgres(PgReaders::new(PgTarget::clone(target))),
                "history_url",
            ),
        };
        let error = |reason: String| HistoryError {
            target: store.describe(),
            key,
            reason,
        };
        if let HistoryBackend::Sqlite(path) = backend {
            if path.is_dir() {
                return Err(error("is a directory, expected a SQLite file".to_string()));
            }
        }
        // On a thread of its own: the PostgreSQL client blocks on a runtime of its own, which
        // cannot be entered from the collector's async start-up.
        let opened = std::thread::scope(|scope| {
            scope
                .spawn(|| store.open_for_writing())
                .join()
                .unwrap_or_else(|_| Err(DbError::refused("the connecting thread panicked")))
        });
        let db = match opened {
            Ok(db) => Some(db),
            Err(e) if e.unavailable => {
                tracing::warn!(database = %store.describe(), error = %e, "history database unreachable at start: events queue until it is back");
                None
            }
            Err(e) => return Err(error(e.message)),
        };
        let shared = matches!(store, Store::Postgres(_));
        let (records, inbox) = mpsc::sync_channel(queue.max(1));
        let stats = Arc::new(HistoryStats::default());
        stats.available.store(db.is_some(), Ordering::Relaxed);
        stats
            .unavailable_since_ms
            .store(system_ms(SystemTime::now()), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let writer = Writer {
                store: store.clone(),
                db,
                inbox,
                retention,
                stats: Arc::clone(&stats),
                stop: Arc::clone(&stop),
                me: collector.to_string(),
                disconnected: false,
            };
            std::thread::Builder::new()
                .name("history-writer".to_string())
                .spawn(move || writer.run())
                .map_err(|e| error(format!("cannot start the writer thread: {e}")))?
        };
        Ok(History {
            store,
            sink: HistorySink {
                records,
                stats: Arc::clone(&stats),
                absent: None,
                shared,
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
            store: self.store.clone(),
        }
    }

    pub fn stats(&self) -> Arc<HistoryStats> {
        Arc::clone(&self.stats)
    }

    /// Writes what is queued and stops the writer; blocks until it has (call it from a
    /// blocking context at shutdown). With the database away, it waits at most
    /// `SHUTDOWN_RETRY` for it before giving up on what is queued.
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

    use db::Db;
    use query::query_on;
    use rusqlite::Connection;
    use sqlite::{SqliteDb, SCHEMA, SCHEMA_VERSION};
    use write::{prune, write_batch};

    /// A retention that keeps the tests' rows of 1970: the writer prunes at start.
    const KEEP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

    fn conn() -> SqliteDb {
        SqliteDb::in_memory()
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
        Record::Alert(Box::new(AlertRecord {
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
            since_ms: 0,
        }))
    }

    fn action(id: &str, started_ms: i64) -> Record {
        Record::Action(Box::new(ActionRecord {
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
        }))
    }

    fn write(conn: &mut dyn Db, records: Vec<Record>) {
        write_batch(conn, &records, "c1").expect("write");
    }

    fn all(conn: &mut dyn Db) -> Vec<HistoryEntry> {
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
        retention_prunes_what_ended_before_the_cutoff_and_keeps_open_conditions_on(&mut conn());
    }

    fn retention_prunes_what_ended_before_the_cutoff_and_keeps_open_conditions_on(
        conn: &mut dyn Db,
    ) {
        let now = UNIX_EPOCH + Duration::from_millis(u64::try_from(day_ms(100)).unwrap_or(0));
        write(
            conn,
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
        assert_eq!(all(conn).len(), 7);

        let deleted = prune(conn, now, Duration::from_secs(30 * 24 * 3600)).expect("prune");
        assert_eq!(deleted, (3, false));
        let left: Vec<(String, String)> =
            all(conn).into_iter().map(|e| (e.name, e.status)).collect();
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
            prune(conn, now, Duration::from_secs(30 * 24 * 3600)).expect("prune"),
            (0, false)
        );
    }

    #[test]
    fn the_same_condition_seen_again_is_one_row_and_a_restart_closes_what_ended_meanwhile() {
        the_same_condition_seen_again_is_one_row_and_a_restart_closes_what_ended_meanwhile_on(
            &mut conn(),
        );
    }

    fn the_same_condition_seen_again_is_one_row_and_a_restart_closes_what_ended_meanwhile_on(
        conn: &mut dyn Db,
    ) {
        write(
            conn,
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
        let rows = all(conn);
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
        actions_are_kept_once_per_id_and_queries_filter_on(&mut conn());
    }

    fn actions_are_kept_once_per_id_and_queries_filter_on(conn: &mut dyn Db) {
        write(
            conn,
            vec![
                action("b-1", 1_000),
                action("b-1", 1_000),
                action("b-2", 2_000),
                alert_event(3_000),
            ],
        );
        let rows = all(conn);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].kind, HistoryKind::Alert as i32, "newest first");
        let since = query_on(
            conn,
            &HistoryQuery {
                since: Some(UNIX_EPOCH + Duration::from_millis(1_500)),
                ..Default::default()
            },
        )
        .expect("query");
        assert_eq!(since.len(), 2);
        let other_device = query_on(
            conn,
            &HistoryQuery {
                device: Some("xbar-0".to_string()),
                ..Default::default()
            },
        )
        .expect("query");
        assert!(other_device.is_empty());
        let limited = query_on(
            conn,
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
        let error = History::open(&path, KEEP, 16)
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
        let history = History::open(&path, KEEP, 16).expect("open");
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

    fn query(conn: &mut dyn Db, query: HistoryQuery) -> Vec<HistoryEntry> {
        query_on(conn, &query).expect("query")
    }

    #[test]
    fn until_is_exclusive_and_oldest_first_counts_from_the_start() {
        until_is_exclusive_and_oldest_first_counts_from_the_start_on(&mut conn());
    }

    fn until_is_exclusive_and_oldest_first_counts_from_the_start_on(conn: &mut dyn Db) {
        write(
            conn,
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
            conn,
            HistoryQuery {
                until: Some(at(3_000)),
                ..Default::default()
            },
        );
        assert_eq!(times(before_3s), vec![2_000, 1_000], "until excludes 3 s");
        let window = query(
            conn,
            HistoryQuery {
                since: Some(at(2_000)),
                until: Some(at(4_000)),
                oldest_first: true,
                ..Default::default()
            },
        );
        assert_eq!(times(window), vec![2_000, 3_000]);
        let first_two = query(
            conn,
            HistoryQuery {
                oldest_first: true,
                limit: 2,
                ..Default::default()
            },
        );
        assert_eq!(times(first_two), vec![1_000, 2_000]);
        let newest = query(
            conn,
            HistoryQuery {
                limit: 1,
                ..Default::default()
            },
        );
        assert_eq!(times(newest), vec![4_000]);
    }

    #[test]
    fn priority_and_audit_hash_are_kept() {
        priority_and_audit_hash_are_kept_on(&mut conn());
    }

    fn priority_and_audit_hash_are_kept_on(conn: &mut dyn Db) {
        write(conn, vec![alert_event(1_000), action("b-1", 2_000)]);
        let rows = all(conn);
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
        spells_are_updated_by_id_and_points_are_rows_of_their_own_on(&mut conn());
    }

    fn spells_are_updated_by_id_and_points_are_rows_of_their_own_on(conn: &mut dyn Db) {
        let escalation = || {
            Record::Event(HistoryEvent {
                name: "DeviceOverheating".to_string(),
                priority: "P0".to_string(),
                id: "n1/loihi-0/THERMAL_CRITICAL".to_string(),
                ..HistoryEvent::new(HistoryKind::Escalation, at(5_000), "n1", "loihi-0")
            })
        };
        write(
            conn,
            vec![
                maintenance("loihi-0@1000", 1_000, None, "h1"),
                // Extended: same id, new audit entry; it still began at 1 s.
                maintenance("loihi-0@1000", 3_000, None, "h2"),
                escalation(),
                escalation(),
                Record::Event(HistoryEvent::collector_started(at(6_000))),
            ],
        );
        let rows = all(conn);
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
            conn,
            vec![Record::SpellEnded {
                kind: HistoryKind::Maintenance,
                node: "n1".to_string(),
                id: "loihi-0@1000".to_string(),
                at_ms: 8_000,
            }],
        );
        // A spell that ended matches a `since` within it, and the device filter.
        let during = query(
            conn,
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
        a_restart_closes_the_spells_the_node_no_longer_carries_on(&mut conn());
    }

    fn a_restart_closes_the_spells_the_node_no_longer_carries_on(conn: &mut dyn Db) {
        write(
            conn,
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
        let rows = all(conn);
        let status: Vec<(&str, &str)> = rows
            .iter()
            .map(|e| (e.id.as_str(), e.status.as_str()))
            .collect();
        assert!(status.contains(&("loihi-0@1000", "ENDED")), "{status:?}");
        assert!(status.contains(&("node@1000", "ACTIVE")), "{status:?}");
    }

    #[test]
    fn queries_by_node_device_and_time_use_indexes() {
        queries_by_node_device_and_time_use_indexes_on(&mut conn());
    }

    fn queries_by_node_device_and_time_use_indexes_on(conn: &mut dyn Db) {
        let plan = query::plan(
            conn,
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
            conn,
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
            conn,
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
        let history = History::open(&path, KEEP, 16).expect("migrates");
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
        let again = History::open(&path, KEEP, 16).expect("reopens");
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
        let history = History::open(&dir.path().join("h.db"), KEEP, 64).expect("open");
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

    fn transition(node: &str, status: &'static str, since_ms: i64, at_ms: i64) -> Record {
        Record::Alert(Box::new(AlertRecord {
            fingerprint: format!("{node}/loihi-0/THERMAL_CRITICAL"),
            node: node.to_string(),
            subject: "loihi-0".to_string(),
            device: "loihi-0".to_string(),
            alertname: "DeviceOverheating".to_string(),
            code: "THERMAL_CRITICAL".to_string(),
            severity: Severity::Critical as i32,
            status,
            message: "91 C".to_string(),
            at_ms,
            priority: "P1".to_string(),
            since_ms,
        }))
    }

    #[test]
    fn a_transition_seen_by_two_collectors_is_stored_once() {
        a_transition_seen_by_two_collectors_is_stored_once_on(&mut conn());
    }

    fn a_transition_seen_by_two_collectors_is_stored_once_on(conn: &mut dyn Db) {
        // Collector c1 saw the alert pending and firing; the agent failed over to c2, which
        // saw the same condition (same since) from the start, then it resolved there.
        write_batch(
            conn,
            &[
                transition("n1", "PENDING", 1_000, 1_100),
                transition("n1", "FIRING", 1_000, 31_100),
            ],
            "c1",
        )
        .expect("c1");
        write_batch(
            conn,
            &[
                transition("n1", "PENDING", 1_000, 40_000),
                transition("n1", "FIRING", 1_000, 70_000),
                transition("n1", "RESOLVED", 1_000, 90_000),
            ],
            "c2",
        )
        .expect("c2");
        let statuses: Vec<(String, i64)> = all(conn)
            .into_iter()
            .map(|e| (e.status, e.at.as_ref().map_or(0, timestamp_ms)))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("RESOLVED".to_string(), 90_000),
                ("FIRING".to_string(), 31_100),
                ("PENDING".to_string(), 1_100),
            ],
            "the first collector's times are kept, nothing twice"
        );
        // A new spell of the same condition (another since) is a transition of its own.
        write(conn, vec![transition("n1", "PENDING", 95_000, 95_100)]);
        assert_eq!(all(conn).len(), 4);
    }

    #[test]
    fn a_severity_going_back_and_a_second_episode_are_kept() {
        a_severity_going_back_and_a_second_episode_are_kept_on(&mut conn());
    }

    fn a_severity_going_back_and_a_second_episode_are_kept_on(conn: &mut dyn Db) {
        let with = |status: &'static str, severity: Severity, at_ms: i64| {
            let Record::Alert(mut alert) = transition("n1", status, 1_000, at_ms) else {
                unreachable!("transition builds an alert record");
            };
            alert.severity = severity as i32;
            Record::Alert(alert)
        };
        let escalated = |at_ms: i64| {
            Record::Event(HistoryEvent {
                dedup: "escalation|n1/loihi-0/THERMAL_CRITICAL|1000|P0".to_string(),
                episode_of: Some(("n1/loihi-0/THERMAL_CRITICAL".to_string(), 1_000)),
                ..HistoryEvent::new(HistoryKind::Escalation, at(at_ms), "n1", "loihi-0")
            })
        };
        // WARNING, CRITICAL, WARNING again, resolved by a maintenance window, pending and
        // firing again when it ended, resolved: one condition (one since), two episodes, each
        // escalated once (and each escalation written twice, as two collectors would).
        write(
            conn,
            vec![
                with("FIRING", Severity::Warning, 2_000),
                with("FIRING", Severity::Critical, 3_000),
                escalated(3_500),
                escalated(3_600),
                with("FIRING", Severity::Warning, 4_000),
                with("RESOLVED", Severity::Warning, 5_000),
                with("PENDING", Severity::Warning, 6_000),
                with("FIRING", Severity::Warning, 7_000),
                escalated(7_500),
                escalated(7_600),
                with("RESOLVED", Severity::Warning, 8_000),
                // A late resolution of an episode already closed adds nothing.
                with("RESOLVED", Severity::Warning, 9_000),
            ],
        );
        let times: Vec<i64> = all(conn)
            .iter()
            .filter_map(|e| e.at.as_ref().map(timestamp_ms))
            .collect();
        assert_eq!(
            times,
            vec![8_000, 7_500, 7_000, 6_000, 5_000, 4_000, 3_500, 3_000, 2_000]
        );
    }

    #[test]
    fn what_a_collector_writes_about_a_node_it_lost_is_skipped_if_another_holds_it() {
        what_a_collector_writes_about_a_node_it_lost_is_skipped_if_another_holds_it_on(&mut conn());
    }

    fn what_a_collector_writes_about_a_node_it_lost_is_skipped_if_another_holds_it_on(
        conn: &mut dyn Db,
    ) {
        let absent = |node: &str, last_heard_ms: i64, inner: Record| Record::Absent {
            node: node.to_string(),
            last_heard_ms,
            inner: Box::new(inner),
        };
        let held = |node: &str, at_ms: i64| Record::Held {
            node: node.to_string(),
            at_ms,
        };
        write_batch(conn, &[held("n1", 1_000), held("n2", 1_000)], "c1").expect("c1");
        // n1 moved to c2; n2 went silent for everyone.
        write_batch(conn, &[held("n1", 50_000)], "c2").expect("c2");
        write_batch(
            conn,
            &[
                absent("n1", 1_000, transition("n1", "FIRING", 1_000, 61_000)),
                absent("n2", 1_000, transition("n2", "FIRING", 1_000, 61_000)),
            ],
            "c1",
        )
        .expect("c1 absent");
        let nodes: Vec<String> = all(conn).into_iter().map(|e| e.node).collect();
        assert_eq!(
            nodes,
            vec!["n2".to_string()],
            "n1 is held by c2: c1 writes nothing"
        );
    }

    #[test]
    fn an_escalation_or_agent_restart_written_twice_is_one_row() {
        an_escalation_or_agent_restart_written_twice_is_one_row_on(&mut conn());
    }

    fn an_escalation_or_agent_restart_written_twice_is_one_row_on(conn: &mut dyn Db) {
        let escalated = |at_ms: i64| {
            Record::Event(HistoryEvent {
                dedup: "escalation|n1/loihi-0/THERMAL_CRITICAL|1000|P0".to_string(),
                priority: "P0".to_string(),
                ..HistoryEvent::new(HistoryKind::Escalation, at(at_ms), "n1", "loihi-0")
            })
        };
        let restarted =
            |at_ms: i64| Record::Event(HistoryEvent::agent_restarted(at(at_ms), "n1", "b1", "b2"));
        write(conn, vec![escalated(5_000), restarted(6_000)]);
        write(conn, vec![escalated(7_000), restarted(8_000)]);
        let times: Vec<i64> = all(conn)
            .iter()
            .filter_map(|e| e.at.as_ref().map(timestamp_ms))
            .collect();
        assert_eq!(times, vec![6_000, 5_000]);
    }

    /// A store-level suite: its name (a database name) and its body.
    type Suite = (&'static str, fn(&mut dyn Db));

    /// The store-level suites, each on a fresh database.
    const SUITES: [Suite; 11] = [
        (
            "retention",
            retention_prunes_what_ended_before_the_cutoff_and_keeps_open_conditions_on,
        ),
        (
            "condition",
            the_same_condition_seen_again_is_one_row_and_a_restart_closes_what_ended_meanwhile_on,
        ),
        (
            "actions",
            actions_are_kept_once_per_id_and_queries_filter_on,
        ),
        (
            "until",
            until_is_exclusive_and_oldest_first_counts_from_the_start_on,
        ),
        ("priority", priority_and_audit_hash_are_kept_on),
        (
            "spells",
            spells_are_updated_by_id_and_points_are_rows_of_their_own_on,
        ),
        (
            "restart",
            a_restart_closes_the_spells_the_node_no_longer_carries_on,
        ),
        (
            "failover",
            a_transition_seen_by_two_collectors_is_stored_once_on,
        ),
        (
            "absent",
            what_a_collector_writes_about_a_node_it_lost_is_skipped_if_another_holds_it_on,
        ),
        (
            "dedup",
            an_escalation_or_agent_restart_written_twice_is_one_row_on,
        ),
        (
            "episodes",
            a_severity_going_back_and_a_second_episode_are_kept_on,
        ),
    ];

    fn pg_target(server: &health_e2e::postgres::PgServer, db: &str) -> PgTarget {
        let url = server.create_database(db).expect("database");
        PgTarget::new(
            &format!("{url}?sslmode=disable"),
            Some(server.password_file()),
        )
        .expect("target")
    }

    /// Every suite above, again on a real PostgreSQL server (each on a database of its own).
    #[test]
    fn every_store_suite_passes_on_postgresql_too() {
        let server = health_e2e::postgres::PgServer::start().expect("start PostgreSQL");
        for (name, suite) in SUITES {
            let mut db = pg_target(&server, name)
                .open_for_writing()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            suite(&mut db);
        }
        // The queries agent-ctl makes can be served by indexes.
        let mut db = pg_target(&server, "plans")
            .open_for_writing()
            .expect("plans");
        let plan = query::pg_plan(
            &mut db,
            &HistoryQuery {
                node: Some("n1".to_string()),
                since: Some(at(1_000)),
                ..Default::default()
            },
        )
        .join("\n");
        for index in [
            "alert_events_node",
            "actions_node",
            "events_node",
            "conditions_open",
        ] {
            assert!(plan.contains(index), "{index}: {plan}");
        }
        let plan = query::pg_plan(
            &mut db,
            &HistoryQuery {
                device: Some("loihi-0".to_string()),
                ..Default::default()
            },
        )
        .join("\n");
        for index in [
            "alert_events_device",
            "actions_device",
            "events_subject",
            "conditions_device",
        ] {
            assert!(plan.contains(index), "{index}: {plan}");
        }
        // Migrations are recorded, re-applying is a no-op, and a newer schema is refused.
        let target = pg_target(&server, "schema");
        target.open_for_writing().expect("first");
        target.open_for_writing().expect("again");
        assert_eq!(
            server
                .psql("schema", "SELECT version FROM history_schema")
                .expect("psql")
                .trim(),
            "1"
        );
        server
            .psql("schema", "INSERT INTO history_schema VALUES (99)")
            .expect("psql");
        let error = History::open_backend(
            &HistoryBackend::Postgres(Box::new(target)),
            "c1",
            Duration::from_secs(3600),
            16,
        )
        .err()
        .expect("a newer schema is refused")
        .to_string();
        assert!(error.contains("/schema"), "{error}");
        assert!(error.contains("schema 99"), "{error}");
    }

    /// Records offered = written + dropped, through an outage of the database: the writer
    /// keeps its batch, the queue fills to its bound and drops, and what queued is written
    /// once the server is back.
    #[test]
    fn a_postgresql_outage_queues_then_drops_and_the_counts_add_up() {
        let mut server = health_e2e::postgres::PgServer::start().expect("start PostgreSQL");
        let target = pg_target(&server, "outage");
        let history = History::open_backend(
            &HistoryBackend::Postgres(Box::new(target)),
            "c1",
            Duration::from_secs(3600),
            50,
        )
        .expect("open");
        let sink = history.sink();
        let stats = history.stats();
        let wait_for = |what: &str, done: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !done() {
                assert!(std::time::Instant::now() < deadline, "timed out: {what}");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let offer = |from: usize, count: usize| {
            for i in from..from + count {
                let result = ActionResult {
                    action_id: format!("b-{i}"),
                    device_id: "loihi-0".to_string(),
                    action: "reset-soft".to_string(),
                    outcome: ActionOutcome::Succeeded as i32,
                    // Recent: retention must not take them.
                    started_at: Some(ms_timestamp(system_ms(SystemTime::now()))),
                    ..Default::default()
                };
                sink.action("n1", &result);
            }
        };
        offer(0, 20);
        wait_for("the first 20 written", &|| {
            stats.written_total.load(Ordering::Relaxed) == 20
        });
        // A reader connection is kept from before the outage: the query after it must not
        // fail on it.
        let reader = history.reader();
        assert_eq!(
            reader.query(&HistoryQuery::default()).expect("query").len(),
            20
        );
        server.stop().expect("stop PostgreSQL");
        offer(20, 500);
        wait_for("the outage noticed", &|| {
            !stats.available.load(Ordering::Relaxed)
        });
        let dropped = stats.dropped_total.load(Ordering::Relaxed);
        assert!(dropped > 0, "a queue of 50 cannot hold 500 records");
        server.restart().expect("restart PostgreSQL");
        wait_for("the queue drained", &|| {
            stats.written_total.load(Ordering::Relaxed)
                + stats.dropped_total.load(Ordering::Relaxed)
                == 520
        });
        assert!(stats.available.load(Ordering::Relaxed));
        assert_eq!(stats.offered_total.load(Ordering::Relaxed), 520);
        assert_eq!(stats.lost_total.load(Ordering::Relaxed), 0);
        history.close();
        let rows = reader
            .query(&HistoryQuery {
                limit: MAX_LIMIT,
                ..Default::default()
            })
            .expect("query");
        assert_eq!(
            rows.len() as u64,
            520 - stats.dropped_total.load(Ordering::Relaxed),
            "every record not dropped is in the database, once"
        );
    }
}
