//! `[[discover]]`: rules that turn PCI functions or hwmon chips found at start into sysfs
//! devices.
//!
//! A rule's sysfs template is checked here as the device it will produce, so a bad key fails
//! `check-config` and names the rule, not at start-up on whichever hosts the rule matches.

use health_daemon::FieldError;
use health_hal::sysfs::SysfsConfig;

use super::check::name;
use super::raw::RawDiscover;
use super::timings::{timings, RawTimings};
use super::{Backend, DiscoveryMatch, DiscoveryRule};

/// The `[[discover]]` tables, in order.
pub(super) fn discovery_rules(raw: Vec<RawDiscover>) -> Result<Vec<DiscoveryRule>, FieldError> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let k = |name: &str| format!("discover[{i}].{name}");
        name(&k("id_prefix"), &r.id_prefix, 48)?;
        let matches = discovery_match(&k, &r)?;
        let sysfs = r.sysfs.unwrap_or_default();
        let example = example_device(&k, &sysfs, &matches)?;
        let t = timings(
            &k,
            &Backend::Sysfs(example),
            RawTimings {
                poll_interval: r.poll_interval.as_deref(),
                deadline: r.deadline.as_deref(),
                action_deadline: r.action_deadline.as_deref(),
            },
        )?;
        rules.push(DiscoveryRule {
            kind: r.kind,
            id_prefix: r.id_prefix,
            matches,
            sysfs,
            poll_interval: t.poll_interval,
            deadline: t.deadline,
            action_deadline: t.action_deadline,
        });
    }
    Ok(rules)
}

/// `pci = "vendor[:device]"` (hex) or `hwmon = "<chip>"`: exactly one.
fn discovery_match(
    k: &dyn Fn(&str) -> String,
    r: &RawDiscover,
) -> Result<DiscoveryMatch, FieldError> {
    let hex = |s: &str| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    match (&r.pci, &r.hwmon) {
        (Some(p), None) => {
            let (v, d) = match p.split_once(':') {
                Some((v, d)) => (hex(v), Some(hex(d))),
                None => (hex(p), None),
            };
            match (v, d) {
                (Some(vendor), None) => Ok(DiscoveryMatch::Pci { vendor, device: None }),
                (Some(vendor), Some(Some(device))) => Ok(DiscoveryMatch::Pci {
                    vendor,
                    device: Some(device),
                }),
                _ => Err(FieldError::new(
                    k("pci"),
                    format!("expected \"vendor\" or \"vendor:device\" in hex, e.g. \"1e52:0001\", found {p:?}"),
                )),
            }
        }
        (None, Some(name)) if !name.is_empty() && !name.contains('/') => {
            Ok(DiscoveryMatch::Hwmon { name: name.clone() })
        }
        (None, Some(name)) => Err(FieldError::new(
            k("hwmon"),
            format!("expected a hwmon chip name, found {name:?}"),
        )),
        _ => Err(FieldError::new(
            k("pci"),
            "expected exactly one of pci or hwmon",
        )),
    }
}

/// The template filled in as discovery would for a match, checked as that device's config.
fn example_device(
    k: &dyn Fn(&str) -> String,
    template: &SysfsConfig,
    matches: &DiscoveryMatch,
) -> Result<SysfsConfig, FieldError> {
    if template.pci.is_some() || template.hwmon.is_some() {
        return Err(FieldError::new(
            k("sysfs"),
            "pci and hwmon are filled in by discovery: remove them from the template",
        ));
    }
    let mut example = template.clone();
    match matches {
        DiscoveryMatch::Pci { .. } => example.pci = Some("0000:00:00.0".into()),
        DiscoveryMatch::Hwmon { name } => example.hwmon = Some(name.clone()),
    }
    example
        .validate()
        .map_err(|(key, msg)| FieldError::new(k(&format!("sysfs.{key}")), msg))?;
    Ok(example)
}
