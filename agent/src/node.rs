//! The node: every supervised device plus the host monitor, assembled into snapshots.
//!
//! The reporter task is the agent's main loop. Each report interval it takes a snapshot,
//! numbers it (boot id, seq), publishes it to local watchers and hands it to the uplink, and
//! pings the systemd watchdog. If this loop stops, the watchdog pings stop with it, which is
//! the point: systemd restarts an agent whose heart has stopped, not one whose threads exist.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use health_daemon::systemd;
use health_hal::{Condition, ConditionCode, HealthState};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::device::supervisor::DeviceHandle;
use crate::host::HostStatus;
use crate::model::{
    AgentStatus, MaintenanceSource, MaintenanceWindow, NodeSnapshot, ReportedAction, UplinkStats,
};

/// Actions carried in every report. A report every few seconds and a handful of actions an
/// hour: an action is in many reports before it leaves the window, so one lost report loses
/// nothing.
const REPORTED_ACTIONS: usize = 16;

pub struct Node {
    pub name: String,
    /// Identifies this run of the agent; changes on every start so the collector can tell a
    /// restarted agent's seq 1 from a duplicate.
    pub boot_id: String,
    pub devices: Vec<DeviceHandle>,
    host: watch::Receiver<Arc<HostStatus>>,
    seq: AtomicU64,
    /// Reports the uplink could not take because its hand-off queue was full.
    pub reports_dropped: AtomicU64,
    uplink: Option<Arc<UplinkStats>>,
    /// Findings of the periodic solver probe, reported as host conditions about each file.
    probe: Option<crate::probe::ProbeConditions>,
    /// The window of recent actions reports carry (see `REPORTED_ACTIONS`).
    reported_actions: Mutex<VecDeque<ReportedAction>>,
    /// The process watchdog, when `[[process]]` rules are configured.
    processes: Option<crate::host::procwatch::ProcessWatch>,
    /// The service checker, when `[[service]]` rules are configured.
    services: Option<crate::host::services::ServiceWatch>,
    /// The log follower, when `[[log]]` rules are configured.
    logs: Option<watch::Receiver<Arc<crate::host::logs::LogReport>>>,
    audit: Option<Arc<crate::audit::AuditLog>>,
    /// Conditions the remediation engine raises (REMEDIATION_EXHAUSTED), by subject: a device
    /// id, or a process subject (shown with the host's conditions).
    remediation: Mutex<Vec<Condition>>,
    /// Operator maintenance windows (started and ended by the action path).
    pub maintenance: Arc<crate::maintenance::Windows>,
    /// Callers refused with PERMISSION_DENIED, for ACCESS_DENIED on the host.
    pub denied: Arc<crate::denied::DeniedCallers>,
}

pub fn new_boot_id() -> String {
    let v: u128 = rand::random();
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Node {
    pub fn new(
        name: String,
        devices: Vec<DeviceHandle>,
        host: watch::Receiver<Arc<HostStatus>>,
        uplink: Option<Arc<UplinkStats>>,
        probe: Option<crate::probe::ProbeConditions>,
    ) -> Node {
        Node {
            name,
            boot_id: new_boot_id(),
            devices,
            host,
            seq: AtomicU64::new(0),
            reports_dropped: AtomicU64::new(0),
            uplink,
            probe,
            reported_actions: Mutex::new(VecDeque::with_capacity(REPORTED_ACTIONS)),
            processes: None,
            services: None,
            logs: None,
            audit: None,
            remediation: Mutex::new(Vec::new()),
            maintenance: Arc::default(),
            denied: Arc::new(crate::denied::DeniedCallers::new(Default::default())),
        }
    }

    /// How many refusals within which window raise ACCESS_DENIED (`[safety]`).
    pub fn with_access_denied(mut self, limit: crate::config::AccessDeniedLimit) -> Node {
        self.denied = Arc::new(crate::denied::DeniedCallers::new(limit));
        self
    }

    /// Adds the process watchdog: its processes and conditions become part of the host.
    pub fn with_processes(mut self, watch: Option<crate::host::procwatch::ProcessWatch>) -> Node {
        self.processes = watch;
        self
    }

    /// Adds the service checker: its services and conditions become part of the host.
    pub fn with_services(mut self, watch: Option<crate::host::services::ServiceWatch>) -> Node {
        self.services = watch;
        self
    }

    pub fn services(&self) -> Option<&crate::host::services::ServiceWatch> {
        self.services.as_ref()
    }

    /// Adds the log follower: its rules and conditions become part of the host.
    pub fn with_logs(
        mut self,
        logs: Option<watch::Receiver<Arc<crate::host::logs::LogReport>>>,
    ) -> Node {
        self.logs = logs;
        self
    }

    /// The audit log whose head each report carries.
    pub fn with_audit(mut self, audit: Arc<crate::audit::AuditLog>) -> Node {
        self.audit = Some(audit);
        self
    }

    pub fn processes(&self) -> Option<&crate::host::procwatch::ProcessWatch> {
        self.processes.as_ref()
    }

    /// Adds a finished action to the window that reports carry.
    pub fn note_action(&self, action: ReportedAction) {
        let mut window = self
            .reported_actions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if window.len() == REPORTED_ACTIONS {
            window.pop_front();
        }
        window.push_back(action);
    }

    fn agent_status(&self) -> AgentStatus {
        let recent_actions: Vec<ReportedAction> = self
            .reported_actions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        AgentStatus {
            recent_actions,
            audit_head: self.audit.as_ref().and_then(|a| a.head()),
            ..self.delivery_status()
        }
    }

    fn delivery_status(&self) -> AgentStatus {
        let handoff_dropped = self.reports_dropped.load(Ordering::Relaxed);
        match &self.uplink {
            None => AgentStatus::default(),
            Some(u) => AgentStatus {
                uplink_configured: true,
                uplink_connected: u.connected.load(Ordering::Relaxed),
                reports_sent_total: u.sent_total.load(Ordering::Relaxed),
                last_acked_seq: u.acked_seq.load(Ordering::Relaxed),
                reports_buffered: u.buffered.load(Ordering::Relaxed),
                reports_dropped_total: u.dropped_total.load(Ordering::Relaxed) + handoff_dropped,
                reconnects_total: u.reconnects_total.load(Ordering::Relaxed),
                recent_actions: Vec::new(),
                audit_head: None,
                collector: u
                    .collector
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
                spill_bytes: u.spill_bytes.load(Ordering::Relaxed),
                reports_spilled_total: u.spilled_total.load(Ordering::Relaxed),
                dropped_ranges: u
                    .dropped_ranges
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            },
        }
    }

    /// A report the uplink could not take is dropped like any other: its range is reported.
    fn note_handoff_drop(&self, boot_id: &str, seq: u64) {
        if let Some(u) = &self.uplink {
            let mut ranges = u
                .dropped_ranges
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::model::note_dropped(&mut ranges, &[(boot_id.to_string(), seq)]);
        }
    }

    pub fn device(&self, id: &str) -> Option<&DeviceHandle> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Replaces the conditions the remediation engine raises.
    pub fn set_remediation_conditions(&self, conditions: Vec<Condition>) {
        *self.remediation.lock().unwrap_or_else(|e| e.into_inner()) = conditions;
    }

    /// A device's status as reported: the supervisor's, plus the conditions the remediation
    /// engine raises about it.
    pub fn device_status(&self, id: &str) -> Option<Arc<crate::model::DeviceStatus>> {
        self.device(id).map(|d| self.with_remediation(d.status()))
    }

    fn with_remediation(
        &self,
        status: Arc<crate::model::DeviceStatus>,
    ) -> Arc<crate::model::DeviceStatus> {
        let extra = self.remediation.lock().unwrap_or_else(|e| e.into_inner());
        let mine: Vec<&Condition> = extra
            .iter()
            .filter(|c| c.subject == status.identity.id)
            .collect();
        let maintenance = self.device_maintenance(&status);
        if mine.is_empty() && maintenance.is_none() {
            return status;
        }
        let mut s = (*status).clone();
        if !mine.is_empty() {
            s.conditions.extend(mine.into_iter().cloned());
            s.state = s.state.max(health_hal::rollup(s.conditions.iter()));
        }
        s.maintenance = maintenance;
        Arc::new(s)
    }

    /// A device's own maintenance: the operator's window, else SLURM's (a MAINTENANCE
    /// condition its backend reports), shown with `by = slurm` and the condition's message.
    fn device_maintenance(&self, status: &crate::model::DeviceStatus) -> Option<MaintenanceWindow> {
        let id = &status.identity.id;
        if let Some(w) = self.maintenance.get(id, SystemTime::now()) {
            return Some(w);
        }
        status
            .conditions
            .iter()
            .find(|c| c.code == ConditionCode::Maintenance && c.subject == *id)
            .map(|c| MaintenanceWindow {
                until: None,
                reason: c.message.clone(),
                by: "slurm".into(),
                started_at: c.since,
                audit_hash: String::new(),
                source: MaintenanceSource::Slurm,
            })
    }

    /// The maintenance that holds `target` (a device id or a process subject) now: the
    /// device's own (operator, else SLURM), else the node's. `None`: policies may act.
    pub fn maintenance_of(&self, target: &str) -> Option<MaintenanceWindow> {
        let own = self
            .device(target)
            .and_then(|d| self.device_maintenance(&d.status()));
        own.or_else(|| {
            self.maintenance
                .get(crate::maintenance::NODE, SystemTime::now())
        })
    }

    /// The current state of everything, carrying the seq of the last report sent.
    pub fn snapshot(&self) -> NodeSnapshot {
        self.assemble(self.seq.load(Ordering::Acquire))
    }

    fn assemble(&self, seq: u64) -> NodeSnapshot {
        let mut host = self.host.borrow().clone();
        if let Some(probe) = &self.probe {
            let findings = probe.borrow().clone();
            if !findings.is_empty() {
                let mut h = (*host).clone();
                h.conditions.extend(findings.iter().cloned());
                h.state = h.state.max(health_hal::rollup(findings.iter()));
                host = Arc::new(h);
            }
        }
        if let Some(watch) = &self.processes {
            let report = watch.report.borrow().clone();
            let mut h = (*host).clone();
            h.processes.clone_from(&report.processes);
            h.conditions.extend(report.conditions.iter().cloned());
            h.state = h.state.max(report.state);
            host = Arc::new(h);
        }
        if let Some(watch) = &self.services {
            let report = watch.report.borrow().clone();
            let mut h = (*host).clone();
            h.services.clone_from(&report.services);
            h.conditions.extend(report.conditions().cloned());
            h.state = h.state.max(report.state());
            host = Arc::new(h);
        }
        if let Some(logs) = &self.logs {
            let report = logs.borrow().clone();
            let mut h = (*host).clone();
            h.logs.clone_from(&report.rules);
            h.conditions.extend(report.conditions.iter().cloned());
            h.state = h.state.max(report.state);
            host = Arc::new(h);
        }
        if let Some(c) = self.denied.condition(SystemTime::now()) {
            let mut h = (*host).clone();
            h.state = h.state.max(c.severity.health());
            h.conditions.push(c);
            host = Arc::new(h);
        }
        if let Some(c) = self.audit.as_ref().and_then(|a| a.condition()) {
            let mut h = (*host).clone();
            h.state = h.state.max(c.severity.health());
            h.conditions.push(c);
            host = Arc::new(h);
        }
        let process_conditions: Vec<Condition> = self
            .remediation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|c| self.device(&c.subject).is_none())
            .cloned()
            .collect();
        if !process_conditions.is_empty() {
            let mut h = (*host).clone();
            h.state = h.state.max(health_hal::rollup(process_conditions.iter()));
            h.conditions.extend(process_conditions);
            host = Arc::new(h);
        }
        let devices: Vec<_> = self
            .devices
            .iter()
            .map(|d| self.with_remediation(d.status()))
            .collect();
        let state = devices
            .iter()
            .map(|d| d.state)
            .chain([host.state])
            .max()
            .unwrap_or(HealthState::Unknown);
        NodeSnapshot {
            node: self.name.clone(),
            boot_id: self.boot_id.clone(),
            seq,
            taken_at: SystemTime::now(),
            state,
            host,
            devices,
            agent: self.agent_status(),
            maintenance: self
                .maintenance
                .get(crate::maintenance::NODE, SystemTime::now()),
        }
    }

    /// Takes the next numbered report.
    fn next_report(&self) -> NodeSnapshot {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.assemble(seq)
    }
}

/// The agent's main loop; see the module comment.
pub async fn run_reporter(
    node: Arc<Node>,
    every: Duration,
    publish: watch::Sender<Arc<NodeSnapshot>>,
    uplink: Option<mpsc::Sender<Arc<NodeSnapshot>>>,
    cancel: CancellationToken,
) {
    // Ping independent of the report interval, but from this same loop: a wedged loop stops the
    // pings. The interval is already half the watchdog period (see `watchdog_ping_interval`).
    let dog_period = systemd::watchdog_ping_interval();
    let mut dog = tokio::time::interval(dog_period.unwrap_or(Duration::from_secs(3600)));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = dog.tick(), if dog_period.is_some() => {
                systemd::watchdog_ping();
            }
            _ = tick.tick() => {
                let report = Arc::new(node.next_report());
                let report_key = (report.boot_id.clone(), report.seq);
                publish.send_replace(report.clone());
                if let Some(up) = &uplink {
                    if up.try_send(report).is_err() {
                        // The uplink keeps its own bounded buffer; a full hand-off queue means
                        // it is stuck, and the loss is counted rather than blocking this loop.
                        node.reports_dropped.fetch_add(1, Ordering::Relaxed);
                        node.note_handoff_drop(&report_key.0, report_key.1);
                    }
                }
            }
        }
    }
}
