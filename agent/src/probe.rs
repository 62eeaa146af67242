//! The solver probe inside the agent: watched problem files analyzed on an interval, and
//! on-demand runs for `ProbeMatrix`, both on the blocking pool under a time budget.
//!
//! Health reporting never waits on a probe: results are published on a `watch` channel that the
//! node reads when it assembles a snapshot. One probe runs at a time; a run that overruns its
//! budget is reported (and its thread left to finish, since a numeric kernel cannot be
//! interrupted) and no other run starts until it returns, so a pathological matrix costs one
//! thread, never a pile of them. On-demand paths must lie under a configured directory: the
//! agent runs as a privileged user and is not a general file reader.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health_hal::{Condition, ConditionCode, ConditionTracker, Severity};
use solver_probe::read::Budget;
use solver_probe::report::{analyze_file, FindingCode, FindingSeverity, ProbeOptions, Report};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::ProbeConfig;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0}")]
    Input(String),
    #[error("another probe is still running past its budget; try again later")]
    Busy,
    #[error("the probe did not finish within its {0:?} budget")]
    OverBudget(Duration),
}

pub struct Prober {
    cfg: ProbeConfig,
    /// One probe at a time, periodic or on demand.
    running: Arc<Semaphore>,
}

/// Conditions from the last periodic run over the watched files.
pub type ProbeConditions = watch::Receiver<Arc<Vec<Condition>>>;

impl Prober {
    pub fn new(cfg: ProbeConfig) -> Arc<Prober> {
        Arc::new(Prober {
            cfg,
            running: Arc::new(Semaphore::new(1)),
        })
    }

    fn options(&self, bits: Option<u32>, read_noise: f64) -> ProbeOptions {
        let mut o = ProbeOptions {
            budget: Budget {
                max_bytes: self.cfg.max_bytes,
            },
            kappa_threshold: self.cfg.kappa_threshold,
            bits,
            read_noise,
            solver: self.cfg.solver,
            ..ProbeOptions::default()
        };
        // Judged as the solver runs: its tolerance, iteration limit and restart length.
        o.solve.rtol = self.cfg.rtol;
        o.solve.max_iter = self.cfg.max_iter;
        o.solve.restart = self.cfg.restart;
        // Leave the budget's last quarter for everything that is not iterating.
        o.solve.time_budget = Some(self.cfg.time_budget.mul_f64(0.75));
        o
    }

    /// Resolves `path` and checks it lies under one of the configured directories.
    pub fn allowed(&self, path: &Path) -> Result<PathBuf, ProbeError> {
        let real = std::fs::canonicalize(path)
            .map_err(|e| ProbeError::Input(format!("{}: {e}", path.display())))?;
        let ok = self
            .cfg
            .dirs
            .iter()
            .any(|d| std::fs::canonicalize(d).is_ok_and(|d| real.starts_with(d)));
        if ok {
            Ok(real)
        } else {
            Err(ProbeError::NotAllowed(format!(
                "{}: not under a [probe] dirs entry ({})",
                path.display(),
                self.cfg
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// Runs the probe on one file, on the blocking pool, under the time budget.
    pub async fn run(
        &self,
        path: PathBuf,
        bits: Option<u32>,
        read_noise: f64,
    ) -> Result<Report, ProbeError> {
        // Wait for a run in progress (a periodic one, say) rather than refuse at once; a run
        // stuck past its own budget makes this one Busy after the same budget.
        let waiting =
            tokio::time::timeout(self.cfg.time_budget, self.running.clone().acquire_owned());
        let permit = match waiting.await {
            Ok(Ok(p)) => p,
            _ => return Err(ProbeError::Busy),
        };
        let opts = self.options(bits, read_noise);
        let job = tokio::task::spawn_blocking(move || {
            let r = analyze_file(&path, None, &opts);
            drop(permit); // released when the analysis really ends, not when we stop waiting
            r
        });
        match tokio::time::timeout(self.cfg.time_budget, job).await {
            Ok(Ok(Ok(report))) => Ok(report),
            Ok(Ok(Err(e))) => Err(ProbeError::Input(e.to_string())),
            Ok(Err(e)) => Err(ProbeError::Input(format!("the probe task failed: {e}"))),
            Err(_) => Err(ProbeError::OverBudget(self.cfg.time_budget)),
        }
    }
}

/// Findings of one report as conditions about the file.
pub fn conditions(report: &Report, now: SystemTime) -> Vec<Condition> {
    report
        .findings
        .iter()
        .map(|f| {
            let code = match f.code {
                FindingCode::IllConditioned => ConditionCode::IllConditioned,
                FindingCode::NotConverging => ConditionCode::NotConverging,
                FindingCode::PrecisionInsufficient => ConditionCode::PrecisionInsufficient,
                FindingCode::ProbeFailed => ConditionCode::ProbeFailed,
            };
            let severity = match f.severity {
                FindingSeverity::Warning => Severity::Warning,
                FindingSeverity::Critical => Severity::Critical,
            };
            Condition::new(code, severity, report.file.clone(), f.message.clone(), now)
        })
        .collect()
}

/// The periodic probe of the watched files; returns the channel its conditions appear on.
pub fn spawn(prober: Arc<Prober>, cancel: CancellationToken) -> ProbeConditions {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    if prober.cfg.watch.is_empty() {
        return rx;
    }
    tokio::spawn(async move {
        let mut tracker = ConditionTracker::default();
        let mut tick = tokio::time::interval(prober.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut found = Vec::new();
            for pattern in &prober.cfg.watch {
                match glob::glob(pattern) {
                    Ok(paths) => found.extend(paths.flatten()),
                    Err(e) => tracing::warn!(pattern = %pattern, error = %e, "bad probe pattern"),
                }
            }
            found.sort();
            found.dedup();
            let mut all = Vec::new();
            for path in found {
                if cancel.is_cancelled() {
                    return;
                }
                let now = SystemTime::now();
                match prober
                    .run(path.clone(), prober.cfg.bits, prober.cfg.read_noise)
                    .await
                {
                    Ok(report) => all.extend(conditions(&report, now)),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "probe failed");
                        // The probe's failure (unreadable, too big, over budget, busy), not
                        // the solver's: never NOT_CONVERGING.
                        all.push(Condition::new(
                            ConditionCode::ProbeFailed,
                            Severity::Warning,
                            path.display().to_string(),
                            format!("the probe could not analyze it: {e}"),
                            now,
                        ));
                    }
                }
            }
            tx.send_replace(Arc::new(tracker.track(all)));
        }
    });
    rx
}
