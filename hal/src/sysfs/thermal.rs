//! Thermal zones (`/sys/class/thermal/thermal_zoneN/`): the zone's temperature, and its trip
//! points turned into conditions. The trip points are the platform's own limits (from ACPI or
//! the device tree), so crossing one is reported by the backend, independently of the agent's
//! configured limits.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::device::HalError;
use crate::model::{Condition, ConditionCode, Quantity, Reading, Severity};

use super::class_dir::ClassDir;
use super::read::{parse_i64, SysfsReader};
use super::source::SourceReport;

/// Below absolute zero: the kernel's marker for a trip point that is not in use
/// (`THERMAL_TEMP_INVALID` is -274000).
const INVALID_TRIP_MILLI_C: i64 = -273_150;

/// A trip point: `trip_point_K_type` and `trip_point_K_temp`.
#[derive(Debug, Clone, PartialEq)]
pub struct TripPoint {
    pub index: u32,
    /// `critical`, `hot`, `passive` or `active`.
    pub kind: String,
    pub celsius: f64,
}

/// `trip_point_3_temp` → (3, "temp").
pub fn parse_trip_file(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix("trip_point_")?;
    let (index, prop) = rest.split_once('_')?;
    if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok()?, prop))
}

pub struct ThermalZone {
    reader: SysfsReader,
    dir: ClassDir,
}

impl ThermalZone {
    pub fn new(reader: SysfsReader, zone_type: impl Into<String>) -> ThermalZone {
        let class = [
            "class/thermal",
            "thermal_zone",
            "type",
            "thermal zone of type",
        ];
        ThermalZone {
            reader,
            dir: ClassDir::new(class, zone_type),
        }
    }

    pub fn zone_type(&self) -> &str {
        self.dir.want()
    }

    /// Absolute directory of the zone, once found.
    pub fn location(&self) -> Option<PathBuf> {
        self.dir.location(&self.reader)
    }

    pub fn forget(&self) {
        self.dir.forget();
    }

    /// The zone's temperature, and a condition when it is at a critical or hot trip point
    /// (critical) or above a passive one (warning: the kernel is throttling).
    pub async fn read(&self, subject: &str) -> Result<SourceReport, HalError> {
        let (dir, names) = (self.dir.list(&self.reader).await).inspect_err(|_| self.forget())?;
        let mut trip_indices: Vec<u32> = names
            .iter()
            .filter_map(|n| parse_trip_file(n))
            .filter(|(_, p)| *p == "temp")
            .map(|(i, _)| i)
            .collect();
        trip_indices.sort_unstable();
        let mut files = vec![dir.join("temp")];
        for i in &trip_indices {
            files.push(dir.join(format!("trip_point_{i}_temp")));
            files.push(dir.join(format!("trip_point_{i}_type")));
        }
        let mut results = self.reader.read_many(files.clone()).await.into_iter();
        let temp_path = self.reader.path(dir.join("temp"));
        let milli = match results.next() {
            Some(r) => r.and_then(|s| parse_i64(&temp_path, &s)),
            None => Err(HalError::Io(format!("{}: no result", temp_path.display()))),
        };
        let milli = match milli {
            Ok(v) => v,
            Err(e) => {
                if matches!(e, HalError::Vanished(_)) {
                    self.forget();
                }
                // Without the temperature, the trip points say nothing: the zone failed.
                return Err(e);
            }
        };
        let celsius = milli as f64 / 1000.0;
        let now = SystemTime::now();
        let mut trips = Vec::new();
        for i in trip_indices {
            let temp = results.next();
            let kind = results.next();
            // Trip points are the platform's configuration, not measurements; one that cannot
            // be read (drivers answer EINVAL or ENODATA for unused ones) is treated as absent.
            if let (Some(Ok(t)), Some(Ok(k))) = (temp, kind) {
                if let Ok(t) = t.trim().parse::<i64>() {
                    if t > INVALID_TRIP_MILLI_C {
                        trips.push(TripPoint {
                            index: i,
                            kind: k.trim().to_string(),
                            celsius: t as f64 / 1000.0,
                        });
                    }
                }
            }
        }
        let mut report = SourceReport::default();
        report.readings.push(Reading::new(
            self.zone_type(),
            Quantity::TemperatureCelsius,
            celsius,
            now,
        ));
        if let Some(c) = trip_condition(subject, self.zone_type(), celsius, &trips, now) {
            report.conditions.push(c);
        }
        Ok(report)
    }
}

/// The worst trip point crossed, if any.
pub fn trip_condition(
    subject: &str,
    zone: &str,
    celsius: f64,
    trips: &[TripPoint],
    now: SystemTime,
) -> Option<Condition> {
    let highest = |pred: &dyn Fn(&TripPoint) -> bool| {
        trips
            .iter()
            .filter(|t| pred(t))
            .max_by(|a, b| a.celsius.total_cmp(&b.celsius))
    };
    let critical = highest(&|t| (t.kind == "critical" || t.kind == "hot") && celsius >= t.celsius);
    let (trip, code, severity, cmp) = match critical {
        Some(t) => (t, ConditionCode::ThermalCritical, Severity::Critical, ">="),
        None => {
            let t = highest(&|t| t.kind == "passive" && celsius > t.celsius)?;
            (t, ConditionCode::ThermalWarning, Severity::Warning, ">")
        }
    };
    Some(Condition::new(
        code,
        severity,
        subject,
        format!(
            "thermal zone {zone} at {celsius:.1} degC {cmp} {} trip point {:.1} degC (trip_point_{})",
            trip.kind, trip.celsius, trip.index
        ),
        now,
    ))
}
