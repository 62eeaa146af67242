//! The on-call loop end to end, on the real agent, collector and Alertmanager: a device in
//! maintenance does not page and is not touched by any policy, while its condition is still
//! read and shown; the collector holds an Alertmanager silence for the window (matchers on
//! `node` and `device`, ending at `until`) and expires it when the window ends, by
//! `maintenance end` or by itself; with Alertmanager down, maintenance still suppresses and
//! pauses, and the silence is made once Alertmanager is back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::time::{Duration, SystemTime};

use health_e2e::{
    ctl, free_port, output_text, wait_for, wait_until, Agent, Alertmanager, Collector,
};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// One simulated board, an enforcing thermal ladder, host thresholds this machine cannot reach
/// (so only the injected fault pages), reporting fast.
fn agent_config() -> String {
    r#"report_interval = "200ms"

[host]
disk_warning_ratio = 0.9998
disk_critical_ratio = 0.9999
memory_warning_ratio = 0.9998
memory_critical_ratio = 0.9999
load_warning_per_cpu = 1000.0

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
name = "thermal"
match = { codes = ["THERMAL_WARNING", "THERMAL_CRITICAL"] }
without_collector = "all"
steps = [
  { action = "set-power-limit", fraction = 0.7, hold = "1s", timeout = "10s" },
]
"#
    .to_string()
}

fn collector_config(am: &str) -> String {
    format!(
        "[alerts]\nalertmanager = [\"http://{am}\"]\nresend_interval = \"1s\"\npush_timeout = \"1s\"\n\
         for = {{ THERMAL_WARNING = \"0s\" }}\n"
    )
}

fn label<'a>(v: &'a Value, name: &str) -> &'a str {
    v["labels"][name].as_str().unwrap_or_default()
}

/// The Alertmanager silence with exactly these `name=value` equality matchers.
fn silence_for<'a>(silences: &'a [Value], matchers: &[(&str, &str)]) -> Option<&'a Value> {
    silences.iter().find(|s| {
        let Some(ms) = s["matchers"].as_array() else {
            return false;
        };
        ms.len() == matchers.len()
            && matchers.iter().all(|(name, value)| {
                ms.iter().any(|m| {
                    m["name"] == *name
                        && m["value"] == *value
                        && m["isRegex"] == false
                        && m["isEqual"] != false
                })
            })
    })
}

fn state(silence: &Value) -> &str {
    silence["status"]["state"].as_str().unwrap_or_default()
}

fn ends_at(silence: &Value) -> SystemTime {
    let at = silence["endsAt"].as_str().unwrap();
    humantime::parse_rfc3339_weak(at.trim_end_matches('Z').split('.').next().unwrap()).unwrap()
}

/// The policy's steps on record for loihi-0 (begin entries).
fn policy_steps(agent: &Agent) -> Vec<Value> {
    agent
        .audit_entries()
        .into_iter()
        .filter(|e| e["caller"] == "policy:thermal" && e["phase"] == "begin")
        .collect()
}

fn alerts_json(collector: &str) -> Vec<Value> {
    let out = ctl(&["--collector", collector, "--json", "alerts", "--once"]);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_device_in_maintenance_does_not_page_is_not_touched_and_is_silenced_until_it_ends() {
    let am = Alertmanager::start();
    let collector = Collector::start(&collector_config(&am.addr));
    let node = "oncall-maint";
    let agent = Agent::with_config(
        &agent_config(),
        &["--node", node, "--collector", &collector.url()],
    );

    let started = SystemTime::now();
    agent.ctl_ok(&[
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "1h",
        "--reason",
        "fan swap",
    ]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "overheat"]);

    // Still read and shown by the agent and the collector...
    let shown = agent.ctl_until(&["--json", "device", "loihi-0"], |t| t.contains("THERMAL_"));
    assert!(shown.contains("THERMAL_"), "{shown}");
    assert!(
        shown.contains("fan swap"),
        "the device shows its window: {shown}"
    );
    let alerts = wait_for(
        "the thermal alert SUPPRESSED at the collector",
        LIMIT,
        || {
            let all = alerts_json(&collector.addr);
            all.iter()
                .find(|e| {
                    e["device"] == "loihi-0"
                        && e["name"]
                            .as_str()
                            .unwrap_or_default()
                            .starts_with("THERMAL_")
                })
                .filter(|e| e["status"] == "SUPPRESSED")
                .cloned()
        },
    );
    assert!(
        alerts["suppressed_by"]
            .as_str()
            .unwrap_or_default()
            .contains("fan swap"),
        "{alerts}"
    );
    // ...and a silence on node and device until the window's end.
    let silence = wait_for("the maintenance silence in Alertmanager", LIMIT, || {
        silence_for(&am.silences(), &[("node", node), ("device", "loihi-0")])
            .filter(|s| state(s) == "active")
            .cloned()
    });
    let until = ends_at(&silence);
    let expected = started + Duration::from_secs(3600);
    assert!(
        until >= expected - Duration::from_secs(60) && until <= expected + Duration::from_secs(60),
        "{silence}"
    );
    assert!(
        silence["comment"]
            .as_str()
            .unwrap_or_default()
            .contains("fan swap"),
        "{silence}"
    );
    assert!(
        silence["createdBy"]
            .as_str()
            .unwrap_or_default()
            .starts_with("health-collector"),
        "{silence}"
    );
    // Extended: the same silence (same id), a later end.
    agent.ctl_ok(&[
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "2h",
        "--reason",
        "fan swap",
    ]);
    let id = silence["id"].as_str().unwrap().to_string();
    let extended = wait_for("the silence extended in place", LIMIT, || {
        am.silences()
            .into_iter()
            .find(|s| s["id"] == id.as_str())
            .filter(|s| ends_at(s) > until + Duration::from_secs(1800))
    });
    assert_eq!(state(&extended), "active", "{extended}");
    let others: Vec<Value> = am
        .silences()
        .into_iter()
        .filter(|s| {
            s["id"] != id.as_str()
                && silence_for(
                    std::slice::from_ref(s),
                    &[("node", node), ("device", "loihi-0")],
                )
                .is_some()
        })
        .collect();
    assert!(
        others.is_empty(),
        "no second silence for the window: {others:?}"
    );

    // Over several resends: nothing firing in Alertmanager for the device, no policy step.
    std::thread::sleep(Duration::from_secs(3));
    let firing: Vec<Value> = am
        .alerts()
        .into_iter()
        .filter(|a| label(a, "node") == node && label(a, "device") == "loihi-0")
        .collect();
    assert!(firing.is_empty(), "paged while in maintenance: {firing:?}");
    assert!(
        policy_steps(&agent).is_empty(),
        "{:?}",
        policy_steps(&agent)
    );
    let skipped = agent
        .audit_entries()
        .into_iter()
        .any(|e| e["caller"] == "policy:thermal" && e.to_string().contains("maintenance"));
    assert!(skipped, "the audit says why the policy did not act");

    // The end: the silence expires within a resend interval or two, the policy acts.
    agent.ctl_ok(&["maintenance", "end", "--device", "loihi-0"]);
    wait_until("the silence expired", LIMIT, || {
        silence_for(&am.silences(), &[("node", node), ("device", "loihi-0")])
            .is_some_and(|s| state(s) == "expired")
    });
    wait_until("the policy's step once maintenance ended", LIMIT, || {
        !policy_steps(&agent).is_empty()
    });
    agent.ctl_ok(&["inject-fault", "loihi-0", "clear"]);
}

#[test]
fn maintenance_ends_by_itself_at_until() {
    let am = Alertmanager::start();
    let collector = Collector::start(&collector_config(&am.addr));
    let node = "oncall-until";
    let agent = Agent::with_config(
        &agent_config(),
        &["--node", node, "--collector", &collector.url()],
    );
    agent.ctl_ok(&[
        "maintenance",
        "start",
        "--node",
        "--for",
        "4s",
        "--reason",
        "rack move",
    ]);
    wait_until("the node's silence", LIMIT, || {
        silence_for(&am.silences(), &[("node", node)]).is_some_and(|s| state(s) == "active")
    });
    wait_until("the window over and its silence expired", LIMIT, || {
        silence_for(&am.silences(), &[("node", node)]).is_some_and(|s| state(s) == "expired")
    });
    // The collector ends the window at `until` on its own clock; the agent's own record of the
    // expiry comes within its next check.
    wait_until("the expiry on record", LIMIT, || {
        agent
            .audit_entries()
            .iter()
            .any(|e| e["action"] == "maintenance-expired" && e["caller"] == "agent")
    });
    let listed = agent.ctl_ok(&["--json", "maintenance", "list"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["windows"], Value::Array(vec![]), "{listed}");
}

#[test]
fn with_alertmanager_down_maintenance_still_suppresses_and_the_silence_comes_later() {
    let am_addr = format!("127.0.0.1:{}", free_port());
    let collector = Collector::start(&collector_config(&am_addr));
    let node = "oncall-am-down";
    let agent = Agent::with_config(
        &agent_config(),
        &["--node", node, "--collector", &collector.url()],
    );
    agent.ctl_ok(&[
        "maintenance",
        "start",
        "--device",
        "loihi-0",
        "--for",
        "1h",
        "--reason",
        "am outage drill",
    ]);
    agent.ctl_ok(&["inject-fault", "loihi-0", "overheat"]);
    wait_until(
        "the thermal alert SUPPRESSED without Alertmanager",
        LIMIT,
        || {
            alerts_json(&collector.addr)
                .iter()
                .any(|e| e["device"] == "loihi-0" && e["status"] == "SUPPRESSED")
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        policy_steps(&agent).is_empty(),
        "{:?}",
        policy_steps(&agent)
    );

    let am = Alertmanager::start_on(&am_addr);
    wait_until("the silence once Alertmanager is back", LIMIT, || {
        silence_for(&am.silences(), &[("node", node), ("device", "loihi-0")])
            .is_some_and(|s| state(s) == "active")
    });
    assert!(
        am.alerts()
            .iter()
            .all(|a| !(label(a, "node") == node && label(a, "device") == "loihi-0")),
        "{:?}",
        am.alerts()
    );
    agent.ctl_ok(&["inject-fault", "loihi-0", "clear"]);
}
