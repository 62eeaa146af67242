//! Walking a ladder: the watcher that gives each matching target a task of its own, and
//! that task: it waits out `for`, checks attempts and pauses, starts a ladder (or continues
//! one within `healthy_delay`), hands it to [`super::walk`] and records how it ended. One
//! task per target at a time, so one ladder per device.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health_hal::Condition;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::view::LadderState;
use super::Remediation;
use crate::audit::{Phase, Recorded};
use crate::config::{Policy, PolicyMode};
use crate::model::Outcome;

/// How often a refused lease or a blocked step is tried again.
pub(super) const RETRY: Duration = Duration::from_secs(1);

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
    // Ladder tasks see the cancellation at their next wait and finish what they hold (a
    // lease is released, a verification recorded); a step in flight runs on the action
    // path's own task and is recorded there. Bounded: what is left after that is dropped.
    let wait_all = async {
        for (_, h) in running.iter_mut() {
            let _ = h.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), wait_all)
        .await
        .is_err()
    {
        for (_, h) in running {
            h.abort();
        }
    }
}

/// How a walk up the ladder ended.
pub(super) enum Walk {
    /// Step (index) verified.
    Recovered(usize),
    /// Disabled: the ladder ends, the device quarantined.
    Quarantined,
    Exhausted,
    /// The condition went away before a step was needed.
    Cleared,
    /// Shadow: the whole ladder was recorded, nothing done.
    ShadowDone,
    /// No step could run on this target (each skipped or refused): nothing was tried, so
    /// nothing is exhausted; the ladder waits for the condition to clear.
    NotApplicable,
    Cancelled,
}

/// How the wait before a step ended.
pub(super) enum Ready {
    Go,
    Cleared,
    Cancelled,
}

pub(super) enum Verified {
    Yes(String),
    No(String),
    Cancelled,
}

/// A step's action as it ran.
pub(super) struct Acted {
    pub(super) outcome: Outcome,
    pub(super) message: String,
    pub(super) action_id: String,
    /// The action was not started after all (the condition cleared, a pause, shutdown).
    pub(super) not_taken: bool,
    /// With `not_taken`: because the condition cleared.
    pub(super) cleared: bool,
    /// Refused as impossible for this target (no power reading to scale, the process gone):
    /// recorded as skipped.
    pub(super) impossible: bool,
}

impl Remediation {
    /// The task of one target: lives while the target has a matching condition or state to
    /// keep, walking the ladder whenever the policy allows.
    pub(super) async fn run_target(self: Arc<Self>, id: String, cancel: CancellationToken) {
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
                self.watch_exhausted(&id, &policy, &mut clear_since, now)
                    .await;
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            }
            let Some((pi, condition)) = matched else {
                // Nothing matches: keep a recent recovery (a return continues the ladder),
                // else the task is done.
                if !self.keep_recovery(&id, now) || !self.sleep(&cancel, tick).await {
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
            let waiting = self
                .get(&id, |l| l.until_clear.clone())
                .flatten()
                .filter(|(p, _)| *p == policy.name);
            if let Some((_, why)) = waiting {
                self.blocked(&id, LadderState::Idle, why);
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            }
            if let Some((window, why)) = self.in_maintenance(&id) {
                self.blocked(&id, LadderState::Waiting, why);
                self.note_maintenance(&id, &policy, &window, Some(&condition))
                    .await;
                if !self.sleep(&cancel, tick).await {
                    return;
                }
                continue;
            }
            self.out_of_maintenance(&id);
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
            let start = match self.next_start(&id, &policy, now) {
                Ok(start) => start,
                Err(why) => {
                    self.blocked(&id, LadderState::Waiting, why);
                    if !self.sleep(&cancel, tick).await {
                        return;
                    }
                    continue;
                }
            };
            if start == 0 {
                self.begin_ladder(&id, &policy, &condition, now).await;
            } else {
                self.continue_ladder(&id, &policy, &condition, start).await;
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

    /// An exhausted ladder: forgotten once the condition has stayed clear for the policy's
    /// `healthy_delay` (recorded), else shown as what blocks the device.
    async fn watch_exhausted(
        &self,
        id: &str,
        policy: &Policy,
        clear_since: &mut Option<SystemTime>,
        now: SystemTime,
    ) {
        let delay = humantime::format_duration(policy.healthy_delay);
        if self.present(id, policy).is_some() {
            *clear_since = None;
            self.blocked(
                id,
                LadderState::Exhausted,
                format!("exhausted: acts again once clear for {delay} or after agent-ctl remediation clear {id}"),
            );
            return;
        }
        let since = *clear_since.get_or_insert(now);
        if now.duration_since(since).unwrap_or_default() < policy.healthy_delay {
            return;
        }
        self.set(id, |l| {
            l.exhausted = None;
            l.state = LadderState::Idle;
            l.active = false;
            l.blocked_by.clear();
        });
        self.publish_conditions();
        let message = format!(
            "the condition has stayed clear for {delay}: the exhausted ladder is forgotten"
        );
        self.record_control(id, &policy.name, "remediation-reset", message)
            .await;
        *clear_since = None;
    }

    /// Whether a recovery is recent enough (within its policy's `healthy_delay`) to keep the
    /// task alive; clears the ladder's state when it is not.
    fn keep_recovery(&self, id: &str, now: SystemTime) -> bool {
        let keep = self
            .get(id, |l| l.recovered.clone())
            .flatten()
            .and_then(|(p, _, at)| self.policy(&p).map(|p| (p.healthy_delay, at)))
            .is_some_and(|(delay, at)| now.duration_since(at).unwrap_or_default() < delay);
        if !keep {
            self.set(id, |l| {
                l.recovered = None;
                l.until_clear = None;
                if l.state != LadderState::Recovered {
                    l.state = LadderState::Idle;
                }
                l.blocked_by.clear();
                l.active = false;
            });
        }
        keep
    }

    /// The step to start at: after the last verified one when the condition is back within
    /// `healthy_delay` (the ladder continues), else 0 for a new ladder if `max_attempts`
    /// allows one (`Err` says why not).
    fn next_start(&self, id: &str, policy: &Policy, now: SystemTime) -> Result<usize, String> {
        // A ladder cut off by a restart continues after the step that last began, whatever
        // the time: that step is never run again.
        let resumed = self.get(id, |l| l.resume_after.clone()).flatten();
        if let Some((p, step)) = resumed {
            self.set(id, |l| l.resume_after = None);
            if p == policy.name {
                return Ok(step + 1);
            }
        }
        // A shadow policy acted on nothing: there is no ladder to continue.
        if let Some((p, step, at)) = self
            .get(id, |l| l.recovered.clone())
            .flatten()
            .filter(|_| policy.mode != PolicyMode::Shadow)
        {
            if p == policy.name && now.duration_since(at).unwrap_or_default() < policy.healthy_delay
            {
                return Ok(step + 1);
            }
        }
        let attempts = self
            .get(id, |l| {
                l.starts.get(&policy.name).map_or(0, |s| {
                    s.iter()
                        .filter(|t| super::within(**t, policy.window, now))
                        .count()
                })
            })
            .unwrap_or(0);
        if attempts >= policy.max_attempts as usize {
            return Err(format!(
                "max_attempts: {attempts} ladders within {}",
                humantime::format_duration(policy.window)
            ));
        }
        Ok(0)
    }

    /// A ladder whose condition came back within `healthy_delay` goes on at `start`, under
    /// its own id; the entry lets a restart see it in progress.
    async fn continue_ladder(
        &self,
        id: &str,
        policy: &Policy,
        condition: &Condition,
        start: usize,
    ) {
        let trigger = format!("{}: {}", condition.code, condition.message);
        self.set(id, |l| {
            l.active = true;
            l.recovered = None;
            l.trigger.clone_from(&trigger);
        });
        let mut e = self.entry(id, policy, "ladder-continue");
        e.args = json!({
            "policy": policy.name,
            "ladder": self.get(id, |l| l.ladder_id.clone()).unwrap_or_default(),
            "step": start,
        });
        e.trigger = trigger;
        e.outcome = Some(Recorded::Succeeded);
        e.message = format!(
            "the condition is back: ladder of policy {} continues at step {}",
            policy.name,
            start + 1
        );
        self.append(Phase::Control, e).await;
    }

    pub(super) async fn begin_ladder(
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
    pub(super) async fn end_ladder(&self, id: &str, policy: &Policy, walk: Walk) -> bool {
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
            Walk::NotApplicable => {
                self.set(id, |l| {
                    l.state = LadderState::Idle;
                    l.active = false;
                    l.until_clear = Some((
                        policy.name.clone(),
                        format!("no step of policy {} applies to this device: waiting for the condition to clear", policy.name),
                    ));
                });
                (
                    "not-applicable",
                    format!("no step could run on this device: {}", steps_summary()),
                )
            }
            Walk::ShadowDone => {
                self.set(id, |l| {
                    l.state = LadderState::Idle;
                    l.active = false;
                    // Like an exhausted ladder, without the page: not walked again until the
                    // condition has cleared.
                    l.until_clear = Some((
                        policy.name.clone(),
                        "shadow: every step recorded, nothing done; waiting for the condition to clear".into(),
                    ));
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
}
