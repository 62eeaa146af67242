//! Recommendations for ill-conditioned systems, with computed numbers:
//! - [`scaled_condition`]: κ after Jacobi scaling D^{-1/2} A D^{-1/2} (symmetric, positive
//!   diagonal) or row/column equilibration (otherwise), estimated on the scaled matrix;
//! - [`shift_for_threshold`]: the smallest diagonal shift σ with κ(A + σI) under a threshold
//!   (bisection on σ with [`estimate`]), and the solution error the shift introduces.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sprs::CsMat;

use super::dense::DenseLu;
use super::{estimate, sparse, CondError, Estimate, Norm, DENSE_LU_MAX_N};

/// Which scaling was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scaling {
    /// D^{-1/2} A D^{-1/2} with D = diag(A).
    Jacobi,
    /// diag(r) A diag(c): rows to unit max-norm, then columns.
    Equilibration,
}

/// κ before and after scaling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScaledCondition {
    /// Scaling applied.
    pub scaling: Scaling,
    /// Estimate for A.
    pub before: Estimate,
    /// Estimate for the scaled matrix.
    pub after: Estimate,
    /// κ_before / κ_after when both are finite (∞ when only `after` is).
    pub improvement: Option<f64>,
}

/// Jacobi scaling: returns D^{-1/2} A D^{-1/2} and the factors d_i = a_ii^{-1/2}.
/// Needs a positive diagonal.
pub fn jacobi_scale(a: &CsMat<f64>) -> Result<(CsMat<f64>, Vec<f64>), CondError> {
    let a = sparse::validate(a)?;
    let diag = sparse::diagonal(&a);
    if let Some((i, d)) = diag.iter().enumerate().find(|(_, d)| **d <= 0.0) {
        return Err(CondError::InvalidParameter(format!(
            "Jacobi scaling needs a positive diagonal; a[{i},{i}] = {d}"
        )));
    }
    let d: Vec<f64> = diag.iter().map(|v| 1.0 / v.sqrt()).collect();
    Ok((sparse::scale(&a, &d, &d), d))
}

/// A matrix after row and column equilibration.
#[derive(Debug, Clone, PartialEq)]
pub struct Equilibrated {
    /// diag(row) A diag(col).
    pub matrix: CsMat<f64>,
    /// Row factors.
    pub row: Vec<f64>,
    /// Column factors.
    pub col: Vec<f64>,
}

/// Row then column equilibration: diag(r) A diag(c) with rows scaled to unit max-norm, then
/// columns. Zero rows or columns keep a factor of 1.
pub fn equilibrate(a: &CsMat<f64>) -> Result<Equilibrated, CondError> {
    let a = sparse::validate(a)?;
    let n = a.rows();
    let r: Vec<f64> = a
        .outer_iterator()
        .map(|row| {
            let m = row.iter().fold(0.0_f64, |m, (_, v)| m.max(v.abs()));
            if m > 0.0 {
                1.0 / m
            } else {
                1.0
            }
        })
        .collect();
    let mut cmax = vec![0.0_f64; n];
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            cmax[j] = cmax[j].max((r[i] * v).abs());
        }
    }
    let c: Vec<f64> = cmax
        .iter()
        .map(|&m| if m > 0.0 { 1.0 / m } else { 1.0 })
        .collect();
    Ok(Equilibrated {
        matrix: sparse::scale(&a, &r, &c),
        row: r,
        col: c,
    })
}

/// κ before and after Jacobi scaling (symmetric with positive diagonal) or equilibration.
pub fn scaled_condition(a: &CsMat<f64>) -> Result<ScaledCondition, CondError> {
    let a = sparse::validate(a)?;
    let jacobi = sparse::is_symmetric(&a, sparse::SYMMETRY_TOL)
        && sparse::diagonal(&a).iter().all(|&d| d > 0.0);
    let (scaling, scaled) = if jacobi {
        (Scaling::Jacobi, jacobi_scale(&a)?.0)
    } else {
        (Scaling::Equilibration, equilibrate(&a)?.matrix)
    };
    let before = estimate(&a)?;
    let after = estimate(&scaled)?;
    let improvement = match (before.kappa, after.kappa) {
        (Some(b), Some(x)) => Some(b / x),
        (None, Some(_)) => Some(f64::INFINITY),
        _ => None,
    };
    Ok(ScaledCondition {
        scaling,
        before,
        after,
        improvement,
    })
}

/// The smallest diagonal shift that brings κ under a threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShiftRecommendation {
    /// The shift σ (0 when κ(A) is already under the threshold).
    pub sigma: f64,
    /// The threshold.
    pub threshold: f64,
    /// κ(A) (`None`: numerically singular).
    pub kappa_before: Option<f64>,
    /// κ(A + σI).
    pub kappa_after: Option<f64>,
    /// Norm of both κ.
    pub norm: Norm,
    /// Bound on ‖x_σ − x‖/‖x‖: since x_σ − x = −σ (A+σI)⁻¹ x, it is ≤ σ‖(A+σI)⁻¹‖, with
    /// ‖(A+σI)⁻¹‖ from the estimator.
    pub error_bound: f64,
    /// ‖x_σ − x‖₂/‖x‖₂ measured by solving both systems (dense LU) for a random b, when
    /// n ≤ [`DENSE_LU_MAX_N`] and A is not numerically singular.
    pub error_measured: Option<f64>,
    /// How the numbers were obtained.
    pub note: String,
}

/// Bisection stops when hi/lo ≤ 1 + this.
const SHIFT_REL_TOL: f64 = 1e-3;

/// The smallest σ ≥ 0 (to a relative 1e-3, by geometric bisection with [`estimate`]) such that
/// κ(A + σI) < `threshold`, and the error it introduces.
pub fn shift_for_threshold(
    a: &CsMat<f64>,
    threshold: f64,
) -> Result<ShiftRecommendation, CondError> {
    if !(threshold.is_finite() && threshold > 1.0) {
        return Err(CondError::InvalidParameter(format!(
            "threshold must be finite and > 1, got {threshold}"
        )));
    }
    let a = sparse::validate(a)?;
    let n = a.rows();
    let e0 = estimate(&a)?;
    let under = |e: &Estimate| e.kappa.is_some_and(|k| k < threshold);
    if under(&e0) {
        return Ok(ShiftRecommendation {
            sigma: 0.0,
            threshold,
            kappa_before: e0.kappa,
            kappa_after: e0.kappa,
            norm: e0.norm,
            error_bound: 0.0,
            error_measured: Some(0.0),
            note: "κ is already under the threshold; no shift needed".into(),
        });
    }
    let scale = sparse::one_norm(&a).max(f64::MIN_POSITIVE);
    let mut hi = scale;
    let mut e_hi = estimate(&sparse::add_shift(&a, hi))?;
    let mut grow = 0;
    while !under(&e_hi) {
        grow += 1;
        if grow > 40 {
            return Err(CondError::Numerical(format!(
                "no shift up to {hi:.3e} brings κ under {threshold:.3e}"
            )));
        }
        hi *= 4.0;
        e_hi = estimate(&sparse::add_shift(&a, hi))?;
    }
    let mut lo = (scale * f64::EPSILON).max(f64::MIN_POSITIVE);
    let mut evals = grow + 2;
    while hi / lo > 1.0 + SHIFT_REL_TOL && evals < 200 {
        let mid = (hi * lo).sqrt();
        let e = estimate(&sparse::add_shift(&a, mid))?;
        evals += 1;
        if under(&e) {
            hi = mid;
            e_hi = e;
        } else {
            lo = mid;
        }
    }
    let sigma = hi;
    let error_bound = sigma * e_hi.norm_inv.unwrap_or(f64::INFINITY);
    let error_measured = if n <= DENSE_LU_MAX_N && !e0.numerically_singular {
        measured_shift_error(&a, sigma)
    } else {
        None
    };
    let mut note = format!(
        "geometric bisection on σ ({evals} estimates, relative tolerance {SHIFT_REL_TOL:e}); \
         error bound σ·‖(A+σI)⁻¹‖ in the {:?}-norm",
        e_hi.norm
    );
    note += match error_measured {
        Some(_) => "; measured error from dense solves with a random b (seed 7)",
        None => "; no measured error (A numerically singular or too large for a dense LU)",
    };
    Ok(ShiftRecommendation {
        sigma,
        threshold,
        kappa_before: e0.kappa,
        kappa_after: e_hi.kappa,
        norm: e_hi.norm,
        error_bound,
        error_measured,
        note,
    })
}

fn measured_shift_error(a: &CsMat<f64>, sigma: f64) -> Option<f64> {
    let n = a.rows();
    let mut rng = SmallRng::seed_from_u64(7);
    let b: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
    let x = DenseLu::new(&sparse::to_dense(a)).solve(&b).ok()?;
    let xs = DenseLu::new(&sparse::to_dense(&sparse::add_shift(a, sigma)))
        .solve(&b)
        .ok()?;
    sparse::relative_error(&xs, &x)
}
