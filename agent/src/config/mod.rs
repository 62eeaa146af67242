//! The agent's TOML configuration: the checked types the agent runs with, [`load`] and
//! [`parse`], and the embedded `--simulate` default.
//!
//! Parsing is two steps. Serde maps the file onto the structs of [`raw`] (unknown keys and
//! wrong types are rejected there, and `serde_path_to_error` names the key). Then [`validate`]
//! checks ranges and turns strings into durations and addresses, one module per section
//! ([`devices`], [`discover`], [`probe`], [`safety`], [`tls`]; deadlines in [`timings`], single
//! values in [`check`]). Every error is a [`ConfigError`] that names the file, the key and what
//! was expected, so an operator can fix it without reading the source.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use health_daemon::FieldError;
use health_hal::bmp::BmpConfig;
use health_hal::loihi::Loihi2Config;
use health_hal::plugin::PluginConfig;
use health_hal::scpi::ScpiBenchConfig;
use health_hal::sim::SimOptions;
use health_hal::sysfs::SysfsConfig;
use health_hal::{DeviceKind, Limits, MinDeadlines};
use serde::Deserialize;

pub use cleanup::{has_glob_wildcard, CleanupRule};
pub use log::{LogRule, LogSource};
pub use policy::{
    Policy, PolicyMatch, PolicyMode, PolicyStep, PowerTarget, RemediationConfig, StepAction,
    WithoutCollector,
};
pub use process::ProcessRule;
pub use service::{ErrorCounter, ServiceRule};

mod check;
mod cleanup;
mod devices;
mod discover;
mod log;
mod policy;
mod probe;
mod process;
mod raw;
mod safety;
pub mod service;
mod timings;
mod tls;
mod validate;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/health-agent/agent.toml";
pub const DEFAULT_SOCKET_PATH: &str = "/run/health-agent/agent.sock";

/// The configuration `--simulate` runs: one simulated device of each kind.
pub const SIMULATE_TOML: &str = include_str!("simulate.toml");

/// Why a config was rejected: the file, the key (empty when the file as a whole is unreadable
/// or not TOML) and what was expected. `Display`: `file: key: message`, or `file: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// A key's error, in `file`.
    pub fn in_file(file: &str, field: FieldError) -> ConfigError {
        ConfigError {
            file: file.to_string(),
            key: field.key,
            message: field.message,
        }
    }
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
    pub processes: Vec<ProcessRule>,
    /// `[[service]]`: services checked by unit, health URL and port (see `host::services`).
    pub services: Vec<ServiceRule>,
    /// `[[log]]`: log files and journald units the log follower reads (see `host::logs`).
    pub logs: Vec<LogRule>,
    /// `[[cleanup]]`: files the `clean-files` action may delete (see `action::clean`).
    pub cleanup: Vec<CleanupRule>,
    /// `[auth]`: roles (see `auth.rs`).
    pub auth: AuthConfig,
    /// `[tls]`: certificates for the TCP listener and the uplink.
    pub tls: TlsConfig,
    /// The hash-chained audit log of every mutating action (see `audit.rs`).
    pub audit_log: PathBuf,
    /// `[safety]` defaults and per-device overrides (see `crate::action::safety`).
    pub safety: SafetyConfig,
    /// `[remediation]`: node-wide limits of the automatic ladders.
    pub remediation: RemediationConfig,
    /// `[[policy]]`: the ladders, in the order they are tried against a condition.
    pub policies: Vec<Policy>,
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
    /// The longest maintenance window an operator may start (`max_maintenance`): nothing is
    /// forgotten in maintenance.
    pub max_maintenance: Duration,
    /// ACCESS_DENIED is raised at this many PERMISSION_DENIED refusals within `window`.
    pub access_denied: AccessDeniedLimit,
}

/// When repeated refusals become a host condition (`access_denied_count` within
/// `access_denied_window`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessDeniedLimit {
    pub count: u32,
    pub window: Duration,
}

impl Default for AccessDeniedLimit {
    fn default() -> AccessDeniedLimit {
        AccessDeniedLimit {
            count: 5,
            window: Duration::from_secs(600),
        }
    }
}

/// `max_maintenance` when unset: a working day and a night.
pub const DEFAULT_MAX_MAINTENANCE: Duration = Duration::from_secs(24 * 3600);

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
    /// Where procfs is mounted for `vmstat` and `stat` (tests point it at a fixture tree).
    pub proc_root: PathBuf,
    /// Share of CPU time spent waiting for I/O over one interval that is HOST_IOWAIT_HIGH.
    pub iowait_warning_ratio: f64,
    /// How long HOST_OOM_KILL stays after the last kill: a kill is an event, not a state.
    pub oom_hold: Duration,
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

/// `[probe]`: the solver probe's watched files and budgets (see `crate::probe`).
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
    /// The watched solver's own relative tolerance, iteration limit and GMRES restart: the
    /// probe judges convergence at these numbers (defaults 1e-8, 10000, 30).
    pub rtol: f64,
    pub max_iter: usize,
    pub restart: usize,
    /// The solver's method and preconditioner (`method`, `preconditioner`), when given.
    pub solver: Option<solver_probe::report::SolverSetting>,
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

    /// The shortest read and action deadlines the backend needs, from its own protocol
    /// timeouts (see [`timings`]).
    pub fn min_deadlines(&self) -> MinDeadlines {
        match self {
            Backend::Sim(cfg) => cfg.min_deadlines(),
            Backend::Bmp(cfg) => cfg.min_deadlines(),
            Backend::Scpi(cfg) => cfg.min_deadlines(),
            Backend::Plugin(cfg) => cfg.min_deadlines(),
            Backend::Sysfs(cfg) => cfg.min_deadlines(),
            Backend::Loihi2(cfg) => cfg.min_deadlines(),
        }
    }
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
    let in_file = |field| ConfigError::in_file(file, field);
    let de = toml::Deserializer::parse(text)
        .map_err(|e| in_file(FieldError::new("", one_line(&e.to_string()))))?;
    let raw: raw::RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let key = if path == "." { String::new() } else { path };
        in_file(FieldError::new(
            key,
            plain_types(&one_line(inner.message())),
        ))
    })?;
    raw.validate().map_err(in_file)
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

#[cfg(test)]
mod tests {
    use super::check::secs;
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

    #[test]
    fn maintenance_and_access_denied_keys_are_checked() {
        let c = parse("agent.toml", "").unwrap();
        assert_eq!(c.safety.max_maintenance, DEFAULT_MAX_MAINTENANCE);
        assert_eq!(c.safety.access_denied, AccessDeniedLimit::default());
        let c = parse(
            "agent.toml",
            "[safety]\nmax_maintenance = \"8h\"\naccess_denied_count = 3\naccess_denied_window = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.safety.max_maintenance, Duration::from_secs(8 * 3600));
        assert_eq!(c.safety.access_denied.count, 3);
        assert_eq!(c.safety.access_denied.window, Duration::from_secs(60));
        for (text, key) in [
            ("max_maintenance = \"0s\"", "safety.max_maintenance"),
            ("max_maintenance = \"60d\"", "safety.max_maintenance"),
            ("access_denied_count = 0", "safety.access_denied_count"),
            (
                "access_denied_window = \"soon\"",
                "safety.access_denied_window",
            ),
        ] {
            assert_eq!(parse_err(&format!("[safety]\n{text}\n")).key, key, "{text}");
        }
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

    fn process_err(toml_text: &str) -> ConfigError {
        match parse("agent.toml", toml_text) {
            Ok(_) => panic!("accepted: {toml_text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn process_rule_errors_name_the_file_and_key() {
        for (text, key, says) in [
            ("[[process]]\nname = \"a\"\n", "process[0].comm", "comm, cmdline or both"),
            (
                "[[process]]\nname = \"a b\"\ncomm = \"x\"\n",
                "process[0].name",
                "[A-Za-z0-9._-]",
            ),
            (
                "[[process]]\nname = \"a\"\ncomm = \"x\"\n[[process]]\nname = \"a\"\ncomm = \"y\"\n",
                "process[1].name",
                "unique",
            ),
            (
                "[[process]]\nname = \"a\"\ncomm = \"a-very-long-process-name\"\n",
                "process[0].comm",
                "1-15 bytes",
            ),
            (
                "[[process]]\nname = \"a\"\ncmdline = \" \"\n",
                "process[0].cmdline",
                "expected a non-empty glob pattern",
            ),
            (
                "[[process]]\nname = \"a\"\ncmdline = \"[oops\"\n",
                "process[0].cmdline",
                "glob pattern",
            ),
            (
                "[[process]]\nname = \"a\"\ncomm = \"x\"\nmax_runtime = \"soon\"\n",
                "process[0].max_runtime",
                "duration",
            ),
            (
                "[[process]]\nname = \"a\"\ncomm = \"x\"\nmax_runtime = \"100ms\"\n",
                "process[0].max_runtime",
                "between 1s",
            ),
            (
                "[[process]]\nname = \"a\"\ncomm = \"x\"\nmax_memory_bytes = 12\n",
                "process[0].max_memory_bytes",
                "1 MiB",
            ),
            (
                "[[process]]\nname = \"a\"\ncomm = \"x\"\nexpect_runing = true\n",
                "process[0].expect_runing",
                "unknown field",
            ),
        ] {
            let e = process_err(text);
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.to_string().contains(says), "{text}: {e}");
            assert!(e.to_string().starts_with("agent.toml: process["), "{e}");
        }
    }
}
