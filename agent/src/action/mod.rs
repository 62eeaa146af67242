//! The single path every mutating action takes: reset, calibrate, power limit, enable/disable,
//! fault injection, killing a watched process, cleaning files (and any action added later: the checks below
//! are written against [`Requested`]'s methods, so a new kind gets them by construction).
//!
//! In order: the idempotency key (a retry returns the first result), authorization (operator
//! role, else PERMISSION_DENIED and a `denied` audit entry), the target and its capability (for
//! a process: the `[[process]]` rules and the process as it is now), the confirmation a hard
//! reset or power cycle needs, the per-target gate (one action at a time, cooldown, resets per
//! hour). A dry run stops there and records a `dry-run` entry. Otherwise a `begin` entry is
//! made durable in the audit log — if it cannot be, the action is refused — the action runs on
//! the device's supervisor (which bounds it by a deadline), and an `end` entry records the
//! outcome and duration; an action cut off by shutdown gets an `interrupted` entry instead.
//! Refusals after authorization are recorded as `refused`. Records are also kept in memory for
//! `ListActions`, carried in reports, counted for `/metrics` and logged under the `audit`
//! tracing target. No other module calls a device's mutating methods.

pub mod clean;
pub mod composite;
mod counts;
pub mod kill;
mod path;
mod restore;
pub mod safety;
pub mod service;
#[cfg(test)]
mod tests;

pub use counts::ActionCounts;
pub use path::Actions;

use std::sync::Arc;
use std::time::SystemTime;

use health_hal::{FaultKind, ResetKind};
use serde_json::json;

use crate::auth::Caller;
use crate::device::DeviceAction;
use crate::model::{DeviceStatus, Outcome, ReportedAction};
use kill::{KillReport, KillRequest};

#[derive(Debug, Clone, PartialEq)]
pub enum Requested {
    Device(DeviceAction),
    InjectFault(FaultKind),
    /// Signal a watched process (see [`kill`]).
    KillProcess(KillRequest),
    /// Put the target (a device id, or `node`) into maintenance for `for_seconds`, or extend
    /// (shorten) the window it is in: see [`crate::maintenance`].
    StartMaintenance {
        for_seconds: u64,
        reason: String,
    },
    /// End the target's maintenance window.
    EndMaintenance,
    /// Restart a `[[service]]` rule's systemd unit (see [`service`]); the target is
    /// `service:<name>`.
    RestartService {
        service: String,
    },
    /// Delete what a `[[cleanup]]` rule matches (see [`clean`]); target `cleanup:<rule>`.
    CleanFiles {
        rule: String,
    },
}

impl Requested {
    pub fn describe(&self) -> String {
        match self {
            Requested::Device(a) => a.describe(),
            Requested::InjectFault(f) => format!("inject-fault {}", f.as_str()),
            Requested::KillProcess(k) => k.describe(),
            Requested::StartMaintenance { .. } => crate::maintenance::STARTED.to_string(),
            Requested::EndMaintenance => crate::maintenance::ENDED.to_string(),
            Requested::RestartService { .. } => "restart-service".to_string(),
            Requested::CleanFiles { .. } => "clean-files".to_string(),
        }
    }

    /// The action's arguments, as recorded in the audit log.
    pub fn args(&self) -> serde_json::Value {
        match self {
            Requested::Device(DeviceAction::Reset(k)) => json!({"kind": k.as_str()}),
            Requested::Device(DeviceAction::SetPowerLimit(w)) => json!({"watts": w}),
            Requested::Device(DeviceAction::SetEnabled(e)) => json!({"enabled": e}),
            Requested::Device(_) => json!({}),
            Requested::InjectFault(f) => json!({"fault": f.as_str()}),
            Requested::KillProcess(k) => json!({
                "pid": k.pid,
                "signal": k.signal.as_str(),
                "start_time_ticks": k.start_ticks,
                "escalate_after_ms": k.escalate_after.map(|d| d.as_millis() as u64),
            }),
            Requested::StartMaintenance {
                for_seconds,
                reason,
            } => json!({"for_seconds": for_seconds, "reason": reason}),
            Requested::EndMaintenance => json!({}),
            Requested::RestartService { service } => json!({"service": service}),
            Requested::CleanFiles { rule } => json!({"rule": rule}),
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

    /// Whether the per-target gate (one at a time, cooldown, resets per hour) applies. Fault
    /// injection goes to the simulator's fault handle, not the device, and must work while the
    /// device is busy or hung; a maintenance window does not touch the device at all (a busy
    /// device can still be put into maintenance).
    pub fn gated(&self) -> bool {
        !matches!(
            self,
            Requested::InjectFault(_)
                | Requested::StartMaintenance { .. }
                | Requested::EndMaintenance
        )
    }
}

/// One request for an action, as the service hands it over.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    pub caller: Caller,
    /// The device id, or `process:<pid>` for a process.
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
    /// A remediation step: the condition that triggered it (`CODE: message`), recorded in
    /// its audit entries. Empty for an operator's request.
    pub trigger: String,
}

impl ActionRequest {
    /// An operator request without the safety options, for code and tests inside the agent.
    pub fn operator(caller: &str, device_id: &str, what: Requested) -> ActionRequest {
        ActionRequest {
            caller: Caller::local_operator(caller),
            device_id: device_id.to_string(),
            what,
            confirm: true,
            dry_run: false,
            idempotency_key: String::new(),
            follows: None,
            trigger: String::new(),
        }
    }

    /// What must match for a repeated idempotency key to count as the same request: who, on
    /// what, which action with which arguments, and whether it was a dry run. (Not `confirm`:
    /// it gates an action, it does not change what the action does.)
    fn fingerprint(&self) -> String {
        fingerprint(
            self.caller.principal(),
            &self.device_id,
            &self.what.describe(),
            &self.what.args(),
            self.dry_run,
        )
    }
}

fn fingerprint(
    principal: &str,
    target: &str,
    action: &str,
    args: &serde_json::Value,
    dry_run: bool,
) -> String {
    format!("{principal} | {target} | {action} {args} | dry_run={dry_run}")
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
    /// For a process kill: the signals sent and whether the process exited.
    pub process_kill: Option<KillReport>,
    /// For clean-files: what was (or, on a dry run, would be) removed.
    pub file_cleanup: Option<clean::CleanupReport>,
    pub dry_run: bool,
    pub replayed: bool,
    /// The audit entry that recorded the result (end, refused, denied, dry-run); empty when
    /// it could not be written.
    pub audit_hash: String,
}

impl From<&ActionRecord> for ReportedAction {
    fn from(record: &ActionRecord) -> ReportedAction {
        ReportedAction {
            id: record.id.clone(),
            device_id: record.device_id.clone(),
            action: record.action.clone(),
            caller: record.caller.clone(),
            outcome: record.outcome,
            message: record.message.clone(),
            started_at: record.started_at,
            duration_ms: record.duration_ms,
            audit_hash: record.audit_hash.clone(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ActionError {
    #[error("no device {0:?} on this node")]
    NoSuchDevice(String),
    /// Something else the request names does not exist (a maintenance window to end).
    #[error("{0}")]
    NotFound(String),
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
