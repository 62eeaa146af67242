//! Exact κ₂ from the singular values of the dense matrix.

use sprs::CsMat;

use super::{sparse, CondError, Confidence, Estimate, Method, Norm, EXACT_DENSE_MAX_N};

/// κ₂ = σ_max / σ_min from the dense SVD (faer), for n ≤ [`EXACT_DENSE_MAX_N`].
pub fn exact_dense_2(a: &CsMat<f64>) -> Result<Estimate, CondError> {
    let a = sparse::validate(a)?;
    let n = a.rows();
    if n > EXACT_DENSE_MAX_N {
        return Err(CondError::TooLarge {
            method: "exact dense SVD",
            n,
            limit: EXACT_DENSE_MAX_N,
        });
    }
    let m = sparse::to_dense(&a);
    let s = m
        .singular_values()
        .map_err(|e| CondError::Numerical(format!("SVD did not converge: {e:?}")))?;
    let smax = s.iter().cloned().fold(0.0_f64, f64::max);
    let smin = s.iter().cloned().fold(f64::INFINITY, f64::min);
    let inv = if smin > 0.0 { Some(1.0 / smin) } else { None };
    Ok(Estimate::from_norms(
        Norm::Two,
        Method::ExactDenseSvd,
        Confidence::Exact,
        smax,
        inv,
        format!("dense SVD of the {n}x{n} matrix: σ_max = {smax:.6e}, σ_min = {smin:.6e}"),
    ))
}

/// Dense Cholesky of a symmetric A (n ≤ [`EXACT_DENSE_MAX_N`]): whether it is positive
/// definite, decided by the factorization rather than by the entries.
pub(crate) fn dense_cholesky_succeeds(a: &CsMat<f64>) -> Option<super::Definite> {
    let m = sparse::to_dense(a);
    let spd = m.llt(faer::Side::Lower).is_ok();
    super::Definite::new(spd, "dense Cholesky")
}
