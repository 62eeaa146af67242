//! Incidents: what on-call needs for the post-mortem, built from the history.
//!
//! An incident opens at the first alert that fires on a node and gathers that node's alerts,
//! condition spells, policy steps, operator actions, restarts, maintenance windows, silences
//! and escalations until every alert has resolved and stayed resolved for `close_after`. An
//! alert that fires again within `close_after` of the last resolve continues the same
//! incident: a flapping fault is one incident, not ten.
//!
//! Incidents are not a second store. They are derived from the history database each time
//! they are asked for, by [`group`], a pure function of one node's entries (oldest first), so
//! they are exactly as durable as the history (across collector restarts, within
//! `history_retention`) and can never disagree with it. Notes are history entries of kind
//! NOTE whose `id` is the incident's. The id is `inc-<first firing, unix ms>-<node>`: stable,
//! readable, and it names the node and the time to look at, so `GetIncident` reads only that
//! node's history around that time.
//!
//! Definitions, as the post-mortem template uses them:
//! - *detection*: the first alert that fired; *time to detect*: from the start of the
//!   condition behind it (its spell in the history; the firing itself when there is none, as
//!   for NODE_STALE) to that firing.
//! - *time to resolve*: from the first firing to the last resolve.
//! - *resolution*: the last action that succeeded on one of the incident's subjects before
//!   the last resolve (a policy's step or an operator's action, not a simulator's fault
//!   injection), with its audit hash.

pub mod query;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use health_proto::v1::{HistoryEntry, HistoryKind, Incident, IncidentNote, TimelineEntry};
use prost_types::Timestamp;

/// How far before an incident's first firing its lead-in is looked for: the condition spell
/// and early policy steps behind the detecting alert (an alert's `for` is rarely above a few
/// minutes; a longer lead-in shows as a shorter time to detect).
pub const LEAD_IN: Duration = Duration::from_secs(3600);

const PREFIX: &str = "inc-";

/// The incident id for a node's incident whose first alert fired at `opened_ms`.
pub fn incident_id(node: &str, opened_ms: i64) -> String {
    format!("{PREFIX}{opened_ms}-{node}")
}

/// The node and first-firing time an incident id names; `None` for anything else.
pub fn parse_id(id: &str) -> Option<(String, i64)> {
    let rest = id.strip_prefix(PREFIX)?;
    let (ms, node) = rest.split_once('-')?;
    if node.is_empty() || ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((node.to_string(), ms.parse().ok()?))
}

/// One node's incidents, oldest first, from its history entries (any order; every kind).
/// `now` decides whether the last one, quiet for less than `close_after`, is still open.
pub fn group(
    node: &str,
    entries: &[HistoryEntry],
    close_after: Duration,
    now: SystemTime,
) -> Vec<Incident> {
    let mut sorted: Vec<&HistoryEntry> = entries.iter().filter(|e| e.node == node).collect();
    sorted.sort_by_key(|e| (ms(e.at.as_ref()), e.kind));
    let close_ms = i64::try_from(close_after.as_millis()).unwrap_or(i64::MAX);
    let spans = alert_spans(&sorted, close_ms, system_ms(now));
    spans
        .into_iter()
        .map(|span| assemble(node, &span, &sorted))
        .collect()
}

/// The firing part of one incident: when it opened and (if so) resolved and closed, which
/// alerts fired, in order.
#[derive(Debug, Default)]
struct Span {
    opened_ms: i64,
    resolved_ms: Option<i64>,
    closed_ms: Option<i64>,
    detection: Option<HistoryEntry>,
    fingerprints: Vec<String>,
}

fn alert_spans(sorted: &[&HistoryEntry], close_ms: i64, now_ms: i64) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut current: Option<Span> = None;
    let mut firing: HashSet<String> = HashSet::new();
    for entry in sorted
        .iter()
        .filter(|e| e.kind == HistoryKind::Alert as i32)
    {
        let at = ms(entry.at.as_ref());
        match entry.status.as_str() {
            "FIRING" => {
                if let Some(span) = current.take() {
                    match span.resolved_ms {
                        Some(quiet) if at > quiet.saturating_add(close_ms) => {
                            spans.push(Span {
                                closed_ms: Some(quiet.saturating_add(close_ms)),
                                ..span
                            });
                        }
                        _ => current = Some(span),
                    }
                }
                let span = current.get_or_insert_with(|| Span {
                    opened_ms: at,
                    detection: Some((*entry).clone()),
                    ..Span::default()
                });
                span.resolved_ms = None;
                if !span.fingerprints.contains(&entry.id) {
                    span.fingerprints.push(entry.id.clone());
                }
                firing.insert(entry.id.clone());
            }
            // A suppressed alert (its subject went into maintenance) stops paging like a
            // resolved one.
            "RESOLVED" | "SUPPRESSED" if firing.remove(&entry.id) && firing.is_empty() => {
                if let Some(span) = current.as_mut() {
                    span.resolved_ms = Some(at);
                }
            }
            _ => {}
        }
    }
    if let Some(mut span) = current {
        if let Some(quiet) = span.resolved_ms {
            if now_ms >= quiet.saturating_add(close_ms) {
                span.closed_ms = Some(quiet.saturating_add(close_ms));
            }
        }
        spans.push(span);
    }
    spans
}

/// Node, subject and code of an alert fingerprint (`node/subject/CODE`; subjects may hold
/// slashes, as mount points do).
fn fingerprint_parts(fingerprint: &str) -> Option<(&str, &str)> {
    let (rest, code) = fingerprint.rsplit_once('/')?;
    let (_, subject) = rest.split_once('/')?;
    Some((subject, code))
}

fn assemble(node: &str, span: &Span, sorted: &[&HistoryEntry]) -> Incident {
    let id = incident_id(node, span.opened_ms);
    let subjects: BTreeSet<String> = span
        .fingerprints
        .iter()
        .filter_map(|f| fingerprint_parts(f).map(|(subject, _)| subject.to_string()))
        .collect();
    let first_condition_ms = span
        .detection
        .as_ref()
        .and_then(|d| condition_start(d, span.opened_ms, sorted))
        .unwrap_or(span.opened_ms);
    let start = first_condition_ms.min(span.opened_ms);
    let end = span.closed_ms.unwrap_or(i64::MAX);
    let within = |at: i64| at >= start && at <= end;

    let mut timeline = Vec::new();
    let mut notes = Vec::new();
    let mut alerts = Vec::new();
    let mut priority = String::new();
    for entry in sorted {
        if entry.kind == HistoryKind::Note as i32 {
            if entry.id == id {
                notes.push(IncidentNote {
                    at: entry.at,
                    by: entry.caller.clone(),
                    text: entry.message.clone(),
                    audit_hash: entry.audit_hash.clone(),
                });
                let what = format!("note: {}", entry.message);
                timeline.push(timeline_entry(entry, entry.at, &what, "added"));
            }
            continue;
        }
        let at = ms(entry.at.as_ref());
        // Spells (conditions, maintenance windows, silences) are two moments: began, ended.
        let spell = [
            HistoryKind::Condition,
            HistoryKind::Maintenance,
            HistoryKind::Silence,
        ]
        .iter()
        .any(|k| *k as i32 == entry.kind);
        if spell {
            add_spell(entry, &within, &mut timeline);
            continue;
        }
        if !within(at) {
            continue;
        }
        if entry.kind == HistoryKind::Alert as i32 {
            if entry.status == "FIRING" && !alerts.contains(&entry.name) {
                alerts.push(entry.name.clone());
            }
            if !entry.priority.is_empty() && (priority.is_empty() || entry.priority < priority) {
                priority = entry.priority.clone();
            }
        }
        timeline.push(timeline_entry(entry, entry.at, &what(entry), &entry.status));
    }
    timeline.sort_by_key(|t| ms(t.at.as_ref()));

    let resolution = span.resolved_ms.and_then(|resolved| {
        sorted
            .iter()
            .rfind(|e| {
                let at = ms(e.at.as_ref());
                // A simulator's fault injection is a test's tool, never the fix.
                e.kind == HistoryKind::Action as i32
                    && e.status == "SUCCEEDED"
                    && !e.name.starts_with("inject-fault")
                    && subjects.contains(&e.subject)
                    && at >= start
                    && at <= resolved
            })
            .map(|e| resolution_text(e))
    });
    let detection = span
        .detection
        .as_ref()
        .map(|d| format!("{} on {}", d.name, d.subject))
        .unwrap_or_default();
    let summary = summary(node, &detection, &alerts, span, resolution.as_deref());
    Incident {
        id,
        node: node.to_string(),
        open: span.closed_ms.is_none(),
        opened_at: Some(ms_timestamp(span.opened_ms)),
        resolved_at: span.resolved_ms.map(ms_timestamp),
        closed_at: span.closed_ms.map(ms_timestamp),
        priority,
        subjects: subjects.into_iter().collect(),
        alerts,
        detection,
        first_condition_at: Some(ms_timestamp(first_condition_ms)),
        time_to_detect_ms: u64::try_from(span.opened_ms - first_condition_ms).unwrap_or(0),
        time_to_resolve_ms: span
            .resolved_ms
            .map_or(0, |r| u64::try_from(r - span.opened_ms).unwrap_or(0)),
        resolution: resolution.unwrap_or_default(),
        timeline,
        notes,
        summary,
    }
}

/// When the condition behind the detecting alert began: the latest spell of that subject and
/// code that started at or before the firing.
fn condition_start(
    detection: &HistoryEntry,
    opened_ms: i64,
    sorted: &[&HistoryEntry],
) -> Option<i64> {
    let (subject, code) = fingerprint_parts(&detection.id)?;
    sorted
        .iter()
        .filter(|e| e.kind == HistoryKind::Condition as i32)
        .filter(|e| e.subject == subject && e.name == code)
        .map(|e| ms(e.at.as_ref()))
        .filter(|at| *at <= opened_ms && opened_ms - *at <= lead_in_ms())
        .max()
}

fn lead_in_ms() -> i64 {
    i64::try_from(LEAD_IN.as_millis()).unwrap_or(i64::MAX)
}

/// A spell is two moments on the timeline: it began, and (if it did) it ended.
fn add_spell(entry: &HistoryEntry, within: &dyn Fn(i64) -> bool, out: &mut Vec<TimelineEntry>) {
    let began = ms(entry.at.as_ref());
    let what = format!("{} on {}: {}", entry.name, entry.subject, entry.message);
    if within(began) {
        out.push(timeline_entry(entry, entry.at, &what, "began"));
    }
    if let Some(ended) = entry.ended_at {
        if within(ms(Some(&ended))) {
            let what = format!("{} on {}", entry.name, entry.subject);
            out.push(timeline_entry(entry, Some(ended), &what, "ended"));
        }
    }
}

fn what(entry: &HistoryEntry) -> String {
    let kind = HistoryKind::try_from(entry.kind).unwrap_or(HistoryKind::Unspecified);
    match kind {
        HistoryKind::Alert => format!("alert {} on {}", entry.name, entry.subject),
        HistoryKind::Action => {
            let mut text = format!("{} {}", entry.name, entry.subject);
            if !entry.message.is_empty() {
                text = format!("{text}: {}", entry.message);
            }
            text
        }
        _ => {
            let mut text = format!("{} {}", entry.name, entry.subject);
            if !entry.message.is_empty() {
                text = format!("{text}: {}", entry.message);
            }
            text.trim().to_string()
        }
    }
}

fn actor(entry: &HistoryEntry) -> String {
    if !entry.caller.is_empty() {
        return entry.caller.clone();
    }
    let kind = HistoryKind::try_from(entry.kind).unwrap_or(HistoryKind::Unspecified);
    match kind {
        HistoryKind::Condition => "agent".to_string(),
        _ => "collector".to_string(),
    }
}

fn timeline_entry(
    entry: &HistoryEntry,
    at: Option<Timestamp>,
    what: &str,
    outcome: &str,
) -> TimelineEntry {
    TimelineEntry {
        at,
        actor: actor(entry),
        what: what.to_string(),
        outcome: outcome.to_string(),
        audit_hash: entry.audit_hash.clone(),
        kind: entry.kind,
        subject: entry.subject.clone(),
    }
}

fn resolution_text(action: &HistoryEntry) -> String {
    let mut text = format!("{} on {} by {}", action.name, action.subject, action.caller);
    if !action.audit_hash.is_empty() {
        text = format!("{text} (audit {})", action.audit_hash);
    }
    text
}

fn summary(
    node: &str,
    detection: &str,
    alerts: &[String],
    span: &Span,
    resolution: Option<&str>,
) -> String {
    let state = match (span.closed_ms, span.resolved_ms) {
        (Some(_), _) => "closed",
        (None, Some(_)) => "resolved, waiting to stay resolved",
        (None, None) => "firing",
    };
    let mut text = format!(
        "{detection} on {node}; {} alert(s): {}; {state}",
        alerts.len(),
        alerts.join(", ")
    );
    if let Some(resolution) = resolution {
        text = format!("{text}; fixed by {resolution}");
    }
    text
}

fn ms(at: Option<&Timestamp>) -> i64 {
    at.map_or(0, |t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

fn system_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms_timestamp(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_765_000_000_000;

    fn at(ms: i64) -> Option<Timestamp> {
        Some(ms_timestamp(ms))
    }

    fn alert(t: i64, subject: &str, code: &str, status: &str) -> HistoryEntry {
        HistoryEntry {
            kind: HistoryKind::Alert as i32,
            at: at(t),
            node: "n1".into(),
            subject: subject.into(),
            name: if code == "THERMAL_CRITICAL" {
                "DeviceOverheating".into()
            } else {
                code.into()
            },
            status: status.into(),
            id: format!("n1/{subject}/{code}"),
            priority: "P0".into(),
            ..HistoryEntry::default()
        }
    }

    fn condition(t: i64, ended: Option<i64>, subject: &str, code: &str) -> HistoryEntry {
        HistoryEntry {
            kind: HistoryKind::Condition as i32,
            at: at(t),
            ended_at: ended.and_then(at),
            node: "n1".into(),
            subject: subject.into(),
            name: code.into(),
            status: if ended.is_some() { "ENDED" } else { "ACTIVE" }.into(),
            message: "95.0 C".into(),
            ..HistoryEntry::default()
        }
    }

    fn action(t: i64, subject: &str, name: &str, outcome: &str, hash: &str) -> HistoryEntry {
        HistoryEntry {
            kind: HistoryKind::Action as i32,
            at: at(t),
            node: "n1".into(),
            subject: subject.into(),
            name: name.into(),
            status: outcome.into(),
            id: format!("a-{t}"),
            caller: "policy:thermal".into(),
            audit_hash: hash.into(),
            ..HistoryEntry::default()
        }
    }

    fn now(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap())
    }

    const CLOSE: Duration = Duration::from_secs(300);

    #[test]
    fn a_fault_fixed_by_a_policy_is_one_incident_with_detection_resolution_and_times() {
        let entries = vec![
            condition(T0, Some(T0 + 40_000), "loihi-0", "THERMAL_CRITICAL"),
            alert(T0 + 1_000, "loihi-0", "THERMAL_CRITICAL", "PENDING"),
            alert(T0 + 5_000, "loihi-0", "THERMAL_CRITICAL", "FIRING"),
            action(
                T0 + 10_000,
                "loihi-0",
                "set-power-limit 70%",
                "SUCCEEDED",
                "abc",
            ),
            action(T0 + 2_000, "loihi-1", "calibrate", "SUCCEEDED", "other"),
            alert(T0 + 41_000, "loihi-0", "THERMAL_CRITICAL", "RESOLVED"),
        ];
        let incidents = group("n1", &entries, CLOSE, now(T0 + 41_000 + 300_000));
        assert_eq!(incidents.len(), 1);
        let i = &incidents[0];
        assert_eq!(i.id, format!("inc-{}-n1", T0 + 5_000));
        assert!(!i.open);
        assert_eq!(i.detection, "DeviceOverheating on loihi-0");
        assert_eq!(i.time_to_detect_ms, 5_000);
        assert_eq!(i.time_to_resolve_ms, 36_000);
        assert_eq!(i.closed_at, at(T0 + 41_000 + 300_000));
        assert_eq!(
            i.resolution,
            "set-power-limit 70% on loihi-0 by policy:thermal (audit abc)"
        );
        assert_eq!(i.subjects, vec!["loihi-0".to_string()]);
        assert_eq!(i.priority, "P0");
        // Oldest first, from the condition's start; the other device's action is on the node,
        // so it is on the timeline, but it is not the resolution.
        let whats: Vec<&str> = i.timeline.iter().map(|t| t.outcome.as_str()).collect();
        assert_eq!(
            whats,
            [
                "began",
                "PENDING",
                "SUCCEEDED",
                "FIRING",
                "SUCCEEDED",
                "ended",
                "RESOLVED"
            ]
        );
        assert!(i.timeline.iter().any(|t| t.audit_hash == "abc"));
    }

    #[test]
    fn an_alert_firing_again_within_close_after_continues_the_incident_and_later_opens_another() {
        let entries = vec![
            alert(T0, "loihi-0", "DEVICE_ERROR", "FIRING"),
            alert(T0 + 10_000, "loihi-0", "DEVICE_ERROR", "RESOLVED"),
            alert(T0 + 60_000, "loihi-0", "DEVICE_ERROR", "FIRING"),
            alert(T0 + 70_000, "loihi-0", "DEVICE_ERROR", "RESOLVED"),
            alert(T0 + 70_000 + 300_001, "host", "DISK_FULL", "FIRING"),
        ];
        let incidents = group("n1", &entries, CLOSE, now(T0 + 1_000_000));
        assert_eq!(incidents.len(), 2);
        assert_eq!(incidents[0].time_to_resolve_ms, 70_000);
        assert_eq!(incidents[0].closed_at, at(T0 + 370_000));
        assert!(!incidents[0].open);
        assert!(incidents[1].open);
        assert_eq!(incidents[1].resolved_at, None);
        assert_eq!(incidents[1].subjects, vec!["host".to_string()]);
    }

    #[test]
    fn an_incident_stays_open_until_every_alert_has_stayed_resolved_for_close_after() {
        let entries = vec![
            alert(T0, "loihi-0", "DEVICE_ERROR", "FIRING"),
            alert(T0 + 1_000, "loihi-1", "DEVICE_ERROR", "FIRING"),
            alert(T0 + 2_000, "loihi-0", "DEVICE_ERROR", "RESOLVED"),
        ];
        let open = group("n1", &entries, CLOSE, now(T0 + 3_600_000));
        assert!(open[0].open, "loihi-1 still fires");
        let mut entries = entries;
        entries.push(alert(T0 + 5_000, "loihi-1", "DEVICE_ERROR", "RESOLVED"));
        let quiet = group("n1", &entries, CLOSE, now(T0 + 5_000 + 299_000));
        assert!(quiet[0].open, "not yet quiet for close_after");
        assert_eq!(quiet[0].resolved_at, at(T0 + 5_000));
        let closed = group("n1", &entries, CLOSE, now(T0 + 5_000 + 300_000));
        assert!(!closed[0].open);
        assert_eq!(closed[0].alerts, vec!["DEVICE_ERROR".to_string()]);
        assert_eq!(closed[0].subjects.len(), 2);
    }

    #[test]
    fn notes_belong_to_their_incident_and_no_firing_means_no_incident() {
        let quiet = vec![
            condition(T0, Some(T0 + 1_000), "loihi-0", "THERMAL_WARNING"),
            alert(T0, "loihi-0", "THERMAL_WARNING", "PENDING"),
            alert(T0 + 1_000, "loihi-0", "THERMAL_WARNING", "CLEARED"),
        ];
        assert!(group("n1", &quiet, CLOSE, now(T0 + 10_000)).is_empty());

        let id = incident_id("n1", T0);
        let mut entries = vec![alert(T0, "loihi-0", "DEVICE_ERROR", "FIRING")];
        entries.push(HistoryEntry {
            kind: HistoryKind::Note as i32,
            at: at(T0 + 90_000_000),
            node: "n1".into(),
            id: id.clone(),
            caller: "uid 0".into(),
            message: "fan replaced".into(),
            audit_hash: "h".into(),
            ..HistoryEntry::default()
        });
        let incidents = group("n1", &entries, CLOSE, now(T0 + 100_000_000));
        assert_eq!(incidents[0].notes.len(), 1);
        assert_eq!(incidents[0].notes[0].text, "fan replaced");
        assert_eq!(incidents[0].notes[0].by, "uid 0");
        // No condition spell behind the alert: detected when it fired.
        assert_eq!(incidents[0].time_to_detect_ms, 0);
    }

    #[test]
    fn a_maintenance_window_on_the_node_is_on_the_timeline_from_start_to_end() {
        let window = HistoryEntry {
            kind: HistoryKind::Maintenance as i32,
            at: at(T0 + 2_000),
            ended_at: at(T0 + 9_000),
            node: "n1".into(),
            subject: "loihi-0".into(),
            name: "MAINTENANCE".into(),
            caller: "uid 0".into(),
            audit_hash: "m".into(),
            ..HistoryEntry::default()
        };
        let entries = vec![
            alert(T0, "loihi-0", "DEVICE_ERROR", "FIRING"),
            window,
            alert(T0 + 3_000, "loihi-0", "DEVICE_ERROR", "SUPPRESSED"),
        ];
        let i = &group("n1", &entries, CLOSE, now(T0 + 1_000_000))[0];
        let moments: Vec<(&str, &str)> = i
            .timeline
            .iter()
            .map(|t| (t.actor.as_str(), t.outcome.as_str()))
            .collect();
        assert_eq!(
            moments,
            [
                ("collector", "FIRING"),
                ("uid 0", "began"),
                ("collector", "SUPPRESSED"),
                ("uid 0", "ended")
            ]
        );
        assert_eq!(
            i.resolved_at,
            at(T0 + 3_000),
            "suppressed counts as resolved"
        );
    }

    #[test]
    fn ids_round_trip_and_junk_is_refused() {
        assert_eq!(
            parse_id(&incident_id("rack-3-node-7", T0)),
            Some(("rack-3-node-7".to_string(), T0))
        );
        for junk in [
            "",
            "inc-",
            "inc-12",
            "inc--n1",
            "inc-12x-n1",
            "incident-12-n1",
        ] {
            assert_eq!(parse_id(junk), None, "{junk:?}");
        }
        assert_eq!(
            fingerprint_parts("n1//mnt/data/DISK_FULL"),
            Some(("/mnt/data", "DISK_FULL"))
        );
    }
}
