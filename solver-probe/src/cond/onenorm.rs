//! κ₁ = ‖A‖₁ ‖A⁻¹‖₁ with the Higham–Tisseur block 1-norm estimator (t = 2).
//!
//! ‖A⁻¹‖₁ is estimated from solves with A and Aᵀ. The factorization is a dense LU (faer) for
//! n ≤ [`DENSE_LU_MAX_N`]; above, a sparse Cholesky (AMD) when A is symmetric with a positive
//! diagonal and turns out positive definite (then Aᵀ = A and one factor serves both solves),
//! otherwise a sparse LU (COLAMD), each sized from its symbolic analysis and refused when over
//! the byte budget ([`super::factor`]). The estimate is a lower bound on ‖A⁻¹‖₁, almost always
//! within a factor 3 (Higham & Tisseur, SIAM J. Matrix Anal. Appl. 21(4), 2000, Algorithm 2.4).
//!
//! The estimator's t = 2 columns are solved as one block (one pass over a sparse factor for
//! both), and [`kappa1_on_cholesky`] runs it on a Cholesky factor that the κ₂ path already
//! formed, so κ₂ and κ₁ together cost one factorization.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sprs::CsMat;

use super::dense::DenseLu;
use super::factor::{FactorError, SparseCholesky, SparseLu};
use super::lanczos::DEFAULT_FACTOR_BYTES;
use super::{sparse, CondError, Confidence, Estimate, Method, Norm, DENSE_LU_MAX_N};

/// Block width of the estimator.
const T: usize = 2;
/// Maximum iterations of the estimator.
const ITMAX: usize = 5;

/// κ₁ from the Higham–Tisseur estimate of ‖A⁻¹‖₁, with the default factorization budget.
pub fn one_norm_estimate(a: &CsMat<f64>) -> Result<Estimate, CondError> {
    one_norm_estimate_with(a, DEFAULT_FACTOR_BYTES)
}

/// κ₁ from the Higham–Tisseur estimate of ‖A⁻¹‖₁; a sparse factorization above
/// [`DENSE_LU_MAX_N`] may use at most `max_factor_bytes`.
pub fn one_norm_estimate_with(
    a: &CsMat<f64>,
    max_factor_bytes: usize,
) -> Result<Estimate, CondError> {
    one_norm_estimate_impl(a, max_factor_bytes, true, DENSE_LU_MAX_N)
}

/// As [`one_norm_estimate_with`], but always on a sparse factorization, whatever n (for tests
/// and benchmarks of the sparse path on matrices whose exact κ₁ is affordable).
pub fn one_norm_estimate_sparse(
    a: &CsMat<f64>,
    max_factor_bytes: usize,
) -> Result<Estimate, CondError> {
    one_norm_estimate_impl(a, max_factor_bytes, true, 0)
}

/// As [`one_norm_estimate_with`]; `try_cholesky = false` skips the Cholesky attempt (the
/// caller already knows A is not positive definite).
pub(crate) fn one_norm_estimate_impl(
    a: &CsMat<f64>,
    max_factor_bytes: usize,
    try_cholesky: bool,
    dense_max_n: usize,
) -> Result<Estimate, CondError> {
    let a = sparse::validate_ref(a)?;
    let n = a.rows();
    let norm_a = sparse::one_norm(&a);
    let kappa1 = |norm_inv: Option<f64>, note: String| {
        Estimate::from_norms(
            Norm::One,
            Method::HighamTisseur1Norm,
            Confidence::Estimate,
            norm_a,
            norm_inv,
            note,
        )
    };
    let estimated_from = |how: String| {
        format!(
            "‖A‖₁ = {norm_a:.6e}; ‖A⁻¹‖₁ estimated (lower bound, typically within 3x) from {how}"
        )
    };
    if n <= dense_max_n {
        let lu = DenseLu::new(&sparse::to_dense(&a));
        if lu.singular {
            return Ok(kappa1(None, "LU has an exactly zero pivot".into()));
        }
        let inv = finite_or_singular(higham_tisseur(
            n,
            |x| x.iter().map(|c| lu.solve(c)).collect(),
            |x| x.iter().map(|c| lu.solve_t(c)).collect(),
            0x5eed,
        ))?;
        return Ok(kappa1(inv, estimated_from("dense LU solves".into())));
    }
    let spd_candidate = try_cholesky
        && sparse::is_symmetric(&a, sparse::SYMMETRY_TOL)
        && sparse::diagonal(&a).iter().all(|&d| d > 0.0);
    let mut why_lu = String::new();
    if spd_candidate {
        match SparseCholesky::new(&a, max_factor_bytes) {
            Ok(c) => return kappa1_on_cholesky(&a, &c),
            Err(FactorError::NotPositiveDefinite { pivot }) => {
                why_lu = format!("not positive definite (Cholesky pivot {pivot}), so ");
            }
            Err(e) => return Err(over_budget(e)),
        }
    }
    let lu = match SparseLu::new(&a, max_factor_bytes) {
        Ok(lu) => lu,
        Err(FactorError::Singular) => {
            return Ok(kappa1(
                None,
                "sparse LU found a structurally zero pivot".into(),
            ))
        }
        Err(e) => return Err(over_budget(e)),
    };
    let inv = finite_or_singular(higham_tisseur(
        n,
        |x| solved(x, |z, k| lu.solve_in_place(z, k)),
        |x| solved(x, |z, k| lu.solve_transpose_in_place(z, k)),
        0x5eed,
    ))?;
    Ok(kappa1(
        inv,
        estimated_from(format!(
            "{why_lu}sparse LU solves (COLAMD ordering, partial pivoting; factor bounded by \
             {:.0} MB)",
            lu.bound_bytes as f64 / 1e6
        )),
    ))
}

fn over_budget(e: FactorError) -> CondError {
    match e {
        FactorError::OverBudget { .. } => CondError::OverBudget(e.to_string()),
        other => CondError::Numerical(other.to_string()),
    }
}

/// κ₁ of a validated symmetric positive definite `a` from its sparse Cholesky factor `c`
/// (A⁻¹ is symmetric, so one solve serves both A⁻¹ x and A⁻ᵀ x).
pub(crate) fn kappa1_on_cholesky(
    a: &CsMat<f64>,
    c: &SparseCholesky,
) -> Result<Estimate, CondError> {
    let norm_a = sparse::one_norm(a);
    // Counted here, not by the factor: other solves may run on it at the same time.
    let used = std::cell::Cell::new(0);
    let solve = |x: &[Vec<f64>]| {
        used.set(used.get() + x.len());
        solved(x, |z, k| c.solve_block_in_place(z, k))
    };
    let inv = finite_or_singular(higham_tisseur(a.rows(), solve, solve, 0x5eed))?;
    let used = used.get();
    Ok(Estimate::from_norms(
        Norm::One,
        Method::HighamTisseur1Norm,
        Confidence::Estimate,
        norm_a,
        inv,
        format!(
            "‖A‖₁ = {norm_a:.6e}; ‖A⁻¹‖₁ estimated (lower bound, typically within 3x) from \
             {used} sparse Cholesky solves in blocks of {T} (AMD ordering, {} stored values in L)",
            c.factor_nnz()
        ),
    ))
}

/// Solves with the columns `b` as one block (`solve(buffer, columns)` in place on their
/// column-major copy); non-finite results are a numerical failure.
fn solved(b: &[Vec<f64>], solve: impl Fn(&mut [f64], usize)) -> Result<Vec<Vec<f64>>, CondError> {
    let n = b.first().map_or(0, Vec::len);
    let mut x: Vec<f64> = b.concat();
    solve(&mut x, b.len());
    if !x.iter().all(|v| v.is_finite()) {
        return Err(CondError::Numerical("sparse solve overflowed".into()));
    }
    Ok(x.chunks(n.max(1)).map(<[f64]>::to_vec).collect())
}

/// A numerical failure inside the estimator means A⁻¹ overflowed: numerically singular.
fn finite_or_singular(r: Result<f64, CondError>) -> Result<Option<f64>, CondError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(CondError::Numerical(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Estimate of ‖A⁻¹‖₁ alone (same method as [`one_norm_estimate`]).
pub fn inverse_one_norm_estimate(a: &CsMat<f64>) -> Result<f64, CondError> {
    let e = one_norm_estimate(a)?;
    Ok(e.norm_inv.unwrap_or(f64::INFINITY))
}

/// n random ±1 entries.
fn random_signs(n: usize, rng: &mut SmallRng) -> Vec<f64> {
    (0..n)
        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
        .collect()
}

fn col_sign(y: &[f64]) -> Vec<f64> {
    y.iter()
        .map(|&v| if v >= 0.0 { 1.0 } else { -1.0 })
        .collect()
}

fn parallel(s: &[f64], t: &[f64]) -> bool {
    // ±1 vectors are parallel when |sᵀt| = n.
    (sparse::dot(s, t).abs() - s.len() as f64).abs() < 0.5
}

/// Higham–Tisseur Algorithm 2.4 for ‖B‖₁ where `apply(X)` = B X and `apply_t(X)` = Bᵀ X, each
/// given the block's columns at once.
pub(crate) fn higham_tisseur<F, G>(
    n: usize,
    apply: F,
    apply_t: G,
    seed: u64,
) -> Result<f64, CondError>
where
    F: Fn(&[Vec<f64>]) -> Result<Vec<Vec<f64>>, CondError>,
    G: Fn(&[Vec<f64>]) -> Result<Vec<Vec<f64>>, CondError>,
{
    let t = T.min(n);
    let mut rng = SmallRng::seed_from_u64(seed);
    let nf = n as f64;
    // Starting block: ones/n, then random ±1/n columns not parallel to earlier ones.
    let mut x: Vec<Vec<f64>> = vec![vec![1.0 / nf; n]];
    while x.len() < t {
        let mut tries = 0;
        loop {
            let c = random_signs(n, &mut rng);
            let par = x.iter().any(|p| {
                let s: Vec<f64> = p.iter().map(|v| v * nf).collect();
                parallel(&s, &c)
            });
            tries += 1;
            if !par || tries > 20 {
                x.push(c.into_iter().map(|v| v / nf).collect());
                break;
            }
        }
    }
    let mut ind_hist: Vec<usize> = Vec::new();
    let mut est_old = 0.0;
    let mut est = 0.0;
    let mut s_old: Vec<Vec<f64>> = Vec::new();
    let mut ind_best = 0usize;
    let mut ind: Vec<usize> = Vec::new();
    for k in 1..=ITMAX + 1 {
        let y = apply(&x)?;
        let norms: Vec<f64> = y.iter().map(|c| c.iter().map(|v| v.abs()).sum()).collect();
        let (jbest, &emax) = norms
            .iter()
            .enumerate()
            .fold(
                (0, &f64::NEG_INFINITY),
                |b, (j, v)| if *v > *b.1 { (j, v) } else { b },
            );
        est = emax;
        if !est.is_finite() {
            return Err(CondError::Numerical("non-finite solve".into()));
        }
        if k >= 2 && est <= est_old {
            est = est_old;
            break;
        }
        if (est > est_old || k == 2) && !ind.is_empty() {
            ind_best = ind[jbest];
        }
        est_old = est;
        if k > ITMAX {
            break;
        }
        let mut s: Vec<Vec<f64>> = y.iter().map(|c| col_sign(c)).collect();
        if k >= 2 && s.iter().all(|c| s_old.iter().any(|o| parallel(c, o))) {
            break;
        }
        // Replace columns parallel to earlier columns of S or to S_old.
        for j in 0..s.len() {
            let mut tries = 0;
            while tries < 20
                && (s_old.iter().any(|o| parallel(&s[j], o))
                    || s[..j].iter().any(|o| parallel(&s[j], o)))
            {
                s[j] = random_signs(n, &mut rng);
                tries += 1;
            }
        }
        let z = apply_t(&s)?;
        let h: Vec<f64> = (0..n)
            .map(|i| z.iter().map(|c| c[i].abs()).fold(0.0, f64::max))
            .collect();
        let hmax = h.iter().cloned().fold(0.0, f64::max);
        if k >= 2 && h[ind_best] >= hmax {
            break;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&p, &q| h[q].total_cmp(&h[p]));
        if order[..t].iter().all(|i| ind_hist.contains(i)) {
            break;
        }
        // Prefer indices not yet used.
        let fresh: Vec<usize> = order
            .iter()
            .cloned()
            .filter(|i| !ind_hist.contains(i))
            .take(t)
            .collect();
        if fresh.is_empty() {
            break;
        }
        ind = fresh;
        x = ind
            .iter()
            .map(|&i| {
                let mut e = vec![0.0; n];
                e[i] = 1.0;
                e
            })
            .collect();
        ind_hist.extend(ind.iter().cloned());
        s_old = s;
    }
    Ok(est)
}
