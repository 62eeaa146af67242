//! The simulated backend: one [`SimDevice`] per device, for all four kinds, with plausible
//! physics (see [`profile`] and [`thermal`]) and faults injected at runtime.
//!
//! State evolves lazily: every call integrates the model from the last call to now, so an idle
//! simulator costs nothing. Time is `tokio::time::Instant`, so tests can pause and advance it.
//! Faults live in a [`SimFaults`] handle shared with the agent, so a fault can be injected or
//! cleared while the device itself is hung in a call.

pub mod crossbar;
pub mod profile;
pub mod thermal;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::deadline::MinDeadlines;
use crate::device::{ArrayWeights, Device, FaultInjector, HalError};
use crate::model::{
    CalibrationRecord, Capability, DeviceIdentity, DeviceKind, FaultKind, Quantity, Reading,
    ResetKind, Sample,
};
use profile::Profile;

/// Options a config may set for a simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Probability that a reset fails on its own (without the failing-reset fault).
    pub reset_failure_probability: f64,
    /// Seed for the noise generator; `None` seeds from the device id, so runs repeat.
    pub seed: Option<u64>,
}

impl SimOptions {
    /// The simulator waits on nothing (a `hang` fault waits forever, which no deadline covers).
    pub fn min_deadlines(&self) -> MinDeadlines {
        MinDeadlines::NONE
    }
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            reset_failure_probability: 0.0,
            seed: None,
        }
    }
}

/// Runtime faults of one simulated device.
#[derive(Debug, Default)]
pub struct SimFaults {
    active: Mutex<BTreeSet<FaultOrd>>,
}

/// `FaultKind` ordered for a stable display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FaultOrd(u8);

const FAULTS: [FaultKind; 5] = [
    FaultKind::Overheat,
    FaultKind::Hang,
    FaultKind::Drift,
    FaultKind::FailingReset,
    FaultKind::Vanish,
];

impl SimFaults {
    fn lock(&self) -> MutexGuard<'_, BTreeSet<FaultOrd>> {
        // A poisoned lock only means another call panicked mid-update of a plain set: the set
        // is still valid, so keep going rather than spread the panic.
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn has(&self, f: FaultKind) -> bool {
        FAULTS
            .iter()
            .position(|x| *x == f)
            .is_some_and(|i| self.lock().contains(&FaultOrd(i as u8)))
    }
    fn clear(&self, f: FaultKind) {
        if let Some(i) = FAULTS.iter().position(|x| *x == f) {
            self.lock().remove(&FaultOrd(i as u8));
        }
    }
}

impl FaultInjector for SimFaults {
    fn inject(&self, fault: FaultKind) {
        if fault == FaultKind::Clear {
            self.lock().clear();
        } else if let Some(i) = FAULTS.iter().position(|x| *x == fault) {
            self.lock().insert(FaultOrd(i as u8));
        }
    }
    fn active(&self) -> Vec<FaultKind> {
        self.lock().iter().map(|f| FAULTS[f.0 as usize]).collect()
    }
}

/// Rows (and columns) of the simulated crossbar array.
pub const CROSSBAR_SIZE: usize = 32;

#[derive(Debug)]
struct Physics {
    last: Instant,
    temperature_c: f64,
    power_w: f64,
    energy_j: f64,
    /// Phase error (radians) or conductance drift (ratio), depending on the kind.
    drift: f64,
    enabled: bool,
    powered: bool,
    busy: bool,
    power_limit_w: Option<f64>,
    calibration: Option<CalibrationRecord>,
    /// The analog array of a crossbar device.
    array: Option<crossbar::CrossbarArray>,
    rng: SmallRng,
}

pub struct SimDevice {
    identity: DeviceIdentity,
    profile: Profile,
    options: SimOptions,
    faults: Arc<SimFaults>,
    physics: Mutex<Physics>,
}

impl SimDevice {
    pub fn new(id: &str, kind: DeviceKind, options: SimOptions) -> SimDevice {
        let profile = profile::profile(kind);
        let seed = options.seed.unwrap_or_else(|| {
            id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
            })
        });
        let start_temp = profile.tec_setpoint_c.unwrap_or(profile.reference_c);
        let mut rng = SmallRng::seed_from_u64(seed);
        let array = (kind == DeviceKind::AnalogCrossbar)
            .then(|| crossbar::CrossbarArray::laplacian(CROSSBAR_SIZE, &mut rng));
        // Start warm, as a device that was already running (and was calibrated at its working
        // temperature) when the agent started.
        let warm = profile.thermal.steady(start_temp, profile.busy_power_w);
        let physics = Physics {
            last: Instant::now(),
            temperature_c: warm,
            power_w: profile.busy_power_w,
            energy_j: 0.0,
            drift: profile.drift_floor,
            enabled: true,
            powered: true,
            busy: false,
            power_limit_w: profile.default_power_limit_w,
            calibration: profile.drift_per_s.map(|_| CalibrationRecord {
                calibrated_at: SystemTime::now(),
                temperature_celsius: warm,
            }),
            array,
            rng,
        };
        SimDevice {
            identity: DeviceIdentity {
                id: id.to_string(),
                kind,
                vendor: profile.vendor.to_string(),
                model: profile.model.to_string(),
                serial: format!("SIM-{:08X}", seed as u32),
                firmware: profile.firmware.to_string(),
                backend: "sim".to_string(),
                location: format!("sim://{id}"),
            },
            profile,
            options,
            faults: Arc::new(SimFaults::default()),
            physics: Mutex::new(physics),
        }
    }

    pub fn faults(&self) -> Arc<SimFaults> {
        self.faults.clone()
    }

    fn physics(&self) -> MutexGuard<'_, Physics> {
        self.physics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Integrate the model from the last update to now.
    fn advance(&self, p: &mut Physics) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(p.last).as_secs_f64();
        p.last = now;
        if dt <= 0.0 {
            return;
        }
        let prof = &self.profile;
        let workload = if !p.powered {
            0.0
        } else if p.enabled && !p.busy {
            prof.busy_power_w * (1.0 + 0.03 * (p.rng.random::<f64>() - 0.5))
        } else {
            prof.idle_power_w
        };
        p.power_w = match p.power_limit_w {
            Some(limit) => workload.min(limit),
            None => workload,
        };
        p.energy_j += p.power_w * dt;

        let mut model = prof.thermal;
        let mut reference = prof.tec_setpoint_c.unwrap_or(prof.reference_c);
        if self.faults.has(FaultKind::Overheat) {
            // Cooling has failed: the device heats toward a much higher steady state, quickly
            // (the numbers, and why, are in the profile).
            model = prof.overheat.thermal;
            reference += prof.overheat.reference_rise_c;
        }
        if !p.powered {
            reference = prof.reference_c;
        }
        p.temperature_c = model.step(p.temperature_c, reference, p.power_w, dt);

        if let Some(rate) = prof.drift_per_s {
            // Drift roughly doubles per 10 K (an Arrhenius-like rise), and grows with the
            // distance from the temperature the device was calibrated at.
            let cal_t = p
                .calibration
                .map_or(prof.reference_c, |c| c.temperature_celsius);
            let thermal = 2f64.powf((p.temperature_c - 25.0) / 10.0)
                * (1.0 + 0.5 * (p.temperature_c - cal_t).abs());
            let fault = if self.faults.has(FaultKind::Drift) {
                500.0
            } else {
                1.0
            };
            p.drift += rate * thermal * fault * dt;
        }
    }

    fn noise(p: &mut Physics, scale: f64) -> f64 {
        scale * (p.rng.random::<f64>() - 0.5)
    }

    /// Fails fast if the device has vanished; never returns if it hangs (for in-band calls).
    async fn gate(&self, in_band: bool) -> Result<(), HalError> {
        if self.faults.has(FaultKind::Vanish) {
            return Err(HalError::Vanished(format!(
                "{} no longer answers",
                self.identity.location
            )));
        }
        if in_band && self.faults.has(FaultKind::Hang) {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    fn require(&self, cap: Capability) -> Result<(), HalError> {
        if self.profile.capabilities.contains(&cap) {
            Ok(())
        } else {
            Err(HalError::Unsupported(format!(
                "{:?} on a {}",
                cap, self.identity.kind
            )))
        }
    }

    fn sample(&self, p: &mut Physics, now: SystemTime) -> Sample {
        let t = p.temperature_c + Self::noise(p, 0.1);
        let r = |s: &str, q, v| Reading::new(s, q, v, now);
        let mut readings = Vec::with_capacity(12);
        match self.identity.kind {
            DeviceKind::Loihi2 => {
                let board = self.profile.reference_c + 0.6 * (t - self.profile.reference_c);
                readings.push(r("chip", Quantity::TemperatureCelsius, t));
                readings.push(r("board", Quantity::TemperatureCelsius, board));
                readings.push(r("board", Quantity::PowerWatts, p.power_w));
                readings.push(r("board", Quantity::EnergyJoules, p.energy_j));
            }
            DeviceKind::Spinnaker => {
                let on = if p.powered { 1.0 } else { 0.0 };
                readings.push(r("board_top", Quantity::TemperatureCelsius, t));
                readings.push(r("board_bottom", Quantity::TemperatureCelsius, t - 4.0));
                readings.push(r(
                    "external_0",
                    Quantity::TemperatureCelsius,
                    self.profile.reference_c + 2.0,
                ));
                for (name, v) in [
                    ("rail_1v2_a", 1.2),
                    ("rail_1v2_b", 1.2),
                    ("rail_1v2_c", 1.2),
                    ("rail_1v8", 1.8),
                    ("rail_3v3", 3.3),
                    ("rail_12v", 12.0),
                ] {
                    let n = Self::noise(p, v * 0.01);
                    readings.push(r(name, Quantity::VoltageVolts, on * (v + n)));
                }
                // The fan controller speeds up with temperature.
                let fan = on * (2000.0 + 60.0 * (t - 25.0).max(0.0));
                readings.push(r("fan_0", Quantity::FanRpm, fan.round()));
                readings.push(r("board", Quantity::PowerWatts, p.power_w));
                readings.push(r("board", Quantity::EnergyJoules, p.energy_j));
            }
            DeviceKind::Photonic => {
                let setpoint = self.profile.tec_setpoint_c.unwrap_or(25.0);
                readings.push(r("tec", Quantity::TemperatureCelsius, t));
                readings.push(r("tec", Quantity::SetpointCelsius, setpoint));
                readings.push(r("heater", Quantity::PowerWatts, p.power_w));
                // Optical throughput falls as the interferometers drift off their phase.
                let optical = 1.0e-3 * p.drift.cos().powi(2) * if p.enabled { 1.0 } else { 0.0 };
                readings.push(r("output", Quantity::OpticalPowerWatts, optical));
                readings.push(r("mesh", Quantity::PhaseErrorRadians, p.drift));
            }
            DeviceKind::AnalogCrossbar => {
                let read_noise = p.array.as_ref().map_or(0.002, |a| a.read_sigma);
                readings.push(r("die", Quantity::TemperatureCelsius, t));
                readings.push(r("card", Quantity::PowerWatts, p.power_w));
                readings.push(r("card", Quantity::EnergyJoules, p.energy_j));
                readings.push(r("array", Quantity::ConductanceDriftRatio, p.drift));
                readings.push(r("array", Quantity::StuckCellsRatio, 0.0012));
                let bits = (-(p.drift + read_noise).log2()).min(8.0);
                readings.push(r("array", Quantity::EffectiveBits, bits));
            }
        }
        if let Some(cal) = p.calibration {
            let age = now
                .duration_since(cal.calibrated_at)
                .unwrap_or_default()
                .as_secs_f64();
            readings.push(r("calibration", Quantity::CalibrationAgeSeconds, age));
        }
        Sample {
            readings,
            calibration: p.calibration,
            power_limit_watts: p.power_limit_w,
            powered: p.powered,
            conditions: Vec::new(),
        }
    }

    fn set_busy(&self) {
        let mut p = self.physics();
        self.advance(&mut p);
        p.busy = true;
    }
}

#[async_trait]
impl Device for SimDevice {
    fn identity(&self) -> DeviceIdentity {
        self.identity.clone()
    }

    fn capabilities(&self) -> Vec<Capability> {
        self.profile.capabilities.to_vec()
    }

    async fn read(&self) -> Result<Sample, HalError> {
        self.gate(true).await?;
        let mut p = self.physics();
        self.advance(&mut p);
        Ok(self.sample(&mut p, SystemTime::now()))
    }

    async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        self.require(kind.capability())?;
        // A hard reset or power cycle is out of band (PCI remove/rescan, BMP power): it reaches
        // a hung device and clears the hang.
        self.gate(kind == ResetKind::Soft).await?;
        let duration = match kind {
            ResetKind::Soft => self.profile.soft_reset,
            ResetKind::Hard => self.profile.hard_reset,
            ResetKind::PowerCycle => self.profile.power_cycle,
        };
        self.set_busy();
        if kind == ResetKind::PowerCycle {
            let mut p = self.physics();
            self.advance(&mut p);
            p.powered = false;
        }
        // Resume normal work however this call ends, including when the caller gives up on it.
        let _resume = ResumeOnDrop(self);
        tokio::time::sleep(duration).await;
        let failed = {
            let mut p = self.physics();
            self.advance(&mut p);
            p.powered = true;
            let roll: f64 = p.rng.random();
            self.faults.has(FaultKind::FailingReset)
                || roll < self.options.reset_failure_probability
        };
        if failed {
            return Err(HalError::Failed(format!(
                "{} reset: device did not come back within {} ms",
                kind.as_str(),
                duration.as_millis()
            )));
        }
        if kind != ResetKind::Soft {
            self.faults.clear(FaultKind::Hang);
        }
        Ok(())
    }

    async fn calibrate(&self) -> Result<CalibrationRecord, HalError> {
        self.require(Capability::Calibrate)?;
        self.gate(true).await?;
        self.set_busy();
        let _resume = ResumeOnDrop(self);
        // Settle, measure the reference, reprogram: the device idles meanwhile.
        tokio::time::sleep(self.profile.calibration).await;
        let mut p = self.physics();
        self.advance(&mut p);
        let record = CalibrationRecord {
            calibrated_at: SystemTime::now(),
            temperature_celsius: p.temperature_c,
        };
        p.calibration = Some(record);
        // A crossbar is calibrated by measuring its conductance error with known inputs and
        // reprogramming every cell; other kinds re-zero their reference.
        let floor = self.profile.drift_floor;
        let Physics {
            array, rng, drift, ..
        } = &mut *p;
        *drift = floor;
        if let Some(a) = array {
            a.program(rng);
            // Verify the reprogrammed array with the same known inputs: a cell that will not
            // take its value shows here, and the calibration fails instead of claiming success.
            let after = a.measured_error(*drift, rng);
            let limit = 4.0 * (a.program_sigma + a.read_sigma);
            if after > limit {
                return Err(HalError::Failed(format!(
                    "conductance error {:.2} % after reprogramming exceeds {:.2} %",
                    after * 100.0,
                    limit * 100.0
                )));
            }
        }
        Ok(record)
    }

    async fn matvec(&self, input: &[f64]) -> Result<Vec<f64>, HalError> {
        self.require(Capability::Matvec)?;
        self.gate(true).await?;
        let mut p = self.physics();
        self.advance(&mut p);
        let Physics {
            array,
            rng,
            drift,
            enabled,
            ..
        } = &mut *p;
        let Some(a) = array else {
            return Err(HalError::Unsupported(
                "matvec on a device without an array".into(),
            ));
        };
        if input.len() != a.n {
            return Err(HalError::InvalidArgument(format!(
                "matvec input has {} entries, the array has {} columns",
                input.len(),
                a.n
            )));
        }
        if let Some(bad) = input.iter().position(|v| !v.is_finite()) {
            return Err(HalError::InvalidArgument(format!(
                "matvec input[{bad}] is not finite"
            )));
        }
        if !*enabled {
            return Err(HalError::Failed("the array is disabled".into()));
        }
        Ok(a.matvec(input, *drift, rng))
    }

    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        self.require(Capability::SetPowerLimit)?;
        self.gate(true).await?;
        let max = self.profile.max_power_limit_w.unwrap_or(f64::INFINITY);
        let min = self.profile.idle_power_w;
        if !watts.is_finite() || watts < min || watts > max {
            return Err(HalError::InvalidArgument(format!(
                "power limit {watts} W outside [{min}, {max}] W for {}",
                self.identity.model
            )));
        }
        let mut p = self.physics();
        self.advance(&mut p);
        p.power_limit_w = Some(watts);
        Ok(())
    }

    async fn set_enabled(&self, enabled: bool) -> Result<(), HalError> {
        self.require(Capability::EnableDisable)?;
        // Out of band, like a hard reset: a board is switched off at its power controller or
        // its driver, not by asking its (possibly hung) firmware, so quarantine works on a
        // hung device.
        self.gate(false).await?;
        let mut p = self.physics();
        self.advance(&mut p);
        p.enabled = enabled;
        Ok(())
    }

    fn programmed_weights(&self) -> Option<ArrayWeights> {
        self.physics().array.as_ref().map(|a| ArrayWeights {
            n: a.n,
            values: a.target().to_vec(),
        })
    }

    fn fault_injector(&self) -> Option<Arc<dyn FaultInjector>> {
        Some(self.faults.clone())
    }
}

struct ResumeOnDrop<'a>(&'a SimDevice);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        let mut p = self.0.physics();
        self.0.advance(&mut p);
        p.busy = false;
        // A power cycle that was interrupted still ends with power on: the off/on sequence
        // was already handed to the power controller.
        p.powered = true;
    }
}

#[cfg(test)]
mod tests;
