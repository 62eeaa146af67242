//! From a node's snapshot to `Alert` messages: which conditions alert, their fingerprints,
//! names and priorities, and the actions kept for the history. Pure functions of the
//! snapshot, apart from the alert book's state, which stays in `mod.rs`.

use super::*;

/// Hands the node's actions not seen before to the history. The agent repeats its last few
/// actions in every report; the ids seen are remembered (bounded) so each is written once.
pub(super) fn remember_actions(
    history: &HistorySink,
    node: &str,
    alerts: &mut NodeAlerts,
    snapshot: &NodeSnapshot,
) {
    for action in &snapshot.recent_actions {
        if action.action_id.is_empty() || alerts.seen_action_ids.contains(&action.action_id) {
            continue;
        }
        history.action(node, action);
        alerts.seen_action_ids.insert(action.action_id.clone());
        alerts.seen_actions.push_back(action.action_id.clone());
        if alerts.seen_actions.len() > SEEN_ACTIONS {
            if let Some(oldest) = alerts.seen_actions.pop_front() {
                alerts.seen_action_ids.remove(&oldest);
            }
        }
    }
}

/// The condition code of an alert built from a condition (its `name` is the code's name).
pub(super) fn alert_code(alert: &Alert) -> i32 {
    ConditionCode::from_str_name(&alert.name).map_or(0, |code| code as i32)
}

/// The firing alerts a snapshot carries, by fingerprint. `starts_at` is the condition's
/// `since`, which may be unset.
pub(super) fn alerts_in(
    node: &str,
    snapshot: &NodeSnapshot,
    priorities: &PriorityMap,
) -> BTreeMap<String, Alert> {
    let host = snapshot
        .host
        .iter()
        .flat_map(|host| host.conditions.iter().map(|c| (HOST_SUBJECT, "", 0, c)));
    let devices = snapshot.devices.iter().flat_map(|device| {
        let (id, kind) = device.identity.as_ref().map_or(("device", 0), |identity| {
            (identity.id.as_str(), identity.kind)
        });
        device.conditions.iter().map(move |c| (id, id, kind, c))
    });

    let mut alerts: BTreeMap<String, Alert> = BTreeMap::new();
    for (default_subject, device, kind, condition) in host.chain(devices) {
        if !is_alerting(condition.severity) {
            continue;
        }
        // The condition's own subject is more precise (a mount point, a process); fall back to
        // the device id or "host" so the fingerprint is never ambiguous.
        let subject = if condition.subject.is_empty() {
            default_subject
        } else {
            condition.subject.as_str()
        };
        let name = condition_name(condition.code);
        let fingerprint = fingerprint(node, subject, &name);
        let priority = priorities.priority_of(&name, condition.severity, kind);
        match alerts.get_mut(&fingerprint) {
            // The same condition twice in one snapshot: the worse one counts.
            Some(existing) if existing.severity >= condition.severity => {}
            Some(existing) => {
                *existing = alert_from(node, subject, device, name, condition, fingerprint);
                existing.priority = priority.to_string();
            }
            None => {
                let mut alert =
                    alert_from(node, subject, device, name, condition, fingerprint.clone());
                alert.priority = priority.to_string();
                alerts.insert(fingerprint, alert);
            }
        }
    }
    alerts
}

pub(super) fn alert_from(
    node: &str,
    subject: &str,
    device: &str,
    name: String,
    condition: &Condition,
    fingerprint: String,
) -> Alert {
    Alert {
        fingerprint,
        name,
        node: node.to_string(),
        subject: subject.to_string(),
        severity: condition.severity,
        message: condition.message.clone(),
        status: AlertStatus::Firing as i32,
        starts_at: condition.since,
        ends_at: None,
        runbook: condition.runbook.clone(),
        alertname: alertname(condition.code),
        pending_since: None,
        device: device.to_string(),
        ..Alert::default()
    }
}

pub(super) fn resolved(alert: Alert, now: SystemTime) -> Alert {
    Alert {
        status: AlertStatus::Resolved as i32,
        ends_at: Some(now.into()),
        ..alert
    }
}

pub(super) fn is_alerting(severity: i32) -> bool {
    severity == Severity::Warning as i32 || severity == Severity::Critical as i32
}

/// The condition code's proto name; codes newer than this build are kept opaque but distinct.
pub(super) fn condition_name(code: i32) -> String {
    ConditionCode::try_from(code).map_or_else(
        |_| format!("CONDITION_CODE_{code}"),
        |code| code.as_str_name().to_string(),
    )
}

pub(super) fn severity_name(severity: i32) -> &'static str {
    Severity::try_from(severity).map_or("UNKNOWN", |s| s.as_str_name())
}

pub(super) fn fingerprint(node: &str, subject: &str, name: &str) -> String {
    format!("{node}/{subject}/{name}")
}
