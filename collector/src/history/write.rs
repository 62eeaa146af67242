//! The history's writer side: one transaction per batch of records, each record one or two
//! statements, and retention. Only the writer thread (`write_loop`) calls these.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::{system_ms, HistoryEvent, Record};

pub(super) fn write_batch(conn: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for record in batch {
        write_one(&tx, record)?;
    }
    tx.commit()
}

fn write_one(conn: &Connection, record: &Record) -> rusqlite::Result<()> {
    match record {
        Record::ConditionStarted {
            node,
            subject,
            device,
            code,
            severity,
            message,
            since_ms,
        } => {
            // An open row with another `since` is an earlier spell the agent has restarted
            // counting (an agent restart): it ended when this one began.
            conn.prepare_cached(
                "UPDATE conditions SET ended_ms = ?4 WHERE node = ?1 AND subject = ?2 \
                 AND code = ?3 AND ended_ms IS NULL AND since_ms <> ?4",
            )?
            .execute(params![node, subject, code, since_ms])?;
            conn.prepare_cached(
                "INSERT INTO conditions (node, subject, device, code, severity, message, \
                 since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (node, subject, code, since_ms) DO UPDATE SET ended_ms = NULL",
            )?
            .execute(params![
                node, subject, device, code, severity, message, since_ms
            ])?;
        }
        Record::ConditionEnded {
            node,
            subject,
            code,
            at_ms,
        } => end_condition(conn, node, subject, code, *at_ms)?,
        Record::NodeSeen {
            node,
            active,
            at_ms,
        } => close_unreported(conn, node, active, *at_ms)?,
        Record::Alert {
            fingerprint,
            node,
            subject,
            device,
            alertname,
            code,
            severity,
            status,
            message,
            at_ms,
            priority,
        } => {
            conn.prepare_cached(
                "INSERT INTO alert_events (fingerprint, node, subject, device, alertname, code, \
                 severity, status, message, at_ms, priority) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                fingerprint,
                node,
                subject,
                device,
                alertname,
                code,
                severity,
                status,
                message,
                at_ms,
                priority
            ])?;
        }
        Record::Action {
            node,
            action_id,
            device,
            action,
            outcome,
            message,
            caller,
            started_ms,
            duration_ms,
            audit_hash,
        } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO actions (node, action_id, device, action, outcome, \
                 message, caller, started_ms, duration_ms, audit_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                node,
                action_id,
                device,
                action,
                outcome,
                message,
                caller,
                started_ms,
                duration_ms,
                audit_hash
            ])?;
        }
        Record::Event(event) => write_event(conn, event)?,
        Record::SpellEnded {
            kind,
            node,
            id,
            at_ms,
        } => {
            conn.prepare_cached(
                "UPDATE events SET ended_ms = ?4, status = 'ENDED' WHERE kind = ?1 AND node = ?2 \
                 AND ref = ?3 AND spell = 1 AND ended_ms IS NULL",
            )?
            .execute(params![*kind as i32, node, id, at_ms])?;
        }
        Record::SpellsSeen {
            kind,
            node,
            open,
            at_ms,
        } => close_unseen_spells(conn, *kind as i32, node, open, *at_ms)?,
    }
    Ok(())
}

fn end_condition(
    conn: &Connection,
    node: &str,
    subject: &str,
    code: &str,
    at_ms: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE conditions SET ended_ms = ?4 WHERE node = ?1 AND subject = ?2 \
         AND code = ?3 AND ended_ms IS NULL",
    )?
    .execute(params![node, subject, code, at_ms])?;
    Ok(())
}

/// After a collector restart: the node's conditions still open here that its first report no
/// longer carries ended while the collector was away.
fn close_unreported(
    conn: &Connection,
    node: &str,
    active: &[(String, String)],
    at_ms: i64,
) -> rusqlite::Result<()> {
    let open: Vec<(i64, String, String)> = conn
        .prepare_cached(
            "SELECT id, subject, code FROM conditions WHERE node = ?1 AND ended_ms IS NULL",
        )?
        .query_map(params![node], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (id, subject, code) in open {
        if !active.iter().any(|(s, c)| *s == subject && *c == code) {
            conn.prepare_cached("UPDATE conditions SET ended_ms = ?2 WHERE id = ?1")?
                .execute(params![id, at_ms])?;
        }
    }
    Ok(())
}

/// The spells of `kind` still open for `node` that are not in `open` have ended.
fn close_unseen_spells(
    conn: &Connection,
    kind: i32,
    node: &str,
    open: &[String],
    at_ms: i64,
) -> rusqlite::Result<()> {
    let still_open: Vec<(i64, String)> = conn
        .prepare_cached(
            "SELECT id, ref FROM events WHERE kind = ?1 AND node = ?2 AND spell = 1 \
             AND ended_ms IS NULL",
        )?
        .query_map(params![kind, node], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (row, id) in still_open {
        if !open.contains(&id) {
            conn.prepare_cached("UPDATE events SET ended_ms = ?2, status = 'ENDED' WHERE id = ?1")?
                .execute(params![row, at_ms])?;
        }
    }
    Ok(())
}

/// A point event is a new row; a spell is upserted by (kind, node, id), keeping when it began.
fn write_event(conn: &Connection, event: &HistoryEvent) -> rusqlite::Result<()> {
    let spell = HistoryEvent::is_spell(event.kind);
    let status = match (spell, &event.ended_at, event.status.is_empty()) {
        (true, Some(_), true) => "ENDED",
        (true, None, true) => "ACTIVE",
        _ => event.status.as_str(),
    };
    conn.prepare_cached(
        "INSERT INTO events (kind, spell, at_ms, ended_ms, node, subject, name, status, message, \
         ref, caller, priority, audit_hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (kind, node, ref) WHERE spell = 1 DO UPDATE SET \
           ended_ms = excluded.ended_ms, status = excluded.status, \
           message = excluded.message, \
           caller = CASE WHEN excluded.caller = '' THEN caller ELSE excluded.caller END, \
           priority = CASE WHEN excluded.priority = '' THEN priority ELSE excluded.priority END, \
           audit_hash = CASE WHEN excluded.audit_hash = '' THEN audit_hash \
                        ELSE excluded.audit_hash END",
    )?
    .execute(params![
        event.kind as i32,
        i64::from(spell),
        event.at_ms(),
        event.ended_ms(),
        event.node,
        event.subject,
        event.name,
        status,
        event.message,
        event.id,
        event.caller,
        event.priority,
        event.audit_hash
    ])?;
    Ok(())
}

/// Deletes what is older than `retention` before `now`: ended conditions (by when they
/// ended; open ones are kept however old), alert transitions and actions. Returns the rows.
pub(super) fn prune(
    conn: &Connection,
    now: SystemTime,
    retention: Duration,
) -> rusqlite::Result<u64> {
    let cutoff = system_ms(now.checked_sub(retention).unwrap_or(UNIX_EPOCH));
    let mut rows = 0;
    for sql in [
        "DELETE FROM conditions WHERE ended_ms IS NOT NULL AND ended_ms < ?1",
        "DELETE FROM alert_events WHERE at_ms < ?1",
        "DELETE FROM actions WHERE started_ms < ?1",
        "DELETE FROM events WHERE COALESCE(ended_ms, CASE spell WHEN 1 THEN NULL ELSE at_ms END) < ?1",
    ] {
        rows += conn.execute(sql, params![cutoff])? as u64;
    }
    Ok(rows)
}
