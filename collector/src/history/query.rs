//! Reading the history back for `QueryHistory`: one read-only connection per query, one
//! SELECT per table with the filters inside it (so each can use its table's `(node, time)`
//! or time index), merged and ordered by time.
//!
//! Time filters: an entry matches `since` if it happened at or after it, or, for the kinds
//! with a duration (conditions, maintenance and silences), if it was still going on at it;
//! `until` is exclusive: entries that happened strictly before it. `limit` counts from the
//! end the order starts at: the newest entries by default, the oldest with `oldest_first`.

use std::time::SystemTime;

use health_proto::v1::{HistoryEntry, HistoryKind};

use super::db::{Cell, Db, DbError, Param};
use super::{ms_timestamp, system_ms, Store, DEFAULT_LIMIT, MAX_LIMIT};

/// What a `QueryHistory` asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub node: Option<String>,
    /// Matches the device id, or the subject (a mount point, "host").
    pub device: Option<String>,
    pub since: Option<SystemTime>,
    /// Exclusive.
    pub until: Option<SystemTime>,
    pub limit: u32,
    pub oldest_first: bool,
    /// Alert transitions only: what incidents are grouped by, without reading the rest.
    pub alerts_only: bool,
}

/// Reads the history: on SQLite a read-only connection per query, on PostgreSQL a connection
/// from a small pool.
#[derive(Clone)]
pub struct HistoryReader {
    pub(super) store: Store,
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryReader")
            .field("store", &self.store.describe())
            .finish()
    }
}

impl HistoryReader {
    /// The entries matching `query` (see the module comment). Blocking: run it on the
    /// blocking pool.
    pub fn query(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, String> {
        let error = |e: DbError| format!("{}: {e}", self.store.describe());
        self.store
            .with_reader(&mut |db| query_on(db, query))
            .map_err(error)
    }
}

/// One table's part of the query: its columns in `HistoryEntry` order, and which of its
/// columns the filters apply to.
struct Branch {
    /// kind, at, node, subject, name, severity, status, message, ended, id, caller,
    /// duration_ms, priority, audit_hash
    select: &'static str,
    node: &'static str,
    device: &'static str,
    subject: &'static str,
    at: &'static str,
    /// The `since` filter, `?S` standing for the parameter: spells still going on at `since`
    /// match too.
    since: &'static str,
}

const BRANCHES: [Branch; 4] = [
    Branch {
        select: "SELECT 1 AS kind, since_ms AS at, node, subject, code AS name, severity, \
                 CASE WHEN ended_ms IS NULL THEN 'ACTIVE' ELSE 'ENDED' END AS status, message, \
                 ended_ms AS ended, '' AS id, '' AS caller, 0 AS duration_ms, '' AS priority, \
                 '' AS audit_hash FROM conditions",
        node: "node",
        device: "device",
        subject: "subject",
        at: "since_ms",
        since: "(ended_ms IS NULL OR ended_ms >= ?S)",
    },
    Branch {
        select: "SELECT 2, at_ms, node, subject, alertname, severity, status, message, NULL, \
                 fingerprint, '', 0, priority, '' FROM alert_events",
        node: "node",
        device: "device",
        subject: "subject",
        at: "at_ms",
        since: "at_ms >= ?S",
    },
    Branch {
        select: "SELECT 3, started_ms, node, device, action, 0, outcome, message, NULL, \
                 action_id, caller, duration_ms, '', audit_hash FROM actions",
        node: "node",
        device: "device",
        subject: "device",
        at: "started_ms",
        since: "started_ms >= ?S",
    },
    Branch {
        select: "SELECT kind, at_ms, node, subject, name, 0, status, message, ended_ms, ref, \
                 caller, 0, priority, audit_hash FROM events",
        node: "node",
        device: "subject",
        subject: "subject",
        at: "at_ms",
        since: "(at_ms >= ?S OR (spell = 1 AND (ended_ms IS NULL OR ended_ms >= ?S)))",
    },
];

/// The SQL and its parameters for `query`: each branch filtered on its own columns.
fn statement(query: &HistoryQuery) -> (String, Vec<Param<'_>>) {
    let mut values: Vec<Param<'_>> = Vec::new();
    let mut push = |value: Param<'static>| {
        values.push(value);
        values.len()
    };
    let node = query.node.as_ref().map(|_| push(Param::Null));
    let device = query.device.as_ref().map(|_| push(Param::Null));
    let since = query.since.map(|at| push(Param::Int(system_ms(at))));
    let until = query.until.map(|at| push(Param::Int(system_ms(at))));
    let limit = match query.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let limit = push(Param::Int(i64::from(limit)));
    // The text parameters borrow from `query`; placed after the closure's last use.
    if let (Some(n), Some(node)) = (node, &query.node) {
        values[n - 1] = Param::Text(node);
    }
    if let (Some(d), Some(device)) = (device, &query.device) {
        values[d - 1] = Param::Text(device);
    }

    let branches: Vec<String> = BRANCHES
        .iter()
        .filter(|branch| !query.alerts_only || branch.select.contains("FROM alert_events"))
        .map(|branch| {
            let mut filters = Vec::new();
            if let Some(n) = node {
                filters.push(format!("{} = ?{n}", branch.node));
            }
            if let Some(d) = device {
                filters.push(format!(
                    "({} = ?{d} OR {} = ?{d})",
                    branch.device, branch.subject
                ));
            }
            if let Some(s) = since {
                filters.push(branch.since.replace("?S", &format!("?{s}")));
            }
            if let Some(u) = until {
                filters.push(format!("{} < ?{u}", branch.at));
            }
            if filters.is_empty() {
                branch.select.to_string()
            } else {
                format!("{} WHERE {}", branch.select, filters.join(" AND "))
            }
        })
        .collect();
    let order = if query.oldest_first { "ASC" } else { "DESC" };
    // By position (2 = at, 1 = kind): the column names come from the first branch, which
    // `alerts_only` leaves out.
    let sql = format!(
        "SELECT * FROM ({}) AS entries ORDER BY 2 {order}, 1 ASC LIMIT ?{limit}",
        branches.join(" UNION ALL ")
    );
    (sql, values)
}

pub(super) fn query_on(
    db: &mut dyn Db,
    query: &HistoryQuery,
) -> Result<Vec<HistoryEntry>, DbError> {
    let (sql, values) = statement(query);
    let rows = db.rows(&sql, &values)?;
    Ok(rows.iter().filter_map(|row| entry(row)).collect())
}

/// A row of the union (columns in `Branch::select` order) as an entry.
fn entry(row: &[Cell]) -> Option<HistoryEntry> {
    let [kind, at, node, subject, name, severity, status, message, ended, id, caller, duration, priority, audit_hash] =
        row
    else {
        return None;
    };
    let kind = match kind.int() {
        1 => HistoryKind::Condition as i32,
        2 => HistoryKind::Alert as i32,
        3 => HistoryKind::Action as i32,
        other => i32::try_from(other).unwrap_or(0),
    };
    Some(HistoryEntry {
        kind,
        at: Some(ms_timestamp(at.int())),
        node: node.text(),
        subject: subject.text(),
        name: name.text(),
        severity: i32::try_from(severity.int()).unwrap_or(0),
        status: status.text(),
        message: message.text(),
        ended_at: ended.opt_int().map(ms_timestamp),
        id: id.text(),
        caller: caller.text(),
        duration_ms: u64::try_from(duration.int()).unwrap_or(0),
        priority: priority.text(),
        audit_hash: audit_hash.text(),
    })
}

/// PostgreSQL's plan for `query`, one line a step, with sequential scans priced out so the
/// plan shows which indexes can serve it (the tests' tables are too small to need them).
#[cfg(test)]
pub(super) fn pg_plan(db: &mut dyn Db, query: &HistoryQuery) -> Vec<String> {
    let (sql, values) = statement(query);
    db.batch("SET enable_seqscan = off").expect("set");
    db.rows(&format!("EXPLAIN {sql}"), &values)
        .expect("plan")
        .into_iter()
        .map(|row| row.first().map(Cell::text).unwrap_or_default())
        .collect()
}

/// SQLite's query plan for `query` (tests check that each branch uses an index).
#[cfg(test)]
pub(super) fn plan(db: &mut dyn Db, query: &HistoryQuery) -> Vec<String> {
    let (sql, values) = statement(query);
    db.rows(&format!("EXPLAIN QUERY PLAN {sql}"), &values)
        .expect("plan")
        .into_iter()
        .map(|row| row.get(3).map(Cell::text).unwrap_or_default())
        .collect()
}
