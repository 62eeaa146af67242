//! The collector's configuration file (`/etc/health-collector/collector.toml`).
//!
//! Every key is optional and has a default, so an empty file (or no file) is a valid
//! configuration. Unknown keys are rejected rather than ignored: a misspelt `stale_afer` that
//! silently did nothing would be found only during an incident.
//!
//! Every error names the file and the key, in the form `<file>: <key>: <expected, found>`,
//! because the person reading it is an on-call engineer with the file open in an editor.
//! To get that form for type errors too, each field is first read as a loose `toml::Value`
//! and then checked here, with our own wording, instead of relying on serde's messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use health_daemon::FieldError;

use crate::leases::Fraction;
use serde::Deserialize;

mod de;
pub mod history;
mod incidents;
mod web;
use de::*;
pub use incidents::IncidentsConfig;
use incidents::INCIDENTS_KEYS;
pub use web::WebConfig;
use web::WEB_KEYS;
mod priorities;
pub use priorities::PrioritiesConfig;
use priorities::PRIORITIES_KEYS;
mod operator;
use operator::{audit_log_path, groups, socket_group, socket_path, uids};

/// Where the service looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/health-collector/collector.toml";

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070);
const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_millis(500);
const DEFAULT_MAX_MESSAGE_BYTES: u64 = 4 * 1024 * 1024;
const DEFAULT_WATCH_BUFFER: u64 = 1024;
const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_NODES: u64 = 100_000;
const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_RESEND_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_PUSH_QUEUE: u64 = 10_000;
const DEFAULT_LEASE_MAX_CONCURRENT: u64 = 4;
const DEFAULT_LEASE_WINDOW: Duration = Duration::from_secs(5 * 60);
const DEFAULT_LEASE_COOLDOWN: Duration = Duration::from_secs(5 * 60);
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10 * 60);

/// How long each condition must persist before its alert fires, unless `[alerts] for` says
/// otherwise. Codes not listed fire at once. Short blips of a reading near its threshold (a
/// warm chip, a busy host) are what these hold back; states that are already an outage (a
/// critical temperature, a failed reset) are not held.
const DEFAULT_FOR: [(&str, Duration); 10] = [
    ("THERMAL_WARNING", Duration::from_secs(60)),
    ("POWER_OVER_LIMIT", Duration::from_secs(60)),
    ("CALIBRATION_DRIFT", Duration::from_secs(300)),
    ("DEVICE_UNRESPONSIVE", Duration::from_secs(30)),
    ("DEVICE_MISSING", Duration::from_secs(30)),
    ("DEVICE_ERROR", Duration::from_secs(30)),
    ("LINK_DEGRADED", Duration::from_secs(60)),
    ("HOST_MEMORY_HIGH", Duration::from_secs(120)),
    ("HOST_LOAD_HIGH", Duration::from_secs(300)),
    ("TEC_SETPOINT_DEVIATION", Duration::from_secs(60)),
];

/// Every key the file may hold, in the order the example file documents them.
const KEYS: [&str; 22] = [
    "listen",
    "socket",
    "audit_log",
    "metrics_listen",
    "stale_after",
    "sweep_interval",
    "forget_after",
    "max_nodes",
    "max_message_bytes",
    "watch_buffer",
    "history_path",
    "history_retention",
    "history_url",
    "history_password_file",
    "collector_name",
    "alerts",
    "tls",
    "auth",
    "leases",
    "incidents",
    "priorities",
    "web",
];

/// Every key of the `[tls]` table.
const TLS_KEYS: [&str; 3] = ["cert", "key", "client_ca"];

/// Every key of the `[auth]` table.
const AUTH_KEYS: [&str; 5] = [
    "agent_subjects",
    "operator_subjects",
    "operator_uids",
    "operator_groups",
    "socket_group",
];

/// Every key of the `[leases]` table.
const LEASES_KEYS: [&str; 5] = [
    "max_concurrent",
    "max_fraction",
    "window",
    "cooldown",
    "ttl",
];

/// Every key of the `[alerts]` table.
const ALERTS_KEYS: [&str; 5] = [
    "for",
    "alertmanager",
    "resend_interval",
    "push_timeout",
    "push_queue",
];

/// Inclusive bounds of the values a key accepts.
struct Bounds<T> {
    min: T,
    max: T,
}

const STALE_AFTER_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(3600),
};
const SWEEP_INTERVAL_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_millis(50),
    max: Duration::from_secs(60),
};
const FORGET_AFTER_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(60),
    max: Duration::from_secs(30 * 24 * 3600),
};
const MAX_NODES_BOUNDS: Bounds<u64> = Bounds {
    min: 1,
    max: 10_000_000,
};
const MAX_MESSAGE_BYTES_BOUNDS: Bounds<u64> = Bounds {
    min: 1024,
    max: 64 * 1024 * 1024,
};
const WATCH_BUFFER_BOUNDS: Bounds<u64> = Bounds {
    min: 16,
    max: 65536,
};
const HISTORY_RETENTION_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(3600),
    // Ten years as humantime counts them (365.25 days each), so the bound prints as "10years".
    max: Duration::from_secs(10 * 31_557_600),
};
const FOR_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::ZERO,
    max: Duration::from_secs(24 * 3600),
};
const RESEND_INTERVAL_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(600),
};
const PUSH_TIMEOUT_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_millis(100),
    max: Duration::from_secs(60),
};
const PUSH_QUEUE_BOUNDS: Bounds<u64> = Bounds {
    min: 16,
    max: 1_000_000,
};
const LEASE_MAX_CONCURRENT_BOUNDS: Bounds<u64> = Bounds {
    min: 1,
    max: 100_000,
};
const LEASE_WINDOW_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(1),
    max: Duration::from_secs(24 * 3600),
};
const LEASE_COOLDOWN_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::ZERO,
    max: Duration::from_secs(24 * 3600),
};
const LEASE_TTL_BOUNDS: Bounds<Duration> = Bounds {
    min: Duration::from_secs(10),
    max: Duration::from_secs(24 * 3600),
};

/// The validated configuration. Values outside their bounds never get this far.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TCP address the gRPC server listens on.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// A Unix socket the Collector API is also served on (mode 0660, `auth.socket_group`);
    /// its callers are identified by their Unix credentials (uid 0 and the collector's own uid
    /// are operators). Off when unset.
    #[serde(deserialize_with = "socket_path")]
    pub socket: Option<PathBuf>,
    /// The collector's own hash-chained audit log of operator changes (silences, notes).
    /// Unset: those changes are refused (FAILED_PRECONDITION).
    #[serde(deserialize_with = "audit_log_path")]
    pub audit_log: Option<PathBuf>,
    /// Where `/metrics` is served over plain HTTP (Prometheus text format); off when unset.
    #[serde(deserialize_with = "metrics_listen_address")]
    pub metrics_listen: Option<SocketAddr>,
    /// A node with no report for this long is marked stale (and NODE_STALE fires).
    #[serde(deserialize_with = "stale_after")]
    pub stale_after: Duration,
    /// How often the sweeper looks for stale nodes; also the systemd watchdog ping period.
    #[serde(deserialize_with = "sweep_interval")]
    pub sweep_interval: Duration,
    /// A node with no report for this long is forgotten: removed from the fleet, its alerts
    /// resolved. Always longer than `stale_after`.
    #[serde(deserialize_with = "forget_after")]
    pub forget_after: Duration,
    /// Most nodes the fleet holds; reports under a new node name beyond this are refused.
    #[serde(deserialize_with = "max_nodes")]
    pub max_nodes: usize,
    /// Largest gRPC message the server decodes (a report carries a whole node snapshot).
    #[serde(deserialize_with = "max_message_bytes")]
    pub max_message_bytes: usize,
    /// Events buffered per WatchFleet / WatchAlerts watcher before a slow one skips ahead.
    #[serde(deserialize_with = "watch_buffer")]
    pub watch_buffer: usize,
    /// The SQLite file conditions, alert transitions and actions are kept in; `None` keeps no
    /// history (QueryHistory then answers FAILED_PRECONDITION).
    #[serde(deserialize_with = "history_path")]
    pub history_path: Option<PathBuf>,
    /// Rows older than this (conditions: since they ended) are deleted.
    #[serde(deserialize_with = "history_retention")]
    pub history_retention: Duration,
    /// A PostgreSQL database for the history instead of `history_path`: one several
    /// collectors share (see `crate::history::postgres`).
    #[serde(deserialize_with = "history::history_url")]
    pub history_url: Option<String>,
    /// The file holding the PostgreSQL password (never in the URL).
    #[serde(deserialize_with = "history::absolute_file")]
    pub history_password_file: Option<PathBuf>,
    /// This collector's name in a shared history; the host name and listen port by default.
    #[serde(deserialize_with = "history::collector_name")]
    pub collector_name: Option<String>,
    /// Pending durations and the Alertmanager push.
    pub alerts: AlertsConfig,
    /// Mutual TLS on `listen`; plain TCP when unset.
    pub tls: TlsConfig,
    /// Which client certificates may stream reports (and take leases).
    pub auth: AuthConfig,
    /// The remediation lease budget and circuit breaker (`leases.rs`).
    pub leases: LeasesConfig,
    /// When an incident closes (`incidents.rs`).
    pub incidents: IncidentsConfig,
    /// Alert priorities and their escalation (`priority.rs`).
    pub priorities: PrioritiesConfig,
    /// The status page (`web/`).
    pub web: WebConfig,
}

/// The `[leases]` table: how many destructive remediation steps agents may take at once and
/// per window across the fleet, and the circuit breaker (see `leases.rs` for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasesConfig {
    /// Most leases held at once.
    #[serde(deserialize_with = "lease_max_concurrent")]
    pub max_concurrent: usize,
    /// Share of the devices the collector holds that may get a lease within `window`
    /// (at least one); more devices than that asking within `window` opens the breaker.
    #[serde(deserialize_with = "lease_max_fraction")]
    pub max_fraction: Fraction,
    /// The sliding window of `max_fraction`.
    #[serde(deserialize_with = "lease_window")]
    pub window: Duration,
    /// How long the breaker stays open after the storm that opened it ends.
    #[serde(deserialize_with = "lease_cooldown")]
    pub cooldown: Duration,
    /// A lease not released within this is freed (its agent may have died mid-step).
    #[serde(deserialize_with = "lease_ttl")]
    pub ttl: Duration,
}

impl Default for LeasesConfig {
    fn default() -> Self {
        LeasesConfig {
            max_concurrent: to_usize(DEFAULT_LEASE_MAX_CONCURRENT),
            max_fraction: Fraction::DEFAULT,
            window: DEFAULT_LEASE_WINDOW,
            cooldown: DEFAULT_LEASE_COOLDOWN,
            ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// The `[tls]` table: PEM files, absolute paths. With `cert`, `listen` serves TLS only and
/// every client must present a certificate signed by `client_ca` (mutual TLS); the files are
/// read when the service starts (`health_daemon::tls`), so `check-config` checks only the
/// paths' form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The collector's certificate chain.
    #[serde(deserialize_with = "pem_path")]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    #[serde(deserialize_with = "pem_path")]
    pub key: Option<PathBuf>,
    /// CA certificates that client certificates (agents, operators' agent-ctl) must chain to.
    #[serde(deserialize_with = "pem_path")]
    pub client_ca: Option<PathBuf>,
}

/// The `[auth]` table. Every client of a TLS listener has a certificate from `client_ca`; that
/// is enough for the read-only queries. Only `agent_subjects` may call Report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Certificate subjects allowed to stream reports, written as the agent's policy writes
    /// them (`health_daemon::subjects`): a subject CN, a DNS/email/URI SAN, or `IP:10.0.0.5`
    /// for an IP SAN. Empty: any certificate signed by `tls.client_ca`. Needs `[tls]`.
    #[serde(deserialize_with = "subjects")]
    pub agent_subjects: Vec<String>,
    /// Certificate subjects that are operators over TLS (may create and expire silences, add
    /// incident notes). Needs `[tls]`.
    #[serde(deserialize_with = "subjects")]
    pub operator_subjects: Vec<String>,
    /// Unix users (numeric uids) that are operators on `socket`, besides uid 0 and the
    /// collector's own.
    #[serde(deserialize_with = "uids")]
    pub operator_uids: Vec<u32>,
    /// Unix groups whose members are operators on `socket`.
    #[serde(deserialize_with = "groups")]
    pub operator_groups: Vec<String>,
    /// The group `socket` is given (mode 0660), so its members can connect.
    #[serde(deserialize_with = "socket_group")]
    pub socket_group: Option<String>,
}

/// The `[alerts]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Per condition code (proto name), how long a condition must persist before its alert
    /// fires; codes not listed fire at once. Written entries replace the defaults one by one.
    #[serde(rename = "for", deserialize_with = "pending_for")]
    pub pending_for: BTreeMap<String, Duration>,
    /// Alertmanager base URLs (`http://host:9093`); alerts are POSTed to `<url>/api/v2/alerts`.
    #[serde(deserialize_with = "alertmanager_urls")]
    pub alertmanager: Vec<String>,
    /// Firing alerts are sent again this often; Alertmanager resolves an alert that is not
    /// refreshed before the `endsAt` we send (4 × this interval), as Prometheus does.
    #[serde(deserialize_with = "resend_interval")]
    pub resend_interval: Duration,
    /// Bound on one POST to one Alertmanager.
    #[serde(deserialize_with = "push_timeout")]
    pub push_timeout: Duration,
    /// Most alert updates waiting per Alertmanager; beyond it updates are dropped and counted.
    #[serde(deserialize_with = "push_queue")]
    pub push_queue: usize,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            pending_for: DEFAULT_FOR
                .iter()
                .map(|(code, hold)| ((*code).to_string(), *hold))
                .collect(),
            alertmanager: Vec::new(),
            resend_interval: DEFAULT_RESEND_INTERVAL,
            push_timeout: DEFAULT_PUSH_TIMEOUT,
            push_queue: to_usize(DEFAULT_PUSH_QUEUE),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN,
            socket: None,
            audit_log: None,
            metrics_listen: None,
            stale_after: DEFAULT_STALE_AFTER,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            forget_after: DEFAULT_FORGET_AFTER,
            max_nodes: to_usize(DEFAULT_MAX_NODES),
            max_message_bytes: to_usize(DEFAULT_MAX_MESSAGE_BYTES),
            watch_buffer: to_usize(DEFAULT_WATCH_BUFFER),
            history_path: None,
            history_retention: DEFAULT_HISTORY_RETENTION,
            history_url: None,
            history_password_file: None,
            collector_name: None,
            alerts: AlertsConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            leases: LeasesConfig::default(),
            incidents: IncidentsConfig::default(),
            web: WebConfig::default(),
            priorities: PrioritiesConfig::default(),
        }
    }
}

/// Why a configuration file was rejected. `Display` gives the one-line message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the file: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line}, column {column}: not valid TOML: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// One key's value is wrong (or two keys disagree); the field names the key to fix.
    #[error("{}: {field}", file.display())]
    Key { file: PathBuf, field: FieldError },
}

/// Reads and validates a configuration file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(file, &text)
}

/// Validates configuration text; `file` is used only to name the source in errors.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(file, text, &e))?;
    let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        key_error(file, text, key, &inner)
    })?;
    check_together(file, text, &config)?;
    Ok(config)
}

/// Checks between keys, once each key is valid on its own.
fn check_together(file: &Path, text: &str, config: &Config) -> Result<(), ConfigError> {
    if config.forget_after <= config.stale_after {
        // Quote the value as written; the text is known to be valid TOML by now.
        let written = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|table| match table.get("forget_after") {
                Some(toml::Value::String(s)) => Some(quoted(s)),
                _ => None,
            })
            .unwrap_or_else(|| {
                quoted(&humantime::format_duration(config.forget_after).to_string())
            });
        return Err(ConfigError::Key {
            file: file.to_path_buf(),
            field: FieldError::new(
                "forget_after",
                format!(
                    "expected a duration longer than stale_after ({}), found {written}",
                    humantime::format_duration(config.stale_after)
                ),
            ),
        });
    }
    web::check(file, config)?;
    history::check(file, config)?;
    check_tls(file, config)
}

/// `[tls]` comes whole (the listener serves mutual TLS or plain TCP, nothing in between), and
/// `[auth]` subjects need it: without TLS a client has no certificate to match.
fn check_tls(file: &Path, config: &Config) -> Result<(), ConfigError> {
    let fail = |key: &str, message: &str| {
        Err(ConfigError::Key {
            file: file.to_path_buf(),
            field: FieldError::new(key, message),
        })
    };
    let tls = &config.tls;
    match (&tls.cert, &tls.key, &tls.client_ca) {
        (Some(_), None, _) => fail("tls.key", "expected the key file of tls.cert, found none"),
        (None, Some(_), _) => fail(
            "tls.cert",
            "expected a certificate file with tls.key, found none",
        ),
        (Some(_), Some(_), None) => fail(
            "tls.client_ca",
            "expected a CA file with tls.cert (the collector serves mutual TLS only), found none",
        ),
        (None, None, Some(_)) => fail(
            "tls.cert",
            "expected the collector's certificate and key with tls.client_ca, found none",
        ),
        (None, None, None) if !config.auth.agent_subjects.is_empty() => fail(
            "auth.agent_subjects",
            "expected [tls] cert, key and client_ca too: certificate subjects exist only over TLS",
        ),
        _ => operator::check(file, config),
    }
}

fn syntax_error(file: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let (line, column) = error
        .span()
        .map_or((1, 1), |span| line_and_column(text, span.start));
    ConfigError::Syntax {
        file: file.to_path_buf(),
        line,
        column,
        message: error.message().trim().to_string(),
    }
}

fn key_error(file: &Path, text: &str, key: String, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim();
    // serde reports an unknown key from the enclosing table, so the path is the root (".");
    // the key itself is only in serde's message: "unknown field `x`, expected one of ...".
    if let Some(unknown) = unknown_key(message) {
        // The path does not say which table the key is in; serde's list of expected keys
        // does, and `push_queue` is only in [alerts].
        let (key, known) = if message.contains("`push_queue`") {
            (format!("alerts.{unknown}"), ALERTS_KEYS.as_slice())
        } else if message.contains("`client_ca`") {
            (format!("tls.{unknown}"), TLS_KEYS.as_slice())
        } else if message.contains("`agent_subjects`") {
            (format!("auth.{unknown}"), AUTH_KEYS.as_slice())
        } else if message.contains("`escalate_after`") {
            (format!("priorities.{unknown}"), PRIORITIES_KEYS.as_slice())
        } else if message.contains("`max_fraction`") {
            (format!("leases.{unknown}"), LEASES_KEYS.as_slice())
        } else if message.contains("`chart_step`") {
            (format!("web.{unknown}"), WEB_KEYS.as_slice())
        } else if message.contains("`close_after`") {
            (format!("incidents.{unknown}"), INCIDENTS_KEYS.as_slice())
        } else {
            (unknown.to_string(), KEYS.as_slice())
        };
        return ConfigError::Key {
            file: file.to_path_buf(),
            field: FieldError::new(
                key,
                format!("unknown key, expected one of: {}", known.join(", ")),
            ),
        };
    }
    if key == "." || key.is_empty() {
        // Not about one key, e.g. a duplicate table; the position is then the best pointer.
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| line_and_column(text, span.start));
        return ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            column,
            message: message.to_string(),
        };
    }
    ConfigError::Key {
        file: file.to_path_buf(),
        field: FieldError::new(key, message),
    }
}

/// The key named in serde's "unknown field `key`, expected ..." message, if it is one.
fn unknown_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// 1-based line and column of a byte offset, for pointing an editor at a syntax error.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

// --- per-key readers -------------------------------------------------------------------------
//
// Each reads the raw TOML value and returns a message in the "expected ..., found ..." form;
// serde_path_to_error then prefixes the key.

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("collector.toml"), text)
    }

    fn error_of(text: &str) -> String {
        match parse_str(text) {
            Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = parse_str("").expect("empty config is valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(config.stale_after, Duration::from_secs(10));
        assert_eq!(config.sweep_interval, Duration::from_millis(500));
        assert_eq!(config.forget_after, Duration::from_secs(24 * 3600));
        assert_eq!(config.max_nodes, 100_000);
        assert_eq!(config.max_message_bytes, 4_194_304);
        assert_eq!(config.watch_buffer, 1024);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse_str(
            r#"
            listen = "0.0.0.0:9000"
            stale_after = "30s"
            sweep_interval = "1s"
            forget_after = "7d"
            max_nodes = 5000
            max_message_bytes = 1048576
            watch_buffer = 64
            "#,
        )
        .expect("valid config");
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(config.stale_after, Duration::from_secs(30));
        assert_eq!(config.sweep_interval, Duration::from_secs(1));
        assert_eq!(config.forget_after, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.max_nodes, 5000);
        assert_eq!(config.max_message_bytes, 1_048_576);
        assert_eq!(config.watch_buffer, 64);
    }

    #[test]
    fn missing_file_names_the_path_and_the_os_error() {
        let path = Path::new("/nonexistent/health-collector/collector.toml");
        let message = load(path).expect_err("missing file").to_string();
        assert!(message.starts_with("/nonexistent/health-collector/collector.toml: "));
        assert!(message.contains("No such file or directory"), "{message}");
    }

    #[test]
    fn unknown_key_is_named() {
        let message = error_of("stale_afer = \"10s\"\n");
        assert!(
            message.starts_with("collector.toml: stale_afer: unknown key"),
            "{message}"
        );
        assert!(message.contains("stale_after"), "{message}");
        assert!(
            message.ends_with(&format!("expected one of: {}", KEYS.join(", "))),
            "{message}"
        );
    }

    #[test]
    fn wrong_type_names_the_key_and_the_expected_type() {
        let message = error_of("stale_after = 10\n");
        assert!(
            message.starts_with("collector.toml: stale_after: "),
            "{message}"
        );
        assert!(message.contains("expected a duration"), "{message}");
        assert!(message.contains("found integer 10"), "{message}");

        let message = error_of("watch_buffer = \"lots\"\n");
        assert!(
            message.starts_with("collector.toml: watch_buffer: "),
            "{message}"
        );
        assert!(message.contains("expected an integer"), "{message}");
        assert!(message.contains("found string \"lots\""), "{message}");

        let message = error_of("listen = 7070\n");
        assert!(message.starts_with("collector.toml: listen: "), "{message}");
        assert!(message.contains("expected a socket address"), "{message}");
    }

    #[test]
    fn out_of_range_values_say_the_bounds_and_the_value() {
        assert_eq!(
            error_of("stale_after = \"0s\"\n"),
            "collector.toml: stale_after: expected a duration between 1s and 1h, found \"0s\""
        );
        assert_eq!(
            error_of("sweep_interval = \"2m\"\n"),
            "collector.toml: sweep_interval: expected a duration between 50ms and 1m, found \"2m\""
        );
        assert_eq!(
            error_of("forget_after = \"30s\"\n"),
            "collector.toml: forget_after: expected a duration between 1m and 30days, found \"30s\""
        );
        assert_eq!(
            error_of("forget_after = \"31d\"\n"),
            "collector.toml: forget_after: expected a duration between 1m and 30days, found \"31d\""
        );
        assert_eq!(
            error_of("max_nodes = 0\n"),
            "collector.toml: max_nodes: expected an integer from 1 to 10000000, found 0"
        );
        assert_eq!(
            error_of("max_nodes = 10000001\n"),
            "collector.toml: max_nodes: expected an integer from 1 to 10000000, found 10000001"
        );
        assert_eq!(
            error_of("max_message_bytes = 100\n"),
            "collector.toml: max_message_bytes: expected an integer from 1024 to 67108864, found 100"
        );
        assert_eq!(
            error_of("watch_buffer = -1\n"),
            "collector.toml: watch_buffer: expected an integer from 16 to 65536, found -1"
        );
        let message = error_of("listen = \"localhost:7070\"\n");
        assert!(
            message.starts_with("collector.toml: listen: expected a socket address"),
            "{message}"
        );
        assert!(message.ends_with("found \"localhost:7070\""), "{message}");
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        let config = parse_str("forget_after = \"1m\"\nmax_nodes = 1\n").expect("lower bounds");
        assert_eq!(config.forget_after, Duration::from_secs(60));
        assert_eq!(config.max_nodes, 1);
        let config =
            parse_str("forget_after = \"30d\"\nmax_nodes = 10000000\n").expect("upper bounds");
        assert_eq!(config.forget_after, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(config.max_nodes, 10_000_000);
    }

    #[test]
    fn forget_after_must_be_longer_than_stale_after() {
        assert_eq!(
            error_of("stale_after = \"30m\"\nforget_after = \"10m\"\n"),
            "collector.toml: forget_after: expected a duration longer than stale_after (30m), \
             found \"10m\""
        );
        // Equal is not longer: the node would be forgotten the moment it went stale.
        assert_eq!(
            error_of("forget_after = \"60s\"\nstale_after = \"1m\"\n"),
            "collector.toml: forget_after: expected a duration longer than stale_after (1m), \
             found \"60s\""
        );
        let config = parse_str("stale_after = \"1m\"\nforget_after = \"61s\"\n").expect("valid");
        assert_eq!(config.forget_after, Duration::from_secs(61));
    }

    #[test]
    fn the_example_file_sets_every_key_to_its_default() {
        let text = include_str!("../../../systemd/collector.toml.example");
        let config = parse(Path::new("collector.toml.example"), text).expect("example is valid");
        // The packaged configuration keeps history in the service's StateDirectory; without a
        // file there is none, rather than a file in a place nobody chose.
        assert_eq!(
            config.history_path.as_deref(),
            Some(Path::new("/var/lib/health-collector/history.db"))
        );
        // It keeps an audit log of operators' changes there too.
        assert_eq!(
            config.audit_log.as_deref(),
            Some(Path::new("/var/lib/health-collector/audit.jsonl"))
        );
        assert_eq!(
            Config {
                history_path: None,
                audit_log: None,
                ..config.clone()
            },
            Config::default()
        );
        let priorities = text
            .split_once("[priorities]")
            .map(|(_, table)| table)
            .expect("the example has a [priorities] table");
        for key in PRIORITIES_KEYS {
            assert!(
                priorities.contains(&format!("{key} = "))
                    || priorities.contains(&format!("[[priorities.{key}]]")),
                "the example does not document priorities.{key}"
            );
        }
        for key in KEYS {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(&format!("{key} = "))
                        || line.starts_with(&format!("# {key} = "))
                        || line == format!("[{key}]")
                        || line == format!("# [{key}]")),
                "the example does not document {key}"
            );
        }
        let alerts = text
            .split_once("[alerts]")
            .map(|(_, table)| table)
            .expect("the example has an [alerts] table");
        for key in ALERTS_KEYS {
            assert!(
                alerts
                    .lines()
                    .any(|line| line.starts_with(&format!("{key} = "))),
                "the example does not document alerts.{key}"
            );
        }
        // [tls] and [auth] have no defaults to show: their keys are documented commented out.
        for key in TLS_KEYS.iter().chain(&AUTH_KEYS) {
            assert!(
                text.lines()
                    .any(|line| line.starts_with(&format!("# {key} = "))),
                "the example does not document {key}"
            );
        }
        let leases = text
            .split_once("[leases]")
            .map(|(_, table)| table)
            .expect("the example has a [leases] table");
        for key in LEASES_KEYS {
            assert!(
                leases
                    .lines()
                    .any(|line| line.starts_with(&format!("{key} = "))),
                "the example does not document leases.{key}"
            );
        }
        // Every default pending duration is written out, so the file shows what applies.
        for (code, _) in DEFAULT_FOR {
            assert!(alerts.contains(&format!("{code} = ")), "{code}");
        }
    }

    #[test]
    fn priorities_are_read_and_merged_over_the_defaults() {
        use crate::priority::Priority;
        let config = parse_str(
            r#"
            [priorities]
            escalate_after = { P0 = "2s", P3 = "1h" }
            [[priorities.rule]]
            code = "DEVICE_ERROR"
            severity = "critical"
            kind = "loihi2"
            priority = "P1"
            [[priorities.rule]]
            code = "THERMAL_CRITICAL"
            priority = "P1"
            "#,
        )
        .expect("valid");
        let map = config.priorities.map();
        assert_eq!(map.priority_of("DEVICE_ERROR", 3, 1), Priority::P1);
        assert_eq!(map.priority_of("DEVICE_ERROR", 2, 1), Priority::P3);
        assert_eq!(map.priority_of("THERMAL_CRITICAL", 3, 1), Priority::P1);
        assert_eq!(
            map.escalate_after(Priority::P0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            map.escalate_after(Priority::P1),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            map.escalate_after(Priority::P3),
            Some(Duration::from_secs(3600))
        );
        let never =
            parse_str("[priorities]\nescalate_after = { P0 = \"never\" }\n").expect("valid");
        assert_eq!(never.priorities.map().escalate_after(Priority::P0), None);
    }

    #[test]
    fn priorities_errors_name_the_key() {
        let rule = |body: &str| error_of(&format!("[[priorities.rule]]\n{body}\n"));
        assert_eq!(
            rule("code = \"DEVICE_ERRO\"\npriority = \"P1\""),
            "collector.toml: priorities.rule: rule 1: code: expected a condition code such as \
             DEVICE_ERROR, found \"DEVICE_ERRO\""
        );
        assert_eq!(
            rule("code = \"DEVICE_ERROR\"\npriority = \"P4\""),
            "collector.toml: priorities.rule: rule 1: priority: expected one of P0, P1, P2, P3, \
             found \"P4\""
        );
        assert_eq!(
            rule("code = \"DEVICE_ERROR\""),
            "collector.toml: priorities.rule: rule 1: priority: expected one of P0, P1, P2, P3, \
             found none"
        );
        assert!(
            rule("code = \"DEVICE_ERROR\"\npriority = \"P1\"\nseverity = \"info\"")
                .contains("rule 1: severity: expected \"warning\" or \"critical\"")
        );
        assert!(
            rule("code = \"DEVICE_ERROR\"\npriority = \"P1\"\nkind = \"tpu\"")
                .contains("rule 1: kind: expected a device kind, one of loihi2, spinnaker")
        );
        assert!(
            rule("code = \"DEVICE_ERROR\"\npriority = \"P1\"\nprio = 1").contains(
                "rule 1: prio: unknown key, expected one of: code, severity, kind, priority"
            )
        );
        let twice = error_of(
            "[[priorities.rule]]\ncode = \"DISK_FULL\"\npriority = \"P1\"\n\
             [[priorities.rule]]\ncode = \"DISK_FULL\"\npriority = \"P2\"\n",
        );
        assert!(
            twice.contains("priorities.rule: rule 2: expected one rule per code"),
            "{twice}"
        );
        assert_eq!(
            error_of("[priorities]\nescalate_after = { P5 = \"1m\" }\n"),
            "collector.toml: priorities.escalate_after: expected one of P0, P1, P2, P3, found \"P5\""
        );
        assert!(error_of("[priorities]\nescalate_after = { P0 = \"0s\" }\n").starts_with(
            "collector.toml: priorities.escalate_after: P0: expected a duration between 1s and 7days"
        ));
        assert_eq!(
            error_of("[priorities]\nescalate = {}\n"),
            "collector.toml: priorities.escalate: unknown key, expected one of: escalate_after, rule"
        );
    }

    #[test]
    fn unparseable_duration_is_reported_like_an_out_of_range_one() {
        let message = error_of("stale_after = \"ten seconds\"\n");
        assert!(message.starts_with("collector.toml: stale_after: expected a duration"));
        assert!(message.ends_with("found \"ten seconds\""), "{message}");
    }

    #[test]
    fn alerts_table_is_read_and_merged_over_the_defaults() {
        let config = parse_str(
            r#"
            history_path = "/var/lib/health-collector/history.db"
            history_retention = "7d"
            [alerts]
            for = { THERMAL_WARNING = "0s", DISK_FULL = "2m" }
            alertmanager = ["http://127.0.0.1:9093/", "http://am-2:9093/prefix"]
            resend_interval = "30s"
            push_timeout = "2s"
            push_queue = 100
            "#,
        )
        .expect("valid config");
        assert_eq!(
            config.history_path.as_deref(),
            Some(Path::new("/var/lib/health-collector/history.db"))
        );
        assert_eq!(config.history_retention, Duration::from_secs(7 * 24 * 3600));
        let pending = &config.alerts.pending_for;
        assert_eq!(pending["THERMAL_WARNING"], Duration::ZERO);
        assert_eq!(pending["DISK_FULL"], Duration::from_secs(120));
        assert_eq!(
            pending["DEVICE_UNRESPONSIVE"],
            Duration::from_secs(30),
            "a default kept"
        );
        assert_eq!(
            config.alerts.alertmanager,
            vec!["http://127.0.0.1:9093", "http://am-2:9093/prefix"]
        );
        assert_eq!(config.alerts.resend_interval, Duration::from_secs(30));
        assert_eq!(config.alerts.push_timeout, Duration::from_secs(2));
        assert_eq!(config.alerts.push_queue, 100);
    }

    #[test]
    fn alerts_table_errors_name_the_key() {
        assert_eq!(
            error_of("[alerts]\nfor = { THERMAL_WARNIN = \"1m\" }\n"),
            "collector.toml: alerts.for: expected a condition code such as THERMAL_WARNING, \
             found \"THERMAL_WARNIN\""
        );
        assert_eq!(
            error_of("[alerts]\nfor = { THERMAL_WARNING = \"2d\" }\n"),
            "collector.toml: alerts.for: THERMAL_WARNING: expected a duration between 0s and \
             1day, found \"2d\""
        );
        assert!(error_of("[alerts]\nfor = { NODE_STALE = \"1m\" }\n").contains("stale_after"));
        let message = error_of("[alerts]\nalertmanager = [\"https://am:9093\"]\n");
        assert!(
            message.starts_with("collector.toml: alerts.alertmanager: expected an http:// URL"),
            "{message}"
        );
        assert!(message.ends_with("found \"https://am:9093\""), "{message}");
        let message = error_of("[alerts]\nresend = \"1m\"\n");
        assert_eq!(
            message,
            format!(
                "collector.toml: alerts.resend: unknown key, expected one of: {}",
                ALERTS_KEYS.join(", ")
            )
        );
        assert_eq!(
            error_of("history_retention = \"10m\"\n"),
            "collector.toml: history_retention: expected a duration between 1h and 10years, \
             found \"10m\""
        );
        assert!(error_of("history_path = \"\"\n")
            .starts_with("collector.toml: history_path: expected a file path"));
    }

    #[test]
    fn the_web_table_is_checked_key_by_key() {
        let config = parse_str("").expect("valid");
        assert!(config.web.enabled && !config.web.allow_remote);
        assert_eq!(config.web.chart_step, Duration::from_secs(60));
        let config =
            parse_str("[web]\nlisten = \"127.0.0.1:9466\"\nchart_step = \"5s\"\n").expect("valid");
        assert_eq!(
            config.web.listen,
            Some("127.0.0.1:9466".parse().expect("addr"))
        );
        assert_eq!(config.web.chart_step, Duration::from_secs(5));
        assert!(error_of("[web]\ncolour = \"blue\"\n")
            .starts_with("collector.toml: web.colour: unknown key, expected one of: enabled, listen, allow_remote, chart_step"));
        assert!(error_of("[web]\nchart_step = \"10ms\"\n")
            .starts_with("collector.toml: web.chart_step: "));
        let taken =
            error_of("metrics_listen = \"127.0.0.1:9465\"\n[web]\nlisten = \"127.0.0.1:9465\"\n");
        assert!(
            taken.starts_with("collector.toml: web.listen: expected an address of its own"),
            "{taken}"
        );
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_checked_like_listen() {
        assert_eq!(parse_str("").expect("valid").metrics_listen, None);
        let config = parse_str("metrics_listen = \"127.0.0.1:9465\"\n").expect("valid");
        assert_eq!(
            config.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9465)))
        );
        let message = error_of("metrics_listen = 9465\n");
        assert!(
            message.starts_with("collector.toml: metrics_listen: expected a socket address"),
            "{message}"
        );
    }

    #[test]
    fn tls_and_auth_tables_are_read() {
        let config = parse_str(
            r#"
            [tls]
            cert = "/etc/health-collector/tls/collector.pem"
            key = "/etc/health-collector/tls/collector.key"
            client_ca = "/etc/health-collector/tls/ca.pem"
            [auth]
            agent_subjects = ["node-1", "node-2"]
            "#,
        )
        .expect("valid config");
        assert_eq!(
            config.tls.cert.as_deref(),
            Some(Path::new("/etc/health-collector/tls/collector.pem"))
        );
        assert_eq!(
            config.tls.key.as_deref(),
            Some(Path::new("/etc/health-collector/tls/collector.key"))
        );
        assert_eq!(
            config.tls.client_ca.as_deref(),
            Some(Path::new("/etc/health-collector/tls/ca.pem"))
        );
        assert_eq!(config.auth.agent_subjects, vec!["node-1", "node-2"]);
        assert_eq!(parse_str("").expect("valid").tls, TlsConfig::default());
    }

    #[test]
    fn tls_and_auth_errors_name_the_key() {
        let message = error_of("[tls]\ncert = \"collector.pem\"\n");
        assert_eq!(
            message,
            "collector.toml: tls.cert: expected an absolute path to a PEM file such as \
             \"/etc/health-collector/tls/collector.pem\", found string \"collector.pem\""
        );
        assert_eq!(
            error_of("[tls]\ncert = \"/c.pem\"\nclient_ca = \"/ca.pem\"\n"),
            "collector.toml: tls.key: expected the key file of tls.cert, found none"
        );
        assert_eq!(
            error_of("[tls]\nkey = \"/c.key\"\n"),
            "collector.toml: tls.cert: expected a certificate file with tls.key, found none"
        );
        assert_eq!(
            error_of("[tls]\ncert = \"/c.pem\"\nkey = \"/c.key\"\n"),
            "collector.toml: tls.client_ca: expected a CA file with tls.cert (the collector \
             serves mutual TLS only), found none"
        );
        assert!(
            error_of("[tls]\nclient_ca = \"/ca.pem\"\n").starts_with("collector.toml: tls.cert: ")
        );
        assert_eq!(
            error_of("[auth]\nagent_subjects = [\"node-1\"]\n"),
            "collector.toml: auth.agent_subjects: expected [tls] cert, key and client_ca too: \
             certificate subjects exist only over TLS"
        );
        assert_eq!(
            error_of("[auth]\nagent_subjects = [\"\"]\n"),
            "collector.toml: auth.agent_subjects: expected an array of certificate subjects \
             such as [\"node-1\"], found string \"\""
        );
        assert_eq!(
            error_of("[tls]\nca = \"/ca.pem\"\n"),
            "collector.toml: tls.ca: unknown key, expected one of: cert, key, client_ca"
        );
        assert_eq!(
            error_of("[auth]\noperator_subject = []\n"),
            "collector.toml: auth.operator_subject: unknown key, expected one of: \
             agent_subjects, operator_subjects, operator_uids, operator_groups, socket_group"
        );
    }

    #[test]
    fn leases_table_is_read_and_has_defaults() {
        let defaults = parse_str("").expect("valid").leases;
        assert_eq!(defaults.max_concurrent, 4);
        assert_eq!(defaults.max_fraction.get(), 0.1);
        assert_eq!(defaults.window, Duration::from_secs(300));
        assert_eq!(defaults.cooldown, Duration::from_secs(300));
        assert_eq!(defaults.ttl, Duration::from_secs(600));
        let config = parse_str(
            "[leases]\nmax_concurrent = 2\nmax_fraction = 0.5\nwindow = \"1m\"\n\
             cooldown = \"0s\"\nttl = \"30s\"\n",
        )
        .expect("valid config");
        assert_eq!(config.leases.max_concurrent, 2);
        assert_eq!(config.leases.max_fraction.get(), 0.5);
        assert_eq!(config.leases.window, Duration::from_secs(60));
        assert_eq!(config.leases.cooldown, Duration::ZERO);
        assert_eq!(config.leases.ttl, Duration::from_secs(30));
        let whole = parse_str("[leases]\nmax_fraction = 1\n").expect("1 is a share");
        assert_eq!(whole.leases.max_fraction.get(), 1.0);
    }

    #[test]
    fn leases_errors_name_the_key() {
        assert_eq!(
            error_of("[leases]\nmax_concurrent = 0\n"),
            "collector.toml: leases.max_concurrent: expected an integer from 1 to 100000, found 0"
        );
        for bad in ["0.0", "1.5", "-0.1", "nan", "\"10%\""] {
            let message = error_of(&format!("[leases]\nmax_fraction = {bad}\n"));
            assert!(
                message.starts_with(
                    "collector.toml: leases.max_fraction: expected a number greater than 0 \
                     and at most 1, such as 0.1, found "
                ),
                "{message}"
            );
        }
        assert_eq!(
            error_of("[leases]\nwindow = \"0s\"\n"),
            "collector.toml: leases.window: expected a duration between 1s and 1day, found \"0s\""
        );
        assert_eq!(
            error_of("[leases]\nttl = \"5s\"\n"),
            "collector.toml: leases.ttl: expected a duration between 10s and 1day, found \"5s\""
        );
        assert!(error_of("[leases]\ncooldown = 300\n")
            .starts_with("collector.toml: leases.cooldown: expected a duration"));
        assert_eq!(
            error_of("[leases]\nbudget = 3\n"),
            format!(
                "collector.toml: leases.budget: unknown key, expected one of: {}",
                LEASES_KEYS.join(", ")
            )
        );
    }

    #[test]
    fn syntax_error_gives_the_line() {
        let message = error_of("listen = \"127.0.0.1:7070\"\nstale_after = \n");
        assert!(message.starts_with("collector.toml: line 2, "), "{message}");
    }
}
