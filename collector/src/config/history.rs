//! The history keys beyond `history_path` and `history_retention`: `history_url` (a
//! PostgreSQL database several collectors share), `history_password_file` and
//! `collector_name` (how this collector names itself in the shared database), and the checks
//! between them.

use std::path::{Path, PathBuf};

use health_daemon::FieldError;
use serde::{de::Error as _, Deserialize, Deserializer};

use super::{Config, ConfigError};
use crate::history::PgTarget;

pub(super) fn history_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    const EXPECTED: &str = "expected a PostgreSQL URL such as \
        \"postgres://collector@db.example:5432/health?sslmode=verify-full&sslrootcert=/etc/health-collector/db-ca.pem\"";
    match toml::Value::deserialize(d)? {
        toml::Value::String(s)
            if s.starts_with("postgres://") || s.starts_with("postgresql://") =>
        {
            Ok(Some(s))
        }
        // Not echoed: another scheme's URL may carry a password.
        toml::Value::String(_) => Err(D::Error::custom(format!(
            "{EXPECTED}, found a URL of another scheme"
        ))),
        other => Err(D::Error::custom(format!(
            "{EXPECTED}, found a {}",
            other.type_str()
        ))),
    }
}

pub(super) fn absolute_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) if Path::new(&s).is_absolute() => Ok(Some(PathBuf::from(s))),
        other => Err(D::Error::custom(format!(
            "expected an absolute file path such as \"/etc/health-collector/db-password\", found {other}"
        ))),
    }
}

pub(super) fn collector_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s)
            if !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(Some(s))
        }
        other => Err(D::Error::custom(format!(
            "expected a name of 1 to 128 printable ASCII characters without spaces, found {other}"
        ))),
    }
}

/// One store, and a password file only with a URL; the URL's TLS settings are checked here
/// (the password file is read when the collector starts).
pub(super) fn check(file: &Path, config: &Config) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| {
        Err(ConfigError::Key {
            file: file.to_path_buf(),
            field: FieldError::new(key, message),
        })
    };
    match (&config.history_path, &config.history_url) {
        (Some(_), Some(_)) => {
            return fail(
                "history_url",
                "expected either history_path (SQLite) or history_url (PostgreSQL), found both"
                    .to_string(),
            )
        }
        (_, None) if config.history_password_file.is_some() => {
            return fail(
                "history_password_file",
                "expected only with history_url, found no history_url".to_string(),
            )
        }
        (_, Some(url)) => {
            if let Err(message) = PgTarget::new(url, None) {
                let message = message.trim_start_matches("history_url: ").to_string();
                return fail("history_url", message);
            }
        }
        _ => {}
    }
    Ok(())
}

/// This collector's name in the shared history: `collector_name`, or the host's name and
/// the listen port (two collectors on one host differ).
pub fn name_of(config: &Config) -> String {
    config.collector_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "collector".to_string());
        format!("{host}:{}", config.listen.port())
    })
}
