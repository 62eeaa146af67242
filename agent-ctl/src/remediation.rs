//! `agent-ctl remediation`: where the agent's remediation engine stands (per device its ladder,
//! per policy its counts, the node's pause) and the operator's controls of it (`approve`,
//! `pause`, `resume`, `clear`). The controls are the agent's to check and audit; this module
//! only builds the requests and prints the status each call returns (JSON in [`crate::json`]).

use std::time::Duration;

use anyhow::bail;
use health_proto::v1 as pb;

use crate::cli::RemediationControl;
use crate::invocation::Invocation;
use crate::json;
use crate::render::{table, time};

/// The longest pause the agent accepts; checked here too so a typo fails before connecting.
const MAX_PAUSE: Duration = Duration::from_secs(30 * 86400);

pub(crate) async fn command(
    ctl: &mut Invocation,
    device: Option<&str>,
    control: Option<&RemediationControl>,
) -> anyhow::Result<()> {
    let mut agent = ctl.agent().await?;
    let status = match control {
        None => {
            let request = ctl.req(pb::GetRemediationRequest {
                device_id: device.unwrap_or_default().to_string(),
            });
            agent.get_remediation(request).await?
        }
        Some(RemediationControl::Approve { id }) => {
            let request = ctl.req(pb::ApproveRemediationRequest {
                device_id: id.clone(),
            });
            agent.approve_remediation(request).await?
        }
        Some(RemediationControl::Pause {
            device,
            pause_for,
            reason,
        }) => {
            let request = ctl.req(pause_request(device.as_deref(), *pause_for, reason)?);
            agent.pause_remediation(request).await?
        }
        Some(RemediationControl::Resume { device }) => {
            let request = ctl.req(pb::ResumeRemediationRequest {
                device_id: device.clone().unwrap_or_default(),
            });
            agent.resume_remediation(request).await?
        }
        Some(RemediationControl::Clear { id }) => {
            let request = ctl.req(pb::ClearRemediationRequest {
                device_id: id.clone(),
            });
            agent.clear_remediation(request).await?
        }
    }
    .into_inner();
    ctl.show(&status, json::remediation, status_text)
}

/// `--for` in whole seconds (the wire's unit); none: until resumed.
pub fn pause_request(
    device: Option<&str>,
    pause_for: Option<Duration>,
    reason: &Option<String>,
) -> anyhow::Result<pb::PauseRemediationRequest> {
    let for_seconds = match pause_for {
        None => 0,
        Some(d) if d < Duration::from_secs(1) || d > MAX_PAUSE => {
            bail!(
                "--for {}: expected 1s to 30days (leave --for out to pause until resumed)",
                humantime::format_duration(d)
            )
        }
        Some(d) => d.as_secs(),
    };
    Ok(pb::PauseRemediationRequest {
        device_id: device.unwrap_or_default().to_string(),
        for_seconds,
        reason: reason
            .clone()
            .unwrap_or_else(|| "no reason given".to_string()),
    })
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn pause_line(until: &Option<prost_types::Timestamp>) -> String {
    match until {
        Some(_) => format!("until {}", time(until)),
        None => "until resumed".to_string(),
    }
}

/// The node's line: its pause, the destructive-step limit and where leases come from.
fn node_text(s: &pb::RemediationStatus) -> String {
    let mut out = if s.paused {
        format!(
            "node: automatic actions PAUSED {} ({})\n",
            pause_line(&s.paused_until),
            or_dash(&s.paused_reason)
        )
    } else {
        "node: automatic actions on\n".to_string()
    };
    out.push_str(&format!(
        "destructive steps: {} running of at most {}; leases {}\n",
        s.destructive_running,
        s.max_destructive,
        if s.collector_configured {
            "from the collector"
        } else {
            "not used (no collector configured)"
        }
    ));
    out
}

/// One device's ladder: a headline, then what blocks it, its trigger, its last verification
/// and its steps (one line each, oldest first).
fn device_text(d: &pb::RemediationDevice) -> String {
    let step = if d.step == 0 {
        format!("step -/{}", d.steps)
    } else {
        format!("step {}/{} {}", d.step, d.steps, d.step_action)
    };
    let mut out = format!(
        "{}  policy {} ({})  state {}{} since {}  {}  attempts {}/{} in window\n",
        d.device_id,
        d.policy,
        d.mode,
        d.state,
        if d.active { " (active)" } else { "" },
        time(&d.since),
        step,
        d.attempts_in_window,
        d.max_attempts
    );
    if d.paused {
        out.push_str(&format!("  paused {}\n", pause_line(&d.paused_until)));
    }
    for (label, value) in [
        ("blocked by", &d.blocked_by),
        ("trigger", &d.trigger),
        ("last verification", &d.last_verification),
    ] {
        if !value.is_empty() {
            out.push_str(&format!("  {label}: {value}\n"));
        }
    }
    for s in &d.history {
        let id = if s.action_id.is_empty() {
            String::new()
        } else {
            format!(" [action {}]", s.action_id)
        };
        out.push_str(&format!(
            "  {} {} {}{id}: {}\n",
            time(&s.at),
            s.action,
            s.outcome,
            s.message
        ));
    }
    out
}

fn policies_text(policies: &[pb::PolicyStats]) -> String {
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|p| {
            vec![
                p.policy.clone(),
                p.mode.clone(),
                p.ladders_started.to_string(),
                p.steps_run.to_string(),
                p.steps_skipped.to_string(),
                p.would_act.to_string(),
                p.recovered.to_string(),
                p.exhausted.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "POLICY",
            "MODE",
            "LADDERS",
            "STEPS_RUN",
            "SKIPPED",
            "WOULD_ACT",
            "RECOVERED",
            "EXHAUSTED",
        ],
        &rows,
    );
    // The figure that says whether a shadow policy is worth promoting.
    for p in policies.iter().filter(|p| p.mode == "shadow") {
        out.push_str(&format!(
            "{} (shadow): {} of {} triggers cleared by themselves within the first step's hold\n",
            p.policy, p.cleared_by_itself, p.ladders_started
        ));
    }
    out
}

/// The whole status for people: the node, each device with a ladder (devices that never had
/// one on a single line), then the policies.
pub fn status_text(s: &pb::RemediationStatus) -> String {
    let mut out = node_text(s);
    let (quiet, busy): (Vec<_>, Vec<_>) = s
        .devices
        .iter()
        .partition(|d| d.policy.is_empty() && d.history.is_empty() && !d.paused);
    for d in busy {
        out.push('\n');
        out.push_str(&device_text(d));
    }
    if !quiet.is_empty() {
        let ids: Vec<&str> = quiet.iter().map(|d| d.device_id.as_str()).collect();
        out.push_str(&format!("\nno ladder: {}\n", ids.join(", ")));
    }
    out.push('\n');
    if s.policies.is_empty() {
        out.push_str("no [[policy]] configured\n");
    } else {
        out.push_str(&policies_text(&s.policies));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> pb::RemediationDevice {
        pb::RemediationDevice {
            device_id: "loihi-0".into(),
            policy: "unresponsive".into(),
            mode: "approve".into(),
            state: "waiting".into(),
            step: 1,
            steps: 2,
            step_action: "reset-hard".into(),
            attempts_in_window: 1,
            max_attempts: 3,
            blocked_by: "approval: reset-hard waits".into(),
            trigger: "DEVICE_UNRESPONSIVE: no read".into(),
            active: true,
            history: vec![pb::RemediationStep {
                action: "reset-soft".into(),
                outcome: "FAILED".into(),
                message: "still unresponsive".into(),
                action_id: "a1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_waiting_ladder_shows_its_step_block_and_history() {
        let s = pb::RemediationStatus {
            devices: vec![
                waiting(),
                pb::RemediationDevice {
                    device_id: "xbar-0".into(),
                    state: "idle".into(),
                    ..Default::default()
                },
            ],
            max_destructive: 1,
            ..Default::default()
        };
        let text = status_text(&s);
        assert!(text.contains("node: automatic actions on"), "{text}");
        assert!(
            text.contains("loihi-0  policy unresponsive (approve)  state waiting (active)"),
            "{text}"
        );
        assert!(text.contains("step 1/2 reset-hard  attempts 1/3"), "{text}");
        assert!(
            text.contains("  blocked by: approval: reset-hard waits\n"),
            "{text}"
        );
        assert!(
            text.contains("reset-soft FAILED [action a1]: still unresponsive"),
            "{text}"
        );
        assert!(text.contains("no ladder: xbar-0\n"), "{text}");
        assert!(text.contains("no [[policy]] configured"), "{text}");
    }

    #[test]
    fn a_shadow_policy_states_how_often_the_condition_cleared_by_itself() {
        let s = pb::RemediationStatus {
            paused: true,
            paused_reason: "maintenance".into(),
            policies: vec![pb::PolicyStats {
                policy: "thermal".into(),
                mode: "shadow".into(),
                ladders_started: 7,
                cleared_by_itself: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = status_text(&s);
        assert!(
            text.contains("PAUSED until resumed (maintenance)"),
            "{text}"
        );
        assert!(
            text.contains(
                "thermal (shadow): 5 of 7 triggers cleared by themselves within the first step's hold"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_pause_is_whole_seconds_between_one_second_and_thirty_days() {
        let r = pause_request(Some("loihi-0"), Some(Duration::from_secs(3600)), &None).unwrap();
        assert_eq!(r.for_seconds, 3600);
        assert_eq!(r.device_id, "loihi-0");
        assert_eq!(r.reason, "no reason given");
        assert_eq!(pause_request(None, None, &None).unwrap().for_seconds, 0);
        let e = pause_request(None, Some(Duration::from_millis(10)), &None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--for 10ms: expected 1s to 30days"),
            "{e}"
        );
        assert!(pause_request(None, Some(Duration::from_secs(31 * 86400)), &None).is_err());
    }
}
