//! One step: whether the target can take it, the request it becomes on the action path
//! (caller `policy:<name>`, a deterministic idempotency key), its verification on fresh reads,
//! and the end of a power-limit lease.

use std::time::{Duration, SystemTime};

use health_hal::{Capability, Condition, ConditionCode, Quantity, ResetKind};
use tokio_util::sync::CancellationToken;

use super::ladder::{Acted, Verified, RETRY};
use super::view::{LadderState, StepOutcome, StepRecord};
use super::walk::Readiness;
use super::Remediation;
use crate::action::composite::AfterReset;
use crate::action::kill::{KillRequest, KillSignal};
use crate::action::{ActionError, ActionRecord, ActionRequest, Requested};
use crate::auth::{Caller, Role};
use crate::config::{Policy, PolicyStep, PowerTarget, StepAction};
use crate::device::{DeviceAction, DeviceProbe};
use crate::model::Outcome;

impl Remediation {
    /// Whether the target can take the step; why not, when it cannot.
    pub(super) fn capable(&self, id: &str, step: &PolicyStep) -> Result<(), String> {
        let Some(status) = self.node.device_status(id) else {
            // A host subject: a watched process, or a mount point (DISK_FULL's subject).
            let process = id.starts_with("process:");
            let service = id.starts_with("service:");
            return match step.action {
                StepAction::KillProcess { .. } if process => Ok(()),
                StepAction::RestartService if service => Ok(()),
                StepAction::CleanFiles { .. } if !process && !service => Ok(()),
                StepAction::KillProcess { .. }
                | StepAction::RestartService
                | StepAction::CleanFiles { .. } => Err(format!(
                    "{id} cannot take {}: kill-process applies to a watched process, restart-service to a [[service]] rule, clean-files to a full disk's mount point",
                    step.action.name()
                )),
                _ => Err(format!(
                    "{id} is a host subject: {} applies to devices",
                    step.action.name()
                )),
            };
        };
        let caps = &status.capabilities;
        let need: &[Capability] = match step.action {
            StepAction::Calibrate => &[Capability::Calibrate],
            StepAction::ResetSoft { recalibrate } => {
                if recalibrate {
                    &[Capability::ResetSoft, Capability::Calibrate]
                } else {
                    &[Capability::ResetSoft]
                }
            }
            StepAction::ResetHard { recalibrate } => {
                if recalibrate {
                    &[Capability::ResetHard, Capability::Calibrate]
                } else {
                    &[Capability::ResetHard]
                }
            }
            StepAction::PowerCycle { recalibrate } => {
                if recalibrate {
                    &[Capability::PowerCycle, Capability::Calibrate]
                } else {
                    &[Capability::PowerCycle]
                }
            }
            StepAction::SetPowerLimit(_) => &[Capability::SetPowerLimit],
            StepAction::Disable => &[Capability::EnableDisable],
            StepAction::KillProcess { .. } | StepAction::RestartService => {
                return Err(format!(
                    "{id} is a device: {} applies to a process or a service",
                    step.action.name()
                ))
            }
            StepAction::CleanFiles { .. } => {
                return Err(format!(
                "{id} is a device: clean-files applies to a host subject (DISK_FULL's mount point)"
            ))
            }
        };
        match need.iter().find(|c| !caps.contains(c)) {
            Some(c) => Err(format!(
                "{id} cannot do {} (no {c:?} capability): skipped",
                step.action.describe()
            )),
            None => Ok(()),
        }
    }

    pub(super) fn needs_known_answer(&self, id: &str, step: &PolicyStep) -> bool {
        let resets_or_calibrates = matches!(
            step.action,
            StepAction::Calibrate
                | StepAction::ResetSoft { .. }
                | StepAction::ResetHard { .. }
                | StepAction::PowerCycle { .. }
        );
        resets_or_calibrates
            && self
                .node
                .device_status(id)
                .is_some_and(|s| s.capabilities.contains(&Capability::Matvec))
    }

    pub(super) fn caller(policy: &Policy) -> Caller {
        Caller {
            identity: format!("policy:{}", policy.name),
            role: Some(Role::Operator),
        }
    }

    /// Runs the step's action through the action path. A refusal by a safety limit (busy,
    /// cooldown, resets per hour) is retried until the step's timeout, looking again before
    /// each try: a pause, an operator's fix or the condition clearing stops it.
    pub(super) async fn act(
        &self,
        id: &str,
        policy: &Policy,
        idx: usize,
        step: &PolicyStep,
        trigger: &Condition,
        cancel: &CancellationToken,
    ) -> Acted {
        let deadline = tokio::time::Instant::now() + step.timeout;
        let acted = |outcome, message: String, action_id: String| Acted {
            outcome,
            message,
            action_id,
            not_taken: false,
            cleared: false,
            impossible: false,
        };
        let not_taken = |cleared: bool, message: String| Acted {
            not_taken: true,
            cleared,
            ..acted(Outcome::Refused, message, String::new())
        };
        loop {
            match self.act_once(id, policy, idx, step, trigger).await {
                Ok(rec) => return acted(rec.outcome, rec.message, rec.id),
                Err(ActionError::Unsafe(m)) if tokio::time::Instant::now() < deadline => {
                    self.blocked(id, LadderState::Waiting, format!("action path: {m}"));
                    if !self.sleep(cancel, RETRY).await {
                        return not_taken(false, "agent stopping".into());
                    }
                    match self.check_ready(id, policy) {
                        Readiness::Go => {}
                        Readiness::Cleared => {
                            return not_taken(true, "the condition cleared".into())
                        }
                        Readiness::Wait(why) => return not_taken(false, why),
                    }
                }
                Err(e @ (ActionError::NotPossible(_) | ActionError::NoSuchDevice(_))) => {
                    return Acted {
                        impossible: true,
                        ..acted(Outcome::Refused, e.to_string(), String::new())
                    }
                }
                Err(e) => return acted(Outcome::Refused, e.to_string(), String::new()),
            }
        }
    }

    pub(super) async fn act_once(
        &self,
        id: &str,
        policy: &Policy,
        idx: usize,
        step: &PolicyStep,
        trigger: &Condition,
    ) -> Result<ActionRecord, ActionError> {
        let what = match &step.action {
            StepAction::Calibrate => Requested::Device(DeviceAction::Calibrate),
            StepAction::ResetSoft { .. } => Requested::Device(DeviceAction::Reset(ResetKind::Soft)),
            StepAction::ResetHard { .. } => Requested::Device(DeviceAction::Reset(ResetKind::Hard)),
            StepAction::PowerCycle { .. } => {
                Requested::Device(DeviceAction::Reset(ResetKind::PowerCycle))
            }
            StepAction::SetPowerLimit(target) => {
                Requested::Device(DeviceAction::SetPowerLimit(self.power_target(id, *target)?))
            }
            StepAction::Disable => Requested::Device(DeviceAction::SetEnabled(false)),
            StepAction::KillProcess {
                kill,
                escalate_after,
            } => Requested::KillProcess(self.kill_request(id, *kill, *escalate_after)?),
            StepAction::CleanFiles { rule } => Requested::CleanFiles { rule: rule.clone() },
            StepAction::RestartService => Requested::RestartService {
                service: id.strip_prefix("service:").unwrap_or(id).to_string(),
            },
        };
        let device_id = match &what {
            Requested::KillProcess(k) => k.subject(),
            Requested::CleanFiles { rule } => crate::action::clean::target(rule),
            _ => id.to_string(),
        };
        let req = ActionRequest {
            caller: Self::caller(policy),
            device_id,
            what,
            confirm: true,
            dry_run: false,
            idempotency_key: format!(
                "remediation/{id}/{}/{}/{idx}",
                policy.name,
                self.get(id, |l| l.ladder_id.clone()).unwrap_or_default()
            ),
            follows: None,
            trigger: format!("{}: {}", trigger.code, trigger.message),
        };
        match step.action {
            StepAction::ResetSoft { recalibrate }
            | StepAction::ResetHard { recalibrate }
            | StepAction::PowerCycle { recalibrate }
                if recalibrate =>
            {
                let Requested::Device(DeviceAction::Reset(kind)) = req.what else {
                    return Err(ActionError::InvalidArgument("internal: not a reset".into()));
                };
                self.actions
                    .reset(
                        req,
                        kind,
                        AfterReset {
                            recalibrate: true,
                            verify: false,
                        },
                    )
                    .await
            }
            _ => self.actions.run(req).await,
        }
    }

    pub(super) fn power_target(&self, id: &str, target: PowerTarget) -> Result<f64, ActionError> {
        match target {
            PowerTarget::Watts(w) => Ok(w),
            PowerTarget::Fraction(f) => {
                let status = self
                    .node
                    .device_status(id)
                    .ok_or_else(|| ActionError::NoSuchDevice(id.to_string()))?;
                let base = status.power_limit_watts.or_else(|| {
                    status
                        .readings
                        .iter()
                        .filter(|r| r.quantity == Quantity::PowerWatts)
                        .map(|r| r.value)
                        .reduce(f64::max)
                });
                match base {
                    Some(b) if b.is_finite() && b > 0.0 => Ok((b * f * 1000.0).round() / 1000.0),
                    _ => Err(ActionError::NotPossible(format!(
                        "{id} has no power limit in force and no power reading to take {:.0}% of",
                        f * 100.0
                    ))),
                }
            }
        }
    }

    pub(super) fn kill_request(
        &self,
        id: &str,
        kill: bool,
        escalate_after: Option<Duration>,
    ) -> Result<KillRequest, ActionError> {
        let snapshot = self.node.snapshot();
        let p = snapshot
            .host
            .processes
            .iter()
            .find(|p| p.subject() == id)
            .ok_or_else(|| {
                ActionError::NotPossible(format!("{id}: the process is no longer watched"))
            })?;
        Ok(KillRequest {
            pid: u32::try_from(p.pid)
                .map_err(|_| ActionError::InvalidArgument(format!("{id}: pid {}", p.pid)))?,
            signal: if kill {
                KillSignal::Kill
            } else {
                KillSignal::Term
            },
            start_ticks: Some(p.start_ticks),
            escalate_after: if kill { None } else { escalate_after },
        })
    }

    /// Waits for the matched condition to be gone on fresh reads and stay gone for the
    /// step's hold (then the known-answer probe, when asked), within the step's timeout for
    /// the clearing.
    pub(super) async fn verify(
        &self,
        id: &str,
        policy: &Policy,
        step: &PolicyStep,
        known_answer: bool,
        cancel: &CancellationToken,
    ) -> Verified {
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + step.timeout;
        let mut clear_since: Option<tokio::time::Instant> = None;
        loop {
            if cancel.is_cancelled() {
                return Verified::Cancelled;
            }
            let now = tokio::time::Instant::now();
            let present = match self.present_fresh(id, policy).await {
                // The device's own checks count too: a backend's failed self-test (SCPI
                // `*TST?`), a failed reset or an unanswered read is a device not yet fixed,
                // whichever condition the policy matched.
                None => self.broken(id),
                found => found,
            };
            match present {
                Some(c) => {
                    clear_since = None;
                    self.blocked(
                        id,
                        LadderState::Verifying,
                        format!("verify: {} still present", c.code),
                    );
                    if now >= deadline {
                        return Verified::No(format!(
                            "verification failed: {}: {} still present {} after the action",
                            c.code,
                            c.message,
                            humantime::format_duration(Duration::from_secs(
                                now.duration_since(t0).as_secs()
                            ))
                        ));
                    }
                }
                None => {
                    let since = *clear_since.get_or_insert(now);
                    let held = now.duration_since(since);
                    if held >= step.hold {
                        break;
                    }
                    self.blocked(
                        id,
                        LadderState::Holding,
                        format!("hold {}s", (step.hold - held).as_secs_f64().ceil() as u64),
                    );
                }
            }
            if !self.sleep(cancel, self.cfg.interval).await {
                return Verified::Cancelled;
            }
        }
        let mut v = format!(
            "verified: clear on fresh reads for {}",
            humantime::format_duration(step.hold)
        );
        if known_answer {
            if let Some(d) = self.node.device(id) {
                match d.probe(DeviceProbe::KnownAnswer).await {
                    (Outcome::Succeeded, m) => v = format!("{v}; known-answer probe passed ({m})"),
                    (Outcome::Failed, m) => {
                        return Verified::No(format!(
                            "verification failed: known-answer probe: {m}"
                        ))
                    }
                    (_, m) => v = format!("{v}; known-answer probe not run ({m})"),
                }
            }
        }
        Verified::Yes(v)
    }

    /// The power-limit lease ends: the previous limit is restored once the condition has
    /// stayed clear for the step's hold (which verification has just established).
    pub(super) async fn end_power_lease(
        &self,
        id: &str,
        policy: &Policy,
        previous: Option<f64>,
        trigger: &Condition,
    ) {
        let Some(w) = previous else {
            self.set(id, |l| {
                l.history.push(StepRecord {
                    action: "restore power limit".into(),
                    outcome: StepOutcome::Skipped,
                    message: "no limit was in force before the step: the new one stays".into(),
                    at: SystemTime::now(),
                    action_id: String::new(),
                })
            });
            return;
        };
        let req = ActionRequest {
            caller: Self::caller(policy),
            device_id: id.to_string(),
            what: Requested::Device(DeviceAction::SetPowerLimit(w)),
            confirm: true,
            dry_run: false,
            idempotency_key: String::new(),
            follows: None,
            trigger: format!("lease end for {}: {}", trigger.code, trigger.message),
        };
        let (outcome, message, action_id) = match self.actions.run(req).await {
            Ok(r) => (r.outcome, r.message, r.id),
            Err(e) => (Outcome::Refused, e.to_string(), String::new()),
        };
        let so = if outcome == Outcome::Succeeded {
            StepOutcome::Succeeded
        } else {
            StepOutcome::Failed
        };
        self.steps.add(&policy.name, "restore-power-limit", so);
        self.set(id, |l| {
            l.history.push(StepRecord {
                action: format!("restore power limit {w} W"),
                outcome: so,
                message,
                at: SystemTime::now(),
                action_id,
            })
        });
    }

    /// A critical condition that says the device itself is not working (whatever the policy
    /// matched): verification does not pass while one is present.
    fn broken(&self, id: &str) -> Option<Condition> {
        self.conditions_of(id).into_iter().find(|c| {
            c.severity == health_hal::Severity::Critical
                && matches!(
                    c.code,
                    ConditionCode::DeviceError
                        | ConditionCode::ResetFailed
                        | ConditionCode::DeviceUnresponsive
                        | ConditionCode::DeviceMissing
                )
        })
    }
}
