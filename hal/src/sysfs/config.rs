//! [`SysfsConfig`]: which sysfs sources make up one device, as the agent's config names them,
//! and its validation in the agent's error style (the key, then what was expected and found).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::pci::parse_address;
use crate::deadline::MinDeadlines;

/// The sources of one sysfs device. At least one of `hwmon`, `thermal_zone`, `power_supply`,
/// `powercap`, `pci` must be set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysfsConfig {
    /// Where sysfs is mounted; a fixture tree in tests.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Deadline for each single file read or write.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// hwmon chip: its `name` (e.g. `loihi2`), or its directory (anything with a `/`, as
    /// [`super::discover_hwmon`] returns).
    #[serde(default)]
    pub hwmon: Option<String>,
    /// Only the hwmon sensors with these labels (default: all).
    #[serde(default)]
    pub hwmon_labels: Option<Vec<String>>,
    /// Thermal zone, by its `type`.
    #[serde(default)]
    pub thermal_zone: Option<String>,
    /// Power supply name, e.g. `loihi2`.
    #[serde(default)]
    pub power_supply: Option<String>,
    /// Powercap (RAPL) zone, by its `name`, e.g. `package-0`.
    #[serde(default)]
    pub powercap: Option<String>,
    /// PCI function address `DDDD:BB:DD.F`.
    #[serde(default)]
    pub pci: Option<String>,
    /// Index K of the hwmon `powerK_cap` used for set_power_limit, e.g. 1.
    #[serde(default)]
    pub power_cap_sensor: Option<u32>,
    /// How long a hard reset waits for the function to go after `remove`, and again for it to
    /// come back after `rescan`.
    #[serde(default = "default_rescan_wait_ms")]
    pub rescan_wait_ms: u64,
}

fn default_root() -> PathBuf {
    PathBuf::from("/sys")
}

fn default_deadline_ms() -> u64 {
    500
}

fn default_rescan_wait_ms() -> u64 {
    10_000
}

impl Default for SysfsConfig {
    fn default() -> Self {
        SysfsConfig {
            root: default_root(),
            deadline_ms: default_deadline_ms(),
            hwmon: None,
            hwmon_labels: None,
            thermal_zone: None,
            power_supply: None,
            powercap: None,
            pci: None,
            power_cap_sensor: None,
            rescan_wait_ms: default_rescan_wait_ms(),
        }
    }
}

fn fail(key: &str, msg: String) -> Result<(), (String, String)> {
    Err((key.to_string(), msg))
}

/// A name that becomes one path component: not empty, no `/`, not `.` or `..`.
fn check_name(key: &str, value: &Option<String>, what: &str) -> Result<(), (String, String)> {
    match value {
        Some(v) if v.is_empty() || v.contains('/') || v == "." || v == ".." => fail(
            key,
            format!("expected {what} (a single name, no '/'), found {v:?}"),
        ),
        _ => Ok(()),
    }
}

impl SysfsConfig {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    pub fn rescan_wait(&self) -> Duration {
        Duration::from_millis(self.rescan_wait_ms)
    }

    /// Sources are read concurrently, each file under `deadline_ms`. The only action that
    /// waits is a PCI hard reset: for the function to go after `remove` and to come back after
    /// `rescan`, each up to `rescan_wait_ms`, around file operations under `deadline_ms` (the
    /// presence check, the two writes, a last check: four). Without `pci` there is no floor.
    pub fn min_deadlines(&self) -> MinDeadlines {
        let hard_reset = (self.rescan_wait().saturating_mul(2))
            .saturating_add(self.deadline().saturating_mul(4));
        MinDeadlines {
            read: self.deadline().saturating_add(MinDeadlines::SLACK),
            action: match self.pci {
                Some(_) => hard_reset.saturating_add(MinDeadlines::SLACK),
                None => Duration::ZERO,
            },
        }
    }

    /// The PCI address in sysfs's lower case, if one is set and valid.
    pub fn pci_address(&self) -> Option<String> {
        self.pci.as_deref().and_then(|a| parse_address(a).ok())
    }

    /// `Err((key, "expected ..., found ..."))` for the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !self.root.is_absolute() {
            return fail(
                "root",
                format!("expected an absolute path, found {:?}", self.root),
            );
        }
        if !(1..=60_000).contains(&self.deadline_ms) {
            return fail(
                "deadline_ms",
                format!("expected 1..60000 milliseconds, found {}", self.deadline_ms),
            );
        }
        if !(1..=600_000).contains(&self.rescan_wait_ms) {
            return fail(
                "rescan_wait_ms",
                format!(
                    "expected 1..600000 milliseconds, found {}",
                    self.rescan_wait_ms
                ),
            );
        }
        if self.hwmon.is_none()
            && self.thermal_zone.is_none()
            && self.power_supply.is_none()
            && self.powercap.is_none()
            && self.pci.is_none()
        {
            return fail(
                "hwmon",
                "expected at least one source (hwmon, thermal_zone, power_supply, powercap \
                 or pci), found none"
                    .to_string(),
            );
        }
        if let Some(h) = &self.hwmon {
            if h.trim().is_empty() {
                return fail(
                    "hwmon",
                    "expected a chip name or directory, found an empty string".to_string(),
                );
            }
        }
        if let Some(labels) = &self.hwmon_labels {
            if self.hwmon.is_none() {
                return fail(
                    "hwmon_labels",
                    "expected hwmon to be set as well, found hwmon_labels alone".to_string(),
                );
            }
            if labels.is_empty() || labels.iter().any(|l| l.is_empty()) {
                return fail(
                    "hwmon_labels",
                    format!("expected a list of non-empty labels, found {labels:?}"),
                );
            }
        }
        if let Some(k) = self.power_cap_sensor {
            if self.hwmon.is_none() {
                return fail(
                    "power_cap_sensor",
                    format!("expected hwmon to be set as well, found power_cap_sensor = {k} alone"),
                );
            }
        }
        check_name("thermal_zone", &self.thermal_zone, "a thermal zone type")?;
        check_name("power_supply", &self.power_supply, "a power supply name")?;
        check_name("powercap", &self.powercap, "a powercap zone name")?;
        if let Some(a) = &self.pci {
            parse_address(a).map_err(|m| ("pci".to_string(), m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_deadlines_cover_one_file_read_and_a_whole_pci_hard_reset() {
        let ms = Duration::from_millis;
        let mut c = SysfsConfig {
            hwmon: Some("loihi2".into()),
            ..SysfsConfig::default()
        };
        // Nothing waits in an action without a PCI function.
        assert_eq!(
            c.min_deadlines(),
            MinDeadlines {
                read: ms(500 + 500),
                action: Duration::ZERO
            }
        );
        c.pci = Some("0000:01:00.0".into());
        c.deadline_ms = 200;
        c.rescan_wait_ms = 3000;
        assert_eq!(
            c.min_deadlines(),
            MinDeadlines {
                read: ms(200 + 500),
                action: ms(2 * 3000 + 4 * 200 + 500)
            }
        );
    }
}
