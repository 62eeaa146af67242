//! The last hour of each device's temperature and power, kept in memory for the status page's
//! charts (`web/`): the history database records conditions and alerts, not readings, and
//! Prometheus is not something the collector can ask.
//!
//! Small on purpose, because it is paid for every device of the fleet whether anyone looks or
//! not: per device two rings of [`POINTS`] `f32`s (about 0.5 KiB; 40 MiB at 80,000 devices),
//! one point per `chart_step`, holding the highest value reported within that step (a chart
//! of a thermal fault must show its peak, not whichever report came last). Steps with no
//! report are NaN, drawn as gaps. Fed from ingest after the fleet has applied a report, under
//! one of [`SHARDS`] mutexes so reports of different nodes rarely wait on each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use health_proto::v1 as pb;

/// Points per chart: an hour at the default one-minute step.
pub const POINTS: usize = 60;
const SHARDS: usize = 16;

/// One series: `values[i]` is step `last - (POINTS - 1 - i)`, oldest first.
#[derive(Clone)]
struct Ring {
    last: u64,
    values: [f32; POINTS],
}

impl Ring {
    fn new(step: u64) -> Ring {
        Ring {
            last: step,
            values: [f32::NAN; POINTS],
        }
    }

    fn record(&mut self, step: u64, value: f32) {
        if step.saturating_add(POINTS as u64) <= self.last {
            // The collector's clock stepped back by more than the chart: start the chart
            // again rather than drop every report until the clock catches up.
            *self = Ring::new(step);
        }
        if step > self.last {
            let shift = (step - self.last).min(POINTS as u64) as usize;
            self.values.rotate_left(shift);
            for v in &mut self.values[POINTS - shift..] {
                *v = f32::NAN;
            }
            self.last = step;
        }
        let age = self.last - step;
        let slot = &mut self.values[POINTS - 1 - age as usize];
        if slot.is_nan() || value > *slot {
            *slot = value;
        }
    }

    /// The ring as it stands at `now_step` (steps since the last report are gaps).
    fn at(&self, now_step: u64) -> [f32; POINTS] {
        let mut ring = self.clone();
        ring.record(now_step.max(self.last), f32::NAN);
        ring.values
    }
}

#[derive(Clone)]
struct DeviceTrail {
    temperature: Ring,
    power: Ring,
}

/// A device's chart: points oldest first, `None` where nothing was reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Start of the first point's step.
    pub start: SystemTime,
    pub step: Duration,
    /// The hottest sensor of each step, °C.
    pub temperature_c: Vec<Option<f32>>,
    /// The highest power reading of each step, W.
    pub power_w: Vec<Option<f32>>,
}

/// Every device's trail, by node.
pub struct ReadingTrails {
    step: Duration,
    /// Reports recorded: the page's change counter watches it, since a report that changes
    /// only readings is no fleet or alert event.
    recorded: AtomicU64,
    shards: Vec<Mutex<HashMap<String, HashMap<String, DeviceTrail>>>>,
}

impl ReadingTrails {
    pub fn new(step: Duration) -> ReadingTrails {
        ReadingTrails {
            step: step.max(Duration::from_secs(1)),
            recorded: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, node: &str) -> &Mutex<HashMap<String, HashMap<String, DeviceTrail>>> {
        // FNV-1a: stable, cheap, and good enough to spread node names over 16 mutexes.
        let mut h: u32 = 0x811c_9dc5;
        for b in node.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        &self.shards[h as usize % SHARDS]
    }

    fn step_of(&self, at: SystemTime) -> u64 {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        secs / self.step.as_secs().max(1)
    }

    /// Records one snapshot's readings at `at` (the collector's receive time: agents' clocks
    /// may disagree, and the chart is read against this collector's clock).
    pub fn record(&self, snapshot: &pb::NodeSnapshot, at: SystemTime) {
        let step = self.step_of(at);
        self.recorded.fetch_add(1, Ordering::Relaxed);
        let Ok(mut shard) = self.shard(&snapshot.node).lock() else {
            return;
        };
        let devices = shard.entry(snapshot.node.clone()).or_default();
        for device in &snapshot.devices {
            let Some(id) = device.identity.as_ref().map(|i| i.id.as_str()) else {
                continue;
            };
            let (temperature, power) = peaks(device);
            if temperature.is_none() && power.is_none() {
                continue;
            }
            let trail = devices
                .entry(id.to_string())
                .or_insert_with(|| DeviceTrail {
                    temperature: Ring::new(step),
                    power: Ring::new(step),
                });
            if let Some(t) = temperature {
                trail.temperature.record(step, t);
            }
            if let Some(p) = power {
                trail.power.record(step, p);
            }
        }
        // A device the node no longer reports keeps its trail until the node is forgotten:
        // the chart of a device that vanished is what on-call wants to see.
    }

    /// How many reports have been recorded.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }

    /// Keeps only the nodes for which `held` says yes, and only devices reported within the
    /// chart: the page's janitor passes the fleet's nodes, so a node the fleet has forgotten,
    /// or a device id a node no longer reports, loses its trail within a minute of leaving
    /// the chart (an agent whose device ids churn cannot grow this without bound).
    pub fn retain(&self, held: impl Fn(&str) -> bool, now: SystemTime) {
        let oldest = self.step_of(now).saturating_sub(POINTS as u64);
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                shard.retain(|node, devices| {
                    devices.retain(|_, t| t.temperature.last.max(t.power.last) >= oldest);
                    held(node) && !devices.is_empty()
                });
            }
        }
    }

    /// The chart of one device as of `now`, or `None` if it never reported a reading.
    pub fn chart(&self, node: &str, device: &str, now: SystemTime) -> Option<Chart> {
        let trail = self
            .shard(node)
            .lock()
            .ok()?
            .get(node)?
            .get(device)?
            .clone();
        let now_step = self.step_of(now);
        let first = now_step.saturating_sub(POINTS as u64 - 1);
        let seconds = self.step.as_secs().max(1);
        let points = |ring: &Ring| -> Vec<Option<f32>> {
            ring.at(now_step)
                .iter()
                .map(|v| (!v.is_nan()).then_some(*v))
                .collect()
        };
        Some(Chart {
            start: UNIX_EPOCH + Duration::from_secs(first * seconds),
            step: self.step,
            temperature_c: points(&trail.temperature),
            power_w: points(&trail.power),
        })
    }
}

/// The hottest temperature and the highest power a device reports, if any.
fn peaks(device: &pb::Device) -> (Option<f32>, Option<f32>) {
    let mut temperature: Option<f32> = None;
    let mut power: Option<f32> = None;
    for r in &device.readings {
        if !r.value.is_finite() {
            continue;
        }
        let v = r.value as f32;
        let slot = match r.quantity() {
            pb::Quantity::TemperatureCelsius => &mut temperature,
            pb::Quantity::PowerWatts => &mut power,
            _ => continue,
        };
        *slot = Some(slot.map_or(v, |old| old.max(v)));
    }
    (temperature, power)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(node: &str, device: &str, readings: &[(pb::Quantity, f64)]) -> pb::NodeSnapshot {
        pb::NodeSnapshot {
            node: node.into(),
            devices: vec![pb::Device {
                identity: Some(pb::DeviceIdentity {
                    id: device.into(),
                    ..Default::default()
                }),
                readings: readings
                    .iter()
                    .map(|(q, v)| pb::Reading {
                        sensor: "s".into(),
                        quantity: *q as i32,
                        value: *v,
                        observed_at: None,
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    const T: pb::Quantity = pb::Quantity::TemperatureCelsius;
    const P: pb::Quantity = pb::Quantity::PowerWatts;

    #[test]
    fn a_step_keeps_its_peak_and_missing_steps_are_gaps() {
        let trails = ReadingTrails::new(Duration::from_secs(10));
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        trails.record(
            &snapshot("n1", "d0", &[(T, 50.0), (T, 61.0), (P, 20.0)]),
            t0,
        );
        trails.record(
            &snapshot("n1", "d0", &[(T, 55.0), (P, 25.0)]),
            t0 + Duration::from_secs(5),
        );
        // Two steps later, hotter; the step between has no report.
        trails.record(
            &snapshot("n1", "d0", &[(T, 90.0)]),
            t0 + Duration::from_secs(20),
        );
        let chart = trails
            .chart("n1", "d0", t0 + Duration::from_secs(20))
            .expect("chart");
        let n = POINTS;
        assert_eq!(chart.temperature_c.len(), n);
        assert_eq!(
            chart.temperature_c[n - 3],
            Some(61.0),
            "the step's peak, not the last"
        );
        assert_eq!(chart.temperature_c[n - 2], None, "no report: a gap");
        assert_eq!(chart.temperature_c[n - 1], Some(90.0));
        assert_eq!(chart.power_w[n - 3], Some(25.0));
        assert_eq!(chart.power_w[n - 1], None);
        assert_eq!(
            chart.start,
            UNIX_EPOCH + Duration::from_secs((100_002 - (n as u64 - 1)) * 10)
        );
    }

    #[test]
    fn the_chart_moves_with_the_clock_and_old_points_fall_off() {
        let trails = ReadingTrails::new(Duration::from_secs(1));
        let t0 = UNIX_EPOCH + Duration::from_secs(5_000);
        trails.record(&snapshot("n1", "d0", &[(T, 40.0)]), t0);
        let later = trails
            .chart("n1", "d0", t0 + Duration::from_secs(10))
            .expect("chart");
        assert_eq!(later.temperature_c[POINTS - 11], Some(40.0));
        assert!(later.temperature_c[POINTS - 10..]
            .iter()
            .all(Option::is_none));
        let gone = trails
            .chart("n1", "d0", t0 + Duration::from_secs(POINTS as u64))
            .expect("chart");
        assert!(gone.temperature_c.iter().all(Option::is_none), "{gone:?}");
        // The collector's clock stepped back by more than the chart: the chart starts again.
        let back = t0 - Duration::from_secs(500);
        trails.record(&snapshot("n1", "d0", &[(T, 99.0)]), back);
        let again = trails.chart("n1", "d0", back).expect("chart");
        assert_eq!(again.temperature_c[POINTS - 1], Some(99.0));
        assert!(again.temperature_c[..POINTS - 1]
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn unknown_devices_non_finite_values_and_forgotten_nodes_have_no_chart() {
        let trails = ReadingTrails::new(Duration::from_secs(60));
        let now = SystemTime::now();
        trails.record(
            &snapshot("n1", "d0", &[(T, f64::NAN), (P, f64::INFINITY)]),
            now,
        );
        assert!(trails.chart("n1", "d0", now).is_none());
        trails.record(&snapshot("n1", "d1", &[(T, 30.0)]), now);
        assert!(trails.chart("n1", "d1", now).is_some());
        assert!(trails.chart("n2", "d1", now).is_none());
        trails.retain(|node| node != "n1", now);
        assert!(trails.chart("n1", "d1", now).is_none());
        // A device not reported within the chart's span is dropped.
        trails.record(&snapshot("n2", "old", &[(T, 30.0)]), now);
        let later = now + Duration::from_secs(2 * 3600);
        trails.record(&snapshot("n2", "new", &[(T, 30.0)]), later);
        trails.retain(|_| true, later);
        assert!(trails.chart("n2", "old", later).is_none());
        assert!(trails.chart("n2", "new", later).is_some());
        assert_eq!(trails.recorded(), 4);
    }
}
