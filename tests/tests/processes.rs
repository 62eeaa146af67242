//! The process watchdog on the real agent binary with real processes this test starts: a fake
//! `ngspice` (`sleep` run through a symlink named ngspice, so the kernel calls it ngspice) that
//! overruns its limit, one that ignores SIGTERM, a zombie whose parent never reaps it, and an
//! expected service that is absent and then appears. Only processes started here are ever
//! signalled, by this test or by the agent at this test's request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use health_e2e::{wait_until, Agent, Proc};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;

fn sleep_bin() -> PathBuf {
    ["/usr/bin/sleep", "/bin/sleep"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("sleep from coreutils")
}

/// `dir/name` → sleep: a process started through it has `comm` = name.
fn fake(dir: &Path, name: &str) -> PathBuf {
    let link = dir.join(name);
    symlink(sleep_bin(), &link).expect("symlink");
    link
}

fn start(cmd: &mut Command, name: &'static str) -> Proc {
    let child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    Proc { child, name }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(agent: &Agent, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend(args);
    let out = agent.ctl(&all);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("agent-ctl --json prints JSON")
}

/// Host conditions as (code, subject).
fn conditions(agent: &Agent) -> Vec<(String, String)> {
    json(agent, &["status"])["host"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap_or_default().to_string(),
                c["subject"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn has(agent: &Agent, code: &str, subject: &str) -> bool {
    conditions(agent)
        .iter()
        .any(|(c, s)| c == code && s == subject)
}

fn listed(agent: &Agent, pid: u32) -> Option<Value> {
    json(agent, &["processes"])
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["pid"].as_u64() == Some(u64::from(pid)))
        .cloned()
}

fn alive(p: &mut Proc) -> bool {
    matches!(p.child.try_wait(), Ok(None))
}

const LIMIT: Duration = Duration::from_secs(20);

fn agent(extra: &str) -> Agent {
    Agent::with_config(
        &format!(
            "report_interval = \"200ms\"\n[host]\ninterval = \"200ms\"\n\n\
             [[process]]\nname = \"ngspice\"\ncomm = \"ngspice\"\nmax_runtime = \"1s\"\n{extra}"
        ),
        &[],
    )
}

#[test]
fn a_stuck_run_is_reported_then_killed_and_the_kill_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ngspice = fake(dir.path(), "ngspice");
    let agent = agent("");
    let mut run = start(Command::new(&ngspice).arg("300"), "fake ngspice");
    let pid = run.child.id();
    let subject = format!("process:ngspice:{pid}");

    wait_until("PROCESS_STUCK for the fake ngspice", LIMIT, || {
        has(&agent, "PROCESS_STUCK", &subject)
    });
    let row = listed(&agent, pid).expect("listed");
    assert_eq!(row["name"], "ngspice");
    assert_eq!(row["comm"], "ngspice");
    assert_eq!(row["state"], "S", "sleep sleeps: {row}");
    assert!(
        row["runtime_seconds"].as_f64().unwrap_or(0.0) > 1.0,
        "{row}"
    );
    assert!(row["rss_bytes"].as_u64().unwrap_or(0) > 0, "{row}");
    assert!(
        row["command_line"]
            .as_str()
            .unwrap_or_default()
            .ends_with("ngspice 300"),
        "{row}"
    );
    let status = text(&agent.ctl(&["status"]));
    assert!(
        status.contains("PROCESS_STUCK") && status.contains(&format!("pid {pid} (ngspice)")),
        "{status}"
    );
    let table = text(&agent.ctl(&["processes"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(&pid.to_string()) && l.contains("PROCESS_STUCK")),
        "{table}"
    );

    let out = agent.ctl(&["kill-process", &pid.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("sent TERM; exited"),
        "the outcome says it exited: {}",
        text(&out)
    );
    assert!(
        run.wait_exit(Duration::from_secs(5)).is_some(),
        "the fake ngspice is gone"
    );
    wait_until("the condition to clear", LIMIT, || {
        !has(&agent, "PROCESS_STUCK", &subject) && listed(&agent, pid).is_none()
    });

    let actions = text(&agent.ctl(&["actions"]));
    let line = actions
        .lines()
        .find(|l| l.contains(&format!("kill-process {pid} TERM")))
        .unwrap_or_else(|| panic!("kill recorded: {actions}"));
    assert!(
        line.contains("SUCCEEDED") && line.contains("uid "),
        "{line}"
    );
}

#[test]
fn term_ignored_needs_escalation_and_unwatched_pids_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ngspice = fake(dir.path(), "ngspice");
    let agent = agent("");
    // SIG_IGN survives exec: this ngspice ignores TERM.
    let mut stubborn = start(
        Command::new("sh")
            .arg("-c")
            .arg(format!("trap '' TERM; exec '{}' 300", ngspice.display())),
        "TERM-ignoring ngspice",
    );
    let pid = stubborn.child.id();
    wait_until("the stubborn ngspice to be listed", LIMIT, || {
        listed(&agent, pid).is_some_and(|p| p["comm"] == "ngspice")
    });

    let out = agent.ctl(&["kill-process", &pid.to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("still running"), "{}", text(&out));
    assert!(alive(&mut stubborn), "TERM alone did not stop it");

    let out = agent.ctl(&["kill-process", &pid.to_string(), "--escalate-after", "1s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("sent TERM then KILL; exited"),
        "{}",
        text(&out)
    );
    assert!(stubborn.wait_exit(Duration::from_secs(5)).is_some());
    let kill = json(&agent, &["actions", "--limit", "1"])[0]["process_kill"].clone();
    assert_eq!(kill["exited"], true, "{kill}");
    assert_eq!(kill["signals_sent"], serde_json::json!(["TERM", "KILL"]));
    assert_eq!(kill["before"]["pid"].as_u64(), Some(u64::from(pid)));

    // A process no rule matches, started here: refused, recorded, and left alone.
    let mut bystander = start(Command::new(sleep_bin()).arg("300"), "plain sleep");
    let other = bystander.child.id().to_string();
    for (args, says) in [
        (
            vec!["kill-process", other.as_str()],
            "matches no [[process]] rule",
        ),
        (
            vec!["kill-process", other.as_str(), "--signal", "kill"],
            "matches no [[process]] rule",
        ),
        (vec!["kill-process", "1"], "above 1"),
        (
            vec!["kill-process", other.as_str(), "--signal", "hup"],
            "term or kill",
        ),
    ] {
        let out = agent.ctl(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(
        alive(&mut bystander),
        "an unwatched process is never signalled"
    );
    let actions = text(&agent.ctl(&["actions"]));
    assert!(
        actions
            .lines()
            .any(|l| l.contains(&format!("kill-process {other} KILL")) && l.contains("REFUSED")),
        "refusals are recorded: {actions}"
    );
}

#[test]
fn zombies_and_missing_services_are_conditions() {
    // Zombies whose parent dies are handed to us, so the test can reap them.
    nix::sys::prctl::set_child_subreaper(true).expect("become a subreaper");
    let dir = tempfile::tempdir().expect("tempdir");
    let ngspice = fake(dir.path(), "ngspice");
    let solver = fake(dir.path(), "pde-solver-svc");
    let agent = agent(&format!(
        "\n[[process]]\nname = \"solver\"\ncmdline = \"{}/pde-solver-svc *\"\nexpect_running = true\n",
        dir.path().display()
    ));

    wait_until("PROCESS_MISSING for the solver", LIMIT, || {
        has(&agent, "PROCESS_MISSING", "process:solver")
    });
    assert_eq!(json(&agent, &["status"])["host"]["state"], "CRITICAL");
    let table = text(&agent.ctl(&["processes"]));
    assert!(table.contains("process:solver PROCESS_MISSING"), "{table}");

    // The parent forks an ngspice that exits at once, then becomes a sleep that never waits.
    let mut parent = start(
        Command::new("sh").arg("-c").arg(format!(
            "'{}' 0 & exec '{}' 300",
            ngspice.display(),
            sleep_bin().display()
        )),
        "non-reaping parent",
    );
    let ppid = parent.child.id();
    let mut zombie = None;
    wait_until("PROCESS_ZOMBIE", LIMIT, || {
        zombie = json(&agent, &["processes"])
            .as_array()
            .expect("array")
            .iter()
            .find(|p| p["ppid"].as_u64() == Some(u64::from(ppid)) && p["state"] == "Z")
            .and_then(|p| p["pid"].as_u64());
        zombie.is_some_and(|z| has(&agent, "PROCESS_ZOMBIE", &format!("process:ngspice:{z}")))
    });
    let zpid = zombie.expect("zombie pid");
    let msg = json(&agent, &["status"])["host"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["code"] == "PROCESS_ZOMBIE")
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    assert!(msg.contains(&format!("parent pid {ppid}")), "{msg}");
    assert!(!has(
        &agent,
        "PROCESS_STUCK",
        &format!("process:ngspice:{zpid}")
    ));
    let out = agent.ctl(&["kill-process", &zpid.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("zombie"), "{}", text(&out));

    // The service appears: PROCESS_MISSING clears.
    let _svc = start(Command::new(&solver).arg("300"), "solver service");
    wait_until("PROCESS_MISSING to clear", LIMIT, || {
        !has(&agent, "PROCESS_MISSING", "process:solver")
    });

    // Ending the parent hands the zombie to us; reap it.
    let _ = parent.child.kill();
    let _ = parent.child.wait();
    let z = Pid::from_raw(zpid as i32);
    wait_until("the zombie to be reaped", LIMIT, || {
        !matches!(
            waitpid(z, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
    wait_until("PROCESS_ZOMBIE to clear", LIMIT, || {
        !has(&agent, "PROCESS_ZOMBIE", &format!("process:ngspice:{zpid}"))
    });
}
