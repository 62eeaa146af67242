//! The history's writer side: one transaction per batch of records, each record one or two
//! statements, and retention in batches. Only the writer thread (`write_loop`) calls these,
//! on SQLite or PostgreSQL alike (`db.rs`).
//!
//! Several collectors may write into one PostgreSQL database (a sharded fleet, a failover), so
//! every write is idempotent where the same fact can arrive twice: a condition is keyed by
//! the agent's own `since`, an action by its id, a maintenance window or silence by its id, an
//! escalation or agent restart by its `dedup` key. An alert transition of a condition with a
//! known `since` follows the alert's episodes, read from what is already stored for (its
//! fingerprint, that `since`): PENDING opens an episode unless one is open, FIRING is kept
//! unless the episode's last FIRING had the same severity, RESOLVED and CLEARED close an open
//! episode and are dropped otherwise. So a second collector that sees the same episode after a
//! failover adds nothing, while a real second episode (after a maintenance window) or a
//! severity going back and forth is kept. What a collector writes only because it stopped
//! hearing from a node (NODE_STALE, the resolutions when it forgets the node) is
//! `Record::Absent`: skipped when another collector has heard from the node since this one
//! last did (`holders`), which is what a failover looks like from the collector the agent
//! left.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::db::{in_transaction, Cell, Db, DbError, Param};
use super::{system_ms, AlertRecord, HistoryEvent, Record};

/// Rows one retention statement deletes at most: each is its own short transaction, so a
/// large backlog never holds a long lock over the tables ingest writes to.
pub(super) const PRUNE_BATCH: usize = 5_000;

pub(super) fn write_batch(db: &mut dyn Db, batch: &[Record], me: &str) -> Result<(), DbError> {
    in_transaction(db, |db| {
        for record in batch {
            write_one(db, record, me)?;
        }
        Ok(())
    })
}

fn write_one(db: &mut dyn Db, record: &Record, me: &str) -> Result<(), DbError> {
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
            db.execute(
                "UPDATE conditions SET ended_ms = ?4 WHERE node = ?1 AND subject = ?2 \
                 AND code = ?3 AND ended_ms IS NULL AND since_ms < ?4",
                &[node.into(), subject.into(), code.into(), (*since_ms).into()],
            )?;
            db.execute(
                "INSERT INTO conditions (node, subject, device, code, severity, message, \
                 since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (node, subject, code, since_ms) DO UPDATE SET ended_ms = NULL",
                &[
                    node.into(),
                    subject.into(),
                    device.into(),
                    code.into(),
                    (*severity).into(),
                    message.into(),
                    (*since_ms).into(),
                ],
            )?;
        }
        Record::ConditionEnded {
            node,
            subject,
            code,
            at_ms,
        } => {
            db.execute(
                "UPDATE conditions SET ended_ms = ?4 WHERE node = ?1 AND subject = ?2 \
                 AND code = ?3 AND ended_ms IS NULL",
                &[node.into(), subject.into(), code.into(), (*at_ms).into()],
            )?;
        }
        Record::NodeSeen {
            node,
            active,
            at_ms,
        } => close_unreported(db, node, active, *at_ms)?,
        Record::Alert(alert) => write_alert(db, alert)?,
        Record::Action(action) => {
            db.execute(
                "INSERT INTO actions (node, action_id, device, action, outcome, \
                 message, caller, started_ms, duration_ms, audit_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (node, action_id) DO NOTHING",
                &[
                    (&action.node).into(),
                    (&action.action_id).into(),
                    (&action.device).into(),
                    (&action.action).into(),
                    (&action.outcome).into(),
                    (&action.message).into(),
                    (&action.caller).into(),
                    action.started_ms.into(),
                    action.duration_ms.into(),
                    (&action.audit_hash).into(),
                ],
            )?;
        }
        Record::Event(event) => write_event(db, event)?,
        Record::SpellEnded {
            kind,
            node,
            id,
            at_ms,
        } => {
            db.execute(
                "UPDATE events SET ended_ms = ?4, status = 'ENDED' WHERE kind = ?1 AND node = ?2 \
                 AND ref = ?3 AND spell = 1 AND ended_ms IS NULL",
                &[
                    (*kind as i32).into(),
                    node.into(),
                    id.into(),
                    (*at_ms).into(),
                ],
            )?;
        }
        Record::SpellsSeen {
            kind,
            node,
            open,
            at_ms,
        } => close_unseen_spells(db, *kind as i32, node, open, *at_ms)?,
        Record::Held { node, at_ms } => {
            db.execute(
                "INSERT INTO holders (node, collector, seen_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (node) DO UPDATE SET collector = excluded.collector, \
                 seen_ms = excluded.seen_ms WHERE excluded.seen_ms >= holders.seen_ms",
                &[node.into(), me.into(), (*at_ms).into()],
            )?;
        }
        Record::Absent {
            node,
            last_heard_ms,
            inner,
        } => {
            if !held_elsewhere(db, node, *last_heard_ms, me)? {
                write_one(db, inner, me)?;
            }
        }
    }
    Ok(())
}

/// Whether another collector has heard from `node` after this one last did.
fn held_elsewhere(
    db: &mut dyn Db,
    node: &str,
    last_heard_ms: i64,
    me: &str,
) -> Result<bool, DbError> {
    let rows = db.rows(
        "SELECT 1 FROM holders WHERE node = ?1 AND collector <> ?2 AND seen_ms > ?3",
        &[node.into(), me.into(), last_heard_ms.into()],
    )?;
    Ok(!rows.is_empty())
}

/// An alert transition, kept unless the stored episode already has it (module comment).
fn write_alert(db: &mut dyn Db, alert: &AlertRecord) -> Result<(), DbError> {
    if alert.since_ms > 0 {
        let last = db.rows(
            "SELECT status, severity FROM alert_events WHERE fingerprint = ?1 AND since_ms = ?2 \
             ORDER BY id DESC LIMIT 1",
            &[(&alert.fingerprint).into(), alert.since_ms.into()],
        )?;
        let last = last.first().map(|row| {
            (
                row.first().map(Cell::text).unwrap_or_default(),
                row.get(1).map_or(0, Cell::int),
            )
        });
        let open = last
            .as_ref()
            .is_some_and(|(status, _)| status == "PENDING" || status == "FIRING");
        let keep = match alert.status {
            "PENDING" => !open,
            "FIRING" => last != Some(("FIRING".to_string(), i64::from(alert.severity))),
            _ => open,
        };
        if !keep {
            return Ok(());
        }
    }
    db.execute(
        "INSERT INTO alert_events (fingerprint, node, subject, device, alertname, code, \
         severity, status, message, at_ms, priority, since_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        &[
            (&alert.fingerprint).into(),
            (&alert.node).into(),
            (&alert.subject).into(),
            (&alert.device).into(),
            (&alert.alertname).into(),
            (&alert.code).into(),
            alert.severity.into(),
            alert.status.into(),
            (&alert.message).into(),
            alert.at_ms.into(),
            (&alert.priority).into(),
            alert.since_ms.into(),
        ],
    )?;
    Ok(())
}

/// How many episodes of the alert `fingerprint` of the condition that began at `since_ms`
/// have ended: what tells an escalation in the next episode from a repeat of this one's.
fn episodes_ended(db: &mut dyn Db, fingerprint: &str, since_ms: i64) -> Result<i64, DbError> {
    let rows = db.rows(
        "SELECT count(*) FROM alert_events WHERE fingerprint = ?1 AND since_ms = ?2 \
         AND status IN ('RESOLVED', 'CLEARED')",
        &[fingerprint.into(), since_ms.into()],
    )?;
    Ok(rows
        .first()
        .and_then(|row| row.first())
        .map_or(0, Cell::int))
}

/// After a collector restart: the node's conditions still open here that its first report no
/// longer carries ended while the collector was away.
fn close_unreported(
    db: &mut dyn Db,
    node: &str,
    active: &[(String, String)],
    at_ms: i64,
) -> Result<(), DbError> {
    let open = db.rows(
        "SELECT id, subject, code FROM conditions WHERE node = ?1 AND ended_ms IS NULL",
        &[node.into()],
    )?;
    for row in open {
        let [id, subject, code] = &row[..] else {
            continue;
        };
        let (subject, code) = (subject.text(), code.text());
        if !active.iter().any(|(s, c)| *s == subject && *c == code) {
            db.execute(
                "UPDATE conditions SET ended_ms = ?2 WHERE id = ?1",
                &[id.int().into(), at_ms.into()],
            )?;
        }
    }
    Ok(())
}

/// The spells of `kind` still open for `node` that are not in `open` have ended.
fn close_unseen_spells(
    db: &mut dyn Db,
    kind: i32,
    node: &str,
    open: &[String],
    at_ms: i64,
) -> Result<(), DbError> {
    let still_open = db.rows(
        "SELECT id, ref FROM events WHERE kind = ?1 AND node = ?2 AND spell = 1 \
         AND ended_ms IS NULL",
        &[kind.into(), node.into()],
    )?;
    for row in still_open {
        let [id, reference] = &row[..] else {
            continue;
        };
        if !open.contains(&reference.text()) {
            db.execute(
                "UPDATE events SET ended_ms = ?2, status = 'ENDED' WHERE id = ?1",
                &[id.int().into(), at_ms.into()],
            )?;
        }
    }
    Ok(())
}

/// A point event is a new row (once per `dedup` key when it has one); a spell is upserted by
/// (kind, node, id), keeping when it began.
fn write_event(db: &mut dyn Db, event: &HistoryEvent) -> Result<(), DbError> {
    let spell = HistoryEvent::is_spell(event.kind);
    // An escalation's key names its episode, so the next episode can escalate again.
    let dedup = match (&event.episode_of, event.dedup.is_empty()) {
        (Some((fingerprint, since_ms)), false) => format!(
            "{}|{}",
            event.dedup,
            episodes_ended(db, fingerprint, *since_ms)?
        ),
        _ => event.dedup.clone(),
    };
    let status = match (spell, &event.ended_at, event.status.is_empty()) {
        (true, Some(_), true) => "ENDED",
        (true, None, true) => "ACTIVE",
        _ => event.status.as_str(),
    };
    let params: [Param<'_>; 14] = [
        (event.kind as i32).into(),
        i64::from(spell).into(),
        event.at_ms().into(),
        event.ended_ms().into(),
        (&event.node).into(),
        (&event.subject).into(),
        (&event.name).into(),
        status.into(),
        (&event.message).into(),
        (&event.id).into(),
        (&event.caller).into(),
        (&event.priority).into(),
        (&event.audit_hash).into(),
        (&dedup).into(),
    ];
    if !spell {
        db.execute(
            "INSERT INTO events (kind, spell, at_ms, ended_ms, node, subject, name, status, \
             message, ref, caller, priority, audit_hash, dedup) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
             ON CONFLICT (dedup) WHERE dedup <> '' DO NOTHING",
            &params,
        )?;
        return Ok(());
    }
    db.execute(
        "INSERT INTO events (kind, spell, at_ms, ended_ms, node, subject, name, status, message, \
         ref, caller, priority, audit_hash, dedup) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
         ON CONFLICT (kind, node, ref) WHERE spell = 1 DO UPDATE SET \
           ended_ms = excluded.ended_ms, status = excluded.status, \
           message = excluded.message, \
           caller = CASE WHEN excluded.caller = '' THEN events.caller ELSE excluded.caller END, \
           priority = CASE WHEN excluded.priority = '' THEN events.priority \
                      ELSE excluded.priority END, \
           audit_hash = CASE WHEN excluded.audit_hash = '' THEN events.audit_hash \
                        ELSE excluded.audit_hash END",
        &params,
    )?;
    Ok(())
}

/// The retention statements: what is older than the cutoff (`?1`), by table. Ended
/// conditions go by when they ended (open ones are kept however old), spells by when they
/// ended, the rest by when they happened.
const PRUNE: [(&str, &str); 5] = [
    ("conditions", "ended_ms IS NOT NULL AND ended_ms < ?1"),
    ("alert_events", "at_ms < ?1"),
    ("actions", "started_ms < ?1"),
    (
        "events",
        "COALESCE(ended_ms, CASE spell WHEN 1 THEN NULL ELSE at_ms END) < ?1",
    ),
    ("holders", "seen_ms < ?1"),
];

/// Statements one round of retention runs at most, so that a large backlog is deleted over
/// several rounds between batches of new records rather than in one long pause.
const PRUNE_STATEMENTS: usize = 20;

/// Deletes what is older than `retention` before `now`, at most `PRUNE_BATCH` rows per
/// statement, each its own transaction, at most `PRUNE_STATEMENTS` statements. Returns the
/// rows, and whether there is more to delete.
pub(super) fn prune(
    db: &mut dyn Db,
    now: SystemTime,
    retention: Duration,
) -> Result<(u64, bool), DbError> {
    let cutoff = system_ms(now.checked_sub(retention).unwrap_or(UNIX_EPOCH));
    let row_id = db.row_id();
    let (mut rows, mut statements) = (0, 0);
    for (table, older) in PRUNE {
        let sql = format!(
            "DELETE FROM {table} WHERE {row_id} IN \
             (SELECT {row_id} FROM {table} WHERE {older} LIMIT {PRUNE_BATCH})"
        );
        loop {
            if statements == PRUNE_STATEMENTS {
                return Ok((rows, true));
            }
            statements += 1;
            let deleted = db.execute(&sql, &[cutoff.into()])?;
            rows += deleted;
            if deleted < PRUNE_BATCH as u64 {
                break;
            }
        }
    }
    Ok((rows, false))
}
