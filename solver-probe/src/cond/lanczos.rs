//! κ₂ of a symmetric positive definite matrix from Lanczos extremal eigenvalues.
//!
//! Lanczos with full reorthogonalization from a seeded random start vector gives λ_max
//! accurately (the largest Ritz value). λ_min converges slowly under Lanczos, so it is refined
//! by inverse iteration started from the smallest Ritz vector, with a dense Cholesky solve for
//! n ≤ [`DENSE_CHOLESKY_MAX_N`](super::DENSE_CHOLESKY_MAX_N) and conjugate gradients above.
//! The bounds reported come from the eigenpair residuals (|λ − θ| ≤ ‖A y − θ y‖ for a unit y),
//! assuming the inverse iteration converged to the smallest eigenvalue.

use nalgebra::{Cholesky, DMatrix, Dyn};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sprs::CsMat;

use super::{sparse, CondError, Confidence, Estimate, Method, Norm, DENSE_CHOLESKY_MAX_N};

/// Options for [`lanczos_spd_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct LanczosOptions {
    /// Maximum Lanczos steps (capped at n).
    pub steps: usize,
    /// Seed of the random start vector.
    pub seed: u64,
    /// Memory cap for the stored Lanczos basis (steps·n·8 bytes); steps are reduced to fit,
    /// but never below 20.
    pub max_basis_bytes: usize,
    /// Refine λ_min by inverse iteration (otherwise report the Ritz values only).
    pub refine: bool,
    /// Largest n for the dense Cholesky; CG above.
    pub dense_cholesky_max_n: usize,
    /// Maximum inverse iterations.
    pub max_inverse_iterations: usize,
    /// Stop inverse iteration when the residual ‖A x − ρ x‖ ≤ tol·λ_max or ρ stalls.
    pub tol: f64,
    /// Relative residual of each CG solve.
    pub cg_rtol: f64,
    /// Iteration cap of each CG solve.
    pub cg_max_iter: usize,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        LanczosOptions {
            steps: 120,
            seed: 42,
            max_basis_bytes: 512 << 20,
            refine: true,
            dense_cholesky_max_n: DENSE_CHOLESKY_MAX_N,
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

fn lanczos(a: &CsMat<f64>, steps: usize, seed: u64) -> Result<Ritz, CondError> {
    let n = a.rows();
    let k = steps.clamp(1, n);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut q: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
    let nq = sparse::norm2(&q);
    q.iter_mut().for_each(|v| *v /= nq);
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
    if alpha.iter().chain(&beta).any(|v| !v.is_finite()) {
        return Err(CondError::Numerical(
            "Lanczos recurrence overflowed (entries too large)".into(),
        ));
    }
    let m = alpha.len();
    let mut t = DMatrix::zeros(m, m);
    for i in 0..m {
        t[(i, i)] = alpha[i];
        if i + 1 < m {
            t[(i, i + 1)] = beta[i];
            t[(i + 1, i)] = beta[i];
        }
    }
    let eig = t.symmetric_eigen();
    let (mut imin, mut imax) = (0, 0);
    for i in 0..m {
        if eig.eigenvalues[i] < eig.eigenvalues[imin] {
            imin = i;
        }
        if eig.eigenvalues[i] > eig.eigenvalues[imax] {
            imax = i;
        }
    }
    let last = beta[m - 1];
    let mut y_min = vec![0.0; n];
    for (i, v) in basis.iter().enumerate() {
        let c = eig.eigenvectors[(i, imin)];
        y_min.iter_mut().zip(v).for_each(|(y, vi)| *y += c * vi);
    }
    Ok(Ritz {
        theta_min: eig.eigenvalues[imin],
        theta_max: eig.eigenvalues[imax],
        res_min: (last * eig.eigenvectors[(m - 1, imin)]).abs(),
        res_max: (last * eig.eigenvectors[(m - 1, imax)]).abs(),
        y_min,
        steps: m,
    })
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

enum Solver {
    Dense(Cholesky<f64, Dyn>),
    Cg,
}

/// κ₂ by Lanczos plus inverse iteration, with all options.
pub fn lanczos_spd_with(a: &CsMat<f64>, opts: &LanczosOptions) -> Result<Estimate, CondError> {
    let a = sparse::validate(a)?;
    let n = a.rows();
    let asym = sparse::asymmetry(&a);
    if asym > sparse::SYMMETRY_TOL {
        return Err(CondError::NotSymmetric { asymmetry: asym });
    }
    let fit = (opts.max_basis_bytes / (8 * n)).max(20);
    let rz = lanczos(&a, opts.steps.min(fit), opts.seed)?;
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
    if !opts.refine {
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
        return Ok(Estimate::from_norms(
            Norm::Two,
            Method::Lanczos,
            Confidence::Bounds { lower, upper },
            lmax,
            inv,
            format!(
                "{} Lanczos steps: λ_max = {lmax:.6e}, λ_min (Ritz, an upper bound) = {:.6e}",
                rz.steps, rz.theta_min
            ),
        ));
    }
    let (solver, method) = if n <= opts.dense_cholesky_max_n {
        match sparse::to_dense(&a).cholesky() {
            Some(c) => (Solver::Dense(c), Method::LanczosWithInverseIteration),
            None => {
                return Err(CondError::NotPositiveDefinite {
                    detail: format!(
                        "dense Cholesky failed (λ_min ≤ 0 or below rounding; smallest Ritz \
                         value {:.3e})",
                        rz.theta_min
                    ),
                })
            }
        }
    } else {
        (Solver::Cg, Method::LanczosWithCgInverseIteration)
    };
    let mut x = rz.y_min.clone();
    let nx = sparse::norm2(&x);
    if nx == 0.0 || !nx.is_finite() {
        return Err(CondError::Numerical("zero Ritz vector".into()));
    }
    x.iter_mut().for_each(|v| *v /= nx);
    let mut ax = vec![0.0; n];
    let mut rho = f64::INFINITY;
    let mut res = f64::INFINITY;
    let mut iters = 0;
    let mut cg_short = false;
    for it in 0..opts.max_inverse_iterations.max(1) {
        iters = it + 1;
        let z = match &solver {
            Solver::Dense(c) => c.solve(&sparse::dvec(&x)).as_slice().to_vec(),
            Solver::Cg => {
                let (z, ok) = cg(&a, &x, opts.cg_rtol, opts.cg_max_iter)?;
                cg_short |= !ok;
                z
            }
        };
        let nz = sparse::norm2(&z);
        if nz == 0.0 || !nz.is_finite() {
            // A⁻¹ overflowed: λ_min is at rounding level.
            rho = 0.0;
            break;
        }
        x = z.iter().map(|v| v / nz).collect();
        sparse::matvec(&a, &x, &mut ax);
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
    if rho <= 0.0 {
        return Ok(Estimate::from_norms(
            Norm::Two,
            method,
            Confidence::Estimate,
            lmax,
            None,
            "inverse iteration found λ_min ≤ 0 at rounding level".into(),
        ));
    }
    let lower = lmax / rho;
    let upper = if rho > res {
        upper_lmax / (rho - res)
    } else {
        f64::INFINITY
    };
    let solver_name = match solver {
        Solver::Dense(_) => "dense Cholesky",
        Solver::Cg => "CG",
    };
    let mut note = format!(
        "{} Lanczos steps: λ_max = {lmax:.6e} (residual {:.1e}); {iters} inverse iterations \
         ({solver_name}): λ_min = {rho:.6e} (residual {res:.1e})",
        rz.steps, rz.res_max
    );
    if cg_short {
        note += "; some CG solves stopped before their tolerance";
    }
    Ok(Estimate::from_norms(
        Norm::Two,
        method,
        Confidence::Bounds { lower, upper },
        lmax,
        Some(1.0 / rho),
        note,
    ))
}
