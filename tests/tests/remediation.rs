//! Remediation end to end, on the real agent binary with simulated devices: the default
//! ladders fix their faults; a failing reset walks the whole ladder and quarantines; shadow
//! acts on nothing and records everything; a restart mid-ladder does not repeat a step; a
//! pause stops everything; with no collector to grant leases only soft steps run.
//!
//! What the agent did is read from its audit log (the record every step must leave) and its
//! device reads, so these tests check the engine through the same evidence an operator has.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::time::Duration;

use health_e2e::{output_text, wait_for, Agent};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// One simulated Loihi 2 board polled fast, with `policies` appended.
fn config(extra: &str) -> String {
    format!(
        r#"report_interval = "200ms"

[remediation]
interval = "100ms"

[[device]]
id = "loihi-0"
kind = "loihi2"
backend = "sim"
poll_interval = "200ms"
deadline = "500ms"
action_deadline = "3s"
{extra}"#
    )
}

/// The default unresponsive ladder with short holds, in `mode`.
fn unresponsive(mode: &str, without_collector: &str) -> String {
    format!(
        r#"
[[policy]]
name = "unresponsive"
match = {{ codes = ["DEVICE_UNRESPONSIVE", "DEVICE_ERROR", "RESET_FAILED"], severity = "critical" }}
mode = "{mode}"
without_collector = "{without_collector}"
steps = [
  {{ action = "reset-soft",  hold = "1s", timeout = "5s" }},
  {{ action = "reset-hard",  hold = "1s", timeout = "5s" }},
  {{ action = "power-cycle", hold = "1s", timeout = "5s" }},
  {{ action = "disable" }},
]
"#
    )
}

/// Audit entries the policies wrote about `target`.
fn policy_entries(agent: &Agent, target: &str) -> Vec<Value> {
    agent
        .audit_entries()
        .into_iter()
        .filter(|e| {
            e["caller"]
                .as_str()
                .unwrap_or_default()
                .starts_with("policy:")
                && e["target"].as_str() == Some(target)
        })
        .collect()
}

/// `(phase, action, outcome)` of the steps the policies took or recorded on `target`.
fn steps(agent: &Agent, target: &str) -> Vec<(String, String, String)> {
    policy_entries(agent, target)
        .iter()
        .filter(|e| {
            matches!(
                e["phase"].as_str(),
                Some("begin" | "end" | "skipped" | "shadow")
            )
        })
        .map(|e| {
            (
                e["phase"].as_str().unwrap_or_default().to_string(),
                e["action"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The results of the ladders that ended on `target` (`recovered`, `exhausted`, ...).
fn ladder_ends(agent: &Agent, target: &str) -> Vec<String> {
    policy_entries(agent, target)
        .iter()
        .filter(|e| e["action"] == "ladder-end")
        .map(|e| e["args"]["result"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_ladder_end(agent: &Agent, target: &str, result: &str, after: usize) {
    wait_for(
        &format!("a ladder on {target} to end {result}"),
        LIMIT,
        || {
            let ends = ladder_ends(agent, target);
            (ends.len() > after && ends[after..].iter().any(|r| r == result)).then_some(())
        },
    );
}

fn device(agent: &Agent, id: &str) -> Value {
    let out = agent.ctl(&["--json", "device", id]);
    assert!(out.status.success(), "{}", output_text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn codes(d: &Value) -> Vec<String> {
    d["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["code"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every begin the policies wrote has its end (or an interrupted entry), and carries the
/// condition that triggered it.
fn assert_begins_have_ends_and_triggers(agent: &Agent, target: &str) {
    let entries = policy_entries(agent, target);
    for b in entries.iter().filter(|e| e["phase"] == "begin") {
        let id = &b["action_id"];
        assert!(
            entries.iter().any(|e| &e["action_id"] == id
                && matches!(e["phase"].as_str(), Some("end" | "interrupted"))),
            "begin without end: {b}"
        );
        assert!(
            !b["trigger"].as_str().unwrap_or_default().is_empty(),
            "a policy's step records its trigger: {b}"
        );
    }
}

#[test]
fn the_embedded_default_fixes_a_hung_board_with_a_hard_reset() {
    let agent = Agent::simulate(&["--node", "rem-hang"]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    wait_ladder_end(&agent, "loihi-0", "recovered", 0);
    let s = steps(&agent, "loihi-0");
    let ends: Vec<(&str, &str)> = s
        .iter()
        .filter(|(p, _, _)| p == "end")
        .map(|(_, a, o)| (a.as_str(), o.as_str()))
        .collect();
    // The soft reset goes through the hung firmware and cannot finish; the hard reset is out
    // of band and clears the hang. Nothing past it runs.
    assert_eq!(ends.len(), 2, "{s:?}");
    assert_eq!(ends[0].0, "reset-soft");
    assert_ne!(ends[0].1, "succeeded", "{s:?}");
    assert_eq!(ends[1], ("reset-hard", "succeeded"), "{s:?}");
    assert_begins_have_ends_and_triggers(&agent, "loihi-0");
    let verified = policy_entries(&agent, "loihi-0")
        .into_iter()
        .find(|e| e["action"] == "verify reset-hard")
        .expect("the verification is on record");
    assert!(
        verified["verification"]
            .as_str()
            .unwrap_or_default()
            .starts_with("verified"),
        "{verified}"
    );
    let d = device(&agent, "loihi-0");
    assert!(
        !codes(&d).contains(&"DEVICE_UNRESPONSIVE".to_string()),
        "{d}"
    );
}

#[test]
fn the_embedded_default_calibrates_a_drifting_array_and_the_photonic_chip_at_start() {
    let agent = Agent::simulate(&["--node", "rem-drift"]);
    // photonic-0 starts "never calibrated": the calibration policy fixes it by itself.
    wait_ladder_end(&agent, "photonic-0", "recovered", 0);
    let d = device(&agent, "photonic-0");
    assert!(!codes(&d).contains(&"CALIBRATION_STALE".to_string()), "{d}");
    let before = ladder_ends(&agent, "xbar-0").len();
    agent.ctl_ok(&["inject-fault", "xbar-0", "drift"]);
    wait_for("CALIBRATION_DRIFT on xbar-0", LIMIT, || {
        codes(&device(&agent, "xbar-0"))
            .contains(&"CALIBRATION_DRIFT".to_string())
            .then_some(())
    });
    // The drift fault makes the array drift 500 times faster: a calibration fixes it for a
    // while, and the known-answer probe verifies the reprogrammed array.
    wait_ladder_end(&agent, "xbar-0", "recovered", before);
    let s = steps(&agent, "xbar-0");
    assert!(
        s.iter()
            .any(|(p, a, o)| p == "end" && a == "calibrate" && o == "succeeded"),
        "{s:?}"
    );
    let verified = policy_entries(&agent, "xbar-0")
        .into_iter()
        .rfind(|e| e["action"] == "verify calibrate")
        .expect("verification on record");
    assert!(
        verified["verification"]
            .as_str()
            .unwrap_or_default()
            .contains("known-answer probe"),
        "a MATVEC device is verified by its known-answer probe too: {verified}"
    );
    assert_begins_have_ends_and_triggers(&agent, "xbar-0");
}

#[test]
fn a_failing_reset_walks_the_whole_ladder_then_quarantines_and_stops() {
    let agent = Agent::with_config(&config(&unresponsive("enforce", "all")), &[]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "failing-reset"]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    wait_ladder_end(&agent, "loihi-0", "exhausted", 0);
    let s = steps(&agent, "loihi-0");
    let begun: Vec<&str> = s
        .iter()
        .filter(|(p, _, _)| p == "begin")
        .map(|(_, a, _)| a.as_str())
        .collect();
    assert_eq!(
        begun,
        ["reset-soft", "reset-hard", "reset-power-cycle", "disable"],
        "exactly the ladder's steps, in order: {s:?}"
    );
    assert_begins_have_ends_and_triggers(&agent, "loihi-0");
    let d = device(&agent, "loihi-0");
    assert!(
        codes(&d).contains(&"REMEDIATION_EXHAUSTED".to_string()),
        "{d}"
    );
    let exhausted = d["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["code"] == "REMEDIATION_EXHAUSTED")
        .unwrap()
        .clone();
    let msg = exhausted["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("unresponsive") && msg.contains("reset-hard") && msg.contains("quarantined"),
        "names the policy and every step: {msg}"
    );
    assert_eq!(exhausted["severity"], "CRITICAL", "{exhausted}");
    // Quarantined: nothing more is tried, however long the condition stays.
    let n = s.len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        steps(&agent, "loihi-0").len(),
        n,
        "no step after exhaustion"
    );
}

#[test]
fn shadow_records_every_step_and_touches_nothing() {
    let agent = Agent::with_config(&config(&unresponsive("shadow", "all")), &[]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    wait_ladder_end(&agent, "loihi-0", "shadow", 0);
    let s = steps(&agent, "loihi-0");
    assert!(
        s.iter().all(|(p, _, _)| p == "shadow"),
        "shadow begins nothing: {s:?}"
    );
    let would: Vec<&str> = s.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(
        would,
        ["reset-soft", "reset-hard", "power-cycle", "disable"],
        "{s:?}"
    );
    // Run out, like an exhausted ladder (without the page): not walked again while the
    // condition holds.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        steps(&agent, "loihi-0").len(),
        4,
        "{:?}",
        steps(&agent, "loihi-0")
    );
    let d = device(&agent, "loihi-0");
    assert!(
        codes(&d).contains(&"DEVICE_UNRESPONSIVE".to_string()),
        "untouched: {d}"
    );
    assert!(
        !codes(&d).contains(&"REMEDIATION_EXHAUSTED".to_string()),
        "a shadow policy pages no one: {d}"
    );
    assert_eq!(d["enabled"], true, "{d}");
}

#[test]
fn with_no_collector_to_grant_a_lease_only_soft_steps_run() {
    // Fail closed: the policy does not allow destructive steps without a lease. Two agents:
    // one whose collector is down (its port bound, then closed), one with none configured.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = Agent::with_config(
        &format!(
            "collector = \"{dead}\"\n{}",
            config(&unresponsive("enforce", "soft-only"))
        ),
        &[],
    );
    let none = Agent::with_config(&config(&unresponsive("enforce", "soft-only")), &[]);
    for agent in [&down, &none] {
        agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    }
    for agent in [&down, &none] {
        wait_for("the soft reset to end", LIMIT, || {
            steps(agent, "loihi-0")
                .iter()
                .any(|(p, a, _)| p == "end" && a == "reset-soft")
                .then_some(())
        });
    }
    std::thread::sleep(Duration::from_secs(3));
    for (agent, why) in [
        (&down, "collector unreachable"),
        (&none, "no collector configured"),
    ] {
        let s = steps(agent, "loihi-0");
        let begun: Vec<&str> = s
            .iter()
            .filter(|(p, _, _)| p == "begin")
            .map(|(_, a, _)| a.as_str())
            .collect();
        assert_eq!(begun, ["reset-soft"], "{why}: {s:?}");
        let d = device(agent, "loihi-0");
        assert!(
            codes(&d).contains(&"DEVICE_UNRESPONSIVE".to_string()),
            "{d}"
        );
        let out = agent.ctl(&["--json", "remediation", "--device", "loihi-0"]);
        let text = output_text(&out);
        assert!(text.contains(why), "blocked_by says why: {text}");
    }
}

#[test]
fn a_restart_mid_ladder_does_not_repeat_the_step_that_was_running() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit = audit.to_str().unwrap();
    // The power cycle takes the simulated board 2.5 s: long enough to stop the agent in it.
    let cfg = config(
        r#"
[[policy]]
name = "unresponsive"
match = { codes = ["DEVICE_UNRESPONSIVE"], severity = "critical" }
without_collector = "all"
healthy_delay = "10m"
steps = [
  { action = "power-cycle", hold = "1s", timeout = "5s" },
  { action = "disable" },
]
"#,
    );
    let mut first = Agent::with_config(&cfg, &["--audit-log", audit]);
    first.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    let lines = || std::fs::read_to_string(audit).unwrap_or_default();
    wait_for("the power cycle to begin", LIMIT, || {
        lines()
            .lines()
            .any(|l| l.contains("\"phase\":\"begin\"") && l.contains("reset-power-cycle"))
            .then_some(())
    });
    // Killed outright: no end, no interrupted record, as after a power loss.
    first.proc.signal(nix::sys::signal::Signal::SIGKILL);
    first.proc.wait_exit(Duration::from_secs(5));
    drop(first);

    let second = Agent::with_config(&cfg, &["--audit-log", audit]);
    second.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    wait_for("the ladder to go on to its next step", LIMIT, || {
        lines()
            .lines()
            .any(|l| l.contains("\"phase\":\"begin\"") && l.contains("\"action\":\"disable\""))
            .then_some(())
    });
    let power_cycles = lines()
        .lines()
        .filter(|l| l.contains("\"phase\":\"begin\"") && l.contains("reset-power-cycle"))
        .count();
    assert_eq!(
        power_cycles, 1,
        "the interrupted power cycle was not run again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_does_not_act_until_resumed() {
    use health_proto::v1 as pb;
    let agent = Agent::with_config(&config(&unresponsive("enforce", "all")), &[]);
    let mut client = agent.client().await;
    client
        .pause_remediation(pb::PauseRemediationRequest {
            device_id: String::new(),
            for_seconds: 0,
            reason: "e2e maintenance".into(),
        })
        .await
        .expect("pause");
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        steps(&agent, "loihi-0").is_empty(),
        "paused: nothing acts: {:?}",
        steps(&agent, "loihi-0")
    );
    let status = client
        .get_remediation(pb::GetRemediationRequest {
            device_id: "loihi-0".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert!(status.paused, "{status:?}");
    let d = &status.devices[0];
    assert!(d.blocked_by.starts_with("pause"), "{d:?}");
    client
        .resume_remediation(pb::ResumeRemediationRequest {
            device_id: String::new(),
        })
        .await
        .expect("resume");
    let agent_ref = &agent;
    tokio::task::block_in_place(|| wait_ladder_end(agent_ref, "loihi-0", "recovered", 0));
    let controls: Vec<String> = agent
        .audit_entries()
        .iter()
        .filter(|e| e["phase"] == "control")
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        controls.contains(&"remediation-pause".to_string())
            && controls.contains(&"remediation-resume".to_string()),
        "pause and resume are audited: {controls:?}"
    );
}

#[test]
fn the_embedded_default_throttles_an_overheating_board_and_restores_its_limit() {
    let agent = Agent::simulate(&["--node", "rem-heat"]);
    let limit_before = device(&agent, "loihi-0")["power_limit_watts"].as_f64();
    assert!(
        limit_before.is_some(),
        "a simulated board has a limit in force"
    );
    agent.ctl_ok(&["inject-fault", "loihi-0", "overheat"]);
    wait_ladder_end(&agent, "loihi-0", "recovered", 0);
    let entries = policy_entries(&agent, "loihi-0");
    let limits: Vec<&str> = entries
        .iter()
        .filter(|e| e["phase"] == "end")
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    // 70 % of the limit in force as a lease, then the previous limit back once the warning
    // stayed clear for the step's hold.
    assert_eq!(limits.len(), 2, "{limits:?}");
    let watts = |a: &str| -> f64 {
        a.trim_start_matches("set-power-limit ")
            .trim_end_matches(" W")
            .parse()
            .unwrap_or(f64::NAN)
    };
    let before = limit_before.unwrap();
    assert!(
        (watts(limits[0]) - 0.7 * before).abs() < 1e-6,
        "{limits:?} from {before}"
    );
    assert!(
        (watts(limits[1]) - before).abs() < 1e-6,
        "{limits:?} back to {before}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["phase"] == "begin")
            .all(|e| e["trigger"]
                .as_str()
                .unwrap_or_default()
                .contains("THERMAL_WARNING")),
        "{entries:?}"
    );
    agent.ctl_ok(&["inject-fault", "loihi-0", "clear"]);
}

#[test]
fn a_stuck_simulation_is_terminated_by_its_policy() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("sleep");
    let ngspice = dir.path().join("ngspice");
    symlink(sleep, &ngspice).unwrap();
    let agent = Agent::with_config(
        &config(
            r#"
[host]
interval = "200ms"

[[process]]
name = "ngspice"
comm = "ngspice"
max_runtime = "1s"

[[policy]]
name = "stuck-process"
match = { codes = ["PROCESS_STUCK"], severity = "warning" }
without_collector = "all"
steps = [
  { action = "kill-process", signal = "TERM", escalate_after = "10s", hold = "1s", timeout = "20s" },
]
"#,
        ),
        &[],
    );
    let mut run = health_e2e::Proc {
        child: std::process::Command::new(&ngspice)
            .arg("300")
            .spawn()
            .unwrap(),
        name: "fake ngspice",
    };
    let subject = format!("process:ngspice:{}", run.child.id());
    wait_ladder_end(&agent, &subject, "recovered", 0);
    let status = run.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "the stuck run was terminated");
    let begun: Vec<String> = agent
        .audit_entries()
        .iter()
        .filter(|e| e["phase"] == "begin" && e["caller"] == "policy:stuck-process")
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(begun.len(), 1, "one kill, of one pid: {begun:?}");
    assert!(
        begun[0].starts_with(&format!("kill-process {} TERM", run.child.id())),
        "{begun:?}"
    );
}

#[test]
fn a_pause_holds_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit = audit.to_str().unwrap();
    // Both runs write the same log, outside the harness's directory: read it here.
    let entries = || -> Vec<Value> {
        std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let policy_begins = || {
        entries()
            .iter()
            .filter(|e| e["phase"] == "begin" && e["caller"] == "policy:unresponsive")
            .count()
    };
    let cfg = config(&unresponsive("enforce", "all"));
    let first = Agent::with_config(&cfg, &["--audit-log", audit]);
    first.ctl_ok(&["remediation", "pause", "--reason", "e2e maintenance"]);
    first.proc.signal(nix::sys::signal::Signal::SIGTERM);
    drop(first);

    let second = Agent::with_config(&cfg, &["--audit-log", audit]);
    second.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    wait_for("DEVICE_UNRESPONSIVE", LIMIT, || {
        codes(&device(&second, "loihi-0"))
            .contains(&"DEVICE_UNRESPONSIVE".to_string())
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(policy_begins(), 0, "still paused after the restart");
    let shown = second.ctl_ok(&["--json", "remediation"]);
    assert!(shown.contains("e2e maintenance"), "{shown}");
    second.ctl_ok(&["remediation", "resume"]);
    wait_for("the ladder to recover the board", LIMIT, || {
        entries()
            .iter()
            .any(|e| e["action"] == "ladder-end" && e["args"]["result"] == "recovered")
            .then_some(())
    });
    assert!(policy_begins() >= 1);
}

#[test]
fn a_skipped_step_is_not_escalated_past() {
    // A SpiNNaker board cannot calibrate: the first step is skipped, and the hard reset after
    // it is not taken on its account. Nothing ran, so nothing is exhausted.
    let agent = Agent::with_config(
        r#"report_interval = "200ms"

[remediation]
interval = "100ms"

[[device]]
id = "spinnaker-0"
kind = "spinnaker"
backend = "sim"
poll_interval = "200ms"
deadline = "500ms"
action_deadline = "3s"

[[policy]]
name = "unresponsive"
match = { codes = ["DEVICE_UNRESPONSIVE"], severity = "critical" }
without_collector = "all"
steps = [
  { action = "calibrate",  hold = "1s", timeout = "5s" },
  { action = "reset-hard", hold = "1s", timeout = "5s" },
]
"#,
        &[],
    );
    agent.ctl_ok(&["inject-fault", "spinnaker-0", "hang"]);
    wait_ladder_end(&agent, "spinnaker-0", "not-applicable", 0);
    let s = steps(&agent, "spinnaker-0");
    assert_eq!(
        s.iter()
            .map(|(p, a, _)| (p.as_str(), a.as_str()))
            .collect::<Vec<_>>(),
        [("skipped", "calibrate"), ("skipped", "reset-hard")],
        "{s:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        steps(&agent, "spinnaker-0").len(),
        2,
        "not walked again while the condition holds"
    );
    let d = device(&agent, "spinnaker-0");
    assert!(
        !codes(&d).contains(&"REMEDIATION_EXHAUSTED".to_string()),
        "{d}"
    );
}

#[test]
fn a_shadow_policy_whose_condition_returns_starts_afresh_and_pages_no_one() {
    let agent = Agent::with_config(
        &config(
            r#"
[[policy]]
name = "unresponsive"
match = { codes = ["DEVICE_UNRESPONSIVE"], severity = "critical" }
mode = "shadow"
healthy_delay = "10m"
steps = [
  { action = "reset-soft", hold = "1s", timeout = "20s" },
]
"#,
        ),
        &[],
    );
    for round in 0..2 {
        agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
        wait_for("the shadow step", LIMIT, || {
            (steps(&agent, "loihi-0").len() > round).then_some(())
        });
        // The fault goes away by itself: the shadow policy's figure.
        agent.ctl_ok(&["inject-fault", "loihi-0", "clear"]);
        wait_ladder_end(&agent, "loihi-0", "recovered", round);
    }
    let starts = policy_entries(&agent, "loihi-0")
        .iter()
        .filter(|e| e["action"] == "ladder-start")
        .count();
    assert_eq!(
        starts, 2,
        "a new shadow ladder each time, never a continuation"
    );
    let d = device(&agent, "loihi-0");
    assert!(
        !codes(&d).contains(&"REMEDIATION_EXHAUSTED".to_string()),
        "{d}"
    );
    let shown = agent.ctl_ok(&["--json", "remediation"]);
    let v: Value = serde_json::from_str(&shown).unwrap();
    let p = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["policy"] == "unresponsive")
        .unwrap()
        .clone();
    assert_eq!(p["cleared_by_itself"], 2, "{p}");
    assert_eq!(p["ladders_started"], 2, "{p}");
}
