//! Configuration of a Loihi 2 board as its host sees it.
//!
//! ```toml
//! [device.loihi2]
//! board_host = "kp-host-01:9000"   # nx_driver_server's host and port
//! reach_deadline_ms = 1000
//! slurm_node = "ncl-kp-01"         # optional: the board's SLURM node
//! sinfo = "/usr/bin/sinfo"
//! hwmon = "loihi2"                 # optional: hwmon chip name (sysfs backend)
//! power_supply = "loihi2"          # optional: /sys/class/power_supply/NAME (sysfs backend)
//!
//! [device.loihi2.vendor]          # optional: the site's tool for reset and calibration
//! command = "/usr/local/libexec/health-agent/loihi-tool"
//! reset_soft = ["reset", "--soft"]
//! calibrate = ["calibrate"]
//! ```
//!
//! The board's temperatures and power are read through the sysfs backend, not here: `hwmon`
//! names the hwmon chip (the directory under `/sys/class/hwmon/` whose `name` file holds it,
//! as `sensors | grep -A5 loihi` shows) and `power_supply` the power-supply directory whose
//! `energy_now` and `power_now` give the board's energy and power. This module only checks
//! that the names are plausible sysfs names; the composed Loihi 2 backend hands them to sysfs.

use std::path::PathBuf;
use std::time::Duration;

use crate::deadline::MinDeadlines;
use crate::device::HalError;
use crate::loihi::slurm::{check_node_name, DEFAULT_SINFO};
use crate::plugin::{PluginConfig, VendorTool};
use crate::sysfs::SysfsConfig;

pub const DEFAULT_REACH_DEADLINE_MS: u64 = 1000;
pub const DEFAULT_SINFO_DEADLINE_MS: u64 = 5000;
pub const MIN_DEADLINE_MS: u64 = 10;
pub const MAX_REACH_DEADLINE_MS: u64 = 60_000;
pub const MAX_SINFO_DEADLINE_MS: u64 = 120_000;
/// Longer than any real hwmon or power-supply name; keeps messages short.
const MAX_SYSFS_NAME: usize = 64;

fn default_reach_deadline_ms() -> u64 {
    DEFAULT_REACH_DEADLINE_MS
}
fn default_sinfo() -> PathBuf {
    PathBuf::from(DEFAULT_SINFO)
}
fn default_sinfo_deadline_ms() -> u64 {
    DEFAULT_SINFO_DEADLINE_MS
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loihi2Config {
    /// `host:port` of the board's host (`nx_driver_server`), checked by a TCP connect.
    pub board_host: String,
    /// Deadline of that connect, name resolution included.
    #[serde(default = "default_reach_deadline_ms")]
    pub reach_deadline_ms: u64,
    /// The board's SLURM node; without it SLURM is not asked.
    #[serde(default)]
    pub slurm_node: Option<String>,
    /// Path of `sinfo`.
    #[serde(default = "default_sinfo")]
    pub sinfo: PathBuf,
    /// Deadline of one `sinfo` run.
    #[serde(default = "default_sinfo_deadline_ms")]
    pub sinfo_deadline_ms: u64,
    /// The site's vendor tool for reset, calibration and the like (`read` optional).
    #[serde(default)]
    pub vendor: Option<PluginConfig>,
    /// hwmon chip name, read through the sysfs backend.
    #[serde(default)]
    pub hwmon: Option<String>,
    /// power_supply name, read through the sysfs backend.
    #[serde(default)]
    pub power_supply: Option<String>,
}

impl Loihi2Config {
    /// A config for `board_host` with defaults and nothing optional.
    pub fn new(board_host: impl Into<String>) -> Self {
        Loihi2Config {
            board_host: board_host.into(),
            reach_deadline_ms: DEFAULT_REACH_DEADLINE_MS,
            slurm_node: None,
            sinfo: default_sinfo(),
            sinfo_deadline_ms: DEFAULT_SINFO_DEADLINE_MS,
            vendor: None,
            hwmon: None,
            power_supply: None,
        }
    }

    /// Errors are `(key, "expected ..., found ...")`; keys inside `vendor` are `vendor.KEY`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let e = |k: &str, m: String| Err((k.to_string(), m));
        check_host_port(&self.board_host).or_else(|m| e("board_host", m))?;
        check_range(
            "reach_deadline_ms",
            self.reach_deadline_ms,
            MAX_REACH_DEADLINE_MS,
        )?;
        check_range(
            "sinfo_deadline_ms",
            self.sinfo_deadline_ms,
            MAX_SINFO_DEADLINE_MS,
        )?;
        if let Some(node) = &self.slurm_node {
            check_node_name(node).or_else(|m| e("slurm_node", m))?;
        }
        if !self.sinfo.is_absolute() {
            return e(
                "sinfo",
                format!(
                    "expected an absolute path, found {:?}",
                    self.sinfo.display().to_string()
                ),
            );
        }
        if let Some(v) = &self.vendor {
            v.validate_tool()
                .map_err(|(k, m)| (format!("vendor.{k}"), m))?;
        }
        if let Some(name) = &self.hwmon {
            check_sysfs_name(name).or_else(|m| e("hwmon", m))?;
        }
        if let Some(name) = &self.power_supply {
            check_sysfs_name(name).or_else(|m| e("power_supply", m))?;
        }
        Ok(())
    }

    pub fn reach_deadline(&self) -> Duration {
        Duration::from_millis(self.reach_deadline_ms)
    }

    pub fn sinfo_deadline(&self) -> Duration {
        Duration::from_millis(self.sinfo_deadline_ms)
    }

    /// A read runs the reachability and SLURM checks concurrently, beside sysfs file reads
    /// (each under sysfs's default file deadline); an action is one vendor tool run.
    pub fn min_deadlines(&self) -> MinDeadlines {
        let sinfo = match self.slurm_node {
            Some(_) => self.sinfo_deadline(),
            None => Duration::ZERO,
        };
        let read = self
            .reach_deadline()
            .max(sinfo)
            .max(SysfsConfig::default().deadline());
        let action = self
            .vendor
            .as_ref()
            .map_or(Duration::ZERO, |v| v.deadline());
        MinDeadlines::with_slack(read, action)
    }

    /// The vendor tool, if configured.
    pub fn vendor_tool(&self) -> Result<Option<VendorTool>, HalError> {
        self.vendor.clone().map(VendorTool::new).transpose()
    }
}

fn check_range(key: &str, ms: u64, max: u64) -> Result<(), (String, String)> {
    if (MIN_DEADLINE_MS..=max).contains(&ms) {
        Ok(())
    } else {
        Err((
            key.to_string(),
            format!("expected {MIN_DEADLINE_MS}..={max} milliseconds, found {ms}"),
        ))
    }
}

/// `host:port`, `1.2.3.4:port` or `[v6]:port`, with a port in 1..=65535.
fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || {
        format!("expected host:port (e.g. \"kp-host-01:9000\" or \"[fd00::5]:9000\"), found {s:?}")
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A name matched against sysfs: one path component, printable, short.
fn check_sysfs_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SYSFS_NAME {
        return Err(format!(
            "expected a sysfs name of 1..={MAX_SYSFS_NAME} bytes, found {name:?}"
        ));
    }
    if name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "expected a single name (no '/', not '.' or '..'), found {name:?}"
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "expected a name without spaces or control characters, found {name:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<Loihi2Config, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = cfg(r#"{"board_host":"kp-host-01:9000"}"#).unwrap();
        assert_eq!(c, Loihi2Config::new("kp-host-01:9000"));
        assert_eq!(c.reach_deadline(), Duration::from_millis(1000));
        assert_eq!(c.sinfo, PathBuf::from("/usr/bin/sinfo"));
        assert_eq!(c.validate(), Ok(()));
        assert!(c.vendor_tool().unwrap().is_none());
    }

    #[test]
    fn a_full_config_validates_and_unknown_keys_do_not() {
        let c = cfg(r#"{
            "board_host": "[fd00::5]:9000", "reach_deadline_ms": 500, "slurm_node": "ncl-kp-01",
            "sinfo": "/opt/slurm/bin/sinfo", "sinfo_deadline_ms": 3000,
            "vendor": {"command": "/opt/loihi-tool", "reset_soft": ["reset"]},
            "hwmon": "loihi2", "power_supply": "loihi2"
        }"#)
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert!(c.vendor_tool().unwrap().is_some());
        let e = cfg(r#"{"board_host":"h:1","hwmon_name":"x"}"#).unwrap_err();
        assert!(e.contains("hwmon_name"), "{e}");
        let e = cfg(r#"{"board_host":"h:1","vendor":{"command":"/x","bogus":1}}"#).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let check = |c: Loihi2Config, key: &str| {
            let (k, m) = c.validate().unwrap_err();
            assert_eq!(k, key, "{m}");
            assert!(m.starts_with("expected") && m.contains("found"), "{m}");
        };
        for bad in [
            "kp-host",
            "kp-host:",
            ":9000",
            "kp host:9000",
            "h:0",
            "h:70000",
            "[zz]:1",
            "fd00::5:9000x",
        ] {
            check(Loihi2Config::new(bad), "board_host");
        }
        let ok = || Loihi2Config::new("10.0.0.5:9000");
        let mut c = ok();
        c.reach_deadline_ms = 0;
        check(c, "reach_deadline_ms");
        let mut c = ok();
        c.sinfo_deadline_ms = 1_000_000;
        check(c, "sinfo_deadline_ms");
        let mut c = ok();
        c.slurm_node = Some("-x".into());
        check(c, "slurm_node");
        let mut c = ok();
        c.sinfo = "sinfo".into();
        check(c, "sinfo");
        let mut c = ok();
        c.vendor = Some(PluginConfig::new("tool"));
        check(c, "vendor.command");
        let mut c = ok();
        c.hwmon = Some("../x".into());
        check(c, "hwmon");
        let mut c = ok();
        c.power_supply = Some(String::new());
        check(c, "power_supply");
        let mut c = ok();
        c.power_supply = Some("..".into());
        check(c, "power_supply");
    }

    #[test]
    fn min_deadlines_cover_the_slowest_check_and_the_vendor_tool() {
        let ms = Duration::from_millis;
        let deadlines = |c: &Loihi2Config| {
            let d = c.min_deadlines();
            (d.read, d.action)
        };
        let mut c = Loihi2Config::new("kp:9000");
        assert_eq!(deadlines(&c), (ms(1000 + 500), ms(500)));
        // Never below sysfs's 500 ms file deadline, read beside the checks.
        c.reach_deadline_ms = 100;
        assert_eq!(deadlines(&c), (ms(500 + 500), ms(500)));
        // sinfo counts only when SLURM is asked.
        c.sinfo_deadline_ms = 3000;
        assert_eq!(deadlines(&c), (ms(500 + 500), ms(500)));
        c.slurm_node = Some("ncl-kp-01".into());
        assert_eq!(deadlines(&c), (ms(3000 + 500), ms(500)));
        let mut tool = PluginConfig::new("/opt/loihi-tool");
        tool.deadline_ms = 7000;
        c.vendor = Some(tool);
        assert_eq!(deadlines(&c), (ms(3000 + 500), ms(7000 + 500)));
    }
}
