//! No replay after a restart: each ladder's state is rebuilt from the audit log before the
//! engine looks at any device. Ladder starts within their window count against
//! `max_attempts`; an exhausted ladder stays exhausted; a pause that has not expired holds; a
//! ladder cut off mid-way (started or continued, not ended) goes on after its last step, and
//! a step that began with no end on record counts as failed and is never run again (its
//! idempotency key, restored by the action path, refuses a repeat too).

use std::collections::HashMap;
use std::time::SystemTime;

use super::view::{LadderState, Pause, StepOutcome, StepRecord};
use super::Remediation;
use crate::audit::{recent_entries, Phase, Record};

/// How much of the log's tail is read: days of remediation on a busy node.
const TAIL_BYTES: u64 = 8 << 20;

#[derive(Default)]
struct Seen {
    policy: String,
    ladder: String,
    in_progress: bool,
    /// Steps of the current ladder: index -> (action, action id, ended).
    steps: HashMap<usize, (String, String, bool)>,
}

pub(super) async fn from_audit(engine: &Remediation) {
    let path = engine.actions.audit().path().to_path_buf();
    let records = tokio::task::spawn_blocking(move || recent_entries(&path, TAIL_BYTES))
        .await
        .unwrap_or_default();
    apply(engine, &records);
}

fn time(r: &Record) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(&r.time).ok()
}

fn apply(engine: &Remediation, records: &[Record]) {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut ladders = engine.ladders.lock().unwrap_or_else(|e| e.into_inner());
    let mut node_pause = engine.node_pause.lock().unwrap_or_else(|e| e.into_inner());
    for r in records {
        let e = &r.entry;
        let target = e.target.clone();
        match (r.phase, e.action.as_str()) {
            (Phase::Control, "ladder-start") => {
                let policy = e.args["policy"].as_str().unwrap_or_default().to_string();
                let ladder = e.args["ladder"].as_str().unwrap_or_default().to_string();
                if let Some(t) = time(r) {
                    let l = ladders
                        .entry(target.clone())
                        .or_insert_with(super::Ladder::new);
                    l.starts.entry(policy.clone()).or_default().push(t);
                }
                seen.insert(
                    target,
                    Seen {
                        policy,
                        ladder,
                        in_progress: true,
                        steps: HashMap::new(),
                    },
                );
            }
            (Phase::Control, "ladder-continue") => {
                let policy = e.args["policy"].as_str().unwrap_or_default().to_string();
                let ladder = e.args["ladder"].as_str().unwrap_or_default().to_string();
                let s = seen.entry(target).or_default();
                if s.ladder != ladder {
                    s.steps.clear();
                }
                s.policy = policy;
                s.ladder = ladder;
                s.in_progress = true;
            }
            (Phase::Control, "remediation-pause" | "remediation-resume")
                if e.outcome == Some(crate::audit::Recorded::Succeeded) =>
            {
                restore_pause(r, &mut ladders, &mut node_pause);
            }
            (Phase::Control, "ladder-end") => {
                if let Some(s) = seen.get_mut(&target) {
                    s.in_progress = false;
                }
                let l = ladders
                    .entry(target.clone())
                    .or_insert_with(super::Ladder::new);
                if e.args["result"] == "exhausted" {
                    let policy = e.args["policy"].as_str().unwrap_or_default().to_string();
                    l.exhausted = Some((
                        policy.clone(),
                        time(r).unwrap_or_else(SystemTime::now),
                        e.message.clone(),
                    ));
                    l.policy = policy;
                    l.state = LadderState::Exhausted;
                } else {
                    l.exhausted = None;
                }
            }
            (Phase::Control, "remediation-clear" | "remediation-reset")
                if e.outcome == Some(crate::audit::Recorded::Succeeded) =>
            {
                if let Some(l) = ladders.get_mut(&target) {
                    l.exhausted = None;
                    l.state = LadderState::Idle;
                    if e.action == "remediation-clear" {
                        l.starts.clear();
                    }
                }
            }
            (Phase::Begin | Phase::End | Phase::Interrupted, _) => {
                let Some((t, policy, ladder, idx)) = parse_key(&e.idempotency_key) else {
                    continue;
                };
                let Some(s) = seen.get_mut(&t) else { continue };
                if s.policy != policy || s.ladder != ladder {
                    continue;
                }
                let ended = r.phase != Phase::Begin;
                let step =
                    s.steps
                        .entry(idx)
                        .or_insert((e.action.clone(), e.action_id.clone(), false));
                step.2 |= ended && r.phase == Phase::End;
            }
            _ => {}
        }
    }
    resume_cut_off(seen, &mut ladders);
    drop(ladders);
    drop(node_pause);
    engine.publish_conditions();
}

/// Ladders cut off mid-way go on after the last step that began; a step with no end on
/// record is shown as interrupted (counted as failed) and never run again.
fn resume_cut_off(
    seen: HashMap<String, Seen>,
    ladders: &mut std::collections::BTreeMap<String, super::Ladder>,
) {
    let now = SystemTime::now();
    for (target, s) in seen {
        if !s.in_progress {
            continue;
        }
        let l = ladders
            .entry(target.clone())
            .or_insert_with(super::Ladder::new);
        l.policy.clone_from(&s.policy);
        l.ladder_id.clone_from(&s.ladder);
        let Some((&last, (action, action_id, ended))) = s.steps.iter().max_by_key(|(i, _)| **i)
        else {
            // Started, no step begun: the attempt counts; the ladder starts afresh.
            continue;
        };
        if !ended {
            l.history.push(StepRecord {
                action: action.clone(),
                outcome: StepOutcome::Interrupted,
                message: format!(
                    "began before the agent restarted and has no end on record (action {action_id}): counted as failed, not retried"
                ),
                at: now,
                action_id: action_id.clone(),
            });
        }
        // Continue after the last step that began: never run it again.
        l.resume_after = Some((s.policy.clone(), last));
        tracing::warn!(target: "audit", device = %target, policy = %s.policy, step = last + 1, ended, "remediation ladder restored from the audit log: continues after its last step");
    }
}

/// A pause that has not expired holds across a restart; a resume after it lifts it.
fn restore_pause(
    r: &Record,
    ladders: &mut std::collections::BTreeMap<String, super::Ladder>,
    node_pause: &mut Option<Pause>,
) {
    let e = &r.entry;
    let slot = if e.target == "node" {
        node_pause
    } else {
        &mut ladders
            .entry(e.target.clone())
            .or_insert_with(super::Ladder::new)
            .paused
    };
    if e.action == "remediation-resume" {
        *slot = None;
        return;
    }
    let until = e.args["for_seconds"]
        .as_u64()
        .and_then(|s| time(r).map(|t| t + std::time::Duration::from_secs(s)));
    if until.is_some_and(|u| u <= SystemTime::now()) {
        return;
    }
    *slot = Some(Pause {
        until,
        reason: e.args["reason"].as_str().unwrap_or_default().to_string(),
        by: e.caller.clone(),
    });
}

/// `remediation/<target>/<policy>/<ladder>/<step>` -> its parts.
fn parse_key(key: &str) -> Option<(String, String, String, usize)> {
    let rest = key.strip_prefix("remediation/")?;
    let mut parts = rest.rsplitn(4, '/');
    let idx = parts.next()?.parse().ok()?;
    let ladder = parts.next()?.to_string();
    let policy = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    Some((target, policy, ladder, idx))
}

#[cfg(test)]
mod tests {
    use super::parse_key;

    #[test]
    fn keys_parse_from_the_end() {
        assert_eq!(
            parse_key("remediation/process:ngspice:42/stuck/1700000000000/0"),
            Some((
                "process:ngspice:42".into(),
                "stuck".into(),
                "1700000000000".into(),
                0
            ))
        );
        assert_eq!(parse_key("client-key"), None);
    }
}
