//! The walk up one ladder: before each step, wait for what blocks it (a pause, an operator's
//! action, an approval, the node's destructive slot, the collector's lease); run it; verify
//! it; escalate to the next step when it fails.

use health_hal::Condition;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::ladder::{Ready, Verified, Walk, RETRY};
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
                continue;
            }
            let ended = if policy.mode == PolicyMode::Shadow {
                self.shadow_step(&rung, cancel).await
            } else {
                self.take_step(&rung, cancel).await
            };
            if let Some(walk) = ended {
                return walk;
            }
        }
        if policy.mode == PolicyMode::Shadow {
            Walk::ShadowDone
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
    /// `Some` ends the walk; `None` goes on to the next step.
    async fn take_step(&self, r: &Rung<'_>, cancel: &CancellationToken) -> Option<Walk> {
        let (permit, lease) = match self.envelope_for(r, cancel).await {
            Ok(held) => held,
            Err(walk) => return Some(walk),
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
        if let (Some(l), Some(b)) = (lease.as_deref(), &self.envelope.leases) {
            let outcome = if result.is_ok() {
                "SUCCEEDED"
            } else {
                "FAILED"
            };
            b.release(l, &self.node.name, outcome).await;
        }
        drop(permit);
        match result {
            Ok(None) => {
                self.note_step(r, StepOutcome::Succeeded, acted.message, &acted.action_id)
                    .await;
                Some(Walk::Quarantined)
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
                Some(Walk::Recovered(r.idx))
            }
            Err(_) if cancel.is_cancelled() => Some(Walk::Cancelled),
            Err(outcome) => {
                let message = if outcome == Outcome::Failed && acted.outcome == Outcome::Succeeded {
                    let v = self
                        .get(r.id, |l| l.last_verification.clone())
                        .unwrap_or_default();
                    self.note_verification(r, &acted.action_id, &v, false).await;
                    format!("{}; {v}", acted.message)
                } else {
                    acted.message
                };
                let so = match outcome {
                    Outcome::TimedOut => StepOutcome::TimedOut,
                    Outcome::Refused => StepOutcome::Refused,
                    _ => StepOutcome::Failed,
                };
                self.note_step(r, so, message, &acted.action_id).await;
                None
            }
        }
    }

    /// What a destructive step holds while it runs and is verified: an approval (approve
    /// mode), one of the node's destructive slots, and the collector's lease. Nothing for a
    /// soft step. `Err` ends the walk (the condition cleared meanwhile, or the agent stops).
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
        let Some(permit) = self.destructive_slot(r.id, cancel).await else {
            return Err(Walk::Cancelled);
        };
        match self.lease(r.id, r.policy, r.step, r.idx, cancel).await {
            Ok(lease) => Ok((Some(permit), lease)),
            Err(Ready::Cleared) => Err(r.cleared()),
            Err(_) => Err(Walk::Cancelled),
        }
    }

    /// Waits until nothing blocks a step: no pause, no operator action running. Then looks at
    /// the target again: the operator may have fixed it.
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
            let busy = self
                .node
                .device_status(id)
                .is_some_and(|s| matches!(s.activity, Activity::Resetting | Activity::Calibrating));
            if let Some(why) = self.paused(id) {
                self.blocked(id, LadderState::Waiting, why);
            } else if busy {
                self.blocked(
                    id,
                    LadderState::Waiting,
                    "operator action: waiting for it to end, then reading afresh",
                );
            } else {
                // The supervisor reads the device right after every action, an operator's
                // included, so the status is already fresh after one; a read of our own here
                // would cost a hung device a whole read deadline before each step.
                return match self.present(id, policy) {
                    Some(_) => Ready::Go,
                    None => Ready::Cleared,
                };
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
            if self.get(id, |l| l.approved).unwrap_or(false) {
                self.set(id, |l| l.approved = false);
                return Ready::Go;
            }
            if self.present(id, policy).is_none() {
                return Ready::Cleared;
            }
            self.blocked(
                id,
                LadderState::Waiting,
                format!(
                    "approval: {} waits for agent-ctl remediation approve {id}",
                    step.action.describe()
                ),
            );
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
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
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

    /// A lease from the collector, retried while refused. `Ok(None)`: no lease needed (no
    /// collector and the policy allows it).
    pub(super) async fn lease(
        &self,
        id: &str,
        policy: &Policy,
        step: &PolicyStep,
        idx: usize,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, Ready> {
        let Some(broker) = self.envelope.leases.clone() else {
            return match policy.without_collector {
                WithoutCollector::All => Ok(None),
                WithoutCollector::SoftOnly => {
                    self.blocked(id, LadderState::Waiting, "lease: no collector configured and the policy allows only non-destructive steps without one (without_collector = \"soft-only\")");
                    self.wait_forever_or_clear(id, policy, cancel).await
                }
            };
        };
        let request_id = format!(
            "{}/{}/{}/{idx}",
            id,
            policy.name,
            self.get(id, |l| l.ladder_id.clone()).unwrap_or_default()
        );
        loop {
            let req = LeaseRequest {
                node: self.node.name.clone(),
                device: id.to_string(),
                policy: policy.name.clone(),
                action: step.action.name().to_string(),
                request_id: request_id.clone(),
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
                LeaseAnswer::Granted { lease_id, .. } => return Ok(Some(lease_id)),
                LeaseAnswer::Unreachable(why)
                    if policy.without_collector == WithoutCollector::All =>
                {
                    tracing::warn!(device = id, policy = %policy.name, "collector unreachable ({why}); acting without a lease as the policy allows");
                    return Ok(None);
                }
                LeaseAnswer::Unreachable(why) => self.blocked(
                    id,
                    LadderState::Waiting,
                    format!("lease: collector unreachable ({why}); failing closed"),
                ),
                LeaseAnswer::Refused(why) => self.blocked(
                    id,
                    LadderState::Waiting,
                    format!("lease: refused by the collector: {why}"),
                ),
            }
            if self.present(id, policy).is_none() {
                return Err(Ready::Cleared);
            }
            if !self.sleep(cancel, RETRY).await {
                return Err(Ready::Cancelled);
            }
        }
    }

    pub(super) async fn wait_forever_or_clear(
        &self,
        id: &str,
        policy: &Policy,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, Ready> {
        loop {
            if self.present(id, policy).is_none() {
                return Err(Ready::Cleared);
            }
            if !self.sleep(cancel, RETRY).await {
                return Err(Ready::Cancelled);
            }
        }
    }
}
