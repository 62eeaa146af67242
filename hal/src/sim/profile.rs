//! Physical parameters of each simulated kind, and the sensors each one reports. The numbers
//! are chosen to be plausible for the real hardware, not to match any one unit:
//! - Loihi 2 (Kapoho Point class board): ~12 W, chip steady near 55 degC.
//! - SpiNN-5 board: 48 chips, ~60 W, steady near 55 degC, BMP rails and one fan.
//! - Photonic chip on a TEC: held at a 25 degC setpoint; phase error drifts with time and with
//!   distance from the calibration temperature.
//! - Analog (memristive) crossbar card: ~8 W; conductance drifts with time, faster when hot.
//!
//! A kind with a power cap starts with its default limit in force, as a real powercap does
//! (sysfs always shows a limit): the board's rated power, which its full workload reaches, so
//! that a fraction of the limit in force is a real throttle and the default is there to be
//! restored afterwards.
//!
//! The `overheat` fault (see [`Overheat`]) is sized against the kind's thermal limits
//! (`health::Limits::for_kind`) so that the runbook's first step works, as it does on real
//! hardware whose cooling has degraded but not gone: with no limit the device climbs past
//! THERMAL_CRITICAL, and with 70 % of the default limit (the simulated default's
//! `thermal-warning` ladder) it settles below THERMAL_WARNING within seconds, fault still
//! active. The model is linear (rise = R * P), so this needs the full-power rise under the
//! fault between the critical rise and the warning rise / 0.7; each kind's numbers say where
//! in that window they sit.

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
    /// Highest power limit the device accepts.
    pub max_power_limit_w: Option<f64>,
    /// The power limit in force from the start (and after nothing else was set).
    pub default_power_limit_w: Option<f64>,
    pub overheat: Overheat,
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

/// The device while the `overheat` fault lasts: cooling has failed (a stalled fan, a
/// saturated TEC), so heat leaves through a worse path, quickly, toward a hotter reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overheat {
    pub thermal: ThermalModel,
    /// How far the reference rises (a TEC's hot side with no sink: its setpoint is lost).
    pub reference_rise_c: f64,
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
            default_power_limit_w: Some(12.0),
            // Warning 80, critical 95 degC over 25: the window is 70/12 = 5.83 to
            // 55/8.4 = 6.55 K/W. At 6.2 K/W: 99.4 degC at 12 W (critical about 12 s after the
            // fault, from 55 degC), 77.1 degC at 8.4 W (2.9 K under the warning).
            overheat: Overheat {
                thermal: ThermalModel {
                    resistance_k_per_w: 6.2,
                    tau_s: 5.0,
                },
                reference_rise_c: 0.0,
            },
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
            default_power_limit_w: None,
            // No power cap to throttle with: the fan stalls and the board runs away (145 degC
            // at 60 W), past critical within seconds.
            overheat: Overheat {
                thermal: ThermalModel {
                    resistance_k_per_w: 2.0,
                    tau_s: 10.0,
                },
                reference_rise_c: 0.0,
            },
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
            default_power_limit_w: None,
            // The TEC saturates: the chip is no longer held at 25 degC and heads for 65 degC.
            overheat: Overheat {
                thermal: ThermalModel {
                    resistance_k_per_w: 0.2,
                    tau_s: 1.0,
                },
                reference_rise_c: 40.0,
            },
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
            default_power_limit_w: Some(8.0),
            // Warning 70, critical 85 degC over 25: the window is 60/8 = 7.5 to 45/5.6 = 8.04
            // K/W, narrow because the warning sits at 75 % of the critical rise, just above
            // the 70 % throttle. At 7.8 K/W: 87.4 degC at 8 W (critical about 9 s after the
            // fault, from 49 degC), 68.7 degC at 5.6 W (1.3 K under the warning).
            overheat: Overheat {
                thermal: ThermalModel {
                    resistance_k_per_w: 7.8,
                    tau_s: 20.0 / 6.0,
                },
                reference_rise_c: 0.0,
            },
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
