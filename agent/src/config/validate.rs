//! Raw config → [`AgentConfig`]: the top-level keys, `[uplink]` and `[host]` here, the other
//! sections through their own modules, in the order the file is usually written so the first
//! error reported is the first one an operator would meet reading down the file.
//!
//! Every check returns a [`FieldError`] naming the key; [`super::parse`] adds the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use health_daemon::FieldError;

use super::check::{absolute, duration, ms, range, ratio, secs};
use super::raw::{RawConfig, RawHost, RawUplink};
use super::{cleanup, policy, process};
use super::{devices, discover, probe, safety, tls};
use super::{log, service};
use super::{AgentConfig, HostConfig, UplinkConfig, DEFAULT_SOCKET_PATH};

impl RawConfig {
    pub(super) fn validate(self) -> Result<AgentConfig, FieldError> {
        let node = node(self.node)?;
        let socket = socket(self.socket)?;
        let tcp_listen = address("tcp_listen", self.tcp_listen.as_deref(), "127.0.0.1:7071")?;
        let collectors = collectors(self.collector, self.collectors)?;
        let metrics_listen = address(
            "metrics_listen",
            self.metrics_listen.as_deref(),
            "127.0.0.1:9464",
        )?;
        let report_interval = duration(
            "report_interval",
            self.report_interval.as_deref(),
            secs(1),
            ms(100),
            secs(3600),
        )?;
        let max_message_bytes = range(
            "max_message_bytes",
            self.max_message_bytes,
            4 << 20,
            1024,
            64 << 20,
        )? as usize;
        let uplink = uplink(self.uplink)?;
        let host = host(self.host)?;
        let safety = safety::safety(&self.safety, &self.device)?;
        let (tls, audit_log) = tls::tls_and_audit(self.tls, self.audit_log, tcp_listen.is_some())?;
        let devices = devices::devices(self.device)?;
        let sysfs_root = match self.sysfs_root {
            Some(p) => {
                absolute("sysfs_root", &p)?;
                p
            }
            None => PathBuf::from("/sys"),
        };
        let discover = discover::discovery_rules(self.discover)?;
        let probe = probe::probe(self.probe)?;
        let processes = process::validate(self.process)?;
        let services = service::validate(self.service)?;
        let logs = log::validate(self.log)?;
        let remediation = policy::remediation(self.remediation)?;
        let policies = policy::policies(self.policy)?;
        let cleanup = cleanup::validate(self.cleanup)?;
        policy::check_cleanup_rules(&policies, &cleanup)?;
        Ok(AgentConfig {
            remediation,
            policies,
            processes,
            services,
            logs,
            cleanup,
            auth: self.auth,
            tls,
            audit_log,
            safety,
            probe,
            discover,
            sysfs_root,
            node,
            collector: collectors.first().cloned(),
            socket,
            tcp_listen,
            metrics_listen,
            report_interval,
            collectors,
            max_message_bytes,
            uplink,
            host,
            devices,
        })
    }
}

/// `node`, else this host's name.
fn node(n: Option<String>) -> Result<String, FieldError> {
    match n {
        Some(n) if n.trim().is_empty() || n.len() > 253 => Err(FieldError::new(
            "node",
            format!("expected a non-empty name of at most 253 bytes, found {n:?}"),
        )),
        Some(n) => Ok(n),
        None => Ok(sysinfo::System::host_name().unwrap_or_else(|| "localhost".to_string())),
    }
}

/// `socket`: absolute, or explicitly relative (`./agent.sock`, for a run from a checkout).
fn socket(p: Option<PathBuf>) -> Result<PathBuf, FieldError> {
    match p {
        Some(p) if !p.is_absolute() && !p.starts_with(".") => Err(FieldError::new(
            "socket",
            format!(
                "expected an absolute path, found {:?}",
                p.display().to_string()
            ),
        )),
        Some(p) => Ok(p),
        None => Ok(PathBuf::from(DEFAULT_SOCKET_PATH)),
    }
}

/// A listen address (`ip:port`); `example` is shown when it does not parse.
fn address(key: &str, v: Option<&str>, example: &str) -> Result<Option<SocketAddr>, FieldError> {
    let Some(s) = v else { return Ok(None) };
    s.parse::<SocketAddr>().map(Some).map_err(|_| {
        FieldError::new(
            key,
            format!("expected an address like \"{example}\", found {s:?}"),
        )
    })
}

/// `collector` (one URL) or `collectors` (a list, in order of preference), not both.
fn collectors(one: Option<String>, list: Option<Vec<String>>) -> Result<Vec<String>, FieldError> {
    match (one, list) {
        (Some(_), Some(_)) => Err(FieldError::new(
            "collectors",
            "expected either `collector` (one URL) or `collectors` (a list), found both",
        )),
        (Some(u), None) => Ok(vec![
            collector_url(&u).map_err(|m| FieldError::new("collector", m))?
        ]),
        (None, Some(list)) if list.is_empty() => Err(FieldError::new(
            "collectors",
            "expected at least one URL (omit the key to run standalone), found []",
        )),
        (None, Some(list)) => {
            let mut urls = Vec::with_capacity(list.len());
            for (i, u) in list.into_iter().enumerate() {
                let key = || format!("collectors[{i}]");
                let u = collector_url(&u).map_err(|m| FieldError::new(key(), m))?;
                if urls.contains(&u) {
                    return Err(FieldError::new(
                        key(),
                        format!("expected each collector once, found {u:?} again"),
                    ));
                }
                urls.push(u);
            }
            Ok(urls)
        }
        (None, None) => Ok(Vec::new()),
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

fn uplink(u: RawUplink) -> Result<UplinkConfig, FieldError> {
    let uplink = UplinkConfig {
        buffer_reports: range(
            "uplink.buffer_reports",
            u.buffer_reports,
            3600,
            1,
            1_000_000,
        )? as usize,
        backoff_initial: duration(
            "uplink.backoff_initial",
            u.backoff_initial.as_deref(),
            ms(250),
            ms(10),
            secs(60),
        )?,
        backoff_max: duration(
            "uplink.backoff_max",
            u.backoff_max.as_deref(),
            secs(30),
            ms(10),
            secs(3600),
        )?,
        connect_timeout: duration(
            "uplink.connect_timeout",
            u.connect_timeout.as_deref(),
            secs(3),
            ms(100),
            secs(60),
        )?,
        ack_timeout: duration(
            "uplink.ack_timeout",
            u.ack_timeout.as_deref(),
            secs(10),
            ms(500),
            secs(600),
        )?,
        spill_path: u.spill_path,
        spill_max_bytes: range(
            "uplink.spill_max_bytes",
            u.spill_max_bytes,
            256 << 20,
            1 << 20,
            1 << 40,
        )?,
    };
    if let Some(p) = &uplink.spill_path {
        if p.as_os_str().is_empty() || !p.is_absolute() {
            return Err(FieldError::new(
                "uplink.spill_path",
                format!(
                    "expected an absolute directory path, found {:?}",
                    p.display().to_string()
                ),
            ));
        }
    }
    if uplink.backoff_max < uplink.backoff_initial {
        return Err(FieldError::new(
            "uplink.backoff_max",
            "expected at least uplink.backoff_initial",
        ));
    }
    Ok(uplink)
}

fn host(h: RawHost) -> Result<HostConfig, FieldError> {
    let host = HostConfig {
        interval: duration(
            "host.interval",
            h.interval.as_deref(),
            secs(5),
            ms(100),
            secs(3600),
        )?,
        deadline: duration(
            "host.deadline",
            h.deadline.as_deref(),
            secs(2),
            ms(10),
            secs(60),
        )?,
        memory_warning_ratio: ratio("host.memory_warning_ratio", h.memory_warning_ratio, 0.90)?,
        memory_critical_ratio: ratio("host.memory_critical_ratio", h.memory_critical_ratio, 0.97)?,
        disk_warning_ratio: ratio("host.disk_warning_ratio", h.disk_warning_ratio, 0.90)?,
        disk_critical_ratio: ratio("host.disk_critical_ratio", h.disk_critical_ratio, 0.97)?,
        load_warning_per_cpu: range(
            "host.load_warning_per_cpu",
            h.load_warning_per_cpu,
            2.0,
            0.1,
            1000.0,
        )?,
        proc_root: match h.proc_root {
            Some(p) => {
                absolute("host.proc_root", &p)?;
                p
            }
            None => PathBuf::from("/proc"),
        },
        iowait_warning_ratio: ratio("host.iowait_warning_ratio", h.iowait_warning_ratio, 0.3)?,
        oom_hold: duration(
            "host.oom_hold",
            h.oom_hold.as_deref(),
            secs(600),
            secs(1),
            secs(7 * 86400),
        )?,
    };
    if host.memory_critical_ratio < host.memory_warning_ratio {
        return Err(FieldError::new(
            "host.memory_critical_ratio",
            "expected at least host.memory_warning_ratio",
        ));
    }
    if host.disk_critical_ratio < host.disk_warning_ratio {
        return Err(FieldError::new(
            "host.disk_critical_ratio",
            "expected at least host.disk_warning_ratio",
        ));
    }
    Ok(host)
}
