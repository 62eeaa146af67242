//! The agent's TOML configuration: parsing, validation and the embedded `--simulate` default.
//!
//! Parsing is two steps. Serde maps the file onto raw structs (unknown keys and wrong types are
//! rejected there, and `serde_path_to_error` names the key). Then [`RawConfig::validate`] checks
//! ranges and turns strings into durations and addresses. Every error is a [`ConfigError`] that
//! names the file, the key and what was expected, so an operator can fix it without reading
//! the source.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use health_hal::bmp::{BmpBoard, BmpConfig};
use health_hal::loihi::Loihi2Config;
use health_hal::plugin::PluginConfig;
use health_hal::scpi::ScpiBenchConfig;
use health_hal::sim::SimOptions;
use health_hal::sysfs::SysfsConfig;
use health_hal::{DeviceKind, Limits};
use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/health-agent/agent.toml";
pub const DEFAULT_SOCKET_PATH: &str = "/run/health-agent/agent.sock";

/// The configuration `--simulate` runs: one simulated device of each kind.
pub const SIMULATE_TOML: &str = include_str!("simulate.toml");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    pub socket: PathBuf,
    pub tcp_listen: Option<SocketAddr>,
    /// Where `/metrics` is served over plain HTTP (Prometheus text format); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    pub report_interval: Duration,
    /// The first of `collectors` (kept for code that names one collector, e.g. logs).
    pub collector: Option<String>,
    /// Collectors in order of preference; the uplink fails over along this list.
    pub collectors: Vec<String>,
    pub max_message_bytes: usize,
    /// Where sysfs is mounted for the Loihi 2 backend's sensors (tests use a fixture tree).
    pub sysfs_root: PathBuf,
    pub uplink: UplinkConfig,
    pub host: HostConfig,
    pub devices: Vec<DeviceConfig>,
    pub discover: Vec<DiscoveryRule>,
    pub probe: ProbeConfig,
    /// `[[process]]`: processes the watchdog follows (see `procwatch`).
    pub processes: Vec<crate::host::procwatch::ProcessRule>,
    /// `[auth]`: roles (see `auth.rs`).
    pub auth: AuthConfig,
    /// `[tls]`: certificates for the TCP listener and the uplink.
    pub tls: TlsConfig,
    /// The hash-chained audit log of every mutating action (see `audit.rs`).
    pub audit_log: PathBuf,
    /// `[safety]` defaults and per-device overrides (see `safety.rs`).
    pub safety: SafetyConfig,
}

pub const DEFAULT_AUDIT_LOG: &str = "/var/lib/health-agent/audit.jsonl";

/// `[auth]`, as written; group names are resolved when the daemon starts (`auth::Policy`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Group that owns the Unix socket (mode 0660); default: the agent's own group.
    pub socket_group: Option<String>,
    #[serde(default)]
    pub operator_uids: Vec<u32>,
    #[serde(default)]
    pub operator_groups: Vec<String>,
    /// When both reader lists are empty, anyone who can open the socket is a reader.
    #[serde(default)]
    pub reader_uids: Vec<u32>,
    #[serde(default)]
    pub reader_groups: Vec<String>,
    /// TLS client certificate subjects (CN or SAN) that are operators.
    #[serde(default)]
    pub operator_subjects: Vec<String>,
    /// When empty, any client certificate signed by `tls.client_ca` is a reader.
    #[serde(default)]
    pub reader_subjects: Vec<String>,
}

/// `[tls]`: PEM files. `cert`/`key` are the agent's identity, for its TCP listener and as
/// the uplink's client certificate; `client_ca` verifies clients of the TCP listener (mutual
/// TLS, required whenever the listener has TLS); `collector_ca` verifies the collector.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub collector_ca: Option<PathBuf>,
}

/// Limits on how often a device may be acted on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSafety {
    /// Least time between the end of one mutating action and the start of the next.
    pub cooldown: Duration,
    /// Most resets (of any kind) started in any one-hour window.
    pub max_resets_per_hour: u32,
}

#[derive(Debug, Clone)]
pub struct SafetyConfig {
    pub default: DeviceSafety,
    pub per_device: std::collections::HashMap<String, DeviceSafety>,
}

impl SafetyConfig {
    pub fn for_device(&self, id: &str) -> DeviceSafety {
        self.per_device.get(id).copied().unwrap_or(self.default)
    }
}

#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub buffer_reports: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
    /// A collector that has not acknowledged the oldest sent report within this time is
    /// treated as dead and the stream is reopened.
    pub ack_timeout: Duration,
    /// Where unacknowledged reports are kept on disk (a directory), so that neither a long
    /// outage nor an agent restart loses them; `None` keeps them in memory only.
    pub spill_path: Option<PathBuf>,
    /// Most bytes of unacknowledged reports kept in the spill; beyond it the oldest are dropped.
    pub spill_max_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct HostConfig {
    pub interval: Duration,
    pub deadline: Duration,
    pub memory_warning_ratio: f64,
    pub memory_critical_ratio: f64,
    pub disk_warning_ratio: f64,
    pub disk_critical_ratio: f64,
    pub load_warning_per_cpu: f64,
}

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub kind: DeviceKind,
    pub backend: Backend,
    pub poll_interval: Duration,
    pub deadline: Duration,
    pub action_deadline: Duration,
    pub limits: Limits,
    /// Run a loopback simulator of the backend's protocol and point the backend at it.
    pub simulator: bool,
}

/// `[probe]`: the solver probe's watched files and budgets (see `probe.rs`).
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Glob patterns of problem files analyzed every `interval`.
    pub watch: Vec<String>,
    /// Directories on-demand `ProbeMatrix` paths must lie under (default: the watched
    /// patterns' directories).
    pub dirs: Vec<PathBuf>,
    pub interval: Duration,
    pub time_budget: Duration,
    pub max_bytes: usize,
    pub kappa_threshold: f64,
    pub bits: Option<u32>,
    pub read_noise: f64,
    pub known_answer: KnownAnswerConfig,
}

/// `[probe.known_answer]`: the known-answer device probe (see `known_answer.rs`), run by the
/// supervisor of every device with the MATVEC capability.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownAnswerConfig {
    pub enabled: bool,
    pub interval: Duration,
    /// Bound on one probe, every device product included: a device's regular reads wait at
    /// most this long behind a probe.
    pub deadline: Duration,
    /// Device products per probe at most.
    pub steps: usize,
    /// Relative error against the host's f64 solution the refinement must reach within
    /// `steps`; a freshly calibrated array that cannot is PRECISION_INSUFFICIENT.
    pub target_error: f64,
    /// Contraction rate, as a multiple of the rate measured right after calibration, above
    /// which the array has drifted (CALIBRATION_DRIFT).
    pub drift_ratio: f64,
    /// Bits of the array, for the drift floor 2^-bits; default: the device's EFFECTIVE_BITS
    /// reading, else 8.
    pub bits: Option<u32>,
}

impl Default for KnownAnswerConfig {
    fn default() -> Self {
        KnownAnswerConfig {
            enabled: true,
            interval: Duration::from_secs(300),
            deadline: Duration::from_secs(2),
            steps: 10,
            target_error: 1e-6,
            drift_ratio: 2.0,
            bits: None,
        }
    }
}

/// A `[[discover]]` rule (see `discovery.rs`).
#[derive(Debug, Clone)]
pub struct DiscoveryRule {
    pub kind: DeviceKind,
    pub id_prefix: String,
    pub matches: DiscoveryMatch,
    /// Template for the sysfs keys of every device found (root, deadline_ms, ...).
    pub sysfs: SysfsConfig,
    pub poll_interval: Duration,
    pub deadline: Duration,
    pub action_deadline: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryMatch {
    Pci { vendor: u16, device: Option<u16> },
    Hwmon { name: String },
}

impl DiscoveryRule {
    pub fn describe(&self) -> String {
        match &self.matches {
            DiscoveryMatch::Pci {
                vendor,
                device: Some(d),
            } => format!("pci {vendor:04x}:{d:04x}"),
            DiscoveryMatch::Pci {
                vendor,
                device: None,
            } => format!("pci {vendor:04x}"),
            DiscoveryMatch::Hwmon { name } => format!("hwmon {name:?}"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Backend {
    /// The in-process simulated device (`[device.sim]`).
    Sim(SimOptions),
    /// A SpiNNaker board behind its BMP, over UDP (`[device.bmp]`).
    Bmp(BmpConfig),
    /// A photonic bench of SCPI instruments over TCP (`[device.scpi]`).
    Scpi(ScpiBenchConfig),
    /// A site's vendor tool run as a bounded command (`[device.plugin]`).
    Plugin(PluginConfig),
    /// Linux sysfs: hwmon, thermal zones, power supplies, powercap, a PCI function
    /// (`[device.sysfs]`).
    Sysfs(SysfsConfig),
    /// A Loihi 2 board as its host exposes it (`[device.loihi2]`).
    Loihi2(Loihi2Config),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sim(_) => "sim",
            Backend::Bmp(_) => "bmp",
            Backend::Scpi(_) => "scpi",
            Backend::Plugin(_) => "plugin",
            Backend::Sysfs(_) => "sysfs",
            Backend::Loihi2(_) => "loihi2",
        }
    }
}

/// Backend names, for error messages.
const BACKENDS: &str = "\"sim\", \"bmp\", \"scpi\", \"plugin\", \"sysfs\", \"loihi2\"";

// ---- raw, as written in the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: Option<String>,
    socket: Option<PathBuf>,
    tcp_listen: Option<String>,
    metrics_listen: Option<String>,
    report_interval: Option<String>,
    collector: Option<String>,
    collectors: Option<Vec<String>>,
    max_message_bytes: Option<u64>,
    sysfs_root: Option<PathBuf>,
    #[serde(default)]
    uplink: RawUplink,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    device: Vec<RawDevice>,
    #[serde(default)]
    discover: Vec<RawDiscover>,
    #[serde(default)]
    probe: RawProbe,
    #[serde(default)]
    process: Vec<crate::host::procwatch::rules::RawProcess>,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    tls: RawTls,
    audit_log: Option<PathBuf>,
    #[serde(default)]
    safety: RawSafety,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    collector_ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSafety {
    cooldown: Option<String>,
    max_resets_per_hour: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    watch: Vec<String>,
    dirs: Option<Vec<PathBuf>>,
    interval: Option<String>,
    time_budget: Option<String>,
    max_bytes: Option<u64>,
    kappa_threshold: Option<f64>,
    bits: Option<u64>,
    read_noise: Option<f64>,
    known_answer: Option<RawKnownAnswer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKnownAnswer {
    enabled: Option<bool>,
    interval: Option<String>,
    deadline: Option<String>,
    steps: Option<u64>,
    target_error: Option<f64>,
    drift_ratio: Option<f64>,
    bits: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscover {
    kind: DeviceKind,
    id_prefix: String,
    /// `"vendor"` or `"vendor:device"`, hex (`"1e52:0001"`).
    pci: Option<String>,
    /// hwmon chip name.
    hwmon: Option<String>,
    poll_interval: Option<String>,
    deadline: Option<String>,
    action_deadline: Option<String>,
    #[serde(default)]
    sysfs: Option<SysfsConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    buffer_reports: Option<u64>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    connect_timeout: Option<String>,
    ack_timeout: Option<String>,
    spill_path: Option<PathBuf>,
    spill_max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    interval: Option<String>,
    deadline: Option<String>,
    memory_warning_ratio: Option<f64>,
    memory_critical_ratio: Option<f64>,
    disk_warning_ratio: Option<f64>,
    disk_critical_ratio: Option<f64>,
    load_warning_per_cpu: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: String,
    kind: DeviceKind,
    backend: String,
    poll_interval: Option<String>,
    deadline: Option<String>,
    action_deadline: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    /// Start a simulator that speaks this backend's real protocol on loopback, and talk to it
    /// (the `--simulate` default uses this for the SCPI bench).
    #[serde(default)]
    simulator: bool,
    sim: Option<RawSim>,
    bmp: Option<BmpConfig>,
    scpi: Option<ScpiBenchConfig>,
    plugin: Option<PluginConfig>,
    sysfs: Option<SysfsConfig>,
    loihi2: Option<Loihi2Config>,
    /// Overrides of `[safety]` for this device.
    cooldown: Option<String>,
    max_resets_per_hour: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    temperature_warning_celsius: Option<f64>,
    temperature_critical_celsius: Option<f64>,
    calibration_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    reset_failure_probability: Option<f64>,
    seed: Option<u64>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        key: String::new(),
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(&file, &text)
}

/// Parses and validates config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<AgentConfig, ConfigError> {
    let err = |key: String, message: String| ConfigError {
        file: file.to_string(),
        key,
        message,
    };
    let de = toml::Deserializer::parse(text)
        .map_err(|e| err(String::new(), one_line(&e.to_string())))?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let key = if path == "." { String::new() } else { path };
        err(key, plain_types(&one_line(inner.message())))
    })?;
    raw.validate(file)
}

/// Serde names Rust types ("expected u64"); say what an operator writes instead.
fn plain_types(msg: &str) -> String {
    msg.replace("expected u64", "expected a non-negative integer")
        .replace("expected f64", "expected a number")
        .replace("expected a string", "expected a quoted string")
}

/// TOML errors carry a multi-line source excerpt; keep the first line with the reason.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

struct Check<'a> {
    file: &'a str,
}

impl Check<'_> {
    fn fail<T>(&self, key: &str, message: String) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_string(),
            key: key.to_string(),
            message,
        })
    }

    fn duration(
        &self,
        key: &str,
        v: Option<&str>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        let d = match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                return self.fail(
                    key,
                    format!("expected a duration like \"500ms\" or \"2s\", found {s:?} ({e})"),
                )
            }
        };
        if d < min || d > max {
            return self.fail(
                key,
                format!(
                    "expected a duration between {} and {}, found {s:?}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
        Ok(d)
    }

    fn ratio(&self, key: &str, v: Option<f64>, default: f64) -> Result<f64, ConfigError> {
        let Some(x) = v else { return Ok(default) };
        if !(x > 0.0 && x <= 1.0) {
            return self.fail(key, format!("expected a ratio in (0, 1], found {x}"));
        }
        Ok(x)
    }

    fn range_f64(
        &self,
        key: &str,
        v: Option<f64>,
        default: f64,
        min: f64,
        max: f64,
    ) -> Result<f64, ConfigError> {
        let Some(x) = v else { return Ok(default) };
        if !(x >= min && x <= max) {
            return self.fail(
                key,
                format!("expected a number between {min} and {max}, found {x}"),
            );
        }
        Ok(x)
    }

    /// A device id or id prefix: 1..=max characters of `[A-Za-z0-9._-]`.
    fn name(&self, key: &str, v: &str, max: usize) -> Result<(), ConfigError> {
        let ok = !v.is_empty()
            && v.len() <= max
            && v.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if ok {
            Ok(())
        } else {
            self.fail(
                key,
                format!("expected 1-{max} characters of [A-Za-z0-9._-], found {v:?}"),
            )
        }
    }

    fn range_u64(
        &self,
        key: &str,
        v: Option<u64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(x) = v else { return Ok(default) };
        if x < min || x > max {
            return self.fail(
                key,
                format!("expected an integer between {min} and {max}, found {x}"),
            );
        }
        Ok(x)
    }
}

fn known_answer(c: &Check<'_>, k: RawKnownAnswer) -> Result<KnownAnswerConfig, ConfigError> {
    let d = KnownAnswerConfig::default();
    let key = |k: &str| format!("probe.known_answer.{k}");
    Ok(KnownAnswerConfig {
        enabled: k.enabled.unwrap_or(d.enabled),
        interval: c.duration(
            &key("interval"),
            k.interval.as_deref(),
            d.interval,
            ms(200),
            secs(7 * 86400),
        )?,
        deadline: c.duration(
            &key("deadline"),
            k.deadline.as_deref(),
            d.deadline,
            ms(10),
            secs(60),
        )?,
        steps: c.range_u64(&key("steps"), k.steps, d.steps as u64, 1, 100)? as usize,
        target_error: match k.target_error {
            None => d.target_error,
            Some(x) if (1e-13..=0.5).contains(&x) => x,
            // In exponent form: a tiny target printed positionally is unreadable.
            Some(x) => {
                return c.fail(
                    &key("target_error"),
                    format!("expected a relative error between 1e-13 and 0.5, found {x:e}"),
                )
            }
        },
        drift_ratio: c.range_f64(
            &key("drift_ratio"),
            k.drift_ratio,
            d.drift_ratio,
            1.05,
            1000.0,
        )?,
        bits: k
            .bits
            .map(|b| {
                c.range_u64(&key("bits"), Some(b), 8, 1, 52)
                    .map(|b| b as u32)
            })
            .transpose()?,
    })
}

/// The shortest read and action deadlines a backend needs, from its own protocol timeouts: a
/// supervisor deadline shorter than those would cut the backend off before it can say what is
/// wrong (and, for a power cycle or a PCI remove/rescan, half-way through the action).
fn backend_needs(b: &Backend) -> (Duration, Duration) {
    let slack = ms(500);
    match b {
        Backend::Sim(_) => (Duration::ZERO, Duration::ZERO),
        Backend::Bmp(cfg) => {
            let one = ms(cfg.timeout_ms) * cfg.attempts;
            let action = BmpBoard::new("check", cfg)
                .map(|b| b.worst_case_action())
                .unwrap_or(one);
            (one + slack, action + slack)
        }
        // A read stops at its first timed-out exchange; a calibration settles, then measures.
        Backend::Scpi(cfg) => (
            ms(cfg.timeout_ms) + slack,
            ms(cfg.settle_timeout_ms) + ms(cfg.timeout_ms) * 20 + slack,
        ),
        Backend::Plugin(cfg) => (ms(cfg.deadline_ms) + slack, ms(cfg.deadline_ms) + slack),
        // Sources are read concurrently; a hard reset waits for removal and for the rescan.
        Backend::Sysfs(cfg) => (
            ms(cfg.deadline_ms) + slack,
            if cfg.pci.is_some() {
                ms(cfg.rescan_wait_ms) * 2 + ms(cfg.deadline_ms) * 4 + slack
            } else {
                Duration::ZERO
            },
        ),
        Backend::Loihi2(cfg) => {
            let slurm = if cfg.slurm_node.is_some() {
                ms(cfg.sinfo_deadline_ms)
            } else {
                Duration::ZERO
            };
            let read = ms(cfg.reach_deadline_ms).max(slurm).max(ms(500));
            let action = cfg
                .vendor
                .as_ref()
                .map_or(Duration::ZERO, |v| ms(v.deadline_ms));
            (read + slack, action + slack)
        }
    }
}

/// A device's (or a discovery rule's) poll interval, read deadline and action deadline, the
/// deadlines fitted to what its backend needs (see [`fit_deadlines`]).
fn timings(
    c: &Check<'_>,
    k: &dyn Fn(&str) -> String,
    backend: &Backend,
    [poll, deadline, action]: [Option<&str>; 3],
) -> Result<(Duration, Duration, Duration), ConfigError> {
    let poll_interval = c.duration(&k("poll_interval"), poll, secs(1), ms(50), secs(3600))?;
    let d = c.duration(&k("deadline"), deadline, secs(2), ms(10), secs(300))?;
    let a = c.duration(&k("action_deadline"), action, secs(60), ms(100), secs(3600))?;
    let (d, a) = fit_deadlines(
        c,
        k,
        backend,
        (d, deadline.is_some()),
        (a, action.is_some()),
    )?;
    Ok((poll_interval, d, a))
}

/// Defaults the deadlines a device did not set to what its backend needs (at least the usual
/// 2 s / 60 s), and refuses ones that were set shorter, naming the key and the reason.
fn fit_deadlines(
    c: &Check<'_>,
    k: &dyn Fn(&str) -> String,
    backend: &Backend,
    (deadline, deadline_set): (Duration, bool),
    (action, action_set): (Duration, bool),
) -> Result<(Duration, Duration), ConfigError> {
    let (need_read, need_action) = backend_needs(backend);
    let fmt = |d: Duration| {
        humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
    };
    let deadline = match (deadline_set, deadline < need_read) {
        (true, true) => {
            return c.fail(
                &k("deadline"),
                format!(
                    "expected at least {} (the {} backend's own timeouts), found {}",
                    fmt(need_read),
                    backend.name(),
                    fmt(deadline)
                ),
            )
        }
        (false, true) => need_read,
        _ => deadline,
    };
    let action = match (action_set, action < need_action) {
        (true, true) => {
            return c.fail(
                &k("action_deadline"),
                format!(
                    "expected at least {} (the {} backend's worst-case action), found {}",
                    fmt(need_action),
                    backend.name(),
                    fmt(action)
                ),
            )
        }
        (false, true) => need_action,
        _ => action,
    };
    Ok((deadline, action))
}

/// The device's backend, from `backend = "..."` and its table. Only the named backend's table
/// may be present; a backend whose protocol has a simulator may set `simulator = true`, and
/// then its table is optional (addresses come from the simulator).
fn backend(c: &Check<'_>, i: usize, d: &RawDevice) -> Result<Backend, ConfigError> {
    let k = |name: &str| format!("device[{i}].{name}");
    let tables = [
        ("sim", d.sim.is_some()),
        ("bmp", d.bmp.is_some()),
        ("scpi", d.scpi.is_some()),
        ("plugin", d.plugin.is_some()),
        ("sysfs", d.sysfs.is_some()),
        ("loihi2", d.loihi2.is_some()),
    ];
    for (name, present) in tables {
        if present && name != d.backend {
            return c.fail(
                &k(name),
                format!(
                    "only allowed with backend = \"{name}\", found backend = {:?}",
                    d.backend
                ),
            );
        }
    }
    let kinds_ok = |allowed: &[DeviceKind]| -> Result<(), ConfigError> {
        if allowed.contains(&d.kind) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
            c.fail(
                &k("kind"),
                format!(
                    "backend {:?} serves kind {}, found {:?}",
                    d.backend,
                    names.join(" or "),
                    d.kind.as_str()
                ),
            )
        }
    };
    let helper = |table: &str, r: Result<(), (String, String)>| -> Result<(), ConfigError> {
        r.or_else(|(key, msg)| c.fail(&k(&format!("{table}.{key}")), msg))
    };
    let backend = match d.backend.as_str() {
        "sim" => {
            let s = d.sim.as_ref();
            let p = c.range_f64(
                &k("sim.reset_failure_probability"),
                s.and_then(|s| s.reset_failure_probability),
                0.0,
                0.0,
                1.0,
            )?;
            Backend::Sim(SimOptions {
                reset_failure_probability: p,
                seed: s.and_then(|s| s.seed),
            })
        }
        "bmp" => {
            kinds_ok(&[DeviceKind::Spinnaker])?;
            let cfg = match (&d.bmp, d.simulator) {
                (Some(cfg), _) => cfg.clone(),
                // The address is the simulator's, filled in when it starts.
                (None, true) => BmpConfig::new("127.0.0.1:17893", 0),
                (None, false) => {
                    return c.fail(
                        &k("bmp"),
                        "expected a [device.bmp] table with at least address = \"ip[:port]\""
                            .into(),
                    )
                }
            };
            helper("bmp", cfg.validate())?;
            Backend::Bmp(cfg)
        }
        "scpi" => {
            kinds_ok(&[DeviceKind::Photonic])?;
            let cfg = match (&d.scpi, d.simulator) {
                (Some(cfg), _) => cfg.clone(),
                // Addresses are the simulator's, filled in when it starts.
                (None, true) => ScpiBenchConfig::new("127.0.0.1:5025"),
                (None, false) => {
                    return c.fail(
                        &k("scpi"),
                        "expected a [device.scpi] table with at least tec = \"host:port\"".into(),
                    )
                }
            };
            helper("scpi", cfg.validate())?;
            Backend::Scpi(cfg)
        }
        "plugin" => {
            let Some(cfg) = &d.plugin else {
                return c.fail(
                    &k("plugin"),
                    "expected a [device.plugin] table with command and read".into(),
                );
            };
            helper("plugin", cfg.validate())?;
            Backend::Plugin(cfg.clone())
        }
        "sysfs" => {
            let Some(cfg) = &d.sysfs else {
                return c.fail(&k("sysfs"), "expected a [device.sysfs] table naming at least one source (hwmon, thermal_zone, power_supply, powercap, pci)".into());
            };
            helper("sysfs", cfg.validate())?;
            Backend::Sysfs(cfg.clone())
        }
        "loihi2" => {
            kinds_ok(&[DeviceKind::Loihi2])?;
            let Some(cfg) = &d.loihi2 else {
                return c.fail(
                    &k("loihi2"),
                    "expected a [device.loihi2] table with at least board_host = \"host:port\""
                        .into(),
                );
            };
            helper("loihi2", cfg.validate())?;
            Backend::Loihi2(cfg.clone())
        }
        other => {
            return c.fail(
                &k("backend"),
                format!("expected one of {BACKENDS}, found {other:?}"),
            )
        }
    };
    if d.simulator && !matches!(backend, Backend::Scpi(_) | Backend::Bmp(_)) {
        return c.fail(
            &k("simulator"),
            format!(
                "no protocol simulator for backend {:?}: remove simulator = true",
                d.backend
            ),
        );
    }
    Ok(backend)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl RawConfig {
    fn validate(self, file: &str) -> Result<AgentConfig, ConfigError> {
        let c = Check { file };
        let node = match self.node {
            Some(n) if n.trim().is_empty() || n.len() > 253 => {
                return c.fail(
                    "node",
                    format!("expected a non-empty name of at most 253 bytes, found {n:?}"),
                )
            }
            Some(n) => n,
            None => sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_string()),
        };
        let socket = match self.socket {
            Some(p) if !p.is_absolute() && !p.starts_with(".") => {
                return c.fail(
                    "socket",
                    format!(
                        "expected an absolute path, found {:?}",
                        p.display().to_string()
                    ),
                )
            }
            Some(p) => p,
            None => PathBuf::from(DEFAULT_SOCKET_PATH),
        };
        let tcp_listen = match self.tcp_listen.as_deref() {
            None => None,
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    return c.fail(
                        "tcp_listen",
                        format!("expected an address like \"127.0.0.1:7071\", found {s:?}"),
                    )
                }
            },
        };
        let collectors =
            match (self.collector, self.collectors) {
                (Some(_), Some(_)) => return c.fail(
                    "collectors",
                    "expected either `collector` (one URL) or `collectors` (a list), found both"
                        .to_string(),
                ),
                (Some(u), None) => match collector_url(&u) {
                    Ok(u) => vec![u],
                    Err(message) => return c.fail("collector", message),
                },
                (None, Some(list)) => {
                    if list.is_empty() {
                        return c.fail(
                            "collectors",
                            "expected at least one URL (omit the key to run standalone), found []"
                                .to_string(),
                        );
                    }
                    let mut urls = Vec::with_capacity(list.len());
                    for (i, u) in list.into_iter().enumerate() {
                        match collector_url(&u) {
                            Ok(u) if urls.contains(&u) => {
                                return c.fail(
                                    &format!("collectors[{i}]"),
                                    format!("expected each collector once, found {u:?} again"),
                                )
                            }
                            Ok(u) => urls.push(u),
                            Err(message) => return c.fail(&format!("collectors[{i}]"), message),
                        }
                    }
                    urls
                }
                (None, None) => Vec::new(),
            };
        let collector = collectors.first().cloned();
        let metrics_listen = match self.metrics_listen.as_deref() {
            None => None,
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    return c.fail(
                        "metrics_listen",
                        format!("expected an address like \"127.0.0.1:9464\", found {s:?}"),
                    )
                }
            },
        };
        let report_interval = c.duration(
            "report_interval",
            self.report_interval.as_deref(),
            secs(1),
            ms(100),
            secs(3600),
        )?;
        let max_message_bytes = c.range_u64(
            "max_message_bytes",
            self.max_message_bytes,
            4 << 20,
            1024,
            64 << 20,
        )? as usize;

        let u = self.uplink;
        let uplink = UplinkConfig {
            buffer_reports: c.range_u64(
                "uplink.buffer_reports",
                u.buffer_reports,
                3600,
                1,
                1_000_000,
            )? as usize,
            backoff_initial: c.duration(
                "uplink.backoff_initial",
                u.backoff_initial.as_deref(),
                ms(250),
                ms(10),
                secs(60),
            )?,
            backoff_max: c.duration(
                "uplink.backoff_max",
                u.backoff_max.as_deref(),
                secs(30),
                ms(10),
                secs(3600),
            )?,
            connect_timeout: c.duration(
                "uplink.connect_timeout",
                u.connect_timeout.as_deref(),
                secs(3),
                ms(100),
                secs(60),
            )?,
            ack_timeout: c.duration(
                "uplink.ack_timeout",
                u.ack_timeout.as_deref(),
                secs(10),
                ms(500),
                secs(600),
            )?,
            spill_path: u.spill_path,
            spill_max_bytes: c.range_u64(
                "uplink.spill_max_bytes",
                u.spill_max_bytes,
                256 << 20,
                1 << 20,
                1 << 40,
            )?,
        };
        if let Some(p) = &uplink.spill_path {
            if p.as_os_str().is_empty() || !p.is_absolute() {
                return c.fail(
                    "uplink.spill_path",
                    format!(
                        "expected an absolute directory path, found {:?}",
                        p.display().to_string()
                    ),
                );
            }
        }
        if uplink.backoff_max < uplink.backoff_initial {
            return c.fail(
                "uplink.backoff_max",
                "expected at least uplink.backoff_initial".to_string(),
            );
        }

        let h = self.host;
        let host = HostConfig {
            interval: c.duration(
                "host.interval",
                h.interval.as_deref(),
                secs(5),
                ms(100),
                secs(3600),
            )?,
            deadline: c.duration(
                "host.deadline",
                h.deadline.as_deref(),
                secs(2),
                ms(10),
                secs(60),
            )?,
            memory_warning_ratio: c.ratio(
                "host.memory_warning_ratio",
                h.memory_warning_ratio,
                0.90,
            )?,
            memory_critical_ratio: c.ratio(
                "host.memory_critical_ratio",
                h.memory_critical_ratio,
                0.97,
            )?,
            disk_warning_ratio: c.ratio("host.disk_warning_ratio", h.disk_warning_ratio, 0.90)?,
            disk_critical_ratio: c.ratio(
                "host.disk_critical_ratio",
                h.disk_critical_ratio,
                0.97,
            )?,
            load_warning_per_cpu: c.range_f64(
                "host.load_warning_per_cpu",
                h.load_warning_per_cpu,
                2.0,
                0.1,
                1000.0,
            )?,
        };
        if host.memory_critical_ratio < host.memory_warning_ratio {
            return c.fail(
                "host.memory_critical_ratio",
                "expected at least host.memory_warning_ratio".to_string(),
            );
        }
        if host.disk_critical_ratio < host.disk_warning_ratio {
            return c.fail(
                "host.disk_critical_ratio",
                "expected at least host.disk_warning_ratio".to_string(),
            );
        }

        let safety = safety(&c, &self.safety, &self.device)?;
        let (tls, audit_log) = tls_and_audit(&c, self.tls, self.audit_log, tcp_listen.is_some())?;
        let auth = self.auth;
        let mut devices = Vec::with_capacity(self.device.len());
        for (i, d) in self.device.into_iter().enumerate() {
            let k = |name: &str| format!("device[{i}].{name}");
            c.name(&k("id"), &d.id, 64)?;
            if devices.iter().any(|x: &DeviceConfig| x.id == d.id) {
                return c.fail(&k("id"), format!("duplicate device id {:?}", d.id));
            }
            let backend = backend(&c, i, &d)?;
            let mut limits = Limits::for_kind(d.kind);
            let l = d.limits;
            limits.temperature_warning_celsius = c.range_f64(
                &k("limits.temperature_warning_celsius"),
                l.temperature_warning_celsius,
                limits.temperature_warning_celsius,
                -50.0,
                200.0,
            )?;
            limits.temperature_critical_celsius = c.range_f64(
                &k("limits.temperature_critical_celsius"),
                l.temperature_critical_celsius,
                limits.temperature_critical_celsius,
                -50.0,
                200.0,
            )?;
            if limits.temperature_critical_celsius < limits.temperature_warning_celsius {
                return c.fail(
                    &k("limits.temperature_critical_celsius"),
                    "expected at least limits.temperature_warning_celsius".to_string(),
                );
            }
            if l.calibration_max_age.is_some() {
                limits.calibration_max_age = Some(c.duration(
                    &k("limits.calibration_max_age"),
                    l.calibration_max_age.as_deref(),
                    secs(3600),
                    secs(1),
                    secs(365 * 86400),
                )?);
            }
            let (poll_interval, deadline, action_deadline) = timings(
                &c,
                &k,
                &backend,
                [
                    d.poll_interval.as_deref(),
                    d.deadline.as_deref(),
                    d.action_deadline.as_deref(),
                ],
            )?;
            devices.push(DeviceConfig {
                id: d.id,
                kind: d.kind,
                backend,
                poll_interval,
                deadline,
                action_deadline,
                limits,
                simulator: d.simulator,
            });
        }

        let sysfs_root = match self.sysfs_root {
            Some(p) if !p.is_absolute() => {
                return c.fail(
                    "sysfs_root",
                    format!(
                        "expected an absolute path, found {:?}",
                        p.display().to_string()
                    ),
                )
            }
            Some(p) => p,
            None => PathBuf::from("/sys"),
        };
        let mut discover = Vec::with_capacity(self.discover.len());
        for (i, r) in self.discover.into_iter().enumerate() {
            let k = |name: &str| format!("discover[{i}].{name}");
            c.name(&k("id_prefix"), &r.id_prefix, 48)?;
            let hex = |s: &str| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            let matches = match (&r.pci, &r.hwmon) {
                (Some(p), None) => {
                    let (v, d) = match p.split_once(':') {
                        Some((v, d)) => (hex(v), Some(hex(d))),
                        None => (hex(p), None),
                    };
                    match (v, d) {
                        (Some(vendor), None) => DiscoveryMatch::Pci { vendor, device: None },
                        (Some(vendor), Some(Some(device))) => DiscoveryMatch::Pci { vendor, device: Some(device) },
                        _ => return c.fail(&k("pci"), format!("expected \"vendor\" or \"vendor:device\" in hex, e.g. \"1e52:0001\", found {p:?}")),
                    }
                }
                (None, Some(name)) if !name.is_empty() && !name.contains('/') => {
                    DiscoveryMatch::Hwmon { name: name.clone() }
                }
                (None, Some(name)) => {
                    return c.fail(
                        &k("hwmon"),
                        format!("expected a hwmon chip name, found {name:?}"),
                    )
                }
                _ => return c.fail(&k("pci"), "expected exactly one of pci or hwmon".into()),
            };
            let sysfs = r.sysfs.unwrap_or_default();
            if sysfs.pci.is_some() || sysfs.hwmon.is_some() {
                return c.fail(
                    &k("sysfs"),
                    "pci and hwmon are filled in by discovery: remove them from the template"
                        .into(),
                );
            }
            // Validate the template as a device it will produce, so a bad key fails here and
            // names the rule, not at start-up on the hosts where the rule happens to match.
            let mut example = sysfs.clone();
            match &matches {
                DiscoveryMatch::Pci { .. } => example.pci = Some("0000:00:00.0".into()),
                DiscoveryMatch::Hwmon { name } => example.hwmon = Some(name.clone()),
            }
            if let Err((key, msg)) = example.validate() {
                return c.fail(&k(&format!("sysfs.{key}")), msg);
            }
            let (poll_interval, deadline, action_deadline) = timings(
                &c,
                &k,
                &Backend::Sysfs(example),
                [
                    r.poll_interval.as_deref(),
                    r.deadline.as_deref(),
                    r.action_deadline.as_deref(),
                ],
            )?;
            discover.push(DiscoveryRule {
                kind: r.kind,
                id_prefix: r.id_prefix,
                matches,
                sysfs,
                poll_interval,
                deadline,
                action_deadline,
            });
        }
        let p = self.probe;
        for (i, w) in p.watch.iter().enumerate() {
            if let Err(e) = glob::Pattern::new(w) {
                return c.fail(
                    &format!("probe.watch[{i}]"),
                    format!("expected a glob pattern, found {w:?} ({e})"),
                );
            }
            if !Path::new(w).is_absolute() {
                return c.fail(
                    &format!("probe.watch[{i}]"),
                    format!("expected an absolute pattern, found {w:?}"),
                );
            }
        }
        let dirs = match p.dirs {
            Some(d) => d,
            // The deepest directory of each pattern without a wildcard.
            None => p
                .watch
                .iter()
                .map(|w| {
                    let mut d = PathBuf::new();
                    for part in Path::new(w).components() {
                        if part.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                            break;
                        }
                        d.push(part);
                    }
                    if d.as_os_str() == w.as_str() {
                        d.pop();
                    }
                    d
                })
                .collect(),
        };
        let probe = ProbeConfig {
            watch: p.watch,
            dirs,
            interval: c.duration(
                "probe.interval",
                p.interval.as_deref(),
                secs(600),
                secs(1),
                secs(7 * 86400),
            )?,
            time_budget: c.duration(
                "probe.time_budget",
                p.time_budget.as_deref(),
                secs(60),
                ms(100),
                secs(3600),
            )?,
            max_bytes: c.range_u64("probe.max_bytes", p.max_bytes, 2 << 30, 1 << 10, 64 << 30)?
                as usize,
            kappa_threshold: c.range_f64(
                "probe.kappa_threshold",
                p.kappa_threshold,
                1e12,
                1.0 + f64::EPSILON,
                1e300,
            )?,
            bits: p
                .bits
                .map(|b| {
                    c.range_u64("probe.bits", Some(b), 8, 1, 64)
                        .map(|b| b as u32)
                })
                .transpose()?,
            read_noise: c.range_f64("probe.read_noise", p.read_noise, 0.0, 0.0, 1.0)?,
            known_answer: known_answer(&c, p.known_answer.unwrap_or_default())?,
        };
        let processes = crate::host::procwatch::rules::validate(file, self.process)?;
        Ok(AgentConfig {
            processes,
            auth,
            tls,
            audit_log,
            safety,
            probe,
            discover,
            sysfs_root,
            node,
            socket,
            tcp_listen,
            metrics_listen,
            report_interval,
            collector,
            collectors,
            max_message_bytes,
            uplink,
            host,
            devices,
        })
    }
}

/// A collector URL as the uplink dials it, or what was expected instead.
fn collector_url(u: &str) -> Result<String, String> {
    if u.starts_with("http://") || u.starts_with("https://") {
        Ok(u.to_string())
    } else {
        Err(format!(
            "expected a URL like \"http://collector:7070\", found {u:?}"
        ))
    }
}

/// `[safety]` and each device's `cooldown` / `max_resets_per_hour`.
fn safety(
    c: &Check<'_>,
    s: &RawSafety,
    devices: &[RawDevice],
) -> Result<SafetyConfig, ConfigError> {
    let cooldown = |key: &str, v: Option<&str>, default: Duration| {
        c.duration(key, v, default, Duration::ZERO, secs(86400))
    };
    let resets = |key: &str, v: Option<u64>, default: u32| {
        c.range_u64(key, v, u64::from(default), 1, 10_000)
            .map(|n| n as u32)
    };
    let default = DeviceSafety {
        // Off by default: a disable followed by an enable is a normal thing to do; sites
        // that want a pause between actions set it.
        cooldown: cooldown("safety.cooldown", s.cooldown.as_deref(), Duration::ZERO)?,
        max_resets_per_hour: resets("safety.max_resets_per_hour", s.max_resets_per_hour, 10)?,
    };
    let mut per_device = std::collections::HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        if d.cooldown.is_none() && d.max_resets_per_hour.is_none() {
            continue;
        }
        let k = |name: &str| format!("device[{i}].{name}");
        per_device.insert(
            d.id.clone(),
            DeviceSafety {
                cooldown: cooldown(&k("cooldown"), d.cooldown.as_deref(), default.cooldown)?,
                max_resets_per_hour: resets(
                    &k("max_resets_per_hour"),
                    d.max_resets_per_hour,
                    default.max_resets_per_hour,
                )?,
            },
        );
    }
    Ok(SafetyConfig {
        default,
        per_device,
    })
}

/// `[tls]` (paths must be absolute; cert and key come together; a TLS listener needs
/// `client_ca`, because the agent serves TCP only with mutual TLS) and `audit_log`.
fn tls_and_audit(
    c: &Check<'_>,
    t: RawTls,
    audit_log: Option<PathBuf>,
    has_tcp: bool,
) -> Result<(TlsConfig, PathBuf), ConfigError> {
    for (key, p) in [
        ("tls.cert", &t.cert),
        ("tls.key", &t.key),
        ("tls.client_ca", &t.client_ca),
        ("tls.collector_ca", &t.collector_ca),
        ("audit_log", &audit_log),
    ] {
        if let Some(p) = p {
            if !p.is_absolute() {
                return c.fail(
                    key,
                    format!(
                        "expected an absolute path, found {:?}",
                        p.display().to_string()
                    ),
                );
            }
        }
    }
    match (&t.cert, &t.key) {
        (Some(_), None) => return c.fail("tls.key", "expected a key file with tls.cert".into()),
        (None, Some(_)) => return c.fail("tls.cert", "expected a cert file with tls.key".into()),
        _ => {}
    }
    if t.cert.is_some() && has_tcp && t.client_ca.is_none() {
        return c.fail(
            "tls.client_ca",
            "expected a CA file: with tls.cert, tcp_listen serves mutual TLS only".into(),
        );
    }
    if t.client_ca.is_some() && t.cert.is_none() {
        return c.fail(
            "tls.cert",
            "expected the agent's certificate and key with tls.client_ca".into(),
        );
    }
    Ok((
        TlsConfig {
            cert: t.cert,
            key: t.key,
            client_ca: t.client_ca,
            collector_ca: t.collector_ca,
        },
        audit_log.unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_LOG)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_auth_and_safety_keys_are_checked() {
        let ok = parse(
            "a.toml",
            "tcp_listen = \"127.0.0.1:7071\"\naudit_log = \"/tmp/a.jsonl\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_ca = \"/ca.pem\"\n[auth]\noperator_uids = [1000]\noperator_subjects = [\"alice\"]\n[safety]\ncooldown = \"30s\"\n[[device]]\nid = \"d\"\nkind = \"loihi2\"\nbackend = \"sim\"\nmax_resets_per_hour = 2\n",
        )
        .unwrap();
        assert_eq!(ok.auth.operator_uids, vec![1000]);
        assert_eq!(ok.safety.for_device("d").max_resets_per_hour, 2);
        assert_eq!(ok.safety.for_device("d").cooldown, secs(30));
        assert_eq!(ok.safety.for_device("other").max_resets_per_hour, 10);
        assert_eq!(ok.audit_log, PathBuf::from("/tmp/a.jsonl"));
        let e = parse_err(
            "tcp_listen = \"127.0.0.1:7071\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        );
        assert_eq!(e.key, "tls.client_ca");
        assert_eq!(parse_err("[tls]\ncert = \"/c.pem\"\n").key, "tls.key");
        assert_eq!(parse_err("audit_log = \"rel.jsonl\"\n").key, "audit_log");
        assert_eq!(parse_err("[auth]\noperators = [1]\n").key, "auth.operators");
        assert_eq!(
            parse_err("[safety]\ncooldown = \"2d\"\n").key,
            "safety.cooldown"
        );
    }

    fn parse_err(text: &str) -> ConfigError {
        parse("agent.toml", text).expect_err("should fail")
    }

    #[test]
    fn embedded_simulate_config_is_valid_and_has_every_kind() {
        let c = parse("<simulate>", SIMULATE_TOML).unwrap();
        let kinds: Vec<_> = c.devices.iter().map(|d| d.kind).collect();
        for k in DeviceKind::ALL {
            assert!(kinds.contains(&k), "{k} missing");
        }
    }

    #[test]
    fn collectors_list_or_one_collector_but_not_both() {
        let c = parse(
            "agent.toml",
            "collectors = [\"http://a:7070\", \"http://b:7070\"]\n",
        )
        .expect("a list");
        assert_eq!(c.collectors, vec!["http://a:7070", "http://b:7070"]);
        assert_eq!(c.collector.as_deref(), Some("http://a:7070"));
        let c = parse("agent.toml", "collector = \"http://a:7070\"\n").expect("one");
        assert_eq!(c.collectors, vec!["http://a:7070"]);
        let e = parse_err("collector = \"http://a:7070\"\ncollectors = [\"http://b:7070\"]\n");
        assert_eq!(e.key, "collectors");
        assert!(e.to_string().contains("found both"), "{e}");
        let e = parse_err("collectors = [\"http://a:7070\", \"b:7070\"]\n");
        assert_eq!(e.key, "collectors[1]");
        let e = parse_err("collectors = [\"http://a:7070\", \"http://a:7070\"]\n");
        assert_eq!(e.key, "collectors[1]");
        let e = parse_err("collectors = []\n");
        assert_eq!(e.key, "collectors");
    }

    #[test]
    fn spill_settings_are_checked() {
        let c = parse(
            "agent.toml",
            "[uplink]\nspill_path = \"/var/lib/health-agent/uplink.spill\"\nspill_max_bytes = 2097152\n",
        )
        .expect("valid");
        assert_eq!(c.uplink.spill_max_bytes, 2 << 20);
        assert!(c.uplink.spill_path.is_some());
        let e = parse_err("[uplink]\nspill_path = \"relative/dir\"\n");
        assert_eq!(e.key, "uplink.spill_path");
        let e = parse_err("[uplink]\nspill_max_bytes = 100\n");
        assert_eq!(e.key, "uplink.spill_max_bytes");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_err("report_intervall = \"1s\"\n");
        assert_eq!(e.file, "agent.toml");
        assert!(e.to_string().contains("report_intervall"), "{e}");
        let e =
            parse_err("[[device]]\nid = \"a\"\nkind = \"loihi2\"\nbackend = \"sim\"\ncolour = 1\n");
        assert!(
            e.to_string().contains("device[0]") || e.to_string().contains("colour"),
            "{e}"
        );
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key_and_type() {
        let e = parse_err("[uplink]\nbuffer_reports = \"lots\"\n");
        assert_eq!(e.key, "uplink.buffer_reports");
        assert!(e.message.contains("integer"), "{e}");
        let e = parse_err("[[device]]\nid = \"a\"\nkind = \"toaster\"\nbackend = \"sim\"\n");
        assert_eq!(e.key, "device[0].kind");
        assert!(
            e.message.contains("loihi2"),
            "lists the expected kinds: {e}"
        );
    }

    #[test]
    fn out_of_range_values_name_the_key_and_range() {
        let e = parse_err(
            "[[device]]\nid = \"a\"\nkind = \"loihi2\"\nbackend = \"sim\"\ndeadline = \"0s\"\n",
        );
        assert_eq!(e.key, "device[0].deadline");
        assert!(e.message.contains("between"), "{e}");
        let e = parse_err("[host]\nmemory_warning_ratio = 1.5\n");
        assert_eq!(e.key, "host.memory_warning_ratio");
        let e = parse_err("report_interval = \"soon\"\n");
        assert_eq!(e.key, "report_interval");
    }

    #[test]
    fn duplicate_ids_and_unknown_backends_are_rejected() {
        let dev = "[[device]]\nid = \"a\"\nkind = \"loihi2\"\nbackend = \"sim\"\n";
        let e = parse_err(&format!("{dev}{dev}"));
        assert_eq!(e.key, "device[1].id");
        let e = parse_err("[[device]]\nid = \"a\"\nkind = \"loihi2\"\nbackend = \"nvml\"\n");
        assert_eq!(e.key, "device[0].backend");
        assert!(e.message.contains("\"bmp\""), "lists the backends: {e}");
        // A BMP board's power cycle must fit in its action deadline.
        let e = parse_err("[[device]]\nid = \"s\"\nkind = \"spinnaker\"\nbackend = \"bmp\"\naction_deadline = \"2s\"\n[device.bmp]\naddress = \"10.0.0.2\"\n");
        assert_eq!(e.key, "device[0].action_deadline");
    }

    #[test]
    fn backend_tables_are_checked_against_the_backend_and_kind() {
        let e = parse_err("[[device]]\nid = \"p\"\nkind = \"photonic\"\nbackend = \"sim\"\n[device.scpi]\ntec = \"h:1\"\n");
        assert_eq!(e.key, "device[0].scpi");
        let e = parse_err("[[device]]\nid = \"p\"\nkind = \"loihi2\"\nbackend = \"scpi\"\n[device.scpi]\ntec = \"h:1\"\n");
        assert_eq!(e.key, "device[0].kind");
        assert!(e.message.contains("photonic"), "{e}");
        let e = parse_err("[[device]]\nid = \"p\"\nkind = \"photonic\"\nbackend = \"scpi\"\n");
        assert_eq!(e.key, "device[0].scpi");
        let e = parse_err("[[device]]\nid = \"p\"\nkind = \"photonic\"\nbackend = \"scpi\"\n[device.scpi]\ntec = \"h:1\"\ntimeout_ms = \"x\"\n");
        assert_eq!(e.key, "device[0].scpi.timeout_ms");
        let e = parse_err("[[device]]\nid = \"p\"\nkind = \"photonic\"\nbackend = \"scpi\"\naction_deadline = \"10s\"\n[device.scpi]\ntec = \"h:1\"\n");
        assert_eq!(
            e.key, "device[0].action_deadline",
            "settle timeout must fit the action deadline"
        );
        let e = parse_err("[[device]]\nid = \"x\"\nkind = \"analog_crossbar\"\nbackend = \"plugin\"\n[device.plugin]\ncommand = \"relative/tool\"\nread = [\"read\"]\n");
        assert!(e.key.starts_with("device[0].plugin."), "{e}");
        let e = parse_err(
            "[[device]]\nid = \"l\"\nkind = \"loihi2\"\nbackend = \"sim\"\nsimulator = true\n",
        );
        assert_eq!(e.key, "device[0].simulator");
        let ok = parse("a.toml", "[[device]]\nid = \"x\"\nkind = \"analog_crossbar\"\nbackend = \"plugin\"\n[device.plugin]\ncommand = \"/usr/bin/xbar-tool\"\nread = [\"read\"]\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn deadlines_default_to_what_the_backend_needs_and_shorter_ones_are_refused() {
        let plugin = "[[device]]\nid = \"x\"\nkind = \"analog_crossbar\"\nbackend = \"plugin\"\n";
        let table =
            "[device.plugin]\ncommand = \"/usr/bin/tool\"\nread = [\"read\"]\ndeadline_ms = 8000\n";
        let c = parse("a.toml", &format!("{plugin}{table}")).unwrap();
        assert!(
            c.devices[0].deadline >= Duration::from_secs(8),
            "{:?}",
            c.devices[0].deadline
        );
        let e = parse_err(&format!("{plugin}deadline = \"3s\"\n{table}"));
        assert_eq!(e.key, "device[0].deadline");
        assert!(e.message.contains("plugin"), "{e}");
        // PCI hard reset: remove + rescan must fit in the action deadline.
        let e = parse_err("[[device]]\nid = \"c\"\nkind = \"analog_crossbar\"\nbackend = \"sysfs\"\naction_deadline = \"5s\"\n[device.sysfs]\npci = \"0000:03:00.0\"\n");
        assert_eq!(e.key, "device[0].action_deadline");
        // A discovery template is validated where it is written.
        let e = parse_err("[[discover]]\nkind = \"analog_crossbar\"\nid_prefix = \"x-\"\npci = \"1e52\"\n[discover.sysfs]\ndeadline_ms = 0\n");
        assert!(e.key.starts_with("discover[0].sysfs."), "{e}");
    }

    #[test]
    fn metrics_listen_is_an_address_and_off_by_default() {
        let c = parse("a.toml", "").unwrap();
        assert_eq!(c.metrics_listen, None);
        let c = parse("a.toml", "metrics_listen = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let e = parse_err("metrics_listen = \"localhost\"\n");
        assert_eq!(e.key, "metrics_listen");
        assert!(e.message.contains("127.0.0.1:9464"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let e = parse_err("node = \n");
        assert!(e.to_string().starts_with("agent.toml: "), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = load(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/agent.toml"), "{e}");
    }

    #[test]
    fn known_answer_probe_keys_are_checked_and_defaulted() {
        let c = parse("a.toml", "").unwrap();
        assert_eq!(c.probe.known_answer, KnownAnswerConfig::default());
        let c = parse(
            "a.toml",
            "[probe.known_answer]\ninterval = \"1s\"\nsteps = 4\ntarget_error = 1e-4\nbits = 10\n",
        )
        .unwrap();
        let k = &c.probe.known_answer;
        assert_eq!((k.interval, k.steps, k.bits), (secs(1), 4, Some(10)));
        assert_eq!(k.target_error, 1e-4);
        let e = parse_err("[probe.known_answer]\ndeadline = \"5m\"\n");
        assert_eq!(e.key, "probe.known_answer.deadline", "{e}");
        let e = parse_err("[probe.known_answer]\ntarget_error = 1e-20\n");
        assert_eq!(e.key, "probe.known_answer.target_error", "{e}");
        assert!(e.message.contains("1e-20"), "{e}");
        let e = parse_err("[probe.known_answer]\ndrift_ratio = 1.0\n");
        assert_eq!(e.key, "probe.known_answer.drift_ratio", "{e}");
        let e = parse_err("[probe.known_answer]\nstep = 3\n");
        assert!(e.to_string().contains("probe.known_answer"), "{e}");
    }
}
