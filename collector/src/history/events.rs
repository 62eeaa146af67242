//! The history's generic event record, for everything that is not a condition, an alert
//! transition or an agent's action: maintenance windows, silences, escalations, restarts and
//! operator notes. Other modules build a `HistoryEvent` and hand it to `HistorySink::event`.
//!
//! Two shapes share the `events` table. MAINTENANCE and SILENCE are spells: they have a
//! beginning and an end and are keyed by (kind, node, id), so sending the same id again
//! updates the row (an extended silence, a maintenance window whose end moved) and an event
//! with `ended_at` closes it; its `at` stays when it first began. ESCALATION, RESTART and NOTE
//! are points in time: every event is a row of its own.
//!
//! Maintenance windows are read from the agents' snapshots (`Device.maintenance`,
//! `NodeSnapshot.maintenance`) by `MaintenanceSpells`, one per node in the alert book: a
//! window is written when first seen, again when its end or audit entry changes, and closed
//! when a report no longer carries it, like a condition spell.

use crate::silences::maintenance::reported_time;
use std::collections::BTreeMap;
use std::time::SystemTime;

use health_proto::v1::{HistoryKind, Maintenance, NodeSnapshot};

use super::{system_ms, timestamp_ms, HistorySink};

/// Subject of a maintenance window on the whole node.
const NODE_SUBJECT: &str = "node";

/// One entry of the `events` table. Empty strings are "not applicable".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// MAINTENANCE, SILENCE, ESCALATION, RESTART or NOTE (the other kinds have tables of
    /// their own and are ignored here).
    pub kind: HistoryKind,
    /// When it happened; for a spell, when it began.
    pub at: SystemTime,
    /// The node it is about; "" for the collector itself or a fleet-wide silence.
    pub node: String,
    /// A device id, "node", "agent", "collector", or an incident id for a note.
    pub subject: String,
    /// What it is: "MAINTENANCE", a silence's matchers, the alertname, "RESTART", "NOTE".
    pub name: String,
    /// ACTIVE / ENDED (maintenance), ACTIVE / EXPIRED (silences), or a short word.
    pub status: String,
    pub message: String,
    /// Spells: the key sent again to update or close it (a silence id); points: a reference
    /// such as an alert fingerprint.
    pub id: String,
    /// Who did it ("uid 1000", a certificate subject, "slurm"), if a person or tool did.
    pub caller: String,
    /// ESCALATION: the priority after it.
    pub priority: String,
    /// The audit entry behind it, the agent's or the collector's.
    pub audit_hash: String,
    /// Spells: when it ended; `None` while it goes on.
    pub ended_at: Option<SystemTime>,
    /// Points: a key under which the event is stored once, however many collectors write it
    /// (an escalation, an agent restart); "" for none.
    pub dedup: String,
    /// An escalation's alert (fingerprint, the condition's since in ms): the writer adds the
    /// alert's episode to `dedup`.
    pub episode_of: Option<(String, i64)>,
}

impl HistoryEvent {
    /// An event of `kind` about `node`/`subject` now-ish; the other fields empty.
    pub fn new(kind: HistoryKind, at: SystemTime, node: &str, subject: &str) -> Self {
        HistoryEvent {
            kind,
            at,
            node: node.to_string(),
            subject: subject.to_string(),
            name: String::new(),
            status: String::new(),
            message: String::new(),
            id: String::new(),
            caller: String::new(),
            priority: String::new(),
            audit_hash: String::new(),
            ended_at: None,
            dedup: String::new(),
            episode_of: None,
        }
    }

    /// The collector process starting.
    pub fn collector_started(at: SystemTime) -> Self {
        HistoryEvent {
            name: "RESTART".to_string(),
            status: "STARTED".to_string(),
            message: format!("health-collector {} started", env!("CARGO_PKG_VERSION")),
            ..HistoryEvent::new(HistoryKind::Restart, at, "", "collector")
        }
    }

    /// An agent reporting under a boot id the collector has not seen for a node it holds.
    pub fn agent_restarted(at: SystemTime, node: &str, old_boot: &str, new_boot: &str) -> Self {
        HistoryEvent {
            name: "RESTART".to_string(),
            status: "STARTED".to_string(),
            message: format!("agent restarted: boot id {old_boot} -> {new_boot}"),
            id: new_boot.to_string(),
            dedup: format!("restart|{node}|{new_boot}"),
            ..HistoryEvent::new(HistoryKind::Restart, at, node, "agent")
        }
    }

    /// Whether events of this kind are spells keyed by `id` (see the module comment).
    pub(super) fn is_spell(kind: HistoryKind) -> bool {
        matches!(kind, HistoryKind::Maintenance | HistoryKind::Silence)
    }

    pub(super) fn at_ms(&self) -> i64 {
        system_ms(self.at)
    }

    pub(super) fn ended_ms(&self) -> Option<i64> {
        self.ended_at.map(system_ms)
    }
}

/// A maintenance window as last written: its row id and what would make it worth writing again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    id: String,
    until_ms: i64,
    audit_hash: String,
}

/// The maintenance windows of one node that are open in the history, by subject.
#[derive(Debug, Default)]
pub struct MaintenanceSpells {
    open: BTreeMap<String, Written>,
    /// Whether a report of the node has been looked at since this collector started.
    seen: bool,
}

impl MaintenanceSpells {
    /// Writes the windows `snapshot` carries that are new or changed, and closes the ones it
    /// no longer carries. Writes nothing when nothing changed (the usual report).
    pub fn observe(
        &mut self,
        history: &HistorySink,
        node: &str,
        snapshot: &NodeSnapshot,
        now: SystemTime,
    ) {
        let node_window = snapshot
            .maintenance
            .as_ref()
            .map(|window| (NODE_SUBJECT, window));
        let device_windows = snapshot.devices.iter().filter_map(|device| {
            let id = device
                .identity
                .as_ref()
                .map(|identity| identity.id.as_str())?;
            device.maintenance.as_ref().map(|window| (id, window))
        });
        let mut current: BTreeMap<String, (Written, &Maintenance)> = BTreeMap::new();
        for (subject, window) in node_window.into_iter().chain(device_windows) {
            let started_ms = window.started_at.as_ref().map_or(0, timestamp_ms);
            let written = Written {
                id: format!("{subject}@{started_ms}"),
                until_ms: window.until.as_ref().map_or(0, timestamp_ms),
                audit_hash: window.audit_hash.clone(),
            };
            current.insert(subject.to_string(), (written, window));
        }
        let first = !self.seen;
        self.seen = true;
        if first {
            // After a collector restart, windows the history still has open for this node but
            // the node no longer carries ended while the collector was away.
            history.spells_seen(
                HistoryKind::Maintenance,
                node,
                current.values().map(|(w, _)| w.id.clone()).collect(),
                now,
            );
        }
        let gone: Vec<String> = self
            .open
            .keys()
            .filter(|subject| !current.contains_key(*subject))
            .cloned()
            .collect();
        for subject in gone {
            if let Some(written) = self.open.remove(&subject) {
                history.spell_ended(HistoryKind::Maintenance, node, &written.id, now);
            }
        }
        for (subject, (written, window)) in current {
            if self.open.get(&subject) == Some(&written) {
                continue;
            }
            history.event(maintenance_event(node, &subject, &written, window, now));
            self.open.insert(subject, written);
        }
    }

    /// The node was forgotten: whatever is open ends now.
    pub fn end_all(&mut self, history: &HistorySink, node: &str, now: SystemTime) {
        for written in std::mem::take(&mut self.open).into_values() {
            history.spell_ended(HistoryKind::Maintenance, node, &written.id, now);
        }
    }
}

fn maintenance_event(
    node: &str,
    subject: &str,
    written: &Written,
    window: &Maintenance,
    now: SystemTime,
) -> HistoryEvent {
    let began = reported_time(window.started_at, now).unwrap_or(now);
    let until = reported_time(window.until, now).map_or_else(
        || "no end given".to_string(),
        |at| format!("until {}", humantime::format_rfc3339_seconds(at)),
    );
    let source = if window.source.is_empty() {
        String::new()
    } else {
        format!(", {}", window.source)
    };
    HistoryEvent {
        name: "MAINTENANCE".to_string(),
        status: "ACTIVE".to_string(),
        message: format!(
            "{subject} in maintenance {until}: {}{source}",
            window.reason
        ),
        id: written.id.clone(),
        caller: window.by.clone(),
        audit_hash: written.audit_hash.clone(),
        ..HistoryEvent::new(HistoryKind::Maintenance, began, node, subject)
    }
}
