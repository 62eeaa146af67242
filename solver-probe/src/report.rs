//! The probe's report: everything the analyses say about one system, and the findings an
//! operator acts on (ILL_CONDITIONED, NOT_CONVERGING, PRECISION_INSUFFICIENT, PROBE_FAILED),
//! each with the numbers behind it and what to do.
//!
//! Convergence is judged as the solver runs when its setting is given
//! ([`ProbeOptions::solver`], with its `rtol`, `max_iter` and `restart` in
//! [`ProbeOptions::solve`]): NOT_CONVERGING then means "your solver, at your numbers, does not
//! converge", and names the pair that would. A solve the probe's own time budget cut short
//! proves nothing about the solver: that is PROBE_FAILED, never NOT_CONVERGING.
//!
//! Each analysis fails on its own: a condition estimate that cannot be made (too large for the
//! dense path, not SPD for Lanczos) is recorded as such and the rest of the report still
//! stands. The JSON form (`serde_json::to_string(&report)`) is the stable schema the agent and
//! `solver-probe analyze --json` share.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use sprs::CsMat;

use crate::cond::{self, Estimate, MonteCarlo, Refinement, ScaledCondition, ShiftRecommendation};
use crate::krylov::{compare, run_pair, Comparison, Method, PcKind, RunSummary, SolveOptions};
use crate::read::{read_matrix, read_vector, Budget, ReadError};
use crate::structure::{analyze as analyze_structure, Structure};

/// Unit roundoff of f64.
const U: f64 = f64::EPSILON / 2.0;

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub budget: Budget,
    /// κ at or above this is ILL_CONDITIONED (the runbook's rule: 1e12).
    pub kappa_threshold: f64,
    /// Conductance bits of the analog array the system is meant for, if any.
    pub bits: Option<u32>,
    /// Relative read noise of that array (standard deviation).
    pub read_noise: f64,
    pub solve: SolveOptions,
    /// The solver's own method and preconditioner, when known: convergence is judged on them.
    pub solver: Option<SolverSetting>,
    pub monte_carlo_trials: usize,
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            budget: Budget::default(),
            kappa_threshold: 1e12,
            bits: None,
            read_noise: 0.0,
            solve: SolveOptions {
                time_budget: Some(Duration::from_secs(30)),
                ..SolveOptions::default()
            },
            solver: None,
            monte_carlo_trials: 20,
            seed: 0x5eed,
        }
    }
}

/// The method and preconditioner the watched solver is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SolverSetting {
    pub method: Method,
    pub preconditioner: PcKind,
}

impl SolverSetting {
    /// The setting named by a configuration (`method = "gmres"`, `preconditioner = "ilu"`):
    /// `None` when neither is given. A preconditioner alone means GMRES, the runbook solver's
    /// method; a method alone means no preconditioner. The error says what was expected.
    pub fn from_names(
        method: Option<&str>,
        preconditioner: Option<&str>,
    ) -> Result<Option<SolverSetting>, String> {
        if method.is_none() && preconditioner.is_none() {
            return Ok(None);
        }
        let method = match method {
            None => Method::Gmres,
            Some(m) => Method::parse(m)
                .ok_or_else(|| format!("method: expected cg, gmres or bicgstab, found {m:?}"))?,
        };
        let preconditioner = match preconditioner {
            None => PcKind::None,
            Some(p) => PcKind::parse(p).ok_or_else(|| {
                format!(
                    "preconditioner: expected none, jacobi, ilu (ilu0) or ic (ic0), found {p:?}"
                )
            })?,
        };
        if preconditioner == PcKind::Ic0 && method != Method::Cg {
            return Err("preconditioner: ic (incomplete Cholesky) goes with method cg".into());
        }
        Ok(Some(SolverSetting {
            method,
            preconditioner,
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FindingCode {
    IllConditioned,
    NotConverging,
    PrecisionInsufficient,
    /// The probe could not judge convergence (its solves ran out of its time budget, or the
    /// comparison failed): a fault of the probe's run, not of the solver.
    ProbeFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSeverity {
    Warning,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: FindingCode,
    pub severity: FindingSeverity,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalogReport {
    pub bits: u32,
    pub read_noise: f64,
    /// κ·2^-b / (1 − κ·2^-b); `None` when κ·2^-b ≥ 1 (no bound: the array may not solve it).
    pub worst_case_error: Option<f64>,
    pub monte_carlo: Option<MonteCarlo>,
    pub refinement: Option<Refinement>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub file: String,
    pub structure: Structure,
    pub conditioning: Option<Estimate>,
    pub conditioning_error: Option<String>,
    /// κ after Jacobi or equilibration scaling, when κ is at or above the threshold.
    pub scaling: Option<ScaledCondition>,
    /// The smallest diagonal shift bringing κ under the threshold, and its cost in accuracy.
    pub shift: Option<ShiftRecommendation>,
    pub convergence: Option<Comparison>,
    pub convergence_error: Option<String>,
    /// The run with the solver's own setting ([`ProbeOptions::solver`]), at its tolerances.
    pub solver_run: Option<RunSummary>,
    /// Relative solution error double precision can reach, ≈ κ·u (u = 2^-53).
    pub reachable_relative_error: Option<f64>,
    pub analog: Option<AnalogReport>,
    pub findings: Vec<Finding>,
    pub elapsed_secs: f64,
}

/// Reads `path` (and the optional right-hand side) and analyzes it.
pub fn analyze_file(
    path: &Path,
    rhs: Option<&Path>,
    opts: &ProbeOptions,
) -> Result<Report, ReadError> {
    let a = read_matrix(path, &opts.budget)?;
    let b = match rhs {
        Some(p) => {
            let b = read_vector(p, &opts.budget)?;
            if b.len() != a.rows() {
                return Err(ReadError::Invalid {
                    file: p.display().to_string(),
                    message: format!(
                        "right-hand side has {} entries, the matrix is {} x {}",
                        b.len(),
                        a.rows(),
                        a.cols()
                    ),
                });
            }
            Some(b)
        }
        None => None,
    };
    Ok(analyze(&a, b, &path.display().to_string(), opts))
}

/// Analyzes a square CSR matrix. Without `b`, the solvers use `b = A·1` (so the exact solution
/// is known to be all ones).
pub fn analyze(a: &CsMat<f64>, b: Option<Vec<f64>>, file: &str, opts: &ProbeOptions) -> Report {
    let t0 = Instant::now();
    let structure = analyze_structure(a);
    // The sparse factorizations share the read budget's byte limit.
    let estimate_opts = cond::EstimateOptions {
        lanczos: cond::LanczosOptions {
            max_factor_bytes: opts.budget.max_bytes.min(cond::DEFAULT_FACTOR_BYTES),
            ..cond::LanczosOptions::default()
        },
        ..cond::EstimateOptions::default()
    };
    let (conditioning, conditioning_error) = match cond::estimate_with(a, &estimate_opts) {
        Ok(e) => (Some(e), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let kappa = conditioning.as_ref().and_then(|e| e.kappa);
    let singular = conditioning
        .as_ref()
        .is_some_and(|e| e.numerically_singular);
    let ill = singular || kappa.is_some_and(|k| k >= opts.kappa_threshold);
    let (scaling, shift) = if ill {
        (
            cond::scaled_condition(a).ok(),
            cond::shift_for_threshold(a, opts.kappa_threshold).ok(),
        )
    } else {
        (None, None)
    };

    let b = b.unwrap_or_else(|| {
        let ones = vec![1.0; a.cols()];
        let mut y = vec![0.0; a.rows()];
        for (i, row) in a.outer_iterator().enumerate() {
            y[i] = row.iter().map(|(j, v)| v * ones[j]).sum();
        }
        y
    });
    let (convergence, convergence_error) = match compare(a, &b, &opts.solve) {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let solver_run = opts.solver.and_then(|s| {
        let name = s.preconditioner.name();
        let ran = convergence.as_ref().and_then(|c| {
            c.runs
                .iter()
                .find(|r| r.method == s.method && r.preconditioner == name)
        });
        match ran {
            Some(r) => Some(r.clone()),
            None => run_pair(s.method, s.preconditioner, a, &b, &opts.solve).ok(),
        }
    });

    let analog = opts.bits.map(|bits| {
        let mut errors = Vec::new();
        let worst_case_error = kappa.and_then(|k| cond::analog_bound(k, bits));
        let monte_carlo =
            cond::monte_carlo_typical(a, bits, opts.read_noise, opts.monte_carlo_trials, opts.seed)
                .map_err(|e| errors.push(format!("monte carlo: {e}")))
                .ok();
        let refinement = cond::iterative_refinement(a, &b, bits, opts.read_noise, 50, opts.seed)
            .map_err(|e| errors.push(format!("iterative refinement: {e}")))
            .ok();
        AnalogReport {
            bits,
            read_noise: opts.read_noise,
            worst_case_error,
            monte_carlo,
            refinement,
            errors,
        }
    });

    let mut report = Report {
        file: file.to_string(),
        structure,
        conditioning,
        conditioning_error,
        scaling,
        shift,
        convergence,
        convergence_error,
        solver_run,
        reachable_relative_error: kappa.map(|k| (k * U).max(U)),
        analog,
        findings: Vec::new(),
        elapsed_secs: 0.0,
    };
    report.findings = findings(&report, opts);
    report.elapsed_secs = t0.elapsed().as_secs_f64();
    report
}

fn findings(r: &Report, opts: &ProbeOptions) -> Vec<Finding> {
    [
        (FindingCode::IllConditioned, ill_conditioned(r, opts)),
        (FindingCode::NotConverging, not_converging(r, opts)),
        (
            FindingCode::PrecisionInsufficient,
            precision_insufficient(r),
        ),
        (FindingCode::ProbeFailed, probe_failed(r)),
    ]
    .into_iter()
    .filter_map(|(code, found)| {
        found.map(|(severity, message)| Finding {
            code,
            severity,
            message,
        })
    })
    .collect()
}

/// Each analysis raises at most one finding of its code: its severity and message.
type Raised = Option<(FindingSeverity, String)>;

fn ill_conditioned(r: &Report, opts: &ProbeOptions) -> Raised {
    let e = r.conditioning.as_ref()?;
    let scaled = r.scaling.as_ref().and_then(|s| {
        s.after
            .kappa
            .map(|k| format!("; after {:?} scaling κ = {k:.3e}", s.scaling))
    });
    let shift = r.shift.as_ref().map(|s| {
        format!(
            "; a diagonal shift σ = {:.3e} brings κ to {} at a solution error of about {:.2e}",
            s.sigma,
            s.kappa_after
                .map_or("?".to_string(), |k| format!("{k:.3e}")),
            s.error_measured.unwrap_or(s.error_bound)
        )
    });
    let advice = format!(
        "{}{}",
        scaled.unwrap_or_default(),
        shift.unwrap_or_default()
    );
    if e.numerically_singular {
        Some((
            FindingSeverity::Critical,
            format!("numerically singular (κ ≥ 1/eps by {:?}){advice}", e.method),
        ))
    } else {
        let k = e.kappa.filter(|k| *k >= opts.kappa_threshold)?;
        Some((
            FindingSeverity::Warning,
            format!(
                "κ = {k:.3e} ≥ {:.0e} ({:?}){advice}: regularize and scale",
                opts.kappa_threshold, e.method
            ),
        ))
    }
}

/// Why the probe's convergence runs cannot be judged, if they cannot: the comparison failed,
/// or a run that decides the verdict ran out of the probe's time budget.
fn probe_failed(r: &Report) -> Raised {
    if let Some(e) = &r.convergence_error {
        return Some((
            FindingSeverity::Warning,
            format!("the convergence runs failed: {e}"),
        ));
    }
    let c = r.convergence.as_ref()?;
    let deciding: Vec<&RunSummary> = match &r.solver_run {
        Some(s) => vec![s],
        None if c.best.is_none() => c.runs.iter().collect(),
        None => Vec::new(),
    };
    let cut = deciding.iter().filter(|x| x.out_of_time).count();
    (cut > 0 && !deciding.iter().any(|x| converged(x))).then(|| {
        (
            FindingSeverity::Warning,
            format!(
                "{cut} of {} deciding runs stopped at the probe's time budget, not at max_iter: no verdict on convergence (raise [probe] time_budget, or probe a smaller case)",
                deciding.len()
            ),
        )
    })
}

fn converged(r: &RunSummary) -> bool {
    r.reason.is_some_and(|x| x.is_converged())
}

/// "GMRES(30) + jacobi at rtol 1e-4, max_iter 2000".
fn setting(method: Method, preconditioner: &str, opts: &ProbeOptions) -> String {
    let m = match method {
        Method::Gmres => format!("GMRES({})", opts.solve.restart),
        other => format!("{other:?}").to_uppercase(),
    };
    format!(
        "{m} + {preconditioner} at rtol {:.0e}, max_iter {}",
        opts.solve.rtol, opts.solve.max_iter
    )
}

fn not_converging(r: &Report, opts: &ProbeOptions) -> Raised {
    let c = r.convergence.as_ref()?;
    if let Some(run) = &r.solver_run {
        if converged(run) || run.out_of_time {
            return None; // converges as configured, or no verdict (PROBE_FAILED)
        }
        let seen = match (&run.error, run.reason) {
            (Some(e), _) => format!("cannot start: {e}"),
            (None, Some(reason)) => format!(
                "stops with {} after {} iterations at relative residual {:.1e}",
                reason.as_str(),
                run.iterations,
                run.relative_residual
            ),
            (None, None) => "did not run".to_string(),
        };
        let own = setting(run.method, run.preconditioner, opts);
        return Some(match c.best_run() {
            Some(best) => (
                FindingSeverity::Warning,
                format!(
                    "the solver's setting ({own}) {seen}; {} converges in {} iterations",
                    setting(best.method, best.preconditioner, opts),
                    best.iterations
                ),
            ),
            None => (
                FindingSeverity::Critical,
                format!(
                    "the solver's setting ({own}) {seen}, and no other solver/preconditioner pair converges either ({} runs): regularize or scale the system",
                    c.runs.len()
                ),
            ),
        });
    }
    match c.best_run() {
        None if c.runs.iter().any(|x| x.out_of_time) => None, // PROBE_FAILED says it
        None => Some((
            FindingSeverity::Critical,
            format!(
                "no solver/preconditioner pair reached rtol {:.0e} within max_iter {} ({} runs): regularize, or relax the tolerance",
                opts.solve.rtol,
                opts.solve.max_iter,
                c.runs.len()
            ),
        )),
        Some(best)
            if best.preconditioner != "none"
                && c.baseline_converged == Some(false)
                && !baseline_out_of_time(c, best) =>
        {
            Some((
            FindingSeverity::Warning,
            format!(
                "unpreconditioned {:?} does not converge; {:?} with {} does in {} iterations",
                best.method, best.method, best.preconditioner, best.iterations
            ),
            ))
        }
        Some(_) => None,
    }
}

/// The unpreconditioned run of the best method stopped at the probe's time budget: it proves
/// nothing, so no "does not converge without preconditioning" is claimed.
fn baseline_out_of_time(c: &Comparison, best: &RunSummary) -> bool {
    c.runs
        .iter()
        .any(|r| r.method == best.method && r.preconditioner == "none" && r.out_of_time)
}

fn precision_insufficient(r: &Report) -> Raised {
    let a = r.analog.as_ref()?;
    let refined = a.refinement.as_ref().is_some_and(|x| x.converged);
    match a.worst_case_error {
        None if !refined => Some((
            FindingSeverity::Critical,
            format!(
                "κ·2^-{} ≥ 1: a {}-bit array cannot solve this system, and mixed-precision refinement does not converge",
                a.bits, a.bits
            ),
        )),
        None => Some((
            FindingSeverity::Warning,
            format!(
                "κ·2^-{} ≥ 1: no worst-case bound for a {}-bit array; refinement on the host converges in {} steps",
                a.bits,
                a.bits,
                a.refinement.as_ref().map_or(0, |x| x.steps)
            ),
        )),
        Some(e) if e > 1e-2 => Some((
            FindingSeverity::Warning,
            format!(
                "worst-case relative error {e:.2e} on a {}-bit array{}",
                a.bits,
                if refined { "; mixed-precision refinement converges" } else { "" }
            ),
        )),
        Some(_) => None,
    }
}
