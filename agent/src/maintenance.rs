//! Operator maintenance windows: which subjects (a device, or the whole node) are in
//! maintenance, until when, why and by whom.
//!
//! A window is started, extended and ended only through the action path
//! ([`crate::action::Actions::run`], audited like every action); this module holds them, ends
//! them at `until` with an audit entry of its own (caller `agent`, phase `control`, action
//! `maintenance-expired`), and rebuilds them from the audit log's tail after a restart, so a
//! window outlives the agent that started it. It sits left of `node` (the node shows the
//! windows in every snapshot, the remediation engine reads them there) and knows nothing of
//! devices: the action path checks that a device exists before it starts a window on it.
//! SLURM's maintenance (a board's MAINTENANCE condition) is not held here: the node derives
//! it from the device's conditions at each snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, Entry, Phase, Record, Recorded};
use crate::model::{MaintenanceSource, MaintenanceWindow};

/// The subject name of the whole node, in requests, audit entries and replies.
pub const NODE: &str = "node";
/// Audit `action` names of the window's life.
pub const STARTED: &str = "maintenance-start";
pub const ENDED: &str = "maintenance-end";
pub const EXPIRED: &str = "maintenance-expired";
/// What every line that starts, ends or expires a window contains (its `action`), so a restore
/// can skip the others without parsing them.
pub const ENTRY_MARK: &str = "\"maintenance-";

/// How often windows are checked for their end: a window ends within this of its `until`.
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// The windows in force, by subject (`node` or a device id).
#[derive(Debug, Default)]
pub struct Windows {
    inner: Mutex<BTreeMap<String, MaintenanceWindow>>,
}

impl Windows {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MaintenanceWindow>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts or extends (or shortens) the window on `subject`: a window already in force
    /// keeps its `started_at`; `until`, `reason`, `by` and the hash are the new ones.
    pub fn start(&self, subject: &str, mut window: MaintenanceWindow) -> MaintenanceWindow {
        let mut all = self.lock();
        let now = SystemTime::now();
        if let Some(old) = all.get(subject).filter(|w| w.holds(now)) {
            window.started_at = old.started_at;
        }
        all.insert(subject.to_string(), window.clone());
        window
    }

    /// Ends the window on `subject`; `None` when there was none in force.
    pub fn end(&self, subject: &str) -> Option<MaintenanceWindow> {
        let now = SystemTime::now();
        self.lock().remove(subject).filter(|w| w.holds(now))
    }

    /// The window in force on `subject` at `now`, if any.
    pub fn get(&self, subject: &str, now: SystemTime) -> Option<MaintenanceWindow> {
        self.lock().get(subject).filter(|w| w.holds(now)).cloned()
    }

    /// Records the audit entry that started or extended the window (known only once that
    /// entry is written, after the window is in force).
    pub fn set_audit_hash(&self, subject: &str, hash: &str) {
        if let Some(w) = self.lock().get_mut(subject) {
            w.audit_hash = hash.to_string();
        }
    }

    /// Every window in force at `now`, the node's first, then devices by id.
    pub fn list(&self, now: SystemTime) -> Vec<(String, MaintenanceWindow)> {
        let all = self.lock();
        let mut out: Vec<(String, MaintenanceWindow)> = all
            .iter()
            .filter(|(_, w)| w.holds(now))
            .map(|(s, w)| (s.clone(), w.clone()))
            .collect();
        out.sort_by_key(|(s, _)| (s != NODE, s.clone()));
        out
    }

    /// Removes and returns the windows that have ended by `now`.
    fn take_ended(&self, now: SystemTime) -> Vec<(String, MaintenanceWindow)> {
        let mut all = self.lock();
        let ended: Vec<String> = all
            .iter()
            .filter(|(_, w)| !w.holds(now))
            .map(|(s, _)| s.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|s| all.remove(&s).map(|w| (s, w)))
            .collect()
    }

    /// Ends the windows whose `until` has passed, one `maintenance-expired` entry each.
    pub async fn expire(&self, audit: &Arc<AuditLog>) {
        for (subject, w) in self.take_ended(SystemTime::now()) {
            let until = w.until.map(humantime::format_rfc3339_millis);
            let entry = Entry {
                caller: "agent".into(),
                role: "agent".into(),
                action: EXPIRED.into(),
                target: subject.clone(),
                args: json!({
                    "until": until.map(|u| u.to_string()),
                    "reason": w.reason,
                    "by": w.by,
                    "started_by_hash": w.audit_hash,
                }),
                outcome: Some(Recorded::Succeeded),
                message: format!(
                    "maintenance on {subject} ended by itself ({}); policies may act again",
                    w.describe()
                ),
                ..Default::default()
            };
            tracing::info!(target: "audit", subject = %subject, "{}", entry.message);
            if let Err(e) = audit.append(Phase::Control, entry).await {
                tracing::error!(target: "audit", error = %e, subject = %subject, "could not record the end of a maintenance window");
            }
        }
    }

    /// Rebuilds the windows from the audit log's tail, oldest first: a successful
    /// `maintenance-start` (its `end` entry) opens or extends one, a successful
    /// `maintenance-end` or a `maintenance-expired` closes it. Windows whose `until` passed
    /// while the agent was down are kept for [`Self::expire`], which records their end.
    pub fn restore(&self, records: &[Record]) {
        let mut all = self.lock();
        for r in records {
            let e = &r.entry;
            let succeeded = e.outcome == Some(Recorded::Succeeded);
            match (r.phase, e.action.as_str()) {
                (Phase::End, STARTED) if succeeded => {
                    let Some(window) = window_of(r) else { continue };
                    let started_at = all
                        .get(&e.target)
                        .map_or(window.started_at, |w| w.started_at);
                    all.insert(
                        e.target.clone(),
                        MaintenanceWindow {
                            started_at,
                            ..window
                        },
                    );
                }
                (Phase::End, ENDED) if succeeded => {
                    all.remove(&e.target);
                }
                (Phase::Control, EXPIRED) => {
                    all.remove(&e.target);
                }
                _ => {}
            }
        }
    }
}

/// The window a `maintenance-start` end entry records: `until` from its args, the caller,
/// the reason, and the entry's own hash.
fn window_of(r: &Record) -> Option<MaintenanceWindow> {
    let e = &r.entry;
    let until = humantime::parse_rfc3339_weak(e.args["until"].as_str()?).ok()?;
    let started_at = humantime::parse_rfc3339_weak(&r.time).unwrap_or_else(|_| SystemTime::now());
    Some(MaintenanceWindow {
        until: Some(until),
        reason: e.args["reason"].as_str().unwrap_or_default().to_string(),
        by: e.caller.clone(),
        started_at,
        audit_hash: r.hash.clone().unwrap_or_default(),
        source: MaintenanceSource::Operator,
    })
}

/// Ends windows at their `until`, until cancelled.
pub async fn run_expiry(windows: Arc<Windows>, audit: Arc<AuditLog>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => windows.expire(&audit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(until_in: Duration, by: &str) -> MaintenanceWindow {
        let now = SystemTime::now();
        MaintenanceWindow {
            until: Some(now + until_in),
            reason: "swap fan".into(),
            by: by.into(),
            started_at: now,
            audit_hash: "h".into(),
            source: MaintenanceSource::Operator,
        }
    }

    #[test]
    fn extending_keeps_the_start_and_the_node_lists_first() {
        let w = Windows::default();
        let first = w.start("loihi-0", window(Duration::from_secs(60), "a"));
        let second = w.start("loihi-0", window(Duration::from_secs(600), "b"));
        assert_eq!(second.started_at, first.started_at);
        assert_eq!(second.by, "b");
        w.start(NODE, window(Duration::from_secs(60), "a"));
        let listed: Vec<String> = w
            .list(SystemTime::now())
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(listed, ["node", "loihi-0"]);
        assert!(w.end("loihi-0").is_some());
        assert!(w.end("loihi-0").is_none(), "ended once");
    }

    #[tokio::test]
    async fn an_ended_window_is_recorded_and_gone_and_a_restore_skips_it() {
        let dir = tempfile::tempdir().unwrap();
        let audit = AuditLog::open(&dir.path().join("audit.jsonl"));
        let w = Windows::default();
        w.start("loihi-0", window(Duration::from_millis(1), "uid 0"));
        w.start("loihi-1", window(Duration::from_secs(600), "uid 0"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.get("loihi-0", SystemTime::now()).is_none());
        w.expire(&audit).await;
        let records = crate::audit::recent_entries(audit.path(), 1 << 20);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].phase, Phase::Control);
        assert_eq!(records[0].entry.action, EXPIRED);
        assert_eq!(records[0].entry.caller, "agent");
        assert!(records[0].entry.message.contains("swap fan"));
        assert!(w.get("loihi-1", SystemTime::now()).is_some());
    }

    #[test]
    fn restore_follows_start_extend_end_and_expiry() {
        let rec = |phase: Phase, action: &str, target: &str, until: &str, hash: &str| Record {
            seq: 1,
            time: "2026-12-07T05:00:00.000Z".into(),
            phase,
            entry: Entry {
                caller: "uid 1000".into(),
                action: action.into(),
                target: target.into(),
                args: json!({"until": until, "reason": "fan"}),
                outcome: Some(Recorded::Succeeded),
                ..Default::default()
            },
            prev_hash: String::new(),
            hash: Some(hash.into()),
        };
        let later = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(3600))
            .to_string();
        let records = [
            rec(Phase::End, STARTED, "a", &later, "h1"),
            rec(Phase::End, STARTED, "a", &later, "h2"),
            rec(Phase::End, STARTED, "b", &later, "h3"),
            rec(Phase::End, ENDED, "b", "", "h4"),
            rec(Phase::End, STARTED, "c", &later, "h5"),
            rec(Phase::Control, EXPIRED, "c", "", "h6"),
            rec(Phase::Begin, STARTED, "d", &later, "h7"),
        ];
        let w = Windows::default();
        w.restore(&records);
        let listed = w.list(SystemTime::now());
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0].0, "a");
        assert_eq!(listed[0].1.audit_hash, "h2", "the extension's entry");
        assert_eq!(listed[0].1.by, "uid 1000");
    }
}
