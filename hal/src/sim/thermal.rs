//! First-order thermal model: a lumped mass with thermal resistance `R` (K/W) to a reference
//! (ambient air, or a TEC setpoint) and time constant `tau`. Temperature relaxes exponentially
//! toward `reference + R * P`, which is exact for power held constant over the step.

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThermalModel {
    pub resistance_k_per_w: f64,
    pub tau_s: f64,
}

impl ThermalModel {
    /// Steady-state temperature at constant power.
    pub fn steady(&self, reference_c: f64, power_w: f64) -> f64 {
        reference_c + self.resistance_k_per_w * power_w
    }

    /// Temperature after `dt_s` seconds at constant `power_w`, starting from `temp_c`.
    pub fn step(&self, temp_c: f64, reference_c: f64, power_w: f64, dt_s: f64) -> f64 {
        let target = self.steady(reference_c, power_w);
        if self.tau_s <= 0.0 {
            return target;
        }
        target + (temp_c - target) * (-dt_s / self.tau_s).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxes_toward_steady_state_with_its_time_constant() {
        let m = ThermalModel {
            resistance_k_per_w: 2.5,
            tau_s: 30.0,
        };
        assert_eq!(m.steady(25.0, 12.0), 55.0);
        // After one time constant, 63.2 % of the way from 25 to 55.
        let t = m.step(25.0, 25.0, 12.0, 30.0);
        assert!(
            (t - (25.0 + 30.0 * (1.0 - (-1.0f64).exp()))).abs() < 1e-9,
            "{t}"
        );
        // Many small steps agree with one big step (the update is exact, not Euler).
        let mut x = 25.0;
        for _ in 0..300 {
            x = m.step(x, 25.0, 12.0, 0.1);
        }
        assert!((x - t).abs() < 1e-9);
        // Cooling when power drops.
        assert!(m.step(55.0, 25.0, 0.0, 10.0) < 55.0);
    }
}
