//! The collector's own alert evaluation, so WatchAlerts works without a Prometheus.
//!
//! An alert is a WARNING or CRITICAL condition in a node's latest snapshot (a host condition
//! or a device condition). When the collector first sees it, it is *pending*; it *fires* once
//! it has lasted its code's `for` duration (`[alerts] for`, 0 = at once), and fires again when
//! its severity changes; it *resolves* when the next applied snapshot of the node no longer
//! carries it. A condition that clears while pending never fires (and is not shown to
//! watchers). Durations are measured on the monotonic clock the caller passes in, from the
//! first report that carried the condition; a pending alert is promoted either by a later
//! report of its node or by the sweeper (`promote_due`), whichever comes first, so its firing
//! does not wait for the node's next report.
//!
//! Every alert carries a priority (P0..P3, `priority.rs`); one still firing its priority's
//! `escalate_after` after it fired is escalated by the sweep from the escalation clock, a
//! second due-time index like the pending one.
//!
//! Besides those, the collector raises NODE_STALE itself when a node stops reporting (its
//! pending time is `stale_after`), and resolves it when the node reports again.
//!
//! When the fleet forgets a node (no report for `forget_after`: a decommissioned host), every
//! alert still active for it, NODE_STALE included, is resolved with a message saying so, and
//! the node's state here is dropped; if it reports again later, its alerts start afresh.
//!
//! Alerts are identified by a fingerprint `node/subject/CODE`, stable across fire and resolve,
//! as Alertmanager-style consumers expect; `alertname` is the on-call name (`alert_names`).
//! The active set lives in memory only: after a collector restart the first report of each node
//! starts its alerts again (pending first). The history database (`history`) is fed from here,
//! without waiting: every transition is handed to its writer thread with a `try_send`.
//!
//! Ordering: the fleet numbers every applied snapshot of a node with a generation; evaluations
//! are applied here only in increasing generation, so two streams of the same node (an agent
//! reconnecting while its old stream is still draining) or a sweep racing a report cannot
//! leave an old alert state behind. Generations are fleet-wide, so this also holds when a
//! forgotten node reports again before its forgetting has reached this module.
//!
//! Cost: evaluating a report is O(conditions and recent actions of that node) plus a log-time
//! insert into the due set per new pending alert; the sweep's promotion only looks at the due
//! set's head.
//!
//! An alert whose subject is in maintenance (`crate::silences::maintenance`) is SUPPRESSED:
//! shown to watchers, never pushed as firing; after the window it starts again as if new.
//!
//! Events are sent on a broadcast channel while the lock is held, so every watcher sees them
//! in the order the active set changed. Like the fleet module, this one reads the agents'
//! snapshots and builds the `Alert` messages directly, without knowing about gRPC transport.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use health_proto::v1::{
    Alert, AlertEvent, AlertStatus, Condition, ConditionCode, NodeSnapshot, Severity,
};
use prost_types::Timestamp;
use tokio::sync::broadcast;

mod build;
mod escalation;
mod own;

use crate::alert_names::alertname;
use crate::history::{AlertTransition, HistorySink, MaintenanceSpells, HELD_EVERY};
use crate::priority::{escalate, EscalationClock, Priority, PriorityMap};
use crate::silences::maintenance::{suppression, windows_of, MaintenanceWindows, WindowKey};
use crate::silences::Silences;
use build::*;

/// Subject of the NODE_STALE alert: it is about the node as a whole.
const NODE_SUBJECT: &str = "node";
/// Default subject of a host condition that names none.
const HOST_SUBJECT: &str = "host";
const NODE_STALE_RUNBOOK: &str = "Check that health-agent is running on the node \
    (systemctl status health-agent), that the node is up, and that it can reach the collector.";
/// Action ids remembered per node to report each action to the history once; the agent
/// repeats its last few actions in every report, far fewer than this.
const SEEN_ACTIONS: usize = 64;

/// How long each condition code must last before its alert fires.
#[derive(Debug, Clone, Default)]
pub struct PendingRules {
    hold: HashMap<i32, Duration>,
}

impl PendingRules {
    /// From the config's `[alerts] for` table (code names already validated).
    pub fn from_names<'a>(entries: impl IntoIterator<Item = (&'a String, &'a Duration)>) -> Self {
        let hold = entries
            .into_iter()
            .filter_map(|(name, hold)| {
                ConditionCode::from_str_name(name).map(|code| (code as i32, *hold))
            })
            .collect();
        PendingRules { hold }
    }

    fn hold(&self, code: i32) -> Duration {
        self.hold.get(&code).copied().unwrap_or(Duration::ZERO)
    }
}

/// Where an active alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Seen, not yet lasted its `for` duration; fires at `due` if still there.
    Pending {
        due: Instant,
    },
    Firing,
    /// Its subject is in maintenance: shown, never paged.
    Suppressed,
}

/// An active (pending or firing) alert and the send time of the report that last changed it.
#[derive(Debug, Clone)]
struct Tracked {
    alert: Alert,
    report_sent_at: Option<Timestamp>,
    phase: Phase,
    /// When a firing alert escalates (`priority`); `None` once escalated or if it never does.
    escalate_at: Option<Instant>,
}

/// One node's active alerts.
#[derive(Debug, Default)]
struct NodeAlerts {
    /// Generation of the last snapshot (or staleness) evaluated; older ones are ignored.
    generation: u64,
    /// Alerts from the snapshot's conditions, by fingerprint.
    conditions: BTreeMap<String, Tracked>,
    /// The collector's own NODE_STALE alert, while the node is stale.
    stale: Option<Tracked>,
    /// Action ids already handed to the history, oldest first (bounded).
    seen_actions: VecDeque<String>,
    seen_action_ids: HashSet<String>,
    /// Maintenance windows of the node open in the history.
    maintenance: MaintenanceSpells,
    /// When the history was last told this collector holds the node (`HistorySink::held`).
    held_at: Option<Instant>,
    /// When the node's last report was evaluated (wall time), for `record_absent`.
    last_report: Option<SystemTime>,
}

impl Tracked {
    /// Takes the latest text and severity of the same alert, keeping when it began and
    /// whether it has escalated (an escalated alert stays one priority above its map's).
    fn update(&mut self, alert: Alert, report_sent_at: Option<Timestamp>) {
        let priority = match Priority::parse(&alert.priority) {
            Some(mapped) if self.alert.escalated => mapped.higher().to_string(),
            _ => alert.priority.clone(),
        };
        self.alert = Alert {
            starts_at: self.alert.starts_at,
            pending_since: self.alert.pending_since,
            escalated: self.alert.escalated,
            escalated_at: self.alert.escalated_at,
            priority,
            ..alert
        };
        self.report_sent_at = report_sent_at;
    }
}

/// Pending alerts by the time they become due: (due, node, fingerprint).
type DueSet = BTreeSet<(Instant, String, String)>;

#[derive(Debug, Default)]
struct Book {
    nodes: BTreeMap<String, NodeAlerts>,
    due: DueSet,
}

/// What every step of evaluating one report needs to know about it.
struct Evaluation<'a> {
    node: &'a str,
    /// The agent's send time, carried on events so watchers can measure latency.
    report_sent_at: Option<Timestamp>,
    /// Wall time, written on alerts.
    now: SystemTime,
    /// Monotonic time, which pending durations are measured on.
    at: Instant,
}

/// The active alert set and the channel watchers subscribe to.
pub struct Alerts {
    book: Mutex<Book>,
    events: broadcast::Sender<AlertEvent>,
    rules: PendingRules,
    history: Option<HistorySink>,
    priorities: PriorityMap,
    /// Locked only while `book` is held, never the other way round.
    escalations: Mutex<EscalationClock>,
    /// Every node's maintenance windows, as of its last snapshot.
    maintenance: Arc<MaintenanceWindows>,
    /// For `silenced_by`; set once at start when silences are kept.
    silences: OnceLock<Arc<Silences>>,
}

impl Alerts {
    /// Alerts that fire at once and keep no history (the tests' book). `watch_buffer` is how
    /// many events a watcher may fall behind before it skips ahead.
    #[cfg(test)]
    pub fn new(watch_buffer: usize) -> Self {
        Self::with(watch_buffer, PendingRules::default(), None)
    }

    /// Alerts with pending durations per code, feeding `history` if there is one.
    pub fn with(watch_buffer: usize, rules: PendingRules, history: Option<HistorySink>) -> Self {
        let (events, _) = broadcast::channel(watch_buffer.max(1));
        Alerts {
            book: Mutex::new(Book::default()),
            events,
            rules,
            history,
            priorities: PriorityMap::default(),
            escalations: Mutex::new(EscalationClock::default()),
            maintenance: Arc::default(),
            silences: OnceLock::new(),
        }
    }

    /// The `[priorities]` map instead of the defaults.
    pub fn with_priorities(self, priorities: PriorityMap) -> Self {
        Alerts { priorities, ..self }
    }

    /// The fleet's maintenance windows, for the silence reconciler.
    pub fn maintenance(&self) -> Arc<MaintenanceWindows> {
        Arc::clone(&self.maintenance)
    }

    /// Alerts name the silences that match them (`silenced_by`) from now on.
    pub fn show_silences(&self, silences: Arc<Silences>) {
        let _ = self.silences.set(silences);
    }

    /// `observe_at` with the monotonic clock read now.
    pub fn observe(
        &self,
        node: &str,
        generation: u64,
        snapshot: &NodeSnapshot,
        report_sent_at: Option<Timestamp>,
        now: SystemTime,
    ) {
        self.observe_at(
            node,
            generation,
            snapshot,
            report_sent_at,
            now,
            Instant::now(),
        );
    }

    /// Evaluates a node's newly applied snapshot: starts new alerts (pending, or firing if
    /// their code has no `for`), fires pending ones that have lasted long enough, re-fires
    /// those whose severity changed, resolves those gone, and resolves NODE_STALE (the node
    /// reported).
    ///
    /// `generation` comes from the fleet (`Applied::Current`); `report_sent_at` is the agent's
    /// send time, carried on the events so watchers can measure latency; `now` is the wall
    /// time written on alerts, `at` the monotonic time pending durations are measured on.
    pub fn observe_at(
        &self,
        node: &str,
        generation: u64,
        snapshot: &NodeSnapshot,
        report_sent_at: Option<Timestamp>,
        now: SystemTime,
        at: Instant,
    ) {
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let Book { nodes, due } = &mut *book;
        let first_seen = !nodes.contains_key(node);
        let alerts = nodes.entry(node.to_string()).or_default();
        if generation <= alerts.generation {
            return;
        }
        alerts.generation = generation;
        alerts.last_report = Some(now);
        let report = Evaluation {
            node,
            report_sent_at,
            now,
            at,
        };

        let mut current = alerts_in(node, snapshot, &self.priorities);
        let windows = windows_of(node, snapshot, now);
        for alert in current.values_mut() {
            alert.suppressed_by = suppression(&windows, alert).unwrap_or_default();
            if alert.starts_at.is_none() {
                // The agent did not say since when; the report is the best evidence we have.
                alert.starts_at = report_sent_at.or_else(|| Some(now.into()));
            }
        }
        if let Some(history) = &self.history {
            if alerts
                .held_at
                .is_none_or(|held| at.saturating_duration_since(held) >= HELD_EVERY)
            {
                alerts.held_at = Some(at);
                history.held(node, now);
            }
            if first_seen {
                // After a collector restart, conditions the history still has open for this
                // node but the node no longer reports ended while we were away.
                history.node_seen(node, current.values(), now);
            }
            remember_actions(history, node, alerts, snapshot);
            alerts.maintenance.observe(history, node, snapshot, now);
        }
        self.maintenance.set(node, windows);

        self.end_gone(&report, alerts, due, &current);
        for (fingerprint, alert) in current {
            match alerts.conditions.get_mut(&fingerprint) {
                None => {
                    let tracked = self.start(&report, due, &fingerprint, alert);
                    alerts.conditions.insert(fingerprint, tracked);
                }
                Some(tracked) => self.carry_on(&report, due, &fingerprint, tracked, alert),
            }
        }

        if let Some(stale) = alerts.stale.take() {
            tracing::info!(node, "node reporting again: NODE_STALE resolved");
            self.cancel_escalation(node, &stale);
            let alert = resolved(stale.alert, now);
            if stale.phase == Phase::Firing {
                self.record(&alert, AlertTransition::Resolved, now);
            }
            self.publish(alert, report_sent_at);
        }
    }

    /// Ends the node's alerts that the report no longer carries: a firing alert resolves; a
    /// pending one just ends (it was never shown to watchers).
    fn end_gone(
        &self,
        report: &Evaluation<'_>,
        alerts: &mut NodeAlerts,
        due: &mut DueSet,
        current: &BTreeMap<String, Alert>,
    ) {
        let gone: Vec<String> = alerts
            .conditions
            .keys()
            .filter(|fingerprint| !current.contains_key(*fingerprint))
            .cloned()
            .collect();
        for fingerprint in gone {
            let Some(tracked) = alerts.conditions.remove(&fingerprint) else {
                continue;
            };
            if let Some(history) = &self.history {
                history.condition_ended(&tracked.alert, report.now);
            }
            self.cancel_escalation(report.node, &tracked);
            match tracked.phase {
                Phase::Firing => {
                    let alert = resolved(tracked.alert, report.now);
                    self.record(&alert, AlertTransition::Resolved, report.now);
                    self.publish(alert, report.report_sent_at);
                }
                Phase::Suppressed => {
                    self.publish(resolved(tracked.alert, report.now), report.report_sent_at);
                }
                Phase::Pending { due: when } => {
                    due.remove(&(when, report.node.to_string(), fingerprint));
                    tracing::debug!(fingerprint = %tracked.alert.fingerprint, "pending alert cleared before it fired");
                    self.record(&tracked.alert, AlertTransition::Cleared, report.now);
                }
            }
        }
    }

    /// A condition seen for the first time: pending until its code's `for` has passed, or
    /// firing at once when the code has none.
    fn start(
        &self,
        report: &Evaluation<'_>,
        due: &mut DueSet,
        fingerprint: &str,
        mut alert: Alert,
    ) -> Tracked {
        alert.pending_since = Some(report.now.into());
        if let Some(history) = &self.history {
            history.condition_started(&alert);
        }
        let (phase, escalate_at) = self.arm(report, due, fingerprint, &mut alert);
        Tracked {
            alert,
            report_sent_at: report.report_sent_at,
            phase,
            escalate_at,
        }
    }

    /// Where a condition starts (again, after maintenance): suppressed while its subject is in
    /// maintenance, else pending until its code's `for` has passed, or firing at once.
    fn arm(
        &self,
        report: &Evaluation<'_>,
        due: &mut DueSet,
        fingerprint: &str,
        alert: &mut Alert,
    ) -> (Phase, Option<Instant>) {
        if !alert.suppressed_by.is_empty() {
            alert.status = AlertStatus::Suppressed as i32;
            self.publish(alert.clone(), report.report_sent_at);
            return (Phase::Suppressed, None);
        }
        alert.status = AlertStatus::Firing as i32;
        let hold = self.rules.hold(alert_code(alert));
        if hold.is_zero() {
            self.fire(alert, report.report_sent_at, report.now);
            let escalate_at = self.schedule_escalation(alert, report.at);
            (Phase::Firing, escalate_at)
        } else {
            let when = report.at + hold;
            due.insert((when, report.node.to_string(), fingerprint.to_string()));
            tracing::debug!(fingerprint = %fingerprint, hold = ?hold, "alert pending");
            self.record(alert, AlertTransition::Pending, report.now);
            (Phase::Pending { due: when }, None)
        }
    }

    /// A condition going into, staying in or coming out of maintenance; true if handled here.
    /// Going in, a firing alert resolves (in Alertmanager through the SUPPRESSED event).
    fn maintenance_change(
        &self,
        report: &Evaluation<'_>,
        due: &mut DueSet,
        fingerprint: &str,
        tracked: &mut Tracked,
        alert: &Alert,
    ) -> bool {
        let suppressed = !alert.suppressed_by.is_empty();
        match (tracked.phase, suppressed) {
            (Phase::Suppressed, false) => {
                // Out of maintenance it starts again as if new: its mapped priority, not the
                // escalation it may have reached before the window.
                tracked.alert.escalated = false;
                tracked.alert.escalated_at = None;
                tracked.update(alert.clone(), report.report_sent_at);
                (tracked.phase, tracked.escalate_at) =
                    self.arm(report, due, fingerprint, &mut tracked.alert);
            }
            (Phase::Suppressed, true) => {
                let changed = tracked.alert.suppressed_by != alert.suppressed_by;
                tracked.update(alert.clone(), report.report_sent_at);
                tracked.alert.status = AlertStatus::Suppressed as i32;
                if changed {
                    self.publish(tracked.alert.clone(), report.report_sent_at);
                }
            }
            (phase, true) => {
                if let Phase::Pending { due: when } = phase {
                    due.remove(&(when, report.node.to_string(), fingerprint.to_string()));
                } else {
                    let gone = resolved(tracked.alert.clone(), report.now);
                    self.record(&gone, AlertTransition::Resolved, report.now);
                }
                // A suppressed alert does not escalate: no one is paged for it.
                self.cancel_escalation(report.node, tracked);
                tracked.update(alert.clone(), report.report_sent_at);
                (tracked.phase, tracked.escalate_at) =
                    self.arm(report, due, fingerprint, &mut tracked.alert);
            }
            (_, false) => return false,
        }
        true
    }

    /// A condition already active: a pending one fires once due, a firing one whose severity
    /// changed fires again, and either keeps the latest text.
    fn carry_on(
        &self,
        report: &Evaluation<'_>,
        due: &mut DueSet,
        fingerprint: &str,
        tracked: &mut Tracked,
        alert: Alert,
    ) {
        if self.maintenance_change(report, due, fingerprint, tracked, &alert) {
            return;
        }
        match tracked.phase {
            Phase::Pending { due: when } => {
                // Still pending: keep the latest text and severity, and when it began.
                tracked.update(alert, report.report_sent_at);
                if report.at >= when {
                    due.remove(&(when, report.node.to_string(), fingerprint.to_string()));
                    tracked.phase = Phase::Firing;
                    self.fire(&tracked.alert, report.report_sent_at, report.now);
                    tracked.escalate_at = self.schedule_escalation(&tracked.alert, report.at);
                }
            }
            Phase::Firing if tracked.alert.severity != alert.severity => {
                tracing::info!(fingerprint = %fingerprint, severity = severity_name(alert.severity), "alert severity changed");
                // Keep when it started: it is the same problem, now better or worse.
                tracked.update(alert, report.report_sent_at);
                self.record(&tracked.alert, AlertTransition::Firing, report.now);
                self.publish(tracked.alert.clone(), report.report_sent_at);
            }
            Phase::Suppressed => {}
            Phase::Firing => {
                // Same alert, same severity: the message numbers may have moved. Keep the
                // latest text for new watchers, but do not notify: that would be noise.
                tracked.alert.message = alert.message;
                tracked.alert.runbook = alert.runbook;
            }
        }
    }

    /// Fires every pending alert whose `for` has passed by `at`, without waiting for its
    /// node's next report. Called by the sweeper; costs nothing when nothing is due.
    pub fn promote_due(&self, at: Instant, now: SystemTime) {
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let Book { nodes, due } = &mut *book;
        while let Some(first) = due.first() {
            if first.0 > at {
                break;
            }
            let Some((_, node, fingerprint)) = due.pop_first() else {
                break;
            };
            let Some(alerts) = nodes.get_mut(&node) else {
                continue;
            };
            if let Some(stale) = alerts
                .stale
                .as_mut()
                .filter(|s| s.alert.fingerprint == fingerprint)
            {
                let last_heard = alerts.last_report;
                self.unsuppress_stale(stale, at, now, last_heard);
                continue;
            }
            let Some(tracked) = alerts.conditions.get_mut(&fingerprint) else {
                continue;
            };
            if matches!(tracked.phase, Phase::Pending { .. }) {
                tracked.phase = Phase::Firing;
                self.fire(&tracked.alert, tracked.report_sent_at, now);
                tracked.escalate_at = self.schedule_escalation(&tracked.alert, at);
            }
        }
        self.escalate_due(nodes, at, now);
    }

    /// A stale node's window has ended: a node that cannot report cannot end its own
    /// suppression, so the sweeper's due set does, and NODE_STALE fires.
    fn unsuppress_stale(
        &self,
        stale: &mut Tracked,
        at: Instant,
        now: SystemTime,
        last_heard: Option<SystemTime>,
    ) {
        if !matches!(stale.phase, Phase::Suppressed) {
            return;
        }
        stale.phase = Phase::Firing;
        stale.alert.status = AlertStatus::Firing as i32;
        stale.alert.suppressed_by.clear();
        tracing::warn!(fingerprint = %stale.alert.fingerprint, "alert firing: maintenance over");
        self.record_absent(&stale.alert, AlertTransition::Firing, now, last_heard);
        self.publish(stale.alert.clone(), None);
        stale.escalate_at = self.schedule_escalation(&stale.alert, at);
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
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let Book { nodes, due } = &mut *book;
        let alerts = nodes.entry(node.to_string()).or_default();
        if generation < alerts.generation || alerts.stale.is_some() {
            return;
        }
        alerts.generation = generation;
        let code = ConditionCode::NodeStale;
        let mut alert = Alert {
            fingerprint: fingerprint(node, NODE_SUBJECT, code.as_str_name()),
            name: code.as_str_name().to_string(),
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
            alertname: alertname(code as i32),
            pending_since: Some(now.into()),
            device: String::new(),
            priority: self
                .priorities
                .priority_of(code.as_str_name(), Severity::Critical as i32, 0)
                .to_string(),
            ..Alert::default()
        };
        alert.suppressed_by =
            suppression(&self.maintenance.of_node(node), &alert).unwrap_or_default();
        let phase = if alert.suppressed_by.is_empty() {
            tracing::warn!(fingerprint = %alert.fingerprint, "alert firing");
            self.record_absent(&alert, AlertTransition::Firing, now, alerts.last_report);
            Phase::Firing
        } else {
            alert.status = AlertStatus::Suppressed as i32;
            // Fires when the node's window ends, unless the node reports first.
            let windows = self.maintenance.of_node(node);
            let key = WindowKey {
                node: node.to_string(),
                device: String::new(),
            };
            if let Some(left) = windows
                .get(&key)
                .and_then(|w| w.until.duration_since(now).ok())
            {
                due.insert((
                    Instant::now() + left,
                    node.to_string(),
                    alert.fingerprint.clone(),
                ));
            }
            Phase::Suppressed
        };
        self.publish(alert.clone(), None);
        // The sweeper passes no monotonic time here; its next sweeps compare against now.
        // A suppressed alert pages no one, so it does not escalate either.
        let escalate_at = match phase {
            Phase::Firing => self.schedule_escalation(&alert, Instant::now()),
            _ => None,
        };
        alerts.stale = Some(Tracked {
            alert,
            report_sent_at: None,
            phase,
            escalate_at,
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
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let Book { nodes, due } = &mut *book;
        if nodes
            .get(node)
            .is_none_or(|alerts| generation < alerts.generation)
        {
            return;
        }
        let Some(mut alerts) = nodes.remove(node) else {
            return;
        };
        let last_heard = alerts.last_report.unwrap_or(SystemTime::UNIX_EPOCH);
        if let Some(history) = &self.history {
            alerts
                .maintenance
                .end_all(&history.for_absent_node(last_heard), node, now);
        }
        self.maintenance.forget(node);
        let message = format!(
            "node {node} forgotten after {} without reports (forget_after {})",
            humantime::format_duration(Duration::from_secs(silent_for.as_secs())),
            humantime::format_duration(forget_after)
        );
        let mut resolved_count: usize = 0;
        for tracked in alerts
            .stale
            .into_iter()
            .chain(alerts.conditions.into_values())
        {
            self.cancel_escalation(node, &tracked);
            let alert = Alert {
                message: message.clone(),
                ..tracked.alert
            };
            if let Some(history) = &self.history {
                if alert.name != ConditionCode::NodeStale.as_str_name() {
                    history
                        .for_absent_node(last_heard)
                        .condition_ended(&alert, now);
                }
            }
            match tracked.phase {
                Phase::Pending { due: when } => {
                    due.remove(&(when, node.to_string(), alert.fingerprint.clone()));
                    self.record_absent(&alert, AlertTransition::Cleared, now, Some(last_heard));
                }
                Phase::Firing => {
                    let alert = resolved(alert, now);
                    self.record_absent(&alert, AlertTransition::Resolved, now, Some(last_heard));
                    self.publish(alert, None);
                    resolved_count += 1;
                }
                Phase::Suppressed => self.publish(resolved(alert, now), None),
            }
        }
        if resolved_count > 0 {
            tracing::info!(
                node,
                resolved = resolved_count,
                "node forgotten: its alerts resolved"
            );
        }
    }

    /// Every alert firing or suppressed now (sorted by node, then fingerprint), and a receiver
    /// for every event after that moment. Pending alerts are not included: they have not fired.
    pub fn watch(&self) -> (Vec<AlertEvent>, broadcast::Receiver<AlertEvent>) {
        // Subscribe under the lock: events are sent under it too, so nothing falls in between.
        let book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        let receiver = self.events.subscribe();
        let firing = book
            .nodes
            .values()
            .flat_map(|alerts| alerts.stale.iter().chain(alerts.conditions.values()))
            .filter(|tracked| matches!(tracked.phase, Phase::Firing | Phase::Suppressed))
            .map(|tracked| AlertEvent {
                alert: Some(self.with_silences(tracked.alert.clone())),
                report_sent_at: tracked.report_sent_at,
            })
            .collect();
        (firing, receiver)
    }

    fn fire(&self, alert: &Alert, report_sent_at: Option<Timestamp>, now: SystemTime) {
        tracing::info!(fingerprint = %alert.fingerprint, alertname = %alert.alertname, severity = severity_name(alert.severity), "alert firing");
        self.record(alert, AlertTransition::Firing, now);
        self.publish(alert.clone(), report_sent_at);
    }

    fn record(&self, alert: &Alert, transition: AlertTransition, now: SystemTime) {
        if let Some(history) = &self.history {
            history.alert(alert, transition, now);
        }
    }

    /// A transition this collector makes only because it stopped hearing from the node
    /// (NODE_STALE, forgetting it): not written if the node has reported to another
    /// collector meanwhile (a failover; see `history::write`).
    fn record_absent(
        &self,
        alert: &Alert,
        transition: AlertTransition,
        now: SystemTime,
        last_heard: Option<SystemTime>,
    ) {
        if let Some(history) = &self.history {
            history
                .for_absent_node(last_heard.unwrap_or(SystemTime::UNIX_EPOCH))
                .alert(alert, transition, now);
        }
    }

    /// The alert with the ids of the silences that match it.
    fn with_silences(&self, mut alert: Alert) -> Alert {
        if let Some(silences) = self.silences.get() {
            alert.silenced_by = silences.silencing(&alert);
        }
        alert
    }

    fn publish(&self, alert: Alert, report_sent_at: Option<Timestamp>) {
        // An error only means nobody is watching right now.
        let _ = self.events.send(AlertEvent {
            alert: Some(self.with_silences(alert)),
            report_sent_at,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Used only by the tests, to look at the active set without a watcher.
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
            let book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
            book.nodes.keys().cloned().collect()
        }
    }
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

    /// A node whose one device runs warm.
    fn warm() -> NodeSnapshot {
        snapshot(
            vec![condition(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "82 C",
            )],
            vec![],
        )
    }

    /// A node with no conditions at all.
    fn quiet() -> NodeSnapshot {
        snapshot(vec![], vec![])
    }

    /// A report of `node` evaluated now.
    fn report(
        alerts: &Alerts,
        node: &str,
        generation: u64,
        snapshot: &NodeSnapshot,
        sent: Option<Timestamp>,
    ) {
        alerts.observe(node, generation, snapshot, sent, SystemTime::now());
    }

    /// The sweeper finding `node` silent for `silent_secs` with `stale_after` = `after_secs`.
    fn went_stale(alerts: &Alerts, node: &str, generation: u64, silent_secs: u64, after_secs: u64) {
        alerts.node_stale(
            node,
            generation,
            Duration::from_secs(silent_secs),
            Duration::from_secs(after_secs),
            SystemTime::now(),
        );
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
        report(&alerts, "n1", 1, &warm, sent_at(10));
        report(&alerts, "n1", 2, &warm, sent_at(11));

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
        report(
            &alerts,
            "n1",
            1,
            &snapshot(vec![], vec![disk, memory]),
            None,
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
        let warm = warm();
        report(&alerts, "n1", 1, &warm, sent_at(10));
        report(&alerts, "n1", 2, &quiet(), sent_at(20));

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
        report(&alerts, "n1", 1, &snapshot(vec![warn], vec![]), None);
        report(&alerts, "n1", 2, &snapshot(vec![crit], vec![]), None);

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
        let warm = warm();
        report(&alerts, "n1", 2, &quiet(), None);
        report(&alerts, "n1", 1, &warm, None);
        assert!(alerts.active_fingerprints().is_empty());
    }

    #[test]
    fn a_stale_node_fires_node_stale_until_it_reports() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        report(&alerts, "n1", 1, &quiet(), None);
        went_stale(&alerts, "n1", 1, 12, 10);
        // A second sweep of the same silence does not fire again.
        went_stale(&alerts, "n1", 1, 13, 10);

        let events = drain(&mut rx);
        assert_eq!(events.len(), 1);
        let stale = alert_of(&events[0]);
        assert_eq!(stale.fingerprint, "n1/node/NODE_STALE");
        assert_eq!(stale.name, "NODE_STALE");
        assert_eq!(stale.subject, "node");
        assert_eq!(stale.severity, Severity::Critical as i32);
        assert!(stale.message.contains("12s"), "{}", stale.message);
        assert_eq!(alerts.active_fingerprints(), vec!["n1/node/NODE_STALE"]);

        report(&alerts, "n1", 2, &quiet(), sent_at(30));
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
        report(&alerts, "n1", 2, &quiet(), None);
        went_stale(&alerts, "n1", 1, 12, 10);
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
        report(&alerts, "n1", 1, &hot, sent_at(10));
        report(&alerts, "n2", 2, &hot, sent_at(10));
        report(&alerts, "n3", 3, &quiet(), None);
        went_stale(&alerts, "n1", 1, 10, 10);
        went_stale(&alerts, "n3", 3, 10, 10);
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
        report(&alerts, "n1", 10, &hot, sent_at(50));
        let events = drain(&mut rx);
        assert_eq!(events.len(), 2);
        assert!(events
            .iter()
            .all(|event| alert_of(event).status == AlertStatus::Firing as i32));
    }

    #[test]
    fn forgetting_a_node_that_has_already_come_back_changes_nothing() {
        let alerts = Alerts::new(64);
        let warm = warm();
        report(&alerts, "n1", 1, &warm, None);
        // The fleet forgot n1 at generation 1, then n1 reported again (generation 2) and that
        // was evaluated before the forgetting reached the alerts.
        report(&alerts, "n1", 2, &warm, None);
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

    fn held(code: &str, hold: Duration) -> Alerts {
        let rules = [(code.to_string(), hold)];
        Alerts::with(
            64,
            PendingRules::from_names(rules.iter().map(|(c, h)| (c, h))),
            None,
        )
    }

    fn hot() -> NodeSnapshot {
        snapshot(
            vec![condition(
                ConditionCode::DeviceUnresponsive,
                Severity::Critical,
                "no reply within 2s",
            )],
            vec![],
        )
    }

    #[test]
    fn a_condition_shorter_than_its_for_never_fires() {
        let alerts = held("DEVICE_UNRESPONSIVE", Duration::from_secs(30));
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        alerts.observe_at("n1", 1, &hot(), None, wall, t0);
        alerts.observe_at("n1", 2, &hot(), None, wall, t0 + Duration::from_secs(10));
        alerts.promote_due(t0 + Duration::from_secs(29), wall);
        // Cleared at 29 s, before its 30 s: nothing fired, nothing to resolve.
        alerts.observe_at("n1", 3, &quiet(), None, wall, t0 + Duration::from_secs(29));
        alerts.promote_due(t0 + Duration::from_secs(300), wall);
        assert!(drain(&mut rx).is_empty());
        assert!(alerts.active_fingerprints().is_empty());
    }

    #[test]
    fn a_condition_longer_than_its_for_fires_once_at_the_sweep_and_resolves() {
        let alerts = held("DEVICE_UNRESPONSIVE", Duration::from_secs(30));
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        alerts.observe_at("n1", 1, &hot(), sent_at(5), wall, t0);
        assert!(
            alerts.active_fingerprints().is_empty(),
            "pending is not firing"
        );
        alerts.promote_due(t0 + Duration::from_secs(29), wall);
        assert!(drain(&mut rx).is_empty());

        // The sweep fires it when due, without waiting for the node's next report.
        alerts.promote_due(t0 + Duration::from_secs(30), wall);
        let fired = drain(&mut rx);
        assert_eq!(fired.len(), 1);
        let alert = alert_of(&fired[0]);
        assert_eq!(alert.status, AlertStatus::Firing as i32);
        assert_eq!(alert.alertname, "DeviceUnresponsive");
        assert_eq!(alert.device, "loihi-0");
        assert_eq!(alert.pending_since, Some(wall.into()));
        assert_eq!(fired[0].report_sent_at, sent_at(5));

        // Further reports and sweeps do not fire it again.
        alerts.observe_at("n1", 2, &hot(), None, wall, t0 + Duration::from_secs(31));
        alerts.promote_due(t0 + Duration::from_secs(60), wall);
        assert!(drain(&mut rx).is_empty());

        alerts.observe_at("n1", 3, &quiet(), None, wall, t0 + Duration::from_secs(40));
        let resolved = drain(&mut rx);
        assert_eq!(resolved.len(), 1);
        assert_eq!(alert_of(&resolved[0]).status, AlertStatus::Resolved as i32);
    }

    #[test]
    fn a_report_after_the_for_fires_a_pending_alert_too() {
        let alerts = held("DEVICE_UNRESPONSIVE", Duration::from_secs(30));
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        alerts.observe_at("n1", 1, &hot(), None, wall, t0);
        alerts.observe_at("n1", 2, &hot(), None, wall, t0 + Duration::from_secs(30));
        assert_eq!(drain(&mut rx).len(), 1);
        // The due entry went with it: the sweep has nothing left to fire.
        alerts.promote_due(t0 + Duration::from_secs(60), wall);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(
            alerts.active_fingerprints(),
            vec!["n1/loihi-0/DEVICE_UNRESPONSIVE"]
        );
    }

    fn escalating(after_secs: u64) -> Alerts {
        let after = Some(Duration::from_secs(after_secs));
        Alerts::new(64).with_priorities(PriorityMap::new(
            [],
            [(Priority::P0, after), (Priority::P1, after)],
        ))
    }

    #[test]
    fn alerts_carry_the_priority_of_their_code() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        report(&alerts, "n1", 1, &hot(), None);
        report(&alerts, "n1", 2, &warm(), None);
        let priorities: Vec<(String, String)> = drain(&mut rx)
            .iter()
            .map(|event| {
                let alert = alert_of(event);
                (alert.name.clone(), alert.priority.clone())
            })
            .collect();
        assert_eq!(
            priorities,
            vec![
                ("DEVICE_UNRESPONSIVE".to_string(), "P1".to_string()),
                ("DEVICE_UNRESPONSIVE".to_string(), "P1".to_string()),
                ("THERMAL_WARNING".to_string(), "P2".to_string()),
            ]
        );
        went_stale(&alerts, "n1", 2, 12, 10);
        let stale = drain(&mut rx);
        assert_eq!(alert_of(&stale[0]).priority, "P1", "NODE_STALE is P1");
    }

    #[test]
    fn an_alert_firing_past_escalate_after_is_resent_once_one_priority_higher() {
        let alerts = escalating(60);
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        alerts.observe_at("n1", 1, &hot(), sent_at(5), wall, t0);
        assert_eq!(drain(&mut rx).len(), 1);
        alerts.promote_due(t0 + Duration::from_secs(59), wall);
        assert!(drain(&mut rx).is_empty(), "not yet");

        let later = wall + Duration::from_secs(60);
        alerts.promote_due(t0 + Duration::from_secs(60), later);
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1);
        let alert = alert_of(&events[0]);
        assert_eq!(alert.status, AlertStatus::Firing as i32);
        assert_eq!(alert.priority, "P0", "P1 escalates to P0");
        assert!(alert.escalated);
        assert_eq!(alert.escalated_at, Some(later.into()));
        assert_eq!(events[0].report_sent_at, sent_at(5));

        // Once: neither a later sweep nor a report escalates it again, and it stays escalated.
        alerts.promote_due(t0 + Duration::from_secs(600), later);
        alerts.observe_at("n1", 2, &hot(), None, wall, t0 + Duration::from_secs(601));
        assert!(drain(&mut rx).is_empty());
        let (firing, _) = alerts.watch();
        let shown = alert_of(&firing[0]);
        assert!(shown.escalated);
        assert_eq!(shown.priority, "P0");
    }

    #[test]
    fn an_escalated_alert_starts_again_at_its_own_priority_after_maintenance() {
        let alerts = escalating(60);
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        alerts.observe_at("n1", 1, &hot(), None, wall, t0);
        alerts.promote_due(t0 + Duration::from_secs(60), wall);
        assert!(alert_of(drain(&mut rx).last().unwrap()).escalated);
        // Into the device's maintenance window, and out of it.
        let held = in_maintenance(hot(), false);
        alerts.observe_at("n1", 2, &held, None, wall, t0 + Duration::from_secs(61));
        assert_eq!(
            alert_of(drain(&mut rx).last().unwrap()).status,
            AlertStatus::Suppressed as i32
        );
        alerts.promote_due(t0 + Duration::from_secs(3600), wall);
        assert!(
            drain(&mut rx).is_empty(),
            "a suppressed alert does not escalate"
        );
        alerts.observe_at("n1", 3, &hot(), None, wall, t0 + Duration::from_secs(3601));
        let back = alert_of(drain(&mut rx).last().unwrap()).clone();
        assert_eq!(back.status, AlertStatus::Firing as i32);
        assert!(!back.escalated, "{back:?}");
        assert_eq!(back.priority, "P1");
    }

    #[test]
    fn an_alert_resolved_before_escalate_after_does_not_escalate_and_a_new_spell_starts_over() {
        let alerts = escalating(60);
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        alerts.observe_at("n1", 1, &hot(), None, wall, t0);
        alerts.observe_at("n1", 2, &quiet(), None, wall, t0 + Duration::from_secs(30));
        alerts.observe_at("n1", 3, &hot(), None, wall, t0 + Duration::from_secs(40));
        assert_eq!(drain(&mut rx).len(), 3, "fire, resolve, fire");
        // 60 s after the first firing: the first spell is over, the second is 20 s old.
        alerts.promote_due(t0 + Duration::from_secs(60), wall);
        assert!(drain(&mut rx).is_empty());
        alerts.promote_due(t0 + Duration::from_secs(100), wall);
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1);
        assert!(alert_of(&events[0]).escalated);
        assert_eq!(alerts.escalations.lock().map(|c| c.len()).unwrap_or(9), 0);
    }

    #[test]
    fn p0_escalates_but_stays_p0_and_p3_never_escalates() {
        let alerts = escalating(10);
        let (_, mut rx) = alerts.watch();
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let both = snapshot(
            vec![condition(
                ConditionCode::ResetFailed,
                Severity::Critical,
                "x",
            )],
            vec![condition(
                ConditionCode::DiskFull,
                Severity::Critical,
                "99%",
            )],
        );
        alerts.observe_at("n1", 1, &both, None, wall, t0);
        assert_eq!(drain(&mut rx).len(), 2);
        alerts.promote_due(t0 + Duration::from_secs(3600 * 24 * 365), wall);
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1, "P3 (DISK_FULL) has no escalate_after");
        let alert = alert_of(&events[0]);
        assert_eq!(alert.name, "RESET_FAILED");
        assert_eq!(alert.priority, "P0");
        assert!(alert.escalated);
    }

    #[test]
    fn codes_without_a_for_fire_at_once_beside_held_ones() {
        let alerts = held("THERMAL_WARNING", Duration::from_secs(60));
        let (_, mut rx) = alerts.watch();
        let both = snapshot(
            vec![
                condition(ConditionCode::ThermalWarning, Severity::Warning, "82 C"),
                condition(
                    ConditionCode::ResetFailed,
                    Severity::Critical,
                    "reset failed",
                ),
            ],
            vec![],
        );
        report(&alerts, "n1", 1, &both, None);
        let fired: Vec<String> = drain(&mut rx)
            .iter()
            .map(|event| alert_of(event).alertname.clone())
            .collect();
        assert_eq!(fired, vec!["ResetFailed"]);
    }

    /// `snapshot` with loihi-0 (or the whole node) in maintenance for an hour.
    fn in_maintenance(mut snapshot: NodeSnapshot, whole_node: bool) -> NodeSnapshot {
        let window = health_proto::v1::Maintenance {
            until: Some((SystemTime::now() + Duration::from_secs(3600)).into()),
            reason: "fan swap".into(),
            by: "uid 0".into(),
            ..Default::default()
        };
        if whole_node {
            snapshot.maintenance = Some(window);
        } else {
            snapshot.devices[0].maintenance = Some(window);
        }
        snapshot
    }

    #[test]
    fn a_firing_alert_in_maintenance_is_suppressed_and_fires_again_after_it() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        let hot = || {
            snapshot(
                vec![condition(
                    ConditionCode::ThermalCritical,
                    Severity::Critical,
                    "99 C",
                )],
                vec![],
            )
        };
        report(&alerts, "n1", 1, &hot(), None);
        assert_eq!(
            alert_of(&drain(&mut rx)[0]).status,
            AlertStatus::Firing as i32
        );

        report(&alerts, "n1", 2, &in_maintenance(hot(), false), None);
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1, "{events:?}");
        let a = alert_of(&events[0]);
        assert_eq!(a.status, AlertStatus::Suppressed as i32);
        assert!(
            a.suppressed_by.starts_with("loihi-0 in maintenance until "),
            "{}",
            a.suppressed_by
        );
        assert!(
            a.suppressed_by.ends_with(": fan swap (by uid 0)"),
            "{}",
            a.suppressed_by
        );
        // Shown to new watchers as SUPPRESSED; the same window again is no news.
        let (shown, _) = alerts.watch();
        assert_eq!(alert_of(&shown[0]).status, AlertStatus::Suppressed as i32);
        report(&alerts, "n1", 3, &in_maintenance(hot(), false), None);
        assert!(drain(&mut rx).is_empty());
        assert_eq!(alerts.maintenance().all().len(), 1);

        report(&alerts, "n1", 4, &hot(), None);
        let events = drain(&mut rx);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(alert_of(&events[0]).status, AlertStatus::Firing as i32);
        assert!(alert_of(&events[0]).suppressed_by.is_empty());
        assert!(alerts.maintenance().all().is_empty());
    }

    #[test]
    fn a_node_in_maintenance_suppresses_host_alerts_and_node_stale() {
        let alerts = Alerts::new(64);
        let (_, mut rx) = alerts.watch();
        let disk = condition(ConditionCode::DiskFull, Severity::Critical, "99 %");
        report(
            &alerts,
            "n1",
            1,
            &in_maintenance(snapshot(vec![], vec![disk]), true),
            None,
        );
        let events = drain(&mut rx);
        assert_eq!(alert_of(&events[0]).status, AlertStatus::Suppressed as i32);
        assert!(alert_of(&events[0])
            .suppressed_by
            .starts_with("n1 in maintenance"));
        went_stale(&alerts, "n1", 1, 30, 10);
        let events = drain(&mut rx);
        let stale = alert_of(&events[0]);
        assert_eq!(stale.name, "NODE_STALE");
        assert_eq!(stale.status, AlertStatus::Suppressed as i32);
        // The node cannot report the end of its window: the sweep fires NODE_STALE when the
        // window's until has passed, and not before.
        alerts.promote_due(Instant::now(), SystemTime::now());
        assert!(drain(&mut rx).is_empty(), "the window still holds");
        alerts.promote_due(
            Instant::now() + Duration::from_secs(3601),
            SystemTime::now() + Duration::from_secs(3601),
        );
        let events = drain(&mut rx);
        let fired = alert_of(&events[0]);
        assert_eq!(fired.name, "NODE_STALE");
        assert_eq!(fired.status, AlertStatus::Firing as i32);
        assert!(fired.suppressed_by.is_empty());
        // A device window leaves the host's alerts alone.
        let disk = condition(ConditionCode::DiskFull, Severity::Critical, "99 %");
        report(
            &alerts,
            "n2",
            2,
            &in_maintenance(snapshot(vec![], vec![disk]), false),
            None,
        );
        assert_eq!(
            alert_of(&drain(&mut rx)[0]).status,
            AlertStatus::Firing as i32
        );
    }
}
