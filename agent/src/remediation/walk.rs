//! The walk up one ladder: before each step, wait for what blocks it (a pause, an operator's
//! action, an approval, the node's destructive slot, the collector's lease); run it; verify
//! it; escalate to the next step when it fails.

use health_hal::Condition;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::ladder::{Acted, Ready, Verified, Walk, RETRY};
use super::view::{LadderState, StepOutcome};
use super::{LeaseAnswer, LeaseRequest, Remediation};
use crate::config::{Policy, PolicyMode, PolicyStep, StepAction, WithoutCollector};
use crate::model::{Activity, Outcome};

/// One step of one ladder, as the walk hands it around.
pub(super) struct Rung<'a> {
    pub(super) id: &'a str,
    pub(super) policy: &'a Policy,
    pub(super) step: &'a PolicyStep,
    pub(super) idx: usize,
    /// Where this walk started: a ladder continued within `healthy_delay` starts past 0.
    pub(super) start: usize,
    pub(super) trigger: &'a Condition,
}

impl Rung<'_> {
    /// How the walk ends when the condition clears before this step: a step before it in
    /// this walk did it (recovered), or nothing did (cleared; no step is credited).
    fn cleared(&self) -> Walk {
        if self.idx == self.start {
            Walk::Cleared
        } else {
            Walk::Recovered(self.idx - 1)
        }
    }
}

impl Remediation {
    /// Steps `start..` of `policy` on `id`.
    pub(super) async fn walk(
        &self,
        id: &str,
        policy: &Policy,
        start: usize,
        trigger: &Condition,
        cancel: &CancellationToken,
    ) -> Walk {
        // A destructive step is earned by a step that ran and failed (or by being where the
        // walk starts): a step skipped or refused is never a failure to escalate past.
        let mut earned = true;
        let mut ran = start > 0;
        for (idx, step) in policy.steps.iter().enumerate().skip(start) {
            let rung = Rung {
                id,
                policy,
                step,
                idx,
                start,
                trigger,
            };
            self.set(id, |l| {
                l.step = idx as u32 + 1;
                l.step_action = step.action.describe();
            });
            match self.ready(id, policy, cancel).await {
                Ready::Go => {}
                Ready::Cleared => return rung.cleared(),
                Ready::Cancelled => return Walk::Cancelled,
            }
            if let Err(why) = self.capable(id, step) {
                self.note_step(&rung, StepOutcome::Skipped, why, "").await;
                earned = false;
                continue;
            }
            if step.action.destructive() && !earned && idx > start {
                let why = format!(
                    "not escalated to {}: the step before it was skipped or refused, not failed",
                    step.action.describe()
                );
                self.note_step(&rung, StepOutcome::Skipped, why, "").await;
                continue;
            }
            let ended = if policy.mode == PolicyMode::Shadow {
                ran = true;
                self.shadow_step(&rung, cancel).await
            } else {
                match self.take_step(&rung, cancel).await {
                    Tried::Ended(walk) => Some(walk),
                    Tried::Failed => {
                        ran = true;
                        earned = true;
                        None
                    }
                    Tried::Declined => {
                        earned = false;
                        None
                    }
                }
            };
            if let Some(walk) = ended {
                return walk;
            }
        }
        if policy.mode == PolicyMode::Shadow {
            Walk::ShadowDone
        } else if !ran {
            Walk::NotApplicable
        } else {
            Walk::Exhausted
        }
    }

    /// Shadow: records the step it would take, then watches whether the condition clears by
    /// itself within the step's timeout and stays clear for its hold. `Some` ends the walk.
    async fn shadow_step(&self, r: &Rung<'_>, cancel: &CancellationToken) -> Option<Walk> {
        let would = format!("would {} on {}", r.step.action.describe(), r.id);
        self.note_step(r, StepOutcome::Shadow, would, "").await;
        if !r.step.verify {
            // A step that ends the ladder (disable) has nothing to wait for.
            return None;
        }
        match self.verify(r.id, r.policy, r.step, false, cancel).await {
            Verified::Yes(v) => {
                if r.idx == r.start {
                    self.count(&r.policy.name, |c| c.cleared_by_itself += 1);
                }
                self.set(r.id, |l| {
                    l.last_verification = format!("cleared by itself: {v}")
                });
                Some(Walk::Recovered(r.idx))
            }
            Verified::No(v) => {
                self.set(r.id, |l| l.last_verification = v);
                None
            }
            Verified::Cancelled => Some(Walk::Cancelled),
        }
    }

    /// Enforce or approve: the envelope, the action, its verification and its record.
    async fn take_step(&self, r: &Rung<'_>, cancel: &CancellationToken) -> Tried {
        let (permit, lease) = match self.envelope_for(r, cancel).await {
            Ok(held) => held,
            Err(walk) => return Tried::Ended(walk),
        };
        self.blocked(r.id, LadderState::Acting, "");
        let previous_limit = self
            .node
            .device_status(r.id)
            .and_then(|s| s.power_limit_watts);
        let acted = self
            .act(r.id, r.policy, r.idx, r.step, r.trigger, cancel)
            .await;
        let result = if acted.outcome != Outcome::Succeeded {
            Err(acted.outcome)
        } else if !r.step.verify {
            Ok(None)
        } else {
            self.blocked(r.id, LadderState::Verifying, "");
            let needs_probe = self.needs_known_answer(r.id, r.step);
            match self
                .verify(r.id, r.policy, r.step, needs_probe, cancel)
                .await
            {
                Verified::Yes(v) => Ok(Some(v)),
                Verified::No(v) => {
                    self.set(r.id, |l| l.last_verification.clone_from(&v));
                    Err(Outcome::Failed)
                }
                Verified::Cancelled => Err(Outcome::Refused),
            }
        };
        self.release(lease.as_deref(), result.is_ok()).await;
        drop(permit);
        if acted.not_taken {
            return match acted.cleared {
                true => Tried::Ended(r.cleared()),
                false => Tried::Ended(Walk::Cancelled),
            };
        }
        match result {
            Ok(None) => {
                self.note_step(r, StepOutcome::Succeeded, acted.message, &acted.action_id)
                    .await;
                Tried::Ended(match r.step.action {
                    StepAction::Disable => Walk::Quarantined,
                    // Unverified by the policy's choice (verify = "none"): done, not proven.
                    _ => Walk::Recovered(r.idx),
                })
            }
            Ok(Some(v)) => {
                self.set(r.id, |l| l.last_verification.clone_from(&v));
                self.note_verification(r, &acted.action_id, &v, true).await;
                let message = format!("{}; {v}", acted.message);
                self.note_step(r, StepOutcome::Succeeded, message, &acted.action_id)
                    .await;
                if let StepAction::SetPowerLimit(_) = r.step.action {
                    self.end_power_lease(r.id, r.policy, previous_limit, r.trigger)
                        .await;
                }
                Tried::Ended(Walk::Recovered(r.idx))
            }
            Err(_) if cancel.is_cancelled() => Tried::Ended(Walk::Cancelled),
            Err(outcome) => self.step_failed(r, &acted, outcome, previous_limit).await,
        }
    }

    /// Records a step that did not fix the target. A refusal (the action path said no, or
    /// the device cannot) is not a failure: it does not earn a destructive step.
    async fn step_failed(
        &self,
        r: &Rung<'_>,
        acted: &Acted,
        outcome: Outcome,
        previous_limit: Option<f64>,
    ) -> Tried {
        let verified_failed = outcome == Outcome::Failed && acted.outcome == Outcome::Succeeded;
        let message = if verified_failed {
            let v = self
                .get(r.id, |l| l.last_verification.clone())
                .unwrap_or_default();
            self.note_verification(r, &acted.action_id, &v, false).await;
            format!("{}; {v}", acted.message)
        } else {
            acted.message.clone()
        };
        let so = match outcome {
            Outcome::TimedOut => StepOutcome::TimedOut,
            Outcome::Refused if acted.impossible => StepOutcome::Skipped,
            Outcome::Refused => StepOutcome::Refused,
            _ => StepOutcome::Failed,
        };
        self.note_step(r, so, message, &acted.action_id).await;
        if verified_failed {
            if let (StepAction::SetPowerLimit(_), Some(w)) = (&r.step.action, previous_limit) {
                // The throttle stays: lifting it on a device that is still too hot would make
                // it hotter. Said where the operator looks, with how to lift it.
                self.note_kept_limit(r, w).await;
            }
        }
        if matches!(so, StepOutcome::Refused | StepOutcome::Skipped) {
            Tried::Declined
        } else {
            Tried::Failed
        }
    }

    async fn release(&self, lease: Option<&str>, ok: bool) {
        if let (Some(l), Some(b)) = (lease, &self.envelope.leases) {
            b.release(l, &self.node.name, if ok { "SUCCEEDED" } else { "FAILED" })
                .await;
        }
    }

    /// What a destructive step holds while it runs and is verified: an approval (approve
    /// mode), one of the node's destructive slots, and the collector's lease. Nothing for a
    /// soft step. Once all are held, the target is looked at again (a pause or an operator's
    /// fix may have come meanwhile); the slot is never held while a lease is refused. `Err`
    /// ends the walk (the condition cleared meanwhile, or the agent stops).
    async fn envelope_for(
        &self,
        r: &Rung<'_>,
        cancel: &CancellationToken,
    ) -> Result<(Option<OwnedSemaphorePermit>, Option<String>), Walk> {
        if !r.step.action.destructive() {
            return Ok((None, None));
        }
        if r.policy.mode == PolicyMode::Approve {
            match self.approval(r.id, r.policy, r.step, cancel).await {
                Ready::Go => {}
                Ready::Cleared => return Err(r.cleared()),
                Ready::Cancelled => return Err(Walk::Cancelled),
            }
        }
        loop {
            if self.envelope.leases.is_none()
                && r.policy.without_collector == WithoutCollector::SoftOnly
            {
                self.blocked(r.id, LadderState::Waiting, "lease: no collector configured and the policy allows only non-destructive steps without one (without_collector = \"soft-only\")");
                return Err(match self.wait_until_clear(r.id, r.policy, cancel).await {
                    Ready::Cleared => r.cleared(),
                    _ => Walk::Cancelled,
                });
            }
            let Some(permit) = self.destructive_slot(r.id, cancel).await else {
                return Err(Walk::Cancelled);
            };
            let lease = match self.ask_lease(r).await {
                Ok(lease) => lease,
                Err(why) => {
                    drop(permit);
                    self.blocked(r.id, LadderState::Waiting, why);
                    match self.check_ready(r.id, r.policy) {
                        Readiness::Cleared => return Err(r.cleared()),
                        Readiness::Go | Readiness::Wait(_) => {}
                    }
                    if !self.sleep(cancel, RETRY).await {
                        return Err(Walk::Cancelled);
                    }
                    continue;
                }
            };
            match self.check_ready(r.id, r.policy) {
                Readiness::Go => return Ok((Some(permit), lease)),
                Readiness::Cleared => {
                    self.release(lease.as_deref(), true).await;
                    return Err(r.cleared());
                }
                Readiness::Wait(why) => {
                    self.release(lease.as_deref(), true).await;
                    drop(permit);
                    self.blocked(r.id, LadderState::Waiting, why);
                    match self.ready(r.id, r.policy, cancel).await {
                        Ready::Go => {}
                        Ready::Cleared => return Err(r.cleared()),
                        Ready::Cancelled => return Err(Walk::Cancelled),
                    }
                }
            }
        }
    }

    /// Whether a step may run now: not paused, no operator action running, the condition
    /// still there. The supervisor reads the device right after every action, an operator's
    /// included, so its status is already fresh after one; a read of our own here would cost
    /// a hung device a whole read deadline before each step.
    pub(super) fn check_ready(&self, id: &str, policy: &Policy) -> Readiness {
        let busy = self
            .node
            .device_status(id)
            .is_some_and(|s| matches!(s.activity, Activity::Resetting | Activity::Calibrating));
        if let Some((_, why)) = self.in_maintenance(id) {
            Readiness::Wait(why)
        } else if let Some(why) = self.paused(id) {
            Readiness::Wait(why)
        } else if busy {
            Readiness::Wait("operator action: waiting for it to end, then looking again".into())
        } else if self.present(id, policy).is_some() {
            Readiness::Go
        } else {
            Readiness::Cleared
        }
    }

    /// Waits until [`Self::check_ready`] says go (or the condition clears).
    pub(super) async fn ready(
        &self,
        id: &str,
        policy: &Policy,
        cancel: &CancellationToken,
    ) -> Ready {
        loop {
            if cancel.is_cancelled() {
                return Ready::Cancelled;
            }
            match self.check_ready(id, policy) {
                Readiness::Go => return Ready::Go,
                Readiness::Cleared => return Ready::Cleared,
                Readiness::Wait(why) => self.blocked(id, LadderState::Waiting, why),
            }
            // A ladder in progress stops before its next step while the target is in
            // maintenance, and says so once.
            if let Some((window, _)) = self.in_maintenance(id) {
                self.note_maintenance(id, policy, &window, None).await;
            }
            if !self.sleep(cancel, self.cfg.interval).await {
                return Ready::Cancelled;
            }
        }
    }

    /// `approve` mode: waits for `agent-ctl remediation approve` before a destructive step.
    pub(super) async fn approval(
        &self,
        id: &str,
        policy: &Policy,
        step: &PolicyStep,
        cancel: &CancellationToken,
    ) -> Ready {
        self.set(id, |l| l.approved = false);
        let mut announced = false;
        loop {
            match self.check_ready(id, policy) {
                Readiness::Cleared => return Ready::Cleared,
                Readiness::Wait(why) => self.blocked(id, LadderState::Waiting, why),
                Readiness::Go => {
                    if self.get(id, |l| l.approved).unwrap_or(false) {
                        self.set(id, |l| l.approved = false);
                        return Ready::Go;
                    }
                    self.blocked(
                        id,
                        LadderState::Waiting,
                        format!(
                            "approval: {} waits for agent-ctl remediation approve {id}",
                            step.action.describe()
                        ),
                    );
                }
            }
            if !announced {
                tracing::warn!(device = id, policy = %policy.name, step = %step.action.describe(), "remediation waits for approval");
                announced = true;
            }
            if !self.sleep(cancel, self.cfg.interval).await {
                return Ready::Cancelled;
            }
        }
    }

    /// One of the node's `max_destructive` slots.
    pub(super) async fn destructive_slot(
        &self,
        id: &str,
        cancel: &CancellationToken,
    ) -> Option<OwnedSemaphorePermit> {
        let sem = self.envelope.destructive.clone();
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Some(p);
        }
        self.blocked(
            id,
            LadderState::Waiting,
            format!(
                "max_destructive: {} destructive step(s) running on this node",
                self.envelope.max_destructive
            ),
        );
        tokio::select! {
            _ = cancel.cancelled() => None,
            p = sem.acquire_owned() => p.ok(),
        }
    }

    /// One lease request. `Ok(None)`: acting without a lease, as the policy allows when no
    /// collector answers. `Err`: why not now (refused, or unreachable and failing closed).
    async fn ask_lease(&self, r: &Rung<'_>) -> Result<Option<String>, String> {
        let Some(broker) = self.envelope.leases.clone() else {
            return Ok(None);
        };
        let req = LeaseRequest {
            node: self.node.name.clone(),
            device: r.id.to_string(),
            policy: r.policy.name.clone(),
            action: r.step.action.name().to_string(),
            request_id: format!(
                "{}/{}/{}/{}",
                r.id,
                r.policy.name,
                self.get(r.id, |l| l.ladder_id.clone()).unwrap_or_default(),
                r.idx
            ),
        };
        let answer = tokio::time::timeout(self.cfg.lease_timeout, broker.acquire(req))
            .await
            .unwrap_or_else(|_| {
                LeaseAnswer::Unreachable(format!(
                    "no answer within {}",
                    humantime::format_duration(self.cfg.lease_timeout)
                ))
            });
        match answer {
            LeaseAnswer::Granted { lease_id, .. } => Ok(Some(lease_id)),
            LeaseAnswer::Unreachable(why)
                if r.policy.without_collector == WithoutCollector::All =>
            {
                tracing::warn!(device = r.id, policy = %r.policy.name, "collector unreachable ({why}); acting without a lease as the policy allows");
                Ok(None)
            }
            LeaseAnswer::Unreachable(why) => Err(format!(
                "lease: collector unreachable ({why}); failing closed"
            )),
            LeaseAnswer::Refused(why) => Err(format!("lease: refused by the collector: {why}")),
        }
    }

    async fn wait_until_clear(
        &self,
        id: &str,
        policy: &Policy,
        cancel: &CancellationToken,
    ) -> Ready {
        loop {
            if self.present(id, policy).is_none() {
                return Ready::Cleared;
            }
            if !self.sleep(cancel, RETRY).await {
                return Ready::Cancelled;
            }
        }
    }
}

/// Where a step may run now.
pub(super) enum Readiness {
    Go,
    Cleared,
    /// Not now, and why (a pause, an operator's action).
    Wait(String),
}

/// How a taken step ended for the walk.
enum Tried {
    Ended(Walk),
    /// Ran and failed: the next step is earned, destructive or not.
    Failed,
    /// Refused or impossible: the next step is tried, but not a destructive one on its
    /// account.
    Declined,
}
