//! The collector's own alerting and history, end to end on the real binaries: a simulated
//! agent's fault fires an alert that reaches a real Alertmanager (Debian's
//! `prometheus-alertmanager`) over its v2 API and is resolved there; the history database
//! keeps conditions, alert transitions and actions across a collector restart; an unusable
//! history file stops the collector with an error naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use health_e2e::{bin, ctl, free_port, wait_for, wait_until, Alertmanager, Collector, Fleet, Proc};
use nix::sys::signal::Signal;
use serde_json::Value;

fn label<'a>(alert: &'a Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or_default()
}

/// The alert about `device` on `node` named `alertname`, if Alertmanager has it.
fn find<'a>(alerts: &'a [Value], alertname: &str, node: &str, device: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| {
        label(a, "alertname") == alertname
            && label(a, "node") == node
            && label(a, "device") == device
    })
}

fn ends_in_the_past(alert: &Value) -> bool {
    let ends = alert["endsAt"]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339_weak(at.trim_end_matches('Z')).ok())
        .unwrap_or_else(|| panic!("Alertmanager alert without a readable endsAt: {alert}"));
    ends <= SystemTime::now()
}

#[test]
fn alertmanager_gets_the_collectors_alert_firing_then_resolved() {
    let am = Alertmanager::start();
    // A firing alert is sent with endsAt = now + 4 x resend_interval (4 min here): if it is
    // gone from Alertmanager within the test's 30 s, the collector's resolve did it.
    let Fleet {
        agent,
        collector: _collector,
        ..
    } = Fleet::simulated(
        "e2e-am",
        &format!(
            "[alerts]\nalertmanager = [\"http://{}\"]\nresend_interval = \"1m\"\npush_timeout = \"2s\"\n\
             for = {{ DEVICE_UNRESPONSIVE = \"1s\" }}\n",
            am.addr
        ),
    );

    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);

    let firing = wait_for(
        "DeviceUnresponsive for e2e-am/loihi-0 in Alertmanager",
        Duration::from_secs(30),
        || find(&am.alerts(), "DeviceUnresponsive", "e2e-am", "loihi-0").cloned(),
    );
    assert_eq!(label(&firing, "severity"), "critical");
    assert_eq!(label(&firing, "code"), "DEVICE_UNRESPONSIVE");
    assert_eq!(label(&firing, "subject"), "loihi-0");
    assert_eq!(firing["status"]["state"], "active", "{firing}");
    assert!(!ends_in_the_past(&firing), "{firing}");
    assert!(
        firing["annotations"]["runbook"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{firing}"
    );

    // The fix: a hard reset brings the device back; the collector resolves the alert and
    // tells Alertmanager.
    agent.ctl_ok(&["reset-device", "loihi-0", "--hard", "--yes"]);
    wait_until(
        "the alert resolved in Alertmanager",
        Duration::from_secs(30),
        || {
            find(&am.alerts(), "DeviceUnresponsive", "e2e-am", "loihi-0")
                .is_none_or(ends_in_the_past)
        },
    );
}

fn history(addr: &str, node: &str) -> Vec<Value> {
    let out = ctl(&[
        "--collector",
        addr,
        "--json",
        "history",
        "--node",
        node,
        "--since",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "agent-ctl history: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(entries)) => entries,
        other => panic!("agent-ctl history --json: expected an array, got {other:?}"),
    }
}

fn has(entries: &[Value], kind: &str, name: &str, status: &str) -> bool {
    entries
        .iter()
        .any(|e| e["kind"] == kind && e["name"] == name && e["status"] == status)
}

#[test]
fn history_survives_a_collector_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    let config = format!(
        "history_path = \"{}\"\n[alerts]\nfor = {{ DEVICE_UNRESPONSIVE = \"0s\" }}\n",
        db.display()
    );
    let Fleet {
        mut collector,
        agent,
        ..
    } = Fleet::simulated("e2e-history", &config);
    let addr = collector.addr.clone();

    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    wait_until(
        "DEVICE_UNRESPONSIVE in the history",
        Duration::from_secs(20),
        || {
            has(
                &history(&addr, "e2e-history"),
                "condition",
                "DEVICE_UNRESPONSIVE",
                "ACTIVE",
            )
        },
    );
    agent.ctl_ok(&["reset-device", "loihi-0", "--hard", "--yes"]);
    wait_until(
        "the reset, the condition's end and the resolution in the history",
        Duration::from_secs(20),
        || {
            let entries = history(&addr, "e2e-history");
            has(&entries, "action", "reset-hard", "SUCCEEDED")
                && has(&entries, "condition", "DEVICE_UNRESPONSIVE", "ENDED")
                && has(&entries, "alert", "DeviceUnresponsive", "RESOLVED")
        },
    );

    // Stop the agent first, so nothing can write these rows again after the restart.
    drop(agent);
    collector.proc.signal(Signal::SIGTERM);
    let status = collector
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("the collector exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(collector);

    let restarted = Collector::start_on(&addr, &config);
    let entries = history(&restarted.addr, "e2e-history");
    assert!(
        has(&entries, "action", "reset-hard", "SUCCEEDED"),
        "{entries:?}"
    );
    assert!(
        has(&entries, "condition", "DEVICE_UNRESPONSIVE", "ENDED"),
        "{entries:?}"
    );
    assert!(
        has(&entries, "alert", "DeviceUnresponsive", "FIRING"),
        "{entries:?}"
    );
    assert!(
        has(&entries, "alert", "DeviceUnresponsive", "RESOLVED"),
        "{entries:?}"
    );

    // The table form, filtered by device.
    let out = ctl(&[
        "--collector",
        &restarted.addr,
        "history",
        "--device",
        "loihi-0",
    ]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("AT"), "{table}");
    assert!(table.contains("reset-hard"), "{table}");
}

/// Starts the collector with a config and expects it to exit non-zero; returns its stderr.
fn refused_start(config_text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{}\"\n{config_text}", free_port()),
    )
    .expect("write the config");
    let child = Command::new(bin("health-collector"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start health-collector");
    let mut proc = Proc {
        child,
        name: "health-collector",
    };
    let status = proc
        .wait_exit(Duration::from_secs(10))
        .expect("the collector exits by itself");
    assert!(!status.success(), "{status:?}");
    let mut stderr = String::new();
    if let Some(mut pipe) = proc.child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

fn history_config(path: &Path) -> String {
    format!("history_path = \"{}\"\n", path.display())
}

#[test]
fn an_unusable_history_file_stops_the_collector_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, vec![0x42_u8; 16384]).expect("write garbage");
    let stderr = refused_start(&history_config(&corrupt));
    assert!(stderr.contains(&corrupt.display().to_string()), "{stderr}");
    assert!(stderr.contains("not a usable SQLite database"), "{stderr}");

    // A path under a regular file cannot be created, whoever runs the test (root included).
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("write a file");
    let unwritable = blocker.join("history.db");
    let stderr = refused_start(&history_config(&unwritable));
    assert!(
        stderr.contains(&unwritable.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("cannot open"), "{stderr}");
}

#[test]
fn history_without_a_database_and_a_bad_since_are_clear_errors() {
    let collector = Collector::start("");
    let out = ctl(&["--collector", &collector.addr, "history"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FailedPrecondition"), "{stderr}");
    assert!(stderr.contains("history_path"), "{stderr}");

    let out = ctl(&[
        "--collector",
        &collector.addr,
        "history",
        "--since",
        "yesterday",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--since"), "{stderr}");
    assert!(stderr.contains("30m, 1h or 7d"), "{stderr}");
}

/// The first line `agent-ctl --json alerts` prints within `limit` that `wanted` accepts; the
/// watcher is stopped (by its own pid) either way.
fn alert_line_where(addr: &str, limit: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
    use std::io::BufRead as _;
    let child = Command::new(bin("agent-ctl"))
        .args(["--collector", addr, "--json", "alerts"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run agent-ctl alerts");
    let mut watcher = Proc {
        child,
        name: "agent-ctl",
    };
    let stdout = watcher.child.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = received.recv_timeout(left).ok()?;
        if let Ok(alert) = serde_json::from_str::<Value>(&line) {
            if wanted(&alert) {
                drop(watcher);
                return Some(alert);
            }
        }
    }
}

#[test]
fn priorities_reach_alertmanager_and_an_alert_firing_too_long_escalates() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("history.db");
    // DEVICE_UNRESPONSIVE is P1 by default; P1 escalates after 3 s here.
    let Fleet {
        agent, collector, ..
    } = Fleet::simulated(
        "e2e-prio",
        &format!(
            "history_path = \"{}\"\n\
             [alerts]\nalertmanager = [\"http://{}\"]\nresend_interval = \"1m\"\npush_timeout = \"2s\"\n\
             for = {{ DEVICE_UNRESPONSIVE = \"0s\" }}\n\
             [priorities]\nescalate_after = {{ P1 = \"3s\" }}\n",
            db.display(),
            am.addr
        ),
    );
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);
    let is_p1 = |a: &Value| {
        label(a, "alertname") == "DeviceUnresponsive"
            && label(a, "node") == "e2e-prio"
            && label(a, "priority") == "P1"
            && label(a, "escalated").is_empty()
    };
    let first = wait_for(
        "DeviceUnresponsive as P1 in Alertmanager",
        Duration::from_secs(30),
        || am.alerts().into_iter().find(|a| is_p1(a)),
    );
    assert_eq!(label(&first, "device"), "loihi-0", "{first}");

    // Re-sent one priority higher, escalated; the P1 label set is resolved in Alertmanager.
    let escalated = wait_for(
        "DeviceUnresponsive escalated to P0 in Alertmanager",
        Duration::from_secs(30),
        || {
            find(&am.alerts(), "DeviceUnresponsive", "e2e-prio", "loihi-0")
                .filter(|a| label(a, "escalated") == "true")
                .cloned()
        },
    );
    assert_eq!(label(&escalated, "priority"), "P0", "{escalated}");
    assert!(!ends_in_the_past(&escalated), "{escalated}");
    // Its P1 label set is resolved, not left to expire 4 resend intervals (4 min) later.
    wait_until(
        "the P1 (not escalated) alert resolved in Alertmanager",
        Duration::from_secs(30),
        || {
            am.alerts()
                .iter()
                .filter(|a| is_p1(a))
                .all(ends_in_the_past)
        },
    );

    // agent-ctl alerts shows the priority and the escalation.
    let shown = alert_line_where(&collector.addr, Duration::from_secs(20), |a| {
        a["node"] == "e2e-prio" && a["alertname"] == "DeviceUnresponsive"
    })
    .expect("agent-ctl alerts prints the escalated alert");
    assert_eq!(shown["priority"], "P0", "{shown}");
    assert_eq!(shown["escalated"], true, "{shown}");
    assert!(shown["escalated_at"].is_string(), "{shown}");

    // The history, oldest first: the alert fired as P1, then escalated to P0.
    let entries = wait_for(
        "the escalation in the history",
        Duration::from_secs(20),
        || {
            let out = ctl(&[
                "--collector",
                &collector.addr,
                "--json",
                "history",
                "--node",
                "e2e-prio",
                "--oldest-first",
            ]);
            assert!(out.status.success(), "{}", health_e2e::output_text(&out));
            let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(&out.stdout) else {
                panic!("agent-ctl history --json: expected an array");
            };
            entries
                .iter()
                .any(|e| e["kind"] == "escalation")
                .then_some(entries)
        },
    );
    let fired = entries
        .iter()
        .position(|e| {
            e["kind"] == "alert" && e["name"] == "DeviceUnresponsive" && e["status"] == "FIRING"
        })
        .expect("the firing in the history");
    let escalation = entries
        .iter()
        .position(|e| e["kind"] == "escalation")
        .expect("the escalation in the history");
    assert!(fired < escalation, "oldest first: {entries:?}");
    assert_eq!(entries[fired]["priority"], "P1", "{entries:?}");
    let step = &entries[escalation];
    assert_eq!(step["name"], "DeviceUnresponsive", "{step}");
    assert_eq!(step["priority"], "P0", "{step}");
    assert!(
        step["message"]
            .as_str()
            .is_some_and(|m| m.contains("from P1 to P0 after firing for 3s")),
        "{step}"
    );
    let at = |e: &Value| e["at"].as_str().map(str::to_string);
    assert!(at(&entries[fired]) <= at(step), "{entries:?}");

    // --until is exclusive and takes a duration: an hour ago, nothing of this test yet.
    let out = ctl(&[
        "--collector",
        &collector.addr,
        "--json",
        "history",
        "--node",
        "e2e-prio",
        "--until",
        "1h",
    ]);
    assert!(out.status.success(), "{}", health_e2e::output_text(&out));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).ok(),
        Some(Value::Array(Vec::new()))
    );
    // An empty window is a clear error naming the field.
    let out = ctl(&[
        "--collector",
        &collector.addr,
        "history",
        "--since",
        "1h",
        "--until",
        "2h",
    ]);
    assert!(!out.status.success());
    let text = health_e2e::output_text(&out);
    assert!(
        text.contains("QueryHistoryRequest.until: expected a time after since"),
        "{text}"
    );
}
