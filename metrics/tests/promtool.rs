//! The encoder's output, on awkward but realistic input, is accepted by Prometheus's own
//! linter: `promtool check metrics` (Debian package `prometheus`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use health_metrics::rpc::RpcStats;
use health_metrics::{node, Exposition};
use health_proto::v1 as pb;

/// Runs `promtool check metrics` on `text`; the error carries promtool's complaints.
fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` (.ci/run does)"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn promtool_accepts_a_rendered_node_with_awkward_labels() {
    let snap = pb::NodeSnapshot {
        node: "accel \"17\"\\rack\n2".into(),
        state: pb::HealthState::Critical as i32,
        host: Some(pb::HostHealth {
            state: pb::HealthState::Critical as i32,
            observed_at: Some(prost_types::Timestamp::default()),
            disks: vec![pb::Disk {
                mount_point: "/mnt/ünïcode space".into(),
                total_bytes: 1 << 40,
                available_bytes: 0,
            }],
            conditions: vec![pb::Condition {
                code: pb::ConditionCode::ProcessStuck as i32,
                severity: pb::Severity::Critical as i32,
                subject: "ngspice[4242]".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        devices: vec![pb::Device {
            identity: Some(pb::DeviceIdentity {
                id: "xbar-0".into(),
                kind: pb::DeviceKind::AnalogCrossbar as i32,
                ..Default::default()
            }),
            readings: vec![
                pb::Reading {
                    sensor: "card".into(),
                    quantity: pb::Quantity::EnergyJoules as i32,
                    value: 1e15,
                    observed_at: None,
                },
                pb::Reading {
                    sensor: "drift".into(),
                    quantity: pb::Quantity::ConductanceDriftRatio as i32,
                    value: f64::NAN,
                    observed_at: None,
                },
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Exposition::new();
    node::declare(&mut out);
    node::render(&mut out, &snap, snap.state, true);
    let rpc = RpcStats::new();
    rpc.observe("/health.v1.Agent/GetNode", "OK", Duration::from_micros(300));
    rpc.observe(
        "/health.v1.Agent/GetDevice",
        "NotFound",
        Duration::from_secs(200),
    );
    rpc.render(&mut out, &[("node", "n")]);
    let text = out.render();
    if let Err(problems) = promtool_check_metrics(&text) {
        panic!("promtool check metrics:\n{problems}\non:\n{text}");
    }
}
