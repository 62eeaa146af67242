//! Small private CSR helpers: validation, matvec, diagonal, symmetry, norms, dense copies.

use std::borrow::Cow;

use faer::Mat;
use sprs::{CsMat, TriMat};

use super::CondError;

/// Relative tolerance for numerical symmetry.
pub(crate) const SYMMETRY_TOL: f64 = 1e-12;

/// Checks the matrix is non-empty, square and finite; returns a CSR copy.
pub(crate) fn validate(a: &CsMat<f64>) -> Result<CsMat<f64>, CondError> {
    validate_ref(a).map(Cow::into_owned)
}

/// As [`validate`], borrowing a CSR input instead of copying it (at 1M unknowns the copy is
/// 88 MB and a tenth of a second).
pub(crate) fn validate_ref(a: &CsMat<f64>) -> Result<Cow<'_, CsMat<f64>>, CondError> {
    let (rows, cols) = (a.rows(), a.cols());
    if rows == 0 || cols == 0 {
        return Err(CondError::Empty);
    }
    if rows != cols {
        return Err(CondError::NotSquare { rows, cols });
    }
    let csr = if a.is_csr() {
        Cow::Borrowed(a)
    } else {
        Cow::Owned(a.to_csr())
    };
    for (i, row) in csr.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            if !v.is_finite() {
                return Err(CondError::NonFinite {
                    row: i,
                    col: j,
                    value: v,
                });
            }
        }
    }
    Ok(csr)
}

/// Checks a vector's length against n.
pub(crate) fn check_len(n: usize, len: usize) -> Result<(), CondError> {
    if n == len {
        Ok(())
    } else {
        Err(CondError::SizeMismatch { n, len })
    }
}

/// y = A x for a CSR matrix.
pub(crate) fn matvec(a: &CsMat<f64>, x: &[f64], y: &mut [f64]) {
    for (yi, row) in y.iter_mut().zip(a.outer_iterator()) {
        *yi = row.iter().map(|(j, &v)| v * x[j]).sum();
    }
}

/// The diagonal (zeros where absent).
pub(crate) fn diagonal(a: &CsMat<f64>) -> Vec<f64> {
    let mut d = vec![0.0; a.rows()];
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            if i == j {
                d[i] += v;
            }
        }
    }
    d
}

/// Largest absolute entry.
pub(crate) fn max_abs(a: &CsMat<f64>) -> f64 {
    a.data().iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

/// max |a_ij − a_ji| / max |a|.
pub(crate) fn asymmetry(a: &CsMat<f64>) -> f64 {
    let scale = max_abs(a);
    if scale == 0.0 {
        return 0.0;
    }
    crate::structure::max_asymmetry(a) / scale
}

/// Numerical symmetry with relative tolerance `tol`.
pub(crate) fn is_symmetric(a: &CsMat<f64>, tol: f64) -> bool {
    asymmetry(a) <= tol
}

/// ‖A‖₁: the largest column sum of |a_ij|.
pub(crate) fn one_norm(a: &CsMat<f64>) -> f64 {
    let mut col = vec![0.0; a.cols()];
    for row in a.outer_iterator() {
        for (j, &v) in row.iter() {
            col[j] += v.abs();
        }
    }
    col.into_iter().fold(0.0, f64::max)
}

/// Dense copy.
pub(crate) fn to_dense(a: &CsMat<f64>) -> Mat<f64> {
    let mut m = Mat::zeros(a.rows(), a.cols());
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            m[(i, j)] += v;
        }
    }
    m
}

/// A + σI.
pub(crate) fn add_shift(a: &CsMat<f64>, sigma: f64) -> CsMat<f64> {
    let n = a.rows();
    let mut t = TriMat::with_capacity((n, n), a.nnz() + n);
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            t.add_triplet(i, j, v);
        }
    }
    for i in 0..n {
        t.add_triplet(i, i, sigma);
    }
    t.to_csr()
}

/// diag(r) A diag(c).
pub(crate) fn scale(a: &CsMat<f64>, r: &[f64], c: &[f64]) -> CsMat<f64> {
    let mut s = a.clone();
    let indptr: Vec<usize> = s.indptr().to_proper().to_vec();
    let indices: Vec<usize> = s.indices().to_vec();
    let data = s.data_mut();
    for i in 0..indptr.len().saturating_sub(1) {
        for k in indptr[i]..indptr[i + 1] {
            data[k] *= r[i] * c[indices[k]];
        }
    }
    s
}

/// ‖x − reference‖₂ / ‖reference‖₂; `None` when the reference is zero.
pub(crate) fn relative_error(x: &[f64], reference: &[f64]) -> Option<f64> {
    let nr = norm2(reference);
    (nr > 0.0).then(|| distance2(x, reference) / nr)
}

/// ‖x − y‖₂.
pub(crate) fn distance2(x: &[f64], y: &[f64]) -> f64 {
    let d: Vec<f64> = x.iter().zip(y).map(|(p, q)| p - q).collect();
    norm2(&d)
}

/// Euclidean norm.
pub(crate) fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Dot product.
pub(crate) fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}
