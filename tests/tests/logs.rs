//! Log rules and the host's kernel counters on the real agent binary: a `[[log]]` rule over a
//! glob in a temporary directory sees a line appended to a SPICE-style `.err` file, and keeps
//! seeing them through a rotation (rename away + new file) and a truncation; a fixture
//! `[host] proc_root` whose `vmstat` `oom_kill` this test raises gives HOST_OOM_KILL, shown by
//! `agent-ctl` and `/metrics` (checked by promtool).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use health_e2e::{free_port, promtool_check_metrics, scrape_metrics, wait_for, wait_until, Agent};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn host(agent: &Agent) -> Value {
    let out = agent.ctl(&["--json", "status"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("agent-ctl --json prints JSON");
    v["host"].clone()
}

fn condition(host: &Value, code: &str, subject: &str) -> Option<Value> {
    host["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["code"] == code && c["subject"] == subject)
        .cloned()
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

/// The rule's status once `check` holds for it.
fn rule_when(agent: &Agent, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, LIMIT, || {
        let h = host(agent);
        h["logs"]
            .as_array()
            .and_then(|l| l.iter().find(|r| r["name"] == "spice").cloned())
            .filter(|r| check(r))
    })
}

#[test]
fn an_err_line_raises_log_pattern_through_rotation_and_truncation() {
    let logs = tempfile::tempdir().unwrap();
    let err = logs.path().join("run.err");
    append(&err, "error written before the agent started\n");
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = Agent::with_config(
        &format!(
            "report_interval = \"200ms\"\nmetrics_listen = \"{metrics}\"\n\
             [host]\ninterval = \"200ms\"\n\n\
             [[log]]\nname = \"spice\"\npaths = [\"{}/*.err\"]\n\
             pattern = \"(?i)error|fatal|timestep too small|singular matrix\"\n\
             window = \"10m\"\nseverity = \"critical\"\n",
            logs.path().display()
        ),
        &[],
    );
    let err_path = err.display().to_string();
    let rule = rule_when(&agent, "the rule to follow run.err", |r| {
        r["files"]
            .as_array()
            .is_some_and(|f| f.contains(&Value::from(err_path.clone())))
    });
    assert_eq!(
        rule["matches_total"], 0,
        "lines from before the start are not read: {rule}"
    );
    assert!(condition(&host(&agent), "LOG_PATTERN", "log:spice").is_none());

    append(&err, "ERROR: timestep too small at t=1.2e-9\n");
    let c = wait_for("LOG_PATTERN for the appended line", LIMIT, || {
        condition(&host(&agent), "LOG_PATTERN", "log:spice")
    });
    assert_eq!(c["severity"], "CRITICAL", "{c}");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "in {err_path}; last: ERROR: timestep too small at t=1.2e-9"
        )),
        "{message}"
    );
    let status = text(&agent.ctl(&["status"]));
    assert!(
        status.contains("LOG_PATTERN")
            && status.contains("log spice: 1 matching in window, 1 total"),
        "{status}"
    );

    // Rotation: the file is renamed out of the glob and a new one takes its name.
    std::fs::rename(&err, logs.path().join("run.err.1")).unwrap();
    append(&err, "fatal: singular matrix\n");
    rule_when(&agent, "the match in the new file", |r| {
        r["matches_total"] == 2 && r["last_match"] == "fatal: singular matrix"
    });

    // Truncation: the file is cut shorter than where the agent had read to.
    for _ in 0..10 {
        append(&err, "step accepted\n");
    }
    rule_when(&agent, "the filler lines to be read", |r| {
        r["lines_total"] == 12
    });
    std::fs::write(&err, "error after truncation\n").unwrap();
    let rule = rule_when(&agent, "the match after the truncation", |r| {
        r["matches_total"] == 3 && r["last_match"] == "error after truncation"
    });
    assert_eq!(rule["lines_total"], 13, "{rule}");
    let c = condition(&host(&agent), "LOG_PATTERN", "log:spice").expect("still raised");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("last: error after truncation"),
        "{c}"
    );
    let body = wait_for("the matches in /metrics", LIMIT, || {
        let body = scrape_metrics(&metrics);
        body.lines()
            .any(|l| {
                l.starts_with("health_log_matches_total{")
                    && l.contains("rule=\"spice\"")
                    && l.ends_with(" 3")
            })
            .then_some(body)
    });
    promtool_check_metrics("agent /metrics with a log rule", &body);
}

fn write_proc(dir: &Path, oom_kill: u64) {
    std::fs::write(
        dir.join("vmstat"),
        format!("nr_free_pages 1000\noom_kill {oom_kill}\npgfault 5\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("stat"),
        "cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 100 0 50 1000 10 0 0 0 0 0\n",
    )
    .unwrap();
}

#[test]
fn an_oom_kill_counter_rise_raises_host_oom_kill() {
    let proc_root = tempfile::tempdir().unwrap();
    write_proc(proc_root.path(), 3);
    let metrics = format!("127.0.0.1:{}", free_port());
    let agent = Agent::with_config(
        &format!(
            "report_interval = \"200ms\"\nmetrics_listen = \"{metrics}\"\n\
             [host]\ninterval = \"200ms\"\nproc_root = \"{}\"\n",
            proc_root.path().display()
        ),
        &[],
    );
    wait_until("the fixture's counter to be read", LIMIT, || {
        host(&agent)["oom_kills_total"] == 3
    });
    assert!(
        condition(&host(&agent), "HOST_OOM_KILL", "host").is_none(),
        "kills from before the start are not new"
    );

    write_proc(proc_root.path(), 5);
    let c = wait_for("HOST_OOM_KILL after the rise", LIMIT, || {
        condition(&host(&agent), "HOST_OOM_KILL", "host")
    });
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("2 process(es) killed") && message.contains("oom_kill now 5"),
        "{message}"
    );
    assert_eq!(c["severity"], "WARNING", "{c}");
    assert!(
        text(&agent.ctl(&["status"])).contains("OOM kills 5 since boot"),
        "agent-ctl status shows the counter"
    );

    // /metrics shows the last report, which may be one report interval behind the status.
    let body = wait_for("the rise in /metrics", LIMIT, || {
        let body = scrape_metrics(&metrics);
        body.lines()
            .any(|l| l.starts_with("health_host_oom_kills_total{") && l.ends_with(" 5"))
            .then_some(body)
    });
    promtool_check_metrics("agent /metrics with host counters", &body);
    assert!(
        body.lines()
            .any(|l| l.starts_with("health_condition_active{")
                && l.contains("code=\"HOST_OOM_KILL\"")),
        "{body}"
    );
}
