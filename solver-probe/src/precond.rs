//! Preconditioners for the Krylov solvers in [`crate::krylov`].
//!
//! A [`Preconditioner`] applies `z = M⁻¹ r`. Provided: [`Identity`] (no preconditioning),
//! [`Jacobi`] (inverse diagonal), [`Ilu0`] (incomplete LU with the sparsity of A) and [`Ic0`]
//! (incomplete Cholesky with the sparsity of the lower triangle of A, for SPD matrices).
//! Construction fails with a [`PrecondError`] naming the offending row; a non-positive IC(0)
//! pivot is reported as [`PrecondError::NonPositivePivot`], which the solvers' front end
//! ([`crate::krylov::solve_with`]) turns into `DIVERGED_INDEFINITE_PC`.
//!
//! Triangular solves run directly over the CSR arrays.

use sprs::CsMat;

use crate::krylov::{Csr, KrylovError};

/// Why a preconditioner could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrecondError {
    /// Jacobi needs every diagonal entry non-zero and finite.
    #[error("Jacobi: diagonal entry of row {row} is {value} (must be non-zero and finite)")]
    ZeroDiagonal { row: usize, value: f64 },
    /// ILU(0) met a zero (or missing, or non-finite) pivot.
    #[error("ILU(0): zero or non-finite pivot {value} in row {row}")]
    ZeroPivot { row: usize, value: f64 },
    /// IC(0) met a non-positive pivot: the matrix is not SPD (or IC(0) breaks down on it).
    #[error(
        "IC(0): non-positive pivot {value} in row {row} (matrix not SPD or IC(0) breaks down)"
    )]
    NonPositivePivot { row: usize, value: f64 },
    /// The matrix is not a square CSR matrix.
    #[error("preconditioner needs a square CSR matrix: {0}")]
    Matrix(String),
}

impl From<KrylovError> for PrecondError {
    fn from(e: KrylovError) -> Self {
        PrecondError::Matrix(e.to_string())
    }
}

/// `z = M⁻¹ r`.
///
/// `r` and `z` must have length [`Preconditioner::dim`] (when it is `Some`). The solvers check
/// this before iterating; if a caller passes other lengths, `apply` fills `z` with NaN rather
/// than panicking, so a solver reports `DIVERGED_NANORINF`.
pub trait Preconditioner {
    /// Apply the preconditioner.
    fn apply(&self, r: &[f64], z: &mut [f64]);
    /// Short name: `none`, `jacobi`, `ilu0`, `ic0`.
    fn name(&self) -> &'static str;
    /// Dimension this preconditioner was built for (`None`: any).
    fn dim(&self) -> Option<usize>;
    /// True when `apply` is the identity (`z = r`), so a solver may use `r` in place of `z`
    /// and skip the copy.
    fn is_identity(&self) -> bool {
        false
    }
}

fn lengths_ok(n: usize, r: &[f64], z: &mut [f64]) -> bool {
    if r.len() == n && z.len() == n {
        true
    } else {
        z.iter_mut().for_each(|v| *v = f64::NAN);
        false
    }
}

/// No preconditioning: `z = r`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl Preconditioner for Identity {
    fn apply(&self, r: &[f64], z: &mut [f64]) {
        if r.len() == z.len() {
            z.copy_from_slice(r);
        } else {
            z.iter_mut().for_each(|v| *v = f64::NAN);
        }
    }
    fn name(&self) -> &'static str {
        "none"
    }
    fn dim(&self) -> Option<usize> {
        None
    }
    fn is_identity(&self) -> bool {
        true
    }
}

/// Diagonal (Jacobi) preconditioner: `z_i = r_i / a_ii`.
#[derive(Debug, Clone)]
pub struct Jacobi {
    inv_diag: Vec<f64>,
}

impl Jacobi {
    /// Build from the diagonal of `a`; a zero, missing or non-finite diagonal entry is an error.
    pub fn new(a: &CsMat<f64>) -> Result<Self, PrecondError> {
        let m = Csr::new(a)?;
        let mut inv_diag = Vec::with_capacity(m.n());
        for i in 0..m.n() {
            let d = diag_value(&m, i);
            if d == 0.0 || !d.is_finite() {
                return Err(PrecondError::ZeroDiagonal { row: i, value: d });
            }
            inv_diag.push(1.0 / d);
        }
        Ok(Self { inv_diag })
    }
}

impl Preconditioner for Jacobi {
    fn apply(&self, r: &[f64], z: &mut [f64]) {
        if lengths_ok(self.inv_diag.len(), r, z) {
            for ((zi, ri), di) in z.iter_mut().zip(r).zip(&self.inv_diag) {
                *zi = ri * di;
            }
        }
    }
    fn name(&self) -> &'static str {
        "jacobi"
    }
    fn dim(&self) -> Option<usize> {
        Some(self.inv_diag.len())
    }
}

fn diag_value(m: &Csr<'_>, i: usize) -> f64 {
    let (cols, vals) = m.row(i);
    match cols.binary_search(&i) {
        Ok(k) => vals[k],
        Err(_) => 0.0,
    }
}

/// ILU(0): `A ≈ L U` with L unit lower and U upper triangular, both restricted to the
/// sparsity pattern of A. Stored in one CSR array (L strictly below the diagonal, U on and
/// above it).
#[derive(Debug, Clone)]
pub struct Ilu0 {
    n: usize,
    indptr: Vec<usize>,
    indices: Vec<usize>,
    vals: Vec<f64>,
    diag: Vec<usize>,
}

impl Ilu0 {
    /// Factor `a` (IKJ variant). A zero, missing or non-finite pivot is an error naming the row.
    pub fn new(a: &CsMat<f64>) -> Result<Self, PrecondError> {
        let m = Csr::new(a)?;
        let n = m.n();
        let indptr = m.indptr().to_vec();
        let indices = m.indices().to_vec();
        let mut vals = m.data().to_vec();
        let mut diag = vec![usize::MAX; n];
        let mut pos = vec![usize::MAX; n];
        for i in 0..n {
            let (s, e) = (indptr[i], indptr[i + 1]);
            for k in s..e {
                pos[indices[k]] = k;
            }
            for kk in s..e {
                let k = indices[kk];
                if k >= i {
                    break;
                }
                let dk = diag[k];
                let lik = vals[kk] / vals[dk];
                vals[kk] = lik;
                for jj in dk + 1..indptr[k + 1] {
                    let p = pos[indices[jj]];
                    if p != usize::MAX {
                        vals[p] -= lik * vals[jj];
                    }
                }
            }
            let d = pos[i];
            let value = if d == usize::MAX { 0.0 } else { vals[d] };
            for k in s..e {
                pos[indices[k]] = usize::MAX;
            }
            if value == 0.0 || !value.is_finite() {
                return Err(PrecondError::ZeroPivot { row: i, value });
            }
            diag[i] = d;
        }
        Ok(Self {
            n,
            indptr,
            indices,
            vals,
            diag,
        })
    }
}

impl Preconditioner for Ilu0 {
    fn apply(&self, r: &[f64], z: &mut [f64]) {
        if !lengths_ok(self.n, r, z) {
            return;
        }
        // Forward: L y = r (unit diagonal).
        for i in 0..self.n {
            let s = self.indptr[i];
            let d = self.diag[i];
            let mut acc = r[i];
            for (&c, &v) in self.indices[s..d].iter().zip(&self.vals[s..d]) {
                acc -= v * z[c];
            }
            z[i] = acc;
        }
        // Backward: U z = y.
        for i in (0..self.n).rev() {
            let d = self.diag[i];
            let e = self.indptr[i + 1];
            let mut acc = z[i];
            for (&c, &v) in self.indices[d + 1..e].iter().zip(&self.vals[d + 1..e]) {
                acc -= v * z[c];
            }
            z[i] = acc / self.vals[d];
        }
    }
    fn name(&self) -> &'static str {
        "ilu0"
    }
    fn dim(&self) -> Option<usize> {
        Some(self.n)
    }
}

/// IC(0): `A ≈ L Lᵀ` with L lower triangular on the pattern of the lower triangle of A.
/// Only the lower triangle of A is read (A is assumed symmetric). The diagonal is the last
/// entry of each row of L.
#[derive(Debug, Clone)]
pub struct Ic0 {
    n: usize,
    indptr: Vec<usize>,
    indices: Vec<usize>,
    vals: Vec<f64>,
}

impl Ic0 {
    /// Factor `a`. A non-positive (or missing, or non-finite) pivot is
    /// [`PrecondError::NonPositivePivot`] naming the row.
    pub fn new(a: &CsMat<f64>) -> Result<Self, PrecondError> {
        let m = Csr::new(a)?;
        let n = m.n();
        let mut indptr = Vec::with_capacity(n + 1);
        let mut indices = Vec::new();
        let mut vals: Vec<f64> = Vec::new();
        indptr.push(0);
        let mut pos = vec![usize::MAX; n];
        for i in 0..n {
            let start = indices.len();
            let (cols, avals) = m.row(i);
            let mut has_diag = false;
            for (&c, &v) in cols.iter().zip(avals) {
                if c < i {
                    indices.push(c);
                    vals.push(v);
                } else if c == i {
                    indices.push(c);
                    vals.push(v);
                    has_diag = true;
                    break;
                } else {
                    break;
                }
            }
            if !has_diag {
                return Err(PrecondError::NonPositivePivot { row: i, value: 0.0 });
            }
            let end = indices.len();
            for k in start..end {
                pos[indices[k]] = k;
            }
            // Off-diagonal entries: L_ik = (A_ik - sum_{j<k} L_ij L_kj) / L_kk.
            for kk in start..end - 1 {
                let k = indices[kk];
                let (ks, ke) = (indptr[k], indptr[k + 1]);
                let mut acc = vals[kk];
                for jj in ks..ke - 1 {
                    let p = pos[indices[jj]];
                    if p != usize::MAX && p < kk {
                        acc -= vals[p] * vals[jj];
                    }
                }
                vals[kk] = acc / vals[ke - 1];
            }
            let mut d = vals[end - 1];
            for &v in &vals[start..end - 1] {
                d -= v * v;
            }
            for k in start..end {
                pos[indices[k]] = usize::MAX;
            }
            if d <= 0.0 || !d.is_finite() {
                return Err(PrecondError::NonPositivePivot { row: i, value: d });
            }
            vals[end - 1] = d.sqrt();
            indptr.push(end);
        }
        Ok(Self {
            n,
            indptr,
            indices,
            vals,
        })
    }
}

impl Preconditioner for Ic0 {
    fn apply(&self, r: &[f64], z: &mut [f64]) {
        if !lengths_ok(self.n, r, z) {
            return;
        }
        // Forward: L y = r.
        for i in 0..self.n {
            let (s, e) = (self.indptr[i], self.indptr[i + 1]);
            let mut acc = r[i];
            for (&c, &v) in self.indices[s..e - 1].iter().zip(&self.vals[s..e - 1]) {
                acc -= v * z[c];
            }
            z[i] = acc / self.vals[e - 1];
        }
        // Backward: Lᵀ z = y, column-oriented over the rows of L.
        for i in (0..self.n).rev() {
            let (s, e) = (self.indptr[i], self.indptr[i + 1]);
            z[i] /= self.vals[e - 1];
            let zi = z[i];
            for (&c, &v) in self.indices[s..e - 1].iter().zip(&self.vals[s..e - 1]) {
                z[c] -= v * zi;
            }
        }
    }
    fn name(&self) -> &'static str {
        "ic0"
    }
    fn dim(&self) -> Option<usize> {
        Some(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprs::TriMat;

    fn tridiag(n: usize, lo: f64, d: f64, up: f64) -> CsMat<f64> {
        let mut t = TriMat::new((n, n));
        for i in 0..n {
            t.add_triplet(i, i, d);
            if i > 0 {
                t.add_triplet(i, i - 1, lo);
            }
            if i + 1 < n {
                t.add_triplet(i, i + 1, up);
            }
        }
        t.to_csr()
    }

    fn check_exact(a: &CsMat<f64>, pc: &dyn Preconditioner) {
        // For tridiagonal matrices ILU(0)/IC(0) are exact: A M⁻¹ r = r.
        let n = a.rows();
        let r: Vec<f64> = (0..n).map(|i| (i as f64 * 0.7).sin() + 1.0).collect();
        let mut z = vec![0.0; n];
        pc.apply(&r, &mut z);
        let mut az = vec![0.0; n];
        crate::krylov::spmv(a, &z, &mut az).unwrap();
        for (x, y) in az.iter().zip(&r) {
            assert!((x - y).abs() < 1e-12, "{x} vs {y}");
        }
    }

    #[test]
    fn ilu0_exact_on_tridiagonal() {
        let a = tridiag(20, -1.0, 3.0, -1.5);
        check_exact(&a, &Ilu0::new(&a).unwrap());
    }

    #[test]
    fn ic0_exact_on_tridiagonal() {
        let a = tridiag(20, -1.0, 2.5, -1.0);
        check_exact(&a, &Ic0::new(&a).unwrap());
    }

    #[test]
    fn jacobi_names_zero_row() {
        let mut a = tridiag(5, 1.0, 2.0, 1.0);
        a.set(3, 3, 0.0);
        match Jacobi::new(&a) {
            Err(PrecondError::ZeroDiagonal { row: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
        let e = Jacobi::new(&a).unwrap_err().to_string();
        assert!(e.contains("row 3"), "{e}");
    }

    #[test]
    fn ilu0_zero_pivot_names_row() {
        // [[1,1],[1,1]]: second pivot is 1 - 1*1 = 0.
        let a = tridiag(2, 1.0, 1.0, 1.0);
        assert!(matches!(
            Ilu0::new(&a),
            Err(PrecondError::ZeroPivot { row: 1, .. })
        ));
    }

    #[test]
    fn ic0_rejects_indefinite() {
        let a = tridiag(4, 2.0, 1.0, 2.0);
        assert!(matches!(
            Ic0::new(&a),
            Err(PrecondError::NonPositivePivot { row: 1, .. })
        ));
    }

    #[test]
    fn wrong_length_gives_nan_not_panic() {
        let a = tridiag(4, -1.0, 2.0, -1.0);
        let pc = Ilu0::new(&a).unwrap();
        let mut z = vec![0.0; 3];
        pc.apply(&[1.0; 4], &mut z);
        assert!(z.iter().all(|v| v.is_nan()));
    }
}
