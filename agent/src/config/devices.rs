//! `[[device]]`: each device's id, kind, backend and its table, limits and timings.
//!
//! A backend table is checked by the HAL config it deserializes into (`validate`), and its
//! errors are re-keyed under `device[i].<backend>.`; what only makes sense across keys (the
//! table matches `backend`, the backend serves the `kind`, a protocol simulator exists) is
//! checked here.

use health_daemon::FieldError;
use health_hal::bmp::BmpConfig;
use health_hal::loihi::Loihi2Config;
use health_hal::plugin::PluginConfig;
use health_hal::scpi::ScpiBenchConfig;
use health_hal::sim::SimOptions;
use health_hal::sysfs::SysfsConfig;
use health_hal::{DeviceKind, Limits};

use super::check::{duration, name, range, secs};
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
    limits.temperature_warning_celsius = range(
        &k("limits.temperature_warning_celsius"),
        l.temperature_warning_celsius,
        limits.temperature_warning_celsius,
        -50.0,
        200.0,
    )?;
    limits.temperature_critical_celsius = range(
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
    let backend = match d.backend.as_str() {
        "sim" => Backend::Sim(sim_options(k, d.sim.as_ref())?),
        "bmp" => {
            serves(k, d, &[DeviceKind::Spinnaker])?;
            // The address is the simulator's, filled in when it starts.
            let simulated = d.simulator.then(|| BmpConfig::new("127.0.0.1:17893", 0));
            Backend::Bmp(table(k, "bmp", d.bmp.as_ref(), simulated)?)
        }
        "scpi" => {
            serves(k, d, &[DeviceKind::Photonic])?;
            // Addresses are the simulator's, filled in when it starts.
            let simulated = d.simulator.then(|| ScpiBenchConfig::new("127.0.0.1:5025"));
            Backend::Scpi(table(k, "scpi", d.scpi.as_ref(), simulated)?)
        }
        "plugin" => Backend::Plugin(table(k, "plugin", d.plugin.as_ref(), None)?),
        "sysfs" => Backend::Sysfs(table(k, "sysfs", d.sysfs.as_ref(), None)?),
        "loihi2" => {
            serves(k, d, &[DeviceKind::Loihi2])?;
            Backend::Loihi2(table(k, "loihi2", d.loihi2.as_ref(), None)?)
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
/// error saying what the table needs; then the HAL's own checks of it, whose errors name a key
/// inside the table, re-keyed under the table.
fn table<T: BackendTable>(
    k: &dyn Fn(&str) -> String,
    name: &str,
    written: Option<&T>,
    simulated: Option<T>,
) -> Result<T, FieldError> {
    let cfg = match (written, simulated) {
        (Some(cfg), _) => cfg.clone(),
        (None, Some(cfg)) => cfg,
        (None, None) => return Err(FieldError::new(k(name), T::MISSING)),
    };
    cfg.check()
        .map_err(|(key, msg)| FieldError::new(k(&format!("{name}.{key}")), msg))?;
    Ok(cfg)
}

/// A HAL backend config as `[device.<backend>]` deserializes into it.
trait BackendTable: Clone {
    /// What to write when the table is missing.
    const MISSING: &'static str;
    /// The HAL's own check: `Err((key in the table, message))`.
    fn check(&self) -> Result<(), (String, String)>;
}

macro_rules! backend_table {
    ($config:ty, $missing:expr) => {
        impl BackendTable for $config {
            const MISSING: &'static str = $missing;
            fn check(&self) -> Result<(), (String, String)> {
                self.validate()
            }
        }
    };
}

backend_table!(
    BmpConfig,
    "expected a [device.bmp] table with at least address = \"ip[:port]\""
);
backend_table!(
    ScpiBenchConfig,
    "expected a [device.scpi] table with at least tec = \"host:port\""
);
backend_table!(
    PluginConfig,
    "expected a [device.plugin] table with command and read"
);
backend_table!(
    SysfsConfig,
    "expected a [device.sysfs] table naming at least one source (hwmon, thermal_zone, power_supply, powercap, pci)"
);
backend_table!(
    Loihi2Config,
    "expected a [device.loihi2] table with at least board_host = \"host:port\""
);

/// `[device.sim]`, all optional.
fn sim_options(k: &dyn Fn(&str) -> String, s: Option<&RawSim>) -> Result<SimOptions, FieldError> {
    let p = range(
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
