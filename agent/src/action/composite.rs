//! Actions made of steps, decided on the agent's own types: a reset followed by a
//! calibration (`recalibrate_after`) and a verification on a fresh read (`verify_after`).
//! Each step is an ordinary request through [`Actions::run`], so each is authorized, gated
//! and audited on its own; this module only decides whether the next step runs and what the
//! whole request's outcome is.

use std::sync::Arc;

use health_hal::{Capability, ResetKind, Severity};

use super::{ActionError, ActionRecord, ActionRequest, Actions, Requested};
use crate::audit::{Phase, Recorded};
use crate::auth::Role;
use crate::device::DeviceAction;
use crate::model::Outcome;

/// What follows a reset within the same request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AfterReset {
    /// Calibrate once the reset has succeeded (no cooldown between the two).
    pub recalibrate: bool,
    /// Fail the request when the device's read after the last step shows a critical
    /// condition.
    pub verify: bool,
}

impl Actions {
    /// A reset of `kind` on `req.device_id`, then what `after` asks for. `req.what` is
    /// ignored. The record is the reset's, its outcome and message covering every step and
    /// its `device_after` the read after the last one.
    pub async fn reset(
        self: &Arc<Self>,
        mut req: ActionRequest,
        kind: ResetKind,
        after: AfterReset,
    ) -> Result<ActionRecord, ActionError> {
        req.what = Requested::Device(DeviceAction::Reset(kind));
        // A reset whose calibration cannot follow is refused before anything is reset. (A
        // caller below operator is denied by the reset itself, which records that.)
        if after.recalibrate && req.caller.role >= Some(Role::Operator) {
            if let Some(dev) = self.node.device(&req.device_id) {
                // The current status: a backend may learn a capability on its first read.
                if !dev.status().capabilities.contains(&Capability::Calibrate) {
                    let e = ActionError::NotPossible(format!(
                        "recalibrate_after: {} cannot calibrate; reset without it",
                        req.device_id
                    ));
                    let entry = self.entry(&self.next_action_id(), &req);
                    self.note(Phase::Refused, entry, Recorded::Refused, &e.to_string())
                        .await;
                    return Err(e);
                }
            }
        }
        let mut record = self.run(req.clone()).await?;
        if after.recalibrate && record.outcome == Outcome::Succeeded {
            self.calibrate_after(&mut record, req).await;
        }
        if after.verify && record.outcome == Outcome::Succeeded {
            verify(&mut record);
        }
        Ok(record)
    }

    /// The calibration that completes a reset. The reset has happened: a failure to calibrate
    /// is part of its result, not an error that would hide the reset from the caller.
    async fn calibrate_after(self: &Arc<Self>, record: &mut ActionRecord, mut req: ActionRequest) {
        req.what = Requested::Device(DeviceAction::Calibrate);
        // Part of the same request: its own idempotency key, derived, and no cooldown after
        // the reset it completes.
        if !req.idempotency_key.is_empty() {
            req.idempotency_key.push_str("/recalibrate");
        }
        req.follows = Some(record.id.clone());
        let (outcome, message, after) = match self.run(req).await {
            Ok(cal) => (cal.outcome, cal.message, cal.device_after),
            Err(e) => (Outcome::Refused, e.to_string(), record.device_after.clone()),
        };
        record.message = format!("{}; then calibrate: {message}", record.message);
        record.outcome = outcome;
        record.device_after = after;
    }
}

/// The supervisor reads the device right after every action, so `device_after` is a fresh
/// read: the reset is verified when that read shows no critical condition.
fn verify(record: &mut ActionRecord) {
    let critical: Vec<String> = record
        .device_after
        .iter()
        .flat_map(|d| d.conditions.iter())
        .filter(|c| c.severity == Severity::Critical)
        .map(|c| format!("{}: {}", c.code, c.message))
        .collect();
    if critical.is_empty() {
        record.message = format!(
            "{}; verified: fresh read has no critical condition",
            record.message
        );
    } else {
        record.outcome = Outcome::Failed;
        record.message = format!(
            "{}; verification failed: {}",
            record.message,
            critical.join("; ")
        );
    }
}
