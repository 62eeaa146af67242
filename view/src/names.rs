//! Names of enum values and times as agent-ctl, its `--json` and the status page show them:
//! the proto prefix stripped (`HEALTH_STATE_OK` → `OK`), device kinds in lower case, times in
//! RFC 3339 to the second (UTC).

use std::time::{Duration, SystemTime};

use health_proto::v1 as pb;
use prost_types::Timestamp;

/// Strips the proto enum prefix: `HEALTH_STATE_OK` → `OK`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_string()
}

pub fn state(s: pb::HealthState) -> String {
    short(s.as_str_name(), "HEALTH_STATE_")
}
pub fn kind(k: pb::DeviceKind) -> String {
    short(k.as_str_name(), "DEVICE_KIND_").to_ascii_lowercase()
}
pub fn activity(a: pb::DeviceActivity) -> String {
    short(a.as_str_name(), "DEVICE_ACTIVITY_")
}
pub fn outcome(o: pb::ActionOutcome) -> String {
    short(o.as_str_name(), "ACTION_OUTCOME_")
}
pub fn severity(s: pb::Severity) -> String {
    short(s.as_str_name(), "SEVERITY_")
}
pub fn alert_status(s: pb::AlertStatus) -> String {
    short(s.as_str_name(), "ALERT_STATUS_")
}

/// RFC 3339 to the second, or `-` when unset or out of range.
pub fn time(t: &Option<Timestamp>) -> String {
    match t {
        Some(t) => match SystemTime::try_from(*t) {
            Ok(st) => humantime::format_rfc3339_seconds(st).to_string(),
            Err(_) => "-".to_string(),
        },
        None => "-".to_string(),
    }
}

/// `OPEN` (an alert still firing), `RESOLVED` (all resolved, not yet closed) or `CLOSED`.
pub fn incident_state(i: &pb::Incident) -> &'static str {
    match (i.open, i.resolved_at.is_some()) {
        (false, _) => "CLOSED",
        (true, true) => "RESOLVED",
        (true, false) => "OPEN",
    }
}

/// A duration in milliseconds as people read it in a post-mortem.
pub fn duration_ms(ms: u64) -> String {
    // Milliseconds under a minute (a time to detect is often well under a second), whole
    // seconds above: a post-mortem reads "2m 5s", not "2m 5s 12ms".
    let shown = if ms < 60_000 {
        Duration::from_millis(ms)
    } else {
        Duration::from_secs(ms / 1000)
    };
    humantime::format_duration(shown).to_string()
}

/// `P1`, `P0(escalated)`, or `-` when the collector gave none.
pub fn priority(priority: &str, escalated: bool) -> String {
    match (priority.is_empty(), escalated) {
        (true, _) => "-".to_string(),
        (false, true) => format!("{priority}(escalated)"),
        (false, false) => priority.to_string(),
    }
}

pub fn history_kind(k: pb::HistoryKind) -> &'static str {
    match k {
        pb::HistoryKind::Condition => "condition",
        pb::HistoryKind::Alert => "alert",
        pb::HistoryKind::Action => "action",
        pb::HistoryKind::Maintenance => "maintenance",
        pb::HistoryKind::Silence => "silence",
        pb::HistoryKind::Escalation => "escalation",
        pb::HistoryKind::Restart => "restart",
        pb::HistoryKind::Note => "note",
        pb::HistoryKind::Unspecified => "-",
    }
}

/// A history entry's severity, `-` for the kinds that have none.
pub fn history_severity(entry: &pb::HistoryEntry) -> String {
    match entry.severity() {
        pb::Severity::Unspecified => "-".to_string(),
        s => severity(s),
    }
}
