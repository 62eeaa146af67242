//! The collector's own alert evaluation, so WatchAlerts works without a Prometheus.
//!
//! An alert is a WARNING or CRITICAL condition in a node's latest snapshot (a host condition
//! or a device condition). It fires when it first appears, fires again when its severity
//! changes, and resolves when the next applied snapshot of the node no longer carries it.
//! Besides those, the collector raises NODE_STALE itself when a node stops reporting, and
//! resolves it when the node reports again.
//!
//! When the fleet forgets a node (no report for `forget_after`: a decommissioned host), every
//! alert still active for it, NODE_STALE included, is resolved with a message saying so, and
//! the node's state here is dropped; if it reports again later, its alerts start afresh.
//!
//! Alerts are identified by a fingerprint `node/subject/CODE`, stable across fire and resolve,
//! as Alertmanager-style consumers expect. The active set lives in memory only: after a
//! collector restart the first report of each node fires its alerts again.
//!
//! Ordering: the fleet numbers every applied snapshot of a node with a generation; evaluations
//! are applied here only in increasing generation, so two streams of the same node (an agent
//! reconnecting while its old stream is still draining) or a sweep racing a report cannot
//! leave an old alert state behind. Generations are fleet-wide, so this also holds when a
//! forgotten node reports again before its forgetting has reached this module.
//!
//! Events are sent on a broadcast channel while the lock is held, so every watcher sees them
//! in the order the active set changed. Like the fleet module, this one reads the agents'
//! snapshots and builds the `Alert` messages directly, without knowing about gRPC transport.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use health_proto::v1::{
    Alert, AlertEvent, AlertStatus, Condition, ConditionCode, NodeSnapshot, Severity,
};
use prost_types::Timestamp;
use tokio::sync::broadcast;

/// Subject of the NODE_STALE alert: it is about the node as a whole.
const NODE_SUBJECT: &str = "node";
/// Default subject of a host condition that names none.
const HOST_SUBJECT: &str = "host";
const NODE_STALE_RUNBOOK: &str = "Check that health-agent is running on the node \
    (systemctl status health-agent), that the node is up, and that it can reach the collector.";

/// An active alert and the send time of the report that last fired it.
#[derive(Debug, Clone)]
struct Firing {
    alert: Alert,
    report_sent_at: Option<Timestamp>,
}

/// One node's active alerts.
#[derive(Debug, Default)]
struct NodeAlerts {
    /// Generation of the last snapshot (or staleness) evaluated; older ones are ignored.
    generation: u64,
    /// Alerts from the snapshot's conditions, by fingerprint.
    conditions: BTreeMap<String, Firing>,
    /// The collector's own NODE_STALE alert, while the node is stale.
    stale: Option<Firing>,
}

/// The active alert set and the channel watchers subscribe to.
pub struct Alerts {
    nodes: Mutex<BTreeMap<String, NodeAlerts>>,
    events: broadcast::Sender<AlertEvent>,
}

impl Alerts {
    /// `watch_buffer` is how many events a watcher may fall behind before it skips ahead.
    pub fn new(watch_buffer: usize) -> Self {
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        Alerts {
            nodes: Mutex::new(BTreeMap::new()),
            events,
        }
    }

    /// Evaluates a node's newly applied snapshot: fires new alerts, re-fires those whose
    /// severity changed, resolves those gone, and resolves NODE_STALE (the node reported).
    ///
    /// `generation` comes from the fleet (`Applied::Current`); `report_sent_at` is the agent's
    /// send time, carried on the events so watchers can measure latency.
    pub fn observe(
        &self,
        node: &str,
        generation: u64,
        snapshot: &NodeSnapshot,
        report_sent_at: Option<Timestamp>,
        now: SystemTime,
    ) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let book = nodes.entry(node.to_string()).or_default();
        if generation <= book.generation {
            return;
        }
        book.generation = generation;

        let mut current = alerts_in(node, snapshot);
        for alert in current.values_mut() {
            if alert.starts_at.is_none() {
                // The agent did not say since when; the report is the best evidence we have.
                alert.starts_at = report_sent_at.or_else(|| Some(now.into()));
            }
        }

        // Resolved: active before, absent now.
        let gone: Vec<String> = book
            .conditions
            .keys()
            .filter(|fingerprint| !current.contains_key(*fingerprint))
            .cloned()
            .collect();
        for fingerprint in gone {
            if let Some(firing) = book.conditions.remove(&fingerprint) {
                self.publish(resolved(firing.alert, now), report_sent_at);
            }
        }

        for (fingerprint, alert) in current {
            match book.conditions.get_mut(&fingerprint) {
                None => {
                    tracing::info!(fingerprint = %fingerprint, severity = severity_name(alert.severity), "alert firing");
                    self.publish(alert.clone(), report_sent_at);
                    book.conditions.insert(
                        fingerprint,
                        Firing {
                            alert,
                            report_sent_at,
                        },
                    );
                }
                Some(firing) if firing.alert.severity != alert.severity => {
                    tracing::info!(fingerprint = %fingerprint, severity = severity_name(alert.severity), "alert severity changed");
                    // Keep when it started: it is the same problem, now better or worse.
                    let starts_at = firing.alert.starts_at;
                    firing.alert = Alert { starts_at, ..alert };
                    firing.report_sent_at = report_sent_at;
                    self.publish(firing.alert.clone(), report_sent_at);
                }
                Some(firing) => {
                    // Same alert, same severity: the message numbers may have moved. Keep the
                    // latest text for new watchers, but do not notify: that would be noise.
                    firing.alert.message = alert.message;
                    firing.alert.runbook = alert.runbook;
                }
            }
        }

        if let Some(stale) = book.stale.take() {
            tracing::info!(node, "node reporting again: NODE_STALE resolved");
            self.publish(resolved(stale.alert, now), report_sent_at);
        }
    }

    /// Fires NODE_STALE for a node the sweeper found silent. `generation` is the one of the
    /// node's last applied snapshot; if a newer snapshot was evaluated meanwhile, the node has
    /// reported again and nothing fires.
    pub fn node_stale(
        &self,
        node: &str,
        generation: u64,
        silent_for: Duration,
        stale_after: Duration,
        now: SystemTime,
    ) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let book = nodes.entry(node.to_string()).or_default();
        if generation < book.generation || book.stale.is_some() {
            return;
        }
        book.generation = generation;
        let alert = Alert {
            fingerprint: fingerprint(node, NODE_SUBJECT, ConditionCode::NodeStale.as_str_name()),
            name: ConditionCode::NodeStale.as_str_name().to_string(),
            node: node.to_string(),
            subject: NODE_SUBJECT.to_string(),
            severity: Severity::Critical as i32,
            message: format!(
                "no report from {node} for {}s (stale after {})",
                silent_for.as_secs(),
                humantime::format_duration(stale_after)
            ),
            status: AlertStatus::Firing as i32,
            starts_at: Some(now.into()),
            ends_at: None,
            runbook: NODE_STALE_RUNBOOK.to_string(),
        };
        tracing::warn!(fingerprint = %alert.fingerprint, "alert firing");
        self.publish(alert.clone(), None);
        book.stale = Some(Firing {
            alert,
            report_sent_at: None,
        });
    }

    /// Resolves every active alert of a node the fleet has just forgotten, and drops the node's
    /// state. `generation` is the one of the node's last applied snapshot; if a newer snapshot
    /// was evaluated meanwhile, the node has come back (as a new node) and nothing changes.
    pub fn forget(
        &self,
        node: &str,
        generation: u64,
        silent_for: Duration,
        forget_after: Duration,
        now: SystemTime,
    ) {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if nodes
            .get(node)
            .is_none_or(|book| generation < book.generation)
        {
            return;
        }
        let Some(book) = nodes.remove(node) else {
            return;
        };
        let message = format!(
            "node {node} forgotten after {} without reports (forget_after {})",
            humantime::format_duration(Duration::from_secs(silent_for.as_secs())),
            humantime::format_duration(forget_after)
        );
        let mut resolved_count: usize = 0;
        for firing in book.stale.into_iter().chain(book.conditions.into_values()) {
            let alert = Alert {
                message: message.clone(),
                ..resolved(firing.alert, now)
            };
            self.publish(alert, None);
            resolved_count += 1;
        }
        if resolved_count > 0 {
            tracing::info!(
                node,
                resolved = resolved_count,
                "node forgotten: its alerts resolved"
            );
        }
    }

    /// Every alert firing now (sorted by node, then fingerprint), and a receiver for every
    /// event after that moment.
    pub fn watch(&self) -> (Vec<AlertEvent>, broadcast::Receiver<AlertEvent>) {
        // Subscribe under the lock: events are sent under it too, so nothing falls in between.
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.events.subscribe();
        let firing = nodes
            .values()
            .flat_map(|book| book.stale.iter().chain(book.conditions.values()))
            .map(|firing| AlertEvent {
                alert: Some(firing.alert.clone()),
                report_sent_at: firing.report_sent_at,
            })
            .collect();
        (firing, receiver)
    }

    fn publish(&self, alert: Alert, report_sent_at: Option<Timestamp>) {
        // An error only means nobody is watching right now.
        let _ = self.events.send(AlertEvent {
            alert: Some(alert),
            report_sent_at,
        });
    }
}

/// The firing alerts a snapshot carries, by fingerprint. `starts_at` is the condition's
/// `since`, which may be unset.
fn alerts_in(node: &str, snapshot: &NodeSnapshot) -> BTreeMap<String, Alert> {
    let host = snapshot
        .host
        .iter()
        .flat_map(|host| host.conditions.iter().map(|c| (HOST_SUBJECT, c)));
    let devices = snapshot.devices.iter().flat_map(|device| {
        let id = device
            .identity
            .as_ref()
            .map_or("device", |identity| identity.id.as_str());
        device.conditions.iter().map(move |c| (id, c))
    });

    let mut alerts: BTreeMap<String, Alert> = BTreeMap::new();
    for (default_subject, condition) in host.chain(devices) {
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
        match alerts.get_mut(&fingerprint) {
            // The same condition twice in one snapshot: the worse one counts.
            Some(existing) if existing.severity >= condition.severity => {}
            Some(existing) => *existing = alert_from(node, subject, name, condition, fingerprint),
            None => {
                let alert = alert_from(node, subject, name, condition, fingerprint.clone());
                alerts.insert(fingerprint, alert);
            }
        }
    }
    alerts
}

fn alert_from(
    node: &str,
    subject: &str,
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
    }
}

fn resolved(alert: Alert, now: SystemTime) -> Alert {
    Alert {
        status: AlertStatus::Resolved as i32,
        ends_at: Some(now.into()),
        ..alert
    }
}

fn is_alerting(severity: i32) -> bool {
    severity == Severity::Warning as i32 || severity == Severity::Critical as i32
}

/// The condition code's proto name; codes newer than this build are kept opaque but distinct.
fn condition_name(code: i32) -> String {
    ConditionCode::try_from(code).map_or_else(
        |_| format!("CONDITION_CODE_{code}"),
        |code| code.as_str_name().to_string(),
    )
}

fn severity_name(severity: i32) -> &'static str {
    Severity::try_from(severity).map_or("UNKNOWN", |s| s.as_str_name())
}

fn fingerprint(node: &str, subject: &str, name: &str) -> String {
    format!("{node}/{subject}/{name}")
}

/// Used only by the tests, to look at the active set without a watcher.
#[cfg(test)]
impl Alerts {
    fn active_fingerprints(&self) -> Vec<String> {
        self.watch()
            .0
            .into_iter()
            .filter_map(|event| event.alert.map(|alert| alert.fingerprint))
            .collect()
    }

    /// Nodes this module holds state for, alerting or not.
    fn tracked_nodes(&self) -> Vec<String> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_proto::v1::{Device, DeviceIdentity, HostHealth};

    fn condition(code: ConditionCode, severity: Severity, message: &str) -> Condition {
        Condition {
            code: code as i32,
            severity: severity as i32,
            subject: String::new(),
            message: message.to_string(),
            since: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            runbook: "cool it down".to_string(),
        }
    }

    fn snapshot(
        device_conditions: Vec<Condition>,
        host_conditions: Vec<Condition>,
    ) -> NodeSnapshot {
        NodeSnapshot {
            node: "n1".to_string(),
            host: Some(HostHealth {
                conditions: host_conditions,
                ..Default::default()
            }),
            devices: vec![Device {
                identity: Some(DeviceIdentity {
                    id: "loihi-0".to_string(),
                    ..Default::default()
                }),
                conditions: device_conditions,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn sent_at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn drain(rx: &mut broadcast::Receiver<AlertEvent>) -> Vec<AlertEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn alert_of(event: &AlertEvent) -> &Alert {
        event.alert.as_ref().expect("event carries an alert")
    }

    #[test]
    fn a_warning_condition_fires_once() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        let warm = snapshot(
            vec![condition(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "82 C",
            )],
            vec![condition(
                ConditionCode::HostLoadHigh,
                Severity::Info,
                "load 3",
            )],
        );
        alerts.observe("n1", 1, &warm, sent_at(10), SystemTime::now());
        alerts.observe("n1", 2, &warm, sent_at(11), SystemTime::now());

        let events = drain(&mut rx);
        assert_eq!(
            events.len(),
            1,
            "INFO conditions do not alert; repeats do not re-fire"
        );
        let alert = alert_of(&events[0]);
        assert_eq!(alert.fingerprint, "n1/loihi-0/THERMAL_WARNING");
        assert_eq!(alert.name, "THERMAL_WARNING");
        assert_eq!(alert.subject, "loihi-0");
        assert_eq!(alert.status, AlertStatus::Firing as i32);
        assert_eq!(alert.severity, Severity::Warning as i32);
        assert_eq!(alert.message, "82 C");
        assert_eq!(alert.runbook, "cool it down");
        assert_eq!(alert.starts_at, sent_at(1_700_000_000));
        assert_eq!(events[0].report_sent_at, sent_at(10));
        assert_eq!(
            alerts.active_fingerprints(),
            vec!["n1/loihi-0/THERMAL_WARNING"]
        );
    }

    #[test]
    fn host_conditions_alert_with_host_or_their_own_subject() {
        let alerts = Alerts::new(64);
        let mut disk = condition(ConditionCode::DiskFull, Severity::Critical, "99%");
        disk.subject = "/var".to_string();
        let memory = condition(ConditionCode::HostMemoryHigh, Severity::Warning, "95%");
        alerts.observe(
            "n1",
            1,
            &snapshot(vec![], vec![disk, memory]),
            None,
            SystemTime::now(),
        );
        assert_eq!(
            alerts.active_fingerprints(),
            vec!["n1//var/DISK_FULL", "n1/host/HOST_MEMORY_HIGH"]
        );
    }

    #[test]
    fn a_condition_that_disappears_resolves() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        let warm = snapshot(
            vec![condition(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "82 C",
            )],
            vec![],
        );
        alerts.observe("n1", 1, &warm, sent_at(10), SystemTime::now());
        alerts.observe(
            "n1",
            2,
            &snapshot(vec![], vec![]),
            sent_at(20),
            SystemTime::now(),
        );

        let events = drain(&mut rx);
        assert_eq!(events.len(), 2);
        let resolved = alert_of(&events[1]);
        assert_eq!(resolved.fingerprint, "n1/loihi-0/THERMAL_WARNING");
        assert_eq!(resolved.status, AlertStatus::Resolved as i32);
        assert!(resolved.ends_at.is_some());
        assert_eq!(events[1].report_sent_at, sent_at(20));
        assert!(alerts.active_fingerprints().is_empty());
    }

    #[test]
    fn a_severity_change_fires_again_with_the_new_severity() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        let warn = condition(ConditionCode::PowerOverLimit, Severity::Warning, "130 W");
        let crit = condition(ConditionCode::PowerOverLimit, Severity::Critical, "190 W");
        alerts.observe(
            "n1",
            1,
            &snapshot(vec![warn], vec![]),
            None,
            SystemTime::now(),
        );
        alerts.observe(
            "n1",
            2,
            &snapshot(vec![crit], vec![]),
            None,
            SystemTime::now(),
        );

        let events = drain(&mut rx);
        assert_eq!(events.len(), 2);
        let second = alert_of(&events[1]);
        assert_eq!(second.status, AlertStatus::Firing as i32);
        assert_eq!(second.severity, Severity::Critical as i32);
        assert_eq!(second.message, "190 W");
        assert_eq!(second.starts_at, alert_of(&events[0]).starts_at);
    }

    #[test]
    fn an_older_generation_is_ignored() {
        let alerts = Alerts::new(64);
        let warm = snapshot(
            vec![condition(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "82 C",
            )],
            vec![],
        );
        alerts.observe("n1", 2, &snapshot(vec![], vec![]), None, SystemTime::now());
        alerts.observe("n1", 1, &warm, None, SystemTime::now());
        assert!(alerts.active_fingerprints().is_empty());
    }

    #[test]
    fn a_stale_node_fires_node_stale_until_it_reports() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        alerts.observe("n1", 1, &snapshot(vec![], vec![]), None, SystemTime::now());
        let stale_after = Duration::from_secs(10);
        alerts.node_stale(
            "n1",
            1,
            Duration::from_secs(12),
            stale_after,
            SystemTime::now(),
        );
        // A second sweep of the same silence does not fire again.
        alerts.node_stale(
            "n1",
            1,
            Duration::from_secs(13),
            stale_after,
            SystemTime::now(),
        );

        let events = drain(&mut rx);
        assert_eq!(events.len(), 1);
        let stale = alert_of(&events[0]);
        assert_eq!(stale.fingerprint, "n1/node/NODE_STALE");
        assert_eq!(stale.name, "NODE_STALE");
        assert_eq!(stale.subject, "node");
        assert_eq!(stale.severity, Severity::Critical as i32);
        assert!(stale.message.contains("12s"), "{}", stale.message);
        assert_eq!(alerts.active_fingerprints(), vec!["n1/node/NODE_STALE"]);

        alerts.observe(
            "n1",
            2,
            &snapshot(vec![], vec![]),
            sent_at(30),
            SystemTime::now(),
        );
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1);
        let back = alert_of(&events[0]);
        assert_eq!(back.fingerprint, "n1/node/NODE_STALE");
        assert_eq!(back.status, AlertStatus::Resolved as i32);
        assert!(back.ends_at.is_some());
        assert!(alerts.active_fingerprints().is_empty());
    }

    #[test]
    fn staleness_of_an_already_replaced_snapshot_does_not_fire() {
        let alerts = Alerts::new(64);
        alerts.observe("n1", 2, &snapshot(vec![], vec![]), None, SystemTime::now());
        alerts.node_stale(
            "n1",
            1,
            Duration::from_secs(12),
            Duration::from_secs(10),
            SystemTime::now(),
        );
        assert!(alerts.active_fingerprints().is_empty());
    }

    #[test]
    fn a_forgotten_node_has_every_alert_resolved_and_starts_fresh() {
        let alerts = Alerts::new(64);
        let hot = snapshot(
            vec![condition(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "82 C",
            )],
            vec![condition(
                ConditionCode::DiskFull,
                Severity::Critical,
                "99%",
            )],
        );
        alerts.observe("n1", 1, &hot, sent_at(10), SystemTime::now());
        alerts.observe("n2", 2, &hot, sent_at(10), SystemTime::now());
        alerts.observe("n3", 3, &snapshot(vec![], vec![]), None, SystemTime::now());
        alerts.node_stale(
            "n1",
            1,
            Duration::from_secs(10),
            Duration::from_secs(10),
            SystemTime::now(),
        );
        alerts.node_stale(
            "n3",
            3,
            Duration::from_secs(10),
            Duration::from_secs(10),
            SystemTime::now(),
        );
        let (_, mut rx) = alerts.watch();

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(24 * 3600);
        alerts.forget("n1", 1, day + Duration::from_millis(1500), day, now);

        let events = drain(&mut rx);
        let mut fingerprints: Vec<&str> = events
            .iter()
            .map(|event| alert_of(event).fingerprint.as_str())
            .collect();
        fingerprints.sort_unstable();
        assert_eq!(
            fingerprints,
            vec![
                "n1/host/DISK_FULL",
                "n1/loihi-0/THERMAL_WARNING",
                "n1/node/NODE_STALE"
            ]
        );
        for event in &events {
            let alert = alert_of(event);
            assert_eq!(alert.status, AlertStatus::Resolved as i32);
            assert_eq!(alert.ends_at, Some(now.into()));
            assert_eq!(
                alert.message,
                "node n1 forgotten after 1day 1s without reports (forget_after 1day)"
            );
            assert!(alert.starts_at.is_some(), "starts_at is kept");
            assert_eq!(event.report_sent_at, None);
        }
        assert_eq!(alerts.tracked_nodes(), vec!["n2", "n3"]);
        assert!(alerts
            .active_fingerprints()
            .iter()
            .all(|fingerprint| !fingerprint.starts_with("n1/")));

        // A node with nothing firing but NODE_STALE, and one with nothing at all.
        alerts.forget("n3", 3, day, day, now);
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1);
        assert_eq!(alert_of(&events[0]).fingerprint, "n3/node/NODE_STALE");
        alerts.forget("n9", 1, day, day, now);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(alerts.tracked_nodes(), vec!["n2"]);

        // n1 reports again: its alerts fire as new, with no NODE_STALE to resolve.
        alerts.observe("n1", 10, &hot, sent_at(50), SystemTime::now());
        let events = drain(&mut rx);
        assert_eq!(events.len(), 2);
        assert!(events
            .iter()
            .all(|event| alert_of(event).status == AlertStatus::Firing as i32));
    }

    #[test]
    fn forgetting_a_node_that_has_already_come_back_changes_nothing() {
        let alerts = Alerts::new(64);
        let warm = snapshot(
            vec![condition(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "82 C",
            )],
            vec![],
        );
        alerts.observe("n1", 1, &warm, None, SystemTime::now());
        // The fleet forgot n1 at generation 1, then n1 reported again (generation 2) and that
        // was evaluated before the forgetting reached the alerts.
        alerts.observe("n1", 2, &warm, None, SystemTime::now());
        let (_, mut rx) = alerts.watch();
        alerts.forget(
            "n1",
            1,
            Duration::from_secs(120),
            Duration::from_secs(60),
            SystemTime::now(),
        );
        assert!(drain(&mut rx).is_empty());
        assert_eq!(
            alerts.active_fingerprints(),
            vec!["n1/loihi-0/THERMAL_WARNING"]
        );
    }

    #[test]
    fn unknown_condition_codes_stay_distinct() {
        assert_eq!(condition_name(ConditionCode::DiskFull as i32), "DISK_FULL");
        assert_eq!(condition_name(999), "CONDITION_CODE_999");
    }
}
