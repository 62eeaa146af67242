//! `[[device]]`: each device's id, kind, backend and its table, limits and timings.
//!
//! A backend table is checked by the HAL config it deserializes into (`validate`), and its
//! errors are re-keyed under `device[i].<backend>.`; what only makes sense across keys (the
//! table matches `backend`, the backend serves the `kind`, a protocol simulator exists) is
//! checked here.

use health_daemon::FieldError;
use health_hal::bmp::BmpConfig;
use health_hal::scpi::ScpiBenchConfig;
use health_hal::sim::SimOptions;
use health_hal::{DeviceKind, Limits};

use super::check::{duration, name, range_f64, secs};
use super::raw::{RawDevice, RawLimits, RawSim};
use super::timings::{timings, RawTimings};
use super::{Backend, DeviceConfig};

/// Backend names, for error messages.
const BACKENDS: &str = "\"sim\", \"bmp\", \"scpi\", \"plugin\", \"sysfs\", \"loihi2\"";

/// The `[[device]]` tables, in order; ids must be unique.
pub(super) fn devices(raw: Vec<RawDevice>) -> Result<Vec<DeviceConfig>, FieldError> {
    let mut devices: Vec<DeviceConfig> = Vec::with_capacity(raw.len());
    for (i, d) in raw.into_iter().enumerate() {
        let k = |name: &str| format!("device[{i}].{name}");
        name(&k("id"), &d.id, 64)?;
        if devices.iter().any(|x| x.id == d.id) {
            return Err(FieldError::new(
                k("id"),
                format!("duplicate device id {:?}", d.id),
            ));
        }
        let backend = backend(&k, &d)?;
        let limits = limits(&k, d.kind, &d.limits)?;
        let t = timings(
            &k,
            &backend,
            RawTimings {
                poll_interval: d.poll_interval.as_deref(),
                deadline: d.deadline.as_deref(),
                action_deadline: d.action_deadline.as_deref(),
            },
        )?;
        devices.push(DeviceConfig {
            id: d.id,
            kind: d.kind,
            backend,
            poll_interval: t.poll_interval,
            deadline: t.deadline,
            action_deadline: t.action_deadline,
            limits,
            simulator: d.simulator,
        });
    }
    Ok(devices)
}

/// `limits.*`: the kind's defaults, overridden key by key.
fn limits(
    k: &dyn Fn(&str) -> String,
    kind: DeviceKind,
    l: &RawLimits,
) -> Result<Limits, FieldError> {
    let mut limits = Limits::for_kind(kind);
    limits.temperature_warning_celsius = range_f64(
        &k("limits.temperature_warning_celsius"),
        l.temperature_warning_celsius,
        limits.temperature_warning_celsius,
        -50.0,
        200.0,
    )?;
    limits.temperature_critical_celsius = range_f64(
        &k("limits.temperature_critical_celsius"),
        l.temperature_critical_celsius,
        limits.temperature_critical_celsius,
        -50.0,
        200.0,
    )?;
    if limits.temperature_critical_celsius < limits.temperature_warning_celsius {
        return Err(FieldError::new(
            k("limits.temperature_critical_celsius"),
            "expected at least limits.temperature_warning_celsius",
        ));
    }
    if l.calibration_max_age.is_some() {
        limits.calibration_max_age = Some(duration(
            &k("limits.calibration_max_age"),
            l.calibration_max_age.as_deref(),
            secs(3600),
            secs(1),
            secs(365 * 86400),
        )?);
    }
    Ok(limits)
}

/// The device's backend, from `backend = "..."` and its table. Only the named backend's table
/// may be present; a backend whose protocol has a simulator may set `simulator = true`, and
/// then its table is optional (addresses come from the simulator).
fn backend(k: &dyn Fn(&str) -> String, d: &RawDevice) -> Result<Backend, FieldError> {
    only_the_named_table(k, d)?;
    // The HAL's own checks name a key inside the table; say which table.
    let checked = |table: &str, r: Result<(), (String, String)>| {
        r.map_err(|(key, msg)| FieldError::new(k(&format!("{table}.{key}")), msg))
    };
    let backend = match d.backend.as_str() {
        "sim" => Backend::Sim(sim_options(k, d.sim.as_ref())?),
        "bmp" => {
            serves(k, d, &[DeviceKind::Spinnaker])?;
            let cfg = table(
                k,
                "bmp",
                d.bmp.as_ref(),
                // The address is the simulator's, filled in when it starts.
                d.simulator.then(|| BmpConfig::new("127.0.0.1:17893", 0)),
                "expected a [device.bmp] table with at least address = \"ip[:port]\"",
            )?;
            checked("bmp", cfg.validate())?;
            Backend::Bmp(cfg)
        }
        "scpi" => {
            serves(k, d, &[DeviceKind::Photonic])?;
            let cfg = table(
                k,
                "scpi",
                d.scpi.as_ref(),
                // Addresses are the simulator's, filled in when it starts.
                d.simulator.then(|| ScpiBenchConfig::new("127.0.0.1:5025")),
                "expected a [device.scpi] table with at least tec = \"host:port\"",
            )?;
            checked("scpi", cfg.validate())?;
            Backend::Scpi(cfg)
        }
        "plugin" => {
            let cfg = table(
                k,
                "plugin",
                d.plugin.as_ref(),
                None,
                "expected a [device.plugin] table with command and read",
            )?;
            checked("plugin", cfg.validate())?;
            Backend::Plugin(cfg)
        }
        "sysfs" => {
            let cfg = table(k, "sysfs", d.sysfs.as_ref(), None, "expected a [device.sysfs] table naming at least one source (hwmon, thermal_zone, power_supply, powercap, pci)")?;
            checked("sysfs", cfg.validate())?;
            Backend::Sysfs(cfg)
        }
        "loihi2" => {
            serves(k, d, &[DeviceKind::Loihi2])?;
            let cfg = table(
                k,
                "loihi2",
                d.loihi2.as_ref(),
                None,
                "expected a [device.loihi2] table with at least board_host = \"host:port\"",
            )?;
            checked("loihi2", cfg.validate())?;
            Backend::Loihi2(cfg)
        }
        other => {
            return Err(FieldError::new(
                k("backend"),
                format!("expected one of {BACKENDS}, found {other:?}"),
            ))
        }
    };
    if d.simulator && !matches!(backend, Backend::Scpi(_) | Backend::Bmp(_)) {
        return Err(FieldError::new(
            k("simulator"),
            format!(
                "no protocol simulator for backend {:?}: remove simulator = true",
                d.backend
            ),
        ));
    }
    Ok(backend)
}

/// A backend table present for another backend is a mistake, not something to ignore.
fn only_the_named_table(k: &dyn Fn(&str) -> String, d: &RawDevice) -> Result<(), FieldError> {
    let tables = [
        ("sim", d.sim.is_some()),
        ("bmp", d.bmp.is_some()),
        ("scpi", d.scpi.is_some()),
        ("plugin", d.plugin.is_some()),
        ("sysfs", d.sysfs.is_some()),
        ("loihi2", d.loihi2.is_some()),
    ];
    for (name, present) in tables {
        if present && name != d.backend {
            return Err(FieldError::new(
                k(name),
                format!(
                    "only allowed with backend = \"{name}\", found backend = {:?}",
                    d.backend
                ),
            ));
        }
    }
    Ok(())
}

/// The device's kind is one the backend serves.
fn serves(
    k: &dyn Fn(&str) -> String,
    d: &RawDevice,
    allowed: &[DeviceKind],
) -> Result<(), FieldError> {
    if allowed.contains(&d.kind) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
    Err(FieldError::new(
        k("kind"),
        format!(
            "backend {:?} serves kind {}, found {:?}",
            d.backend,
            names.join(" or "),
            d.kind.as_str()
        ),
    ))
}

/// The backend's table as written, else the simulator's stand-in when there is one, else an
/// error saying what the table needs.
fn table<T: Clone>(
    k: &dyn Fn(&str) -> String,
    name: &str,
    written: Option<&T>,
    simulated: Option<T>,
    missing: &str,
) -> Result<T, FieldError> {
    match (written, simulated) {
        (Some(cfg), _) => Ok(cfg.clone()),
        (None, Some(cfg)) => Ok(cfg),
        (None, None) => Err(FieldError::new(k(name), missing)),
    }
}

/// `[device.sim]`, all optional.
fn sim_options(k: &dyn Fn(&str) -> String, s: Option<&RawSim>) -> Result<SimOptions, FieldError> {
    let p = range_f64(
        &k("sim.reset_failure_probability"),
        s.and_then(|s| s.reset_failure_probability),
        0.0,
        0.0,
        1.0,
    )?;
    Ok(SimOptions {
        reset_failure_probability: p,
        seed: s.and_then(|s| s.seed),
    })
}
