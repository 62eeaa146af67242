//! Krylov solvers: CG, restarted GMRES(m) and BiCGSTAB, each ending with a PETSc-style
//! [`ConvergedReason`], plus [`compare`], which tries every solver/preconditioner pair that
//! fits the matrix and reports the best.
//!
//! Conventions shared by all solvers:
//! - The residual history holds the **unpreconditioned** 2-norm `‖b − A x‖` as the solver's
//!   recurrence computes it (CG and BiCGSTAB update `r` recursively; GMRES uses the Givens
//!   residual estimate, which equals the true residual norm in exact arithmetic because GMRES is
//!   **right**-preconditioned). Entry 0 is the initial residual.
//! - Convergence: `‖r‖ ≤ max(rtol·‖r₀‖, atol)`; `CONVERGED_ATOL` when `‖r‖ ≤ atol`, else
//!   `CONVERGED_RTOL`.
//! - Divergence: `‖r‖ > dtol·‖r₀‖` → `DIVERGED_DTOL`; NaN/Inf → `DIVERGED_NANORINF`;
//!   `max_iter` reached, or the time budget spent → `DIVERGED_ITS` (the latter also sets
//!   [`SolveResult::time_budget_exceeded`]); the best residual over the last
//!   `stagnation_window` iterations improving by less than `stagnation_rtol` → `STAGNATED`.
//!   CG's residual is not monotone: on badly scaled SPD systems (D·A·D) it rises above ‖r₀‖
//!   and stays there for half the run while the A-norm error still falls. So CG widens the
//!   window to [`cg_stagnation_window`] (a tenth of its iteration budget `min(n, max_iter)`)
//!   and also requires its energy to have stalled: CG lowers ‖x − x*‖²_A by α_k r_kᵀz_k in
//!   step k (a sum that stays reliable in finite precision: Strakoš & Tichý, ETNA 13, 2002),
//!   and a window whose decrease is below `stagnation_rtol` of the decrease so far is a stall.

mod bicgstab;
mod cg;
mod compare;
mod gmres;
mod parallel;
mod spmv;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use bicgstab::bicgstab;
pub use cg::cg;
pub use compare::{
    build_preconditioner, compare, is_symmetric, run_pair, solve, solve_with, Comparison, Method,
    PcKind, RunSummary,
};
pub use gmres::gmres;
pub use parallel::Workers;
pub(crate) use parallel::{run_parts, split_mut, Split};
pub use spmv::{spmv, Csr};

use crate::precond::{PrecondError, Preconditioner};

/// Why a solve stopped, named as in PETSc's `KSPConvergedReason` (plus `STAGNATED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConvergedReason {
    /// `‖r‖ ≤ rtol·‖r₀‖`.
    ConvergedRtol,
    /// `‖r‖ ≤ atol`.
    ConvergedAtol,
    /// `max_iter` reached or time budget spent.
    DivergedIts,
    /// `‖r‖ > dtol·‖r₀‖`.
    DivergedDtol,
    /// A Krylov recurrence divided by (numerically) zero.
    DivergedBreakdown,
    /// CG found `p·Ap ≤ 0` or `r·z ≤ 0`, or IC(0) met a non-positive pivot.
    DivergedIndefinitePc,
    /// A NaN or Inf appeared.
    DivergedNanorinf,
    /// No meaningful progress over the stagnation window.
    Stagnated,
}

impl ConvergedReason {
    /// The PETSc-style name, e.g. `CONVERGED_RTOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConvergedRtol => "CONVERGED_RTOL",
            Self::ConvergedAtol => "CONVERGED_ATOL",
            Self::DivergedIts => "DIVERGED_ITS",
            Self::DivergedDtol => "DIVERGED_DTOL",
            Self::DivergedBreakdown => "DIVERGED_BREAKDOWN",
            Self::DivergedIndefinitePc => "DIVERGED_INDEFINITE_PC",
            Self::DivergedNanorinf => "DIVERGED_NANORINF",
            Self::Stagnated => "STAGNATED",
        }
    }

    /// True for the two `CONVERGED_*` reasons.
    pub fn is_converged(self) -> bool {
        matches!(self, Self::ConvergedRtol | Self::ConvergedAtol)
    }
}

impl std::fmt::Display for ConvergedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stopping criteria and method parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SolveOptions {
    /// Relative tolerance on `‖r‖/‖r₀‖` (default 1e-8).
    pub rtol: f64,
    /// Absolute tolerance on `‖r‖` (default 1e-50).
    pub atol: f64,
    /// Divergence tolerance on `‖r‖/‖r₀‖` (default 1e5).
    pub dtol: f64,
    /// Iteration limit (default 10000). For GMRES an iteration is one Arnoldi step.
    pub max_iter: usize,
    /// GMRES restart length m (default 30).
    pub restart: usize,
    /// Stagnation window in iterations (default 50; 0 disables the test). CG uses at least
    /// [`cg_stagnation_window`].
    pub stagnation_window: usize,
    /// Minimum relative improvement of the best residual over the window (default 1e-3).
    pub stagnation_rtol: f64,
    /// Wall-clock budget; when spent the solve stops with `DIVERGED_ITS`.
    pub time_budget: Option<Duration>,
}

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            rtol: 1e-8,
            atol: 1e-50,
            dtol: 1e5,
            max_iter: 10_000,
            restart: 30,
            stagnation_window: 50,
            stagnation_rtol: 1e-3,
            time_budget: None,
        }
    }
}

/// The outcome of one solve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SolveResult {
    /// Why the solver stopped.
    pub reason: ConvergedReason,
    /// Iterations performed (GMRES: Arnoldi steps over all restarts).
    pub iterations: usize,
    /// Unpreconditioned residual 2-norm per iteration, entry 0 = initial residual.
    pub residual_history: Vec<f64>,
    /// Geometric-mean residual reduction per iteration, `(‖r_k‖/‖r₀‖)^(1/k)`; `None` when no
    /// iteration ran or the norms are not finite and positive.
    pub rate: Option<f64>,
    /// Wall-clock time of the solve (preconditioner set-up excluded).
    pub elapsed: Duration,
    /// True when the stop was caused by [`SolveOptions::time_budget`].
    pub time_budget_exceeded: bool,
    /// The final iterate.
    pub x: Vec<f64>,
}

impl SolveResult {
    /// Last residual norm in the history.
    pub fn final_residual(&self) -> f64 {
        self.residual_history.last().copied().unwrap_or(f64::NAN)
    }
}

/// Errors from the solvers (bad input, never a numerical failure: those are reasons).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KrylovError {
    /// The matrix is not square.
    #[error("matrix is not square: {rows}x{cols}")]
    NotSquare { rows: usize, cols: usize },
    /// The matrix is stored CSC; convert with `to_csr()`.
    #[error("matrix must be stored CSR (convert with to_csr())")]
    NotCsr,
    /// A vector or preconditioner has the wrong length.
    #[error("{what} has length {got}, expected {expected}")]
    DimensionMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Invalid options.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// A preconditioner could not be built.
    #[error(transparent)]
    Precond(#[from] PrecondError),
}

/// Validate inputs common to all solvers; returns the matrix view, the start vector x₀ and its
/// residual `b − A x₀`.
fn setup<'a>(
    a: &'a sprs::CsMat<f64>,
    b: &[f64],
    x0: Option<&[f64]>,
    pc: &dyn Preconditioner,
    opts: &SolveOptions,
) -> Result<(Csr<'a>, Vec<f64>, Vec<f64>), KrylovError> {
    let m = Csr::for_products(a)?;
    let n = m.n();
    check_len("right-hand side b", n, b.len())?;
    if let Some(d) = pc.dim() {
        check_len("preconditioner", n, d)?;
    }
    let x = match x0 {
        Some(x0) => {
            check_len("initial guess x0", n, x0.len())?;
            x0.to_vec()
        }
        None => vec![0.0; n],
    };
    if opts.rtol.is_nan() || opts.atol.is_nan() || opts.dtol.is_nan() {
        return Err(KrylovError::InvalidOption(
            "rtol, atol and dtol must not be NaN",
        ));
    }
    let mut r = vec![0.0; n];
    residual(&m, b, &x, &mut r);
    Ok((m, x, r))
}

/// `what` has length `got` where the system needs `expected`.
fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), KrylovError> {
    if got == expected {
        Ok(())
    } else {
        Err(KrylovError::DimensionMismatch {
            what,
            expected,
            got,
        })
    }
}

/// Residual bookkeeping and the stopping tests shared by all solvers.
struct Monitor<'o> {
    opts: &'o SolveOptions,
    start: Instant,
    /// Stagnation window in iterations (0: off).
    window: usize,
    r0: f64,
    ttol: f64,
    history: Vec<f64>,
    best: Vec<f64>,
    /// CG only: cumulative energy decrease Σ α_k r_kᵀz_k after each iteration (entry 0 = 0).
    energy: Option<Vec<f64>>,
    time_exceeded: bool,
}

/// The stagnation window CG uses: `stagnation_window`, widened to a tenth of the iteration
/// budget `min(n, max_iter)` (in exact arithmetic CG finishes within n steps); 0 stays 0.
pub fn cg_stagnation_window(opts: &SolveOptions, n: usize) -> usize {
    if opts.stagnation_window == 0 {
        0
    } else {
        opts.stagnation_window.max(n.min(opts.max_iter) / 10)
    }
}

impl<'o> Monitor<'o> {
    fn new(opts: &'o SolveOptions, r0: f64, start: Instant) -> Self {
        Self::with_window(opts, r0, start, opts.stagnation_window)
    }

    fn with_window(opts: &'o SolveOptions, r0: f64, start: Instant, window: usize) -> Self {
        Self {
            opts,
            start,
            window,
            r0,
            ttol: (opts.rtol * r0).max(opts.atol),
            history: vec![r0],
            best: vec![r0],
            energy: None,
            time_exceeded: false,
        }
    }

    /// Tests on the initial residual.
    fn initial(&self) -> Option<ConvergedReason> {
        if !self.r0.is_finite() {
            Some(ConvergedReason::DivergedNanorinf)
        } else if self.r0 <= self.ttol {
            Some(self.converged_reason(self.r0))
        } else if self.opts.max_iter == 0 {
            Some(ConvergedReason::DivergedIts)
        } else {
            None
        }
    }

    fn converged_reason(&self, rnorm: f64) -> ConvergedReason {
        if rnorm <= self.opts.atol {
            ConvergedReason::ConvergedAtol
        } else {
            ConvergedReason::ConvergedRtol
        }
    }

    fn is_converged(&self, rnorm: f64) -> bool {
        rnorm <= self.ttol
    }

    /// Record the residual after iteration `it` (≥ 1) and decide whether to stop.
    /// CG: record the energy decrease α_k r_kᵀz_k of the iteration about to be checked. Once
    /// called, stagnation also needs the energy to have stalled over the window.
    fn record_energy(&mut self, decrease: f64) {
        let e = self.energy.get_or_insert_with(|| vec![0.0]);
        let last = e.last().copied().unwrap_or(0.0);
        e.push(last + decrease.max(0.0));
    }

    /// CG: the energy decrease over the last `w` iterations is still more than
    /// `stagnation_rtol` of the decrease so far.
    fn energy_progressing(&self, w: usize) -> bool {
        match &self.energy {
            Some(e) if e.len() > w => {
                let now = e[e.len() - 1];
                now - e[e.len() - 1 - w] > self.opts.stagnation_rtol * now
            }
            _ => false,
        }
    }

    fn check(&mut self, rnorm: f64, it: usize) -> Option<ConvergedReason> {
        self.history.push(rnorm);
        let prev_best = self.best.last().copied().unwrap_or(rnorm);
        self.best
            .push(if rnorm < prev_best { rnorm } else { prev_best });
        if !rnorm.is_finite() {
            return Some(ConvergedReason::DivergedNanorinf);
        }
        if self.is_converged(rnorm) {
            return Some(self.converged_reason(rnorm));
        }
        if rnorm > self.opts.dtol * self.r0 {
            return Some(ConvergedReason::DivergedDtol);
        }
        if it >= self.opts.max_iter {
            return Some(ConvergedReason::DivergedIts);
        }
        if let Some(budget) = self.opts.time_budget {
            if self.start.elapsed() > budget {
                self.time_exceeded = true;
                return Some(ConvergedReason::DivergedIts);
            }
        }
        let w = self.window;
        if w > 0 && self.best.len() > w {
            let now = self.best[self.best.len() - 1];
            let then = self.best[self.best.len() - 1 - w];
            if now > (1.0 - self.opts.stagnation_rtol) * then && !self.energy_progressing(w) {
                return Some(ConvergedReason::Stagnated);
            }
        }
        None
    }

    fn finish(self, reason: ConvergedReason, iterations: usize, x: Vec<f64>) -> SolveResult {
        let last = self.history.last().copied().unwrap_or(self.r0);
        let rate = if iterations > 0 && self.r0 > 0.0 && self.r0.is_finite() && last.is_finite() {
            Some((last / self.r0).powf(1.0 / iterations as f64))
        } else {
            None
        };
        SolveResult {
            reason,
            iterations,
            residual_history: self.history,
            rate,
            elapsed: self.start.elapsed(),
            time_budget_exceeded: self.time_exceeded,
            x,
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s0 = 0.0;
    let mut s1 = 0.0;
    let mut ac = a.chunks_exact(2);
    let mut bc = b.chunks_exact(2);
    for (x, y) in (&mut ac).zip(&mut bc) {
        s0 += x[0] * y[0];
        s1 += x[1] * y[1];
    }
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        s0 += x * y;
    }
    s0 + s1
}

fn norm2(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// `y += alpha x`.
fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `r = b − A x`.
fn residual(m: &Csr<'_>, b: &[f64], x: &[f64], r: &mut [f64]) {
    m.mul_unchecked_len(x, r);
    for (ri, bi) in r.iter_mut().zip(b) {
        *ri = bi - *ri;
    }
}
