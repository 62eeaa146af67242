//! Maintenance windows end to end, on the real agent and agent-ctl binaries with the embedded
//! simulated node (whose enforce policies throttle an overheating board): a device in
//! maintenance is not acted on while its condition shows, the audit says why once, and its
//! policy acts as soon as the window ends; a window ends by itself at `until` (recorded by
//! the agent) and survives a restart; bad requests exit non-zero with the agent's message.
//!
//! What the agent did is read from its audit log and agent-ctl's `--json`, the evidence an
//! operator has.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use health_e2e::{output_text, wait_for, Agent};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn device(agent: &Agent, id: &str) -> Value {
    json(&agent.ctl_ok(&["--json", "device", id]))
}

fn has_condition(d: &Value, code: &str) -> bool {
    d["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["code"] == code))
}

/// Audit entries matching `f`, from `entries`.
fn matching(entries: &[Value], f: impl Fn(&Value) -> bool) -> Vec<Value> {
    entries.iter().filter(|e| f(e)).cloned().collect()
}

fn policy_begins(entries: &[Value], target: &str) -> usize {
    matching(entries, |e| {
        e["phase"] == "begin"
            && e["target"] == target
            && e["caller"]
                .as_str()
                .is_some_and(|c| c.starts_with("policy:"))
    })
    .len()
}

#[test]
fn a_device_in_maintenance_is_not_acted_on_until_the_window_ends() {
    let agent = Agent::simulate(&["--node", "maint-a"]);
    let started = json(&agent.ctl_ok(&[
        "--json",
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "10m",
        "--reason",
        "swap the fan",
    ]));
    assert_eq!(started["result"]["outcome"], "SUCCEEDED", "{started}");
    let hash = started["result"]["audit_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(hash.len(), 64, "{started}");
    assert_eq!(started["windows"][0]["subject"], "loihi-0", "{started}");

    agent.ctl_ok(&["inject-fault", "loihi-0", "overheat"]);
    wait_for("THERMAL_WARNING on loihi-0", LIMIT, || {
        has_condition(&device(&agent, "loihi-0"), "THERMAL_WARNING").then_some(())
    });
    // The hold is recorded once the policy would have started; then several remediation
    // passes and more than the policy's 2 s `for` go by without a step.
    let hold = |entries: &[Value]| {
        matching(entries, |e| {
            e["phase"] == "skipped" && e["action"] == "maintenance-hold" && e["target"] == "loihi-0"
        })
    };
    let first = wait_for("the audit to say why nothing acts", LIMIT, || {
        hold(&agent.audit_entries()).first().cloned()
    });
    let message = first["message"].as_str().unwrap();
    assert!(
        message.contains("thermal-warning")
            && message.contains("swap the fan")
            && message.contains("in maintenance until"),
        "{first}"
    );
    std::thread::sleep(Duration::from_secs(4));
    let entries = agent.audit_entries();
    assert_eq!(policy_begins(&entries, "loihi-0"), 0, "no policy acted");
    assert_eq!(
        hold(&entries).len(),
        1,
        "one entry per window, not one per pass"
    );

    // The condition still shows; the device and the node's status carry the window.
    let d = device(&agent, "loihi-0");
    assert!(has_condition(&d, "THERMAL_WARNING"), "{d}");
    let m = &d["maintenance"];
    assert_eq!(m["reason"], "swap the fan", "{d}");
    assert_eq!(m["source"], "operator", "{d}");
    assert_eq!(m["audit_hash"], hash.as_str(), "{d}");
    assert!(
        m["until"].is_string() && !m["by"].as_str().unwrap().is_empty(),
        "{d}"
    );
    let status = agent.ctl_ok(&["status"]);
    assert!(status.contains("MAINTENANCE loihi-0"), "{status}");
    let rem = agent.ctl_ok(&["--json", "remediation", "--device", "loihi-0"]);
    assert!(rem.contains("maintenance: in maintenance until"), "{rem}");

    // The action's audit hash is the hash of the line that recorded its result.
    let actions = json(&agent.ctl_ok(&["--json", "actions", "--device", "loihi-0"]));
    let start = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "maintenance-start")
        .expect("the start is an action");
    assert_eq!(start["audit_hash"], hash.as_str());
    let line = matching(&entries, |e| e["hash"] == hash.as_str());
    assert_eq!(line.len(), 1);
    assert_eq!(line[0]["phase"], "end");
    assert_eq!(line[0]["action"], "maintenance-start");

    // Ended: the policy looks again and throttles the board.
    let ended = json(&agent.ctl_ok(&["--json", "maintenance", "end", "--device", "loihi-0"]));
    assert_eq!(ended["result"]["outcome"], "SUCCEEDED", "{ended}");
    assert_eq!(ended["windows"], serde_json::json!([]), "{ended}");
    wait_for("the thermal policy to act", LIMIT, || {
        (policy_begins(&agent.audit_entries(), "loihi-0") > 0).then_some(())
    });
    assert!(device(&agent, "loihi-0")["maintenance"].is_null());
    agent.ctl_ok(&["inject-fault", "loihi-0", "clear"]);
}

#[test]
fn a_window_ends_by_itself_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let audit = audit.to_str().unwrap();
    let entries = || -> Vec<Value> {
        std::fs::read_to_string(audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let first = Agent::simulate(&["--node", "maint-b", "--audit-log", audit]);
    first.ctl_ok(&[
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "3s",
        "--reason",
        "short",
    ]);
    let node = json(&first.ctl_ok(&[
        "--json",
        "maintenance",
        "start",
        "--node",
        "--for",
        "1h",
        "--reason",
        "rack work",
    ]));
    let node_hash = node["result"]["audit_hash"].as_str().unwrap().to_string();
    // Extending keeps the start and records the new entry.
    let extended = json(&first.ctl_ok(&[
        "--json",
        "maintenance",
        "start",
        "--node",
        "--for",
        "2h",
        "--reason",
        "rack work, longer",
    ]));
    let node_window = &extended["windows"][0];
    assert_eq!(node_window["subject"], "node", "{extended}");
    assert_eq!(node_window["maintenance"]["reason"], "rack work, longer");
    assert_eq!(
        node_window["maintenance"]["started_at"],
        node["windows"][0]["maintenance"]["started_at"]
    );
    let extended_hash = extended["result"]["audit_hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(extended_hash, node_hash);
    let status = json(&first.ctl_ok(&["--json", "status"]));
    assert_eq!(
        status["maintenance"]["reason"], "rack work, longer",
        "{status}"
    );
    first.proc.signal(nix::sys::signal::Signal::SIGTERM);
    drop(first);

    let second = Agent::simulate(&["--node", "maint-b", "--audit-log", audit]);
    let listed = json(&second.ctl_ok(&["--json", "maintenance", "list"]));
    let node_window = &listed["windows"][0];
    assert_eq!(node_window["subject"], "node", "{listed}");
    assert_eq!(node_window["maintenance"]["reason"], "rack work, longer");
    assert_eq!(
        node_window["maintenance"]["audit_hash"],
        extended_hash.as_str()
    );
    // The 3 s window ends (before or after the restart) and the agent records it.
    let expired = wait_for("the short window to be recorded as ended", LIMIT, || {
        matching(&entries(), |e| {
            e["action"] == "maintenance-expired" && e["target"] == "loihi-0"
        })
        .first()
        .cloned()
    });
    assert_eq!(expired["caller"], "agent");
    assert_eq!(expired["phase"], "control");
    assert!(
        expired["message"].as_str().unwrap().contains("short"),
        "{expired}"
    );
    let listed = json(&second.ctl_ok(&["--json", "maintenance", "list"]));
    assert_eq!(listed["windows"].as_array().unwrap().len(), 1, "{listed}");
    assert!(device(&second, "loihi-0")["maintenance"].is_null());

    second.ctl_ok(&["maintenance", "end", "--node"]);
    let listed = json(&second.ctl_ok(&["--json", "maintenance", "list"]));
    assert_eq!(listed["windows"], serde_json::json!([]), "{listed}");
}

#[test]
fn bad_maintenance_requests_exit_non_zero_with_the_reason() {
    let agent = Agent::simulate(&["--node", "maint-c"]);
    let fails = |args: &[&str], code: i32, says: &[&str]| {
        let out = agent.ctl(args);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        for s in says {
            assert!(text.contains(s), "{args:?} should say {s:?}: {text}");
        }
    };
    let start = ["maintenance", "start", "--for", "1h", "--reason", "x"];
    fails(
        &[&start[..], &["--device", "nope"]].concat(),
        1,
        &["NotFound", "\"nope\""],
    );
    fails(
        &[&start[..], &["--device", "loihi-0", "--node"]].concat(),
        2,
        &["--node"],
    );
    fails(&start, 2, &["--device"]);
    fails(
        &[
            "maintenance",
            "start",
            "--device",
            "loihi-0",
            "--for",
            "25h",
            "--reason",
            "x",
        ],
        1,
        &["InvalidArgument", "max_maintenance", "86400"],
    );
    fails(
        &[
            "maintenance",
            "start",
            "--device",
            "loihi-0",
            "--for",
            "1h",
            "--reason",
            "",
        ],
        1,
        &["InvalidArgument", "reason"],
    );
    fails(
        &["maintenance", "end", "--device", "loihi-0"],
        1,
        &["NotFound", "no maintenance on loihi-0"],
    );
    fails(
        &[
            "maintenance",
            "start",
            "--device",
            "loihi-0",
            "--reason",
            "x",
        ],
        2,
        &["--for"],
    );
    // Each refusal by the agent is on record.
    let refused = agent
        .audit_entries()
        .iter()
        .filter(|e| {
            e["phase"] == "refused"
                && e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("maintenance"))
        })
        .count();
    assert_eq!(
        refused, 4,
        "unknown device, too long, no reason, nothing to end"
    );
}

#[test]
fn the_evidence_bundle_holds_the_windows_record_and_detects_a_change() {
    let agent = Agent::simulate(&["--node", "maint-d"]);
    agent.ctl_ok(&[
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "1h",
        "--reason",
        "evidence",
    ]);
    let out = agent.dir.path().join("evidence");
    let (out_s, audit) = (
        out.to_str().unwrap().to_string(),
        agent.dir.path().join("audit.jsonl"),
    );
    let audit_s = audit.to_str().unwrap();
    agent.ctl_ok(&[
        "evidence",
        "--out",
        &out_s,
        "--audit-file",
        audit_s,
        "--since",
        "1h",
    ]);
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    assert!(read("audit.jsonl").contains("maintenance-start"));
    let verification = json(&read("audit-verification.json"));
    assert_eq!(verification["chain"]["intact"], true, "{verification}");
    let node = json(&read("snapshot.json"));
    assert_eq!(node["node"], "maint-d");
    let dev = node["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "loihi-0")
        .unwrap();
    assert_eq!(dev["maintenance"]["reason"], "evidence");
    assert!(read("MANIFEST.sha256")
        .lines()
        .any(|l| l.ends_with("  snapshot.json")));
    let ok = agent.ctl_ok(&["evidence", "verify", &out_s]);
    assert!(ok.contains("files match"), "{ok}");
    // A second bundle into the same directory is refused rather than mixed in.
    assert_eq!(
        agent.ctl(&["evidence", "--out", &out_s]).status.code(),
        Some(1)
    );

    std::fs::write(out.join("snapshot.json"), "{}\n").unwrap();
    let bad = agent.ctl(&["evidence", "verify", &out_s]);
    assert_eq!(bad.status.code(), Some(1), "{}", output_text(&bad));
    assert!(
        output_text(&bad).contains("snapshot.json: changed"),
        "{}",
        output_text(&bad)
    );
}

#[test]
fn a_ladder_in_progress_stops_before_its_next_step_in_maintenance() {
    let cfg = r#"report_interval = "200ms"

[remediation]
interval = "100ms"

[[device]]
id = "loihi-0"
kind = "loihi2"
backend = "sim"
poll_interval = "200ms"
deadline = "500ms"
action_deadline = "3s"

[[policy]]
name = "unresponsive"
match = { codes = ["DEVICE_UNRESPONSIVE", "DEVICE_ERROR", "RESET_FAILED"], severity = "critical" }
without_collector = "all"
steps = [
  { action = "reset-soft",  hold = "1s", timeout = "5s" },
  { action = "reset-hard",  hold = "1s", timeout = "5s" },
]
"#;
    let agent = Agent::with_config(cfg, &[]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    let begun = |action: &str| {
        matching(&agent.audit_entries(), |e| {
            e["phase"] == "begin" && e["caller"] == "policy:unresponsive" && e["action"] == action
        })
        .len()
    };
    wait_for("the first step to begin", LIMIT, || {
        (begun("reset-soft") > 0).then_some(())
    });
    agent.ctl_ok(&[
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "10m",
        "--reason",
        "hands on",
    ]);
    wait_for("the hold to be recorded", LIMIT, || {
        matching(&agent.audit_entries(), |e| {
            e["action"] == "maintenance-hold"
        })
        .first()
        .cloned()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(begun("reset-hard"), 0, "no next step in maintenance");
    agent.ctl_ok(&["maintenance", "end", "--device", "loihi-0"]);
    wait_for("the ladder to go on", LIMIT, || {
        (begun("reset-hard") > 0).then_some(())
    });
}
