//! The configuration as written: serde structs that mirror the TOML tables key for key.
//!
//! Kept apart from the checked types in [`super`] because serde alone cannot say what is
//! wrong with a value (a duration is a string here, a range is unchecked); `deny_unknown_fields`
//! is what catches a misspelt key, and [`super::validate`] turns these into checked config.

use std::path::PathBuf;

use health_hal::bmp::BmpConfig;
use health_hal::loihi::Loihi2Config;
use health_hal::plugin::PluginConfig;
use health_hal::scpi::ScpiBenchConfig;
use health_hal::sysfs::SysfsConfig;
use health_hal::DeviceKind;
use serde::Deserialize;

use super::cleanup::RawCleanup;
use super::log::RawLog;
use super::policy::{RawPolicy, RawRemediation};
use super::process::RawProcess;
use super::service::RawService;
use super::AuthConfig;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) node: Option<String>,
    pub(super) socket: Option<PathBuf>,
    pub(super) tcp_listen: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) report_interval: Option<String>,
    pub(super) collector: Option<String>,
    pub(super) collectors: Option<Vec<String>>,
    pub(super) max_message_bytes: Option<u64>,
    pub(super) sysfs_root: Option<PathBuf>,
    #[serde(default)]
    pub(super) uplink: RawUplink,
    #[serde(default)]
    pub(super) host: RawHost,
    #[serde(default)]
    pub(super) device: Vec<RawDevice>,
    #[serde(default)]
    pub(super) discover: Vec<RawDiscover>,
    #[serde(default)]
    pub(super) probe: RawProbe,
    #[serde(default)]
    pub(super) process: Vec<RawProcess>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
    #[serde(default)]
    pub(super) log: Vec<RawLog>,
    #[serde(default)]
    pub(super) cleanup: Vec<RawCleanup>,
    #[serde(default)]
    pub(super) auth: AuthConfig,
    #[serde(default)]
    pub(super) tls: RawTls,
    pub(super) audit_log: Option<PathBuf>,
    #[serde(default)]
    pub(super) safety: RawSafety,
    #[serde(default)]
    pub(super) remediation: RawRemediation,
    #[serde(default)]
    pub(super) policy: Vec<RawPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<PathBuf>,
    pub(super) key: Option<PathBuf>,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) collector_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSafety {
    pub(super) cooldown: Option<String>,
    pub(super) max_resets_per_hour: Option<u64>,
    pub(super) max_maintenance: Option<String>,
    pub(super) access_denied_count: Option<u64>,
    pub(super) access_denied_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProbe {
    #[serde(default)]
    pub(super) watch: Vec<String>,
    pub(super) dirs: Option<Vec<PathBuf>>,
    pub(super) interval: Option<String>,
    pub(super) time_budget: Option<String>,
    pub(super) max_bytes: Option<u64>,
    pub(super) kappa_threshold: Option<f64>,
    pub(super) bits: Option<u64>,
    pub(super) read_noise: Option<f64>,
    pub(super) rtol: Option<f64>,
    pub(super) max_iter: Option<u64>,
    pub(super) restart: Option<u64>,
    pub(super) method: Option<String>,
    pub(super) preconditioner: Option<String>,
    pub(super) known_answer: Option<RawKnownAnswer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKnownAnswer {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<String>,
    pub(super) deadline: Option<String>,
    pub(super) steps: Option<u64>,
    pub(super) target_error: Option<f64>,
    pub(super) drift_ratio: Option<f64>,
    pub(super) bits: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscover {
    pub(super) kind: DeviceKind,
    pub(super) id_prefix: String,
    /// `"vendor"` or `"vendor:device"`, hex (`"1e52:0001"`).
    pub(super) pci: Option<String>,
    /// hwmon chip name.
    pub(super) hwmon: Option<String>,
    pub(super) poll_interval: Option<String>,
    pub(super) deadline: Option<String>,
    pub(super) action_deadline: Option<String>,
    #[serde(default)]
    pub(super) sysfs: Option<SysfsConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUplink {
    pub(super) buffer_reports: Option<u64>,
    pub(super) backoff_initial: Option<String>,
    pub(super) backoff_max: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) ack_timeout: Option<String>,
    pub(super) spill_path: Option<PathBuf>,
    pub(super) spill_max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHost {
    pub(super) interval: Option<String>,
    pub(super) deadline: Option<String>,
    pub(super) memory_warning_ratio: Option<f64>,
    pub(super) memory_critical_ratio: Option<f64>,
    pub(super) disk_warning_ratio: Option<f64>,
    pub(super) disk_critical_ratio: Option<f64>,
    pub(super) load_warning_per_cpu: Option<f64>,
    pub(super) proc_root: Option<PathBuf>,
    pub(super) iowait_warning_ratio: Option<f64>,
    pub(super) oom_hold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub(super) id: String,
    pub(super) kind: DeviceKind,
    pub(super) backend: String,
    pub(super) poll_interval: Option<String>,
    pub(super) deadline: Option<String>,
    pub(super) action_deadline: Option<String>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    /// Start a simulator that speaks this backend's real protocol on loopback, and talk to it
    /// (the `--simulate` default uses this for the SCPI bench).
    #[serde(default)]
    pub(super) simulator: bool,
    pub(super) sim: Option<RawSim>,
    pub(super) bmp: Option<BmpConfig>,
    pub(super) scpi: Option<ScpiBenchConfig>,
    pub(super) plugin: Option<PluginConfig>,
    pub(super) sysfs: Option<SysfsConfig>,
    pub(super) loihi2: Option<Loihi2Config>,
    /// Overrides of `[safety]` for this device.
    pub(super) cooldown: Option<String>,
    pub(super) max_resets_per_hour: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) temperature_warning_celsius: Option<f64>,
    pub(super) temperature_critical_celsius: Option<f64>,
    pub(super) calibration_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSim {
    pub(super) reset_failure_probability: Option<f64>,
    pub(super) seed: Option<u64>,
}
