//! [`PhotonicBench`]: a photonic chip on a temperature-controlled bench, as one [`Device`] of
//! kind [`DeviceKind::Photonic`], built from up to three SCPI instruments: a TEC controller
//! (required: temperature, setpoint, TEC electrics, identity), an optical power meter (light
//! through the chip, hence the phase error estimate) and a tunable laser (the light source,
//! hence enable/disable). With the TEC module's rated voltage configured
//! (`tec_max_voltage_v`) the bench also has a power limit, set through the TEC controller's
//! current limit ([`super::power_limit`]).
//!
//! Phase error: the chip's Mach-Zehnder mesh transmits P = P_ref * cos^2(phi), where P_ref is
//! what the meter read right after calibration (phi = 0 by definition then). So between
//! calibrations phi = acos(sqrt(P / P_ref)), with P_ref scaled by the laser's power now over
//! its power at calibration when a laser is configured, so that turning the laser down is not
//! mistaken for drift. A power meter gives |phi| only, and only up to pi/2; that is what an
//! operator needs to decide on a recalibration.
//!
//! The optical reference lives in memory: after an agent restart the bench reports itself
//! never calibrated (CALIBRATION_STALE) until the next calibration, rather than trusting a
//! reference it cannot check.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::Instant;

use super::client::ScpiClient;
use super::config::ScpiBenchConfig;
use super::power_limit;
use super::wire::Identity;
use crate::device::{Device, FaultInjector, HalError};
use crate::model::{
    CalibrationRecord, Capability, Condition, ConditionCode, DeviceIdentity, DeviceKind, Quantity,
    Reading, ResetKind, Sample, Severity,
};

/// Power meter reads averaged into the calibration reference: the meter's noise would
/// otherwise show up as phase error on every later read.
const REFERENCE_READS: usize = 8;
/// Less light than this at the meter is no reference (the laser is off, or the fibre is out).
const MIN_REFERENCE_W: f64 = 1.0e-9;

/// What the meter read when the phase error was zero, and the laser power it read it at.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OpticalReference {
    meter_w: f64,
    laser_w: Option<f64>,
}

#[derive(Debug, Default)]
struct BenchState {
    identity: Option<Identity>,
    /// Identity read and self-test run since the last reset.
    contacted: bool,
    self_test_failure: Option<String>,
    reference: Option<OpticalReference>,
    calibration: Option<CalibrationRecord>,
    /// The current limits the TEC controller accepts: not asked yet (`None`), or its answer
    /// (`Some(None)`: it cannot say). Asked again after a reset, like the identity.
    current_limit_range: Option<Option<(f64, f64)>>,
}

pub struct PhotonicBench {
    id: String,
    config: ScpiBenchConfig,
    tec: ScpiClient,
    meter: Option<ScpiClient>,
    laser: Option<ScpiClient>,
    faults: Option<Arc<dyn FaultInjector>>,
    state: Mutex<BenchState>,
}

/// What the laser reports: output on, and its power setting (W).
#[derive(Debug, Clone, Copy)]
struct LaserState {
    on: bool,
    power_w: f64,
}

impl PhotonicBench {
    /// A bench for device `id`. Validates the config (an error names the key); connects on
    /// first use.
    pub fn new(id: impl Into<String>, config: ScpiBenchConfig) -> Result<PhotonicBench, HalError> {
        let invalid = |(k, m): (String, String)| HalError::InvalidArgument(format!("{k}: {m}"));
        config.validate().map_err(invalid)?;
        let timeout = config.timeout();
        let client = |a: String| ScpiClient::new(a, timeout);
        Ok(PhotonicBench {
            id: id.into(),
            tec: client(config.tec_address().map_err(invalid)?),
            meter: config.power_meter_address().map_err(invalid)?.map(client),
            laser: config.laser_address().map_err(invalid)?.map(client),
            config,
            faults: None,
            state: Mutex::new(BenchState::default()),
        })
    }

    /// Attaches a fault handle (the simulator's), making FaultInjection a capability.
    pub fn with_fault_injector(mut self, faults: Arc<dyn FaultInjector>) -> PhotonicBench {
        self.faults = Some(faults);
        self
    }

    pub fn config(&self) -> &ScpiBenchConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, BenchState> {
        // The state is plain data updated in one step; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First contact (and again after a reset): the TEC's identity and self-test, and the
    /// meter's wavelength correction.
    async fn ensure_contact(&self) -> Result<(), HalError> {
        if self.state().contacted {
            return Ok(());
        }
        let idn = self.tec.query_idn().await?;
        let tst = self.tec.query_integer("*TST?").await?;
        if let (Some(meter), Some(nm)) = (&self.meter, self.config.wavelength_nm) {
            meter.write(&format!("SENS:CORR:WAV {nm}")).await?;
        }
        let mut s = self.state();
        s.identity = Some(idn);
        s.self_test_failure = (tst != 0).then(|| {
            format!(
                "TEC controller {} failed its self-test: *TST? returned {tst}",
                self.tec.address()
            )
        });
        s.contacted = true;
        Ok(())
    }

    async fn laser_state(&self) -> Result<Option<LaserState>, HalError> {
        let Some(laser) = &self.laser else {
            return Ok(None);
        };
        Ok(Some(LaserState {
            on: laser.query_bool("SOUR0:POW:STAT?").await?,
            power_w: laser.query_number("SOUR0:POW?").await?,
        }))
    }

    /// Waits until the TEC holds its setpoint within the tolerance for the settle window.
    /// Returns the last temperature read.
    async fn settle(&self) -> Result<f64, HalError> {
        let setpoint = self.tec.query_number("TEC:SET:T?").await?;
        let tolerance = self.config.settle_tolerance_celsius;
        let window = self.config.settle_window();
        let timeout = self.config.settle_timeout();
        let poll = (window / 10).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let start = Instant::now();
        let mut in_tolerance_since: Option<Instant> = None;
        loop {
            let t = self.tec.query_number("TEC:T?").await?;
            let now = Instant::now();
            if (t - setpoint).abs() <= tolerance {
                let since = *in_tolerance_since.get_or_insert(now);
                if now.duration_since(since) >= window {
                    return Ok(t);
                }
            } else {
                in_tolerance_since = None;
            }
            if now.duration_since(start) >= timeout {
                return Err(HalError::Failed(format!(
                    "calibration: TEC did not settle within {} ms: last {t:.3} degC, setpoint \
                     {setpoint:.3} degC, tolerance {tolerance} degC held for {} ms",
                    timeout.as_millis(),
                    window.as_millis()
                )));
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The optical reference: the meter's average over [`REFERENCE_READS`] reads.
    async fn measure_reference(&self) -> Result<Option<OpticalReference>, HalError> {
        let Some(meter) = &self.meter else {
            return Ok(None);
        };
        let laser = self.laser_state().await?;
        if laser.is_some_and(|l| !l.on) {
            return Err(HalError::Failed(
                "calibration: the laser output is off; the optical reference needs light"
                    .to_string(),
            ));
        }
        let mut sum = 0.0;
        for _ in 0..REFERENCE_READS {
            sum += meter.query_number("MEAS:POW?").await?;
        }
        let mean = sum / REFERENCE_READS as f64;
        if mean.is_nan() || mean <= MIN_REFERENCE_W {
            return Err(HalError::Failed(format!(
                "calibration: {mean:.3e} W at the power meter is too little light for a \
                 reference (need more than {MIN_REFERENCE_W:.0e} W)"
            )));
        }
        Ok(Some(OpticalReference {
            meter_w: mean,
            laser_w: laser.map(|l| l.power_w),
        }))
    }

    async fn soft_reset(&self) -> Result<(), HalError> {
        // What is in force now, to re-apply after *RST puts every instrument to its defaults.
        let setpoint = self.tec.query_number("TEC:SET:T?").await?;
        let output = self.tec.query_bool("TEC:OUT?").await?;
        // The current limit protects the TEC module (and is the bench's power limit): *RST
        // puts the controller's default back, which may be more than the module takes.
        let current_limit = power_limit::current_limit(&self.tec).await?;
        let meter_nm = match &self.meter {
            Some(m) => Some(m.query_number("SENS:CORR:WAV?").await?),
            None => None,
        };
        let laser = match &self.laser {
            Some(l) => Some((
                l.query_number("SOUR0:WAV?").await?,
                l.query_number("SOUR0:POW?").await?,
                l.query_bool("SOUR0:POW:STAT?").await?,
            )),
            None => None,
        };
        // Whatever happens next, identify and self-test again on the next read.
        {
            let mut s = self.state();
            s.contacted = false;
            s.current_limit_range = None;
        }

        for client in [Some(&self.tec), self.meter.as_ref(), self.laser.as_ref()]
            .into_iter()
            .flatten()
        {
            client.write("*RST").await?;
            // *OPC? answers once the reset has finished.
            client.query("*OPC?").await?;
        }

        self.tec
            .write(&format!("TEC:LIM:ITE {current_limit:.4}"))
            .await?;
        self.tec.write(&format!("TEC:T {setpoint}")).await?;
        self.tec
            .write(&format!("TEC:OUT {}", u8::from(output)))
            .await?;
        if let (Some(m), Some(nm)) = (&self.meter, meter_nm) {
            m.write(&format!("SENS:CORR:WAV {nm}")).await?;
        }
        if let (Some(l), Some((wav_m, power_w, on))) = (&self.laser, laser) {
            l.write(&format!("SOUR0:WAV {:.6}NM", wav_m * 1e9)).await?;
            l.write(&format!("SOUR0:POW {:.6}MW", power_w * 1e3))
                .await?;
            l.write(&format!("SOUR0:POW:STAT {}", u8::from(on))).await?;
        }

        // Read back: an instrument may accept a command and not act on it.
        let mut wrong = Vec::new();
        let now_set = self.tec.query_number("TEC:SET:T?").await?;
        if (now_set - setpoint).abs() > 1e-3 {
            wrong.push(format!(
                "TEC setpoint {now_set} degC, expected {setpoint} degC"
            ));
        }
        let now_limit = power_limit::current_limit(&self.tec).await?;
        if !close(now_limit, current_limit, 1e-3) {
            wrong.push(format!(
                "TEC current limit {now_limit} A, expected {current_limit} A"
            ));
        }
        let now_out = self.tec.query_bool("TEC:OUT?").await?;
        if now_out != output {
            wrong.push(format!(
                "TEC output {}, expected {}",
                on_off(now_out),
                on_off(output)
            ));
        }
        if let (Some(m), Some(nm)) = (&self.meter, meter_nm) {
            let now_nm = m.query_number("SENS:CORR:WAV?").await?;
            if !close(now_nm, nm, 1e-6) {
                wrong.push(format!("meter wavelength {now_nm} nm, expected {nm} nm"));
            }
        }
        if let (Some(l), Some((wav_m, power_w, on))) = (&self.laser, laser) {
            let now_wav = l.query_number("SOUR0:WAV?").await?;
            let now_power = l.query_number("SOUR0:POW?").await?;
            let now_on = l.query_bool("SOUR0:POW:STAT?").await?;
            if !close(now_wav, wav_m, 1e-6) {
                wrong.push(format!("laser wavelength {now_wav} m, expected {wav_m} m"));
            }
            if !close(now_power, power_w, 1e-4) {
                wrong.push(format!("laser power {now_power} W, expected {power_w} W"));
            }
            if now_on != on {
                wrong.push(format!(
                    "laser output {}, expected {}",
                    on_off(now_on),
                    on_off(on)
                ));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(HalError::Failed(format!(
                "soft reset: state not restored after *RST: {}",
                wrong.join("; ")
            )))
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
}

/// |phase error| of the mesh from the light at the meter, or `None` when it cannot be told:
/// no reference yet, no meter, or the laser off.
fn estimate_phase(
    meter_w: Option<f64>,
    reference: Option<OpticalReference>,
    laser: Option<LaserState>,
) -> Option<f64> {
    let (p, reference) = (meter_w?, reference?);
    let mut p_ref = reference.meter_w;
    if let Some(laser) = laser {
        if !laser.on {
            return None;
        }
        if let Some(at_cal) = reference.laser_w {
            if at_cal > 0.0 && laser.power_w > 0.0 {
                p_ref *= laser.power_w / at_cal;
            }
        }
    }
    if p_ref.is_nan() || p_ref <= 0.0 {
        return None;
    }
    let ratio = (p / p_ref).clamp(0.0, 1.0);
    Some(ratio.sqrt().acos())
}

#[async_trait]
impl Device for PhotonicBench {
    fn identity(&self) -> DeviceIdentity {
        let s = self.state();
        let (vendor, model, serial, firmware) = match &s.identity {
            Some(i) => (
                i.maker.clone(),
                i.model.clone(),
                i.serial.clone(),
                i.firmware.clone(),
            ),
            // Before first contact the address is all that is known.
            None => (
                String::new(),
                "SCPI photonic bench (not contacted yet)".to_string(),
                String::new(),
                String::new(),
            ),
        };
        DeviceIdentity {
            id: self.id.clone(),
            kind: DeviceKind::Photonic,
            vendor,
            model,
            serial,
            firmware,
            backend: "scpi".to_string(),
            location: self.tec.address().to_string(),
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        let mut caps = vec![Capability::ResetSoft, Capability::Calibrate];
        if self.config.tec_max_voltage_v.is_some() {
            caps.push(Capability::SetPowerLimit);
        }
        if self.laser.is_some() {
            caps.push(Capability::EnableDisable);
        }
        if self.faults.is_some() {
            caps.push(Capability::FaultInjection);
        }
        caps
    }

    async fn read(&self) -> Result<Sample, HalError> {
        self.ensure_contact().await?;
        let t = self.tec.query_number("TEC:T?").await?;
        let setpoint = self.tec.query_number("TEC:SET:T?").await?;
        let current = self.tec.query_number("TEC:ITE?").await?;
        let voltage = self.tec.query_number("TEC:V?").await?;
        let output = self.tec.query_bool("TEC:OUT?").await?;
        let power_limit_watts = match self.config.tec_max_voltage_v {
            Some(v_max) => Some(power_limit::current_limit(&self.tec).await? * v_max),
            None => None,
        };
        let optical = match &self.meter {
            Some(m) => Some(m.query_number("MEAS:POW?").await?),
            None => None,
        };
        let laser = self.laser_state().await?;

        let now = SystemTime::now();
        let r = |sensor: &str, q, v| Reading::new(sensor, q, v, now);
        let mut readings = vec![
            r("tec", Quantity::TemperatureCelsius, t),
            r("tec", Quantity::SetpointCelsius, setpoint),
            r("tec", Quantity::CurrentAmperes, current),
            r("tec", Quantity::VoltageVolts, voltage),
            // Electrical power into the TEC: what the bench spends holding the temperature.
            r("tec", Quantity::PowerWatts, (current * voltage).abs()),
        ];
        if let Some(p) = optical {
            readings.push(r("output", Quantity::OpticalPowerWatts, p));
        }
        if let Some(l) = laser {
            let emitted = if l.on { l.power_w } else { 0.0 };
            readings.push(r("laser", Quantity::OpticalPowerWatts, emitted));
        }

        let s = self.state();
        if let Some(phase) = estimate_phase(optical, s.reference, laser) {
            readings.push(r("mesh", Quantity::PhaseErrorRadians, phase));
        }
        if let Some(cal) = s.calibration {
            let age = now.duration_since(cal.calibrated_at).unwrap_or_default();
            readings.push(r(
                "calibration",
                Quantity::CalibrationAgeSeconds,
                age.as_secs_f64(),
            ));
        }
        let mut conditions = Vec::new();
        if let Some(m) = &s.self_test_failure {
            // A controller that fails its own self-test cannot be trusted to hold the chip's
            // temperature, nor its readings to show that it does not.
            conditions.push(Condition::new(
                ConditionCode::DeviceError,
                Severity::Critical,
                &self.id,
                m,
                now,
            ));
        }
        if !output {
            // The chip itself is still powered (it does not run off the TEC), so `powered`
            // stays true; what is lost is temperature regulation, a thermal condition.
            conditions.push(Condition::new(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                &self.id,
                format!(
                    "TEC output off: temperature not regulated ({t:.2} degC, setpoint \
                     {setpoint:.2} degC)"
                ),
                now,
            ));
        }
        Ok(Sample {
            readings,
            calibration: s.calibration,
            power_limit_watts,
            powered: true,
            conditions,
        })
    }

    async fn reset(&self, kind: ResetKind) -> Result<(), HalError> {
        match kind {
            ResetKind::Soft => self.soft_reset().await,
            other => Err(HalError::Unsupported(format!(
                "{} reset of an SCPI bench: only a soft reset (*RST, then re-apply) reaches it",
                other.as_str()
            ))),
        }
    }

    /// Thermal recalibration: TEC on, wait until it holds the setpoint, then take the optical
    /// reference. Nothing is stored unless every step succeeded.
    async fn calibrate(&self) -> Result<CalibrationRecord, HalError> {
        self.ensure_contact().await?;
        if !self.tec.query_bool("TEC:OUT?").await? {
            self.tec.write("TEC:OUT 1").await?;
        }
        let temperature = self.settle().await?;
        let reference = self.measure_reference().await?;
        let record = CalibrationRecord {
            calibrated_at: SystemTime::now(),
            temperature_celsius: temperature,
        };
        let mut s = self.state();
        s.reference = reference;
        s.calibration = Some(record);
        Ok(record)
    }

    /// The TEC current limit that bounds the TEC's power to `watts` (see
    /// [`super::power_limit`]), within what the controller accepts, read back.
    async fn set_power_limit(&self, watts: f64) -> Result<(), HalError> {
        let Some(v_max) = self.config.tec_max_voltage_v else {
            return Err(HalError::Unsupported(format!(
                "power limit {watts} W: the bench's power limit is its TEC current limit times                  the TEC module's rated voltage, and tec_max_voltage_v is not configured"
            )));
        };
        self.ensure_contact().await?;
        let known = self.state().current_limit_range;
        let range = match known {
            Some(r) => r,
            None => {
                let r = power_limit::accepted_range(&self.tec).await?;
                self.state().current_limit_range = Some(r);
                r
            }
        };
        power_limit::apply(&self.tec, watts, v_max, range).await
    }

    /// Laser output on or off: with the light off the chip computes nothing.
    async fn set_enabled(&self, enabled: bool) -> Result<(), HalError> {
        let Some(laser) = &self.laser else {
            return Err(HalError::Unsupported(
                "enable/disable switches the laser, and no laser is configured".to_string(),
            ));
        };
        laser
            .write(&format!("SOUR0:POW:STAT {}", u8::from(enabled)))
            .await?;
        let now = laser.query_bool("SOUR0:POW:STAT?").await?;
        if now != enabled {
            return Err(HalError::Failed(format!(
                "laser output still {} after switching it {}",
                on_off(now),
                on_off(enabled)
            )));
        }
        Ok(())
    }

    fn fault_injector(&self) -> Option<Arc<dyn FaultInjector>> {
        self.faults.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_from_power_against_the_reference() {
        let reference = Some(OpticalReference {
            meter_w: 1e-3,
            laser_w: Some(2e-3),
        });
        let on = |w| {
            Some(LaserState {
                on: true,
                power_w: w,
            })
        };
        let phi = 0.3f64;
        let p = 1e-3 * phi.cos().powi(2);
        let est = estimate_phase(Some(p), reference, on(2e-3)).unwrap();
        assert!((est - phi).abs() < 1e-9, "{est}");
        // Half the laser power, half the light: no phase error.
        let est = estimate_phase(Some(0.5e-3), reference, on(1e-3)).unwrap();
        assert!(est.abs() < 1e-9, "{est}");
        // More light than the reference (noise) clamps to zero; none gives pi/2.
        assert_eq!(estimate_phase(Some(2e-3), reference, on(2e-3)), Some(0.0));
        let est = estimate_phase(Some(-1e-12), reference, on(2e-3)).unwrap();
        assert!((est - std::f64::consts::FRAC_PI_2).abs() < 1e-12);
        // No estimate without a reference, a meter reading, or light.
        assert_eq!(estimate_phase(Some(p), None, on(2e-3)), None);
        assert_eq!(estimate_phase(None, reference, on(2e-3)), None);
        let off = Some(LaserState {
            on: false,
            power_w: 2e-3,
        });
        assert_eq!(estimate_phase(Some(p), reference, off), None);
        // Without a laser the reference is used as it is.
        let est = estimate_phase(Some(p), reference, None).unwrap();
        assert!((est - phi).abs() < 1e-9);
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut c = ScpiBenchConfig::new("127.0.0.1:1");
        c.timeout_ms = 0;
        let Err(HalError::InvalidArgument(m)) = PhotonicBench::new("ph-0", c) else {
            panic!("expected InvalidArgument");
        };
        assert!(m.starts_with("timeout_ms: expected"), "{m}");
    }

    #[test]
    fn capabilities_follow_the_configured_instruments() {
        let mut c = ScpiBenchConfig::new("127.0.0.1");
        let b = PhotonicBench::new("ph-0", c.clone()).unwrap();
        assert_eq!(
            b.capabilities(),
            [Capability::ResetSoft, Capability::Calibrate]
        );
        assert_eq!(b.identity().location, "127.0.0.1:5025");
        assert_eq!(b.identity().backend, "scpi");
        c.laser = Some("127.0.0.1:5026".into());
        let b = PhotonicBench::new("ph-0", c.clone()).unwrap();
        assert!(b.capabilities().contains(&Capability::EnableDisable));
        assert!(!b.capabilities().contains(&Capability::SetPowerLimit));
        // The TEC module's rated voltage turns the current limit into a power limit.
        c.tec_max_voltage_v = Some(8.6);
        let b = PhotonicBench::new("ph-0", c).unwrap();
        assert_eq!(
            b.capabilities(),
            [
                Capability::ResetSoft,
                Capability::Calibrate,
                Capability::SetPowerLimit,
                Capability::EnableDisable
            ]
        );
    }
}
