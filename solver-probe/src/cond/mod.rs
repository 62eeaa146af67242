//! Condition number estimation, naming the method used and the confidence it carries.
//!
//! Entry points:
//! - [`estimate`]: picks a method: small matrices get the exact κ₂ from a dense SVD
//!   ([`exact_dense_2`]); symmetric matrices with a positive diagonal get κ₂ from Lanczos
//!   extremal eigenvalues with λ_min from shift-invert Lanczos on a sparse Cholesky factor
//!   ([`lanczos_spd`]); everything else gets κ₁ from the Higham–Tisseur block 1-norm estimator
//!   on an LU factorization, dense up to [`DENSE_LU_MAX_N`] and sparse (COLAMD) above
//!   ([`one_norm_estimate`]).
//! - [`estimate_both`]: the same κ and also κ₁, from one factorization where there is one.
//! - [`recommend`]: the κ after Jacobi scaling or equilibration, and the smallest diagonal
//!   shift that brings κ under a threshold, with the solution error that shift introduces.
//! - [`analog`]: precision of a crossbar with b-bit conductances: worst-case bound, Monte Carlo
//!   typical error, and mixed-precision iterative refinement.
//!
//! Any κ at or above 1/eps (≈ 4.5e15) is reported as numerically singular (`kappa = None`),
//! never as a number.
//!
//! Sparse factorizations (`factor`) are sized from their symbolic analysis and refused before
//! the numeric factorization when over the byte budget (`LanczosOptions::max_factor_bytes`);
//! the SPD path then falls back to CG inverse iteration and says so in its note, the κ₁ path
//! returns [`CondError::OverBudget`] naming the bytes.

pub mod analog;
mod dense;
pub(crate) use dense::DenseLu;
mod exact;
mod factor;
mod lanczos;
mod onenorm;
pub mod recommend;
mod shift_invert;
mod sparse;
mod subtree;

use serde::Serialize;
use sprs::CsMat;

pub use analog::{analog_bound, iterative_refinement, monte_carlo_typical, MonteCarlo, Refinement};
pub use exact::exact_dense_2;
pub use lanczos::{lanczos_spd, lanczos_spd_with, LanczosOptions, DEFAULT_FACTOR_BYTES};
pub use onenorm::{
    inverse_one_norm_estimate, one_norm_estimate, one_norm_estimate_sparse, one_norm_estimate_with,
};
pub use recommend::{
    equilibrate, jacobi_scale, scaled_condition, shift_for_threshold, Equilibrated,
    ScaledCondition, Scaling, ShiftRecommendation,
};

/// κ at or above this (1/eps ≈ 4.5e15) is reported as numerically singular.
pub const SINGULAR_KAPPA: f64 = 1.0 / f64::EPSILON;

/// Largest n for which [`exact_dense_2`] forms the dense matrix and computes its SVD.
pub const EXACT_DENSE_MAX_N: usize = 2000;

/// Largest n for which [`estimate`] uses the exact dense SVD (the SVD is O(n³); above this
/// the iterative estimators are cheaper).
pub const ESTIMATE_EXACT_MAX_N: usize = 400;

/// Largest n for which the dense LU (1-norm estimator, analog solves) is formed.
pub const DENSE_LU_MAX_N: usize = 3000;

/// Errors from the conditioning analysis. Bad input is an error, never a panic.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum CondError {
    /// The matrix has no rows or columns.
    #[error("empty matrix")]
    Empty,
    /// The matrix is not square.
    #[error("matrix is not square: {rows}x{cols}")]
    NotSquare {
        /// Row count.
        rows: usize,
        /// Column count.
        cols: usize,
    },
    /// A NaN or infinite entry.
    #[error("non-finite entry {value} at ({row}, {col})")]
    NonFinite {
        /// Row of the entry.
        row: usize,
        /// Column of the entry.
        col: usize,
        /// The entry.
        value: f64,
    },
    /// A vector's length does not match the matrix.
    #[error("size mismatch: matrix is {n}x{n}, vector has length {len}")]
    SizeMismatch {
        /// Matrix dimension.
        n: usize,
        /// Vector length.
        len: usize,
    },
    /// The method needs a dense copy larger than its limit.
    #[error("{method} needs a dense {n}x{n} matrix, above the limit of {limit}")]
    TooLarge {
        /// Method name.
        method: &'static str,
        /// Matrix dimension.
        n: usize,
        /// Limit on n.
        limit: usize,
    },
    /// The matrix is not symmetric (Lanczos and Jacobi scaling need symmetry).
    #[error("matrix is not symmetric (max relative asymmetry {asymmetry:.3e})")]
    NotSymmetric {
        /// max |a_ij − a_ji| / max |a|.
        asymmetry: f64,
    },
    /// The matrix is symmetric but not positive definite.
    #[error("matrix is not positive definite: {detail}")]
    NotPositiveDefinite {
        /// What showed it.
        detail: String,
    },
    /// An invalid parameter (threshold, bit count, ...).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// A factorization or iteration failed.
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// A sparse factorization would exceed its byte budget (known from the symbolic analysis
    /// before anything was allocated).
    #[error("over budget: {0}")]
    OverBudget(String),
}

/// Which norm κ is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Norm {
    /// Spectral norm: κ₂ = σ_max / σ_min.
    Two,
    /// 1-norm: κ₁ = ‖A‖₁ ‖A⁻¹‖₁.
    One,
}

/// How κ was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Singular values of the dense matrix (faer SVD).
    ExactDenseSvd,
    /// Lanczos extremal Ritz values only.
    Lanczos,
    /// Lanczos for λ_max, inverse iteration with a sparse Cholesky (AMD ordering) for λ_min,
    /// accelerated as shift-invert Lanczos (Lanczos on A⁻¹, one factor solve per step).
    LanczosWithInverseIteration,
    /// Lanczos for λ_max, inverse iteration with conjugate gradients for λ_min (when the
    /// Cholesky factor would exceed its budget).
    LanczosWithCgInverseIteration,
    /// Higham–Tisseur block 1-norm estimator (t = 2) on a dense LU, or a sparse Cholesky or
    /// LU above [`DENSE_LU_MAX_N`].
    HighamTisseur1Norm,
}

/// How far the reported κ can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Confidence {
    /// Exact up to rounding.
    Exact,
    /// Rigorous bounds from eigenpair residuals.
    Bounds {
        /// Lower bound on κ.
        lower: f64,
        /// Upper bound on κ (may be infinite).
        upper: f64,
    },
    /// An estimate without rigorous bounds (for the 1-norm estimator: a lower bound that is
    /// almost always within a factor 3).
    Estimate,
}

/// A condition number estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// κ, or `None` when numerically singular.
    pub kappa: Option<f64>,
    /// Norm κ is measured in.
    pub norm: Norm,
    /// Method used.
    pub method: Method,
    /// Confidence in κ.
    pub confidence: Confidence,
    /// κ ≥ 1/eps (or an exactly singular factorization).
    pub numerically_singular: bool,
    /// ‖A‖ in [`Estimate::norm`] (σ_max, λ_max or ‖A‖₁).
    pub norm_a: f64,
    /// ‖A⁻¹‖ in [`Estimate::norm`], `None` when numerically singular.
    pub norm_inv: Option<f64>,
    /// Human-readable remarks.
    pub note: String,
    /// Whether A is symmetric positive definite, as a factorization decided it (a Cholesky
    /// factor exists, or met a non-positive pivot); `None` when no factorization was formed
    /// (the factor was over budget and inverse iteration ran on CG).
    pub positive_definite: Option<Definite>,
}

/// How positive definiteness was decided: never by a heuristic on the entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Definite {
    /// The answer.
    pub spd: bool,
    /// What decided it: "sparse Cholesky", "dense Cholesky", "not symmetric", ...
    pub by: String,
}

impl Definite {
    pub(crate) fn new(spd: bool, by: impl Into<String>) -> Option<Definite> {
        Some(Definite { spd, by: by.into() })
    }
}

impl Estimate {
    /// The same estimate with positive definiteness as decided.
    pub(crate) fn decided(mut self, d: Option<Definite>) -> Estimate {
        self.positive_definite = d;
        self
    }

    /// Builds an estimate from ‖A‖ and ‖A⁻¹‖ (`norm_inv = None` or infinite: singular),
    /// applying the 1/eps rule.
    pub(crate) fn from_norms(
        norm: Norm,
        method: Method,
        confidence: Confidence,
        norm_a: f64,
        norm_inv: Option<f64>,
        note: String,
    ) -> Estimate {
        let kappa = norm_inv.map(|ni| norm_a * ni);
        match kappa {
            Some(k) if k.is_finite() && k < SINGULAR_KAPPA => Estimate {
                kappa: Some(k),
                norm,
                method,
                confidence,
                numerically_singular: false,
                norm_a,
                norm_inv,
                note,
                positive_definite: None,
            },
            _ => {
                let shown = match kappa {
                    Some(k) if k.is_finite() => format!("κ ≈ {k:.3e}"),
                    _ => "κ = ∞ (a zero singular value, eigenvalue or pivot at working precision)"
                        .to_string(),
                };
                let mut note = format!(
                    "numerically singular: {shown} is at or above 1/eps ≈ {SINGULAR_KAPPA:.2e}, \
                     so no digits of κ are meaningful"
                ) + if note.is_empty() { "" } else { "; " }
                    + &note;
                note.truncate(note.trim_end().len());
                Estimate {
                    kappa: None,
                    norm,
                    method,
                    confidence,
                    numerically_singular: true,
                    norm_a,
                    norm_inv: None,
                    note,
                    positive_definite: None,
                }
            }
        }
    }
}

/// Options for [`estimate_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateOptions {
    /// Use the exact dense SVD up to this n.
    pub exact_max_n: usize,
    /// Lanczos options for symmetric matrices with a positive diagonal.
    pub lanczos: LanczosOptions,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions {
            exact_max_n: ESTIMATE_EXACT_MAX_N,
            lanczos: LanczosOptions::default(),
        }
    }
}

/// Estimates κ with default options; see [`estimate_with`].
pub fn estimate(a: &CsMat<f64>) -> Result<Estimate, CondError> {
    estimate_with(a, &EstimateOptions::default())
}

/// Estimates κ, choosing the method:
/// - n ≤ `exact_max_n`: exact κ₂ from the dense SVD;
/// - symmetric with a positive diagonal: κ₂ from Lanczos plus inverse iteration (falls back
///   to κ₁ when the matrix turns out not to be positive definite);
/// - otherwise: κ₁ from the Higham–Tisseur estimator.
pub fn estimate_with(a: &CsMat<f64>, opts: &EstimateOptions) -> Result<Estimate, CondError> {
    Ok(estimate_impl(a, opts, false)?.0)
}

/// [`estimate_with`] and κ₁ (Higham–Tisseur, [`one_norm_estimate_with`]) together: where the
/// κ₂ path formed a sparse Cholesky factor, κ₁ is estimated with solves on that factor instead
/// of a second factorization. The κ₁ part is an error where [`one_norm_estimate_with`] would
/// be one (a factor over budget).
pub fn estimate_both(
    a: &CsMat<f64>,
    opts: &EstimateOptions,
) -> Result<(Estimate, Result<Estimate, CondError>), CondError> {
    let (e, one) = estimate_impl(a, opts, true)?;
    let one = match one {
        Some(k1) => Ok(k1),
        None if e.norm == Norm::One => Ok(e.clone()),
        None => one_norm_estimate_with(a, opts.lanczos.max_factor_bytes),
    };
    Ok((e, one))
}

/// [`estimate_with`]; with `kappa1`, also κ₁ when it came from the same factor.
fn estimate_impl(
    a: &CsMat<f64>,
    opts: &EstimateOptions,
    kappa1: bool,
) -> Result<(Estimate, Option<Estimate>), CondError> {
    let a = sparse::validate_ref(a)?;
    let n = a.rows();
    let sym = sparse::is_symmetric(&a, sparse::SYMMETRY_TOL);
    if n <= opts.exact_max_n.min(EXACT_DENSE_MAX_N) {
        let definite = if sym {
            exact::dense_cholesky_succeeds(&a)
        } else {
            Definite::new(false, "not symmetric")
        };
        return Ok((exact_dense_2(&a)?.decided(definite), None));
    }
    let pos_diag = sparse::diagonal(&a).iter().all(|&d| d > 0.0);
    if sym && pos_diag {
        match lanczos::lanczos_spd_validated(&a, &opts.lanczos, kappa1) {
            Ok((e, one)) => {
                // Only a factor that exists decides it; CG inverse iteration does not.
                let definite = (e.method == Method::LanczosWithInverseIteration)
                    .then(|| Definite::new(true, "sparse Cholesky"))
                    .flatten();
                let one = one.map(|k1| k1.decided(definite.clone()));
                return Ok((e.decided(definite), one));
            }
            Err(CondError::NotPositiveDefinite { detail }) => {
                let mut e = onenorm::one_norm_estimate_impl(
                    &a,
                    opts.lanczos.max_factor_bytes,
                    false,
                    DENSE_LU_MAX_N,
                )?;
                e.note = format!(
                    "symmetric with positive diagonal but not positive definite ({detail}); {}",
                    e.note
                );
                return Ok((e.decided(Definite::new(false, detail)), None));
            }
            Err(e) => return Err(e),
        }
    }
    // Both facts are exact: a positive definite matrix is symmetric and has eᵢᵀAeᵢ > 0.
    let why = if sym {
        "a diagonal entry is not positive"
    } else {
        "not symmetric"
    };
    let e = one_norm_estimate_with(&a, opts.lanczos.max_factor_bytes)?;
    Ok((e.decided(Definite::new(false, why)), None))
}
