//! Alert priorities (P0..P3) and their escalation.
//!
//! The runbooks classify a page by urgency: P0 hardware failure, P1 device offline, P2
//! degradation, P3 the rest; an incident's SEV-n is P(n-1). Every alert the book raises gets a
//! priority from the `[priorities]` map (condition code x severity x device kind, most specific
//! rule wins, defaults below), which the Alertmanager push carries as the `priority` label and
//! the history keeps.
//!
//! An alert still firing `escalate_after` (per priority) after it began firing is escalated
//! once: re-sent one priority higher (P0 stays P0) with `escalated="true"`, and written to the
//! history as an ESCALATION. The book keeps the escalation times in an `EscalationClock`, a
//! set ordered by due time that the sweeper pops from the head, like pending alerts: a sweep
//! costs nothing when nothing is due, never a pass over every alert. Entries of alerts that
//! resolved before their time are removed when they resolve; any left behind are recognised
//! as stale when popped (the alert's `escalate_at` no longer matches) and skipped.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use health_proto::v1::{Alert, DeviceKind, Severity};

/// An alert's urgency; P0 is the most urgent. Ordered so that P0 < P3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    P0,
    P1,
    P2,
    P3,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Priority::P0, Priority::P1, Priority::P2, Priority::P3];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
        }
    }

    /// "P0".."P3" as written in the config and on alerts.
    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// One step more urgent; P0 is already the top.
    pub fn higher(self) -> Priority {
        match self {
            Priority::P0 | Priority::P1 => Priority::P0,
            Priority::P2 => Priority::P1,
            Priority::P3 => Priority::P2,
        }
    }

    fn index(self) -> usize {
        match self {
            Priority::P0 => 0,
            Priority::P1 => 1,
            Priority::P2 => 2,
            Priority::P3 => 3,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The runbooks' classification, by condition code; every code not listed is P3.
pub const DEFAULT_RULES: [(&str, Priority); 13] = [
    // Hardware failure.
    ("DEVICE_MISSING", Priority::P0),
    ("RESET_FAILED", Priority::P0),
    ("REMEDIATION_EXHAUSTED", Priority::P0),
    ("THERMAL_CRITICAL", Priority::P0),
    // Device offline.
    ("DEVICE_UNRESPONSIVE", Priority::P1),
    ("NODE_STALE", Priority::P1),
    // The solver offline (AnalogPDESolverDown): its unit down, its health URL failing, its
    // port closed. The runbook's Application Down is the device-offline class of the service.
    ("SERVICE_DOWN", Priority::P1),
    ("SERVICE_UNHEALTHY", Priority::P1),
    ("PORT_NOT_LISTENING", Priority::P1),
    // Degradation.
    ("THERMAL_WARNING", Priority::P2),
    ("CALIBRATION_DRIFT", Priority::P2),
    ("LINK_DEGRADED", Priority::P2),
    ("ILL_CONDITIONED", Priority::P2),
];

/// How long an alert of each priority may fire before it is escalated; `None`: never.
///
/// P0 at 15 min: the runbook escalates a critical alert unresolved for 30 min, and a hardware
/// failure should reach the next person before that. P1 (a device offline) at the runbook's
/// 30 min. P2 (degradation) at 4 h: a shift's worth of a slowly worsening part is worth a
/// second look, but not a page at night. P3 never: informational pages do not grow by waiting.
pub const DEFAULT_ESCALATE_AFTER: [(Priority, Option<Duration>); 4] = [
    (Priority::P0, Some(Duration::from_secs(15 * 60))),
    (Priority::P1, Some(Duration::from_secs(30 * 60))),
    (Priority::P2, Some(Duration::from_secs(4 * 3600))),
    (Priority::P3, None),
];

/// One `[[priorities.rule]]`: `code` always, `severity` and `kind` when the rule is narrower.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PriorityRule {
    /// Condition code proto name, e.g. "DEVICE_ERROR".
    pub code: String,
    /// `Severity` value (WARNING or CRITICAL); `None`: any.
    pub severity: Option<i32>,
    /// `DeviceKind` value; `None`: any subject, host alerts included.
    pub kind: Option<i32>,
}

/// The priority of every alert and when it escalates, built from `[priorities]`.
#[derive(Debug, Clone)]
pub struct PriorityMap {
    rules: HashMap<PriorityRule, Priority>,
    escalate_after: [Option<Duration>; 4],
}

impl Default for PriorityMap {
    fn default() -> Self {
        PriorityMap::new(std::iter::empty(), std::iter::empty())
    }
}

impl PriorityMap {
    /// The defaults, then `rules` over them (a written rule for a code and nothing narrower
    /// replaces that code's default), then `escalate_after` over the default times.
    pub fn new(
        rules: impl IntoIterator<Item = (PriorityRule, Priority)>,
        escalate_after: impl IntoIterator<Item = (Priority, Option<Duration>)>,
    ) -> Self {
        let mut map: HashMap<PriorityRule, Priority> = DEFAULT_RULES
            .iter()
            .map(|(code, priority)| {
                let rule = PriorityRule {
                    code: (*code).to_string(),
                    severity: None,
                    kind: None,
                };
                (rule, *priority)
            })
            .collect();
        map.extend(rules);
        let mut times = [None; 4];
        for (priority, after) in DEFAULT_ESCALATE_AFTER.into_iter().chain(escalate_after) {
            times[priority.index()] = after;
        }
        PriorityMap {
            rules: map,
            escalate_after: times,
        }
    }

    /// The most specific rule for this alert: code+severity+kind, then code+kind, then
    /// code+severity, then code alone; P3 when no rule names the code.
    pub fn priority_of(&self, code: &str, severity: i32, kind: i32) -> Priority {
        let kind = (kind != DeviceKind::Unspecified as i32).then_some(kind);
        let severity = (severity != Severity::Unspecified as i32).then_some(severity);
        let candidates = [
            (severity, kind),
            (None, kind),
            (severity, None),
            (None, None),
        ];
        candidates
            .into_iter()
            .find_map(|(severity, kind)| {
                let rule = PriorityRule {
                    code: code.to_string(),
                    severity,
                    kind,
                };
                self.rules.get(&rule).copied()
            })
            .unwrap_or(Priority::P3)
    }

    pub fn escalate_after(&self, priority: Priority) -> Option<Duration> {
        self.escalate_after[priority.index()]
    }
}

/// Escalates a firing alert at `now`: one priority higher, `escalated`. Returns the priority
/// it had and how long it had fired; `None` (and no change) if its priority is not P0..P3.
pub fn escalate(
    map: &PriorityMap,
    alert: &mut Alert,
    now: SystemTime,
) -> Option<(Priority, Duration)> {
    let from = Priority::parse(&alert.priority)?;
    let after = map.escalate_after(from).unwrap_or_default();
    alert.priority = from.higher().to_string();
    alert.escalated = true;
    alert.escalated_at = Some(now.into());
    tracing::warn!(fingerprint = %alert.fingerprint, from = %from, to = %alert.priority, after = %humantime::format_duration(after), "alert escalated");
    Some((from, after))
}

/// Firing alerts by the time they escalate: (due, node, fingerprint).
#[derive(Debug, Default)]
pub struct EscalationClock {
    due: BTreeSet<(Instant, String, String)>,
}

impl EscalationClock {
    /// Schedules an alert that began firing at `fired_at` with `priority`; returns when it
    /// escalates, or `None` if its priority never does.
    pub fn schedule(
        &mut self,
        map: &PriorityMap,
        priority: Priority,
        fired_at: Instant,
        node: &str,
        fingerprint: &str,
    ) -> Option<Instant> {
        let when = fired_at.checked_add(map.escalate_after(priority)?)?;
        self.due
            .insert((when, node.to_string(), fingerprint.to_string()));
        Some(when)
    }

    /// The alert resolved (or was otherwise dropped) before it escalated.
    pub fn cancel(&mut self, when: Option<Instant>, node: &str, fingerprint: &str) {
        if let Some(when) = when {
            self.due
                .remove(&(when, node.to_string(), fingerprint.to_string()));
        }
    }

    /// The next alert due by `at`, removed from the clock: (due, node, fingerprint).
    pub fn pop_due(&mut self, at: Instant) -> Option<(Instant, String, String)> {
        if self.due.first().is_some_and(|first| first.0 <= at) {
            self.due.pop_first()
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.due.len()
    }
}

/// The `kind` a rule may name: the `DeviceKind` proto name without its prefix, lower case
/// ("loihi2", "spinnaker", "photonic", "analog_crossbar").
pub fn device_kind(name: &str) -> Option<i32> {
    let upper = format!("DEVICE_KIND_{}", name.to_ascii_uppercase());
    DeviceKind::from_str_name(&upper)
        .filter(|kind| *kind != DeviceKind::Unspecified)
        .map(|kind| kind as i32)
}

/// The kinds a rule may name, for error messages.
pub fn device_kind_names() -> Vec<String> {
    [
        DeviceKind::Loihi2,
        DeviceKind::Spinnaker,
        DeviceKind::Photonic,
        DeviceKind::AnalogCrossbar,
    ]
    .iter()
    .map(|kind| {
        kind.as_str_name()
            .trim_start_matches("DEVICE_KIND_")
            .to_ascii_lowercase()
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(code: &str, severity: Option<Severity>, kind: Option<DeviceKind>) -> PriorityRule {
        PriorityRule {
            code: code.to_string(),
            severity: severity.map(|s| s as i32),
            kind: kind.map(|k| k as i32),
        }
    }

    const CRIT: i32 = Severity::Critical as i32;
    const WARN: i32 = Severity::Warning as i32;
    const LOIHI: i32 = DeviceKind::Loihi2 as i32;
    const NONE: i32 = DeviceKind::Unspecified as i32;

    #[test]
    fn the_defaults_follow_the_runbooks() {
        let map = PriorityMap::default();
        for code in [
            "DEVICE_MISSING",
            "RESET_FAILED",
            "REMEDIATION_EXHAUSTED",
            "THERMAL_CRITICAL",
        ] {
            assert_eq!(map.priority_of(code, CRIT, LOIHI), Priority::P0, "{code}");
        }
        assert_eq!(
            map.priority_of("DEVICE_UNRESPONSIVE", CRIT, NONE),
            Priority::P1
        );
        assert_eq!(map.priority_of("NODE_STALE", CRIT, NONE), Priority::P1);
        for code in [
            "THERMAL_WARNING",
            "CALIBRATION_DRIFT",
            "LINK_DEGRADED",
            "ILL_CONDITIONED",
        ] {
            assert_eq!(map.priority_of(code, WARN, LOIHI), Priority::P2, "{code}");
        }
        assert_eq!(map.priority_of("DISK_FULL", CRIT, NONE), Priority::P3);
        assert_eq!(
            map.priority_of("CONDITION_CODE_999", CRIT, NONE),
            Priority::P3
        );
        assert_eq!(
            map.escalate_after(Priority::P0),
            Some(Duration::from_secs(900))
        );
        assert_eq!(map.escalate_after(Priority::P3), None);
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let map = PriorityMap::new(
            [
                (rule("DEVICE_ERROR", None, None), Priority::P2),
                (
                    rule("DEVICE_ERROR", Some(Severity::Critical), None),
                    Priority::P1,
                ),
                (
                    rule("DEVICE_ERROR", None, Some(DeviceKind::Loihi2)),
                    Priority::P1,
                ),
                (
                    rule(
                        "DEVICE_ERROR",
                        Some(Severity::Critical),
                        Some(DeviceKind::Loihi2),
                    ),
                    Priority::P0,
                ),
                // Replaces the default for the code.
                (rule("THERMAL_CRITICAL", None, None), Priority::P1),
            ],
            [],
        );
        assert_eq!(map.priority_of("DEVICE_ERROR", CRIT, LOIHI), Priority::P0);
        assert_eq!(map.priority_of("DEVICE_ERROR", WARN, LOIHI), Priority::P1);
        assert_eq!(map.priority_of("DEVICE_ERROR", CRIT, NONE), Priority::P1);
        assert_eq!(
            map.priority_of("DEVICE_ERROR", WARN, DeviceKind::Photonic as i32),
            Priority::P2
        );
        assert_eq!(
            map.priority_of("THERMAL_CRITICAL", CRIT, LOIHI),
            Priority::P1
        );
        // The others keep their defaults.
        assert_eq!(map.priority_of("RESET_FAILED", CRIT, LOIHI), Priority::P0);
    }

    #[test]
    fn escalation_goes_one_step_up_and_stops_at_p0() {
        assert_eq!(Priority::P3.higher(), Priority::P2);
        assert_eq!(Priority::P1.higher(), Priority::P0);
        assert_eq!(Priority::P0.higher(), Priority::P0);
        assert_eq!(Priority::parse("P2"), Some(Priority::P2));
        assert_eq!(Priority::parse("p2"), None);
    }

    #[test]
    fn the_clock_gives_back_what_is_due_in_order_and_forgets_cancelled_entries() {
        let map = PriorityMap::new([], [(Priority::P2, Some(Duration::from_secs(10)))]);
        let mut clock = EscalationClock::default();
        let t0 = Instant::now();
        let a = clock.schedule(&map, Priority::P2, t0, "n1", "n1/a/X");
        let b = clock.schedule(&map, Priority::P0, t0, "n1", "n1/b/Y");
        assert_eq!(clock.schedule(&map, Priority::P3, t0, "n1", "n1/c/Z"), None);
        assert_eq!(a, Some(t0 + Duration::from_secs(10)));
        assert!(clock.pop_due(t0 + Duration::from_secs(9)).is_none());
        clock.cancel(b, "n1", "n1/b/Y");
        let due = clock.pop_due(t0 + Duration::from_secs(3600));
        assert_eq!(due.map(|(_, _, f)| f), Some("n1/a/X".to_string()));
        assert_eq!(clock.len(), 0);
    }

    #[test]
    fn device_kinds_are_named_without_their_prefix() {
        assert_eq!(device_kind("loihi2"), Some(LOIHI));
        assert_eq!(device_kind("LOIHI2"), Some(LOIHI));
        assert_eq!(device_kind("unspecified"), None);
        assert_eq!(device_kind("tpu"), None);
        assert!(device_kind_names().contains(&"analog_crossbar".to_string()));
    }
}
