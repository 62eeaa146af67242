//! `[[service]]` rules: the services the agent checks from outside (the solver's systemd
//! unit, its HTTP health URL, its TCP port) and may restart, parsed here with the rest of the
//! configuration. The checker is `host::services`; the restart is `action::service`.
//!
//! A unit must be named in full (`analog-pde-solver.service`): the polkit rule that lets the
//! agent restart it matches the full name, and a bare name would be a different string there.
//! A health URL is plain `http://` on this host's view of the network: the check is the
//! runbook's `curl http://localhost:8000/health`, not a TLS client.
//!
//! Errors are [`FieldError`]s naming `service[i].<key>`; the config loader adds the file.

use std::time::Duration;

use health_daemon::FieldError;
use serde::Deserialize;

use super::check::{duration, ms, name, secs};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    name: String,
    unit: Option<String>,
    health_url: Option<String>,
    port: Option<u64>,
    interval: Option<String>,
    timeout: Option<String>,
    metrics_url: Option<String>,
    error_counter: Option<String>,
}

/// Where the service's own request counter is read, for the HTTP 5xx share (`HighErrorRate`).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorCounter {
    /// The service's Prometheus endpoint (`http://127.0.0.1:8000/metrics`).
    pub metrics_url: String,
    /// A counter with a `code` or `status` label (`http_requests_total`).
    pub name: String,
}

/// A validated `[[service]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRule {
    /// The label in conditions (`service:<name>`), tables and `agent-ctl restart-service`.
    pub name: String,
    /// The systemd unit (full name, `.service`); also what `restart-service` restarts.
    pub unit: Option<String>,
    /// Must answer 2xx within `timeout`.
    pub health_url: Option<String>,
    /// Must have a listening TCP socket on this host.
    pub port: Option<u16>,
    pub interval: Duration,
    /// Bound on each check's I/O (systemctl, HTTP, /proc/net).
    pub timeout: Duration,
    pub error_counter: Option<ErrorCounter>,
}

impl ServiceRule {
    /// The subject of this rule's conditions and of its restart on the action path.
    pub fn subject(&self) -> String {
        subject(&self.name)
    }
}

/// `service:<name>`, the subject of a service's conditions and actions.
pub fn subject(name: &str) -> String {
    format!("service:{name}")
}

/// Validates the `[[service]]` tables; errors name `service[i].<key>`.
pub fn validate(raw: Vec<RawService>) -> Result<Vec<ServiceRule>, FieldError> {
    let mut rules: Vec<ServiceRule> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("service[{i}].{k}");
        name(&key("name"), &r.name, 64)?;
        if rules.iter().any(|s| s.name == r.name) {
            return Err(FieldError::new(
                key("name"),
                format!("expected a unique name, found {:?} twice", r.name),
            ));
        }
        if let Some(u) = &r.unit {
            unit(&key("unit"), u)?;
        }
        if let Some(u) = &r.health_url {
            http_url(&key("health_url"), u)?;
        }
        let port = match r.port {
            None => None,
            Some(p) => Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                FieldError::new(
                    key("port"),
                    format!("expected a TCP port 1-65535, found {p}"),
                )
            })?),
        };
        if r.unit.is_none() && r.health_url.is_none() && port.is_none() {
            return Err(FieldError::new(
                key("unit"),
                "expected at least one of unit, health_url or port to say what is checked",
            ));
        }
        let interval = duration(
            &key("interval"),
            r.interval.as_deref(),
            secs(10),
            ms(100),
            secs(3600),
        )?;
        let timeout = duration(
            &key("timeout"),
            r.timeout.as_deref(),
            secs(2).min(interval),
            ms(10),
            secs(60),
        )?;
        if timeout > interval {
            return Err(FieldError::new(
                key("timeout"),
                format!(
                    "expected at most the interval ({}), found {}",
                    humantime::format_duration(interval),
                    humantime::format_duration(timeout)
                ),
            ));
        }
        let error_counter = match (r.metrics_url, r.error_counter) {
            (None, None) => None,
            (Some(url), Some(counter)) => {
                http_url(&key("metrics_url"), &url)?;
                metric_name(&key("error_counter"), &counter)?;
                Some(ErrorCounter {
                    metrics_url: url,
                    name: counter,
                })
            }
            (Some(_), None) => {
                return Err(FieldError::new(
                    key("error_counter"),
                    "expected the counter to read at metrics_url (e.g. \"http_requests_total\")",
                ))
            }
            (None, Some(_)) => {
                return Err(FieldError::new(
                    key("metrics_url"),
                    "expected the URL error_counter is read from (e.g. \"http://127.0.0.1:8000/metrics\")",
                ))
            }
        };
        rules.push(ServiceRule {
            name: r.name,
            unit: r.unit,
            health_url: r.health_url,
            port,
            interval,
            timeout,
            error_counter,
        });
    }
    Ok(rules)
}

/// A full systemd service unit name, as polkit's `unit` detail and `systemctl` see it. Never
/// starting with `-`, so it cannot be read as an option even before the `--`.
fn unit(key: &str, u: &str) -> Result<(), FieldError> {
    let stem = u.strip_suffix(".service").unwrap_or("");
    let ok = !stem.is_empty()
        && u.len() <= 255
        && !u.starts_with('-')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            key,
            format!("expected a systemd service unit like \"analog-pde-solver.service\" (the full name, as the polkit rule matches it), found {u:?}"),
        ))
    }
}

/// A plain-HTTP URL with a host (`http://127.0.0.1:8000/health`).
fn http_url(key: &str, u: &str) -> Result<(), FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            key,
            format!("expected a URL like \"http://127.0.0.1:8000/health\" ({why}), found {u:?}"),
        )
    };
    let uri: hyper::Uri = u.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("plain http:// only: the check runs on this host"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(())
}

/// A Prometheus metric name.
fn metric_name(key: &str, n: &str) -> Result<(), FieldError> {
    let ok = n
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            key,
            format!("expected a Prometheus metric name like \"http_requests_total\", found {n:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Tables {
        service: Vec<RawService>,
    }

    fn rules(text: &str) -> Result<Vec<ServiceRule>, FieldError> {
        let t: Tables = toml::from_str(text).expect("valid [[service]] tables");
        validate(t.service)
    }

    #[test]
    fn a_full_rule_and_its_defaults() {
        let r = rules(
            "[[service]]\nname = \"solver\"\nunit = \"analog-pde-solver.service\"\n\
             health_url = \"http://127.0.0.1:8000/health\"\nport = 8000\n\
             metrics_url = \"http://127.0.0.1:8000/metrics\"\nerror_counter = \"http_requests_total\"\n\
             [[service]]\nname = \"p\"\nport = 9\ninterval = \"1s\"\n",
        )
        .expect("valid");
        assert_eq!(r[0].interval, secs(10));
        assert_eq!(r[0].timeout, secs(2));
        assert_eq!(r[0].port, Some(8000));
        assert_eq!(r[0].subject(), "service:solver");
        assert_eq!(
            r[0].error_counter.as_ref().map(|c| c.name.as_str()),
            Some("http_requests_total")
        );
        assert_eq!(
            r[1].timeout,
            secs(1),
            "the default timeout fits the interval"
        );
    }

    #[test]
    fn errors_name_the_key_and_what_was_expected() {
        for (text, key, says) in [
            ("name = \"a\"", "service[0].unit", "at least one of"),
            (
                "name = \"a b\"\nport = 1",
                "service[0].name",
                "[A-Za-z0-9._-]",
            ),
            (
                "name = \"a\"\nunit = \"solver\"",
                "service[0].unit",
                "full name",
            ),
            (
                "name = \"a\"\nunit = \"-x.service\"",
                "service[0].unit",
                "full name",
            ),
            (
                "name = \"a\"\nhealth_url = \"https://h/health\"",
                "service[0].health_url",
                "plain http",
            ),
            (
                "name = \"a\"\nhealth_url = \"h:80\"",
                "service[0].health_url",
                "http://",
            ),
            ("name = \"a\"\nport = 70000", "service[0].port", "1-65535"),
            ("name = \"a\"\nport = 0", "service[0].port", "1-65535"),
            (
                "name = \"a\"\nport = 1\ninterval = \"1s\"\ntimeout = \"2s\"",
                "service[0].timeout",
                "at most the interval",
            ),
            (
                "name = \"a\"\nport = 1\nmetrics_url = \"http://h/metrics\"",
                "service[0].error_counter",
                "counter",
            ),
            (
                "name = \"a\"\nport = 1\nmetrics_url = \"http://h/m\"\nerror_counter = \"1x\"",
                "service[0].error_counter",
                "metric name",
            ),
        ] {
            let e = rules(&format!("[[service]]\n{text}\n")).expect_err(text);
            assert_eq!(e.key, key, "{text}: {e:?}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
        let e = rules("[[service]]\nname = \"a\"\nport = 1\n[[service]]\nname = \"a\"\nport = 2\n")
            .expect_err("duplicate");
        assert_eq!(e.key, "service[1].name");
    }
}
