//! Field readers of `collector.toml`: each value read as a loose `toml::Value` and checked
//! here, so every error is worded the same way and names what was expected and found.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use super::*;
use crate::leases::Fraction;

pub(super) fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    const EXPECTED: &str = "expected a socket address such as \"127.0.0.1:7070\" or \"[::1]:7070\"";
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => s
            .parse()
            .map_err(|_| D::Error::custom(format!("{EXPECTED}, found {}", quoted(&s)))),
        other => Err(D::Error::custom(format!(
            "{EXPECTED}, found {}",
            Found(&other)
        ))),
    }
}

pub(super) fn metrics_listen_address<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    listen_address(d).map(Some)
}

pub(super) fn stale_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &STALE_AFTER_BOUNDS)
}

pub(super) fn sweep_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &SWEEP_INTERVAL_BOUNDS)
}

pub(super) fn forget_after<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &FORGET_AFTER_BOUNDS)
}

pub(super) fn max_nodes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    integer_within(d, &MAX_NODES_BOUNDS)
}

pub(super) fn max_message_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    integer_within(d, &MAX_MESSAGE_BYTES_BOUNDS)
}

pub(super) fn watch_buffer<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    integer_within(d, &WATCH_BUFFER_BOUNDS)
}

pub(super) fn history_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    const EXPECTED: &str = "expected a file path such as \"/var/lib/health-collector/history.db\"";
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) if !s.trim().is_empty() => Ok(Some(PathBuf::from(s))),
        other => Err(D::Error::custom(format!(
            "{EXPECTED}, found {}",
            Found(&other)
        ))),
    }
}

/// A PEM file named by absolute path: the service may start from any directory.
pub(super) fn pem_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    const EXPECTED: &str = "expected an absolute path to a PEM file such as \"/etc/health-collector/tls/collector.pem\"";
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) if Path::new(&s).is_absolute() => Ok(Some(PathBuf::from(s))),
        other => Err(D::Error::custom(format!(
            "{EXPECTED}, found {}",
            Found(&other)
        ))),
    }
}

/// Certificate subjects: an array of non-empty strings.
pub(super) fn subjects<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    const EXPECTED: &str = "expected an array of certificate subjects such as [\"node-1\"]";
    let toml::Value::Array(items) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(EXPECTED));
    };
    items
        .into_iter()
        .map(|item| match item {
            toml::Value::String(s) if !s.trim().is_empty() => Ok(s),
            other => Err(D::Error::custom(format!(
                "{EXPECTED}, found {}",
                Found(&other)
            ))),
        })
        .collect()
}

pub(super) fn history_retention<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &HISTORY_RETENTION_BOUNDS)
}

pub(super) fn resend_interval<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &RESEND_INTERVAL_BOUNDS)
}

pub(super) fn push_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &PUSH_TIMEOUT_BOUNDS)
}

pub(super) fn push_queue<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    integer_within(d, &PUSH_QUEUE_BOUNDS)
}

pub(super) fn lease_max_concurrent<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    integer_within(d, &LEASE_MAX_CONCURRENT_BOUNDS)
}

pub(super) fn lease_window<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &LEASE_WINDOW_BOUNDS)
}

pub(super) fn lease_cooldown<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &LEASE_COOLDOWN_BOUNDS)
}

pub(super) fn lease_ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration_within(d, &LEASE_TTL_BOUNDS)
}

/// A share of the fleet: a number greater than 0 and at most 1 (`1` is read as 1.0).
pub(super) fn lease_max_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<Fraction, D::Error> {
    const EXPECTED: &str = "expected a number greater than 0 and at most 1, such as 0.1";
    let value = toml::Value::deserialize(d)?;
    let number = match &value {
        toml::Value::Float(x) => Some(*x),
        toml::Value::Integer(1) => Some(1.0),
        _ => None,
    };
    number
        .and_then(Fraction::new)
        .ok_or_else(|| D::Error::custom(format!("{EXPECTED}, found {}", Found(&value))))
}

/// `for = { THERMAL_WARNING = "1m", ... }`: written codes replace their defaults.
pub(super) fn pending_for<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Duration>, D::Error> {
    let toml::Value::Table(table) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(
            "expected a table of condition codes to durations, such as { THERMAL_WARNING = \"1m\" }",
        ));
    };
    let mut pending = AlertsConfig::default().pending_for;
    for (code, value) in table {
        match health_proto::v1::ConditionCode::from_str_name(&code) {
            Some(health_proto::v1::ConditionCode::NodeStale) => {
                return Err(D::Error::custom(
                    "NODE_STALE: its pending time is stale_after, not an [alerts] for entry",
                ))
            }
            Some(health_proto::v1::ConditionCode::Unspecified) | None => {
                return Err(D::Error::custom(format!(
                    "expected a condition code such as THERMAL_WARNING, found {}",
                    quoted(&code)
                )))
            }
            Some(_) => {}
        }
        let hold = duration_within(value, &FOR_BOUNDS)
            .map_err(|e: toml::de::Error| D::Error::custom(format!("{code}: {}", e.message())))?;
        pending.insert(code, hold);
    }
    Ok(pending)
}

/// Alertmanager base URLs: plain `http://host:port[/prefix]`, as on a management network.
pub(super) fn alertmanager_urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    const EXPECTED: &str =
        "expected an array of Alertmanager URLs such as [\"http://127.0.0.1:9093\"]";
    let toml::Value::Array(items) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(EXPECTED));
    };
    let mut urls = Vec::with_capacity(items.len());
    for item in items {
        let toml::Value::String(url) = item else {
            return Err(D::Error::custom(format!(
                "{EXPECTED}, found {}",
                Found(&item)
            )));
        };
        let base = url.trim_end_matches('/');
        let valid = base
            .parse::<hyper::Uri>()
            .ok()
            .filter(|uri| uri.scheme_str() == Some("http") && uri.host().is_some())
            .filter(|uri| uri.query().is_none());
        if valid.is_none() {
            return Err(D::Error::custom(format!(
                "expected an http:// URL with a host (https is not supported: put the \
                 Alertmanager on loopback or a management network), found {}",
                quoted(&url)
            )));
        }
        urls.push(base.to_string());
    }
    Ok(urls)
}

pub(super) fn duration_within<'de, D: Deserializer<'de>>(
    d: D,
    bounds: &Bounds<Duration>,
) -> Result<Duration, D::Error> {
    let expected = format!(
        "expected a duration between {} and {}",
        humantime::format_duration(bounds.min),
        humantime::format_duration(bounds.max)
    );
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => match humantime::parse_duration(s.trim()) {
            Ok(value) if value >= bounds.min && value <= bounds.max => Ok(value),
            _ => Err(D::Error::custom(format!(
                "{expected}, found {}",
                quoted(&s)
            ))),
        },
        // A bare number is the classic mistake ("10" meaning seconds); say what to write.
        other => Err(D::Error::custom(format!(
            "{expected} written as a string such as \"10s\" or \"500ms\", found {}",
            Found(&other)
        ))),
    }
}

pub(super) fn integer_within<'de, D: Deserializer<'de>>(
    d: D,
    bounds: &Bounds<u64>,
) -> Result<usize, D::Error> {
    let expected = format!("expected an integer from {} to {}", bounds.min, bounds.max);
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(i) => match u64::try_from(i) {
            Ok(value) if value >= bounds.min && value <= bounds.max => usize::try_from(value)
                .map_err(|_| {
                    D::Error::custom(format!(
                        "{expected}, found {i} (too large for this machine)"
                    ))
                }),
            _ => Err(D::Error::custom(format!("{expected}, found {i}"))),
        },
        other => Err(D::Error::custom(format!(
            "{expected}, found {}",
            Found(&other)
        ))),
    }
}

/// The defaults are small constants; this only exists so `Default` has no `as` casts.
pub(super) fn to_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// A string as the operator wrote it, quoted and cut short so a pasted blob stays one line.
pub(super) fn quoted(s: &str) -> String {
    const LIMIT: usize = 80;
    if s.chars().count() > LIMIT {
        let head: String = s.chars().take(LIMIT).collect();
        format!("{head:?}...")
    } else {
        format!("{s:?}")
    }
}

/// Describes a TOML value by its type and, for scalars, its value: `integer 10`, `a table`.
pub(super) struct Found<'a>(pub(super) &'a toml::Value);

impl fmt::Display for Found<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            toml::Value::String(s) => write!(f, "string {}", quoted(s)),
            toml::Value::Integer(i) => write!(f, "integer {i}"),
            toml::Value::Float(x) => write!(f, "float {x}"),
            toml::Value::Boolean(b) => write!(f, "boolean {b}"),
            toml::Value::Datetime(dt) => write!(f, "date-time {dt}"),
            toml::Value::Array(_) => f.write_str("an array"),
            toml::Value::Table(_) => f.write_str("a table"),
        }
    }
}
