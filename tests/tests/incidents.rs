//! Incidents end to end: a fault that a policy fixes, seen by the real collector (history on)
//! and read back through `agent-ctl incidents` / `incident ID --export`.
//!
//! The checks compare the incident with the two records it is built from and must agree
//! with: the collector's history (read over gRPC, to the millisecond) for the detection, time
//! to detect and time to resolve; the agent's audit log for every step and its hash.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::time::Duration;

use health_e2e::{ctl, output_text, wait_for, Agent, Collector};
use health_proto::v1 as pb;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

fn ms(t: Option<prost_types::Timestamp>) -> i64 {
    let t = t.expect("a time");
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

fn collector_json(addr: &str, args: &[&str]) -> Value {
    let mut all = vec!["--collector", addr, "--json"];
    all.extend(args);
    let out = ctl(&all);
    assert!(
        out.status.success(),
        "agent-ctl {all:?}: {}",
        output_text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("agent-ctl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_a_policy_fixes_is_one_incident_with_its_steps_hashes_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let history = format!(
        "history_path = \"{}\"",
        dir.path().join("history.db").display()
    );
    a_fault_a_policy_fixes_is_one_incident(&history).await;
}

/// The same incident with the history in a real PostgreSQL server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_incident_with_the_history_on_postgresql() {
    let server = health_e2e::postgres::PgServer::start().unwrap();
    let url = server.create_database("incidents").unwrap();
    let history = format!(
        "history_url = \"{url}?sslmode=disable\"\nhistory_password_file = \"{}\"",
        server.password_file().display()
    );
    a_fault_a_policy_fixes_is_one_incident(&history).await;
}

async fn a_fault_a_policy_fixes_is_one_incident(history: &str) {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&format!(
        "{history}\n[alerts]\nfor = {{ DEVICE_UNRESPONSIVE = \"0s\" }}\n\
         [incidents]\nclose_after = \"2s\"\n"
    ));
    let node = "inc-hang";
    // The unresponsive ladder: its soft reset cannot get through the hung firmware, its hard
    // reset (with the collector's lease) can. One board, and host thresholds this test
    // machine cannot reach, so that nothing else on the node fires (an incident is per node).
    let agent = Agent::with_config(
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
name = "unresponsive"
match = { codes = ["DEVICE_UNRESPONSIVE", "DEVICE_ERROR", "RESET_FAILED"], severity = "critical" }
steps = [
  { action = "reset-soft", hold = "1s", timeout = "5s" },
  { action = "reset-hard", hold = "1s", timeout = "10s" },
]
"#,
        &["--node", node, "--collector", &collector.url()],
    );
    agent.ctl_ok(&["inject-fault", "loihi-0", "hang"]);

    let addr = collector.addr.clone();
    let listed = wait_for("one closed incident", LIMIT, || {
        let list = collector_json(&addr, &["incidents", "--node", node]);
        let items = list.as_array().cloned().unwrap_or_default();
        (items.len() == 1 && items[0]["open"] == false).then(|| items[0].clone())
    });
    let id = listed["id"].as_str().unwrap().to_string();
    assert_eq!(listed["node"], node);
    let open_now = collector_json(&addr, &["incidents", "--open"]);
    assert_eq!(open_now, Value::Array(vec![]), "nothing is open any more");

    // The incident against the history it was built from, to the millisecond.
    let mut client = collector.client().await;
    let history = client
        .query_history(pb::QueryHistoryRequest {
            node: node.to_string(),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let incident = client
        .get_incident(pb::GetIncidentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let alert_times = |status: &str| -> Vec<i64> {
        history
            .iter()
            .filter(|e| {
                e.kind == pb::HistoryKind::Alert as i32
                    && e.name == "DeviceUnresponsive"
                    && e.status == status
            })
            .map(|e| ms(e.at))
            .collect()
    };
    let first_firing = *alert_times("FIRING").iter().min().expect("it fired");
    let last_resolved = *alert_times("RESOLVED").iter().max().expect("it resolved");
    let condition_since = history
        .iter()
        .filter(|e| e.kind == pb::HistoryKind::Condition as i32 && e.name == "DEVICE_UNRESPONSIVE")
        .map(|e| ms(e.at))
        .filter(|at| *at <= first_firing)
        .max()
        .expect("the condition spell is in the history");
    assert_eq!(ms(incident.opened_at), first_firing);
    assert_eq!(ms(incident.resolved_at), last_resolved);
    assert_eq!(
        incident.time_to_detect_ms,
        u64::try_from(first_firing - condition_since).unwrap()
    );
    assert_eq!(
        incident.time_to_resolve_ms,
        u64::try_from(last_resolved - first_firing).unwrap()
    );
    assert_eq!(incident.detection, "DeviceUnresponsive on loihi-0");
    assert!(
        incident
            .resolution
            .starts_with("reset-hard on loihi-0 by policy:unresponsive"),
        "{}",
        incident.resolution
    );

    // Every step the policy took, with the hash of the audit entry that recorded its end,
    // is in the post-mortem; and so are the detection and the two times.
    let steps: Vec<(String, String)> = agent
        .audit_entries()
        .into_iter()
        .filter(|e| {
            e["phase"] == "end" && e["caller"].as_str().unwrap_or_default() == "policy:unresponsive"
        })
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let actions: Vec<&str> = steps.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["reset-soft", "reset-hard"], "{steps:?}");
    let md_path = dir.path().join("postmortem.md");
    let out = ctl(&[
        "--collector",
        &addr,
        "incident",
        &id,
        "--export",
        "markdown",
        "--out",
        md_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let md = std::fs::read_to_string(&md_path).unwrap();
    for (action, hash) in &steps {
        let row = md
            .lines()
            .find(|l| l.contains(&format!("`{hash}`")))
            .unwrap_or_else(|| panic!("{action} ({hash}) is not in the post-mortem:\n{md}"));
        assert!(row.contains(action), "{row}");
        assert!(row.contains("policy:unresponsive"), "{row}");
    }
    assert!(
        md.contains("- Alert: DeviceUnresponsive on loihi-0"),
        "{md}"
    );
    assert!(
        md.contains(&format!("({} ms)", incident.time_to_detect_ms))
            && md.contains(&format!("({} ms)", incident.time_to_resolve_ms)),
        "{md}"
    );
    for section in ["## Root cause", "## Lessons learned", "## Timeline"] {
        assert!(md.contains(section), "{section}:\n{md}");
    }
    let exported = collector_json(&addr, &["incident", &id, "--export", "json"]);
    assert_eq!(exported["id"], id.as_str());
    assert_eq!(exported["time_to_resolve_ms"], incident.time_to_resolve_ms);

    // The timeline is oldest first.
    let times: Vec<i64> = incident.timeline.iter().map(|t| ms(t.at)).collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted);

    // The evidence of the node: the audit log as it is, verified against the head the
    // collector holds, the incident, and a manifest that notices an edit.
    let evidence = dir.path().join("evidence");
    let config = agent.dir.path().join("agent.toml");
    let audit = agent.dir.path().join("audit.jsonl");
    let out = ctl(&[
        "--endpoint",
        &agent.endpoint(),
        "--collector",
        &addr,
        "evidence",
        "--out",
        evidence.to_str().unwrap(),
        "--since",
        "1h",
        "--config",
        config.to_str().unwrap(),
        "--audit-file",
        audit.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let read = |name: &str| std::fs::read_to_string(evidence.join(name)).unwrap();
    let copied = read("audit.jsonl");
    assert!(
        std::fs::read_to_string(&audit)
            .unwrap()
            .starts_with(&copied)
            && !copied.is_empty(),
        "the audit log is copied as it is"
    );
    let verification: Value = serde_json::from_str(&read("audit-verification.json")).unwrap();
    assert_eq!(verification["chain"]["intact"], true, "{verification}");
    assert_eq!(
        verification["collector_head"]["found"], true,
        "{verification}"
    );
    assert!(read("incidents.json").contains(&id));
    assert!(read("history.json").contains("DeviceUnresponsive"));
    assert!(read("snapshot.json").contains(node));
    assert!(read("config-check.txt").contains("valid"));
    let verify = |expect_ok: bool| {
        let out = ctl(&["evidence", "verify", evidence.to_str().unwrap()]);
        assert_eq!(out.status.success(), expect_ok, "{}", output_text(&out));
        output_text(&out)
    };
    verify(true);
    std::fs::write(
        evidence.join("audit.jsonl"),
        copied.replace("reset-hard", "reset-soft"),
    )
    .unwrap();
    assert!(verify(false).contains("audit.jsonl: changed"));
}

#[test]
fn incident_commands_name_what_is_wrong() {
    let collector = Collector::start("");
    let no_history = ctl(&["--collector", &collector.addr, "incidents"]);
    assert!(!no_history.status.success());
    assert!(
        output_text(&no_history).contains("history_path"),
        "{}",
        output_text(&no_history)
    );

    let dir = tempfile::tempdir().unwrap();
    let with_history = Collector::start(&format!(
        "history_path = \"{}\"\n",
        dir.path().join("h.db").display()
    ));
    let unknown = ctl(&[
        "--collector",
        &with_history.addr,
        "incident",
        "inc-1765000000000-nowhere",
    ]);
    assert!(!unknown.status.success());
    assert!(
        output_text(&unknown).contains("no incident inc-1765000000000-nowhere"),
        "{}",
        output_text(&unknown)
    );
    let junk = ctl(&["--collector", &with_history.addr, "incident", "42"]);
    assert!(!junk.status.success());
    assert!(
        output_text(&junk).contains("expected an incident id"),
        "{}",
        output_text(&junk)
    );
    let none = ctl(&["incidents"]);
    assert!(!none.status.success(), "no collector given");
}
