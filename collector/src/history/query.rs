//! Reading the history back for `QueryHistory`: one read-only connection per query, one
//! SELECT per table with the filters inside it (so each can use its table's `(node, time)`
//! or time index), merged and ordered by time.
//!
//! Time filters: an entry matches `since` if it happened at or after it, or, for the kinds
//! with a duration (conditions, maintenance and silences), if it was still going on at it;
//! `until` is exclusive: entries that happened strictly before it. `limit` counts from the
//! end the order starts at: the newest entries by default, the oldest with `oldest_first`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use health_proto::v1::{HistoryEntry, HistoryKind};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use super::{ms_timestamp, system_ms, DEFAULT_LIMIT, MAX_LIMIT};

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

/// Reads the history on its own read-only connection per query.
#[derive(Debug, Clone)]
pub struct HistoryReader {
    pub(super) path: PathBuf,
}

impl HistoryReader {
    /// The entries matching `query` (see the module comment). Blocking: run it on the
    /// blocking pool.
    pub fn query(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>, String> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| format!("{}: {e}", self.path.display()))?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        query_on(&conn, query).map_err(|e| format!("{}: {e}", self.path.display()))
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
fn statement(query: &HistoryQuery) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let mut push = |value: Value| {
        values.push(value);
        values.len()
    };
    let node = query.node.clone().map(|node| push(Value::Text(node)));
    let device = query.device.clone().map(|device| push(Value::Text(device)));
    let since = query.since.map(|at| push(Value::Integer(system_ms(at))));
    let until = query.until.map(|at| push(Value::Integer(system_ms(at))));
    let limit = match query.limit {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let limit = push(Value::Integer(i64::from(limit)));

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
        "SELECT * FROM ({}) ORDER BY 2 {order}, 1 ASC LIMIT ?{limit}",
        branches.join(" UNION ALL ")
    );
    (sql, values)
}

pub(super) fn query_on(
    conn: &Connection,
    query: &HistoryQuery,
) -> rusqlite::Result<Vec<HistoryEntry>> {
    let (sql, values) = statement(query);
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
        let kind = match row.get::<_, i64>(0)? {
            1 => HistoryKind::Condition as i32,
            2 => HistoryKind::Alert as i32,
            3 => HistoryKind::Action as i32,
            other => i32::try_from(other).unwrap_or(0),
        };
        Ok(HistoryEntry {
            kind,
            at: Some(ms_timestamp(row.get(1)?)),
            node: row.get(2)?,
            subject: row.get(3)?,
            name: row.get(4)?,
            severity: row.get(5)?,
            status: row.get(6)?,
            message: row.get(7)?,
            ended_at: row.get::<_, Option<i64>>(8)?.map(ms_timestamp),
            id: row.get(9)?,
            caller: row.get(10)?,
            duration_ms: u64::try_from(row.get::<_, i64>(11)?).unwrap_or(0),
            priority: row.get(12)?,
            audit_hash: row.get(13)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
pub(super) fn plan(conn: &Connection, query: &HistoryQuery) -> Vec<String> {
    let (sql, values) = statement(query);
    let mut statement = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan");
    statement
        .query_map(rusqlite::params_from_iter(values), |row| {
            row.get::<_, String>(3)
        })
        .expect("plan rows")
        .collect::<rusqlite::Result<Vec<String>>>()
        .expect("plan rows")
}
