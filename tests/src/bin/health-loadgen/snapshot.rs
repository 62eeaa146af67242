//! The snapshots the simulated agents send, built by the real agent's code so that their size
//! and shape are what a real agent puts on the wire.
//!
//! Each device is a HAL simulator of its kind, read once through the `Device` trait; the
//! reading becomes the agent's `DeviceStatus` and goes through the agent's own conversion to
//! `health.v1` (the one the uplink uses). It is encoded once; per report only the node's
//! identity, number and time are added (`wire`), so the load generator spends its CPU on the
//! protocol, not on physics or copying.

use std::sync::Arc;
use std::time::SystemTime;

use health_agent::host::{DiskUsage, HostStatus};
use health_agent::model::{Activity, DeviceStatus};
use health_agent::model::{AgentStatus, NodeSnapshot};
use health_agent::wire::convert;
use health_hal::model::{Condition, ConditionCode, DeviceKind, HealthState, Severity};
use health_hal::sim::{SimDevice, SimOptions};
use health_hal::Device as _;
use prost::Message as _;

const KINDS: [(DeviceKind, &str); 4] = [
    (DeviceKind::Loihi2, "loihi"),
    (DeviceKind::Spinnaker, "spinnaker"),
    (DeviceKind::Photonic, "photonic"),
    (DeviceKind::AnalogCrossbar, "xbar"),
];

/// One node's report body, ready to be stamped and sent.
pub struct Template {
    /// The encoded snapshot with every device OK, without node, boot id, seq and time (which
    /// `wire::report` adds per report).
    pub healthy: Vec<u8>,
    /// The same with a THERMAL_WARNING on the first device: what a toggling agent sends in its
    /// "hot" phases, so an alert fires and then resolves.
    pub hot: Vec<u8>,
}

/// Reads `devices` simulated devices (kinds in turn) once and builds both snapshots.
pub async fn template(devices: usize) -> anyhow::Result<Template> {
    let now = SystemTime::now();
    let mut statuses = Vec::with_capacity(devices);
    for index in 0..devices {
        let (kind, prefix) = KINDS[index % KINDS.len()];
        let id = format!("{prefix}-{}", index / KINDS.len());
        let device = SimDevice::new(&id, kind, SimOptions::default());
        let sample = device
            .read()
            .await
            .map_err(|error| anyhow::anyhow!("simulated {id}: read failed: {error}"))?;
        statuses.push(DeviceStatus {
            identity: device.identity(),
            capabilities: device.capabilities(),
            state: HealthState::Ok,
            activity: Activity::Running,
            readings: sample.readings,
            conditions: Vec::new(),
            enabled: true,
            power_limit_watts: sample.power_limit_watts,
            calibration: sample.calibration,
            last_read_at: Some(now),
            consecutive_failures: 0,
            last_action: None,
            known_answer: None,
            maintenance: None,
        });
    }
    let host = HostStatus {
        state: HealthState::Ok,
        cpu_utilization_ratio: 0.42,
        cpu_count: 64,
        memory_total_bytes: 512 << 30,
        memory_available_bytes: 300 << 30,
        load: [12.5, 11.75, 10.25],
        disks: ["/", "/var", "/scratch"]
            .into_iter()
            .map(|mount_point| DiskUsage {
                mount_point: mount_point.to_string(),
                total_bytes: 2 << 40,
                available_bytes: 1 << 40,
            })
            .collect(),
        conditions: Vec::new(),
        processes: Vec::new(),
        observed_at: Some(now),
        ..Default::default()
    };
    let snapshot = |devices: Vec<DeviceStatus>, state| NodeSnapshot {
        node: String::new(),
        boot_id: String::new(),
        seq: 0,
        taken_at: now,
        state,
        host: Arc::new(host.clone()),
        devices: devices.into_iter().map(Arc::new).collect(),
        agent: AgentStatus {
            uplink_configured: true,
            uplink_connected: true,
            ..AgentStatus::default()
        },
        maintenance: None,
    };
    let healthy = convert::snapshot(&snapshot(statuses.clone(), HealthState::Ok)).encode_to_vec();
    let mut hot_devices = statuses;
    if let Some(first) = hot_devices.first_mut() {
        first.state = HealthState::Warning;
        first.conditions.push(Condition::new(
            ConditionCode::ThermalWarning,
            Severity::Warning,
            first.identity.id.clone(),
            "chip at 86.0 C (warning at 85.0 C)",
            now,
        ));
    }
    let hot = convert::snapshot(&snapshot(hot_devices, HealthState::Warning)).encode_to_vec();
    Ok(Template { healthy, hot })
}
