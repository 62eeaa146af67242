//! Solver/preconditioner comparison: runs every pair that fits the matrix and reports the best.
//!
//! A matrix that is numerically symmetric with a positive diagonal is treated as an SPD
//! candidate: CG with none/Jacobi/ILU(0)/IC(0). Otherwise (or when no CG run converges)
//! GMRES(m) and BiCGSTAB run with none/Jacobi/ILU(0). The best run is the converged one with
//! the fewest iterations, then the least time; the iteration reduction compares it with the same
//! method without preconditioning.

use std::time::Instant;

use serde::Serialize;
use sprs::CsMat;

use super::{bicgstab, cg, check_len, gmres, ConvergedReason, Csr, KrylovError};
use super::{SolveOptions, SolveResult};
use crate::precond::{Ic0, Identity, Ilu0, Jacobi, PrecondError, Preconditioner};

/// A Krylov method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Method {
    /// Conjugate gradients (SPD).
    Cg,
    /// Restarted GMRES(m), right preconditioning.
    Gmres,
    /// BiCGSTAB, right preconditioning.
    Bicgstab,
}

impl Method {
    /// `cg`, `gmres` or `bicgstab` (case-insensitive).
    pub fn parse(name: &str) -> Option<Method> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cg" => Some(Self::Cg),
            "gmres" => Some(Self::Gmres),
            "bicgstab" => Some(Self::Bicgstab),
            _ => None,
        }
    }
}

/// A preconditioner choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PcKind {
    /// No preconditioning.
    None,
    /// Inverse diagonal.
    Jacobi,
    /// Incomplete LU, zero fill.
    Ilu0,
    /// Incomplete Cholesky, zero fill (SPD only).
    Ic0,
}

impl PcKind {
    /// The kind a solver's configuration names: `none`, `jacobi`, `ilu`/`ilu0`, `ic`/`ic0`
    /// (case-insensitive), as SciPy-based solvers and the runbooks spell them.
    pub fn parse(name: &str) -> Option<PcKind> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Some(Self::None),
            "jacobi" => Some(Self::Jacobi),
            "ilu" | "ilu0" => Some(Self::Ilu0),
            "ic" | "ic0" => Some(Self::Ic0),
            _ => None,
        }
    }

    /// Short name, as [`Preconditioner::name`].
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Jacobi => "jacobi",
            Self::Ilu0 => "ilu0",
            Self::Ic0 => "ic0",
        }
    }
}

/// Build a preconditioner of the given kind for `a`.
pub fn build_preconditioner(
    kind: PcKind,
    a: &CsMat<f64>,
) -> Result<Box<dyn Preconditioner>, PrecondError> {
    Ok(match kind {
        PcKind::None => Box::new(Identity),
        PcKind::Jacobi => Box::new(Jacobi::new(a)?),
        PcKind::Ilu0 => Box::new(Ilu0::new(a)?),
        PcKind::Ic0 => Box::new(Ic0::new(a)?),
    })
}

/// Run `method` with a ready preconditioner from a zero initial guess.
pub fn solve(
    method: Method,
    a: &CsMat<f64>,
    b: &[f64],
    pc: &dyn Preconditioner,
    opts: &SolveOptions,
) -> Result<SolveResult, KrylovError> {
    match method {
        Method::Cg => cg(a, b, None, pc, opts),
        Method::Gmres => gmres(a, b, None, pc, opts),
        Method::Bicgstab => bicgstab(a, b, None, pc, opts),
    }
}

/// Build the preconditioner and solve. An IC(0) non-positive pivot is not an error: it is the
/// result `DIVERGED_INDEFINITE_PC` after 0 iterations. Other preconditioner failures (zero
/// diagonal, zero ILU pivot) are errors.
pub fn solve_with(
    method: Method,
    kind: PcKind,
    a: &CsMat<f64>,
    b: &[f64],
    opts: &SolveOptions,
) -> Result<SolveResult, KrylovError> {
    let start = Instant::now();
    match build_preconditioner(kind, a) {
        Ok(pc) => solve(method, a, b, pc.as_ref(), opts),
        Err(PrecondError::NonPositivePivot { .. }) => {
            let n = Csr::new(a)?.n();
            check_len("right-hand side b", n, b.len())?;
            let r0 = b.iter().map(|v| v * v).sum::<f64>().sqrt();
            Ok(SolveResult {
                reason: ConvergedReason::DivergedIndefinitePc,
                iterations: 0,
                residual_history: vec![r0],
                rate: None,
                elapsed: start.elapsed(),
                time_budget_exceeded: false,
                x: vec![0.0; n],
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// One row of a [`Comparison`]: a method/preconditioner pair and how it did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// Krylov method.
    pub method: Method,
    /// Preconditioner name (`none`, `jacobi`, `ilu0`, `ic0`).
    pub preconditioner: &'static str,
    /// Stop reason; `None` when the preconditioner could not be built (see `error`).
    pub reason: Option<ConvergedReason>,
    /// Iterations performed.
    pub iterations: usize,
    /// Last unpreconditioned residual norm.
    pub final_residual: f64,
    /// Relative final residual `‖r‖/‖r₀‖`.
    pub relative_residual: f64,
    /// Geometric-mean reduction per iteration.
    pub rate: Option<f64>,
    /// Preconditioner set-up time in seconds.
    pub setup_secs: f64,
    /// Solve time in seconds.
    pub solve_secs: f64,
    /// Why the preconditioner could not be built.
    pub error: Option<String>,
    /// The solve stopped because the probe's time budget was spent, not at `max_iter`: the
    /// run says nothing about convergence.
    pub out_of_time: bool,
}

/// Result of [`compare`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Whether the matrix was treated as an SPD candidate (symmetric, positive diagonal).
    pub spd_candidate: bool,
    /// All runs, in the order they were made.
    pub runs: Vec<RunSummary>,
    /// Index into `runs` of the best converged run.
    pub best: Option<usize>,
    /// Iterations without preconditioning divided by the best run's iterations, same method.
    /// When the unpreconditioned run did not converge its iteration count is used anyway, so
    /// the value is then a lower bound (see `baseline_converged`).
    pub iteration_reduction: Option<f64>,
    /// Whether the unpreconditioned baseline of the best method converged.
    pub baseline_converged: Option<bool>,
}

impl Comparison {
    /// The best run, if any converged.
    pub fn best_run(&self) -> Option<&RunSummary> {
        self.best.and_then(|i| self.runs.get(i))
    }
}

/// Numerical symmetry: `|a_ij − a_ji| ≤ tol · max|a|` for all entries.
pub fn is_symmetric(a: &CsMat<f64>, tol: f64) -> Result<bool, KrylovError> {
    let m = Csr::new(a)?;
    let scale = m.data().iter().fold(0.0f64, |s, v| s.max(v.abs()));
    let thr = tol * scale;
    for i in 0..m.n() {
        let (cols, vals) = m.row(i);
        for (&j, &v) in cols.iter().zip(vals) {
            if j <= i {
                continue;
            }
            let (cj, vj) = m.row(j);
            let t = match cj.binary_search(&i) {
                Ok(k) => vj[k],
                Err(_) => 0.0,
            };
            if (v - t).abs() > thr || !(v - t).is_finite() {
                return Ok(false);
            }
        }
        // Entries below the diagonal without a partner above are caught from the other row.
        for (&j, &v) in cols.iter().zip(vals) {
            if j >= i {
                break;
            }
            let (cj, _) = m.row(j);
            if cj.binary_search(&i).is_err() && v.abs() > thr {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn positive_diagonal(a: &CsMat<f64>) -> Result<bool, KrylovError> {
    let m = Csr::new(a)?;
    Ok((0..m.n()).all(|i| {
        let (c, v) = m.row(i);
        matches!(c.binary_search(&i), Ok(k) if v[k] > 0.0)
    }))
}

/// Runs one method/preconditioner pair (what [`compare`] runs for each pair).
pub fn run_pair(
    method: Method,
    kind: PcKind,
    a: &CsMat<f64>,
    b: &[f64],
    opts: &SolveOptions,
) -> Result<RunSummary, KrylovError> {
    let t0 = Instant::now();
    let built = build_preconditioner(kind, a);
    let setup_secs = t0.elapsed().as_secs_f64();
    let res = match built {
        Ok(pc) => solve(method, a, b, pc.as_ref(), opts)?,
        Err(PrecondError::NonPositivePivot { .. }) => solve_with(method, kind, a, b, opts)?,
        Err(e) => {
            return Ok(RunSummary {
                method,
                preconditioner: kind.name(),
                reason: None,
                iterations: 0,
                final_residual: f64::NAN,
                relative_residual: f64::NAN,
                rate: None,
                setup_secs,
                solve_secs: 0.0,
                error: Some(e.to_string()),
                out_of_time: false,
            })
        }
    };
    let r0 = res.residual_history.first().copied().unwrap_or(f64::NAN);
    let rf = res.final_residual();
    Ok(RunSummary {
        method,
        preconditioner: kind.name(),
        reason: Some(res.reason),
        iterations: res.iterations,
        final_residual: rf,
        relative_residual: if r0 > 0.0 { rf / r0 } else { 0.0 },
        rate: res.rate,
        setup_secs,
        solve_secs: res.elapsed.as_secs_f64(),
        error: None,
        out_of_time: res.time_budget_exceeded,
    })
}

/// Run every fitting method/preconditioner pair on `A x = b` and pick the best.
pub fn compare(a: &CsMat<f64>, b: &[f64], opts: &SolveOptions) -> Result<Comparison, KrylovError> {
    let n = Csr::new(a)?.n();
    if b.len() != n {
        return Err(KrylovError::DimensionMismatch {
            what: "right-hand side b",
            expected: n,
            got: b.len(),
        });
    }
    let spd_candidate = is_symmetric(a, 1e-12)? && positive_diagonal(a)?;
    let mut runs = Vec::new();
    if spd_candidate {
        for kind in [PcKind::None, PcKind::Jacobi, PcKind::Ilu0, PcKind::Ic0] {
            runs.push(run_pair(Method::Cg, kind, a, b, opts)?);
        }
    }
    let any_converged = |runs: &[RunSummary]| {
        runs.iter()
            .any(|r| r.reason.is_some_and(ConvergedReason::is_converged))
    };
    if !spd_candidate || !any_converged(&runs) {
        for method in [Method::Gmres, Method::Bicgstab] {
            for kind in [PcKind::None, PcKind::Jacobi, PcKind::Ilu0] {
                runs.push(run_pair(method, kind, a, b, opts)?);
            }
        }
    }
    let best = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.reason.is_some_and(ConvergedReason::is_converged))
        .min_by(|(_, x), (_, y)| {
            x.iterations
                .cmp(&y.iterations)
                .then((x.setup_secs + x.solve_secs).total_cmp(&(y.setup_secs + y.solve_secs)))
        })
        .map(|(i, _)| i);
    let (iteration_reduction, baseline_converged) = match best.map(|i| &runs[i]) {
        Some(br) => {
            let base = runs
                .iter()
                .find(|r| r.method == br.method && r.preconditioner == "none");
            match base {
                Some(base) if br.iterations > 0 => (
                    Some(base.iterations as f64 / br.iterations as f64),
                    Some(base.reason.is_some_and(ConvergedReason::is_converged)),
                ),
                Some(base) => (
                    None,
                    Some(base.reason.is_some_and(ConvergedReason::is_converged)),
                ),
                None => (None, None),
            }
        }
        None => (None, None),
    };
    Ok(Comparison {
        spd_candidate,
        runs,
        best,
        iteration_reduction,
        baseline_converged,
    })
}
