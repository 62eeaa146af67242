//! `[safety]` and each device's `cooldown` / `max_resets_per_hour` overrides: how often a
//! device may be acted on.

use std::collections::HashMap;
use std::time::Duration;

use health_daemon::FieldError;

use super::check::{duration, range, secs};
use super::raw::{RawDevice, RawSafety};
use super::{DeviceSafety, SafetyConfig};

pub(super) fn safety(s: &RawSafety, devices: &[RawDevice]) -> Result<SafetyConfig, FieldError> {
    let cooldown = |key: &str, v: Option<&str>, default: Duration| {
        duration(key, v, default, Duration::ZERO, secs(86400))
    };
    let resets = |key: &str, v: Option<u64>, default: u32| {
        range(key, v, u64::from(default), 1, 10_000).map(|n| n as u32)
    };
    let default = DeviceSafety {
        // Off by default: a disable followed by an enable is a normal thing to do; sites
        // that want a pause between actions set it.
        cooldown: cooldown("safety.cooldown", s.cooldown.as_deref(), Duration::ZERO)?,
        max_resets_per_hour: resets("safety.max_resets_per_hour", s.max_resets_per_hour, 10)?,
    };
    let mut per_device = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        if d.cooldown.is_none() && d.max_resets_per_hour.is_none() {
            continue;
        }
        let k = |name: &str| format!("device[{i}].{name}");
        per_device.insert(
            d.id.clone(),
            DeviceSafety {
                cooldown: cooldown(&k("cooldown"), d.cooldown.as_deref(), default.cooldown)?,
                max_resets_per_hour: resets(
                    &k("max_resets_per_hour"),
                    d.max_resets_per_hour,
                    default.max_resets_per_hour,
                )?,
            },
        );
    }
    Ok(SafetyConfig {
        default,
        per_device,
    })
}
