//! `[safety]` and each device's `cooldown` / `max_resets_per_hour` overrides: how often a
//! device may be acted on; how long a maintenance window may last; how many refused callers
//! within a window raise ACCESS_DENIED.

use std::collections::HashMap;
use std::time::Duration;

use health_daemon::FieldError;

use super::check::{duration, range, secs};
use super::raw::{RawDevice, RawSafety};
use super::{AccessDeniedLimit, DeviceSafety, SafetyConfig};

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
    let max_maintenance = duration(
        "safety.max_maintenance",
        s.max_maintenance.as_deref(),
        super::DEFAULT_MAX_MAINTENANCE,
        secs(1),
        secs(30 * 86400),
    )?;
    let access_denied = AccessDeniedLimit {
        count: range(
            "safety.access_denied_count",
            s.access_denied_count,
            u64::from(AccessDeniedLimit::default().count),
            1,
            1_000_000,
        )? as u32,
        window: duration(
            "safety.access_denied_window",
            s.access_denied_window.as_deref(),
            AccessDeniedLimit::default().window,
            secs(1),
            secs(86400),
        )?,
    };
    Ok(SafetyConfig {
        default,
        per_device,
        max_maintenance,
        access_denied,
    })
}
