//! Field readers for the keys of the collector's operator role: the Unix `socket` it also
//! serves on, the `audit_log` its changes are recorded in, and the `[auth]` keys that say
//! who is an operator (`operator_subjects`, `operator_uids`, `operator_groups`,
//! `socket_group`). What the role allows is `crate::authz`.

use std::path::{Path, PathBuf};

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

use super::de::{quoted, Found};
use super::{Config, ConfigError};
use health_daemon::FieldError;

fn absolute_path<'de, D: Deserializer<'de>>(
    d: D,
    example: &str,
) -> Result<Option<PathBuf>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) if Path::new(&s).is_absolute() => Ok(Some(PathBuf::from(s))),
        other => Err(D::Error::custom(format!(
            "expected an absolute path such as {}, found {}",
            quoted(example),
            Found(&other)
        ))),
    }
}

pub(in crate::config) fn socket_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    absolute_path(d, "/run/health-collector/collector.sock")
}

pub(in crate::config) fn audit_log_path<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<PathBuf>, D::Error> {
    absolute_path(d, "/var/lib/health-collector/audit.jsonl")
}

pub(in crate::config) fn uids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    const EXPECTED: &str = "expected an array of numeric user ids such as [1000]";
    let toml::Value::Array(items) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(EXPECTED));
    };
    items
        .into_iter()
        .map(|item| match item {
            toml::Value::Integer(n) => {
                u32::try_from(n).map_err(|_| D::Error::custom(format!("{EXPECTED}, found {n}")))
            }
            other => Err(D::Error::custom(format!(
                "{EXPECTED}, found {}",
                Found(&other)
            ))),
        })
        .collect()
}

fn group_name(item: toml::Value, expected: &str) -> Result<String, String> {
    match item {
        toml::Value::String(s)
            if !s.trim().is_empty() && !s.contains(|c: char| c.is_whitespace()) =>
        {
            Ok(s)
        }
        other => Err(format!("{expected}, found {}", Found(&other))),
    }
}

pub(in crate::config) fn groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    const EXPECTED: &str = "expected an array of group names such as [\"hw-oncall\"]";
    let toml::Value::Array(items) = toml::Value::deserialize(d)? else {
        return Err(D::Error::custom(EXPECTED));
    };
    items
        .into_iter()
        .map(|item| group_name(item, EXPECTED).map_err(D::Error::custom))
        .collect()
}

pub(in crate::config) fn socket_group<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    group_name(
        toml::Value::deserialize(d)?,
        "expected a group name such as \"health-collector\"",
    )
    .map(Some)
    .map_err(D::Error::custom)
}

/// The operator keys that depend on others: certificate subjects exist only over TLS, and
/// the Unix-socket keys need the socket.
pub(in crate::config) fn check(file: &Path, config: &Config) -> Result<(), ConfigError> {
    let fail = |key: &str, message: &str| {
        Err(ConfigError::Key {
            file: file.to_path_buf(),
            field: FieldError::new(key, message),
        })
    };
    let auth = &config.auth;
    if config.tls.cert.is_none() && !auth.operator_subjects.is_empty() {
        return fail(
            "auth.operator_subjects",
            "expected [tls] cert, key and client_ca too: certificate subjects exist only over TLS",
        );
    }
    if config.socket.is_none() {
        if auth.socket_group.is_some() {
            return fail("auth.socket_group", "expected `socket` to be set too");
        }
        if !auth.operator_uids.is_empty() || !auth.operator_groups.is_empty() {
            let key = if auth.operator_uids.is_empty() {
                "auth.operator_groups"
            } else {
                "auth.operator_uids"
            };
            return fail(
                key,
                "expected `socket` to be set too: Unix credentials exist only on the socket",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn parse(text: &str) -> Result<super::Config, String> {
        super::super::parse(Path::new("collector.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_operator_keys_are_read() {
        let config = parse(
            "socket = \"/run/hc/collector.sock\"\naudit_log = \"/var/lib/hc/audit.jsonl\"\n\
             [auth]\noperator_uids = [1000, 1001]\noperator_groups = [\"hw-oncall\"]\n\
             socket_group = \"health-collector\"\n",
        )
        .unwrap();
        assert_eq!(
            config.socket.as_deref(),
            Some(Path::new("/run/hc/collector.sock"))
        );
        assert_eq!(
            config.audit_log.as_deref(),
            Some(Path::new("/var/lib/hc/audit.jsonl"))
        );
        assert_eq!(config.auth.operator_uids, [1000, 1001]);
        assert_eq!(config.auth.operator_groups, ["hw-oncall"]);
        assert_eq!(
            config.auth.socket_group.as_deref(),
            Some("health-collector")
        );
        let defaults = parse("").unwrap();
        assert_eq!((defaults.socket, defaults.audit_log), (None, None));
    }

    #[test]
    fn bad_operator_keys_are_named() {
        assert_eq!(
            parse("socket = \"collector.sock\"\n").unwrap_err(),
            "collector.toml: socket: expected an absolute path such as \
             \"/run/health-collector/collector.sock\", found string \"collector.sock\""
        );
        assert!(parse("audit_log = 3\n")
            .unwrap_err()
            .starts_with("collector.toml: audit_log: expected an absolute path"));
        assert_eq!(
            parse("socket = \"/s\"\n[auth]\noperator_uids = [-1]\n").unwrap_err(),
            "collector.toml: auth.operator_uids: expected an array of numeric user ids such as \
             [1000], found -1"
        );
        assert!(
            parse("socket = \"/s\"\n[auth]\noperator_groups = [\"a b\"]\n")
                .unwrap_err()
                .starts_with(
                    "collector.toml: auth.operator_groups: expected an array of group names"
                )
        );
        assert_eq!(
            parse("[auth]\noperator_subjects = [\"alice\"]\n").unwrap_err(),
            "collector.toml: auth.operator_subjects: expected [tls] cert, key and client_ca too: \
             certificate subjects exist only over TLS"
        );
        assert_eq!(
            parse("[auth]\noperator_uids = [1000]\n").unwrap_err(),
            "collector.toml: auth.operator_uids: expected `socket` to be set too: Unix \
             credentials exist only on the socket"
        );
        assert_eq!(
            parse("[auth]\nsocket_group = \"g\"\n").unwrap_err(),
            "collector.toml: auth.socket_group: expected `socket` to be set too"
        );
    }
}
