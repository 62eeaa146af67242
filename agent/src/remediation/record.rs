//! What a ladder leaves behind: the audit entries the action path does not write (ladder
//! start and end, verifications, skipped and shadow steps, the engine's own decisions), the
//! step history shown by `agent-ctl remediation`, and the counters behind `/metrics`.

use std::time::SystemTime;

use serde_json::json;

use super::view::{StepOutcome, StepRecord};
use super::walk::Rung;
use super::Remediation;
use crate::audit::{Entry, Phase, Recorded};
use crate::auth::Role;
use crate::config::Policy;

impl Remediation {
    pub(super) fn entry(&self, id: &str, policy: &Policy, action: &str) -> Entry {
        Entry {
            action_id: format!("{}-{}", self.actions_id(), action),
            caller: format!("policy:{}", policy.name),
            role: Role::Operator.as_str().to_string(),
            action: action.to_string(),
            target: id.to_string(),
            args: json!({}),
            ..Default::default()
        }
    }

    pub(super) async fn append(&self, phase: Phase, e: Entry) {
        if let Err(err) = self.actions.audit().append(phase, e).await {
            tracing::error!(target: "audit", error = %err, "could not record a remediation entry");
        }
    }

    pub(super) async fn record_control(
        &self,
        id: &str,
        policy: &str,
        action: &str,
        message: String,
    ) {
        let Some(p) = self.policy(policy).cloned() else {
            return;
        };
        let mut e = self.entry(id, &p, action);
        e.outcome = Some(Recorded::Succeeded);
        e.message = message;
        self.append(Phase::Control, e).await;
    }

    pub(super) async fn note_verification(&self, r: &Rung<'_>, action_id: &str, v: &str, ok: bool) {
        let mut e = self.entry(
            r.id,
            r.policy,
            &format!("verify {}", r.step.action.describe()),
        );
        e.trigger = format!("{}: {}", r.trigger.code, r.trigger.message);
        e.action_id = action_id.to_string();
        e.verification = v.to_string();
        e.outcome = Some(if ok {
            Recorded::Succeeded
        } else {
            Recorded::Failed
        });
        e.message = v.to_string();
        self.append(Phase::Control, e).await;
    }

    /// One step's record: the ladder's history, the counters, and (for steps that did not go
    /// through the action path: skipped, shadow) an audit entry of its own.
    pub(super) async fn note_step(
        &self,
        r: &Rung<'_>,
        outcome: StepOutcome,
        message: String,
        action_id: &str,
    ) {
        let Rung {
            id,
            policy,
            step,
            trigger,
            ..
        } = *r;
        let phase = match outcome {
            StepOutcome::Skipped => Some(Phase::Skipped),
            StepOutcome::Shadow => Some(Phase::Shadow),
            _ => None,
        };
        if let Some(phase) = phase {
            let mut e = self.entry(id, policy, &step.action.describe());
            e.trigger = format!("{}: {}", trigger.code, trigger.message);
            e.outcome = Some(Recorded::Succeeded);
            e.message.clone_from(&message);
            e.args = json!({"step": step.action.describe(), "ladder": self.get(id, |l| l.ladder_id.clone()).unwrap_or_default()});
            self.append(phase, e).await;
        }
        self.steps.add(&policy.name, step.action.name(), outcome);
        self.count(&policy.name, |c| match outcome {
            StepOutcome::Skipped => c.steps_skipped += 1,
            StepOutcome::Shadow => c.would_act += 1,
            _ => c.steps_run += 1,
        });
        tracing::info!(target: "audit", device = id, policy = %policy.name, step = %step.action.describe(), outcome = outcome.as_str(), "{message}");
        self.set(id, |l| {
            l.history.push(StepRecord {
                action: step.action.describe(),
                outcome,
                message,
                at: SystemTime::now(),
                action_id: action_id.to_string(),
            })
        });
    }

    /// A power-limit lease whose verification failed: the lower limit stays in force (lifting
    /// it on a device still too hot would make it hotter), recorded where the operator looks.
    pub(super) async fn note_kept_limit(&self, r: &Rung<'_>, previous: f64) {
        let message = format!(
            "the lower power limit stays in force (it was {previous} W): the condition did not clear under it; restore it with agent-ctl set-power-limit {} {previous} once the cause is fixed",
            r.id
        );
        let mut e = self.entry(r.id, r.policy, "power-limit-kept");
        e.args = json!({"previous_watts": previous});
        e.outcome = Some(Recorded::Succeeded);
        e.message.clone_from(&message);
        self.append(Phase::Control, e).await;
        self.set(r.id, |l| {
            l.history.push(StepRecord {
                action: "keep power limit".into(),
                outcome: StepOutcome::Succeeded,
                message,
                at: SystemTime::now(),
                action_id: String::new(),
            })
        });
    }
}
