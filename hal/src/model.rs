//! Plain data types of the device model. They mirror `health.v1` closely but carry no protobuf,
//! so the HAL and its tests stay free of the wire format.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Loihi2,
    Spinnaker,
    Photonic,
    AnalogCrossbar,
}

impl DeviceKind {
    pub const ALL: [DeviceKind; 4] = [
        DeviceKind::Loihi2,
        DeviceKind::Spinnaker,
        DeviceKind::Photonic,
        DeviceKind::AnalogCrossbar,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Loihi2 => "loihi2",
            DeviceKind::Spinnaker => "spinnaker",
            DeviceKind::Photonic => "photonic",
            DeviceKind::AnalogCrossbar => "analog_crossbar",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Agent-local stable id, e.g. `loihi-0`.
    pub id: String,
    pub kind: DeviceKind,
    pub vendor: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    /// Backend name: `sim`, `sysfs`, `bmp`, `scpi`, `plugin`.
    pub backend: String,
    /// Where the device is reached: bus address, `ip:port`, sysfs path.
    pub location: String,
}

/// What a reading measures; the unit is fixed by the quantity (base units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantity {
    TemperatureCelsius,
    PowerWatts,
    EnergyJoules,
    VoltageVolts,
    CurrentAmperes,
    FanRpm,
    PhaseErrorRadians,
    OpticalPowerWatts,
    ConductanceDriftRatio,
    StuckCellsRatio,
    EffectiveBits,
    CalibrationAgeSeconds,
    SetpointCelsius,
}

impl Quantity {
    /// Unit suffix used in tables and metric names.
    pub fn unit(self) -> &'static str {
        match self {
            Quantity::TemperatureCelsius | Quantity::SetpointCelsius => "celsius",
            Quantity::PowerWatts | Quantity::OpticalPowerWatts => "watts",
            Quantity::EnergyJoules => "joules",
            Quantity::VoltageVolts => "volts",
            Quantity::CurrentAmperes => "amperes",
            Quantity::FanRpm => "rpm",
            Quantity::PhaseErrorRadians => "radians",
            Quantity::ConductanceDriftRatio | Quantity::StuckCellsRatio => "ratio",
            Quantity::EffectiveBits => "bits",
            Quantity::CalibrationAgeSeconds => "seconds",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: String,
    pub quantity: Quantity,
    pub value: f64,
    pub observed_at: SystemTime,
}

impl Reading {
    pub fn new(sensor: impl Into<String>, quantity: Quantity, value: f64, at: SystemTime) -> Self {
        Reading {
            sensor: sensor.into(),
            quantity,
            value,
            observed_at: at,
        }
    }
}

/// When and at what temperature a device was last calibrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationRecord {
    pub calibrated_at: SystemTime,
    pub temperature_celsius: f64,
}

/// One read of a device: everything a backend can tell in one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub readings: Vec<Reading>,
    pub calibration: Option<CalibrationRecord>,
    /// Power limit in force, if the device has one.
    pub power_limit_watts: Option<f64>,
    /// Whether the device is powered (a SpiNNaker board can be off while its BMP answers).
    pub powered: bool,
    /// Conditions the backend itself detected (a degraded PCIe link, a BMP warning flag, a
    /// failed self-test), beside those that [`crate::health::evaluate`] derives from readings.
    pub conditions: Vec<Condition>,
}

impl Sample {
    /// First reading of `quantity` from `sensor`.
    pub fn get(&self, sensor: &str, quantity: Quantity) -> Option<f64> {
        self.readings
            .iter()
            .find(|r| r.sensor == sensor && r.quantity == quantity)
            .map(|r| r.value)
    }

    /// Largest reading of `quantity` over all sensors.
    pub fn max_of(&self, quantity: Quantity) -> Option<(&str, f64)> {
        self.readings
            .iter()
            .filter(|r| r.quantity == quantity && r.value.is_finite())
            .max_by(|a, b| a.value.total_cmp(&b.value))
            .map(|r| (r.sensor.as_str(), r.value))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    ResetSoft,
    ResetHard,
    PowerCycle,
    Calibrate,
    SetPowerLimit,
    EnableDisable,
    FaultInjection,
    Matvec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResetKind {
    Soft,
    Hard,
    PowerCycle,
}

impl ResetKind {
    pub fn capability(self) -> Capability {
        match self {
            ResetKind::Soft => Capability::ResetSoft,
            ResetKind::Hard => Capability::ResetHard,
            ResetKind::PowerCycle => Capability::PowerCycle,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ResetKind::Soft => "soft",
            ResetKind::Hard => "hard",
            ResetKind::PowerCycle => "power-cycle",
        }
    }
}

/// Faults a simulated device can be told to develop at runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Cooling fails: thermal resistance rises and the device heats up.
    Overheat,
    /// Every in-band call (read, soft reset, calibrate, power limit) never returns. A hard reset
    /// or power cycle, being out of band, clears it.
    Hang,
    /// Calibration drift accelerates five-hundredfold.
    Drift,
    /// Every reset fails (after taking its time).
    FailingReset,
    /// The device disappears: every call fails with [`crate::HalError::Vanished`].
    Vanish,
    /// Remove every injected fault.
    Clear,
}

impl FaultKind {
    pub const NAMES: &'static str = "overheat, hang, drift, failing-reset, vanish, clear";
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Overheat => "overheat",
            FaultKind::Hang => "hang",
            FaultKind::Drift => "drift",
            FaultKind::FailingReset => "failing-reset",
            FaultKind::Vanish => "vanish",
            FaultKind::Clear => "clear",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "overheat" => FaultKind::Overheat,
            "hang" => FaultKind::Hang,
            "drift" => FaultKind::Drift,
            "failing-reset" => FaultKind::FailingReset,
            "vanish" => FaultKind::Vanish,
            "clear" => FaultKind::Clear,
            other => {
                return Err(format!(
                    "unknown fault kind {other:?}: expected one of {}",
                    FaultKind::NAMES
                ))
            }
        })
    }
}

/// Health of a device, host or node. `Ord` is the roll-up order: the worst wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum HealthState {
    #[default]
    Ok,
    /// No fresh data: worse than OK, not itself a fault.
    Unknown,
    Warning,
    Critical,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "OK",
            HealthState::Unknown => "UNKNOWN",
            HealthState::Warning => "WARNING",
            HealthState::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn health(self) -> HealthState {
        match self {
            Severity::Info => HealthState::Ok,
            Severity::Warning => HealthState::Warning,
            Severity::Critical => HealthState::Critical,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConditionCode {
    ThermalWarning,
    ThermalCritical,
    PowerOverLimit,
    CalibrationStale,
    CalibrationDrift,
    DeviceUnresponsive,
    DeviceMissing,
    LinkDegraded,
    ResetFailed,
    IllConditioned,
    NotConverging,
    PrecisionInsufficient,
    HostMemoryHigh,
    DiskFull,
    ProcessStuck,
    HostLoadHigh,
    DeviceDisabled,
    DeviceError,
    /// A TEC-held device is away from its setpoint (distinct from an absolute over-temperature).
    TecSetpointDeviation,
    /// A watched process has exited but its parent has not reaped it.
    ProcessZombie,
    /// A watched service that must be running has no process.
    ProcessMissing,
    /// The agent's audit log could not be opened or written: actions are refused.
    AuditLogUnwritable,
    /// A remediation ladder ran out of steps with its condition still present.
    RemediationExhausted,
    /// Callers were refused (PERMISSION_DENIED) repeatedly within a window.
    AccessDenied,
    /// The subject is in maintenance (an operator's window, or a SLURM drain/reservation): shown,
    /// never paged, and no remediation policy acts on it.
    Maintenance,
    /// The solver probe could not judge a matrix (unreadable, too big, errored, overran, busy).
    ProbeFailed,
    /// A watched service's systemd unit is not active.
    ServiceDown,
    /// A watched service's health URL did not answer 2xx in time.
    ServiceUnhealthy,
    /// A watched service's TCP port has no listener.
    PortNotListening,
    /// A `[[log]]` rule's pattern matched often enough within its window.
    LogPattern,
    /// The kernel's OOM killer killed a process.
    HostOomKill,
    /// The CPUs spend too much of their time waiting for I/O.
    HostIowaitHigh,
}

impl ConditionCode {
    /// Every code, in declaration order (for parsing names in configuration).
    pub const ALL: [ConditionCode; 32] = [
        ConditionCode::ThermalWarning,
        ConditionCode::ThermalCritical,
        ConditionCode::PowerOverLimit,
        ConditionCode::CalibrationStale,
        ConditionCode::CalibrationDrift,
        ConditionCode::DeviceUnresponsive,
        ConditionCode::DeviceMissing,
        ConditionCode::LinkDegraded,
        ConditionCode::ResetFailed,
        ConditionCode::IllConditioned,
        ConditionCode::NotConverging,
        ConditionCode::PrecisionInsufficient,
        ConditionCode::HostMemoryHigh,
        ConditionCode::DiskFull,
        ConditionCode::ProcessStuck,
        ConditionCode::HostLoadHigh,
        ConditionCode::DeviceDisabled,
        ConditionCode::DeviceError,
        ConditionCode::TecSetpointDeviation,
        ConditionCode::ProcessZombie,
        ConditionCode::ProcessMissing,
        ConditionCode::AuditLogUnwritable,
        ConditionCode::RemediationExhausted,
        ConditionCode::AccessDenied,
        ConditionCode::Maintenance,
        ConditionCode::ProbeFailed,
        ConditionCode::ServiceDown,
        ConditionCode::ServiceUnhealthy,
        ConditionCode::PortNotListening,
        ConditionCode::LogPattern,
        ConditionCode::HostOomKill,
        ConditionCode::HostIowaitHigh,
    ];

    /// The code named `name` (`"DEVICE_UNRESPONSIVE"`, case-insensitive).
    pub fn parse(name: &str) -> Option<ConditionCode> {
        ConditionCode::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name.trim()))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConditionCode::ThermalWarning => "THERMAL_WARNING",
            ConditionCode::ThermalCritical => "THERMAL_CRITICAL",
            ConditionCode::PowerOverLimit => "POWER_OVER_LIMIT",
            ConditionCode::CalibrationStale => "CALIBRATION_STALE",
            ConditionCode::CalibrationDrift => "CALIBRATION_DRIFT",
            ConditionCode::DeviceUnresponsive => "DEVICE_UNRESPONSIVE",
            ConditionCode::DeviceMissing => "DEVICE_MISSING",
            ConditionCode::LinkDegraded => "LINK_DEGRADED",
            ConditionCode::ResetFailed => "RESET_FAILED",
            ConditionCode::IllConditioned => "ILL_CONDITIONED",
            ConditionCode::NotConverging => "NOT_CONVERGING",
            ConditionCode::PrecisionInsufficient => "PRECISION_INSUFFICIENT",
            ConditionCode::HostMemoryHigh => "HOST_MEMORY_HIGH",
            ConditionCode::DiskFull => "DISK_FULL",
            ConditionCode::ProcessStuck => "PROCESS_STUCK",
            ConditionCode::HostLoadHigh => "HOST_LOAD_HIGH",
            ConditionCode::DeviceDisabled => "DEVICE_DISABLED",
            ConditionCode::DeviceError => "DEVICE_ERROR",
            ConditionCode::TecSetpointDeviation => "TEC_SETPOINT_DEVIATION",
            ConditionCode::ProcessZombie => "PROCESS_ZOMBIE",
            ConditionCode::ProcessMissing => "PROCESS_MISSING",
            ConditionCode::AuditLogUnwritable => "AUDIT_LOG_UNWRITABLE",
            ConditionCode::RemediationExhausted => "REMEDIATION_EXHAUSTED",
            ConditionCode::AccessDenied => "ACCESS_DENIED",
            ConditionCode::Maintenance => "MAINTENANCE",
            ConditionCode::ProbeFailed => "PROBE_FAILED",
            ConditionCode::ServiceDown => "SERVICE_DOWN",
            ConditionCode::ServiceUnhealthy => "SERVICE_UNHEALTHY",
            ConditionCode::PortNotListening => "PORT_NOT_LISTENING",
            ConditionCode::LogPattern => "LOG_PATTERN",
            ConditionCode::HostOomKill => "HOST_OOM_KILL",
            ConditionCode::HostIowaitHigh => "HOST_IOWAIT_HIGH",
        }
    }

    /// The runbook step an operator (or a later policy) follows to fix it.
    pub fn runbook(self) -> &'static str {
        match self {
            ConditionCode::ThermalWarning => {
                "device-overheating: check cooling and airflow; lower the power limit (agent-ctl set-power-limit)"
            }
            ConditionCode::ThermalCritical => {
                "device-overheating: lower the power limit now; if it keeps rising, disable the device (agent-ctl disable)"
            }
            ConditionCode::PowerOverLimit => "device-overheating: re-apply the power limit; check the workload",
            ConditionCode::CalibrationStale => "calibration: run a calibration (agent-ctl calibrate)",
            ConditionCode::CalibrationDrift => {
                "calibration: run a thermal recalibration (agent-ctl calibrate); if drift returns fast, check TEC/temperature"
            }
            ConditionCode::DeviceUnresponsive => {
                "device-unresponsive: soft reset, then hard reset (agent-ctl reset-device --soft, then --hard)"
            }
            ConditionCode::DeviceMissing => {
                "device-unresponsive: check power, cabling and driver binding; hard reset or power cycle"
            }
            ConditionCode::LinkDegraded => "device-unresponsive: check the link; reseat or hard reset",
            ConditionCode::ResetFailed => {
                "device-unresponsive: escalate to a power cycle; if that fails, disable the device and open a hardware ticket"
            }
            ConditionCode::IllConditioned => "convergence-failure: regularize and scale the system",
            ConditionCode::NotConverging => {
                "convergence-failure: try Jacobi/ILU preconditioning, GMRES restarts or a relaxed tolerance"
            }
            ConditionCode::PrecisionInsufficient => {
                "convergence-failure: use mixed-precision refinement or move the problem to the host"
            }
            ConditionCode::HostMemoryHigh => "memory-exhaustion: find the largest processes; kill stuck simulations",
            ConditionCode::DiskFull => "disk-full: rotate logs and remove old solver outputs",
            ConditionCode::ProcessStuck => "spice-timeout: kill the stuck run by pid",
            ConditionCode::HostLoadHigh => "high-load: find runaway processes; throttle submissions",
            ConditionCode::DeviceDisabled => "device disabled by an operator: enable it when maintenance is done",
            ConditionCode::DeviceError => "device-unresponsive: read the agent log for the backend error",
            ConditionCode::TecSetpointDeviation => {
                "device-overheating: check the TEC output and its current limit; recalibrate once it holds the setpoint"
            }
            ConditionCode::ProcessZombie => {
                "spice-timeout: the run has exited but its parent (ppid in the message) has not reaped it; restart or signal the parent"
            }
            ConditionCode::ProcessMissing => {
                "solver-down: check the service (systemctl status, journalctl -u) and restart it"
            }
            ConditionCode::RemediationExhausted => {
                "device-unresponsive: automatic remediation ran every step of its ladder (agent-ctl remediation shows them); open a hardware ticket, then agent-ctl remediation clear"
            }
            ConditionCode::AuditLogUnwritable => {
                "actions are refused until the audit log can be written: free the disk or fix the file's owner and mode (audit_log in agent.toml), then retry with agent-ctl --dry-run"
            }
            ConditionCode::AccessDenied => {
                "access-denied: callers without the role keep being refused; check who they are (agent-ctl audit shows the denied entries), fix [auth] if they should act, else find out why they try"
            }
            ConditionCode::Maintenance => {
                "maintenance: nothing to do while the work lasts; agent-ctl maintenance list shows who and why; a SLURM drain ends with scontrol update state=resume"
            }
            ConditionCode::ProbeFailed => {
                "convergence-failure: the probe could not judge the matrix (the message says why); check the file and [probe] max_file_bytes/time_budget, then agent-ctl probe FILE"
            }
            ConditionCode::ServiceDown => {
                "solver-down: systemctl status UNIT and journalctl -u UNIT; restart it (agent-ctl restart-service NAME)"
            }
            ConditionCode::ServiceUnhealthy => {
                "solver-down: the health URL fails (curl -I it); read the service's log, then restart it (agent-ctl restart-service NAME)"
            }
            ConditionCode::PortNotListening => {
                "solver-down: nothing listens on the port (ss -tlnp); check the service started and its bind address, then restart it"
            }
            ConditionCode::LogPattern => {
                "log-errors: the message has the last matching line; read the log around it (agent-ctl status shows the files)"
            }
            ConditionCode::HostOomKill => {
                "memory-exhaustion: the kernel killed a process (the message names it when the kernel log is readable); find what grew, lower the job's size or add memory"
            }
            ConditionCode::HostIowaitHigh => {
                "high-load: the CPUs wait on storage (iostat -x 1); find the process writing (iotop), move temporary files off the slow disk"
            }
        }
    }
}

impl fmt::Display for ConditionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub code: ConditionCode,
    pub severity: Severity,
    /// Device id, `host`, a mount point or a process.
    pub subject: String,
    /// What is wrong, with the numbers in it.
    pub message: String,
    pub since: SystemTime,
}

impl Condition {
    pub fn new(
        code: ConditionCode,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
        since: SystemTime,
    ) -> Self {
        Condition {
            code,
            severity,
            subject: subject.into(),
            message: message.into(),
            since,
        }
    }
}

/// Worst health implied by a set of conditions (OK when there are none).
pub fn rollup<'a>(conditions: impl IntoIterator<Item = &'a Condition>) -> HealthState {
    conditions
        .into_iter()
        .map(|c| c.severity.health())
        .max()
        .unwrap_or(HealthState::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_is_worst_first() {
        let t = SystemTime::now();
        let w = Condition::new(ConditionCode::ThermalWarning, Severity::Warning, "d", "", t);
        let c = Condition::new(
            ConditionCode::ThermalCritical,
            Severity::Critical,
            "d",
            "",
            t,
        );
        let i = Condition::new(ConditionCode::DeviceDisabled, Severity::Info, "d", "", t);
        assert_eq!(rollup([]), HealthState::Ok);
        assert_eq!(rollup([&i]), HealthState::Ok);
        assert_eq!(rollup([&i, &w]), HealthState::Warning);
        assert_eq!(rollup([&w, &c, &i]), HealthState::Critical);
        assert!(
            HealthState::Unknown > HealthState::Ok && HealthState::Unknown < HealthState::Warning
        );
    }

    #[test]
    fn condition_codes_parse_by_name_whatever_the_case() {
        for c in ConditionCode::ALL {
            assert_eq!(ConditionCode::parse(c.as_str()), Some(c));
            assert_eq!(ConditionCode::parse(&c.as_str().to_lowercase()), Some(c));
        }
        let mut names: Vec<&str> = ConditionCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ConditionCode::ALL.len(), "each code once");
        assert_eq!(ConditionCode::parse("DEVICE_ON_FIRE"), None);
    }

    #[test]
    fn fault_kinds_parse_with_a_clear_error() {
        assert_eq!(
            "failing_reset".parse::<FaultKind>(),
            Ok(FaultKind::FailingReset)
        );
        assert_eq!("HANG".parse::<FaultKind>(), Ok(FaultKind::Hang));
        let err = "melt".parse::<FaultKind>().unwrap_err();
        assert!(err.contains("melt") && err.contains("overheat"), "{err}");
    }
}
