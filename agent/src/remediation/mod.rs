//! The remediation engine: the agent walks the `[[policy]]` ladders by itself, the way the
//! runbooks' recovery script does (check, act, wait, check again, escalate), and never does
//! more than a person would be allowed to.
//!
//! How it fits: a watcher task looks at the node every `[remediation] interval`; a target (a
//! device, or a watched process for PROCESS_STUCK) whose condition matches a policy gets a
//! ladder task of its own ([`ladder`]), one per target at a time. Every step is an ordinary
//! [`ActionRequest`] through [`Actions::run`] with caller `policy:<name>`, so roles, the audit
//! log (begin before, end after), the gate, cooldowns, resets per hour and idempotency apply
//! unchanged. This module adds only what a ladder needs on top:
//!
//! - verification on fresh reads (the condition gone, and staying gone for `hold`; the
//!   known-answer probe after a calibration or reset of a MATVEC device);
//! - the safety envelope: `max_attempts` per `window`, at most `max_destructive` destructive
//!   steps at once on the node ([`Envelope`]), a lease from the collector before each
//!   destructive step ([`lease`], failing closed), approval, pause, and the operator first
//!   (a ladder waits for a running action to end and verifies afresh);
//! - no replay: on start each ladder's state is rebuilt from the audit log ([`restore`]); a
//!   step that began and has no end counts as failed and is never retried.
//!
//! Nothing here reaches a device except through `Actions`; the engine reads devices only
//! through [`crate::device::DeviceHandle`] and the node's snapshots.

mod ladder;
pub mod lease;
mod record;
mod restore;
mod step;
mod target;
pub mod view;
mod walk;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use health_hal::Condition;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::action::Actions;
use crate::audit::{Entry, Phase, Recorded};
use crate::auth::{Caller, Role};
use crate::config::{AgentConfig, Policy, RemediationConfig};
use crate::node::Node;
pub use lease::{LeaseAnswer, LeaseBroker, LeaseRequest};
use view::{
    LadderState, LadderView, Pause, PolicyCounts, RemediationReport, StepOutcome, StepRecord,
};

/// Why an operator's control of the engine was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ControlError {
    #[error("no device or remediation target {0:?} on this node")]
    NoSuchTarget(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotPossible(String),
    #[error("{0}")]
    InvalidArgument(String),
}

/// Steps by policy, action and outcome, for `/metrics` (`health_remediation_steps_total`).
#[derive(Debug, Default)]
pub struct StepCounts(Mutex<BTreeMap<(String, String, &'static str), u64>>);

impl StepCounts {
    fn add(&self, policy: &str, action: &str, outcome: StepOutcome) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((policy.to_string(), action.to_string(), outcome.as_str()))
            .or_default() += 1;
    }

    /// `(policy, action, outcome) -> count`, sorted.
    pub fn snapshot(&self) -> Vec<((String, String, &'static str), u64)> {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// One target's ladder, as the engine keeps it between steps and across ladders.
#[derive(Debug, Clone)]
struct Ladder {
    policy: String,
    mode: String,
    state: LadderState,
    step: u32,
    steps: u32,
    step_action: String,
    /// Ladder starts, per policy, newest last (pruned to the policy's window).
    starts: HashMap<String, Vec<SystemTime>>,
    blocked_by: String,
    last_verification: String,
    trigger: String,
    since: SystemTime,
    history: Vec<StepRecord>,
    paused: Option<Pause>,
    active: bool,
    /// Approval for the step waiting for it (`approve` mode).
    approved: bool,
    /// The last verified recovery: (policy, step index, when). A condition back within the
    /// policy's `healthy_delay` continues the ladder after that step.
    recovered: Option<(String, usize, SystemTime)>,
    /// Exhausted: (policy, when, message). Acts no more until the condition has stayed clear
    /// for `healthy_delay` or an operator clears it.
    exhausted: Option<(String, SystemTime, String)>,
    /// A ladder id, unique per target, in every step's idempotency key.
    ladder_id: String,
    /// (policy, why): a ladder that ended without fixing anything and without a page (no
    /// step applied; a shadow ladder ran out): not walked again until the condition clears.
    until_clear: Option<(String, String)>,
    /// Restored from the audit log: (policy, last step begun); the ladder goes on after it.
    resume_after: Option<(String, usize)>,
    /// The maintenance window whose hold was last recorded (its [`maintenance_key`]): one
    /// `skipped` entry per window, not one per look.
    maintenance_noted: String,
}

impl Ladder {
    fn new() -> Ladder {
        Ladder {
            policy: String::new(),
            mode: String::new(),
            state: LadderState::Idle,
            step: 0,
            steps: 0,
            step_action: String::new(),
            starts: HashMap::new(),
            blocked_by: String::new(),
            last_verification: String::new(),
            trigger: String::new(),
            since: SystemTime::now(),
            history: Vec::new(),
            paused: None,
            active: false,
            approved: false,
            recovered: None,
            exhausted: None,
            ladder_id: String::new(),
            until_clear: None,
            resume_after: None,
            maintenance_noted: String::new(),
        }
    }
}

/// The node's limit on destructive steps at once, and the lease broker.
struct Envelope {
    destructive: Arc<Semaphore>,
    max_destructive: u32,
    leases: Option<Arc<dyn LeaseBroker>>,
}

pub struct Remediation {
    node: Arc<Node>,
    actions: Arc<Actions>,
    policies: Vec<Policy>,
    cfg: RemediationConfig,
    envelope: Envelope,
    ladders: Mutex<BTreeMap<String, Ladder>>,
    node_pause: Mutex<Option<Pause>>,
    counts: Mutex<HashMap<String, PolicyCounts>>,
    pub steps: StepCounts,
    /// Wakes ladders waiting for an approval, a resume or a clear.
    changed: Notify,
}

impl Remediation {
    pub fn new(
        cfg: &AgentConfig,
        node: Arc<Node>,
        actions: Arc<Actions>,
        leases: Option<Arc<dyn LeaseBroker>>,
    ) -> Arc<Remediation> {
        let counts = cfg
            .policies
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    PolicyCounts {
                        policy: p.name.clone(),
                        mode: p.mode.as_str().to_string(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Arc::new(Remediation {
            node,
            actions,
            policies: cfg.policies.clone(),
            cfg: cfg.remediation.clone(),
            envelope: Envelope {
                destructive: Arc::new(Semaphore::new(cfg.remediation.max_destructive as usize)),
                max_destructive: cfg.remediation.max_destructive,
                leases,
            },
            ladders: Mutex::new(BTreeMap::new()),
            node_pause: Mutex::new(None),
            counts: Mutex::new(counts),
            steps: StepCounts::default(),
            changed: Notify::new(),
        })
    }

    /// Restores each ladder from the audit log, then starts the watcher. The task ends when
    /// `cancel` fires; a step in flight is the action path's to finish and record.
    pub async fn start(self: &Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        restore::from_audit(self).await;
        let me = self.clone();
        if self.policies.is_empty() {
            // Nothing to match: no watcher, so a node without policies pays nothing for it.
            return tokio::spawn(async {});
        }
        tokio::spawn(async move { ladder::watch(me, cancel).await })
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Where every ladder stands (or one target's), and each policy's counts.
    pub fn report(&self, target: Option<&str>) -> Result<RemediationReport, ControlError> {
        if let Some(t) = target {
            self.known_target(t)?;
        }
        let now = SystemTime::now();
        let node_pause = self.current_node_pause(now);
        let ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        let mut devices: Vec<LadderView> = Vec::new();
        let mut ids: Vec<String> = self.node.devices.iter().map(|d| d.id.clone()).collect();
        for k in ladders.keys() {
            if !ids.contains(k) {
                ids.push(k.clone());
            }
        }
        for id in ids {
            if target.is_some_and(|t| t != id) {
                continue;
            }
            let l = ladders.get(&id).cloned().unwrap_or_else(Ladder::new);
            let window = self.policy(&l.policy).map_or(Duration::ZERO, |p| p.window);
            let attempts = l
                .starts
                .get(&l.policy)
                .map_or(0, |s| s.iter().filter(|t| within(**t, window, now)).count());
            let paused = l.paused.clone().filter(|p| p.until.is_none_or(|u| u > now));
            devices.push(LadderView {
                device_id: id,
                max_attempts: self.policy(&l.policy).map_or(0, |p| p.max_attempts),
                policy: l.policy,
                mode: l.mode,
                state: l.state,
                step: l.step,
                steps: l.steps,
                step_action: l.step_action,
                attempts_in_window: attempts as u32,
                blocked_by: l.blocked_by,
                last_verification: l.last_verification,
                trigger: l.trigger,
                since: l.since,
                history: l.history,
                paused,
                active: l.active,
            });
        }
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let policies = self
            .policies
            .iter()
            .filter_map(|p| counts.get(&p.name).cloned())
            .collect();
        let running =
            self.envelope.max_destructive as usize - self.envelope.destructive.available_permits();
        Ok(RemediationReport {
            devices,
            policies,
            paused: node_pause,
            max_destructive: self.envelope.max_destructive,
            destructive_running: running as u32,
            collector_configured: self.envelope.leases.is_some(),
        })
    }

    /// Lets the ladder of `target`, waiting before a destructive step, take it.
    pub async fn approve(
        &self,
        caller: &Caller,
        target: &str,
    ) -> Result<RemediationReport, ControlError> {
        self.control(caller, "remediation-approve", target, json!({}), || {
            let mut ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
            match ladders.get_mut(target) {
                Some(l) if l.blocked_by.starts_with("approval") => {
                    l.approved = true;
                    Ok(format!(
                        "approved {} (step {} of {}) of policy {}",
                        l.step_action, l.step, l.steps, l.policy
                    ))
                }
                _ => Err(ControlError::NotPossible(format!(
                    "{target} has no remediation step waiting for approval"
                ))),
            }
        })
        .await
    }

    /// Stops automatic actions on `target` (or the node) for `duration` (or until resumed).
    pub async fn pause(
        &self,
        caller: &Caller,
        target: Option<&str>,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<RemediationReport, ControlError> {
        if duration.is_some_and(|d| d.is_zero() || d > Duration::from_secs(30 * 86400)) {
            return Err(ControlError::InvalidArgument(
                "for_seconds: expected 1 s to 30 days, or 0 for until resumed".into(),
            ));
        }
        let pause = Pause {
            until: duration.map(|d| SystemTime::now() + d),
            reason: reason.to_string(),
            by: caller.identity.clone(),
        };
        let args = json!({"for_seconds": duration.map(|d| d.as_secs()), "reason": reason});
        let what = match duration {
            Some(d) => format!("for {}", humantime::format_duration(d)),
            None => "until resumed".to_string(),
        };
        self.control(
            caller,
            "remediation-pause",
            target.unwrap_or("node"),
            args,
            || match target {
                None => {
                    *self.node_pause.lock().unwrap_or_else(|e| e.into_inner()) = Some(pause);
                    Ok(format!("automatic actions paused on the node {what}"))
                }
                Some(t) => {
                    let mut ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
                    ladders
                        .entry(t.to_string())
                        .or_insert_with(Ladder::new)
                        .paused = Some(pause);
                    Ok(format!("automatic actions paused on {t} {what}"))
                }
            },
        )
        .await
    }

    pub async fn resume(
        &self,
        caller: &Caller,
        target: Option<&str>,
    ) -> Result<RemediationReport, ControlError> {
        self.control(
            caller,
            "remediation-resume",
            target.unwrap_or("node"),
            json!({}),
            || match target {
                None => {
                    *self.node_pause.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    Ok("automatic actions resumed on the node".to_string())
                }
                Some(t) => {
                    let mut ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(l) = ladders.get_mut(t) {
                        l.paused = None;
                    }
                    Ok(format!("automatic actions resumed on {t}"))
                }
            },
        )
        .await
    }

    /// Forgets an exhausted ladder of `target`: its policies may act again.
    pub async fn clear(
        &self,
        caller: &Caller,
        target: &str,
    ) -> Result<RemediationReport, ControlError> {
        self.control(caller, "remediation-clear", target, json!({}), || {
            let mut ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
            match ladders.get_mut(target) {
                Some(l) if l.exhausted.is_some() || l.state == LadderState::Exhausted => {
                    l.exhausted = None;
                    l.recovered = None;
                    l.state = LadderState::Idle;
                    l.active = false;
                    l.blocked_by.clear();
                    // A cleared ladder starts afresh: the operator has looked at the device.
                    l.starts.clear();
                    Ok(format!(
                        "exhausted ladder of policy {} on {target} cleared",
                        l.policy
                    ))
                }
                _ => Err(ControlError::NotPossible(format!(
                    "{target} has no exhausted remediation ladder to clear"
                ))),
            }
        })
        .await?;
        self.publish_conditions();
        self.report(None)
    }

    /// An operator's control: role checked, the change made, and one audit entry. Unlike an
    /// action on a device, a control is not refused when its entry cannot be written: a
    /// pause must work on a node whose disk is full, and every control only restrains or
    /// releases the engine. The failure is logged, and AUDIT_LOG_UNWRITABLE already shows.
    async fn control(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        args: serde_json::Value,
        change: impl FnOnce() -> Result<String, ControlError>,
    ) -> Result<RemediationReport, ControlError> {
        if target != "node" {
            self.known_target(target)?;
        }
        let mut entry = Entry {
            action_id: format!("{}-{action}", self.actions_id()),
            caller: caller.identity.clone(),
            role: caller.role_name().to_string(),
            action: action.to_string(),
            target: target.to_string(),
            args,
            ..Default::default()
        };
        if caller.role < Some(Role::Operator) {
            let msg = format!(
                "{action} on {target} needs the operator role; {} has {}",
                caller.identity,
                caller.role_name()
            );
            entry.outcome = Some(Recorded::Denied);
            entry.message = msg.clone();
            let _ = self.actions.audit().append(Phase::Denied, entry).await;
            return Err(ControlError::PermissionDenied(msg));
        }
        let result = change();
        match &result {
            Ok(m) => {
                entry.outcome = Some(Recorded::Succeeded);
                entry.message = m.clone();
            }
            Err(e) => {
                entry.outcome = Some(Recorded::Refused);
                entry.message = e.to_string();
            }
        }
        if let Err(e) = self.actions.audit().append(Phase::Control, entry).await {
            tracing::error!(target: "audit", error = %e, action, "could not record a remediation control");
        }
        self.changed.notify_waiters();
        result?;
        tracing::info!(target: "audit", caller = %caller.identity, action, target, "remediation control");
        self.report(None)
    }

    fn actions_id(&self) -> String {
        let boot = self.node.boot_id.get(..8).unwrap_or(&self.node.boot_id);
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("{boot}-{n}")
    }

    fn known_target(&self, t: &str) -> Result<(), ControlError> {
        let known = self.node.device(t).is_some()
            || self
                .ladders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(t);
        if known {
            Ok(())
        } else {
            Err(ControlError::NoSuchTarget(t.to_string()))
        }
    }

    fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    fn current_node_pause(&self, now: SystemTime) -> Option<Pause> {
        let mut p = self.node_pause.lock().unwrap_or_else(|e| e.into_inner());
        if p.as_ref()
            .is_some_and(|p| p.until.is_some_and(|u| u <= now))
        {
            *p = None;
        }
        p.clone()
    }

    fn count(&self, policy: &str, f: impl FnOnce(&mut PolicyCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = counts.get_mut(policy) {
            f(c);
        }
    }

    /// REMEDIATION_EXHAUSTED for every exhausted ladder, on the node's snapshot.
    fn publish_conditions(&self) {
        let ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        let conditions: Vec<Condition> = ladders
            .iter()
            .filter_map(|(id, l)| {
                l.exhausted.as_ref().map(|(_, since, msg)| {
                    Condition::new(
                        health_hal::ConditionCode::RemediationExhausted,
                        health_hal::Severity::Critical,
                        id,
                        msg,
                        *since,
                    )
                })
            })
            .collect();
        self.node.set_remediation_conditions(conditions);
    }
}

fn within(t: SystemTime, window: Duration, now: SystemTime) -> bool {
    now.duration_since(t).map_or(true, |age| age <= window)
}
