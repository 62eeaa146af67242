//! The series of one node: its health, host, devices, readings and conditions, from a
//! `health.v1.NodeSnapshot`.
//!
//! The agent renders its own latest snapshot with this and the collector renders every node it
//! holds, so the two expose the same families with the same labels (`node`, `device`, `kind`,
//! `sensor`; `subject`, `code`, `severity` for conditions) and one dashboard or rule file works
//! against either. Values are in base units as the snapshot carries them; each reading quantity
//! is its own family (`health_device_temperature_celsius`, `health_device_power_watts`, ...).
//!
//! A node the collector has marked stale is rendered with `fresh = false`: its readings and host
//! figures are left out (they are old, and a flat line would hide that) and its states read
//! UNKNOWN, as the collector's API shows them; its conditions stay, as its alerts do.

use health_proto::v1 as pb;
use prost_types::Timestamp;

use crate::text::{Exposition, FamilyWriter};

const STATES: [(pb::HealthState, &str); 4] = [
    (pb::HealthState::Ok, "ok"),
    (pb::HealthState::Unknown, "unknown"),
    (pb::HealthState::Warning, "warning"),
    (pb::HealthState::Critical, "critical"),
];

const ACTIVITIES: [(pb::DeviceActivity, &str); 6] = [
    (pb::DeviceActivity::Running, "running"),
    (pb::DeviceActivity::Resetting, "resetting"),
    (pb::DeviceActivity::Calibrating, "calibrating"),
    (pb::DeviceActivity::Disabled, "disabled"),
    (pb::DeviceActivity::Failed, "failed"),
    (pb::DeviceActivity::Off, "off"),
];

/// The family, help and type of each reading quantity. Energy is a cumulative counter.
fn quantity_family(q: pb::Quantity) -> Option<(&'static str, &'static str, bool)> {
    use pb::Quantity as Q;
    Some(match q {
        Q::TemperatureCelsius => (
            "health_device_temperature_celsius",
            "Device temperature by sensor, degrees Celsius.",
            false,
        ),
        Q::SetpointCelsius => (
            "health_device_temperature_setpoint_celsius",
            "Temperature setpoint (e.g. a TEC's), degrees Celsius.",
            false,
        ),
        Q::PowerWatts => (
            "health_device_power_watts",
            "Electrical power by sensor, watts.",
            false,
        ),
        Q::EnergyJoules => (
            "health_device_energy_joules_total",
            "Cumulative energy counter by sensor, joules (resets when the device's counter does).",
            true,
        ),
        Q::VoltageVolts => (
            "health_device_voltage_volts",
            "Supply rail voltage by sensor, volts.",
            false,
        ),
        Q::CurrentAmperes => (
            "health_device_current_amperes",
            "Current by sensor, amperes.",
            false,
        ),
        Q::FanRpm => (
            "health_device_fan_rpm",
            "Fan speed by sensor, revolutions per minute.",
            false,
        ),
        Q::PhaseErrorRadians => (
            "health_device_phase_error_radians",
            "Photonic phase error, radians.",
            false,
        ),
        Q::OpticalPowerWatts => (
            "health_device_optical_power_watts",
            "Optical power, watts.",
            false,
        ),
        Q::ConductanceDriftRatio => (
            "health_device_conductance_drift_ratio",
            "Analog crossbar conductance drift, relative to the programmed value.",
            false,
        ),
        Q::StuckCellsRatio => (
            "health_device_stuck_cells_ratio",
            "Fraction of crossbar cells stuck.",
            false,
        ),
        Q::EffectiveBits => (
            "health_device_enob",
            "Effective number of bits (ENOB) of the analog array: the precision it computes to.",
            false,
        ),
        Q::CalibrationAgeSeconds => (
            "health_device_calibration_age_seconds",
            "Time since the device was last calibrated, seconds.",
            false,
        ),
        Q::Unspecified => return None,
    })
}

/// Declares every family this module can produce, so they appear (with HELP and TYPE) even in
/// a scrape that has no sample of them yet: an empty fleet, a node without conditions.
pub fn declare(out: &mut Exposition) {
    for g in GAUGES {
        g.on(out);
    }
    for q in (1..).map_while(|n| pb::Quantity::try_from(n).ok()) {
        quantity_on(out, q);
    }
    for c in COUNTERS {
        out.counter(c.0, c.1);
    }
}

const OOM_KILLS: (&str, &str) = (
    "health_host_oom_kills_total",
    "Processes killed by the kernel's OOM killer since the host booted (/proc/vmstat oom_kill).",
);
const LOG_MATCHES: (&str, &str) = (
    "health_log_matches_total",
    "Lines matching a [[log]] rule's pattern since the agent started; rule is the rule's name.",
);
/// Counter families of a node, declared with the gauges.
const COUNTERS: [(&str, &str); 2] = [OOM_KILLS, LOG_MATCHES];

/// The family of a reading quantity, as a counter or a gauge as [`quantity_family`] says;
/// `None` for a quantity with no family.
fn quantity_on(out: &mut Exposition, q: pb::Quantity) -> Option<FamilyWriter<'_>> {
    let (name, help, counter) = quantity_family(q)?;
    Some(if counter {
        out.counter(name, help)
    } else {
        out.gauge(name, help)
    })
}

/// A gauge family's name and help, written once for [`declare`] and the renderers alike.
struct Gauge {
    name: &'static str,
    help: &'static str,
}

impl Gauge {
    fn on<'a>(&self, out: &'a mut Exposition) -> FamilyWriter<'a> {
        out.gauge(self.name, self.help)
    }
}

/// Defines each gauge family as a constant and lists them all in `GAUGES`, from one table, so
/// a family added here is declared too.
macro_rules! gauges {
    ($($id:ident = $name:literal, $help:literal;)*) => {
        $(const $id: Gauge = Gauge { name: $name, help: $help };)*
        /// Every gauge family of a node, in the order a scrape lists them.
        const GAUGES: &[&Gauge] = &[$(&$id),*];
    };
}

gauges! {
    NODE_STATE = "health_node_state",
        "Node health (worst of host and devices): 1 for the current state, 0 for the others.";
    SNAPSHOT_TS = "health_node_snapshot_timestamp_seconds",
        "When the node's latest snapshot was taken, Unix seconds.";
    HOST_STATE = "health_host_state",
        "Host health: 1 for the current state, 0 for the others.";
    CPU = "health_host_cpu_utilization_ratio",
        "Host CPU utilization over all cores, 0 to 1.";
    CPUS = "health_host_cpus",
        "Logical CPUs of the host.";
    MEM_TOTAL = "health_host_memory_total_bytes",
        "Host memory, bytes.";
    MEM_AVAIL = "health_host_memory_available_bytes",
        "Host memory available, bytes.";
    LOAD1 = "health_host_load1",
        "Host load average over 1 minute.";
    LOAD5 = "health_host_load5",
        "Host load average over 5 minutes.";
    LOAD15 = "health_host_load15",
        "Host load average over 15 minutes.";
    DISK_TOTAL = "health_host_disk_total_bytes",
        "Size of a watched file system, bytes.";
    DISK_AVAIL = "health_host_disk_available_bytes",
        "Space available on a watched file system, bytes.";
    PROC_RUNTIME = "health_process_runtime_seconds",
        "Seconds since a process matching a [[process]] rule started; process is the rule's name.";
    PROC_RSS = "health_process_resident_memory_bytes",
        "Resident memory of a watched process, bytes.";
    PROC_ZOMBIE = "health_process_zombie",
        "1 when a watched process is a zombie (exited, not reaped).";
    PROC_CPU = "health_process_cpu_percent",
        "CPU use of a watched process since the agent's previous scan, percent (100 = one core).";
    IOWAIT = "health_host_iowait_ratio",
        "Share of CPU time spent waiting for I/O over the agent's last host interval, 0 to 1.";
    LOG_IN_WINDOW = "health_log_matches_in_window",
        "Lines matching a [[log]] rule's pattern within its window (at most the rule's count).";
    CONDITION = "health_condition_active",
        "1 while a condition is active on the node: subject is a device id, \"host\", a mount point, a problem file or a process; code is the health.v1 ConditionCode.";
    CONDITION_SINCE = "health_condition_since_timestamp_seconds",
        "When an active condition began, Unix seconds.";
    DEVICE_INFO = "health_device_info",
        "Device identity (always 1): vendor, model, serial, firmware, backend.";
    DEVICE_STATE = "health_device_state",
        "Device health: 1 for the current state, 0 for the others.";
    DEVICE_ACTIVITY = "health_device_activity",
        "What the agent is doing with the device: 1 for the current activity, 0 for the others.";
    DEVICE_ENABLED = "health_device_enabled",
        "1 if the device is enabled, 0 if an operator disabled it.";
    FAILURES = "health_device_consecutive_failures",
        "Device reads that have failed in a row (0 after a good read).";
    LAST_READ = "health_device_last_read_timestamp_seconds",
        "When the device was last read successfully, Unix seconds (readings are at least this old).";
    POWER_LIMIT = "health_device_power_limit_watts",
        "Power limit set on the device, watts.";
    CALIBRATED = "health_device_calibration_timestamp_seconds",
        "When the device was last calibrated, Unix seconds.";
}

pub fn state_name(state: i32) -> &'static str {
    match pb::HealthState::try_from(state) {
        Ok(pb::HealthState::Ok) => "ok",
        Ok(pb::HealthState::Warning) => "warning",
        Ok(pb::HealthState::Critical) => "critical",
        _ => "unknown",
    }
}

pub fn kind_name(kind: i32) -> &'static str {
    match pb::DeviceKind::try_from(kind) {
        Ok(pb::DeviceKind::Loihi2) => "loihi2",
        Ok(pb::DeviceKind::Spinnaker) => "spinnaker",
        Ok(pb::DeviceKind::Photonic) => "photonic",
        Ok(pb::DeviceKind::AnalogCrossbar) => "analog_crossbar",
        _ => "unknown",
    }
}

pub fn severity_name(severity: i32) -> &'static str {
    match pb::Severity::try_from(severity) {
        Ok(pb::Severity::Info) => "info",
        Ok(pb::Severity::Warning) => "warning",
        Ok(pb::Severity::Critical) => "critical",
        _ => "unknown",
    }
}

/// The code as the proto names it (`PROCESS_STUCK`); a code this build does not know stays
/// distinguishable as `CODE_<n>`.
pub fn code_name(code: i32) -> String {
    match pb::ConditionCode::try_from(code) {
        Ok(c) => c.as_str_name().to_string(),
        Err(_) => format!("CODE_{code}"),
    }
}

pub fn seconds(t: &Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

fn one_hot(
    out: &mut Exposition,
    family: &Gauge,
    labels: &[(&str, &str)],
    key: &str,
    current: &str,
    all: impl Iterator<Item = &'static str>,
) {
    let mut writer = family.on(out);
    if !writer.is_on() {
        // A streamed scrape rendering another family: skip building the labels.
        return;
    }
    for value in all {
        let mut l = labels.to_vec();
        l.push((key, value));
        writer.sample(&l, if value == current { 1.0 } else { 0.0 });
    }
}

/// Adds one node's series. `state` is the node's health as the renderer's owner sees it (the
/// collector's view of a stale node is UNKNOWN); `fresh` is false for a stale node (see the
/// module comment).
pub fn render(out: &mut Exposition, snap: &pb::NodeSnapshot, state: i32, fresh: bool) {
    render_named(out, &snap.node, snap, state, fresh);
}

/// [`render`] with the `node` label given: the collector labels a node with the name it holds
/// it under (the report's), so one node is one label value however its snapshot names itself,
/// and a scrape that selects nodes by name selects exactly their series.
pub fn render_named(
    out: &mut Exposition,
    node: &str,
    snap: &pb::NodeSnapshot,
    state: i32,
    fresh: bool,
) {
    let n = [("node", node)];
    one_hot(
        out,
        &NODE_STATE,
        &n,
        "state",
        state_name(state),
        STATES.iter().map(|s| s.1),
    );
    if let Some(t) = &snap.taken_at {
        SNAPSHOT_TS.on(out).sample(&n, seconds(t));
    }
    if let Some(host) = &snap.host {
        render_host(out, node, host, fresh);
    }
    for device in &snap.devices {
        render_device(out, node, device, fresh);
    }
}

fn render_host(out: &mut Exposition, node: &str, host: &pb::HostHealth, fresh: bool) {
    let n = [("node", node)];
    let state = if fresh { host.state } else { 0 };
    one_hot(
        out,
        &HOST_STATE,
        &n,
        "state",
        state_name(state),
        STATES.iter().map(|s| s.1),
    );
    if fresh && host.observed_at.is_some() {
        CPU.on(out).sample(&n, host.cpu_utilization_ratio);
        CPUS.on(out).sample(&n, f64::from(host.cpu_count));
        MEM_TOTAL.on(out).sample(&n, host.memory_total_bytes as f64);
        MEM_AVAIL
            .on(out)
            .sample(&n, host.memory_available_bytes as f64);
        LOAD1.on(out).sample(&n, host.load1);
        LOAD5.on(out).sample(&n, host.load5);
        LOAD15.on(out).sample(&n, host.load15);
        for disk in &host.disks {
            let l = [("node", node), ("mountpoint", disk.mount_point.as_str())];
            DISK_TOTAL.on(out).sample(&l, disk.total_bytes as f64);
            DISK_AVAIL.on(out).sample(&l, disk.available_bytes as f64);
        }
        for p in &host.processes {
            let pid = p.pid.to_string();
            let l = [
                ("node", node),
                ("process", p.name.as_str()),
                ("pid", pid.as_str()),
            ];
            PROC_RUNTIME.on(out).sample(&l, p.runtime_seconds);
            PROC_RSS.on(out).sample(&l, p.rss_bytes as f64);
            let zombie = if p.state == "Z" { 1.0 } else { 0.0 };
            PROC_ZOMBIE.on(out).sample(&l, zombie);
            PROC_CPU.on(out).sample(&l, p.cpu_percent);
        }
        IOWAIT.on(out).sample(&n, host.iowait_ratio);
        out.counter(OOM_KILLS.0, OOM_KILLS.1)
            .sample(&n, host.oom_kills_total as f64);
        for r in &host.logs {
            let l = [("node", node), ("rule", r.name.as_str())];
            out.counter(LOG_MATCHES.0, LOG_MATCHES.1)
                .sample(&l, r.matches_total as f64);
            LOG_IN_WINDOW.on(out).sample(&l, r.matches_in_window as f64);
        }
    }
    for c in &host.conditions {
        let subject = if c.subject.is_empty() {
            "host"
        } else {
            c.subject.as_str()
        };
        render_condition(out, node, subject, c);
    }
}

fn render_condition(out: &mut Exposition, node: &str, subject: &str, c: &pb::Condition) {
    let code = code_name(c.code);
    let l = [
        ("node", node),
        ("subject", subject),
        ("code", code.as_str()),
        ("severity", severity_name(c.severity)),
    ];
    CONDITION.on(out).sample(&l, 1.0);
    if let Some(since) = &c.since {
        CONDITION_SINCE.on(out).sample(&l, seconds(since));
    }
}

fn render_device(out: &mut Exposition, node: &str, d: &pb::Device, fresh: bool) {
    let Some(id) = &d.identity else { return };
    let kind = kind_name(id.kind);
    let l = [("node", node), ("device", id.id.as_str()), ("kind", kind)];
    DEVICE_INFO.on(out).sample(
        &[
            ("node", node),
            ("device", id.id.as_str()),
            ("kind", kind),
            ("vendor", id.vendor.as_str()),
            ("model", id.model.as_str()),
            ("serial", id.serial.as_str()),
            ("firmware", id.firmware.as_str()),
            ("backend", id.backend.as_str()),
        ],
        1.0,
    );
    one_hot(
        out,
        &DEVICE_STATE,
        &l,
        "state",
        state_name(if fresh { d.state } else { 0 }),
        STATES.iter().map(|s| s.1),
    );
    let activity = pb::DeviceActivity::try_from(d.activity)
        .ok()
        .and_then(|a| ACTIVITIES.iter().find(|(x, _)| *x == a))
        .map_or("unknown", |(_, name)| name);
    one_hot(
        out,
        &DEVICE_ACTIVITY,
        &l,
        "activity",
        activity,
        ACTIVITIES.iter().map(|a| a.1),
    );
    DEVICE_ENABLED
        .on(out)
        .sample(&l, if d.enabled { 1.0 } else { 0.0 });
    FAILURES.on(out).sample(&l, d.consecutive_failures as f64);
    if let Some(t) = &d.last_read_at {
        LAST_READ.on(out).sample(&l, seconds(t));
    }
    if let Some(w) = d.power_limit_watts {
        POWER_LIMIT.on(out).sample(&l, w);
    }
    if let Some(t) = d
        .calibration
        .as_ref()
        .and_then(|c| c.calibrated_at.as_ref())
    {
        CALIBRATED.on(out).sample(&l, seconds(t));
    }
    if fresh {
        for r in &d.readings {
            let Some(mut family) = pb::Quantity::try_from(r.quantity)
                .ok()
                .and_then(|q| quantity_on(out, q))
            else {
                continue;
            };
            let rl = [
                ("node", node),
                ("device", id.id.as_str()),
                ("kind", kind),
                ("sensor", r.sensor.as_str()),
            ];
            family.sample(&rl, r.value);
        }
    }
    for c in &d.conditions {
        let subject = if c.subject.is_empty() {
            id.id.as_str()
        } else {
            c.subject.as_str()
        };
        render_condition(out, node, subject, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> pb::NodeSnapshot {
        pb::NodeSnapshot {
            node: "n1".into(),
            state: pb::HealthState::Warning as i32,
            host: Some(pb::HostHealth {
                state: pb::HealthState::Ok as i32,
                memory_total_bytes: 8 << 30,
                observed_at: Some(Timestamp {
                    seconds: 10,
                    nanos: 0,
                }),
                conditions: vec![pb::Condition {
                    code: pb::ConditionCode::NotConverging as i32,
                    severity: pb::Severity::Warning as i32,
                    subject: "/data/p \"1\".npy".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            devices: vec![pb::Device {
                identity: Some(pb::DeviceIdentity {
                    id: "photonic-0".into(),
                    kind: pb::DeviceKind::Photonic as i32,
                    ..Default::default()
                }),
                state: pb::HealthState::Warning as i32,
                readings: vec![
                    pb::Reading {
                        sensor: "tec".into(),
                        quantity: pb::Quantity::TemperatureCelsius as i32,
                        value: 31.25,
                        observed_at: None,
                    },
                    pb::Reading {
                        sensor: "chip".into(),
                        quantity: 999,
                        value: 1.0,
                        observed_at: None,
                    },
                ],
                conditions: vec![pb::Condition {
                    code: 77,
                    severity: pb::Severity::Critical as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn readings_states_and_conditions_become_labelled_series() {
        let mut out = Exposition::new();
        render(&mut out, &snapshot(), pb::HealthState::Warning as i32, true);
        let text = out.render();
        for line in [
            "health_node_state{node=\"n1\",state=\"warning\"} 1\n",
            "health_node_state{node=\"n1\",state=\"ok\"} 0\n",
            "health_device_temperature_celsius{node=\"n1\",device=\"photonic-0\",kind=\"photonic\",sensor=\"tec\"} 31.25\n",
            "health_device_state{node=\"n1\",device=\"photonic-0\",kind=\"photonic\",state=\"warning\"} 1\n",
            "health_condition_active{node=\"n1\",subject=\"/data/p \\\"1\\\".npy\",code=\"NOT_CONVERGING\",severity=\"warning\"} 1\n",
            // A code from a newer agent stays distinguishable; its subject defaults to the device.
            "health_condition_active{node=\"n1\",subject=\"photonic-0\",code=\"CODE_77\",severity=\"critical\"} 1\n",
            "health_host_memory_total_bytes{node=\"n1\"} 8589934592\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("sensor=\"chip\""),
            "unknown quantity skipped"
        );
    }

    #[test]
    fn watched_processes_become_series_labelled_by_rule_and_pid() {
        let mut snap = snapshot();
        if let Some(host) = snap.host.as_mut() {
            host.processes = vec![pb::ProcessStatus {
                name: "ngspice".into(),
                pid: 4242,
                state: "Z".into(),
                runtime_seconds: 125.5,
                rss_bytes: 5_000_000_000,
                ..Default::default()
            }];
        }
        let mut out = Exposition::new();
        render(&mut out, &snap, snap.state, true);
        let text = out.render();
        let l = "{node=\"n1\",process=\"ngspice\",pid=\"4242\"}";
        assert!(
            text.contains(&format!("health_process_runtime_seconds{l} 125.5\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "health_process_resident_memory_bytes{l} 5000000000\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("health_process_zombie{l} 1\n")),
            "{text}"
        );
    }

    #[test]
    fn a_stale_node_keeps_conditions_but_not_readings() {
        let mut out = Exposition::new();
        render(
            &mut out,
            &snapshot(),
            pb::HealthState::Unknown as i32,
            false,
        );
        let text = out.render();
        assert!(
            !text.contains("health_device_temperature_celsius{"),
            "{text}"
        );
        assert!(!text.contains("health_host_memory_total_bytes{"), "{text}");
        assert!(text.contains("health_node_state{node=\"n1\",state=\"unknown\"} 1\n"));
        assert!(text.contains(
            "health_device_state{node=\"n1\",device=\"photonic-0\",kind=\"photonic\",state=\"unknown\"} 1\n"
        ));
        assert!(text.contains("code=\"NOT_CONVERGING\""));
    }
}
