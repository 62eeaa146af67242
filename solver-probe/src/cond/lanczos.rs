//! κ₂ of a symmetric positive definite matrix from Lanczos extremal eigenvalues.
//!
//! λ_max is the largest Ritz value of Lanczos from a seeded random start vector. λ_min
//! converges slowly under Lanczos on A, so it is found with a sparse Cholesky factorization
//! (AMD ordering, [`super::factor`]) when the factor fits [`LanczosOptions::max_factor_bytes`]:
//! shift-invert Lanczos on A⁻¹ ([`super::shift_invert`]), one factor solve per step, about
//! half the solves plain inverse iteration needed (8 against 15 on the 1M-unknown Laplacian).
//! The factorization is also the positive-definiteness test. With the factor, Lanczos for
//! λ_max runs the plain three-term recurrence without storing its basis (the extreme Ritz
//! values are unaffected by the loss of orthogonality, Paige 1980), on a second thread while
//! the factorization runs, so memory stays O(n) besides the factor and the few vectors of the
//! shift-invert basis. [`lanczos_spd_validated`] can also estimate κ₁ on the same factor.
//!
//! When the factor does not fit (or `cholesky_max_n` excludes it), Lanczos keeps its basis
//! with full reorthogonalization (capped by `max_basis_bytes`) and plain inverse iteration
//! starts from the smallest Ritz vector, solving with conjugate gradients (inexact solves
//! would break the Lanczos relation of the shift-invert method); the note says why.
//!
//! The bounds reported come from the eigenpair residuals (|λ − θ| ≤ ‖A y − θ y‖ for a unit y),
//! assuming the iteration converged to the smallest eigenvalue (it converges to the
//! eigenvector with the smallest eigenvalue unless the start vector is orthogonal to it, which
//! a random start vector is with probability zero).

use faer::{Mat, Side};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sprs::CsMat;
use std::sync::atomic::{AtomicBool, Ordering};

use super::factor::{FactorError, SparseCholesky};
use super::onenorm::kappa1_on_cholesky;
use super::shift_invert::{smallest_eigen, Limits};
use super::{sparse, CondError, Confidence, Estimate, Method, Norm};
use crate::krylov::{Csr, Split, Workers};

/// Options for [`lanczos_spd_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosOptions {
    /// Maximum Lanczos steps (capped at n).
    pub steps: usize,
    /// Seed of the random start vector.
    pub seed: u64,
    /// Memory cap for the stored Lanczos basis (steps·n·8 bytes) on the CG path; steps are
    /// reduced to fit, but never below 20. Shift-invert Lanczos on the factor stores at most
    /// 16 vectors and fewer when this cap says so (restarting when full).
    pub max_basis_bytes: usize,
    /// Refine λ_min by inverse iteration (otherwise report the Ritz values only).
    pub refine: bool,
    /// Largest n for which λ_min is refined with a sparse Cholesky factorization; CG above.
    pub cholesky_max_n: usize,
    /// Byte budget of the sparse Cholesky factor (values plus workspace, known from the
    /// symbolic analysis before the numeric factorization); CG when it does not fit.
    pub max_factor_bytes: usize,
    /// Maximum solves for λ_min (shift-invert Lanczos steps, or CG inverse iterations).
    pub max_inverse_iterations: usize,
    /// Stop the λ_min iteration when the residual ‖A x − ρ x‖ ≤ tol·λ_max or ρ stalls.
    pub tol: f64,
    /// Relative residual of each CG solve.
    pub cg_rtol: f64,
    /// Iteration cap of each CG solve.
    pub cg_max_iter: usize,
}

/// Relative change of the largest Ritz value over 10 steps at which λ_max counts as settled.
const TOP_SETTLED: f64 = 1e-5;

/// Default byte budget of a sparse factorization (1.5 GiB: with the matrix and a few vectors
/// of a 1M-unknown system this keeps the probe under 2 GB).
pub const DEFAULT_FACTOR_BYTES: usize = 3 << 29;

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions {
            steps: 120,
            seed: 42,
            max_basis_bytes: 512 << 20,
            refine: true,
            cholesky_max_n: usize::MAX,
            max_factor_bytes: DEFAULT_FACTOR_BYTES,
            max_inverse_iterations: 60,
            tol: 1e-10,
            cg_rtol: 1e-12,
            cg_max_iter: 20_000,
        }
    }
}

/// κ₂ by Lanczos (`steps`, seeded start vector) plus inverse iteration for λ_min.
pub fn lanczos_spd(a: &CsMat<f64>, steps: usize, seed: u64) -> Result<Estimate, CondError> {
    lanczos_spd_with(
        a,
        &LanczosOptions {
            steps,
            seed,
            ..LanczosOptions::default()
        },
    )
}

struct Ritz {
    theta_min: f64,
    theta_max: f64,
    res_min: f64,
    res_max: f64,
    y_min: Vec<f64>,
    steps: usize,
}

/// Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix with diagonal
/// `alpha` and off-diagonal `beta[..m-1]`.
pub(crate) fn tridiagonal_eigen(
    alpha: &[f64],
    beta: &[f64],
) -> Result<(Vec<f64>, Mat<f64>), CondError> {
    let m = alpha.len();
    let t = Mat::<f64>::from_fn(m, m, |i, j| {
        if i == j {
            alpha[i]
        } else if i == j + 1 {
            beta[j]
        } else if j == i + 1 {
            beta[i]
        } else {
            0.0
        }
    });
    let eig = t
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| CondError::Numerical(format!("tridiagonal eigensolver failed: {e:?}")))?;
    let values = (0..m).map(|i| eig.S().column_vector()[i]).collect();
    Ok((values, eig.U().to_owned()))
}

fn random_unit(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut q: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
    let nq = sparse::norm2(&q);
    q.iter_mut().for_each(|v| *v /= nq);
    q
}

fn check_finite(alpha: &[f64], beta: &[f64]) -> Result<(), CondError> {
    if alpha.iter().chain(beta).any(|v| !v.is_finite()) {
        return Err(CondError::Numerical(
            "Lanczos recurrence overflowed (entries too large)".into(),
        ));
    }
    Ok(())
}

fn extremes(values: &[f64]) -> (usize, usize) {
    let (mut imin, mut imax) = (0, 0);
    for (i, v) in values.iter().enumerate() {
        if *v < values[imin] {
            imin = i;
        }
        if *v > values[imax] {
            imax = i;
        }
    }
    (imin, imax)
}

/// Lanczos with a stored basis and full reorthogonalization: both extreme Ritz pairs.
fn lanczos(a: &CsMat<f64>, steps: usize, seed: u64) -> Result<Ritz, CondError> {
    let n = a.rows();
    let k = steps.clamp(1, n);
    let mut q = random_unit(n, seed);
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(k);
    let mut alpha: Vec<f64> = Vec::with_capacity(k);
    let mut beta: Vec<f64> = Vec::with_capacity(k);
    let scale = sparse::max_abs(a).max(f64::MIN_POSITIVE);
    let mut w = vec![0.0; n];
    for j in 0..k {
        sparse::matvec(a, &q, &mut w);
        let al = sparse::dot(&q, &w);
        basis.push(q.clone());
        alpha.push(al);
        // Full reorthogonalization, twice (covers the three-term recurrence too).
        for _ in 0..2 {
            for v in &basis {
                let c = sparse::dot(v, &w);
                w.iter_mut().zip(v).for_each(|(wi, vi)| *wi -= c * vi);
            }
        }
        let b = sparse::norm2(&w);
        beta.push(b);
        if j + 1 == k || b <= 1e-13 * scale * (n as f64).sqrt() {
            break;
        }
        q = w.iter().map(|v| v / b).collect();
    }
    check_finite(&alpha, &beta)?;
    let m = alpha.len();
    let (values, vectors) = tridiagonal_eigen(&alpha, &beta)?;
    let (imin, imax) = extremes(&values);
    let last = beta[m - 1];
    let mut y_min = vec![0.0; n];
    for (i, v) in basis.iter().enumerate() {
        let c = vectors[(i, imin)];
        y_min.iter_mut().zip(v).for_each(|(y, vi)| *y += c * vi);
    }
    Ok(Ritz {
        theta_min: values[imin],
        theta_max: values[imax],
        res_min: (last * vectors[(m - 1, imin)]).abs(),
        res_max: (last * vectors[(m - 1, imax)]).abs(),
        y_min,
        steps: m,
    })
}

/// The largest Ritz value and its residual estimate from the plain three-term Lanczos
/// recurrence (no stored basis). Stops early once the largest Ritz value has settled to
/// [`TOP_SETTLED`] relative over 10 steps: it only ever grows towards λ_max, and on a clustered
/// top of the spectrum (a fine-grid Laplacian) its last digits take hundreds of steps that
/// change κ by less than that. The reported upper bound still uses the Ritz residual.
///
/// With `beside` (it runs on a thread of its own beside the factorization), the product is
/// serial, so the two take one core each, and the run ends early once `beside` is set.
fn lanczos_top(
    a: &CsMat<f64>,
    steps: usize,
    seed: u64,
    beside: Option<&AtomicBool>,
) -> Result<(f64, f64, usize), CondError> {
    let n = a.rows();
    let k = steps.clamp(1, n);
    // The solvers' product (u32 pattern, rows in parts). Beside the factorization it runs the
    // same parts on this thread only, so the sums, and so λ_max, are the same bit for bit
    // whatever the worker count.
    let split = match beside {
        Some(_) => Split {
            workers: 1,
            ..Split::get()
        },
        None => Split::get(),
    };
    let m = Csr::with_split(a, split).map_err(|e| CondError::Numerical(e.to_string()))?;
    let mut q = random_unit(n, seed);
    let mut q_prev = vec![0.0; n];
    let mut w = vec![0.0; n];
    let mut alpha: Vec<f64> = Vec::with_capacity(k);
    let mut beta: Vec<f64> = Vec::with_capacity(k);
    let scale = sparse::max_abs(a).max(f64::MIN_POSITIVE);
    let mut settled_at = f64::NAN;
    for j in 0..k {
        if beside.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            break;
        }
        let al = m.mul_dot_unchecked_len(&q, &mut w);
        let b_prev = beta.last().copied().unwrap_or(0.0);
        for ((wi, qi), pi) in w.iter_mut().zip(&q).zip(&q_prev) {
            *wi -= al * qi + b_prev * pi;
        }
        alpha.push(al);
        let b = sparse::norm2(&w);
        beta.push(b);
        if j + 1 == k || b <= 1e-13 * scale * (n as f64).sqrt() {
            break;
        }
        if (j + 1) % 10 == 0 {
            check_finite(&alpha, &beta)?;
            let (values, _) = tridiagonal_eigen(&alpha, &beta)?;
            let top = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if (top - settled_at).abs() <= TOP_SETTLED * top.abs() {
                break;
            }
            settled_at = top;
        }
        std::mem::swap(&mut q_prev, &mut q);
        for (qi, wi) in q.iter_mut().zip(&w) {
            *qi = wi / b;
        }
    }
    if alpha.is_empty() {
        // Stopped before its first step; the caller drops this.
        return Err(CondError::Numerical("Lanczos stopped".into()));
    }
    check_finite(&alpha, &beta)?;
    let m = alpha.len();
    let (values, vectors) = tridiagonal_eigen(&alpha, &beta)?;
    let (_, imax) = extremes(&values);
    Ok((
        values[imax],
        (beta[m - 1] * vectors[(m - 1, imax)]).abs(),
        m,
    ))
}

/// Conjugate gradients for A x = b (SPD). Errors with `NotPositiveDefinite` on pᵀAp ≤ 0.
/// Returns the solution and whether it reached `rtol`.
pub(crate) fn cg(
    a: &CsMat<f64>,
    b: &[f64],
    rtol: f64,
    max_iter: usize,
) -> Result<(Vec<f64>, bool), CondError> {
    let n = b.len();
    let mut x = vec![0.0; n];
    let mut r = b.to_vec();
    let mut p = r.clone();
    let mut ap = vec![0.0; n];
    let bn = sparse::norm2(b);
    if bn == 0.0 {
        return Ok((x, true));
    }
    let mut rr = sparse::dot(&r, &r);
    for _ in 0..max_iter {
        if rr.sqrt() <= rtol * bn {
            return Ok((x, true));
        }
        sparse::matvec(a, &p, &mut ap);
        let pap = sparse::dot(&p, &ap);
        if pap <= 0.0 || !pap.is_finite() {
            return Err(CondError::NotPositiveDefinite {
                detail: format!("CG found pᵀAp = {pap:.3e}"),
            });
        }
        let alpha = rr / pap;
        for i in 0..n {
            x[i] += alpha * p[i];
            r[i] -= alpha * ap[i];
        }
        let rr_new = sparse::dot(&r, &r);
        let beta = rr_new / rr;
        rr = rr_new;
        for i in 0..n {
            p[i] = r[i] + beta * p[i];
        }
    }
    Ok((x, rr.sqrt() <= rtol * bn))
}

/// What solves with A during inverse iteration.
enum Solver {
    Cholesky(Box<SparseCholesky>),
    Cg,
}

impl Solver {
    /// The sparse Cholesky factor when n and the budget allow, else CG with the reason (`None`
    /// with the factor). A non-positive pivot is an error: the factorization doubles as the
    /// positive-definiteness test.
    fn choose(
        a: &CsMat<f64>,
        opts: &LanczosOptions,
    ) -> Result<(Solver, Option<String>), CondError> {
        let n = a.rows();
        if n > opts.cholesky_max_n {
            let why = format!(
                "n = {n} is above the Cholesky limit {}",
                opts.cholesky_max_n
            );
            return Ok((Solver::Cg, Some(why)));
        }
        match SparseCholesky::new(a, opts.max_factor_bytes) {
            Ok(c) => Ok((Solver::Cholesky(Box::new(c)), None)),
            Err(FactorError::NotPositiveDefinite { pivot }) => {
                Err(CondError::NotPositiveDefinite {
                    detail: format!(
                        "sparse Cholesky met a non-positive pivot at step {pivot} of {n}"
                    ),
                })
            }
            Err(e) => Ok((Solver::Cg, Some(e.to_string()))),
        }
    }

    fn method(&self) -> Method {
        match self {
            Solver::Cholesky(_) => Method::LanczosWithInverseIteration,
            Solver::Cg => Method::LanczosWithCgInverseIteration,
        }
    }

    fn describe(&self) -> String {
        match self {
            Solver::Cholesky(c) => format!(
                "sparse Cholesky with AMD ordering, {} stored values in L",
                c.factor_nnz()
            ),
            Solver::Cg => "CG".to_string(),
        }
    }
}

/// λ_max, its residual, the Lanczos steps taken and the start vector of inverse iteration: a
/// fresh random unit vector beside the Cholesky factor, the smallest Ritz vector for CG.
fn top_and_start(
    a: &CsMat<f64>,
    solver: &Solver,
    top: Option<(f64, f64, usize)>,
    opts: &LanczosOptions,
) -> Result<(f64, f64, usize, Vec<f64>), CondError> {
    let n = a.rows();
    let (lmax, res_lmax, steps, x) = match solver {
        Solver::Cholesky(_) => {
            let (lmax, res, steps) = match top {
                Some(t) => t,
                None => lanczos_top(a, opts.steps, opts.seed, None)?,
            };
            (
                lmax,
                res,
                steps,
                random_unit(n, opts.seed ^ 0x9e37_79b9_7f4a_7c15),
            )
        }
        Solver::Cg => {
            let fit = (opts.max_basis_bytes / (8 * n)).max(20);
            let rz = lanczos(a, opts.steps.min(fit), opts.seed)?;
            if rz.theta_min < -1e-8 * rz.theta_max {
                return Err(CondError::NotPositiveDefinite {
                    detail: format!("negative Ritz value {:.3e}", rz.theta_min),
                });
            }
            let mut y = rz.y_min;
            let ny = sparse::norm2(&y);
            if ny == 0.0 || !ny.is_finite() {
                return Err(CondError::Numerical("zero Ritz vector".into()));
            }
            y.iter_mut().for_each(|v| *v /= ny);
            (rz.theta_max, rz.res_max, rz.steps, y)
        }
    };
    if lmax <= 0.0 {
        return Err(CondError::NotPositiveDefinite {
            detail: format!("largest Ritz value {lmax:.3e} ≤ 0"),
        });
    }
    Ok((lmax, res_lmax, steps, x))
}

/// Whether a second thread may run: `SOLVER_PROBE_WORKERS=1` keeps everything on the calling
/// thread, as it does for the solvers.
fn second_thread() -> bool {
    Workers::get().count() >= 2
}

/// λ_max from the recurrence of [`lanczos_top`]: its value, residual and steps.
type Top = (f64, f64, usize);

/// The factor (or CG with the reason) and, on the factor path, λ_max from [`lanczos_top`] run
/// on a second thread during the factorization: the factorization is sequential and the
/// recurrence needs only products with A, so the two overlap instead of queueing. When no
/// factor comes of it, the recurrence is stopped and its result dropped (the CG path needs the
/// stored basis of [`lanczos`]).
fn factor_and_top(
    a: &CsMat<f64>,
    opts: &LanczosOptions,
) -> Result<(Solver, Option<String>, Option<Top>), CondError> {
    if a.rows() > opts.cholesky_max_n || !second_thread() {
        let (solver, fallback) = Solver::choose(a, opts)?;
        return Ok((solver, fallback, None));
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let top = scope.spawn(|| lanczos_top(a, opts.steps, opts.seed, Some(&stop)));
        let chosen = Solver::choose(a, opts);
        if !matches!(chosen, Ok((Solver::Cholesky(_), _))) {
            stop.store(true, Ordering::Relaxed);
        }
        let top = top
            .join()
            .map_err(|_| CondError::Numerical("the Lanczos thread panicked".into()))?;
        let (solver, fallback) = chosen?;
        let top = match solver {
            Solver::Cholesky(_) => Some(top?),
            Solver::Cg => None,
        };
        Ok((solver, fallback, top))
    })
}

/// Where the λ_min iteration ended: the Rayleigh quotient ρ (λ_min; 0 when A⁻¹ overflowed),
/// its residual ‖A x − ρ x‖, the solves run, and whether some CG solve fell short.
struct InverseIteration {
    rho: f64,
    res: f64,
    iters: usize,
    cg_short: bool,
}

/// Plain inverse iteration with CG solves (the path without a factor: inexact solves would
/// break the Lanczos relation that shift-invert Lanczos relies on).
fn inverse_iteration_cg(
    a: &CsMat<f64>,
    mut x: Vec<f64>,
    lmax: f64,
    opts: &LanczosOptions,
) -> Result<InverseIteration, CondError> {
    let n = a.rows();
    let mut ax = vec![0.0; n];
    let mut rho = f64::INFINITY;
    let mut res = f64::INFINITY;
    let mut iters = 0;
    let mut cg_short = false;
    for it in 0..opts.max_inverse_iterations.max(1) {
        iters = it + 1;
        let (z, ok) = cg(a, &x, opts.cg_rtol, opts.cg_max_iter)?;
        cg_short |= !ok;
        let nz = sparse::norm2(&z);
        if nz == 0.0 || !nz.is_finite() {
            // A⁻¹ overflowed: λ_min is at rounding level.
            rho = 0.0;
            break;
        }
        x = z.iter().map(|v| v / nz).collect();
        sparse::matvec(a, &x, &mut ax);
        let rho_new = sparse::dot(&x, &ax);
        res = ax
            .iter()
            .zip(&x)
            .map(|(p, q)| (p - rho_new * q).powi(2))
            .sum::<f64>()
            .sqrt();
        let stalled = (rho - rho_new).abs() <= 1e-14 * rho_new.abs();
        rho = rho_new;
        if res <= opts.tol * lmax || stalled {
            break;
        }
    }
    Ok(InverseIteration {
        rho,
        res,
        iters,
        cg_short,
    })
}

/// Most basis vectors shift-invert Lanczos stores before it restarts (it needs about 8 on a
/// fine-grid Laplacian; the cap bounds memory on slowly converging spectra).
const SHIFT_INVERT_MAX_BASIS: usize = 16;

/// λ_min by shift-invert Lanczos on the factor, or by inverse iteration with CG.
fn smallest(
    a: &CsMat<f64>,
    solver: &Solver,
    x: Vec<f64>,
    lmax: f64,
    opts: &LanczosOptions,
) -> Result<InverseIteration, CondError> {
    match solver {
        Solver::Cholesky(c) => {
            let fit = opts.max_basis_bytes / (8 * a.rows()).max(1);
            let limits = Limits {
                tol: opts.tol,
                max_solves: opts.max_inverse_iterations,
                max_basis: fit.clamp(2, SHIFT_INVERT_MAX_BASIS),
            };
            let e = smallest_eigen(a, c, x, lmax, limits)?;
            Ok(InverseIteration {
                rho: e.rho,
                res: e.res,
                iters: e.solves,
                cg_short: false,
            })
        }
        Solver::Cg => inverse_iteration_cg(a, x, lmax, opts),
    }
}

/// κ₂ by Lanczos plus shift-invert Lanczos (or CG inverse iteration) for λ_min, with all
/// options.
pub fn lanczos_spd_with(a: &CsMat<f64>, opts: &LanczosOptions) -> Result<Estimate, CondError> {
    let a = sparse::validate_ref(a)?;
    let asym = sparse::asymmetry(&a);
    if asym > sparse::SYMMETRY_TOL {
        return Err(CondError::NotSymmetric { asymmetry: asym });
    }
    Ok(lanczos_spd_validated(&a, opts, false)?.0)
}

/// [`lanczos_spd_with`] on a validated symmetric matrix; with `kappa1`, also κ₁ from the same
/// Cholesky factor (`None` without a factor: CG path or `refine = false`).
pub(crate) fn lanczos_spd_validated(
    a: &CsMat<f64>,
    opts: &LanczosOptions,
    kappa1: bool,
) -> Result<(Estimate, Option<Estimate>), CondError> {
    if !opts.refine {
        return Ok((ritz_only(a, opts)?, None));
    }
    // The factorization comes first: it is also the positive-definiteness test.
    let (solver, fallback, top) = factor_and_top(a, opts)?;
    let (lmax, res_lmax, steps, x) = top_and_start(a, &solver, top, opts)?;
    let upper_lmax = lmax + res_lmax;
    let method = solver.method();
    // κ₁'s solves on the same factor run on a second thread beside the λ_min solves: each
    // solve is one sequential sweep over the factor, so two sweeps at once use both cores.
    let (smallest, one) = std::thread::scope(|scope| {
        let one = match (&solver, kappa1) {
            (Solver::Cholesky(c), true) if second_thread() => {
                Some(scope.spawn(|| kappa1_on_cholesky(a, c)))
            }
            _ => None,
        };
        let smallest = smallest(a, &solver, x, lmax, opts);
        let one = one.map(|h| {
            h.join()
                .map_err(|_| CondError::Numerical("the κ₁ thread panicked".into()))
                .and_then(|r| r)
        });
        (smallest, one)
    });
    let one = match (one.transpose()?, &solver, kappa1) {
        (None, Solver::Cholesky(c), true) => Some(kappa1_on_cholesky(a, c)?),
        (one, _, _) => one,
    };
    let InverseIteration {
        rho,
        res,
        iters,
        cg_short,
    } = smallest?;
    if rho <= 0.0 {
        let e = Estimate::from_norms(
            Norm::Two,
            method,
            Confidence::Estimate,
            lmax,
            None,
            "the solves with A found λ_min ≤ 0 at rounding level".into(),
        );
        return Ok((e, one));
    }
    let lower = lmax / rho;
    let upper = if rho > res {
        upper_lmax / (rho - res)
    } else {
        f64::INFINITY
    };
    let solver_name = solver.describe();
    let how = match solver {
        Solver::Cholesky(_) => "shift-invert Lanczos steps, one solve each",
        Solver::Cg => "inverse iterations",
    };
    let mut note = format!(
        "{steps} Lanczos steps: λ_max = {lmax:.6e} (residual {res_lmax:.1e}); {iters} {how} \
         ({solver_name}): λ_min = {rho:.6e} (residual {res:.1e})"
    );
    if let Some(why) = fallback {
        note += &format!("; no Cholesky factor: {why}");
    }
    if cg_short {
        note += "; some CG solves stopped before their tolerance";
    }
    let e = Estimate::from_norms(
        Norm::Two,
        method,
        Confidence::Bounds { lower, upper },
        lmax,
        Some(1.0 / rho),
        note,
    );
    Ok((e, one))
}

/// κ₂ bounds from the Ritz values alone (`refine = false`).
fn ritz_only(a: &CsMat<f64>, opts: &LanczosOptions) -> Result<Estimate, CondError> {
    let n = a.rows();
    let fit = (opts.max_basis_bytes / (8 * n)).max(20);
    let rz = lanczos(a, opts.steps.min(fit), opts.seed)?;
    if rz.theta_max <= 0.0 {
        return Err(CondError::NotPositiveDefinite {
            detail: format!("largest Ritz value {:.3e} ≤ 0", rz.theta_max),
        });
    }
    if rz.theta_min < -1e-8 * rz.theta_max {
        return Err(CondError::NotPositiveDefinite {
            detail: format!("negative Ritz value {:.3e}", rz.theta_min),
        });
    }
    let lmax = rz.theta_max;
    let upper_lmax = rz.theta_max + rz.res_max;
    let inv = (rz.theta_min > 0.0).then(|| 1.0 / rz.theta_min);
    let upper = if rz.theta_min > rz.res_min {
        upper_lmax / (rz.theta_min - rz.res_min)
    } else {
        f64::INFINITY
    };
    let lower = if rz.theta_min > 0.0 {
        lmax / rz.theta_min
    } else {
        0.0
    };
    Ok(Estimate::from_norms(
        Norm::Two,
        Method::Lanczos,
        Confidence::Bounds { lower, upper },
        lmax,
        inv,
        format!(
            "{} Lanczos steps: λ_max = {lmax:.6e}, λ_min (Ritz, an upper bound) = {:.6e}",
            rz.steps, rz.theta_min
        ),
    ))
}
