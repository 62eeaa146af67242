//! Discovery rules: devices enumerated from sysfs at start instead of listed by hand.
//!
//! A `[[discover]]` rule matches PCI functions by `vendor[:device]` id, or hwmon chips by
//! name, and turns each match into a sysfs device with the rule's kind, id prefix, timings and
//! sysfs template. Matches are sorted (by PCI address or hwmon path) so ids are stable across
//! restarts on the same hardware. Enumeration reads directory listings and the small
//! `name`/`vendor`/`device` attribute files once, at start; reading the devices is then the
//! supervisors' job, under their deadlines. A hwmon device found by name is pinned to its
//! `hwmonN` directory: a driver reload that renumbers it needs an agent restart.

use health_hal::sysfs::{discover_hwmon, discover_pci, SysfsConfig};

use crate::config::{Backend, DeviceConfig, DiscoveryMatch, DiscoveryRule};

/// Devices the rules find, after the listed ones; a found id that a listed device already
/// uses is skipped with a warning.
pub fn expand(rules: &[DiscoveryRule], listed: &[DeviceConfig]) -> Vec<DeviceConfig> {
    let mut found: Vec<DeviceConfig> = Vec::new();
    for rule in rules {
        let root = rule.sysfs.root.clone();
        let matches: Vec<SysfsConfig> = match &rule.matches {
            DiscoveryMatch::Pci { vendor, device } => {
                let mut addrs = discover_pci(&root, *vendor, *device);
                addrs.sort();
                addrs
                    .into_iter()
                    .map(|a| SysfsConfig {
                        pci: Some(a),
                        ..rule.sysfs.clone()
                    })
                    .collect()
            }
            DiscoveryMatch::Hwmon { name } => {
                let mut dirs = discover_hwmon(&root, name);
                dirs.sort();
                dirs.into_iter()
                    .map(|d| SysfsConfig {
                        hwmon: Some(d.display().to_string()),
                        ..rule.sysfs.clone()
                    })
                    .collect()
            }
        };
        if matches.is_empty() {
            tracing::warn!(rule = %rule.describe(), root = %root.display(), "discovery rule matched nothing");
        }
        // A device listed by hand wins: its PCI function or hwmon chip is not supervised twice
        // (two supervisors on one function would break one-action-at-a-time).
        let taken = |s: &SysfsConfig, found: &[DeviceConfig]| {
            listed.iter().chain(found.iter()).any(|d| match &d.backend {
                Backend::Sysfs(o) => {
                    (s.pci.is_some() && o.pci == s.pci) || (s.hwmon.is_some() && o.hwmon == s.hwmon)
                }
                _ => false,
            })
        };
        let mut n = 0usize;
        for sysfs in matches {
            if taken(&sysfs, &found) {
                tracing::info!(rule = %rule.describe(), location = ?sysfs.pci.as_ref().or(sysfs.hwmon.as_ref()), "already configured by hand: not discovered again");
                continue;
            }
            // The next id not in use, so a hand-listed `xbar-0` elsewhere does not hide a card.
            let id = loop {
                let id = format!("{}{n}", rule.id_prefix);
                n += 1;
                if !listed.iter().chain(found.iter()).any(|d| d.id == id) {
                    break id;
                }
            };
            tracing::info!(id = %id, rule = %rule.describe(), location = ?sysfs.pci.as_ref().or(sysfs.hwmon.as_ref()), "discovered device");
            found.push(DeviceConfig {
                id,
                kind: rule.kind,
                backend: Backend::Sysfs(sysfs),
                poll_interval: rule.poll_interval,
                deadline: rule.deadline,
                action_deadline: rule.action_deadline,
                limits: health_hal::Limits::for_kind(rule.kind),
                simulator: false,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn rule(matches: DiscoveryMatch, root: &Path) -> DiscoveryRule {
        DiscoveryRule {
            kind: health_hal::DeviceKind::AnalogCrossbar,
            id_prefix: "xbar-".into(),
            matches,
            sysfs: SysfsConfig {
                root: root.to_path_buf(),
                ..SysfsConfig::default()
            },
            poll_interval: Duration::from_secs(1),
            deadline: Duration::from_secs(2),
            action_deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn pci_and_hwmon_rules_enumerate_devices_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (addr, dev) in [
            ("0000:41:00.0", "0x0001"),
            ("0000:03:00.0", "0x0001"),
            ("0000:05:00.0", "0x0002"),
        ] {
            write(root, &format!("bus/pci/devices/{addr}/vendor"), "0x1e52\n");
            write(
                root,
                &format!("bus/pci/devices/{addr}/device"),
                &format!("{dev}\n"),
            );
        }
        write(root, "class/hwmon/hwmon0/name", "loihi2\n");
        write(root, "class/hwmon/hwmon1/name", "coretemp\n");

        let pci = rule(
            DiscoveryMatch::Pci {
                vendor: 0x1e52,
                device: Some(0x0001),
            },
            root,
        );
        let found = expand(std::slice::from_ref(&pci), &[]);
        let ids: Vec<_> = found.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["xbar-0", "xbar-1"]);
        let Backend::Sysfs(s) = &found[0].backend else {
            panic!("sysfs")
        };
        assert_eq!(s.pci.as_deref(), Some("0000:03:00.0"), "sorted by address");

        let mut hw = rule(
            DiscoveryMatch::Hwmon {
                name: "loihi2".into(),
            },
            root,
        );
        hw.id_prefix = "loihi-".into();
        let found = expand(&[hw], &found);
        assert_eq!(found.len(), 1);
        let Backend::Sysfs(s) = &found[0].backend else {
            panic!("sysfs")
        };
        assert!(
            s.hwmon.as_deref().is_some_and(|h| h.ends_with("hwmon0")),
            "{s:?}"
        );

        // A card listed by hand is not discovered again; the other gets the next free id.
        let listed = expand(std::slice::from_ref(&pci), &[]);
        let again = expand(std::slice::from_ref(&pci), &listed[..1]);
        let got: Vec<_> = again.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(got, ["xbar-1"]);
        let Backend::Sysfs(s) = &again[0].backend else {
            panic!("sysfs")
        };
        assert_eq!(s.pci.as_deref(), Some("0000:41:00.0"));
        // An id taken by an unrelated device is skipped over, and no card is lost.
        let mut other = listed[0].clone();
        other.backend = Backend::Sim(health_hal::sim::SimOptions::default());
        let shifted = expand(&[pci], &[other]);
        let got: Vec<_> = shifted.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(got, ["xbar-1", "xbar-2"]);
    }
}
