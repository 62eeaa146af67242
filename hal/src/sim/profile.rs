//! Physical parameters of each simulated kind, and the sensors each one reports. The numbers
//! are chosen to be plausible for the real hardware, not to match any one unit:
//! - Loihi 2 (Kapoho Point class board): ~12 W, chip steady near 55 degC.
//! - SpiNN-5 board: 48 chips, ~60 W, steady near 55 degC, BMP rails and one fan.
//! - Photonic chip on a TEC: held at a 25 degC setpoint; phase error drifts with time and with
//!   distance from the calibration temperature.
//! - Analog (memristive) crossbar card: ~8 W; conductance drifts with time, faster when hot.

use std::time::Duration;

use super::thermal::ThermalModel;
use crate::model::{Capability, DeviceKind};

#[derive(Debug, Clone)]
pub struct Profile {
    pub vendor: &'static str,
    pub model: &'static str,
    pub firmware: &'static str,
    pub busy_power_w: f64,
    pub idle_power_w: f64,
    pub thermal: ThermalModel,
    /// Reference temperature: room air, or the TEC setpoint for a regulated chip.
    pub reference_c: f64,
    /// `Some(setpoint)`: the device is held at this temperature by a TEC.
    pub tec_setpoint_c: Option<f64>,
    pub max_power_limit_w: Option<f64>,
    /// Calibration drift per second at 25 degC (radians or ratio), `None` if the kind has none.
    pub drift_per_s: Option<f64>,
    /// Drift left right after a calibration.
    pub drift_floor: f64,
    pub soft_reset: Duration,
    pub hard_reset: Duration,
    pub power_cycle: Duration,
    pub calibration: Duration,
    pub capabilities: &'static [Capability],
}

use Capability::*;

pub fn profile(kind: DeviceKind) -> Profile {
    match kind {
        DeviceKind::Loihi2 => Profile {
            vendor: "Intel",
            model: "Loihi 2 (sim)",
            firmware: "sim-1.0",
            busy_power_w: 12.0,
            idle_power_w: 3.0,
            thermal: ThermalModel {
                resistance_k_per_w: 2.5,
                tau_s: 30.0,
            },
            reference_c: 25.0,
            tec_setpoint_c: None,
            max_power_limit_w: Some(20.0),
            drift_per_s: None,
            drift_floor: 0.0,
            soft_reset: Duration::from_millis(400),
            hard_reset: Duration::from_millis(1500),
            power_cycle: Duration::from_millis(2500),
            calibration: Duration::from_millis(800),
            capabilities: &[
                ResetSoft,
                ResetHard,
                PowerCycle,
                Calibrate,
                SetPowerLimit,
                EnableDisable,
                FaultInjection,
            ],
        },
        DeviceKind::Spinnaker => Profile {
            vendor: "University of Manchester",
            model: "SpiNN-5 (sim)",
            firmware: "BC&MP/Spin5-BMP 2.1.2",
            busy_power_w: 60.0,
            idle_power_w: 15.0,
            thermal: ThermalModel {
                resistance_k_per_w: 0.5,
                tau_s: 60.0,
            },
            reference_c: 25.0,
            tec_setpoint_c: None,
            max_power_limit_w: None,
            drift_per_s: None,
            drift_floor: 0.0,
            soft_reset: Duration::from_millis(500),
            hard_reset: Duration::from_millis(2000),
            power_cycle: Duration::from_millis(2000),
            calibration: Duration::ZERO,
            capabilities: &[
                ResetSoft,
                ResetHard,
                PowerCycle,
                EnableDisable,
                FaultInjection,
            ],
        },
        DeviceKind::Photonic => Profile {
            vendor: "Photonic bench",
            model: "MZI mesh on TEC (sim)",
            firmware: "sim-1.0",
            busy_power_w: 1.5,
            idle_power_w: 0.4,
            // The TEC loop: fast, small residual gain.
            thermal: ThermalModel {
                resistance_k_per_w: 0.05,
                tau_s: 3.0,
            },
            reference_c: 25.0,
            tec_setpoint_c: Some(25.0),
            max_power_limit_w: None,
            drift_per_s: Some(1.0e-5),
            drift_floor: 0.004,
            soft_reset: Duration::from_millis(300),
            hard_reset: Duration::from_millis(1200),
            power_cycle: Duration::from_millis(1500),
            calibration: Duration::from_millis(1500),
            capabilities: &[
                ResetSoft,
                ResetHard,
                PowerCycle,
                Calibrate,
                EnableDisable,
                FaultInjection,
            ],
        },
        DeviceKind::AnalogCrossbar => Profile {
            vendor: "Analog crossbar",
            model: "256x256 memristive array (sim)",
            firmware: "sim-1.0",
            busy_power_w: 8.0,
            idle_power_w: 2.0,
            thermal: ThermalModel {
                resistance_k_per_w: 3.0,
                tau_s: 20.0,
            },
            reference_c: 25.0,
            tec_setpoint_c: None,
            max_power_limit_w: Some(15.0),
            // About 2 % conductance drift after five hours at its working temperature.
            drift_per_s: Some(2.0e-7),
            drift_floor: 0.001,
            soft_reset: Duration::from_millis(300),
            hard_reset: Duration::from_millis(1500),
            power_cycle: Duration::from_millis(2000),
            calibration: Duration::from_millis(1000),
            capabilities: &[
                ResetSoft,
                ResetHard,
                PowerCycle,
                Calibrate,
                SetPowerLimit,
                EnableDisable,
                FaultInjection,
                Matvec,
            ],
        },
    }
}
