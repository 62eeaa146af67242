//! Keeps the scale benchmark's load generator honest: a short, small run against the real
//! collector binary, asserting its accounting (every report acknowledged and counted by the
//! collector, every drop visible as a gap, alerts delivered with a latency figure). It asserts
//! no time: the figures themselves belong in docs/benchmarks.md.

use std::process::{Command, Stdio};

use health_e2e::Collector;

#[test]
fn loadgen_accounts_for_every_report_against_the_real_collector() {
    // THERMAL_WARNING is held 1 min by default before it fires; the accounting wants every
    // toggle to fire at once.
    let collector = Collector::start("[alerts]\nfor = { THERMAL_WARNING = \"0s\" }\n");
    let output = Command::new(env!("CARGO_BIN_EXE_health-loadgen"))
        .args([
            "--collector",
            &collector.addr,
            "--collector-pid",
            &collector.proc.child.id().to_string(),
            "--agents",
            "20",
            "--devices",
            "8",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--toggle-fraction",
            "0.25",
            "--node-prefix",
            "lgtest",
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run health-loadgen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "health-loadgen failed: {stderr}");
    let results: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    let count = |key: &str| {
        results[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {results}"))
    };

    assert_eq!(count("agents"), 20);
    assert_eq!(count("connections"), 20, "one connection per agent");
    assert!(
        results["unaccounted"].as_array().is_some_and(Vec::is_empty),
        "{results}"
    );
    // Each agent reports for at least the 3 measured seconds.
    let sent = count("sent");
    assert!(sent >= 20 * 3, "sent {sent}");
    assert_eq!(count("acked"), sent);
    assert_eq!(count("collector_reports_total"), sent);
    assert_eq!(count("collector_duplicates_total"), 0);
    assert_eq!(count("collector_missing_total"), count("dropped_in_gaps"));
    assert_eq!(count("collector_nodes_seen"), 20);

    // A quarter of the agents toggle a condition on every report: alerts fire and resolve.
    let expected = count("alert_events_expected");
    assert!(expected >= 5 * 3, "expected alert events {expected}");
    assert_eq!(count("alert_events_received"), expected);
    assert!(
        count("alerts_firing") > 0 && count("alerts_resolved") > 0,
        "{results}"
    );
    let latency = &results["alert_latency"];
    assert!(
        latency["count"].as_u64().is_some_and(|n| n > 0),
        "{results}"
    );
    assert!(
        latency["p99_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{results}"
    );

    // The collector's own process was sampled.
    assert!(
        results["collector_rss_mib"]
            .as_f64()
            .is_some_and(|mib| mib > 0.0),
        "{results}"
    );
    assert!(
        results["collector_cpu_percent"].as_f64().is_some(),
        "{results}"
    );
}
