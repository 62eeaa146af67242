//! The known-answer device probe end to end: a simulated crossbar under the real agent, its
//! results at the collector and through agent-ctl, drift injected, then calibrated away.

use std::time::{Duration, Instant};

use health_e2e::{Agent, Collector};
use health_proto::v1 as pb;

const NODE: &str = "e2e-known-answer";

fn config(collector: &str) -> String {
    format!(
        r#"node = "{NODE}"
collector = "{collector}"
report_interval = "300ms"

[[device]]
id = "xbar-0"
kind = "analog_crossbar"
backend = "sim"
poll_interval = "200ms"

[probe.known_answer]
interval = "500ms"
deadline = "1s"
"#
    )
}

/// xbar-0 as the collector last heard of it.
async fn at_collector(collector: &Collector) -> Option<pb::Device> {
    let node = collector
        .client()
        .await
        .get_node(pb::GetFleetNodeRequest {
            node: NODE.to_string(),
        })
        .await
        .ok()?
        .into_inner();
    node.snapshot?
        .devices
        .into_iter()
        .find(|d| d.identity.as_ref().is_some_and(|i| i.id == "xbar-0"))
}

fn probe_drift(d: &pb::Device) -> Option<&pb::Condition> {
    d.conditions.iter().find(|c| {
        c.code() == pb::ConditionCode::CalibrationDrift && c.message.contains("known-answer")
    })
}

async fn wait_for(
    collector: &Collector,
    what: &str,
    limit: Duration,
    ok: impl Fn(&pb::Device) -> bool,
) -> pb::Device {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < limit {
        if let Some(d) = at_collector(collector).await {
            if ok(&d) {
                return d;
            }
            last = Some(d);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}; last seen: {last:#?}");
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn drift_is_caught_by_the_known_answer_probe_and_calibration_clears_it() {
    let collector = Collector::start("");
    let agent = Agent::with_config(&config(&collector.url()), &[]);

    // The baseline: the fresh array converges, and the result reaches the collector.
    let d = wait_for(
        &collector,
        "a first probe result",
        Duration::from_secs(20),
        |d| d.known_answer.is_some(),
    )
    .await;
    let k = d.known_answer.clone().unwrap();
    assert_eq!(k.verdict, "converged", "{k:?}");
    assert!(
        k.relative_error <= 1e-6 && k.rate < 0.2 && k.steps >= 1,
        "{k:?}"
    );
    assert!(probe_drift(&d).is_none(), "{:?}", d.conditions);
    let shown = agent.ctl(&["device", "xbar-0"]);
    assert!(
        text(&shown).contains("known-answer probe converged"),
        "{}",
        text(&shown)
    );
    let diag = agent.ctl(&["diagnose", "xbar-0", "--full"]);
    assert!(diag.status.success(), "{}", text(&diag));
    assert!(
        text(&diag).contains("passed: known-answer probe converged"),
        "{}",
        text(&diag)
    );

    // Conductance drift: the array's products degrade and the refinement slows down.
    let fault = agent.ctl(&["inject-fault", "xbar-0", "drift"]);
    assert!(fault.status.success(), "{}", text(&fault));
    let d = wait_for(
        &collector,
        "CALIBRATION_DRIFT from the known-answer probe",
        Duration::from_secs(90),
        |d| probe_drift(d).is_some(),
    )
    .await;
    let c = probe_drift(&d).unwrap();
    assert!(
        c.message.contains("contraction") && c.message.contains("after calibration"),
        "{}",
        c.message
    );
    assert!(c.runbook.contains("agent-ctl calibrate"), "{}", c.runbook);
    let k = d.known_answer.clone().unwrap();
    assert!(k.rate > 2.0 * k.baseline_rate.unwrap(), "{k:?}");
    // On demand too: FULL diagnostics run the probe and report the condition (exit 1).
    let diag = agent.ctl(&["diagnose", "xbar-0", "--full"]);
    assert_eq!(diag.status.code(), Some(1), "{}", text(&diag));
    assert!(text(&diag).contains("CALIBRATION_DRIFT"), "{}", text(&diag));

    // The runbook step: recalibrate. The probe run right after it passes and clears drift.
    agent.ctl_ok(&["inject-fault", "xbar-0", "clear"]);
    let cal = agent.ctl(&["calibrate", "xbar-0"]);
    assert!(cal.status.success(), "{}", text(&cal));
    assert!(
        text(&cal).contains("known-answer probe converged"),
        "{}",
        text(&cal)
    );
    let d = wait_for(
        &collector,
        "the drift condition to clear after calibration",
        Duration::from_secs(20),
        |d| probe_drift(d).is_none(),
    )
    .await;
    assert_eq!(d.known_answer.unwrap().verdict, "converged");
}
