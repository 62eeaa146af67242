//! Who may do what on the agent's Unix socket, what the audit log records, and the action
//! safety rules (confirmation, dry run, idempotency keys, cooldown, resets per hour, one action
//! at a time), exercised through the real `health-agent` and `agent-ctl` binaries.
//!
//! The role test runs `agent-ctl` as other uids and gids (the kernel's SO_PEERCRED is what the
//! agent sees), which needs root. CI and the development machines run the tests as root; run
//! elsewhere, it fails saying so (skip it there with `--skip socket_roles`) rather than pass
//! with nothing tested.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use health_e2e::{output_text as text, sim_config, Agent, Fleet};
use serde_json::Value;

fn audit_path(agent: &Agent) -> PathBuf {
    agent.dir.path().join("audit.jsonl")
}

fn field<'a>(e: &'a Value, k: &str) -> &'a str {
    e.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The agent's AUDIT_LOG_UNWRITABLE condition, if it has one.
fn audit_condition(agent: &Agent) -> Option<Value> {
    let out = agent.ctl(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let node: Value = serde_json::from_slice(&out.stdout).expect("json");
    node["host"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["code"] == "AUDIT_LOG_UNWRITABLE")
        .cloned()
}

/// Fails the test, saying why, unless it runs as root.
fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root, and this runs as uid {}: run the tests as root (as CI does), or \
         skip this one with `cargo test -p health-e2e --test auth -- --skip socket_roles` \
         (the role mapping itself is unit-tested in agent/src/auth.rs)",
        nix::unistd::geteuid()
    );
}

/// `agent-ctl`, reachable by other uids: the build directory is under root's home, so the
/// binary is linked (or copied) into a world-readable directory.
struct CtlAs {
    _dir: tempfile::TempDir,
    bin: PathBuf,
}

impl CtlAs {
    fn new() -> CtlAs {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("agent-ctl");
        let src = health_e2e::bin("agent-ctl");
        if std::fs::hard_link(&src, &bin).is_err() {
            std::fs::copy(&src, &bin).expect("copy agent-ctl");
        }
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        CtlAs { _dir: dir, bin }
    }

    /// Runs agent-ctl as `uid`:`gid` with no supplementary groups.
    fn run(&self, uid: u32, gid: u32, agent: &Agent, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--endpoint")
            .arg(agent.endpoint())
            .args(args)
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .output()
            .expect("run agent-ctl")
    }
}

/// Lets other uids reach the socket inside the agent's private directory; the socket's own
/// mode and group are then the only gate.
fn open_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
}

const SOCKET_GID: u32 = 4242;
const OTHER_GID: u32 = 4243;
const OPERATOR_UID: u32 = 65533;
const READER_UID: u32 = 65534;
const NOBODY_UID: u32 = 65530;

#[test]
fn socket_roles_come_from_peer_credentials_and_denials_are_audited() {
    require_root("running agent-ctl as other uids and groups");
    let cfg = format!(
        "{}\n[auth]\nsocket_group = \"{SOCKET_GID}\"\noperator_uids = [{OPERATOR_UID}]\nreader_uids = [{READER_UID}]\n",
        sim_config("300ms", "1s", "500ms")
    );
    let agent = Agent::with_config(&cfg, &["--node", "auth-roles"]);
    open_dir(agent.dir.path());
    let ctl = CtlAs::new();

    // The socket: mode 0660, group from the config.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&agent.socket).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), SOCKET_GID, "socket group");

    // Outside the socket's group: the kernel refuses the connection.
    let out = ctl.run(READER_UID, OTHER_GID, &agent, &["devices"]);
    assert!(!out.status.success(), "{}", text(&out));

    // A reader reads, and is refused an action with PERMISSION_DENIED naming the role.
    let out = ctl.run(READER_UID, SOCKET_GID, &agent, &["devices"]);
    assert!(out.status.success(), "reader lists devices: {}", text(&out));
    assert!(text(&out).contains("xbar-0"), "{}", text(&out));
    let out = ctl.run(READER_UID, SOCKET_GID, &agent, &["calibrate", "xbar-0"]);
    assert!(!out.status.success(), "a reader must not calibrate");
    let t = text(&out);
    assert!(
        t.contains("operator role") && t.contains(&format!("uid {READER_UID}")),
        "{t}"
    );

    // A caller the policy does not know at all: no role, refused even for reads.
    let out = ctl.run(NOBODY_UID, SOCKET_GID, &agent, &["devices"]);
    assert!(!out.status.success(), "no role, no read: {}", text(&out));
    assert!(text(&out).contains("reader role"), "{}", text(&out));

    // An operator acts.
    let out = ctl.run(OPERATOR_UID, SOCKET_GID, &agent, &["calibrate", "xbar-0"]);
    assert!(out.status.success(), "operator calibrates: {}", text(&out));

    let entries = agent.audit_entries();
    let denied: Vec<&Value> = entries
        .iter()
        .filter(|e| field(e, "phase") == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "two denials recorded: {entries:#?}");
    assert!(field(denied[0], "caller").contains(&format!("uid {READER_UID}")));
    assert_eq!(field(denied[0], "role"), "reader");
    assert_eq!(field(denied[0], "target"), "xbar-0");
    assert!(field(denied[1], "caller").contains(&format!("uid {NOBODY_UID}")));
    assert!(field(denied[1], "action").contains("ListDevices"));
    let phases: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| field(e, "caller").contains(&format!("uid {OPERATOR_UID}")))
        .map(|e| (field(e, "phase"), field(e, "outcome")))
        .collect();
    assert_eq!(
        phases,
        vec![("begin", ""), ("end", "succeeded")],
        "{entries:#?}"
    );
    let out = health_e2e::ctl(&[
        "audit",
        "--verify",
        "--file",
        audit_path(&agent).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn an_unwritable_audit_log_refuses_the_action_and_the_device_is_untouched() {
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let agent = Agent::with_config(
        &sim_config("200ms", "1s", "500ms"),
        &["--node", "auth-full", "--audit-log", "/dev/full"],
    );
    // Opening /dev/full works; only a write shows the disk is full.
    assert_eq!(audit_condition(&agent), None);
    let out = agent.ctl(&["disable", "xbar-0"]);
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("not started") && t.contains("/dev/full"), "{t}");
    // Operators see why before they next need to act.
    let c = audit_condition(&agent).expect("AUDIT_LOG_UNWRITABLE after the failed write");
    assert_eq!(c["severity"], "WARNING", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or("")
            .contains("No space left"),
        "{c}"
    );
    // Never run unrecorded: the device is still enabled.
    let out = agent.ctl(&["--json", "device", "xbar-0"]);
    assert!(out.status.success(), "{}", text(&out));
    let dev: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(dev.get("enabled"), Some(&Value::Bool(true)), "{dev}");
    // A log whose path is a directory: the same.
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::with_config(
        &sim_config("200ms", "1s", "500ms"),
        &[
            "--node",
            "auth-dir",
            "--audit-log",
            dir.path().to_str().unwrap(),
        ],
    );
    // Here the open fails at start: the condition is there before anyone acts.
    let c = audit_condition(&agent).expect("AUDIT_LOG_UNWRITABLE from the start");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or("")
            .contains("Is a directory"),
        "{c}"
    );
    let out = agent.ctl(&["calibrate", "xbar-0"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not started"), "{}", text(&out));
}

#[test]
fn hard_resets_need_yes_and_a_dry_run_touches_nothing() {
    let agent = Agent::with_config(&sim_config("200ms", "1s", "500ms"), &["--node", "auth-yes"]);
    let out = agent.ctl(&["reset-device", "xbar-0", "--hard"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--yes"), "{}", text(&out));
    let out = agent.ctl(&["reset-device", "xbar-0", "--power-cycle", "--dry-run"]);
    assert!(!out.status.success(), "a dry run checks confirmation too");

    let out = agent.ctl(&[
        "--json",
        "reset-device",
        "xbar-0",
        "--hard",
        "--yes",
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r.get("dry_run"), Some(&Value::Bool(true)), "{r}");
    assert!(field(&r, "message").contains("would"), "{r}");

    let entries = agent.audit_entries();
    let phases: Vec<&str> = entries.iter().map(|e| field(e, "phase")).collect();
    assert_eq!(
        phases,
        vec!["refused", "refused", "dry-run"],
        "{entries:#?}"
    );
    // Nothing reached the device: no action began.
    assert!(!phases.contains(&"begin"));
    let out = agent.ctl(&["reset-device", "xbar-0", "--hard", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let entries = agent.audit_entries();
    let last: Vec<&str> = entries[3..].iter().map(|e| field(e, "phase")).collect();
    assert_eq!(last, vec!["begin", "end"]);
    assert_eq!(field(&entries[3], "action"), "reset-hard");
    assert_eq!(
        entries[3].get("args"),
        Some(&serde_json::json!({"kind": "hard"}))
    );
}

#[test]
fn a_retried_idempotency_key_resets_once() {
    let agent = Agent::with_config(
        &sim_config("200ms", "1s", "500ms"),
        &["--node", "auth-idem"],
    );
    let run = || {
        agent.ctl(&[
            "--json",
            "--idempotency-key",
            "ticket-4711",
            "reset-device",
            "xbar-0",
            "--soft",
        ])
    };
    let first = run();
    assert!(first.status.success(), "{}", text(&first));
    let second = run();
    assert!(second.status.success(), "{}", text(&second));
    let a: Value = serde_json::from_slice(&first.stdout).unwrap();
    let b: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(a.get("replayed"), Some(&Value::Bool(false)), "{a}");
    assert_eq!(b.get("replayed"), Some(&Value::Bool(true)), "{b}");
    assert_eq!(field(&a, "action_id"), field(&b, "action_id"));
    let begins = agent
        .audit_entries()
        .iter()
        .filter(|e| field(e, "phase") == "begin" && field(e, "idempotency_key") == "ticket-4711")
        .count();
    assert_eq!(begins, 1, "the reset ran once");
    // The same key for another request is an error, not a silent replay.
    let out = agent.ctl(&[
        "--idempotency-key",
        "ticket-4711",
        "reset-device",
        "loihi-0",
        "--soft",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("different request"), "{}", text(&out));
}

#[test]
fn cooldown_hourly_reset_limit_and_one_action_at_a_time() {
    let mut cfg = sim_config("200ms", "5s", "500ms");
    cfg.push_str("\n[safety]\nmax_resets_per_hour = 2\n");
    // A cooldown on one device only.
    cfg = cfg.replace(
        "id = \"photonic-0\"\n",
        "id = \"photonic-0\"\ncooldown = \"1h\"\n",
    );
    let agent = Agent::with_config(&cfg, &["--node", "auth-limits"]);

    for _ in 0..2 {
        let out = agent.ctl(&["reset-device", "xbar-0", "--soft"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = agent.ctl(&["reset-device", "xbar-0", "--soft"]);
    assert!(!out.status.success(), "third reset within the hour");
    let t = text(&out);
    assert!(
        t.contains("max_resets_per_hour 2") && t.contains("allowed in"),
        "{t}"
    );
    // Not a reset: the hourly reset cap does not apply.
    let out = agent.ctl(&["calibrate", "xbar-0"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = agent.ctl(&["calibrate", "photonic-0"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = agent.ctl(&["calibrate", "photonic-0"]);
    assert!(!out.status.success(), "within the cooldown");
    assert!(text(&out).contains("cooldown"), "{}", text(&out));

    // One action at a time: the Loihi simulator's power cycle takes 2.5 s.
    let cycle = agent.begin_power_cycle("loihi-0");
    let out = agent.ctl(&["calibrate", "loihi-0"]);
    assert!(!out.status.success(), "a second action while one runs");
    let t = text(&out);
    assert!(t.contains("busy") && t.contains("reset-power-cycle"), "{t}");
    let cycle = cycle.join().unwrap();
    assert!(cycle.status.success(), "{}", text(&cycle));

    let refused = agent
        .audit_entries()
        .iter()
        .filter(|e| field(e, "phase") == "refused")
        .count();
    assert_eq!(refused, 3, "every refusal is on record");
}

#[test]
fn agent_ctl_audit_shows_the_log_and_verify_finds_an_edited_line() {
    let agent = Agent::with_config(
        &sim_config("200ms", "1s", "500ms"),
        &["--node", "auth-chain"],
    );
    for args in [
        &["calibrate", "xbar-0"][..],
        &["set-power-limit", "loihi-0", "20"],
        &["disable", "photonic-0"],
        &["enable", "photonic-0"],
    ] {
        let out = agent.ctl(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    let path = audit_path(&agent);
    let file = path.to_str().unwrap();
    let out = health_e2e::ctl(&["audit", "--verify", "--file", file]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("8 entries, chain intact"),
        "{}",
        text(&out)
    );
    let out = health_e2e::ctl(&["audit", "--file", file, "--tail", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("enable") && !shown.contains("calibrate"),
        "{shown}"
    );

    // Read while an entry is half written: the entries so far verify, and the half line is
    // named, not checked.
    let log = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, log.clone() + "{\"seq\":9,\"ti").unwrap();
    let out = health_e2e::ctl(&["audit", "--verify", "--file", file]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("8 entries, chain intact; line 9 (12 bytes) has no newline yet"),
        "{}",
        text(&out)
    );

    // Someone rewrites history: the power limit was "really" 200 W.
    assert!(log.contains("\"watts\":20.0"), "{log}");
    std::fs::write(&path, log.replacen("\"watts\":20.0", "\"watts\":200.0", 1)).unwrap();
    let out = health_e2e::ctl(&["audit", "--verify", "--file", file]);
    assert!(!out.status.success(), "an edit must break the chain");
    assert!(text(&out).contains("line 3"), "{}", text(&out));

    // A removed line breaks it too.
    let kept: Vec<&str> = log.lines().filter(|l| !l.contains("disable")).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let out = health_e2e::ctl(&["audit", "--verify", "--file", file]);
    assert!(!out.status.success(), "a removal must break the chain");
    assert!(text(&out).contains("prev_hash"), "{}", text(&out));
}

#[test]
fn a_log_cut_short_verifies_alone_but_not_against_the_head_the_collector_holds() {
    let Fleet {
        collector, agent, ..
    } = Fleet::with_agent_config("auth-head", "", &sim_config("200ms", "1s", "200ms"));
    let url = collector.url();
    agent.ctl_ok(&["calibrate", "xbar-0"]);
    agent.ctl_ok(&["disable", "photonic-0"]);
    // The collector hears of the newest entry with the next report.
    let rt = tokio::runtime::Runtime::new().unwrap();
    health_e2e::wait_until(
        "the audit head at the collector",
        Duration::from_secs(10),
        || {
            rt.block_on(collector.fleet_node("auth-head"))
                .and_then(|n| n.snapshot?.agent?.audit_head)
                .is_some_and(|h| h.seq == 4)
        },
    );
    let path = audit_path(&agent);
    let file = path.to_str().unwrap();
    let against_collector = || {
        health_e2e::ctl(&[
            "--collector",
            &url,
            "audit",
            "--verify",
            "--file",
            file,
            "--node",
            "auth-head",
        ])
    };
    let out = against_collector();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("holds entry 4"), "{}", text(&out));

    // Someone removes the disable from the record: the two last lines.
    let log = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = log.lines().take(2).collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let out = health_e2e::ctl(&["audit", "--verify", "--file", file]);
    assert!(
        out.status.success(),
        "a chain cut at its end is still a valid chain: {}",
        text(&out)
    );
    let out = against_collector();
    assert!(
        !out.status.success(),
        "the collector's head exposes the cut"
    );
    let t = text(&out);
    assert!(
        t.contains("no entry 4") && t.contains("ends at entry 2") && t.contains("cut off"),
        "{t}"
    );

    // The real head line put back without its newline: `--verify` does not check such a line,
    // so it cannot stand for the head either.
    let head_line = log.lines().nth(3).expect("entry 4");
    std::fs::write(&path, kept.join("\n") + "\n" + head_line).unwrap();
    let alone = health_e2e::ctl(&["audit", "--verify", "--file", file]);
    assert!(alone.status.success(), "{}", text(&alone));
    assert!(
        text(&alone).contains("has no newline yet"),
        "{}",
        text(&alone)
    );
    let out = against_collector();
    assert!(
        !out.status.success(),
        "an unterminated copy of the head line is not the head: {}",
        text(&out)
    );
    assert!(text(&out).contains("no entry 4"), "{}", text(&out));
}

#[test]
fn an_idempotency_key_outlives_an_agent_restart() {
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("audit.jsonl");
    let log_arg = log.to_str().unwrap().to_string();
    let start = |node: &str| {
        Agent::with_config(
            &sim_config("200ms", "1s", "500ms"),
            &["--node", node, "--audit-log", &log_arg],
        )
    };
    let stop = |mut agent: Agent| {
        agent.proc.signal(nix::sys::signal::Signal::SIGTERM);
        assert!(agent
            .proc
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()));
    };
    let keyed = |agent: &Agent, key: &str| {
        agent.ctl(&[
            "--json",
            "--idempotency-key",
            key,
            "reset-device",
            "xbar-0",
            "--soft",
        ])
    };
    let agent = start("auth-restart");
    let first = keyed(&agent, "change-981");
    assert!(first.status.success(), "{}", text(&first));
    stop(agent);

    // The client retries after the agent came back (it restarted, the reply was lost).
    let agent = start("auth-restart");
    let retry = keyed(&agent, "change-981");
    assert!(retry.status.success(), "{}", text(&retry));
    let a: Value = serde_json::from_slice(&first.stdout).unwrap();
    let b: Value = serde_json::from_slice(&retry.stdout).unwrap();
    assert_eq!(b.get("replayed"), Some(&Value::Bool(true)), "{b}");
    assert_eq!(field(&a, "action_id"), field(&b, "action_id"));
    let text_log = std::fs::read_to_string(&log).unwrap();
    let begins = text_log
        .lines()
        .filter(|l| l.contains("\"phase\":\"begin\"") && l.contains("change-981"))
        .count();
    assert_eq!(
        begins, 1,
        "the reset ran once across the restart:\n{text_log}"
    );

    // An action whose end never made it to disk (the agent died mid-reset): a retry is refused,
    // not guessed at. Simulated by a second keyed reset whose end line is cut off.
    let second = keyed(&agent, "change-982");
    assert!(second.status.success(), "{}", text(&second));
    stop(agent);
    let text_log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text_log.lines().collect();
    assert!(lines[lines.len() - 1].contains("\"phase\":\"end\""));
    std::fs::write(&log, lines[..lines.len() - 1].join("\n") + "\n").unwrap();
    let agent = start("auth-restart");
    let retry = keyed(&agent, "change-982");
    assert!(!retry.status.success(), "{}", text(&retry));
    assert!(
        text(&retry).contains("end is not on record"),
        "{}",
        text(&retry)
    );
}

#[test]
fn repeated_refusals_raise_access_denied_on_the_host_naming_the_caller() {
    require_root("running agent-ctl as another uid");
    let cfg = format!(
        "{}\n[safety]\naccess_denied_count = 3\naccess_denied_window = \"10m\"\n\n[auth]\nsocket_group = \"{SOCKET_GID}\"\nreader_uids = [{READER_UID}]\n",
        sim_config("300ms", "1s", "300ms")
    );
    let agent = Agent::with_config(&cfg, &["--node", "auth-denied"]);
    open_dir(agent.dir.path());
    let ctl = CtlAs::new();
    let host_codes = |agent: &Agent| -> Vec<String> {
        let status: Value = serde_json::from_str(&agent.ctl_ok(&["--json", "status"])).unwrap();
        status["host"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| format!("{} {}", field(c, "code"), field(c, "message")))
            .collect()
    };
    for _ in 0..2 {
        let out = ctl.run(READER_UID, SOCKET_GID, &agent, &["calibrate", "xbar-0"]);
        assert!(!out.status.success());
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        !host_codes(&agent)
            .iter()
            .any(|c| c.starts_with("ACCESS_DENIED")),
        "two refusals are under the threshold"
    );
    let out = ctl.run(READER_UID, SOCKET_GID, &agent, &["calibrate", "xbar-0"]);
    assert!(!out.status.success());
    health_e2e::wait_until(
        "ACCESS_DENIED on the host",
        std::time::Duration::from_secs(10),
        || {
            host_codes(&agent)
                .iter()
                .any(|c| c.starts_with("ACCESS_DENIED") && c.contains(&format!("uid {READER_UID}")))
        },
    );
}
