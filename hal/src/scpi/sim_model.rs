//! The physics behind the simulated photonic bench: one chip on a TEC, one laser, one power
//! meter, shared by the three simulated instruments so that what one instrument does shows up
//! on the others (turn the TEC off and the temperature drifts; the phase drifts faster; the
//! power meter reads less light).
//!
//! - Thermal: the chip is a lumped mass ([`ThermalModel`]) tied to the room through its mount,
//!   heated by its own electronics and cooled by the TEC. The TEC controller is proportional
//!   with an exact feed-forward term (the heat it must pump at the setpoint), so it settles
//!   without steady-state error in about a second, and it saturates at its current limit.
//! - TEC electrics: the pumped heat Q = a*I - R*I^2/2 (Peltier minus half the Joule heat)
//!   is solved for the current I, and V = R*I + Seebeck voltage, so current, voltage and heater
//!   power are consistent with the heat actually pumped.
//! - Current limit (`TEC:LIM:ITE`): the most the TEC can pump is what it pumps at its limit,
//!   so a limit below what holding the setpoint takes leaves the chip warmer than its
//!   setpoint (cooling) or cooler (heating), by as much as the missing heat makes it. At the
//!   nominal point holding 25 degC takes about 0.2 A; the limit bites below that. Under the
//!   `overheat` fault (the sink's fan stopped) the loop asks for everything, so the current
//!   sits at the limit, and what it mostly does is dump its own Joule heat (R*I^2) into a sink
//!   that cannot shed it: the sink, and the chip on it, run hot. There a lower limit helps,
//!   as it would on a real bench: less current, less heat into the dead sink.
//! - Optics: a Mach-Zehnder mesh whose phase error grows with time, roughly doubling per 10 K
//!   and with distance from the temperature it was trimmed at (as in [`crate::sim`]); the
//!   meter reads laser power x insertion loss x cos^2(phase).
//!
//! Time is passed in explicitly ([`BenchModel::advance`]) so the model is tested without
//! clocks or sockets.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::sim::thermal::ThermalModel;

/// Room temperature around the bench.
pub const AMBIENT_C: f64 = 22.0;
/// Heat the chip's own electronics (modulators, drivers) dissipate.
pub const CHIP_POWER_W: f64 = 1.5;
/// Chip to room through its mount, when the TEC pumps nothing.
pub const CHIP_THERMAL: ThermalModel = ThermalModel {
    resistance_k_per_w: 4.0,
    tau_s: 4.0,
};
/// Proportional gain of the TEC loop, W per K of error.
const GAIN_W_PER_K: f64 = 2.0;
/// Peltier coefficient (heat per ampere) and electrical resistance of the TEC module.
const PELTIER_W_PER_A: f64 = 4.0;
const TEC_RESISTANCE_OHM: f64 = 1.2;
const SEEBECK_V_PER_K: f64 = 0.05;
/// Hot-side heat sink: K of rise per W rejected.
const SINK_K_PER_W: f64 = 0.5;
/// Overheat fault: the heat sink's fan has stopped. The TEC can move little heat against the
/// hot side, its controller sits at its current limit, and the sink, now K per W of heat
/// rejected (pumped + Joule) this much above the room, is what the chip sits on. At the
/// default 3 A limit that is 2.65 * (0.5 + 10.8) = 30 K, and the chip heads for 56 degC; at
/// 70 % of it (2.1 A) for 41 degC.
const OVERHEAT_SINK_K_PER_W: f64 = 2.65;
const OVERHEAT_PUMP_W: f64 = 0.5;
/// Fraction of the laser's light that reaches the meter at zero phase error (3 dB).
const INSERTION_LOSS: f64 = 0.5;
/// Phase error right after trimming.
const PHASE_FLOOR_RAD: f64 = 0.004;
/// Integration step: the loop is exact per step for constant power, and stable below ~1 s.
const STEP_S: f64 = 0.02;
/// Longest stretch integrated step by step; the loop has long settled after it.
const FINE_SPAN_S: f64 = 1000.0;

/// `*RST` defaults of the instruments.
pub const DEFAULT_SETPOINT_C: f64 = 25.0;
pub const DEFAULT_CURRENT_LIMIT_A: f64 = 3.0;
/// The current limits the simulated controller accepts (`TEC:LIM:ITE? MIN` / `MAX`).
pub const MIN_CURRENT_LIMIT_A: f64 = 0.1;
pub const MAX_CURRENT_LIMIT_A: f64 = 5.0;
/// The simulated TEC module's rated maximum voltage (its datasheet V_max): R * I_max plus
/// the Seebeck voltage at its largest temperature difference, 1.2 * 3.33 + 0.05 * 70 V. What
/// a bench on this simulator configures as `tec_max_voltage_v`.
pub const TEC_MAX_VOLTAGE_V: f64 = 7.5;
pub const DEFAULT_T_LOW_C: f64 = 5.0;
pub const DEFAULT_T_HIGH_C: f64 = 70.0;
pub const DEFAULT_WAVELENGTH_NM: f64 = 1550.0;
pub const DEFAULT_LASER_POWER_W: f64 = 1.0e-3;

/// Faults active on the simulated bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveFaults {
    pub overheat: bool,
    pub hang: bool,
    pub drift: bool,
    pub failing_reset: bool,
    pub vanish: bool,
}

/// Initial conditions and rates of the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelParams {
    pub setpoint_c: f64,
    /// Phase drift at 25 degC and at the trim temperature, rad/s.
    pub drift_per_s: f64,
    pub laser_power_w: f64,
    pub wavelength_nm: f64,
    pub seed: u64,
}

impl ModelParams {
    /// A bench at its nominal operating point, as the simulator starts by default: held at
    /// 25 degC, 1 mW of light at 1550 nm, slow drift. `seed` picks the noise.
    pub fn nominal(seed: u64) -> ModelParams {
        ModelParams {
            setpoint_c: 25.0,
            drift_per_s: 1.0e-5,
            laser_power_w: 1.0e-3,
            wavelength_nm: 1550.0,
            seed,
        }
    }
}

#[derive(Debug)]
pub struct BenchModel {
    pub temperature_c: f64,
    pub setpoint_c: f64,
    pub output_on: bool,
    pub current_a: f64,
    pub voltage_v: f64,
    pub current_limit_a: f64,
    pub t_low_c: f64,
    pub t_high_c: f64,
    pub phase_rad: f64,
    /// Temperature the mesh was trimmed at; drift grows with the distance from it.
    pub trim_c: f64,
    pub laser_on: bool,
    pub laser_power_w: f64,
    pub laser_wavelength_m: f64,
    pub meter_wavelength_nm: f64,
    pub meter_average_count: u32,
    faults: ActiveFaults,
    /// Set by `*RST` under the failing-reset fault: the TEC ignores setpoint and output
    /// commands until the fault is cleared (a controller whose reset left it in local mode).
    reset_latched: bool,
    drift_per_s: f64,
    rng: SmallRng,
}

impl BenchModel {
    pub fn new(p: ModelParams) -> BenchModel {
        let mut m = BenchModel {
            temperature_c: p.setpoint_c,
            setpoint_c: p.setpoint_c,
            output_on: true,
            current_a: 0.0,
            voltage_v: 0.0,
            current_limit_a: DEFAULT_CURRENT_LIMIT_A,
            t_low_c: DEFAULT_T_LOW_C,
            t_high_c: DEFAULT_T_HIGH_C,
            phase_rad: PHASE_FLOOR_RAD,
            trim_c: p.setpoint_c,
            laser_on: true,
            laser_power_w: p.laser_power_w,
            laser_wavelength_m: p.wavelength_nm * 1e-9,
            meter_wavelength_nm: p.wavelength_nm,
            meter_average_count: 1,
            faults: ActiveFaults::default(),
            reset_latched: false,
            drift_per_s: p.drift_per_s,
            rng: SmallRng::seed_from_u64(p.seed),
        };
        // Start settled, with the TEC's electrics at their steady state.
        m.control_step(0.0);
        m
    }

    pub fn faults(&self) -> ActiveFaults {
        self.faults
    }

    /// Changes the faults. Callers advance the model to "now" first, so a fault takes effect
    /// from the moment it is injected, not retroactively.
    pub fn set_faults(&mut self, faults: ActiveFaults) {
        if !faults.failing_reset {
            self.reset_latched = false;
        }
        self.faults = faults;
    }

    /// Integrates `dt_s` seconds.
    pub fn advance(&mut self, dt_s: f64) {
        if !(dt_s.is_finite() && dt_s > 0.0) {
            return;
        }
        let fine = dt_s.min(FINE_SPAN_S);
        let mut left = fine;
        while left > 0.0 {
            let h = left.min(STEP_S);
            self.control_step(h);
            left -= h;
        }
        // After a long idle stretch the loop is at its steady state: accumulate the rest of
        // the drift at the temperature reached, instead of stepping through hours.
        let rest = dt_s - fine;
        if rest > 0.0 {
            self.phase_rad += self.drift_rate() * rest;
        }
    }

    fn drift_rate(&self) -> f64 {
        let t = self.temperature_c;
        let thermal = 2f64.powf((t - 25.0) / 10.0) * (1.0 + 0.5 * (t - self.trim_c).abs());
        let fault = if self.faults.drift { 500.0 } else { 1.0 };
        self.drift_per_s * thermal * fault
    }

    /// One controller update and `h` seconds of physics at the resulting power.
    fn control_step(&mut self, h: f64) {
        let i_lim = self.current_limit_a;
        // Heat the TEC can pump out of the chip (cooling) or into it (heating) at its limit.
        let i_peak = (PELTIER_W_PER_A / TEC_RESISTANCE_OHM).min(i_lim);
        let max_cool = PELTIER_W_PER_A * i_peak - 0.5 * TEC_RESISTANCE_OHM * i_peak * i_peak;
        let max_heat = PELTIER_W_PER_A * i_lim + 0.5 * TEC_RESISTANCE_OHM * i_lim * i_lim;
        let dead_sink = self.output_on && self.faults.overheat;
        let (pumped, current) = if !self.output_on {
            (0.0, 0.0)
        } else if dead_sink {
            // The loop asks for all it has; the hot side cannot shed it.
            (OVERHEAT_PUMP_W.min(max_cool), i_lim)
        } else {
            let r = CHIP_THERMAL.resistance_k_per_w;
            let feed_forward = CHIP_POWER_W - (self.setpoint_c - AMBIENT_C) / r;
            let wanted = feed_forward + GAIN_W_PER_K * (self.temperature_c - self.setpoint_c);
            let q = wanted.clamp(-max_heat, max_cool);
            (q, current_for_heat(q))
        };
        let electrical = TEC_RESISTANCE_OHM * current * current;
        let rejected = pumped.abs() + electrical;
        let (hot_side, ambient) = if dead_sink {
            let sink = AMBIENT_C + OVERHEAT_SINK_K_PER_W * rejected;
            (sink, sink)
        } else {
            (AMBIENT_C + SINK_K_PER_W * rejected, AMBIENT_C)
        };
        self.temperature_c =
            CHIP_THERMAL.step(self.temperature_c, ambient, CHIP_POWER_W - pumped, h);
        self.current_a = current;
        self.voltage_v = if current == 0.0 {
            0.0
        } else {
            TEC_RESISTANCE_OHM * current
                + SEEBECK_V_PER_K * (hot_side - self.temperature_c).abs() * current.signum()
        };
        self.phase_rad += self.drift_rate() * h;
    }

    fn noise(&mut self, amplitude: f64) -> f64 {
        amplitude * (self.rng.random::<f64>() - 0.5) * 2.0
    }

    /// What the TEC's thermistor reads.
    pub fn measured_temperature(&mut self) -> f64 {
        self.temperature_c + self.noise(0.003)
    }

    pub fn measured_current(&mut self) -> f64 {
        self.current_a + self.noise(0.0005)
    }

    pub fn measured_voltage(&mut self) -> f64 {
        self.voltage_v + self.noise(0.0005)
    }

    /// Light at the meter, W: relative noise 1e-5 and a dark offset of a few pW.
    pub fn measured_optical_power(&mut self) -> f64 {
        let light = if self.laser_on {
            self.laser_power_w * INSERTION_LOSS * self.phase_rad.cos().powi(2)
        } else {
            0.0
        };
        light * (1.0 + self.noise(1.0e-5)) + 5.0e-12 + self.noise(2.0e-12)
    }

    /// `TEC:T <x>`; `false` if ignored (failing-reset latched).
    pub fn set_setpoint(&mut self, c: f64) -> bool {
        if self.reset_latched {
            return false;
        }
        self.setpoint_c = c;
        true
    }

    /// `TEC:OUT 0|1`; `false` if ignored (failing-reset latched).
    pub fn set_output(&mut self, on: bool) -> bool {
        if self.reset_latched {
            return false;
        }
        self.output_on = on;
        true
    }

    /// `*RST` of the TEC controller: output off, setpoint and limits to their defaults.
    pub fn reset_tec(&mut self) {
        self.output_on = false;
        self.setpoint_c = DEFAULT_SETPOINT_C;
        self.current_limit_a = DEFAULT_CURRENT_LIMIT_A;
        self.t_low_c = DEFAULT_T_LOW_C;
        self.t_high_c = DEFAULT_T_HIGH_C;
        self.reset_latched = self.faults.failing_reset;
    }

    /// `*RST` of the laser: output off, default wavelength and power.
    pub fn reset_laser(&mut self) {
        self.laser_on = false;
        self.laser_power_w = DEFAULT_LASER_POWER_W;
        self.laser_wavelength_m = DEFAULT_WAVELENGTH_NM * 1e-9;
    }

    /// `*RST` of the power meter.
    pub fn reset_meter(&mut self) {
        self.meter_wavelength_nm = DEFAULT_WAVELENGTH_NM;
        self.meter_average_count = 1;
    }
}

/// TEC current for pumping `q` watts out of the chip (negative `q`: heating it, with the
/// current reversed). Inverts Q = a*I - R*I^2/2 on the branch below the peak.
fn current_for_heat(q: f64) -> f64 {
    let (a, r) = (PELTIER_W_PER_A, TEC_RESISTANCE_OHM);
    if q >= 0.0 {
        let disc = (a * a - 2.0 * r * q).max(0.0);
        (a - disc.sqrt()) / r
    } else {
        -((a * a + 2.0 * r * -q).sqrt() - a) / r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> BenchModel {
        BenchModel::new(ModelParams::nominal(7))
    }

    #[test]
    fn holds_the_setpoint_and_the_electrics_match_the_heat_pumped() {
        let mut m = model();
        m.advance(30.0);
        assert!((m.temperature_c - 25.0).abs() < 0.01, "{}", m.temperature_c);
        // At 25 degC in a 22 degC room the TEC pumps 1.5 - 3/4 = 0.75 W out.
        let i = m.current_a;
        let q = PELTIER_W_PER_A * i - 0.5 * TEC_RESISTANCE_OHM * i * i;
        assert!((q - 0.75).abs() < 0.01, "I {i} A pumps {q} W");
        assert!(m.voltage_v > 0.0 && (m.current_a * m.voltage_v) < 2.0);
    }

    #[test]
    fn follows_a_new_setpoint_within_a_few_seconds() {
        let mut m = model();
        assert!(m.set_setpoint(30.0));
        m.advance(5.0);
        assert!((m.temperature_c - 30.0).abs() < 0.05, "{}", m.temperature_c);
        // Heating above the room's reach of the chip: the current reverses.
        assert!(m.set_setpoint(40.0));
        m.advance(10.0);
        assert!((m.temperature_c - 40.0).abs() < 0.05, "{}", m.temperature_c);
        assert!(m.current_a < 0.0);
    }

    #[test]
    fn output_off_lets_the_chip_drift_to_its_unregulated_temperature() {
        let mut m = model();
        m.set_output(false);
        m.advance(60.0);
        let free = CHIP_THERMAL.steady(AMBIENT_C, CHIP_POWER_W);
        assert!((m.temperature_c - free).abs() < 0.05, "{}", m.temperature_c);
        assert_eq!((m.current_a, m.voltage_v), (0.0, 0.0));
    }

    #[test]
    fn overheat_runs_away_by_more_than_two_degrees_within_ten_seconds() {
        let mut m = model();
        m.set_faults(ActiveFaults {
            overheat: true,
            ..Default::default()
        });
        m.advance(10.0);
        assert!(m.temperature_c > 27.0, "{}", m.temperature_c);
        assert_eq!(m.current_a, m.current_limit_a);
    }

    #[test]
    fn a_current_limit_below_what_holding_takes_leaves_the_chip_warm() {
        let mut m = model();
        m.advance(30.0);
        let holding = m.current_a;
        assert!(holding > MIN_CURRENT_LIMIT_A, "{holding} A");
        // Above what holding takes, the limit changes nothing.
        m.current_limit_a = 2.0 * holding;
        m.advance(30.0);
        assert!((m.temperature_c - 25.0).abs() < 0.01, "{}", m.temperature_c);
        // Below it, the TEC runs at its limit and pumps what that allows: the chip settles
        // where the mount carries off the rest.
        m.current_limit_a = MIN_CURRENT_LIMIT_A;
        m.advance(60.0);
        let i = MIN_CURRENT_LIMIT_A;
        let pumped = PELTIER_W_PER_A * i - 0.5 * TEC_RESISTANCE_OHM * i * i;
        let expect = CHIP_THERMAL.steady(AMBIENT_C, CHIP_POWER_W - pumped);
        assert!(
            (m.temperature_c - expect).abs() < 0.05,
            "{}",
            m.temperature_c
        );
        assert!(m.temperature_c > 26.0);
        assert!((m.current_a - i).abs() < 1e-9, "{}", m.current_a);
        // *RST puts the default back, as the controller's would.
        m.reset_tec();
        assert_eq!(m.current_limit_a, DEFAULT_CURRENT_LIMIT_A);
    }

    #[test]
    fn under_overheat_a_lower_current_limit_heats_the_dead_sink_less() {
        let overheat = ActiveFaults {
            overheat: true,
            ..Default::default()
        };
        let mut full = model();
        let mut throttled = model();
        throttled.current_limit_a = 0.7 * DEFAULT_CURRENT_LIMIT_A;
        full.set_faults(overheat);
        throttled.set_faults(overheat);
        full.advance(60.0);
        throttled.advance(60.0);
        // The numbers in OVERHEAT_SINK_K_PER_W's comment: above the photonic warning (45 degC)
        // at the default limit, below it at 70 % of it.
        assert!(
            (full.temperature_c - 56.0).abs() < 0.5,
            "{}",
            full.temperature_c
        );
        assert!(
            (throttled.temperature_c - 41.4).abs() < 0.5,
            "{}",
            throttled.temperature_c
        );
        assert_eq!(throttled.current_a, throttled.current_limit_a);
    }

    #[test]
    fn drift_fault_multiplies_the_phase_drift_and_dims_the_light() {
        let mut slow = model();
        let mut fast = model();
        fast.set_faults(ActiveFaults {
            drift: true,
            ..Default::default()
        });
        slow.advance(100.0);
        fast.advance(100.0);
        let grown = |m: &BenchModel| m.phase_rad - PHASE_FLOOR_RAD;
        assert!((grown(&fast) / grown(&slow) - 500.0).abs() < 1.0);
        assert!(fast.measured_optical_power() < slow.measured_optical_power());
    }

    #[test]
    fn failing_reset_latches_until_cleared() {
        let mut m = model();
        m.set_faults(ActiveFaults {
            failing_reset: true,
            ..Default::default()
        });
        m.reset_tec();
        assert!(!m.set_output(true) && !m.set_setpoint(30.0));
        assert!(!m.output_on && m.setpoint_c == DEFAULT_SETPOINT_C);
        m.set_faults(ActiveFaults::default());
        assert!(m.set_output(true));
    }

    #[test]
    fn long_idle_stretches_are_cheap_and_finite() {
        let mut m = model();
        m.advance(30.0 * 24.0 * 3600.0);
        assert!(m.temperature_c.is_finite() && m.phase_rad.is_finite());
        m.advance(f64::NAN);
        m.advance(-1.0);
        assert!(m.temperature_c.is_finite());
    }
}
