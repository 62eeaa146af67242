//! The known-answer device probe: telemetry says how a device feels, this says whether it
//! still computes correctly.
//!
//! For a device with the MATVEC capability whose backend knows the weights it programmed
//! (`Device::programmed_weights`), the probe poses A x = b with a known f64 solution and runs
//! solver-probe's known-answer refinement with every operator product computed by the device
//! (`solver_probe::known_answer`). The device's supervisor owns one [`KnownAnswerProbe`] and
//! drives it on its own task (only a supervisor calls its device), on `[probe.known_answer]
//! interval`, right after a successful calibration, and on demand (RunDiagnostics FULL). One
//! probe is bounded by `deadline`, products included, so a device's regular reads wait at most
//! that long behind it; health reporting never waits (it reads the published status).
//!
//! Judgement, with the numbers in each message:
//! - the first probe after the agent starts or after a calibration is the **baseline**;
//! - PRECISION_INSUFFICIENT when the baseline does not reach `target_error` within `steps`
//!   products: freshly calibrated, the array cannot deliver what a refinement on it needs;
//! - CALIBRATION_DRIFT when two probes in a row contract slower than `drift_ratio` × the
//!   baseline's rate (and slower than 2^-bits, one unit of the array's precision), or no
//!   longer reach the target; at once, and critical, when one diverges. Drift does not undo
//!   itself, so the condition stays until a calibration: that starts a new baseline, and the
//!   probe run right after it clears the condition when it passes.
//! - The baseline is the worst of three runs: one run's rate varies with read noise.
//!
//! A probe that fails at the device (an error, the deadline) changes no condition: the
//! regular reads report an unreachable device, and a missed probe is no evidence either way.

use std::time::{Duration, SystemTime};

use health_hal::{Condition, ConditionCode, Device, Severity};
use solver_probe::known_answer::{
    default_solution, KnownAnswer, KnownAnswerOptions, KnownAnswerProblem, Verdict,
};

use crate::config::KnownAnswerConfig;
use crate::model::KnownAnswerSummary;

/// How one probe ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeRun {
    /// It ran and the device computes as well as its baseline.
    Passed(String),
    /// It ran and found drift or too little precision: the findings are now conditions.
    Failing(String),
    /// It could not run or did not finish (no weights, a device error, the deadline): no
    /// condition changed, so the message is the only place this shows.
    Unfinished(String),
}

impl ProbeRun {
    pub fn message(&self) -> &str {
        match self {
            ProbeRun::Passed(m) | ProbeRun::Failing(m) | ProbeRun::Unfinished(m) => m,
        }
    }
}

/// One device's probe state: the problem (built once from the device's weights), the
/// baseline, the last result and the conditions it implies.
pub struct KnownAnswerProbe {
    cfg: KnownAnswerConfig,
    problem: Option<Result<KnownAnswerProblem, String>>,
    baseline: Option<KnownAnswer>,
    last: Option<KnownAnswerSummary>,
    findings: Vec<(ConditionCode, Severity, String)>,
    /// Probes in a row over the drift limit: two are needed (one noisy run is not drift),
    /// unless the refinement diverges.
    strikes: u32,
    drift_latched: bool,
}

impl KnownAnswerProbe {
    pub fn new(cfg: KnownAnswerConfig) -> KnownAnswerProbe {
        KnownAnswerProbe {
            cfg,
            problem: None,
            baseline: None,
            last: None,
            findings: Vec::new(),
            strikes: 0,
            drift_latched: false,
        }
    }

    pub fn interval(&self) -> Duration {
        self.cfg.interval
    }

    pub fn last(&self) -> Option<&KnownAnswerSummary> {
        self.last.as_ref()
    }

    /// The conditions the probes so far imply about `subject`, dated `now` (the supervisor's
    /// tracker keeps their start times).
    pub fn conditions(&self, subject: &str, now: SystemTime) -> Vec<Condition> {
        self.findings
            .iter()
            .map(|(code, sev, msg)| Condition::new(*code, *sev, subject, msg, now))
            .collect()
    }

    /// The array was just reprogrammed: the next probe is the new baseline.
    pub fn calibrated(&mut self) {
        self.baseline = None;
        self.strikes = 0;
        self.drift_latched = false;
    }

    /// Runs one probe on `device` under the deadline (the baseline is three runs, under the
    /// same deadline). `bits` is the device's EFFECTIVE_BITS reading, if it has one. Returns
    /// whether the device passes, and a one-line summary.
    pub async fn run(&mut self, device: &dyn Device, bits: Option<f64>) -> ProbeRun {
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + self.cfg.deadline;
        let opts = KnownAnswerOptions {
            max_steps: self.cfg.steps,
            target_error: self.cfg.target_error,
        };
        let problem = self.problem.get_or_insert_with(|| build_problem(device));
        let problem = match &*problem {
            Ok(p) => p,
            Err(e) => return ProbeRun::Unfinished(e.clone()),
        };
        // One run's rate varies with read noise; the baseline is the worst of three, so a
        // healthy array does not look drifted against a lucky first run.
        let runs = if self.baseline.is_none() {
            BASELINE_RUNS
        } else {
            1
        };
        let mut results: Vec<KnownAnswer> = Vec::with_capacity(runs);
        for _ in 0..runs {
            match run_once(problem, opts, device, deadline, self.cfg.deadline).await {
                Ok(r) => results.push(r),
                Err((partial, f)) => {
                    let msg = format!("known-answer probe did not finish: {f}");
                    let duration = t0.elapsed();
                    self.last = partial
                        .map(|p| summary(&p, "failed", duration, None, msg.clone()))
                        .or(self.last.take());
                    return ProbeRun::Unfinished(msg);
                }
            }
        }
        let duration = t0.elapsed();
        let worst = |a: &KnownAnswer, b: &KnownAnswer| {
            (a.verdict != Verdict::Converged)
                .cmp(&(b.verdict != Verdict::Converged))
                .then(a.rate.total_cmp(&b.rate))
        };
        let Some(result) = results.iter().max_by(|a, b| worst(a, b)).cloned() else {
            return ProbeRun::Unfinished("known-answer probe: no run".to_string());
        };
        let baseline = self.baseline.get_or_insert_with(|| result.clone()).clone();
        let findings = judge(&result, &baseline, &self.cfg, bits);
        let drift = findings
            .iter()
            .any(|(c, _, _)| *c == ConditionCode::CalibrationDrift);
        if !drift {
            self.strikes = 0;
            // Drift does not undo itself: once reported it stays until a calibration.
            if !self.drift_latched {
                self.findings = findings;
            }
        } else {
            self.strikes += 1;
            if self.strikes >= 2 || result.verdict == Verdict::DivergedOrStalled {
                self.drift_latched = true;
                self.findings = findings;
            }
        }
        let passed = self.findings.is_empty();
        let msg = format!(
            "known-answer probe {}: error {:.2e} after {} products, contraction {:.3}/step (baseline {:.3}), device product error {:.2e}, {:.1} ms",
            result.verdict.as_str(),
            result.relative_error,
            result.steps,
            result.rate,
            baseline.rate,
            result.matvec_error,
            duration.as_secs_f64() * 1e3
        );
        let msg = match self.findings.first() {
            Some((code, _, m)) if !passed => format!("{msg}; {code}: {m}"),
            _ => msg,
        };
        self.last = Some(summary(
            &result,
            result.verdict.as_str(),
            duration,
            Some(baseline.rate),
            msg.clone(),
        ));
        if passed {
            ProbeRun::Passed(msg)
        } else {
            ProbeRun::Failing(msg)
        }
    }
}

/// Probes that form a baseline.
const BASELINE_RUNS: usize = 3;

/// One refinement with the device's products, each awaited under `deadline`. On failure,
/// the partial result and why.
async fn run_once(
    problem: &KnownAnswerProblem,
    opts: KnownAnswerOptions,
    device: &dyn Device,
    deadline: tokio::time::Instant,
    budget: Duration,
) -> Result<KnownAnswer, (Option<KnownAnswer>, String)> {
    let mut run = problem.start(opts).map_err(|e| (None, e.to_string()))?;
    let mut products = 0;
    while let Some(z) = run.next_input() {
        let failure = match tokio::time::timeout_at(deadline, device.matvec(&z)).await {
            Ok(Ok(y)) => {
                products += 1;
                match run.accept(&y) {
                    Ok(()) => continue,
                    Err(e) => e.to_string(),
                }
            }
            Ok(Err(e)) => format!("device product {} failed: {e}", products + 1),
            Err(_) => format!(
                "no result within the {:.3} s probe deadline after {products} products",
                budget.as_secs_f64()
            ),
        };
        return Err((Some(run.finish()), failure));
    }
    Ok(run.finish())
}

fn build_problem(device: &dyn Device) -> Result<KnownAnswerProblem, String> {
    let w = device.programmed_weights().ok_or_else(|| {
        "known-answer probe: the backend does not report the weights its array holds".to_string()
    })?;
    KnownAnswerProblem::new(w.n, &w.values, &default_solution(w.n)).map_err(|e| e.to_string())
}

fn summary(
    r: &KnownAnswer,
    verdict: &str,
    duration: Duration,
    baseline_rate: Option<f64>,
    message: String,
) -> KnownAnswerSummary {
    KnownAnswerSummary {
        verdict: verdict.to_string(),
        relative_error: r.relative_error,
        rate: r.rate,
        matvec_error: r.matvec_error,
        steps: r.steps as u32,
        finished_at: SystemTime::now(),
        duration,
        baseline_rate,
        message,
    }
}

/// The conditions one probe result implies, against the post-calibration baseline.
pub fn judge(
    result: &KnownAnswer,
    baseline: &KnownAnswer,
    cfg: &KnownAnswerConfig,
    bits_reading: Option<f64>,
) -> Vec<(ConditionCode, Severity, String)> {
    let bits = cfg
        .bits
        .map(f64::from)
        .or(bits_reading.filter(|b| b.is_finite() && *b > 0.0))
        .unwrap_or(8.0);
    if baseline.verdict != Verdict::Converged {
        // Drift against a baseline that already fails says nothing more.
        return vec![(
            ConditionCode::PrecisionInsufficient,
            Severity::Warning,
            format!(
                "known-answer probe after calibration {}: error {:.2e} after {} products (target {:.0e}), contraction {:.3}/step, device product error {:.2e} ({:.1} bits)",
                baseline.verdict.as_str(),
                baseline.relative_error,
                baseline.steps,
                cfg.target_error,
                baseline.rate,
                baseline.matvec_error,
                -baseline.matvec_error.log2()
            ),
        )];
    }
    let limit = (cfg.drift_ratio * baseline.rate).max(2f64.powf(-bits));
    if result.verdict == Verdict::Converged && result.rate <= limit {
        return Vec::new();
    }
    let severity = if result.verdict == Verdict::DivergedOrStalled {
        Severity::Critical
    } else {
        Severity::Warning
    };
    vec![(
        ConditionCode::CalibrationDrift,
        severity,
        format!(
            "known-answer probe {}: contraction {:.3}/step against {:.3} after calibration (limit {:.3}); error {:.2e} after {} products (target {:.0e}); device product error {:.2e}, was {:.2e}",
            result.verdict.as_str(),
            result.rate,
            baseline.rate,
            limit,
            result.relative_error,
            result.steps,
            cfg.target_error,
            result.matvec_error,
            baseline.matvec_error
        ),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;
    use health_hal::sim::{SimDevice, SimOptions};
    use health_hal::{DeviceKind, FaultInjector, FaultKind};

    fn result(verdict: Verdict, rate: f64, err: f64) -> KnownAnswer {
        KnownAnswer {
            verdict,
            relative_error: err,
            history: vec![1.0, err],
            rate,
            matvec_error: 1e-3,
            steps: 6,
        }
    }

    #[test]
    fn judgement_against_the_baseline() {
        let cfg = KnownAnswerConfig::default();
        let base = result(Verdict::Converged, 0.07, 5e-7);
        assert!(judge(&base, &base, &cfg, Some(8.0)).is_empty());
        // Slower, but within drift_ratio × baseline: healthy.
        assert!(judge(&result(Verdict::Converged, 0.13, 8e-7), &base, &cfg, None).is_empty());
        let d = judge(&result(Verdict::Converged, 0.2, 9e-7), &base, &cfg, None);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].0, d[0].1),
            (ConditionCode::CalibrationDrift, Severity::Warning)
        );
        assert!(
            d[0].2.contains("0.200/step") && d[0].2.contains("0.070") && d[0].2.contains("0.140"),
            "{}",
            d[0].2
        );
        let d = judge(
            &result(Verdict::DivergedOrStalled, 1.3, 4.0),
            &base,
            &cfg,
            None,
        );
        assert_eq!(
            (d[0].0, d[0].1),
            (ConditionCode::CalibrationDrift, Severity::Critical)
        );
        let d = judge(
            &result(Verdict::ConvergedSlowly, 0.1, 1e-4),
            &base,
            &cfg,
            None,
        );
        assert_eq!(d[0].0, ConditionCode::CalibrationDrift);
        // A near-exact array: rates below one unit of its precision are never drift.
        let exact = result(Verdict::Converged, 1e-6, 1e-15);
        assert!(judge(
            &result(Verdict::Converged, 1e-3, 1e-12),
            &exact,
            &cfg,
            Some(8.0)
        )
        .is_empty());
        assert!(!judge(
            &result(Verdict::Converged, 1e-3, 1e-12),
            &exact,
            &cfg,
            Some(12.0)
        )
        .is_empty());
        // A baseline that fails is the array's precision, not drift.
        let poor = result(Verdict::ConvergedSlowly, 0.5, 1e-3);
        let d = judge(&poor, &poor, &cfg, None);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, ConditionCode::PrecisionInsufficient);
        assert!(
            d[0].2.contains("converged-slowly") && d[0].2.contains("1e-6"),
            "{}",
            d[0].2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_crossbar_drifts_and_a_calibration_restores_the_baseline() {
        let dev = SimDevice::new("xbar-0", DeviceKind::AnalogCrossbar, SimOptions::default());
        let faults = dev.faults();
        let mut probe = KnownAnswerProbe::new(KnownAnswerConfig::default());
        let run = probe.run(&dev, Some(8.0)).await;
        let (ok, msg) = (
            matches!(run, ProbeRun::Passed(_)),
            run.message().to_string(),
        );
        assert!(ok, "{msg}");
        let base = probe.last().unwrap().clone();
        assert_eq!(base.verdict, "converged", "{base:?}");
        assert!(base.relative_error <= 1e-6 && base.rate < 0.15, "{base:?}");
        assert!(probe.conditions("xbar-0", SystemTime::now()).is_empty());

        faults.inject(FaultKind::Drift);
        tokio::time::advance(Duration::from_secs(40)).await;
        let run = probe.run(&dev, Some(8.0)).await;
        let (ok, msg) = (
            matches!(run, ProbeRun::Passed(_)),
            run.message().to_string(),
        );
        assert!(ok, "one slow run is not yet drift: {msg}");
        assert!(probe.conditions("xbar-0", SystemTime::now()).is_empty());
        let run = probe.run(&dev, Some(8.0)).await;
        let (ok, msg) = (
            matches!(run, ProbeRun::Passed(_)),
            run.message().to_string(),
        );
        assert!(!ok, "drift must show: {msg}");
        let c = probe.conditions("xbar-0", SystemTime::now());
        assert_eq!(c[0].code, ConditionCode::CalibrationDrift, "{c:?}");
        assert!(c[0].message.contains("known-answer"), "{}", c[0].message);
        let drifted = probe.last().unwrap().clone();
        assert!(drifted.rate > 2.0 * base.rate, "{base:?} -> {drifted:?}");
        eprintln!("fresh: {base:?}\ndrifted 40 s: {drifted:?}");

        faults.inject(FaultKind::Clear);
        dev_calibrate(&dev).await;
        probe.calibrated();
        let run = probe.run(&dev, Some(8.0)).await;
        let (ok, msg) = (
            matches!(run, ProbeRun::Passed(_)),
            run.message().to_string(),
        );
        assert!(ok, "{msg}");
        assert!(probe.conditions("xbar-0", SystemTime::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_array_is_not_reported_over_many_probes() {
        // Read noise varies every run; 300 probes over 25 minutes of natural drift must not
        // raise a condition (the baseline is the worst of three, drift needs two strikes).
        for seed in 0..4 {
            let opts = SimOptions {
                seed: Some(seed),
                ..SimOptions::default()
            };
            let dev = SimDevice::new("xbar-0", DeviceKind::AnalogCrossbar, opts);
            let mut probe = KnownAnswerProbe::new(KnownAnswerConfig::default());
            for i in 0..300 {
                let run = probe.run(&dev, Some(8.0)).await;
                let (ok, msg) = (
                    matches!(run, ProbeRun::Passed(_)),
                    run.message().to_string(),
                );
                assert!(ok, "seed {seed}, probe {i}: {msg}");
                tokio::time::advance(Duration::from_secs(5)).await;
            }
        }
    }

    async fn dev_calibrate(dev: &SimDevice) {
        use health_hal::Device as _;
        dev.calibrate().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_without_weights_or_that_hangs_is_reported_not_judged() {
        let loihi = SimDevice::new("l-0", DeviceKind::Loihi2, SimOptions::default());
        let mut probe = KnownAnswerProbe::new(KnownAnswerConfig::default());
        let run = probe.run(&loihi, None).await;
        let (ok, msg) = (
            matches!(run, ProbeRun::Passed(_)),
            run.message().to_string(),
        );
        assert!(!ok && msg.contains("weights"), "{msg}");

        let xbar = SimDevice::new("x-0", DeviceKind::AnalogCrossbar, SimOptions::default());
        xbar.faults().inject(FaultKind::Hang);
        let mut probe = KnownAnswerProbe::new(KnownAnswerConfig::default());
        let t0 = tokio::time::Instant::now();
        let run = probe.run(&xbar, None).await;
        let (ok, msg) = (
            matches!(run, ProbeRun::Passed(_)),
            run.message().to_string(),
        );
        assert!(!ok && msg.contains("deadline"), "{msg}");
        assert_eq!(t0.elapsed(), KnownAnswerConfig::default().deadline);
        assert_eq!(probe.last().unwrap().verdict, "failed");
        assert!(probe.conditions("x-0", SystemTime::now()).is_empty());
    }
}
