//! From readings to health: [`Limits`] per device, [`evaluate`] a [`Sample`] against them, and
//! [`ConditionTracker`] to keep each condition's start time across polls.
//!
//! Evaluation is a pure function of one sample (and of what the device can do, which decides
//! whether a missing calibration is a condition), so the same code serves every backend and is
//! tested without any device. Conditions the agent itself detects (unresponsive, missing,
//! reset failed, disabled) are added by the agent's supervisor, not here.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::model::{Capability, Condition, ConditionCode, DeviceKind, Quantity, Sample, Severity};

/// Thresholds for one device. Defaults depend on the kind; the agent config overrides them.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub temperature_warning_celsius: f64,
    pub temperature_critical_celsius: f64,
    /// Photonic TEC: allowed |temperature - setpoint| before a warning / critical.
    pub setpoint_tolerance_celsius: Option<(f64, f64)>,
    pub phase_error_radians: Option<(f64, f64)>,
    pub conductance_drift_ratio: Option<(f64, f64)>,
    /// A calibration older than this is stale (warning).
    pub calibration_max_age: Option<Duration>,
}

impl Limits {
    pub fn for_kind(kind: DeviceKind) -> Limits {
        match kind {
            // Loihi 2 boards: the runbook's warning at 80 degC, shutdown territory above 95.
            DeviceKind::Loihi2 => Limits {
                temperature_warning_celsius: 80.0,
                temperature_critical_celsius: 95.0,
                setpoint_tolerance_celsius: None,
                phase_error_radians: None,
                conductance_drift_ratio: None,
                calibration_max_age: None,
            },
            // SpiNN-5 boards: BMP firmware warns around 70 degC on the top sensor.
            DeviceKind::Spinnaker => Limits {
                temperature_warning_celsius: 70.0,
                temperature_critical_celsius: 85.0,
                setpoint_tolerance_celsius: None,
                phase_error_radians: None,
                conductance_drift_ratio: None,
                calibration_max_age: None,
            },
            DeviceKind::Photonic => Limits {
                temperature_warning_celsius: 45.0,
                temperature_critical_celsius: 60.0,
                setpoint_tolerance_celsius: Some((0.5, 2.0)),
                phase_error_radians: Some((0.05, 0.2)),
                conductance_drift_ratio: None,
                calibration_max_age: Some(Duration::from_secs(8 * 3600)),
            },
            DeviceKind::AnalogCrossbar => Limits {
                temperature_warning_celsius: 70.0,
                temperature_critical_celsius: 85.0,
                setpoint_tolerance_celsius: None,
                phase_error_radians: None,
                conductance_drift_ratio: Some((0.02, 0.05)),
                calibration_max_age: Some(Duration::from_secs(24 * 3600)),
            },
        }
    }
}

fn graded(value: f64, (warn, crit): (f64, f64)) -> Option<Severity> {
    if value >= crit {
        Some(Severity::Critical)
    } else if value >= warn {
        Some(Severity::Warning)
    } else {
        None
    }
}

/// Conditions implied by one sample of a device with `capabilities`, plus those the backend
/// reported in it. Every new condition's `since` is `now`; pass the result through a
/// [`ConditionTracker`] to keep the time each one began.
pub fn evaluate(
    subject: &str,
    sample: &Sample,
    limits: &Limits,
    capabilities: &[Capability],
    now: SystemTime,
) -> Vec<Condition> {
    let mut out = sample.conditions.clone();
    let mut push = |code, severity, message: String| {
        out.push(Condition::new(code, severity, subject, message, now));
    };
    thermal(sample, limits, &mut push);
    setpoint(sample, limits, &mut push);
    power(sample, &mut push);
    phase_drift(sample, limits, &mut push);
    conductance_drift(sample, limits, &mut push);
    let can_calibrate = capabilities.contains(&Capability::Calibrate);
    calibration_age(sample, limits, can_calibrate, now, &mut push);
    out
}

/// Temperature against the warning and critical limits.
fn thermal(
    sample: &Sample,
    limits: &Limits,
    push: &mut impl FnMut(ConditionCode, Severity, String),
) {
    if let Some((sensor, t)) = sample.max_of(Quantity::TemperatureCelsius) {
        let (w, c) = (
            limits.temperature_warning_celsius,
            limits.temperature_critical_celsius,
        );
        if t >= c {
            push(
                ConditionCode::ThermalCritical,
                Severity::Critical,
                format!("{sensor} temperature {t:.1} degC >= critical {c:.1} degC"),
            );
        } else if t >= w {
            push(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                format!("{sensor} temperature {t:.1} degC >= warning {w:.1} degC"),
            );
        }
    }
}

/// TEC temperatures against their setpoints.
fn setpoint(
    sample: &Sample,
    limits: &Limits,
    push: &mut impl FnMut(ConditionCode, Severity, String),
) {
    if let Some(tol) = limits.setpoint_tolerance_celsius {
        for r in sample
            .readings
            .iter()
            .filter(|r| r.quantity == Quantity::SetpointCelsius)
        {
            if let Some(t) = sample.get(&r.sensor, Quantity::TemperatureCelsius) {
                let dev = (t - r.value).abs();
                if let Some(sev) = graded(dev, tol) {
                    push(
                        ConditionCode::TecSetpointDeviation,
                        sev,
                        format!(
                            "{} at {t:.2} degC is {dev:.2} degC from setpoint {:.2} degC (tolerance {:.2})",
                            r.sensor, r.value, tol.0
                        ),
                    );
                }
            }
        }
    }
}

/// Power against the backend's own limit.
fn power(sample: &Sample, push: &mut impl FnMut(ConditionCode, Severity, String)) {
    if let (Some(limit), Some((sensor, p))) = (
        sample.power_limit_watts,
        sample.max_of(Quantity::PowerWatts),
    ) {
        // 5 % headroom: a limit is enforced by a control loop that overshoots a little.
        if p > limit * 1.05 {
            push(
                ConditionCode::PowerOverLimit,
                Severity::Warning,
                format!("{sensor} power {p:.1} W exceeds limit {limit:.1} W"),
            );
        }
    }
}

/// Photonic phase error.
fn phase_drift(
    sample: &Sample,
    limits: &Limits,
    push: &mut impl FnMut(ConditionCode, Severity, String),
) {
    if let (Some(th), Some((sensor, e))) = (
        limits.phase_error_radians,
        sample.max_of(Quantity::PhaseErrorRadians),
    ) {
        if let Some(sev) = graded(e, th) {
            push(
                ConditionCode::CalibrationDrift,
                sev,
                format!(
                    "{sensor} phase error {e:.3} rad >= {:.3} rad",
                    if sev == Severity::Critical {
                        th.1
                    } else {
                        th.0
                    }
                ),
            );
        }
    }
}

/// Crossbar conductance drift.
fn conductance_drift(
    sample: &Sample,
    limits: &Limits,
    push: &mut impl FnMut(ConditionCode, Severity, String),
) {
    if let (Some(th), Some((sensor, d))) = (
        limits.conductance_drift_ratio,
        sample.max_of(Quantity::ConductanceDriftRatio),
    ) {
        if let Some(sev) = graded(d, th) {
            push(
                ConditionCode::CalibrationDrift,
                sev,
                format!(
                    "{sensor} conductance drift {:.2} % >= {:.2} %",
                    d * 100.0,
                    if sev == Severity::Critical {
                        th.1
                    } else {
                        th.0
                    } * 100.0
                ),
            );
        }
    }
}

/// Calibration missing or older than its maximum age.
///
/// "Never calibrated" is a condition only for a device this system can calibrate: its runbook
/// step is `agent-ctl calibrate`, which a backend without [`Capability::Calibrate`] (a sysfs
/// crossbar card) refuses, so the warning would stand forever with no way to clear it. A
/// device that reports a calibration record of its own (a vendor tool that calibrates out of
/// band) still has that record's age checked, whatever its capabilities.
fn calibration_age(
    sample: &Sample,
    limits: &Limits,
    can_calibrate: bool,
    now: SystemTime,
    push: &mut impl FnMut(ConditionCode, Severity, String),
) {
    if let Some(max_age) = limits.calibration_max_age {
        match sample.calibration {
            None if !can_calibrate => {}
            None => push(
                ConditionCode::CalibrationStale,
                Severity::Warning,
                "never calibrated".to_string(),
            ),
            Some(rec) => {
                let age = now.duration_since(rec.calibrated_at).unwrap_or_default();
                if age > max_age {
                    push(
                        ConditionCode::CalibrationStale,
                        Severity::Warning,
                        format!(
                            "last calibrated {:.1} h ago (max {:.1} h)",
                            age.as_secs_f64() / 3600.0,
                            max_age.as_secs_f64() / 3600.0
                        ),
                    );
                }
            }
        }
    }
}

/// Remembers when each (code, subject) condition began, so a condition that persists across
/// polls keeps its original `since`, and one that clears and returns starts again.
#[derive(Debug, Default)]
pub struct ConditionTracker {
    since: HashMap<(ConditionCode, String), SystemTime>,
}

impl ConditionTracker {
    pub fn track(&mut self, mut current: Vec<Condition>) -> Vec<Condition> {
        let mut next = HashMap::with_capacity(current.len());
        for c in &mut current {
            let key = (c.code, c.subject.clone());
            let since = *self.since.get(&key).unwrap_or(&c.since);
            c.since = since;
            next.insert(key, since);
        }
        self.since = next;
        current.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.code.cmp(&b.code)));
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CalibrationRecord, Reading};

    /// What a simulated device of the calibrated kinds can do (the part that matters here).
    const CAN_CALIBRATE: &[Capability] = &[Capability::ResetSoft, Capability::Calibrate];
    /// A crossbar card read through sysfs: it has a power cap, and no way to be calibrated.
    const CANNOT_CALIBRATE: &[Capability] = &[Capability::ResetHard, Capability::SetPowerLimit];

    fn sample(readings: Vec<(&str, Quantity, f64)>, t: SystemTime) -> Sample {
        Sample {
            readings: readings
                .into_iter()
                .map(|(s, q, v)| Reading::new(s, q, v, t))
                .collect(),
            calibration: Some(CalibrationRecord {
                calibrated_at: t,
                temperature_celsius: 25.0,
            }),
            power_limit_watts: Some(20.0),
            powered: true,
            conditions: Vec::new(),
        }
    }

    #[test]
    fn thermal_thresholds_grade_the_hottest_sensor() {
        let t = SystemTime::now();
        let l = Limits::for_kind(DeviceKind::Loihi2);
        let cool = sample(vec![("chip", Quantity::TemperatureCelsius, 60.0)], t);
        assert!(evaluate("loihi-0", &cool, &l, CAN_CALIBRATE, t).is_empty());
        let warm = sample(
            vec![
                ("board", Quantity::TemperatureCelsius, 60.0),
                ("chip", Quantity::TemperatureCelsius, 85.0),
            ],
            t,
        );
        let c = evaluate("loihi-0", &warm, &l, CAN_CALIBRATE, t);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].code, ConditionCode::ThermalWarning);
        assert!(
            c[0].message.contains("chip") && c[0].message.contains("85.0"),
            "{}",
            c[0].message
        );
        let hot = sample(vec![("chip", Quantity::TemperatureCelsius, 96.0)], t);
        assert_eq!(
            evaluate("loihi-0", &hot, &l, CAN_CALIBRATE, t)[0].severity,
            Severity::Critical
        );
    }

    #[test]
    fn power_over_limit_and_stale_calibration() {
        let t = SystemTime::now();
        let l = Limits::for_kind(DeviceKind::AnalogCrossbar);
        let mut s = sample(vec![("card", Quantity::PowerWatts, 25.0)], t);
        s.calibration = Some(CalibrationRecord {
            calibrated_at: t - Duration::from_secs(25 * 3600),
            temperature_celsius: 30.0,
        });
        let codes: Vec<_> = evaluate("xbar-0", &s, &l, CAN_CALIBRATE, t)
            .iter()
            .map(|c| c.code)
            .collect();
        assert!(codes.contains(&ConditionCode::PowerOverLimit), "{codes:?}");
        assert!(
            codes.contains(&ConditionCode::CalibrationStale),
            "{codes:?}"
        );
    }

    fn stale(conditions: &[Condition]) -> Vec<&str> {
        conditions
            .iter()
            .filter(|c| c.code == ConditionCode::CalibrationStale)
            .map(|c| c.message.as_str())
            .collect()
    }

    #[test]
    fn never_calibrated_only_where_the_device_can_be_calibrated() {
        let t = SystemTime::now();
        let l = Limits::for_kind(DeviceKind::AnalogCrossbar);
        let mut s = sample(vec![("die", Quantity::TemperatureCelsius, 40.0)], t);
        s.calibration = None;
        assert_eq!(
            stale(&evaluate("xbar-0", &s, &l, CAN_CALIBRATE, t)),
            ["never calibrated"]
        );
        // The runbook's `agent-ctl calibrate` would be refused: nothing to raise.
        assert!(stale(&evaluate("xbar-0", &s, &l, CANNOT_CALIBRATE, t)).is_empty());
        // A condition the backend reported itself is passed on whatever the capabilities.
        s.conditions.push(Condition::new(
            ConditionCode::CalibrationStale,
            Severity::Warning,
            "xbar-0",
            "vendor tool: calibration table missing",
            t,
        ));
        assert_eq!(
            stale(&evaluate("xbar-0", &s, &l, CANNOT_CALIBRATE, t)),
            ["vendor tool: calibration table missing"]
        );
    }

    #[test]
    fn a_calibration_record_of_its_own_is_age_checked_without_the_capability() {
        let t = SystemTime::now();
        let l = Limits::for_kind(DeviceKind::AnalogCrossbar);
        let mut s = sample(vec![("die", Quantity::TemperatureCelsius, 40.0)], t);
        s.calibration = Some(CalibrationRecord {
            calibrated_at: t - Duration::from_secs(30 * 3600),
            temperature_celsius: 40.0,
        });
        let c = evaluate("xbar-0", &s, &l, CANNOT_CALIBRATE, t);
        let m = stale(&c);
        assert_eq!(m.len(), 1, "{c:?}");
        assert!(m[0].contains("30.0 h ago (max 24.0 h)"), "{}", m[0]);
        // A fresh one of its own is fine.
        s.calibration = Some(CalibrationRecord {
            calibrated_at: t - Duration::from_secs(3600),
            temperature_celsius: 40.0,
        });
        assert!(stale(&evaluate("xbar-0", &s, &l, CANNOT_CALIBRATE, t)).is_empty());
    }

    #[test]
    fn setpoint_deviation_has_its_own_code() {
        let t = SystemTime::now();
        let l = Limits::for_kind(DeviceKind::Photonic);
        let s = sample(
            vec![
                ("tec", Quantity::TemperatureCelsius, 26.0),
                ("tec", Quantity::SetpointCelsius, 25.0),
            ],
            t,
        );
        let c = evaluate("ph-0", &s, &l, CAN_CALIBRATE, t);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(
            (c[0].code, c[0].severity),
            (ConditionCode::TecSetpointDeviation, Severity::Warning)
        );
    }

    #[test]
    fn tracker_keeps_the_start_time_until_the_condition_clears() {
        let t0 = SystemTime::now();
        let t1 = t0 + Duration::from_secs(5);
        let mk = |t| {
            vec![Condition::new(
                ConditionCode::ThermalWarning,
                Severity::Warning,
                "d",
                "x",
                t,
            )]
        };
        let mut tr = ConditionTracker::default();
        assert_eq!(tr.track(mk(t0))[0].since, t0);
        assert_eq!(tr.track(mk(t1))[0].since, t0);
        assert!(tr.track(vec![]).is_empty());
        assert_eq!(tr.track(mk(t1))[0].since, t1);
    }
}
