//! Dynamics and fault tests of the simulated devices, on paused tokio time so that minutes of
//! device time take microseconds.

use std::time::Duration;

use super::*;
use crate::health::{evaluate, Limits};
use crate::model::ConditionCode;

fn dev(kind: DeviceKind) -> SimDevice {
    SimDevice::new("d0", kind, SimOptions::default())
}

async fn temp(d: &SimDevice) -> f64 {
    let s = d.read().await.expect("read");
    s.max_of(Quantity::TemperatureCelsius)
        .expect("temperature")
        .1
}

#[tokio::test(start_paused = true)]
async fn temperature_follows_power_through_the_time_constant() {
    let d = dev(DeviceKind::Loihi2);
    let busy = temp(&d).await;
    assert!(
        (busy - 55.0).abs() < 1.0,
        "starts at busy steady state, got {busy}"
    );
    d.set_enabled(false).await.unwrap();
    // Idle power 3 W: steady 32.5 degC; after one tau (30 s) 63 % of the way down.
    tokio::time::advance(Duration::from_secs(30)).await;
    let one_tau = temp(&d).await;
    let expect = 32.5 + (55.0 - 32.5) * (-1.0f64).exp();
    assert!(
        (one_tau - expect).abs() < 1.0,
        "after one tau {one_tau}, expected ~{expect}"
    );
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!((temp(&d).await - 32.5).abs() < 0.5);
    // Power readings follow the workload and the energy counter integrates it.
    let s = d.read().await.unwrap();
    assert!((s.get("board", Quantity::PowerWatts).unwrap() - 3.0).abs() < 1e-9);
    assert!(s.get("board", Quantity::EnergyJoules).unwrap() > 3.0 * 300.0);
}

#[tokio::test(start_paused = true)]
async fn power_limit_caps_power_and_lowers_temperature() {
    let d = dev(DeviceKind::AnalogCrossbar);
    d.set_power_limit(5.0).await.unwrap();
    tokio::time::advance(Duration::from_secs(200)).await;
    let s = d.read().await.unwrap();
    assert!(s.get("card", Quantity::PowerWatts).unwrap() <= 5.0);
    assert!((s.max_of(Quantity::TemperatureCelsius).unwrap().1 - 40.0).abs() < 1.0);
    let err = d.set_power_limit(500.0).await.unwrap_err();
    assert!(matches!(err, HalError::InvalidArgument(_)), "{err}");
    let err = d.set_power_limit(f64::NAN).await.unwrap_err();
    assert!(matches!(err, HalError::InvalidArgument(_)), "{err}");
}

/// With the fault and no throttle, every kind whose temperature is graded against fixed
/// limits passes THERMAL_CRITICAL within 20 s; clearing the fault lets it cool back.
#[tokio::test(start_paused = true)]
async fn overheat_fault_drives_the_device_critical() {
    for kind in [
        DeviceKind::Loihi2,
        DeviceKind::Spinnaker,
        DeviceKind::AnalogCrossbar,
    ] {
        let d = dev(kind);
        let cool = temp(&d).await;
        d.faults().inject(FaultKind::Overheat);
        tokio::time::advance(Duration::from_secs(20)).await;
        let s = d.read().await.unwrap();
        let limits = Limits::for_kind(kind);
        let c = evaluate("d0", &s, &limits, &d.capabilities(), SystemTime::now());
        assert!(
            c.iter().any(|c| c.code == ConditionCode::ThermalCritical),
            "{kind}: {c:?}"
        );
        d.faults().inject(FaultKind::Clear);
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(temp(&d).await < cool + 1.0, "{kind}");
    }
}

/// The runbook's answer to THERMAL_WARNING ("lower the power limit"; the simulated default's
/// ladder takes 70 % of the limit in force) works against the `overheat` fault at its warning
/// stage: the device is back under its warning within 20 s and stays there while the fault
/// lasts. Restoring the default limit lets it climb past critical again.
#[tokio::test(start_paused = true)]
async fn seventy_percent_of_the_default_limit_beats_overheat_at_its_warning_stage() {
    for kind in [DeviceKind::Loihi2, DeviceKind::AnalogCrossbar] {
        let limits = Limits::for_kind(kind);
        let warning = limits.temperature_warning_celsius;
        let d = dev(kind);
        let default = d.read().await.unwrap().power_limit_watts;
        assert_eq!(
            default,
            profile::profile(kind).default_power_limit_w,
            "{kind}"
        );
        let default = default.expect("a limit in force from the start, as sysfs shows one");
        d.faults().inject(FaultKind::Overheat);
        let mut to_warning = 0;
        while temp(&d).await < warning {
            assert!(to_warning < 60, "{kind}: never reached its warning");
            tokio::time::advance(Duration::from_secs(1)).await;
            to_warning += 1;
        }
        d.set_power_limit(0.7 * default).await.unwrap();
        let mut to_clear = 0;
        while temp(&d).await >= warning {
            assert!(
                to_clear < 20,
                "{kind}: still at or above {warning} degC 20 s after the throttle"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
            to_clear += 1;
        }
        tokio::time::advance(Duration::from_secs(600)).await;
        let s = d.read().await.unwrap();
        let c = evaluate("d0", &s, &limits, &d.capabilities(), SystemTime::now());
        assert!(
            c.iter().all(|c| c.code != ConditionCode::ThermalWarning
                && c.code != ConditionCode::ThermalCritical),
            "{kind}: {c:?}"
        );
        assert_eq!(d.faults().active(), [FaultKind::Overheat]);
        // The lease ends: the default comes back, and so does the climb.
        d.set_power_limit(default).await.unwrap();
        assert_eq!(d.read().await.unwrap().power_limit_watts, Some(default));
        tokio::time::advance(Duration::from_secs(60)).await;
        let s = d.read().await.unwrap();
        let c = evaluate("d0", &s, &limits, &d.capabilities(), SystemTime::now());
        assert!(
            c.iter().any(|c| c.code == ConditionCode::ThermalCritical),
            "{kind}: {c:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn photonic_tec_overheat_leaves_the_setpoint() {
    let d = dev(DeviceKind::Photonic);
    assert!((temp(&d).await - 25.0).abs() < 0.5);
    d.faults().inject(FaultKind::Overheat);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(temp(&d).await > 40.0);
}

#[tokio::test(start_paused = true)]
async fn drift_grows_with_time_and_temperature_and_calibration_restores_it() {
    for (kind, q) in [
        (DeviceKind::Photonic, Quantity::PhaseErrorRadians),
        (DeviceKind::AnalogCrossbar, Quantity::ConductanceDriftRatio),
    ] {
        let d = dev(kind);
        let hot = dev(kind);
        hot.faults().inject(FaultKind::Overheat);
        let d0 = d.read().await.unwrap().max_of(q).unwrap().1;
        tokio::time::advance(Duration::from_secs(3600)).await;
        let d1 = d.read().await.unwrap().max_of(q).unwrap().1;
        let h1 = hot.read().await.unwrap().max_of(q).unwrap().1;
        assert!(d1 > d0, "{kind}: drift grows with time ({d0} -> {d1})");
        assert!(
            h1 > 2.0 * d1,
            "{kind}: drift grows faster when hot ({h1} vs {d1})"
        );

        d.faults().inject(FaultKind::Drift);
        tokio::time::advance(Duration::from_secs(60)).await;
        let s = d.read().await.unwrap();
        let limits = Limits::for_kind(kind);
        let c = evaluate("d0", &s, &limits, &d.capabilities(), SystemTime::now());
        assert!(
            c.iter().any(|c| c.code == ConditionCode::CalibrationDrift),
            "{kind}: {c:?}"
        );

        let rec = d.calibrate().await.unwrap();
        let after = d.read().await.unwrap();
        assert!(
            after.max_of(q).unwrap().1 < d0 + 1e-3,
            "{kind}: calibration restores drift"
        );
        assert_eq!(after.calibration, Some(rec));
    }
}

#[tokio::test(start_paused = true)]
async fn reset_takes_time_and_failing_reset_fails() {
    let d = dev(DeviceKind::Spinnaker);
    let t0 = Instant::now();
    d.reset(ResetKind::Soft).await.unwrap();
    assert_eq!(
        t0.elapsed(),
        profile::profile(DeviceKind::Spinnaker).soft_reset
    );
    d.faults().inject(FaultKind::FailingReset);
    let err = d.reset(ResetKind::Hard).await.unwrap_err();
    assert!(matches!(err, HalError::Failed(_)), "{err}");
    // Always-failing random resets fail too.
    let flaky = SimDevice::new(
        "f",
        DeviceKind::Loihi2,
        SimOptions {
            reset_failure_probability: 1.0,
            seed: Some(1),
        },
    );
    assert!(flaky.reset(ResetKind::Soft).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn power_cycle_turns_rails_off_then_on() {
    let d = std::sync::Arc::new(dev(DeviceKind::Spinnaker));
    let d2 = d.clone();
    let cycle = tokio::spawn(async move { d2.reset(ResetKind::PowerCycle).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mid = d.read().await.unwrap();
    assert!(!mid.powered);
    assert_eq!(mid.get("rail_12v", Quantity::VoltageVolts), Some(0.0));
    cycle.await.unwrap().unwrap();
    let after = d.read().await.unwrap();
    assert!(after.powered && after.get("rail_12v", Quantity::VoltageVolts).unwrap() > 11.0);
}

#[tokio::test(start_paused = true)]
async fn hang_blocks_in_band_calls_until_a_hard_reset() {
    let d = dev(DeviceKind::Loihi2);
    d.faults().inject(FaultKind::Hang);
    let r = tokio::time::timeout(Duration::from_secs(3600), d.read()).await;
    assert!(r.is_err(), "a hung read never returns");
    let r = tokio::time::timeout(Duration::from_secs(60), d.reset(ResetKind::Soft)).await;
    assert!(r.is_err(), "a soft reset is in band and hangs too");
    d.reset(ResetKind::Hard).await.unwrap();
    assert!(d.read().await.is_ok(), "hard reset clears the hang");
}

#[tokio::test(start_paused = true)]
async fn vanish_fails_every_call_until_cleared() {
    let d = dev(DeviceKind::Photonic);
    d.faults().inject(FaultKind::Vanish);
    assert!(matches!(d.read().await, Err(HalError::Vanished(_))));
    assert!(matches!(
        d.reset(ResetKind::PowerCycle).await,
        Err(HalError::Vanished(_))
    ));
    assert_eq!(d.faults().active(), vec![FaultKind::Vanish]);
    d.faults().inject(FaultKind::Clear);
    assert!(d.read().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn unsupported_actions_are_refused_by_capability() {
    let d = dev(DeviceKind::Spinnaker);
    assert!(!d.capabilities().contains(&Capability::Calibrate));
    assert!(matches!(d.calibrate().await, Err(HalError::Unsupported(_))));
    assert!(matches!(
        d.set_power_limit(10.0).await,
        Err(HalError::Unsupported(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn every_kind_reports_temperature_and_power() {
    for kind in DeviceKind::ALL {
        let s = dev(kind).read().await.unwrap();
        assert!(s.max_of(Quantity::TemperatureCelsius).is_some(), "{kind}");
        assert!(s.max_of(Quantity::PowerWatts).is_some(), "{kind}");
    }
}

#[tokio::test(start_paused = true)]
async fn crossbar_matvec_degrades_with_drift_and_calibration_restores_it() {
    let d = dev(DeviceKind::AnalogCrossbar);
    let n = CROSSBAR_SIZE;
    let x: Vec<f64> = (0..n).map(|i| ((i + 1) as f64 * 2.1).cos()).collect();
    // tridiag(-1, 2, -1) applied exactly.
    let exact: Vec<f64> = (0..n)
        .map(|i| {
            2.0 * x[i] - if i > 0 { x[i - 1] } else { 0.0 } - if i + 1 < n { x[i + 1] } else { 0.0 }
        })
        .collect();
    let rel = |y: &[f64]| {
        let num: f64 = y.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum();
        let den: f64 = exact.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    };
    let fresh = rel(&d.matvec(&x).await.unwrap());
    assert!(fresh < 0.05, "fresh array error {fresh}");
    d.faults().inject(FaultKind::Drift);
    tokio::time::advance(Duration::from_secs(120)).await;
    let drifted = rel(&d.matvec(&x).await.unwrap());
    assert!(
        drifted > 3.0 * fresh,
        "drift degrades the product: {fresh} -> {drifted}"
    );
    d.faults().inject(FaultKind::Clear);
    d.calibrate().await.unwrap();
    let after = rel(&d.matvec(&x).await.unwrap());
    assert!(after < 0.05, "calibration reprograms the array: {after}");
    // Bad input is refused, not computed.
    assert!(matches!(
        d.matvec(&x[..3]).await,
        Err(HalError::InvalidArgument(_))
    ));
    assert!(matches!(
        d.matvec(&[f64::NAN; CROSSBAR_SIZE]).await,
        Err(HalError::InvalidArgument(_))
    ));
    // The host knows what it programmed: the Laplacian the products above were checked against.
    let w = d.programmed_weights().unwrap();
    assert_eq!(w.n, n);
    assert_eq!((w.values[0], w.values[1], w.values[2]), (2.0, -1.0, 0.0));
    assert!(dev(DeviceKind::Loihi2).programmed_weights().is_none());
    // Only the crossbar has an array.
    assert!(matches!(
        dev(DeviceKind::Loihi2).matvec(&x).await,
        Err(HalError::Unsupported(_))
    ));
}

#[test]
fn the_simulator_needs_no_deadline_floor() {
    assert_eq!(
        SimOptions::default().min_deadlines(),
        crate::MinDeadlines::NONE
    );
}
