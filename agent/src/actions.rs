//! The single path every mutating action takes: reset, calibrate, power limit, enable/disable
//! and fault injection (and any action added later: the checks below are written against
//! [`Requested`]'s methods, so a new kind gets them by construction).
//!
//! In order: the idempotency key (a retry returns the first result), authorization (operator
//! role, else PERMISSION_DENIED and a `denied` audit entry), the device and its capability, the
//! confirmation a hard reset or power cycle needs, the per-device gate (one action at a time,
//! cooldown, resets per hour). A dry run stops there and records a `dry-run` entry. Otherwise
//! a `begin` entry is made durable in the audit log — if it cannot be, the action is refused —
//! the action runs on the device's supervisor (which bounds it by a deadline), and an `end`
//! entry records the outcome and duration. Refusals after authorization are recorded as
//! `refused`. Records are also kept in memory for `ListActions` and logged under the `audit`
//! tracing target. No other module calls a device's mutating methods.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use health_hal::{FaultKind, ResetKind};
use serde_json::json;

use crate::audit::{AuditLog, Entry, Phase};
use crate::auth::{Caller, Role};
use crate::config::SafetyConfig;
use crate::node::Node;
use crate::safety::{self, Claim, Gate, GateRequest, Idempotency};
use crate::supervisor::{DeviceAction, DeviceStatus, Outcome};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Requested {
    Device(DeviceAction),
    InjectFault(FaultKind),
}

impl Requested {
    pub fn describe(&self) -> String {
        match self {
            Requested::Device(a) => a.describe(),
            Requested::InjectFault(f) => format!("inject-fault {}", f.as_str()),
        }
    }

    /// The action's arguments, as recorded in the audit log.
    pub fn args(&self) -> serde_json::Value {
        match self {
            Requested::Device(DeviceAction::Reset(k)) => json!({"kind": k.as_str()}),
            Requested::Device(DeviceAction::SetPowerLimit(w)) => json!({"watts": w}),
            Requested::Device(DeviceAction::SetEnabled(e)) => json!({"enabled": e}),
            Requested::Device(DeviceAction::Calibrate | DeviceAction::ReadNow) => json!({}),
            Requested::InjectFault(f) => json!({"fault": f.as_str()}),
        }
    }

    /// Actions that cannot be undone by the next request and may take a board down: the
    /// caller must say `confirm` (agent-ctl `--yes`).
    pub fn needs_confirmation(&self) -> bool {
        matches!(
            self,
            Requested::Device(DeviceAction::Reset(ResetKind::Hard | ResetKind::PowerCycle))
        )
    }

    pub fn is_reset(&self) -> bool {
        matches!(self, Requested::Device(DeviceAction::Reset(_)))
    }

    /// Whether the per-device gate (one at a time, cooldown, resets per hour) applies. Fault
    /// injection goes to the simulator's fault handle, not the device, and must work while the
    /// device is busy or hung.
    pub fn gated(&self) -> bool {
        match self {
            Requested::Device(_) => true,
            Requested::InjectFault(_) => false,
        }
    }
}

/// One request for an action, as the service hands it over.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub caller: Caller,
    pub device_id: String,
    pub what: Requested,
    /// The caller confirmed a hard reset or power cycle.
    pub confirm: bool,
    /// Check everything, touch nothing.
    pub dry_run: bool,
    /// Empty: none. A repeat with the same key and request returns the first result.
    pub idempotency_key: String,
    /// The action this one completes (calibrate after a reset): no cooldown between them.
    pub follows: Option<String>,
}

impl ActionRequest {
    /// What must match for a repeated idempotency key to count as the same request.
    fn fingerprint(&self) -> String {
        format!(
            "{} | {} | {} {} | confirm={} dry_run={}",
            self.caller.identity,
            self.device_id,
            self.what.describe(),
            self.what.args(),
            self.confirm,
            self.dry_run
        )
    }
}

#[derive(Debug, Clone)]
pub struct ActionRecord {
    pub id: String,
    pub device_id: String,
    pub action: String,
    pub caller: String,
    pub role: String,
    pub outcome: Outcome,
    pub message: String,
    pub started_at: SystemTime,
    pub duration_ms: u64,
    pub device_after: Option<Arc<DeviceStatus>>,
    pub dry_run: bool,
    pub replayed: bool,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ActionError {
    #[error("no device {0:?} on this node")]
    NoSuchDevice(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotPossible(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// A safety limit (busy, cooldown, resets per hour) or a missing confirmation.
    #[error("{0}")]
    Unsafe(String),
    /// The begin record could not be made durable: the action did not run.
    #[error("refused: the action was not started because {0}")]
    AuditUnavailable(String),
}

const KEEP_RECORDS: usize = 1000;
/// How long a result stays available to retries with the same idempotency key.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
const IDEMPOTENCY_KEYS: usize = 10_000;

pub struct Actions {
    node: Arc<Node>,
    audit: Arc<AuditLog>,
    safety: SafetyConfig,
    gate: Arc<Gate>,
    idempotency: Idempotency<Result<ActionRecord, ActionError>>,
    next_id: AtomicU64,
    recent: Mutex<VecDeque<ActionRecord>>,
}

impl Actions {
    pub fn new(node: Arc<Node>, audit: Arc<AuditLog>, safety: SafetyConfig) -> Actions {
        Actions {
            node,
            audit,
            safety,
            gate: Arc::new(Gate::default()),
            idempotency: Idempotency::new(IDEMPOTENCY_TTL, IDEMPOTENCY_KEYS),
            next_id: AtomicU64::new(1),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.audit
    }

    /// Runs one action. Errors are refusals before anything touched the device; every call
    /// that reaches this path, refused or not, leaves a record.
    ///
    /// The action runs on its own task: once accepted it runs to its end and is recorded, even
    /// if the caller goes away (a client timeout, Ctrl-C) while it is queued or running.
    pub async fn run(self: &Arc<Self>, req: ActionRequest) -> Result<ActionRecord, ActionError> {
        let key = req.idempotency_key.clone();
        let tx = if key.is_empty() {
            None
        } else {
            // A key is only honoured for the caller who made it, and only after that caller
            // is authorized again: a replay never grants more than a fresh request would.
            if req.caller.role < Some(Role::Operator) {
                return self.clone().spawn(req).await;
            }
            match self.idempotency.claim(&key, &req.fingerprint()) {
                Claim::New(tx) => Some(tx),
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
                    return Err(ActionError::InvalidArgument(format!(
                        "idempotency_key {key:?} was already used for a different request; use a new key"
                    )))
                }
            }
        };
        let result = self.clone().spawn(req).await;
        if let Some(tx) = tx {
            // Only an action that ran is remembered; a refusal may be retried for real.
            let keep = result.is_ok();
            self.idempotency.finish(&key, tx, result.clone(), keep);
        }
        result
    }

    async fn spawn(self: Arc<Self>, req: ActionRequest) -> Result<ActionRecord, ActionError> {
        tokio::spawn(async move { self.run_recorded(req).await })
            .await
            .unwrap_or_else(|e| {
                Err(ActionError::NotPossible(format!(
                    "the action task failed: {e}"
                )))
            })
    }

    fn entry(&self, id: &str, req: &ActionRequest) -> Entry {
        Entry {
            action_id: id.to_string(),
            caller: req.caller.identity.clone(),
            role: req.caller.role_name().to_string(),
            action: req.what.describe(),
            target: req.device_id.clone(),
            args: req.what.args(),
            idempotency_key: req.idempotency_key.clone(),
            ..Default::default()
        }
    }

    /// A single audit entry for a request that did not run; a failure to write it is logged
    /// (the request is refused either way).
    async fn note(&self, phase: Phase, mut entry: Entry, outcome: &str, message: &str) {
        entry.outcome = Some(outcome.to_string());
        entry.message = message.to_string();
        if let Err(e) = self.audit.append(phase, entry).await {
            tracing::error!(target: "audit", error = %e, phase = phase.as_str(), "could not record a refused request");
        }
    }

    async fn run_recorded(&self, req: ActionRequest) -> Result<ActionRecord, ActionError> {
        let started_at = SystemTime::now();
        let t0 = Instant::now();
        let id = format!(
            "{}-{}",
            &self.node.boot_id[..8],
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        tracing::info!(
            target: "audit",
            id = %id, caller = %req.caller.identity, role = req.caller.role_name(),
            device = %req.device_id, action = %req.what.describe(), dry_run = req.dry_run,
            "action requested"
        );
        let result = self.admit_and_run(&id, &req).await;
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
            device_after: self.node.device(&req.device_id).map(|d| d.status()),
            dry_run: req.dry_run,
            replayed: false,
        };
        tracing::info!(
            target: "audit",
            id = %record.id, caller = %record.caller, device = %record.device_id, action = %record.action,
            outcome = record.outcome.as_str(), duration_ms = record.duration_ms, message = %record.message,
            "action finished"
        );
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == KEEP_RECORDS {
                recent.pop_front();
            }
            recent.push_back(record.clone());
        }
        result.map(|_| record)
    }

    /// Every check, in order, then (unless a dry run) the durable begin record, the action
    /// and the end record.
    async fn admit_and_run(
        &self,
        id: &str,
        req: &ActionRequest,
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
            self.note(Phase::Denied, entry, "denied", &msg).await;
            return Err(ActionError::PermissionDenied(msg));
        }
        let refuse = |e: ActionError| async move {
            self.note(Phase::Refused, self.entry(id, req), "refused", &e.to_string())
                .await;
            Err(e)
        };
        if let Err(e) = self.check(&req.device_id, req.what) {
            return refuse(e).await;
        }
        if req.what.needs_confirmation() && !req.confirm {
            return refuse(ActionError::Unsafe(format!(
                "{} on {} needs confirmation: pass --yes (confirm = true)",
                req.what.describe(),
                req.device_id
            )))
            .await;
        }
        let action = req.what.describe();
        let gate_req = GateRequest {
            target: &req.device_id,
            action: &action,
            is_reset: req.what.is_reset(),
            follow_up: req.follows.is_some(),
            limits: self.safety.for_device(&req.device_id),
        };
        if req.dry_run {
            if req.what.gated() {
                if let Err(m) = self.gate.check(&gate_req) {
                    return refuse(ActionError::Unsafe(m)).await;
                }
            }
            let msg = format!(
                "dry run: would {} on {} (role, device, capability, confirmation and limits checked; nothing done)",
                action, req.device_id
            );
            let mut e = entry;
            e.outcome = Some("succeeded".into());
            e.message = msg.clone();
            self.audit
                .append(Phase::DryRun, e)
                .await
                .map_err(|e| ActionError::AuditUnavailable(e.to_string()))?;
            return Ok((Outcome::Succeeded, msg));
        }
        let _reservation = if req.what.gated() {
            match self.gate.reserve(&gate_req) {
                Ok(r) => Some(r),
                Err(m) => return refuse(ActionError::Unsafe(m)).await,
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
        let t0 = Instant::now();
        let (outcome, mut message) = self.execute(&req.device_id, req.what).await;
        let mut end = entry;
        end.outcome = Some(outcome.as_str().to_ascii_lowercase());
        end.message = message.clone();
        end.duration_ms = Some(t0.elapsed().as_millis() as u64);
        if let Err(e) = self.audit.append(Phase::End, end).await {
            // The action has happened: report it, and say its end is not on record.
            tracing::error!(target: "audit", error = %e, id, "the end of an action could not be recorded");
            message = format!("{message}; WARNING: the end record was not written: {e}");
        }
        Ok((outcome, message))
    }

    /// Checks that need no device call: the device exists, has the capability, arguments.
    fn check(&self, device_id: &str, req: Requested) -> Result<(), ActionError> {
        let dev = self
            .node
            .device(device_id)
            .ok_or_else(|| ActionError::NoSuchDevice(device_id.to_string()))?;
        match req {
            Requested::InjectFault(_) => {
                if dev.injector.is_none() {
                    return Err(ActionError::NotPossible(format!("{device_id} is not a simulated device: faults can only be injected into simulated devices")));
                }
            }
            Requested::Device(action) => {
                if let DeviceAction::SetPowerLimit(w) = action {
                    if !w.is_finite() || w <= 0.0 {
                        return Err(ActionError::InvalidArgument(format!(
                            "watts: expected a positive number, got {w}"
                        )));
                    }
                }
                if let Some(cap) = action.capability() {
                    // Checked against the current status: a backend may learn a capability on
                    // its first read (a writable power cap found by sysfs).
                    if !dev.status().capabilities.contains(&cap) {
                        return Err(ActionError::NotPossible(format!(
                            "{device_id} does not support {}",
                            action.describe()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    async fn execute(&self, device_id: &str, req: Requested) -> (Outcome, String) {
        let Some(dev) = self.node.device(device_id) else {
            return (Outcome::Refused, format!("no device {device_id:?}"));
        };
        match req {
            Requested::InjectFault(fault) => match dev.injector.as_ref() {
                Some(inj) => {
                    inj.inject(fault);
                    let active: Vec<_> = inj.active().iter().map(|f| f.as_str()).collect();
                    (
                        Outcome::Succeeded,
                        format!("active faults: [{}]", active.join(", ")),
                    )
                }
                None => (Outcome::Refused, "not a simulated device".into()),
            },
            Requested::Device(action) => dev.run(action).await,
        }
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
