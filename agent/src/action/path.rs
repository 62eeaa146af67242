//! [`Actions`]: the checks, the audit records and the run of every action, in the order the
//! module comment of [`crate::action`] gives.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::clean::{self, CleanupReport};
use super::counts::ActionCounts;
use super::kill::KillReport;
use super::safety::{self, Claim, Gate, GateRequest, Idempotency};
use super::{ActionError, ActionRecord, ActionRequest, Requested};
use crate::audit::{AuditLog, Entry, Phase, Recorded};
use crate::auth::Role;
use crate::config::{CleanupRule, SafetyConfig};
use crate::device::{DeviceAction, DeviceControl};
use crate::host::procwatch::ProcessInfo;
use crate::model::{MaintenanceSource, MaintenanceWindow, Outcome, ReportedAction};
use crate::node::Node;

const KEEP_RECORDS: usize = 1000;
/// How long a result stays available to retries with the same idempotency key.
pub(super) const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
const IDEMPOTENCY_KEYS: usize = 10_000;

/// Records an action as interrupted if its task is dropped after its begin record and before
/// its end: at shutdown, the runtime drops tasks still running once the shutdown bound has
/// passed. Every `begin` entry is then followed by an `end` or an `interrupted` entry.
struct InterruptedGuard {
    audit: Arc<AuditLog>,
    /// Set once the begin record is durable.
    begun: Option<Entry>,
    t0: Instant,
}

impl Drop for InterruptedGuard {
    fn drop(&mut self) {
        let Some(mut entry) = self.begun.take() else {
            return;
        };
        let duration_ms = self.t0.elapsed().as_millis() as u64;
        tracing::warn!(
            target: "audit",
            id = %entry.action_id, device = %entry.target, action = %entry.action,
            outcome = "INTERRUPTED", duration_ms,
            "action interrupted: the agent stopped before the action ended; the device state is unknown until the next read"
        );
        entry.outcome = Some(Recorded::Interrupted);
        entry.message =
            "the agent stopped before the action ended; the device state is unknown until the next read"
                .into();
        entry.duration_ms = Some(duration_ms);
        // Blocking, in a destructor: this runs only when the runtime drops the task at
        // shutdown, and one fsynced line is what the record is for.
        if let Err(e) = self.audit.append_blocking(Phase::Interrupted, &entry) {
            tracing::error!(target: "audit", error = %e, "could not record an interrupted action");
        }
    }
}

/// Counts an action task as in flight until it ends, however it ends.
struct InFlight(tokio::sync::watch::Sender<usize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// What the checks established, for the run.
enum Checked {
    Device,
    Fault,
    Process(Box<ProcessInfo>),
    /// A window to start or extend, ending at this time.
    StartMaintenance(SystemTime),
    EndMaintenance,
    /// The unit to restart.
    Service(String),
    Cleanup(Box<CleanupRule>),
}

/// What a run leaves beside its outcome, for the record.
#[derive(Default)]
struct Extras {
    process_kill: Option<KillReport>,
    file_cleanup: Option<CleanupReport>,
    /// The hash of the entry that recorded the result.
    audit_hash: String,
}

/// The longest maintenance reason kept: one paragraph for whoever looks next, not a file.
const MAX_MAINTENANCE_REASON: usize = 1024;

pub struct Actions {
    pub(super) node: Arc<Node>,
    /// The only write handles on the devices (see [`crate::device::DeviceControl`]).
    controls: Vec<DeviceControl>,
    audit: Arc<AuditLog>,
    safety: SafetyConfig,
    gate: Arc<Gate>,
    pub(super) idempotency: Idempotency<Result<ActionRecord, ActionError>>,
    next_id: AtomicU64,
    recent: Mutex<VecDeque<ActionRecord>>,
    /// Finished actions by device, kind and outcome, for `/metrics` (`crate::wire::metrics`).
    pub counts: ActionCounts,
    /// Actions whose task has not ended (recorded) yet; shutdown waits for none (bounded).
    in_flight: tokio::sync::watch::Sender<usize>,
    /// `[[cleanup]]`: what clean-files may delete.
    cleanup: Vec<CleanupRule>,
}

impl Actions {
    pub fn new(
        node: Arc<Node>,
        controls: Vec<DeviceControl>,
        audit: Arc<AuditLog>,
        safety: SafetyConfig,
    ) -> Actions {
        Actions {
            node,
            controls,
            audit,
            safety,
            gate: Arc::new(Gate::default()),
            idempotency: Idempotency::new(IDEMPOTENCY_TTL, IDEMPOTENCY_KEYS),
            next_id: AtomicU64::new(1),
            recent: Mutex::new(VecDeque::new()),
            counts: Default::default(),
            in_flight: tokio::sync::watch::channel(0).0,
            cleanup: Vec::new(),
        }
    }

    /// The `[[cleanup]]` rules clean-files runs (none: every clean-files request is refused).
    pub fn with_cleanup(mut self, rules: Vec<CleanupRule>) -> Actions {
        self.cleanup = rules;
        self
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// The longest maintenance window this agent starts (`[safety] max_maintenance`).
    pub fn max_maintenance(&self) -> Duration {
        self.safety.max_maintenance
    }

    /// Resolves once no action task is running: every accepted action has ended and been
    /// recorded. The daemon waits for this (within its shutdown bound) after the supervisors
    /// stop, so an action that finished at shutdown is recorded as finished.
    pub async fn wait_idle(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Runs one action. Errors are refusals before anything touched the device; every call
    /// that reaches this path, refused or not, leaves a record.
    ///
    /// The action runs on its own task: once accepted it runs to its end and is recorded, even
    /// if the caller goes away (a client timeout, Ctrl-C) while it is queued or running.
    pub async fn run(self: &Arc<Self>, req: ActionRequest) -> Result<ActionRecord, ActionError> {
        let key = req.idempotency_key.clone();
        // A key is honoured only for an authorized caller, and only for that caller (the
        // fingerprint holds its identity): a replay never grants more than a fresh request.
        if key.is_empty() || req.caller.role < Some(Role::Operator) {
            return self.clone().spawn(req).await;
        }
        let tx = match self.idempotency.claim(&key, &req.fingerprint()) {
            Claim::New(tx) => tx,
            Claim::Replay(rx) => {
                let first = safety::replayed(rx).await.unwrap_or_else(|| {
                    Err(ActionError::NotPossible(
                        "the first request with this idempotency key was lost".into(),
                    ))
                });
                tracing::info!(target: "audit", key = %key, caller = %req.caller.identity, "idempotency key replayed: not run again");
                return first.map(|mut r| {
                    r.replayed = true;
                    r
                });
            }
            Claim::Conflict(_) => {
                let e = ActionError::InvalidArgument(format!(
                    "idempotency_key {key:?} was already used for a different request; use a new key"
                ));
                let entry = self.entry(&self.next_action_id(), &req);
                let _ = self
                    .note(Phase::Refused, entry, Recorded::Refused, &e.to_string())
                    .await;
                return Err(e);
            }
        };
        let result = self.clone().spawn(req).await;
        // Only an action that ran is remembered; a refusal may be retried for real.
        let keep = result.is_ok();
        self.idempotency.finish(&key, tx, result.clone(), keep);
        result
    }

    async fn spawn(self: Arc<Self>, req: ActionRequest) -> Result<ActionRecord, ActionError> {
        self.in_flight.send_modify(|n| *n += 1);
        let in_flight = InFlight(self.in_flight.clone());
        tokio::spawn(async move {
            let _in_flight = in_flight;
            self.run_recorded(req).await
        })
        .await
        .unwrap_or_else(|e| {
            Err(ActionError::NotPossible(format!(
                "the action task failed: {e}"
            )))
        })
    }

    /// A new action id: the boot id's first eight characters and a counter, unique per node.
    pub(super) fn next_action_id(&self) -> String {
        let boot = self.node.boot_id.get(..8).unwrap_or(&self.node.boot_id);
        format!("{boot}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn entry(&self, id: &str, req: &ActionRequest) -> Entry {
        Entry {
            action_id: id.to_string(),
            caller: req.caller.identity.clone(),
            role: req.caller.role_name().to_string(),
            action: req.what.describe(),
            target: req.device_id.clone(),
            args: req.what.args(),
            idempotency_key: req.idempotency_key.clone(),
            trigger: req.trigger.clone(),
            ..Default::default()
        }
    }

    /// A single audit entry for a request that did not run; a failure to write it is logged
    /// (the request is refused either way). Returns the entry's hash, empty if not written.
    pub(super) async fn note(
        &self,
        phase: Phase,
        mut entry: Entry,
        outcome: Recorded,
        message: &str,
    ) -> String {
        entry.outcome = Some(outcome);
        entry.message = message.to_string();
        match self.audit.append(phase, entry).await {
            Ok(a) => a.hash,
            Err(e) => {
                tracing::error!(target: "audit", error = %e, phase = phase.as_str(), "could not record a refused request");
                String::new()
            }
        }
    }

    async fn run_recorded(&self, req: ActionRequest) -> Result<ActionRecord, ActionError> {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let id = self.next_action_id();
        tracing::info!(
            target: "audit",
            id = %id, caller = %req.caller.identity, role = req.caller.role_name(),
            device = %req.device_id, action = %req.what.describe(), dry_run = req.dry_run,
            "action requested"
        );
        let mut guard = InterruptedGuard {
            audit: self.audit.clone(),
            begun: None,
            t0,
        };
        let mut extras = Extras::default();
        let result = self.admit_and_run(&id, &req, &mut guard, &mut extras).await;
        guard.begun = None;
        let (outcome, message) = match &result {
            Ok(r) => r.clone(),
            Err(e) => (Outcome::Refused, e.to_string()),
        };
        let record = ActionRecord {
            id,
            device_id: req.device_id.clone(),
            action: req.what.describe(),
            caller: req.caller.identity.clone(),
            role: req.caller.role_name().to_string(),
            outcome,
            message,
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            device_after: self.node.device_status(&req.device_id),
            process_kill: extras.process_kill,
            file_cleanup: extras.file_cleanup,
            dry_run: req.dry_run,
            replayed: false,
            audit_hash: extras.audit_hash,
        };
        tracing::info!(
            target: "audit",
            id = %record.id, caller = %record.caller, device = %record.device_id, action = %record.action,
            outcome = record.outcome.as_str(), duration_ms = record.duration_ms, message = %record.message,
            "action finished"
        );
        self.counts
            .record(&record, self.node.device(&req.device_id).is_some());
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == KEEP_RECORDS {
                recent.pop_front();
            }
            recent.push_back(record.clone());
        }
        self.node.note_action(ReportedAction::from(&record));
        result.map(|_| record)
    }

    /// A refusal after authorization: one `refused` entry, whose hash the record keeps.
    async fn refuse(
        &self,
        id: &str,
        req: &ActionRequest,
        e: ActionError,
        extras: &mut Extras,
    ) -> Result<(Outcome, String), ActionError> {
        extras.audit_hash = self
            .note(
                Phase::Refused,
                self.entry(id, req),
                Recorded::Refused,
                &e.to_string(),
            )
            .await;
        Err(e)
    }

    /// Every check, in order, then (unless a dry run) the durable begin record, the action
    /// and the end record.
    async fn admit_and_run(
        &self,
        id: &str,
        req: &ActionRequest,
        guard: &mut InterruptedGuard,
        extras: &mut Extras,
    ) -> Result<(Outcome, String), ActionError> {
        let entry = self.entry(id, req);
        if req.caller.role < Some(Role::Operator) {
            let msg = format!(
                "{} on {} needs the operator role; {} has {}",
                req.what.describe(),
                req.device_id,
                req.caller.identity,
                req.caller.role_name()
            );
            self.node.denied.note(&req.caller.identity);
            extras.audit_hash = self
                .note(Phase::Denied, entry, Recorded::Denied, &msg)
                .await;
            return Err(ActionError::PermissionDenied(msg));
        }
        let checked = match self.check(req).await {
            Ok(c) => c,
            Err(e) => return self.refuse(id, req, e, extras).await,
        };
        if req.what.needs_confirmation() && !req.confirm {
            return self
                .refuse(
                    id,
                    req,
                    ActionError::Unsafe(format!(
                        "{} on {} needs confirmation: pass --yes (confirm = true)",
                        req.what.describe(),
                        req.device_id
                    )),
                    extras,
                )
                .await;
        }
        let action = req.what.describe();
        let caller = crate::auth::principal_of(&req.caller.identity);
        let gate_req = GateRequest {
            target: &req.device_id,
            action: &action,
            caller,
            is_reset: req.what.is_reset(),
            follow_up: req.follows.is_some(),
            limits: self.safety.for_device(&req.device_id),
        };
        if req.dry_run {
            if req.what.gated() {
                if let Err(m) = self.gate.check(&gate_req) {
                    return self.refuse(id, req, ActionError::Unsafe(m), extras).await;
                }
            }
            let msg = match checked {
                // What would go is the answer a dry run of a cleanup is for.
                Checked::Cleanup(rule) => {
                    let (_, summary, report) = clean::run(*rule, true).await;
                    extras.file_cleanup = Some(report);
                    format!("dry run: {summary}; nothing done")
                }
                _ => format!(
                    "dry run: would {} on {} (role, target, capability, confirmation and limits checked; nothing done)",
                    action, req.device_id
                ),
            };
            let mut e = entry;
            e.outcome = Some(Recorded::Succeeded);
            e.message = msg.clone();
            extras.audit_hash = self
                .audit
                .append(Phase::DryRun, e)
                .await
                .map_err(|e| ActionError::AuditUnavailable(e.to_string()))?
                .hash;
            return Ok((Outcome::Succeeded, msg));
        }
        let _reservation = if req.what.gated() {
            match self.gate.reserve(&gate_req) {
                Ok(r) => Some(r),
                Err(m) => return self.refuse(id, req, ActionError::Unsafe(m), extras).await,
            }
        } else {
            None
        };
        // The durable begin record: without it, the action does not run.
        self.audit
            .append(Phase::Begin, entry.clone())
            .await
            .map_err(|e| {
                tracing::error!(target: "audit", error = %e, id, "action refused: no durable begin record");
                ActionError::AuditUnavailable(e.to_string())
            })?;
        guard.begun = Some(entry.clone());
        let t0 = Instant::now();
        let until = match &checked {
            Checked::StartMaintenance(until) => Some(*until),
            _ => None,
        };
        let (outcome, message) = self.execute(req, checked, extras).await;
        let mut end = entry;
        if let (Some(until), Some(args)) = (until, end.args.as_object_mut()) {
            // What a restart rebuilds the window from (`crate::maintenance::Windows::restore`).
            args.insert(
                "until".into(),
                humantime::format_rfc3339_millis(until).to_string().into(),
            );
        }
        end.outcome = Some(outcome.into());
        end.message = message.clone();
        end.duration_ms = Some(t0.elapsed().as_millis() as u64);
        // From here the end record is this task's to write, not the guard's: if the task is
        // dropped while the end record is being written, the begin stays unmatched (the
        // verifier reports it) rather than being recorded twice.
        guard.begun = None;
        let message = self.record_end(id, req, end, until.is_some(), extras).await;
        Ok((outcome, message))
    }

    /// The `end` entry; its hash goes into the record (and onto the maintenance window it
    /// started). Returns the action's message, with a warning when the entry was not written.
    async fn record_end(
        &self,
        id: &str,
        req: &ActionRequest,
        end: Entry,
        started_window: bool,
        extras: &mut Extras,
    ) -> String {
        let (outcome, mut message) = (end.outcome, end.message.clone());
        match self.audit.append(Phase::End, end).await {
            Ok(a) => {
                if started_window && outcome == Some(Recorded::Succeeded) {
                    self.node
                        .maintenance
                        .set_audit_hash(&req.device_id, &a.hash);
                }
                extras.audit_hash = a.hash;
            }
            Err(e) => {
                // The action has happened: report it, and say its end is not on record.
                tracing::error!(target: "audit", error = %e, id, "the end of an action could not be recorded");
                message = format!("{message}; WARNING: the end record was not written: {e}");
            }
        }
        message
    }

    /// Checks before anything is recorded as begun: the target exists and can do this, the
    /// arguments are in range; for a process, the rules and the process as it is now.
    async fn check(&self, request: &ActionRequest) -> Result<Checked, ActionError> {
        let device_id = request.device_id.as_str();
        match &request.what {
            Requested::StartMaintenance {
                for_seconds,
                reason,
            } => return self.check_start_maintenance(device_id, *for_seconds, reason),
            Requested::EndMaintenance => {
                self.check_subject(device_id)?;
                return match self.node.maintenance.get(device_id, SystemTime::now()) {
                    Some(_) => Ok(Checked::EndMaintenance),
                    None => Err(ActionError::NotFound(format!(
                        "no maintenance on {device_id}"
                    ))),
                };
            }
            _ => {}
        }
        // The backstop behind the remediation engine's own hold: whatever path a policy's
        // step takes (a lease restored after a hold, a window started mid-step), no policy
        // acts on a subject in maintenance. An operator still may.
        if request.caller.identity.starts_with("policy:") {
            if let Some(window) = self.node.maintenance_of(device_id) {
                return Err(ActionError::NotPossible(format!(
                    "{device_id} is in maintenance ({}): no policy acts on it",
                    window.describe()
                )));
            }
        }
        let req = request.what.clone();
        if let Requested::KillProcess(k) = req {
            let watch = self.node.processes().ok_or_else(|| {
                ActionError::NotPossible(
                    "no [[process]] rules are configured: the agent signals only processes it watches"
                        .to_string(),
                )
            })?;
            let info = crate::action::kill::verify(&watch.rules, &k).await?;
            return Ok(Checked::Process(Box::new(info)));
        }
        if let Requested::RestartService { service } = &req {
            let unit = super::service::verify(self.node.services(), service, device_id)?;
            return Ok(Checked::Service(unit));
        }
        if let Requested::CleanFiles { rule } = &req {
            return self.check_cleanup(device_id, rule);
        }
        let dev = self
            .node
            .device(device_id)
            .ok_or_else(|| ActionError::NoSuchDevice(device_id.to_string()))?;
        match req {
            Requested::InjectFault(_) => {
                if self
                    .control(device_id)
                    .and_then(DeviceControl::injector)
                    .is_none()
                {
                    return Err(ActionError::NotPossible(format!("{device_id} is not a simulated device: faults can only be injected into simulated devices")));
                }
                Ok(Checked::Fault)
            }
            Requested::Device(action) => {
                if let DeviceAction::SetPowerLimit(w) = action {
                    if !w.is_finite() || w <= 0.0 {
                        return Err(ActionError::InvalidArgument(format!(
                            "watts: expected a positive number, got {w}"
                        )));
                    }
                }
                // Checked against the current status: a backend may learn a capability on its
                // first read (a writable power cap found by sysfs).
                if !dev.status().capabilities.contains(&action.capability()) {
                    return Err(ActionError::NotPossible(format!(
                        "{device_id} does not support {}",
                        action.describe()
                    )));
                }
                Ok(Checked::Device)
            }
            Requested::KillProcess(_) => Err(ActionError::InvalidArgument(
                "a process is not a device: use KillProcess".to_string(),
            )),
            Requested::StartMaintenance { .. }
            | Requested::EndMaintenance
            | Requested::RestartService { .. }
            | Requested::CleanFiles { .. } => Err(ActionError::InvalidArgument(
                "internal: checked above".to_string(),
            )),
        }
    }

    /// The rule exists, and the request names it as its target (`cleanup:<rule>`).
    fn check_cleanup(&self, target: &str, rule: &str) -> Result<Checked, ActionError> {
        let Some(r) = self.cleanup.iter().find(|r| r.name == rule) else {
            let known: Vec<&str> = self.cleanup.iter().map(|r| r.name.as_str()).collect();
            return Err(ActionError::NotFound(format!(
                "rule: no [[cleanup]] rule named {rule:?} on this node ({})",
                if known.is_empty() {
                    "none is configured".to_string()
                } else {
                    format!("configured: {}", known.join(", "))
                }
            )));
        };
        if target != clean::target(rule) {
            return Err(ActionError::InvalidArgument(format!(
                "internal: the target of clean-files {rule} is {}, found {target}",
                clean::target(rule)
            )));
        }
        Ok(Checked::Cleanup(Box::new(r.clone())))
    }

    /// A maintenance subject is `node` or a device of this node.
    fn check_subject(&self, subject: &str) -> Result<(), ActionError> {
        if subject == crate::maintenance::NODE || self.node.device(subject).is_some() {
            Ok(())
        } else {
            Err(ActionError::NoSuchDevice(subject.to_string()))
        }
    }

    fn check_start_maintenance(
        &self,
        subject: &str,
        for_seconds: u64,
        reason: &str,
    ) -> Result<Checked, ActionError> {
        self.check_subject(subject)?;
        let max = self.safety.max_maintenance;
        if for_seconds == 0 || for_seconds > max.as_secs() {
            return Err(ActionError::InvalidArgument(format!(
                "for_seconds: expected 1 to {} ({}, the agent's max_maintenance), found {for_seconds}",
                max.as_secs(),
                humantime::format_duration(max)
            )));
        }
        if reason.trim().is_empty() {
            return Err(ActionError::InvalidArgument(
                "reason: expected why the subject goes into maintenance (for whoever looks next), found nothing".into(),
            ));
        }
        if reason.len() > MAX_MAINTENANCE_REASON {
            return Err(ActionError::InvalidArgument(format!(
                "reason: expected at most {MAX_MAINTENANCE_REASON} bytes, found {}",
                reason.len()
            )));
        }
        Ok(Checked::StartMaintenance(
            SystemTime::now() + Duration::from_secs(for_seconds),
        ))
    }

    async fn execute(
        &self,
        request: &ActionRequest,
        checked: Checked,
        extras: &mut Extras,
    ) -> (Outcome, String) {
        let device_id = request.device_id.as_str();
        match (request.what.clone(), checked) {
            (Requested::StartMaintenance { reason, .. }, Checked::StartMaintenance(until)) => {
                let extended = self
                    .node
                    .maintenance
                    .get(device_id, SystemTime::now())
                    .is_some();
                let w = self.node.maintenance.start(
                    device_id,
                    MaintenanceWindow {
                        until: Some(until),
                        reason,
                        by: request.caller.identity.clone(),
                        started_at: SystemTime::now(),
                        audit_hash: String::new(),
                        source: MaintenanceSource::Operator,
                    },
                );
                let verb = if extended { "extended" } else { "started" };
                (
                    Outcome::Succeeded,
                    format!(
                        "maintenance on {device_id} {verb}: {}; policies do not act on it meanwhile",
                        w.describe()
                    ),
                )
            }
            (Requested::EndMaintenance, Checked::EndMaintenance) => {
                match self.node.maintenance.end(device_id) {
                    Some(w) => (
                        Outcome::Succeeded,
                        format!(
                            "maintenance on {device_id} ended (it was {}); policies may act again",
                            w.describe()
                        ),
                    ),
                    None => (
                        Outcome::Refused,
                        format!("no maintenance on {device_id}: it ended meanwhile"),
                    ),
                }
            }
            (Requested::KillProcess(k), Checked::Process(info)) => {
                let (outcome, message, done) = crate::action::kill::execute(*info, &k).await;
                extras.process_kill = Some(done);
                (outcome, message)
            }
            (Requested::RestartService { .. }, Checked::Service(unit)) => {
                super::service::restart(&unit).await
            }
            (Requested::CleanFiles { .. }, Checked::Cleanup(rule)) => {
                let (outcome, message, report) = clean::run(*rule, false).await;
                extras.file_cleanup = Some(report);
                (outcome, message)
            }
            (Requested::InjectFault(fault), Checked::Fault) => {
                match self.control(device_id).and_then(DeviceControl::injector) {
                    Some(inj) => {
                        inj.inject(fault);
                        let active: Vec<_> = inj.active().iter().map(|f| f.as_str()).collect();
                        (
                            Outcome::Succeeded,
                            format!("active faults: [{}]", active.join(", ")),
                        )
                    }
                    None => (Outcome::Refused, "not a simulated device".into()),
                }
            }
            (Requested::Device(action), Checked::Device) => match self.control(device_id) {
                Some(dev) => dev.run(action).await,
                None => (Outcome::Refused, format!("no device {device_id:?}")),
            },
            _ => (
                Outcome::Refused,
                "internal: the checks do not match the action".into(),
            ),
        }
    }

    fn control(&self, device_id: &str) -> Option<&DeviceControl> {
        self.controls.iter().find(|c| c.id == device_id)
    }

    /// The most recent records, newest first.
    pub fn recent(&self, limit: usize, device_id: Option<&str>) -> Vec<ActionRecord> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter(|r| device_id.is_none_or(|d| r.device_id == d))
            .take(limit)
            .cloned()
            .collect()
    }
}
