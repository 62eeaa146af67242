//! The fleet-wide blast radius, end to end: four agents of sixteen simulated boards each
//! report to one collector whose lease budget is four at once; half the boards (32 of 64) hang
//! at the same moment. Every agent may run four destructive steps at once, so the agents
//! together want up to sixteen leases: the collector's log of grants must never show more
//! than four held, and every hung board must end recovered (the hard reset clears a hang) or
//! quarantined, none left hanging.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::time::Duration;

use health_e2e::{wait_for, Agent, Collector};

const AGENTS: usize = 4;
const BOARDS: usize = 16;
const MAX_CONCURRENT: u64 = 4;

fn agent_config() -> String {
    let mut s = String::from(
        "report_interval = \"200ms\"\n\n[remediation]\nmax_destructive = 4\ninterval = \"100ms\"\n\n[safety]\nmax_resets_per_hour = 100\n",
    );
    for i in 0..BOARDS {
        s.push_str(&format!(
            "\n[[device]]\nid = \"loihi-{i}\"\nkind = \"loihi2\"\nbackend = \"sim\"\npoll_interval = \"250ms\"\ndeadline = \"500ms\"\naction_deadline = \"2s\"\n"
        ));
    }
    s.push_str(
        r#"
[[policy]]
name = "unresponsive"
match = { codes = ["DEVICE_UNRESPONSIVE", "RESET_FAILED"], severity = "critical" }
steps = [
  { action = "reset-soft",  hold = "1s", timeout = "3s" },
  { action = "reset-hard",  hold = "1s", timeout = "5s" },
  { action = "disable" },
]
"#,
    );
    s
}

#[test]
fn thirty_two_hung_boards_never_hold_more_leases_than_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("collector.log");
    // A budget of four at once; the window and the breaker are set wide so that this test
    // measures max_concurrent alone (the breaker has unit and collector tests of its own).
    let collector = Collector::start_logged(
        &format!(
            "[leases]\nmax_concurrent = {MAX_CONCURRENT}\nmax_fraction = 1.0\nwindow = \"10m\"\ncooldown = \"1s\"\n"
        ),
        &log,
    );
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|a| {
            Agent::with_config(
                &agent_config(),
                &[
                    "--node",
                    &format!("storm-{a}"),
                    "--collector",
                    &collector.url(),
                ],
            )
        })
        .collect();
    // Every board reported before the storm, so the collector holds all 64.
    std::thread::sleep(Duration::from_secs(2));
    let hung: Vec<(usize, String)> = (0..AGENTS)
        .flat_map(|a| {
            (0..BOARDS)
                .step_by(2)
                .map(move |i| (a, format!("loihi-{i}")))
        })
        .collect();
    assert_eq!(hung.len(), 32);
    for (a, id) in &hung {
        agents[*a].ctl_ok(&["inject-fault", id, "hang"]);
    }
    // Each ladder ends (recovered or exhausted) within the budget's pace.
    wait_for(
        "every hung board's ladder to end",
        Duration::from_secs(240),
        || {
            hung.iter()
                .all(|(a, id)| {
                    agents[*a].audit_entries().iter().any(|e| {
                        e["action"] == "ladder-end" && e["target"].as_str() == Some(id.as_str())
                    })
                })
                .then_some(())
        },
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let active: Vec<u64> = text
        .lines()
        .filter(|l| l.contains("lease granted"))
        .filter_map(|l| {
            let rest = &l[l.find(" active=")? + 8..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        active.len() >= 32,
        "a lease per hard reset: {} grants",
        active.len()
    );
    let most = active.iter().copied().max().unwrap_or(0);
    assert!(
        most <= MAX_CONCURRENT,
        "at most {MAX_CONCURRENT} leases held at once, the log shows {most}"
    );
    assert_eq!(most, MAX_CONCURRENT, "the storm did fill the budget");
    // The agents' side of the same rule, from their own audit logs: destructive steps (each
    // inside the lease it held) never overlap more than the budget, and each had a grant.
    let mut edges: Vec<(String, i32)> = Vec::new();
    let mut destructive = 0;
    for agent in &agents {
        for e in agent.audit_entries() {
            let action = e["action"].as_str().unwrap_or_default();
            let policy = e["caller"]
                .as_str()
                .unwrap_or_default()
                .starts_with("policy:");
            if !policy || !matches!(action, "reset-hard" | "reset-power-cycle" | "disable") {
                continue;
            }
            let time = e["time"].as_str().unwrap_or_default().to_string();
            match e["phase"].as_str() {
                Some("begin") => {
                    destructive += 1;
                    edges.push((time, 1));
                }
                Some("end" | "interrupted") => edges.push((time, -1)),
                _ => {}
            }
        }
    }
    // RFC 3339 UTC with milliseconds sorts as text; an end before a begin at the same instant.
    edges.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in &edges {
        now += d;
        peak = peak.max(now);
    }
    assert!(
        peak <= MAX_CONCURRENT as i32,
        "agents overlapped {peak} destructive steps"
    );
    assert!(
        active.len() >= destructive,
        "every destructive step had a lease: {destructive} steps, {} grants",
        active.len()
    );
    for (a, id) in &hung {
        let ends: Vec<String> = agents[*a]
            .audit_entries()
            .iter()
            .filter(|e| e["action"] == "ladder-end" && e["target"].as_str() == Some(id.as_str()))
            .map(|e| e["args"]["result"].as_str().unwrap_or_default().to_string())
            .collect();
        assert!(
            ends.iter().all(|r| r == "recovered" || r == "exhausted"),
            "{a}/{id}: {ends:?}"
        );
        let out = agents[*a].ctl(&["--json", "device", id]);
        let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let codes: Vec<&str> = d["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap_or_default())
            .collect();
        let quarantined = d["enabled"] == false;
        assert!(
            !codes.contains(&"DEVICE_UNRESPONSIVE") || quarantined,
            "{a}/{id} is neither recovered nor quarantined: {codes:?}"
        );
    }
}
