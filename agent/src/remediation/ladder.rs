//! Walking a ladder: the watcher that gives each matching target a task, and the task that
//! waits out `for`, checks the envelope, runs each step through the action path, verifies it
//! on fresh reads and escalates. One task per target at a time, so one ladder per device.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health_hal::{Capability, Condition, Quantity, ResetKind};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::view::{LadderState, StepOutcome, StepRecord};
use super::{LeaseAnswer, LeaseRequest, Remediation};
use crate::action::composite::AfterReset;
use crate::action::kill::{KillRequest, KillSignal};
use crate::action::{ActionError, ActionRecord, ActionRequest, Requested};
use crate::audit::{Entry, Phase, Recorded};
use crate::auth::{Caller, Role};
use crate::config::{Policy, PolicyMode, PolicyStep, PowerTarget, StepAction, WithoutCollector};
use crate::device::{DeviceAction, DeviceProbe};
use crate::model::{Activity, Outcome};

/// How often a refused lease or a blocked step is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Looks at the node every interval and starts a ladder task for each target with a
/// matching condition (or ladder state to keep) and no task yet.
pub(super) async fn watch(engine: Arc<Remediation>, cancel: CancellationToken) {
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(engine.cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        running.retain(|_, h| !h.is_finished());
        for id in engine.targets_with_work() {
            if running.contains_key(&id) {
                continue;
            }
            let (e, c) = (engine.clone(), cancel.child_token());
            let task_id = id.clone();
            running.insert(
                id,
                tokio::spawn(async move { e.run_target(task_id, c).await }),
            );
        }
    }
    // A step in flight runs on the action path's own task and is recorded there.
    for (_, h) in running {
        h.abort();
    }
}

/// How a walk up the ladder ended.
enum Walk {
    /// Step (index) verified.
    Recovered(usize),
    /// Disabled: the ladder ends, the device quarantined.
    Quarantined,
    Exhausted,
    /// The condition went away before a step was needed.
    Cleared,
    /// Shadow: the whole ladder was recorded, nothing done.
    ShadowDone,
    Cancelled,
}

/// How the wait before a step ended.
enum Ready {
    Go,
    Cleared,
    Cancelled,
}

enum Verified {
    Yes(String),
    No(String),
    Cancelled,
}

/// A step's action as it ran.
struct Acted {
    outcome: Outcome,
    message: String,
    action_id: String,
}

impl Remediation {
    /// Targets a task should look after: a matching condition now, or state to keep
    /// (exhausted, recently recovered).
    fn targets_with_work(&self) -> Vec<String> {
        let snapshot = self.node.snapshot();
        let mut out = Vec::new();
        for d in &snapshot.devices {
            if self.first_match(&d.identity.id, &d.conditions).is_some() {
                out.push(d.identity.id.clone());
            }
        }
        let mut process_subjects: Vec<&str> = snapshot
            .host
            .conditions
            .iter()
            .filter(|c| c.subject.starts_with("process:"))
            .map(|c| c.subject.as_str())
            .collect();
        process_subjects.dedup();
        for s in process_subjects {
            if self.first_match(s, &snapshot.host.conditions).is_some()
                && !out.iter().any(|o| o == s)
            {
                out.push(s.to_string());
            }
        }
        let ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        for (id, l) in ladders.iter() {
            if (l.exhausted.is_some() || l.recovered.is_some()) && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The first policy (in config order, not `off`) with a condition of `target` it matches.
    fn first_match(&self, target: &str, conditions: &[Condition]) -> Option<(usize, Condition)> {
        self.policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.mode != PolicyMode::Off)
            .find_map(|(i, p)| {
                conditions
                    .iter()
                    .find(|c| c.subject == target && p.matches.matches(c.code, c.severity, target))
                    .map(|c| (i, c.clone()))
            })
    }

    /// The target's conditions as last read (no fresh read).
    fn conditions_of(&self, target: &str) -> Vec<Condition> {
        match self.node.device_status(target) {
            Some(s) => s.conditions.clone(),
            None => self
                .node
                .snapshot()
                .host
                .conditions
                .iter()
                .filter(|c| c.subject == target)
                .cloned()
                .collect(),
        }
    }

    /// A fresh read of a device (processes are rescanned on the watchdog's own interval),
    /// then whether a condition `policy` matches is present.
    async fn present_fresh(&self, target: &str, policy: &Policy) -> Option<Condition> {
        if let Some(d) = self.node.device(target) {
            let _ = d.probe(DeviceProbe::ReadNow).await;
        }
        self.present(target, policy)
    }

    fn present(&self, target: &str, policy: &Policy) -> Option<Condition> {
        self.conditions_of(target)
            .into_iter()
            .find(|c| policy.matches.matches(c.code, c.severity, target))
    }

    fn set(&self, target: &str, f: impl FnOnce(&mut super::Ladder)) {
        let mut ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        f(ladders
            .entry(target.to_string())
            .or_insert_with(super::Ladder::new));
    }

    fn get<T>(&self, target: &str, f: impl FnOnce(&super::Ladder) -> T) -> Option<T> {
        let ladders = self.ladders.lock().unwrap_or_else(|e| e.into_inner());
        ladders.get(target).map(f)
    }

    fn blocked(&self, target: &str, state: LadderState, why: impl Into<String>) {
        let why = why.into();
        self.set(target, |l| {
            if l.state != state {
                l.since = SystemTime::now();
            }
            l.state = state;
            l.blocked_by = why;
        });
    }

    /// What pauses `target` now, if anything.
    fn paused(&self, target: &str) -> Option<String> {
        let now = SystemTime::now();
        if let Some(p) = self.current_node_pause(now) {
            return Some(format!("pause (node, by {}: {})", p.by, p.reason));
        }
        self.get(target, |l| l.paused.clone())
            .flatten()
            .filter(|p| p.until.is_none_or(|u| u > now))
            .map(|p| format!("pause (by {}: {})", p.by, p.reason))
    }

    async fn sleep(&self, cancel: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = self.changed.notified() => true,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// The task of one target: lives while the target has a matching condition or state to
    /// keep, walking the ladder whenever the policy allows.
    async fn run_target(self: Arc<Self>, id: String, cancel: CancellationToken) {
        let tick = self.cfg.interval;
        let mut clear_since: Option<SystemTime> = None;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            let now = SystemTime::now();
            let conditions = self.conditions_of(&id);
            let matched = self.first_match(&id, &conditions);
            // An exhausted ladder waits for the condition to stay clear, or an operator.
            if let Some((pname, _, _)) = self.get(&id, |l| l.exhausted.clone()).flatten() {
                let Some(policy) = self.policy(&pname).cloned() else {
                    return;
                };
                if self.present(&id, &policy).is_some() {
                    clear_since = None;
                    self.blocked(
                        &id,
                        LadderState::Exhausted,
                        format!("exhausted: acts again once clear for {} or after agent-ctl remediation clear {id}", humantime::format_duration(policy.healthy_delay)),
                    );
                } else {
                    let since = *clear_since.get_or_insert(now);
                    if now.duration_since(since).unwrap_or_default() >= policy.healthy_delay {
                        self.set(&id, |l| {
                            l.exhausted = None;
                            l.state = LadderState::Idle;
                            l.active = false;
                            l.blocked_by.clear();
                        });
                        self.publish_conditions();
                        self.record_control(&id, &policy.name, "remediation-reset", format!(
                            "the condition has stayed clear for {}: the exhausted ladder is forgotten",
                            humantime::format_duration(policy.healthy_delay)
                        )).await;
                        clear_since = None;
                    }
                }
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            }
            let Some((pi, condition)) = matched else {
                // Nothing matches: keep a recent recovery (a return continues the ladder),
                // else the task is done.
                let keep = self
                    .get(&id, |l| l.recovered.clone())
                    .flatten()
                    .and_then(|(p, _, at)| self.policy(&p).map(|p| (p.healthy_delay, at)))
                    .is_some_and(|(delay, at)| now.duration_since(at).unwrap_or_default() < delay);
                if !keep {
                    self.set(&id, |l| {
                        l.recovered = None;
                        if l.state != LadderState::Recovered {
                            l.state = LadderState::Idle;
                        }
                        l.blocked_by.clear();
                        l.active = false;
                    });
                    return;
                }
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            };
            let policy = self.policies[pi].clone();
            self.set(&id, |l| {
                l.policy.clone_from(&policy.name);
                l.mode = policy.mode.as_str().to_string();
                l.steps = policy.steps.len() as u32;
            });
            if let Some(why) = self.paused(&id) {
                self.blocked(&id, LadderState::Waiting, why);
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            }
            let age = now.duration_since(condition.since).unwrap_or_default();
            if age < policy.dwell {
                self.blocked(
                    &id,
                    LadderState::Dwell,
                    format!(
                        "for: {} of {}",
                        humantime::format_duration(Duration::from_secs(age.as_secs())),
                        humantime::format_duration(policy.dwell)
                    ),
                );
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            }
            let start = match self.get(&id, |l| l.recovered.clone()).flatten() {
                Some((p, step, at))
                    if p == policy.name
                        && now.duration_since(at).unwrap_or_default() < policy.healthy_delay =>
                {
                    step + 1
                }
                _ => 0,
            };
            if start == 0 {
                let attempts = self
                    .get(&id, |l| {
                        l.starts.get(&policy.name).map_or(0, |s| {
                            s.iter()
                                .filter(|t| super::within(**t, policy.window, now))
                                .count()
                        })
                    })
                    .unwrap_or(0);
                if attempts >= policy.max_attempts as usize {
                    self.blocked(
                        &id,
                        LadderState::Waiting,
                        format!(
                            "max_attempts: {attempts} ladders within {}",
                            humantime::format_duration(policy.window)
                        ),
                    );
                    if !self.sleep(&cancel, tick).await {
                        return;
                    }
                    continue;
                }
                self.begin_ladder(&id, &policy, &condition, now).await;
            } else {
                self.set(&id, |l| {
                    l.active = true;
                    l.recovered = None;
                    l.trigger = format!("{}: {}", condition.code, condition.message);
                });
            }
            let walk = if start >= policy.steps.len() {
                Walk::Exhausted
            } else {
                self.walk(&id, &policy, start, &condition, &cancel).await
            };
            if !self.end_ladder(&id, &policy, walk).await {
                return;
            }
        }
    }

    async fn begin_ladder(
        &self,
        id: &str,
        policy: &Policy,
        condition: &Condition,
        now: SystemTime,
    ) {
        let ladder_id = format!(
            "{}",
            now.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
        );
        self.set(id, |l| {
            l.starts.entry(policy.name.clone()).or_default().push(now);
            l.active = true;
            l.history.clear();
            l.recovered = None;
            l.since = now;
            l.trigger = format!("{}: {}", condition.code, condition.message);
            l.ladder_id.clone_from(&ladder_id);
            l.last_verification.clear();
        });
        self.count(&policy.name, |c| c.ladders_started += 1);
        let mut e = self.entry(id, policy, "ladder-start");
        e.args = json!({"policy": policy.name, "ladder": ladder_id, "mode": policy.mode.as_str()});
        e.trigger = format!("{}: {}", condition.code, condition.message);
        e.outcome = Some(Recorded::Succeeded);
        e.message = format!(
            "policy {} matched; ladder of {} steps starts",
            policy.name,
            policy.steps.len()
        );
        self.append(Phase::Control, e).await;
    }

    /// Records how a walk ended. False when the task should stop.
    async fn end_ladder(&self, id: &str, policy: &Policy, walk: Walk) -> bool {
        let now = SystemTime::now();
        let steps_summary = || {
            self.get(id, |l| {
                l.history
                    .iter()
                    .map(|s| format!("{} {}", s.action, s.outcome.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
        };
        let (result, message) = match walk {
            Walk::Cancelled => return false,
            Walk::Recovered(step) => {
                self.set(id, |l| {
                    l.recovered = Some((policy.name.clone(), step, now));
                    l.state = LadderState::Recovered;
                    l.active = false;
                    l.blocked_by.clear();
                    l.since = now;
                });
                self.count(&policy.name, |c| c.recovered += 1);
                (
                    "recovered",
                    format!("recovered after step {}: {}", step + 1, steps_summary()),
                )
            }
            Walk::Cleared => {
                self.set(id, |l| {
                    l.state = LadderState::Idle;
                    l.active = false;
                    l.blocked_by.clear();
                });
                (
                    "cleared",
                    "the condition cleared before the next step was needed".to_string(),
                )
            }
            Walk::ShadowDone => {
                self.set(id, |l| {
                    l.state = LadderState::Idle;
                    l.active = false;
                    l.blocked_by = "shadow: every step recorded, nothing done".into();
                });
                (
                    "shadow",
                    format!("shadow: would have taken {}", steps_summary()),
                )
            }
            Walk::Exhausted | Walk::Quarantined => {
                let quarantined = matches!(walk, Walk::Quarantined);
                let msg = format!(
                    "policy {}: {} after {}; trigger {}",
                    policy.name,
                    if quarantined {
                        "device quarantined (disabled)"
                    } else {
                        "every step ran and the condition remains"
                    },
                    steps_summary(),
                    self.get(id, |l| l.trigger.clone()).unwrap_or_default()
                );
                self.set(id, |l| {
                    l.exhausted = Some((policy.name.clone(), now, msg.clone()));
                    l.state = LadderState::Exhausted;
                    l.active = false;
                    l.since = now;
                });
                self.count(&policy.name, |c| c.exhausted += 1);
                self.publish_conditions();
                tracing::error!(target: "audit", device = id, policy = %policy.name, "{msg}");
                ("exhausted", msg)
            }
        };
        let mut e = self.entry(id, policy, "ladder-end");
        e.args = json!({"policy": policy.name, "ladder": self.get(id, |l| l.ladder_id.clone()).unwrap_or_default(), "result": result});
        e.outcome = Some(if result == "exhausted" {
            Recorded::Failed
        } else {
            Recorded::Succeeded
        });
        e.message = message;
        self.append(Phase::Control, e).await;
        true
    }

    /// Steps `start..` of `policy` on `id`.
    async fn walk(
        &self,
        id: &str,
        policy: &Policy,
        start: usize,
        trigger: &Condition,
        cancel: &CancellationToken,
    ) -> Walk {
        let shadow = policy.mode == PolicyMode::Shadow;
        for (idx, step) in policy.steps.iter().enumerate().skip(start) {
            self.set(id, |l| {
                l.step = idx as u32 + 1;
                l.step_action = step.action.describe();
            });
            match self.ready(id, policy, cancel).await {
                Ready::Go => {}
                Ready::Cleared => {
                    return if idx == start {
                        Walk::Cleared
                    } else {
                        Walk::Recovered(idx - 1)
                    }
                }
                Ready::Cancelled => return Walk::Cancelled,
            }
            if let Err(why) = self.capable(id, step) {
                self.note_step(id, policy, step, StepOutcome::Skipped, why, "", trigger)
                    .await;
                continue;
            }
            if shadow {
                self.note_step(
                    id,
                    policy,
                    step,
                    StepOutcome::Shadow,
                    format!("would {} on {id}", step.action.describe()),
                    "",
                    trigger,
                )
                .await;
                match self.verify(id, policy, step, false, cancel).await {
                    Verified::Yes(v) => {
                        if idx == start {
                            self.count(&policy.name, |c| c.cleared_by_itself += 1);
                        }
                        self.set(id, |l| {
                            l.last_verification = format!("cleared by itself: {v}")
                        });
                        return Walk::Recovered(idx);
                    }
                    Verified::No(v) => self.set(id, |l| l.last_verification = v),
                    Verified::Cancelled => return Walk::Cancelled,
                }
                continue;
            }
            let mut permit = None;
            let mut lease = None;
            if step.action.destructive() {
                if policy.mode == PolicyMode::Approve {
                    match self.approval(id, policy, step, cancel).await {
                        Ready::Go => {}
                        Ready::Cleared => return Walk::Recovered(idx.saturating_sub(1)),
                        Ready::Cancelled => return Walk::Cancelled,
                    }
                }
                permit = match self.destructive_slot(id, cancel).await {
                    Some(p) => Some(p),
                    None => return Walk::Cancelled,
                };
                match self.lease(id, policy, step, idx, cancel).await {
                    Ok(l) => lease = l,
                    Err(Ready::Cleared) => return Walk::Recovered(idx.saturating_sub(1)),
                    Err(_) => return Walk::Cancelled,
                }
            }
            self.blocked(id, LadderState::Acting, "");
            let previous_limit = self
                .node
                .device_status(id)
                .and_then(|s| s.power_limit_watts);
            let acted = self.act(id, policy, idx, step, trigger, cancel).await;
            let result = if acted.outcome != Outcome::Succeeded {
                Err(acted.outcome)
            } else if !step.verify {
                Ok(None)
            } else {
                self.blocked(id, LadderState::Verifying, "");
                let needs_probe = self.needs_known_answer(id, step);
                match self.verify(id, policy, step, needs_probe, cancel).await {
                    Verified::Yes(v) => Ok(Some(v)),
                    Verified::No(v) => {
                        self.set(id, |l| l.last_verification.clone_from(&v));
                        Err(Outcome::Failed)
                    }
                    Verified::Cancelled => Err(Outcome::Refused),
                }
            };
            if let Some(l) = lease {
                if let Some(b) = &self.envelope.leases {
                    let outcome = if result.is_ok() {
                        "SUCCEEDED"
                    } else {
                        "FAILED"
                    };
                    b.release(&l, &self.node.name, outcome).await;
                }
            }
            drop(permit);
            match result {
                Ok(None) => {
                    self.note_step(
                        id,
                        policy,
                        step,
                        StepOutcome::Succeeded,
                        acted.message,
                        &acted.action_id,
                        trigger,
                    )
                    .await;
                    return Walk::Quarantined;
                }
                Ok(Some(v)) => {
                    self.set(id, |l| l.last_verification.clone_from(&v));
                    self.note_verification(id, policy, step, &acted.action_id, &v, true)
                        .await;
                    self.note_step(
                        id,
                        policy,
                        step,
                        StepOutcome::Succeeded,
                        format!("{}; {v}", acted.message),
                        &acted.action_id,
                        trigger,
                    )
                    .await;
                    if let StepAction::SetPowerLimit(_) = step.action {
                        self.end_power_lease(id, policy, previous_limit, trigger)
                            .await;
                    }
                    return Walk::Recovered(idx);
                }
                Err(outcome) => {
                    if cancel.is_cancelled() {
                        return Walk::Cancelled;
                    }
                    let v = self
                        .get(id, |l| l.last_verification.clone())
                        .unwrap_or_default();
                    let message =
                        if outcome == Outcome::Failed && acted.outcome == Outcome::Succeeded {
                            self.note_verification(id, policy, step, &acted.action_id, &v, false)
                                .await;
                            format!("{}; {v}", acted.message)
                        } else {
                            acted.message
                        };
                    let so = match outcome {
                        Outcome::TimedOut => StepOutcome::TimedOut,
                        Outcome::Refused => StepOutcome::Refused,
                        _ => StepOutcome::Failed,
                    };
                    self.note_step(id, policy, step, so, message, &acted.action_id, trigger)
                        .await;
                }
            }
        }
        if shadow {
            Walk::ShadowDone
        } else {
            Walk::Exhausted
        }
    }

    /// Waits until nothing blocks a step: no pause, no operator action running. Then reads
    /// the target afresh: the operator may have fixed it.
    async fn ready(&self, id: &str, policy: &Policy, cancel: &CancellationToken) -> Ready {
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
                return match self.present_fresh(id, policy).await {
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
    async fn approval(
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
    async fn destructive_slot(
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
    async fn lease(
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

    async fn wait_forever_or_clear(
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

    /// Whether the target can take the step; why not, when it cannot.
    fn capable(&self, id: &str, step: &PolicyStep) -> Result<(), String> {
        let Some(status) = self.node.device_status(id) else {
            return match step.action {
                StepAction::KillProcess { .. } => Ok(()),
                _ => Err(format!(
                    "{id} is a process: {} applies to devices",
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
            StepAction::KillProcess { .. } => {
                return Err(format!(
                    "{id} is a device: kill-process applies to a watched process"
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

    fn needs_known_answer(&self, id: &str, step: &PolicyStep) -> bool {
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

    fn caller(policy: &Policy) -> Caller {
        Caller {
            identity: format!("policy:{}", policy.name),
            role: Some(Role::Operator),
        }
    }

    /// Runs the step's action through the action path. A refusal by a safety limit (busy,
    /// cooldown, resets per hour) is retried until the step's timeout.
    async fn act(
        &self,
        id: &str,
        policy: &Policy,
        idx: usize,
        step: &PolicyStep,
        trigger: &Condition,
        cancel: &CancellationToken,
    ) -> Acted {
        let deadline = tokio::time::Instant::now() + step.timeout;
        loop {
            let r = self.act_once(id, policy, idx, step, trigger).await;
            match r {
                Ok(rec) => {
                    return Acted {
                        outcome: rec.outcome,
                        message: rec.message,
                        action_id: rec.id,
                    }
                }
                Err(ActionError::Unsafe(m)) if tokio::time::Instant::now() < deadline => {
                    self.blocked(id, LadderState::Waiting, format!("action path: {m}"));
                    if !self.sleep(cancel, RETRY).await {
                        return Acted {
                            outcome: Outcome::Refused,
                            message: "agent stopping".into(),
                            action_id: String::new(),
                        };
                    }
                }
                Err(e) => {
                    return Acted {
                        outcome: Outcome::Refused,
                        message: e.to_string(),
                        action_id: String::new(),
                    }
                }
            }
        }
    }

    async fn act_once(
        &self,
        id: &str,
        policy: &Policy,
        idx: usize,
        step: &PolicyStep,
        trigger: &Condition,
    ) -> Result<ActionRecord, ActionError> {
        let what = match step.action {
            StepAction::Calibrate => Requested::Device(DeviceAction::Calibrate),
            StepAction::ResetSoft { .. } => Requested::Device(DeviceAction::Reset(ResetKind::Soft)),
            StepAction::ResetHard { .. } => Requested::Device(DeviceAction::Reset(ResetKind::Hard)),
            StepAction::PowerCycle { .. } => {
                Requested::Device(DeviceAction::Reset(ResetKind::PowerCycle))
            }
            StepAction::SetPowerLimit(target) => {
                Requested::Device(DeviceAction::SetPowerLimit(self.power_target(id, target)?))
            }
            StepAction::Disable => Requested::Device(DeviceAction::SetEnabled(false)),
            StepAction::KillProcess {
                kill,
                escalate_after,
            } => Requested::KillProcess(self.kill_request(id, kill, escalate_after)?),
        };
        let device_id = match what {
            Requested::KillProcess(k) => k.subject(),
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

    fn power_target(&self, id: &str, target: PowerTarget) -> Result<f64, ActionError> {
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

    fn kill_request(
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
    async fn verify(
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
            match self.present_fresh(id, policy).await {
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
    async fn end_power_lease(
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

    fn entry(&self, id: &str, policy: &Policy, action: &str) -> Entry {
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

    async fn append(&self, phase: Phase, e: Entry) {
        if let Err(err) = self.actions.audit().append(phase, e).await {
            tracing::error!(target: "audit", error = %err, "could not record a remediation entry");
        }
    }

    async fn record_control(&self, id: &str, policy: &str, action: &str, message: String) {
        let Some(p) = self.policy(policy).cloned() else {
            return;
        };
        let mut e = self.entry(id, &p, action);
        e.outcome = Some(Recorded::Succeeded);
        e.message = message;
        self.append(Phase::Control, e).await;
    }

    async fn note_verification(
        &self,
        id: &str,
        policy: &Policy,
        step: &PolicyStep,
        action_id: &str,
        v: &str,
        ok: bool,
    ) {
        let mut e = self.entry(id, policy, &format!("verify {}", step.action.describe()));
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
    #[allow(clippy::too_many_arguments)]
    async fn note_step(
        &self,
        id: &str,
        policy: &Policy,
        step: &PolicyStep,
        outcome: StepOutcome,
        message: String,
        action_id: &str,
        trigger: &Condition,
    ) {
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
}
