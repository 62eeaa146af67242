//! RAPL zones under powercap (`/sys/class/powercap/intel-rapl:N/`): energy and power of a
//! package or DRAM domain, and its power limit. `energy_uj` is a counter that wraps at
//! `max_energy_range_uj` (within minutes on a busy package), so energy is kept here as a
//! running total and power is the wrap-corrected delta over the elapsed monotonic time.
//!
//! Since 2020 kernels make `energy_uj` readable by root only (a side channel), so a non-root
//! agent gets [`HalError::Io`] (permission denied) for it, which is reported as such.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use crate::device::HalError;
use crate::model::{Quantity, Reading};

use super::class_dir::ClassDir;
use super::lock;
use super::read::{parse_u64, SysfsReader};
use super::source::SourceReport;

/// Energy consumed between two counter readings, in microjoules. A counter below its previous
/// value has wrapped: `(now + range - prev) mod range`. `None` when that cannot be worked out
/// (no range known, or a previous value beyond the range).
pub fn energy_delta_uj(prev: u64, now: u64, range: Option<u64>) -> Option<u64> {
    if now >= prev {
        return Some(now - prev);
    }
    let range = u128::from(range.filter(|r| *r > 0)?);
    let d = (u128::from(now) + range).checked_sub(u128::from(prev))? % range;
    u64::try_from(d).ok()
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    last_uj: u64,
    at: Instant,
    total_j: f64,
}

pub struct Rapl {
    reader: SysfsReader,
    dir: ClassDir,
    /// `max_energy_range_uj` does not change while the zone exists: read once per location.
    range_uj: Mutex<Option<u64>>,
    counter: Mutex<Option<Counter>>,
}

impl Rapl {
    pub fn new(reader: SysfsReader, zone: impl Into<String>) -> Rapl {
        Rapl {
            reader,
            dir: ClassDir::new(["class/powercap", "", "name", "powercap zone named"], zone),
            range_uj: Mutex::new(None),
            counter: Mutex::new(None),
        }
    }

    pub fn zone(&self) -> &str {
        self.dir.want()
    }

    pub fn location(&self) -> Option<PathBuf> {
        self.dir.location(&self.reader)
    }

    /// Forget the zone's location and range (the running total is kept: it is the device's
    /// energy, not the counter's).
    pub fn forget(&self) {
        self.dir.forget();
        *lock(&self.range_uj) = None;
    }

    /// Energy (running total, J), power (from the counter delta, W; none on the first read)
    /// and the power limit of constraint 0.
    pub async fn read(&self, _subject: &str) -> Result<SourceReport, HalError> {
        let (dir, names) = (self.dir.list(&self.reader).await).inspect_err(|_| self.forget())?;
        let has = |f: &str| names.iter().any(|n| n == f);
        let known_range = *lock(&self.range_uj);
        let mut files = vec![dir.join("energy_uj")];
        let want_range = known_range.is_none() && has("max_energy_range_uj");
        if want_range {
            files.push(dir.join("max_energy_range_uj"));
        }
        let want_limit = has("constraint_0_power_limit_uw");
        if want_limit {
            files.push(dir.join("constraint_0_power_limit_uw"));
        }
        let mut results = self
            .reader
            .read_many(files.clone())
            .await
            .into_iter()
            .zip(files);
        let at = Instant::now();
        let now = SystemTime::now();
        let mut next = |report: &mut SourceReport| -> Option<u64> {
            let (r, path) = results.next()?;
            match r.and_then(|s| parse_u64(&self.reader.path(path), &s)) {
                Ok(v) => Some(v),
                Err(e) => {
                    report.errors.push(e);
                    None
                }
            }
        };
        let mut report = SourceReport::default();
        let energy_uj = next(&mut report);
        let range = if want_range {
            let r = next(&mut report);
            *lock(&self.range_uj) = r;
            r
        } else {
            known_range
        };
        if want_limit {
            report.power_limit_watts = next(&mut report).map(|uw| uw as f64 * 1e-6);
        }
        let Some(energy_uj) = energy_uj else {
            // The counter is the measurement: without it the zone failed.
            if report
                .errors
                .iter()
                .any(|e| matches!(e, HalError::Vanished(_)))
            {
                self.forget();
            }
            let err = report.errors.first().cloned().unwrap_or_else(|| {
                HalError::Io(format!(
                    "{}: no result",
                    self.reader.path(dir.join("energy_uj")).display()
                ))
            });
            return Err(err);
        };
        let mut counter = lock(&self.counter);
        let (total_j, power) = match *counter {
            None => (energy_uj as f64 * 1e-6, None),
            Some(prev) => match energy_delta_uj(prev.last_uj, energy_uj, range) {
                Some(d) => {
                    let dj = d as f64 * 1e-6;
                    let dt = at.saturating_duration_since(prev.at).as_secs_f64();
                    (prev.total_j + dj, (dt > 0.0).then(|| dj / dt))
                }
                None => (prev.total_j, None),
            },
        };
        *counter = Some(Counter {
            last_uj: energy_uj,
            at,
            total_j,
        });
        drop(counter);
        report.readings.push(Reading::new(
            self.zone(),
            Quantity::EnergyJoules,
            total_j,
            now,
        ));
        if let Some(w) = power {
            report
                .readings
                .push(Reading::new(self.zone(), Quantity::PowerWatts, w, now));
        }
        Ok(report)
    }
}
