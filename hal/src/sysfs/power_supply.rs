//! Power supplies (`/sys/class/power_supply/NAME/`): energy, power, temperature, online and
//! status. A Loihi 2 board exposes its energy counter here (`loihi2/energy_now`); many such
//! supplies have no `power_now`, so power is derived from the energy counter between reads.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::device::HalError;
use crate::model::{Quantity, Reading};

use super::lock;
use super::read::{parse_i64, SysfsReader};
use super::source::{finish, SourceReport};

/// Joules in one microwatt-hour (`energy_now` is in µWh).
const JOULES_PER_MICROWATT_HOUR: f64 = 3.6e-3;

const FILES: [&str; 5] = ["energy_now", "power_now", "temp", "online", "status"];

/// The last energy reading, to derive power from the next one.
#[derive(Debug, Clone, Copy)]
struct EnergyMark {
    joules: f64,
    at: Instant,
}

pub struct PowerSupply {
    reader: SysfsReader,
    name: String,
    last: Mutex<Option<EnergyMark>>,
}

/// Average power between two energy readings: `None` for the first reading, when no time has
/// passed, or when the energy went down (a counter reset, or a battery discharging: not
/// power drawn by the board).
pub fn power_from_energy(prev: (f64, Instant), now: (f64, Instant)) -> Option<f64> {
    let dt = now.1.checked_duration_since(prev.1)?.as_secs_f64();
    let de = now.0 - prev.0;
    (dt > 0.0 && de >= 0.0).then(|| de / dt)
}

impl PowerSupply {
    pub fn new(reader: SysfsReader, name: impl Into<String>) -> PowerSupply {
        PowerSupply {
            reader,
            name: name.into(),
            last: Mutex::new(None),
        }
    }

    fn last(&self) -> MutexGuard<'_, Option<EnergyMark>> {
        lock(&self.last)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn dir(&self) -> PathBuf {
        PathBuf::from("class/power_supply").join(&self.name)
    }

    /// Absolute directory of the supply.
    pub fn location(&self) -> PathBuf {
        self.reader.path(self.dir())
    }

    /// Forget the last energy reading (the next read gives no derived power).
    pub fn forget(&self) {
        *self.last() = None;
    }

    pub async fn read(&self, _subject: &str) -> Result<SourceReport, HalError> {
        let dir = self.dir();
        let names = self.reader.list_dir(&dir).await.map_err(|e| match e {
            HalError::Vanished(_) => HalError::Vanished(format!(
                "power supply {:?} is gone ({})",
                self.name,
                self.location().display()
            )),
            other => other,
        })?;
        let present: Vec<&str> = FILES
            .iter()
            .copied()
            .filter(|f| names.iter().any(|n| n == f))
            .collect();
        if present.is_empty() {
            return Err(HalError::Protocol(format!(
                "{}: none of {} present",
                self.location().display(),
                FILES.join(", ")
            )));
        }
        let paths: Vec<PathBuf> = present.iter().map(|f| dir.join(f)).collect();
        let results = self.reader.read_many(paths.clone()).await;
        let at = Instant::now();
        let now = SystemTime::now();
        let mut report = SourceReport::default();
        let mut energy = None;
        let mut power = None;
        for ((file, path), result) in present.iter().zip(&paths).zip(results) {
            let content = match result {
                Ok(c) => c,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            if *file == "status" {
                report.status = Some(content.trim().to_string());
                continue;
            }
            let value = match parse_i64(&self.reader.path(path), &content) {
                Ok(v) => v,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            match *file {
                "energy_now" => energy = Some(value as f64 * JOULES_PER_MICROWATT_HOUR),
                "power_now" => power = Some(value as f64 * 1e-6),
                "temp" => report.readings.push(Reading::new(
                    &self.name,
                    Quantity::TemperatureCelsius,
                    value as f64 / 10.0,
                    now,
                )),
                "online" => report.powered = Some(value != 0),
                _ => {}
            }
        }
        if let Some(j) = energy {
            report
                .readings
                .push(Reading::new(&self.name, Quantity::EnergyJoules, j, now));
            let prev = self.last().replace(EnergyMark { joules: j, at });
            // The supply's own power reading wins; the derived one fills in when it is absent.
            if power.is_none() {
                power = prev.and_then(|p| power_from_energy((p.joules, p.at), (j, at)));
            }
        }
        if let Some(w) = power {
            report
                .readings
                .push(Reading::new(&self.name, Quantity::PowerWatts, w, now));
        }
        finish(report, present.len())
    }
}
