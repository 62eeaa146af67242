//! The remediation engine as an operator drives it: the real `health-agent` with simulated
//! devices and an `approve` policy, and the real `agent-ctl remediation` showing the ladder
//! waiting for approval, approving it, and the device recovering; pauses of a device and of
//! the node, and their ends, as the status shows them; controls refused to a reader and when
//! nothing waits; the engine's steps on `/metrics`.
//!
//! The reader test runs `agent-ctl` as another uid (the agent sees it through SO_PEERCRED),
//! which needs root, as the role test in `auth.rs` does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use health_e2e::{
    free_port, output_text as text, promtool_check_metrics, scrape_metrics, sim_config, Agent,
};
use serde_json::Value;

/// One policy in `approve` mode whose only step is destructive, so the ladder must stop for
/// the operator before it touches the device.
fn approve_config(extra_top: &str) -> String {
    format!(
        "{extra_top}{}\n[remediation]\ninterval = \"100ms\"\n\n[[policy]]\nname = \"unresponsive\"\nmode = \"approve\"\nmatch = {{ codes = [\"DEVICE_UNRESPONSIVE\"], severity = \"warning\" }}\nfor = \"0s\"\nmax_attempts = 3\nwindow = \"15m\"\nwithout_collector = \"all\"\nsteps = [{{ action = \"reset-hard\", hold = \"1s\", timeout = \"20s\" }}]\n",
        sim_config("300ms", "1s", "500ms")
    )
}

/// `agent-ctl --json remediation [--device ID]`, parsed.
fn status(agent: &Agent, device: Option<&str>) -> Value {
    let mut args = vec!["--json", "remediation"];
    if let Some(d) = device {
        args.extend(["--device", d]);
    }
    serde_json::from_str(&agent.ctl_ok(&args)).expect("remediation --json prints JSON")
}

/// One device's entry in a status.
fn device<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["devices"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["device_id"] == id))
        .unwrap_or_else(|| panic!("{id} is not in the remediation status: {status:#}"))
}

/// Polls the device's status every 100 ms until `ready` holds; panics after `limit` with the
/// last status seen.
fn device_until(agent: &Agent, id: &str, limit: Duration, ready: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let s = status(agent, Some(id));
        let d = device(&s, id).clone();
        if ready(&d) {
            return d;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?}; {id}'s remediation: {d:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs agent-ctl expecting exit status 1; returns its one-line reason (stderr).
fn ctl_fails(agent: &Agent, args: &[&str]) -> String {
    let out = agent.ctl(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "agent-ctl {args:?} should fail: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[test]
fn an_approved_reset_recovers_the_hung_device_and_the_status_shows_each_stage() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let cfg = approve_config(&format!("metrics_listen = \"{metrics}\"\n"));
    let agent = Agent::with_config(&cfg, &["--node", "rem-approve"]);

    // Nothing waits yet: approving is refused, naming why; an unknown device is NOT_FOUND.
    let err = ctl_fails(&agent, &["remediation", "approve", "loihi-0"]);
    assert!(
        err.contains("FailedPrecondition")
            && err.contains("loihi-0 has no remediation step waiting for approval"),
        "{err}"
    );
    let err = ctl_fails(&agent, &["remediation", "approve", "no-such-device"]);
    assert!(
        err.contains("NotFound") && err.contains("no-such-device"),
        "{err}"
    );
    let err = ctl_fails(&agent, &["remediation", "clear", "loihi-0"]);
    assert!(
        err.contains("FailedPrecondition") && err.contains("no exhausted remediation ladder"),
        "{err}"
    );

    // Hang the device: the policy matches, and the ladder stops before the hard reset.
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    let waiting = device_until(&agent, "loihi-0", Duration::from_secs(20), |d| {
        d["blocked_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("approval"))
    });
    assert_eq!(waiting["policy"], "unresponsive", "{waiting:#}");
    assert_eq!(waiting["mode"], "approve", "{waiting:#}");
    assert_eq!(waiting["state"], "waiting", "{waiting:#}");
    assert_eq!(
        (&waiting["step"], &waiting["steps"], &waiting["step_action"]),
        (&Value::from(1), &Value::from(1), &Value::from("reset-hard")),
        "{waiting:#}"
    );
    assert_eq!(waiting["active"], true, "{waiting:#}");
    assert_eq!(waiting["attempts_in_window"], 1, "{waiting:#}");
    assert!(
        waiting["trigger"]
            .as_str()
            .is_some_and(|t| t.starts_with("DEVICE_UNRESPONSIVE")),
        "{waiting:#}"
    );
    assert_eq!(waiting["history"], Value::Array(vec![]), "{waiting:#}");
    // Waiting for approval, nothing has reset the device.
    let actions = agent.ctl_ok(&["--json", "actions", "--device", "loihi-0"]);
    assert!(!actions.contains("reset-hard"), "{actions}");
    // The text form says the same for people.
    let shown = agent.ctl_ok(&["remediation"]);
    assert!(
        shown.contains("loihi-0  policy unresponsive (approve)  state waiting (active)")
            && shown.contains("step 1/1 reset-hard")
            && shown.contains("blocked by: approval"),
        "{shown}"
    );

    // Approve: the reply is the status; the ladder takes the reset and the device recovers.
    let approved: Value =
        serde_json::from_str(&agent.ctl_ok(&["--json", "remediation", "approve", "loihi-0"]))
            .expect("approve --json prints the status");
    assert!(approved["devices"].is_array(), "{approved:#}");
    let recovered = device_until(&agent, "loihi-0", Duration::from_secs(30), |d| {
        d["state"] == "recovered"
    });
    let history = recovered["history"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{recovered:#}");
    assert_eq!(history[0]["action"], "reset-hard", "{recovered:#}");
    assert_eq!(history[0]["outcome"], "SUCCEEDED", "{recovered:#}");
    assert!(
        history[0]["action_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{recovered:#}"
    );
    assert_eq!(recovered["active"], false, "{recovered:#}");
    assert_eq!(recovered["blocked_by"], "", "{recovered:#}");
    let d: Value =
        serde_json::from_str(&agent.ctl_ok(&["--json", "device", "loihi-0"])).expect("json");
    assert_eq!(d["last_action"]["action"], "reset-hard", "{d:#}");
    assert_eq!(d["state"], "OK", "{d:#}");

    let all = status(&agent, None);
    let counts = all["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["policy"] == "unresponsive"))
        .expect("the policy's counts");
    assert_eq!(counts["ladders_started"], 1, "{all:#}");
    assert_eq!(counts["recovered"], 1, "{all:#}");

    // The approval is in the audit log, with the operator who gave it.
    let entries = agent.audit_entries();
    let approval = entries
        .iter()
        .find(|e| e["action"] == "remediation-approve" && e["outcome"] == "succeeded")
        .unwrap_or_else(|| panic!("no recorded approval: {entries:#?}"));
    assert_eq!(approval["target"], "loihi-0", "{approval:#}");
    assert!(
        approval["caller"]
            .as_str()
            .is_some_and(|c| c.contains("uid 0")),
        "{approval:#}"
    );

    // /metrics: the step by policy, action and outcome; no ladder under way any more.
    let scraped = scrape_metrics(&metrics);
    let step = scraped
        .lines()
        .find(|l| {
            l.starts_with("health_remediation_steps_total{")
                && l.contains("policy=\"unresponsive\"")
                && l.contains("action=\"reset-hard\"")
                && l.contains("outcome=\"SUCCEEDED\"")
        })
        .unwrap_or_else(|| panic!("no reset-hard step in the scrape:\n{scraped}"));
    assert!(step.ends_with(" 1"), "{step}");
    assert!(
        scraped.contains("# TYPE health_remediation_active gauge")
            && !scraped.contains("health_remediation_active{"),
        "{scraped}"
    );
    promtool_check_metrics("agent", &scraped);
}

#[test]
fn pauses_of_a_device_and_of_the_node_show_in_the_status_until_resumed() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let cfg = approve_config(&format!("metrics_listen = \"{metrics}\"\n"));
    let agent = Agent::with_config(&cfg, &["--node", "rem-pause"]);

    let before = status(&agent, None);
    assert_eq!(before["paused"], false, "{before:#}");
    assert_eq!(device(&before, "xbar-0")["paused"], false, "{before:#}");

    // One device, until resumed: the reply is the new status.
    let paused: Value = serde_json::from_str(&agent.ctl_ok(&[
        "--json",
        "remediation",
        "pause",
        "--device",
        "xbar-0",
        "--reason",
        "swapping the card",
    ]))
    .expect("pause --json prints the status");
    let x = device(&paused, "xbar-0");
    assert_eq!(x["paused"], true, "{paused:#}");
    assert_eq!(x["paused_until"], Value::Null, "until resumed: {paused:#}");
    assert_eq!(
        paused["paused"], false,
        "the node is not paused: {paused:#}"
    );

    // The whole node, for an hour.
    let t0 = std::time::SystemTime::now();
    let node: Value = serde_json::from_str(&agent.ctl_ok(&[
        "--json",
        "remediation",
        "pause",
        "--for",
        "1h",
        "--reason",
        "maintenance window",
    ]))
    .expect("json");
    assert_eq!(node["paused"], true, "{node:#}");
    assert_eq!(node["paused_reason"], "maintenance window", "{node:#}");
    let until = humantime::parse_rfc3339(node["paused_until"].as_str().expect("an end time"))
        .expect("RFC 3339");
    let ahead = until.duration_since(t0).expect("in the future");
    assert!(
        ahead > Duration::from_secs(3500) && ahead <= Duration::from_secs(3601),
        "paused until {ahead:?} from now"
    );
    let shown = agent.ctl_ok(&["remediation"]);
    assert!(
        shown.contains("node: automatic actions PAUSED until ")
            && shown.contains("(maintenance window)"),
        "{shown}"
    );

    // Resume the node, then the device: both show as running again.
    let resumed: Value =
        serde_json::from_str(&agent.ctl_ok(&["--json", "remediation", "resume"])).expect("json");
    assert_eq!(resumed["paused"], false, "{resumed:#}");
    assert_eq!(resumed["paused_until"], Value::Null, "{resumed:#}");
    assert_eq!(device(&resumed, "xbar-0")["paused"], true, "{resumed:#}");
    agent.ctl_ok(&["remediation", "resume", "--device", "xbar-0"]);
    let after = status(&agent, Some("xbar-0"));
    assert_eq!(device(&after, "xbar-0")["paused"], false, "{after:#}");
    assert_eq!(
        after["devices"].as_array().map(Vec::len),
        Some(1),
        "--device shows one device: {after:#}"
    );

    // Each control is audited.
    let actions: Vec<String> = agent
        .audit_entries()
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("remediation-"))
        })
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["target"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "remediation-pause xbar-0",
            "remediation-pause node",
            "remediation-resume node",
            "remediation-resume xbar-0"
        ],
    );

    // Arguments the agent would refuse are refused before anything is sent, naming the flag.
    let err = ctl_fails(&agent, &["remediation", "pause", "--for", "0s"]);
    assert!(err.contains("--for 0s: expected 1s to 30days"), "{err}");
    // A device that does not exist is NOT_FOUND.
    let err = ctl_fails(&agent, &["remediation", "--device", "nope"]);
    assert!(err.contains("NotFound") && err.contains("nope"), "{err}");
}

const SOCKET_GID: u32 = 4252;
const READER_UID: u32 = 65524;

/// `agent-ctl` where another uid can run it: the build directory is under root's home.
fn ctl_for_others() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("agent-ctl");
    let src = health_e2e::bin("agent-ctl");
    if std::fs::hard_link(&src, &bin).is_err() {
        std::fs::copy(&src, &bin).expect("copy agent-ctl");
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

fn run_as_reader(bin: &PathBuf, agent: &Agent, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--endpoint")
        .arg(agent.endpoint())
        .args(args)
        .uid(READER_UID)
        .gid(SOCKET_GID)
        .stdin(Stdio::null())
        .output()
        .expect("run agent-ctl")
}

#[test]
fn a_reader_sees_the_status_and_is_refused_every_control() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "running agent-ctl as another uid needs root: run the tests as root (as CI does), or \
         skip this one with `--skip a_reader_sees`"
    );
    let cfg = approve_config("").replace(
        "\n[remediation]",
        &format!("\n[auth]\nsocket_group = \"{SOCKET_GID}\"\nreader_uids = [{READER_UID}]\n\n[remediation]"),
    );
    let agent = Agent::with_config(&cfg, &["--node", "rem-reader"]);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    let (_dir, bin) = ctl_for_others();

    let out = run_as_reader(&bin, &agent, &["--json", "remediation"]);
    assert!(out.status.success(), "a reader reads: {}", text(&out));
    let s: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(s["devices"].is_array(), "{s:#}");

    for args in [
        &["remediation", "pause"][..],
        &["remediation", "resume", "--device", "xbar-0"],
        &["remediation", "approve", "loihi-0"],
        &["remediation", "clear", "loihi-0"],
    ] {
        let out = run_as_reader(&bin, &agent, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("PermissionDenied")
                && err.contains("needs the operator role")
                && err.contains(&format!("uid {READER_UID}")),
            "{args:?}: {err}"
        );
    }
    // Refused means unchanged: the node is not paused.
    assert_eq!(status(&agent, None)["paused"], false);
    let denied = agent
        .audit_entries()
        .iter()
        .filter(|e| e["phase"] == "denied" && e["role"] == "reader")
        .count();
    assert_eq!(denied, 4, "every refused control is recorded");
}

/// The device's pending approval ends when its condition clears by itself (no step taken).
#[test]
fn a_waiting_ladder_ends_without_acting_when_the_fault_clears() {
    let agent = Agent::with_config(&approve_config(""), &["--node", "rem-clears"]);
    agent.ctl_ok(&["inject-fault", "photonic-0", "hang"]);
    device_until(&agent, "photonic-0", Duration::from_secs(20), |d| {
        d["blocked_by"]
            .as_str()
            .is_some_and(|b| b.starts_with("approval"))
    });
    agent.ctl_ok(&["inject-fault", "photonic-0", "clear"]);
    let d = device_until(&agent, "photonic-0", Duration::from_secs(20), |d| {
        d["active"] == false
    });
    assert_eq!(
        d["history"],
        Value::Array(vec![]),
        "nothing was done: {d:#}"
    );
    let err = ctl_fails(&agent, &["remediation", "approve", "photonic-0"]);
    assert!(
        err.contains("no remediation step waiting for approval"),
        "{err}"
    );
}
