//! hwmon chips (`/sys/class/hwmon/hwmonN/`): find a chip by its `name`, list its sensors from
//! the file names (`<type><index>_<property>`), read them in base units, and read or set the
//! `powerK_cap` power limit.
//!
//! hwmon numbers are not stable (they follow probe order, and a re-probed chip gets a new
//! one), so a chip is found by name and found again whenever its files vanish. When the device
//! is a PCI function, its chip is looked for under that function first
//! (`/sys/bus/pci/devices/ADDR/hwmon/`), which tells two identical cards apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use crate::device::HalError;
use crate::model::{Condition, ConditionCode, Quantity, Reading, Severity};

use super::lock;
use super::read::{parse_i64, SysfsReader};
use super::source::{finish, with_message, SourceReport};

/// The sensor types this backend reads (hwmon also has `humidity`, `pwm`, `intrusion` ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SensorType {
    Temp,
    Power,
    Energy,
    In,
    Fan,
    Curr,
}

impl SensorType {
    pub const ALL: [SensorType; 6] = [
        SensorType::Temp,
        SensorType::Power,
        SensorType::Energy,
        SensorType::In,
        SensorType::Fan,
        SensorType::Curr,
    ];

    /// File-name prefix, e.g. `temp` in `temp1_input`.
    pub fn prefix(self) -> &'static str {
        match self {
            SensorType::Temp => "temp",
            SensorType::Power => "power",
            SensorType::Energy => "energy",
            SensorType::In => "in",
            SensorType::Fan => "fan",
            SensorType::Curr => "curr",
        }
    }

    pub fn quantity(self) -> Quantity {
        match self {
            SensorType::Temp => Quantity::TemperatureCelsius,
            SensorType::Power => Quantity::PowerWatts,
            SensorType::Energy => Quantity::EnergyJoules,
            SensorType::In => Quantity::VoltageVolts,
            SensorType::Fan => Quantity::FanRpm,
            SensorType::Curr => Quantity::CurrentAmperes,
        }
    }

    /// Factor from the hwmon file's unit to the base unit: milli-degC, microwatts,
    /// microjoules, millivolts, RPM, milliamperes.
    pub fn scale(self) -> f64 {
        match self {
            SensorType::Temp | SensorType::In | SensorType::Curr => 1e-3,
            SensorType::Power | SensorType::Energy => 1e-6,
            SensorType::Fan => 1.0,
        }
    }

    /// Properties that carry the value, in order of preference. Many power meters only
    /// offer an average.
    fn value_properties(self) -> &'static [&'static str] {
        match self {
            SensorType::Power => &["input", "average"],
            _ => &["input"],
        }
    }
}

/// A file name such as `temp1_input`, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorFile {
    pub sensor_type: SensorType,
    pub index: u32,
    pub property: String,
}

/// Parses `<type><index>_<property>`; `None` for anything else (`name`, `uevent`,
/// `pwm1`, `intrusion0_alarm`).
pub fn parse_sensor_file(name: &str) -> Option<SensorFile> {
    SensorType::ALL.iter().find_map(|&t| {
        let rest = name.strip_prefix(t.prefix())?;
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return None;
        }
        let (digits, tail) = rest.split_at(digits_end);
        let property = tail.strip_prefix('_')?;
        let valid = !property.is_empty()
            && property
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return None;
        }
        Some(SensorFile {
            sensor_type: t,
            index: digits.parse().ok()?,
            property: property.to_string(),
        })
    })
}

/// One sensor of a chip.
#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub sensor_type: SensorType,
    pub index: u32,
    /// From `<type><index>_label`, else `<type><index>`.
    pub label: String,
    /// The file the value is read from, e.g. `power1_average`.
    pub value_file: String,
    /// The driver's own limits in base units (`tempK_max`, `tempK_crit`), read when the chip
    /// is found.
    pub max: Option<f64>,
    pub crit: Option<f64>,
}

/// How the chip is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum ChipSelect {
    /// By the content of its `name` file.
    Name(String),
    /// A fixed directory (absolute, or relative to the root), as [`super::discover_hwmon`]
    /// returns.
    Dir(PathBuf),
}

impl ChipSelect {
    /// A config value: a chip name, or a directory when it contains a `/`.
    pub fn parse(value: &str) -> ChipSelect {
        if value.contains('/') {
            ChipSelect::Dir(PathBuf::from(value))
        } else {
            ChipSelect::Name(value.to_string())
        }
    }
}

/// What was learned about the chip when it was found; kept until its files vanish.
#[derive(Debug, Clone)]
struct Chip {
    dir: PathBuf,
    sensors: Vec<Sensor>,
    /// Labels asked for in the config that the chip does not have.
    missing_labels: Vec<String>,
    /// `power<cap_sensor>_cap`, if the chip has it, and whether it has a write bit.
    cap: Option<(String, bool)>,
    /// Every label and limit could be read. A chip found while some could not (a label file
    /// on a blocked driver) is used for this read but not kept, so that sensor names do not
    /// stay wrong.
    complete: bool,
}

pub struct Hwmon {
    reader: SysfsReader,
    select: ChipSelect,
    /// Directories searched for `hwmonN` entries, in order.
    bases: Vec<PathBuf>,
    /// The base the chip was first found under. Later searches keep to it: once the chip was
    /// found under its PCI function, a same-named chip elsewhere is another card's, and must
    /// not stand in for this one while it is gone.
    found_under: Mutex<Option<usize>>,
    labels: Option<Vec<String>>,
    cap_sensor: Option<u32>,
    chip: Mutex<Option<Chip>>,
}

impl Hwmon {
    /// `pci`: the PCI address of the device, whose own hwmon directory is searched first.
    pub fn new(
        reader: SysfsReader,
        select: ChipSelect,
        labels: Option<Vec<String>>,
        cap_sensor: Option<u32>,
        pci: Option<&str>,
    ) -> Hwmon {
        let mut bases = Vec::new();
        if let Some(addr) = pci {
            bases.push(Path::new("bus/pci/devices").join(addr).join("hwmon"));
        }
        bases.push(PathBuf::from("class/hwmon"));
        Hwmon {
            reader,
            select,
            bases,
            found_under: Mutex::new(None),
            labels,
            cap_sensor,
            chip: Mutex::new(None),
        }
    }

    fn cached(&self) -> MutexGuard<'_, Option<Chip>> {
        lock(&self.chip)
    }

    /// For messages: `hwmon chip "loihi2"`.
    pub fn describe(&self) -> String {
        match &self.select {
            ChipSelect::Name(n) => format!("hwmon chip {n:?}"),
            ChipSelect::Dir(d) => format!("hwmon chip at {}", self.reader.path(d).display()),
        }
    }

    /// The chip's name when chosen by name.
    pub fn chip_name(&self) -> Option<&str> {
        match &self.select {
            ChipSelect::Name(n) => Some(n),
            ChipSelect::Dir(_) => None,
        }
    }

    /// Absolute directory of the chip, once found.
    pub fn location(&self) -> Option<PathBuf> {
        self.cached().as_ref().map(|c| self.reader.path(&c.dir))
    }

    /// Forget where the chip was (after a reset re-probes it under another number).
    pub fn forget(&self) {
        *self.cached() = None;
    }

    /// Whether the configured power-cap sensor has a writable `powerK_cap`, as of the last
    /// time the chip was found.
    pub fn power_cap_writable(&self) -> bool {
        self.cached()
            .as_ref()
            .and_then(|c| c.cap.as_ref())
            .is_some_and(|(_, w)| *w)
    }

    /// The sensors of the chip (finding it if needed).
    pub async fn sensors(&self) -> Result<Vec<Sensor>, HalError> {
        Ok(self.locate().await?.sensors)
    }

    async fn locate(&self) -> Result<Chip, HalError> {
        if let Some(c) = self.cached().clone() {
            return Ok(c);
        }
        let dir = match &self.select {
            ChipSelect::Dir(d) => d.clone(),
            ChipSelect::Name(name) => {
                let mut found = None;
                let mut searched = Vec::new();
                let pinned = *lock(&self.found_under);
                for (i, base) in self.bases.iter().enumerate() {
                    if pinned.is_some_and(|p| p != i) {
                        continue;
                    }
                    searched.push(self.reader.path(base).display().to_string());
                    found = self
                        .reader
                        .find_dir_by_attr(base, "hwmon", "name", name)
                        .await?;
                    if found.is_some() {
                        *lock(&self.found_under) = Some(i);
                        break;
                    }
                }
                found.ok_or_else(|| {
                    HalError::Vanished(format!(
                        "no hwmon chip named {name:?} under {}",
                        searched.join(" or ")
                    ))
                })?
            }
        };
        let chip = self.scan(dir).await?;
        if chip.complete {
            *self.cached() = Some(chip.clone());
        }
        Ok(chip)
    }

    /// Lists the chip's files and reads what does not change: labels, limits, whether the
    /// power cap can be written.
    async fn scan(&self, dir: PathBuf) -> Result<Chip, HalError> {
        let names = self.reader.list_dir(&dir).await.map_err(|e| match e {
            HalError::Vanished(_) => HalError::Vanished(format!(
                "{} is gone ({})",
                self.describe(),
                self.reader.path(&dir).display()
            )),
            other => other,
        })?;
        let mut groups: BTreeMap<(SensorType, u32), Vec<String>> = BTreeMap::new();
        for n in &names {
            if let Some(f) = parse_sensor_file(n) {
                groups
                    .entry((f.sensor_type, f.index))
                    .or_default()
                    .push(f.property);
            }
        }
        // Sensors with a value file, and the static files that describe them (label, limits),
        // read together so a slow driver costs one deadline, not one per file.
        let mut found: Vec<(SensorType, u32, &str)> = Vec::new();
        let mut extra: Vec<PathBuf> = Vec::new();
        for ((t, i), props) in &groups {
            let has = |p: &str| props.iter().any(|q| q == p);
            let Some(value_prop) = t.value_properties().iter().find(|p| has(p)) else {
                continue;
            };
            found.push((*t, *i, value_prop));
            let base = format!("{}{i}", t.prefix());
            for prop in ["label", "max", "crit"] {
                let wanted = prop == "label" || *t == SensorType::Temp;
                if wanted && has(prop) {
                    extra.push(dir.join(format!("{base}_{prop}")));
                }
            }
        }
        let extra_results = self.reader.read_many(extra.clone()).await;
        let complete = extra_results.iter().all(Result::is_ok);
        let extra_values: BTreeMap<PathBuf, String> = extra
            .iter()
            .cloned()
            .zip(extra_results)
            .filter_map(|(p, v)| Some((p, v.ok()?.trim().to_string())))
            .collect();
        let mut sensors = Vec::new();
        for (t, i, value_prop) in found {
            let base = format!("{}{i}", t.prefix());
            let get = |prop: &str| extra_values.get(&dir.join(format!("{base}_{prop}")));
            // A label is a name, not a measurement: an unreadable one falls back to the
            // default rather than losing the sensor.
            let label = get("label")
                .filter(|l| !l.is_empty())
                .cloned()
                .unwrap_or_else(|| base.clone());
            if let Some(wanted) = &self.labels {
                if !wanted.contains(&label) {
                    continue;
                }
            }
            // Limits are optional too: one that cannot be parsed is simply not known.
            let limit = |prop: &str| {
                get(prop)
                    .and_then(|v| v.parse::<i64>().ok())
                    .map(|v| v as f64 * t.scale())
            };
            sensors.push(Sensor {
                sensor_type: t,
                index: i,
                label,
                value_file: format!("{base}_{value_prop}"),
                max: limit("max"),
                crit: limit("crit"),
            });
        }
        let missing_labels = match &self.labels {
            Some(wanted) => wanted
                .iter()
                .filter(|w| !sensors.iter().any(|s| &s.label == *w))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let cap = match self.cap_sensor {
            Some(k) => {
                let file = format!("power{k}_cap");
                if names.contains(&file) {
                    // Unknown counts as not writable: the capability is only advertised
                    // when it is sure.
                    let writable = self
                        .reader
                        .is_writable(dir.join(&file))
                        .await
                        .unwrap_or(false);
                    Some((file, writable))
                } else {
                    None
                }
            }
            None => None,
        };
        Ok(Chip {
            dir,
            sensors,
            missing_labels,
            cap,
            complete,
        })
    }

    /// Every selected sensor, in base units, plus conditions for sensors at or above the
    /// driver's own limits and the power cap in force.
    pub async fn read(&self, subject: &str) -> Result<SourceReport, HalError> {
        let chip = self.locate().await?;
        let now = SystemTime::now();
        let mut files: Vec<PathBuf> = chip
            .sensors
            .iter()
            .map(|s| chip.dir.join(&s.value_file))
            .collect();
        if let Some((cap, _)) = &chip.cap {
            files.push(chip.dir.join(cap));
        }
        let attempted = files.len();
        let results = self.reader.read_many(files.clone()).await;
        let mut report = SourceReport::default();
        for (i, (file, result)) in files.iter().zip(results).enumerate() {
            let value = result.and_then(|s| parse_i64(&self.reader.path(file), &s));
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            let Some(sensor) = chip.sensors.get(i) else {
                // The last file is the power cap.
                report.power_limit_watts = Some(value as f64 * 1e-6);
                continue;
            };
            let v = value as f64 * sensor.sensor_type.scale();
            report.readings.push(Reading::new(
                &sensor.label,
                sensor.sensor_type.quantity(),
                v,
                now,
            ));
            if let Some(c) = limit_condition(subject, sensor, v, now) {
                report.conditions.push(c);
            }
        }
        for label in &chip.missing_labels {
            report.conditions.push(Condition::new(
                ConditionCode::DeviceError,
                Severity::Warning,
                subject,
                format!(
                    "{} has no sensor labelled {label:?} (has: {})",
                    self.describe(),
                    chip.sensors
                        .iter()
                        .map(|s| s.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                now,
            ));
        }
        if report
            .errors
            .iter()
            .any(|e| matches!(e, HalError::Vanished(_)))
        {
            // Files disappearing means the chip was removed or re-probed: find it again next
            // time.
            self.forget();
        }
        finish(report, attempted).map_err(|e| match e {
            HalError::Vanished(m) => HalError::Vanished(format!(
                "{} at {} vanished: {m}",
                self.describe(),
                self.reader.path(&chip.dir).display()
            )),
            other => other,
        })
    }

    /// The configured power cap in watts, `None` when the chip has no such file.
    pub async fn read_power_cap(&self) -> Result<Option<f64>, HalError> {
        let chip = self.locate().await?;
        match &chip.cap {
            Some((file, _)) => Ok(Some(
                self.reader.read_i64(chip.dir.join(file)).await? as f64 * 1e-6,
            )),
            None => Ok(None),
        }
    }

    /// Writes the power cap (watts → microwatts), within `powerK_cap_min`/`_max` when the
    /// driver gives them.
    pub async fn set_power_cap(&self, watts: f64) -> Result<(), HalError> {
        let Some(k) = self.cap_sensor else {
            return Err(HalError::Unsupported(
                "no power cap sensor configured (power_cap_sensor)".to_string(),
            ));
        };
        if !watts.is_finite() || watts <= 0.0 || watts > 1e6 {
            return Err(HalError::InvalidArgument(format!(
                "power limit must be a positive number of watts, got {watts}"
            )));
        }
        let chip = self.locate().await?;
        let file = chip.dir.join(format!("power{k}_cap"));
        if !self.reader.exists(&file).await? {
            return Err(HalError::Unsupported(format!(
                "{} has no power cap: {} does not exist",
                self.describe(),
                self.reader.path(&file).display()
            )));
        }
        if !self.reader.is_writable(&file).await? {
            return Err(HalError::Unsupported(format!(
                "{} is read-only: this driver does not accept a power limit",
                self.reader.path(&file).display()
            )));
        }
        for (prop, below) in [("cap_min", true), ("cap_max", false)] {
            let bound = chip.dir.join(format!("power{k}_{prop}"));
            if !self.reader.exists(&bound).await? {
                continue;
            }
            let b = self.reader.read_i64(&bound).await? as f64 * 1e-6;
            if (below && watts < b) || (!below && watts > b) {
                return Err(HalError::InvalidArgument(format!(
                    "{watts} W is outside what the driver accepts ({} = {b} W)",
                    self.reader.path(&bound).display()
                )));
            }
        }
        let microwatts = (watts * 1e6).round() as u64;
        self.reader
            .write_string(&file, &microwatts.to_string())
            .await
            .map_err(|e| {
                let m = format!("setting the power cap to {watts} W: {e}");
                with_message(&e, m)
            })
    }
}

/// A temperature at or above the driver's `crit` (critical) or `max` (warning).
fn limit_condition(subject: &str, s: &Sensor, v: f64, now: SystemTime) -> Option<Condition> {
    if s.sensor_type != SensorType::Temp {
        return None;
    }
    let base = format!("temp{}", s.index);
    let (code, severity, limit, prop) = match (s.crit, s.max) {
        (Some(c), _) if v >= c => (
            ConditionCode::ThermalCritical,
            Severity::Critical,
            c,
            "crit",
        ),
        (_, Some(m)) if v >= m => (ConditionCode::ThermalWarning, Severity::Warning, m, "max"),
        _ => return None,
    };
    Some(Condition::new(
        code,
        severity,
        subject,
        format!(
            "{} at {v:.1} degC >= driver limit {limit:.1} degC ({base}_{prop})",
            s.label
        ),
        now,
    ))
}
