//! Sparse matrix–vector product `y = A x` over a square CSR matrix.
//!
//! Everything in [`crate::krylov`] and [`crate::precond`] multiplies through [`Csr`], a borrowed
//! view of the raw `indptr` / `indices` / `data` slices of a `sprs::CsMat<f64>`. The shape is
//! checked once when the view is made, so the hot loop is plain iterator code with no
//! allocation and no per-call validation.

use std::borrow::Cow;

use sprs::CsMat;

use super::KrylovError;

/// A validated, borrowed view of a square CSR matrix.
#[derive(Debug, Clone)]
pub struct Csr<'a> {
    n: usize,
    indptr: Cow<'a, [usize]>,
    indices: &'a [usize],
    data: &'a [f64],
}

impl<'a> Csr<'a> {
    /// Borrow `a` as a square CSR matrix. CSC storage and non-square shapes are errors.
    pub fn new(a: &'a CsMat<f64>) -> Result<Self, KrylovError> {
        if !a.is_csr() {
            return Err(KrylovError::NotCsr);
        }
        if a.rows() != a.cols() {
            return Err(KrylovError::NotSquare {
                rows: a.rows(),
                cols: a.cols(),
            });
        }
        let indptr = a.proper_indptr();
        let n = a.rows();
        if indptr.len() != n + 1 {
            return Err(KrylovError::NotSquare {
                rows: a.rows(),
                cols: a.cols(),
            });
        }
        Ok(Self {
            n,
            indptr,
            indices: a.indices(),
            data: a.data(),
        })
    }

    /// Number of rows (= columns).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Row pointer array (`n + 1` entries, starting at 0).
    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }

    /// Column indices, sorted within each row (a `sprs` invariant).
    pub fn indices(&self) -> &'a [usize] {
        self.indices
    }

    /// Non-zero values.
    pub fn data(&self) -> &'a [f64] {
        self.data
    }

    /// Column indices and values of row `i`.
    pub fn row(&self, i: usize) -> (&'a [usize], &'a [f64]) {
        let (s, e) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[s..e], &self.data[s..e])
    }

    /// `y = A x`. Both slices must have length `n` (checked).
    pub fn mul(&self, x: &[f64], y: &mut [f64]) -> Result<(), KrylovError> {
        if x.len() != self.n || y.len() != self.n {
            return Err(KrylovError::DimensionMismatch {
                what: "spmv vector",
                expected: self.n,
                got: if x.len() != self.n { x.len() } else { y.len() },
            });
        }
        self.mul_unchecked_len(x, y);
        Ok(())
    }

    /// `y = A x` for callers that have already checked the lengths. A wrong length cannot
    /// corrupt memory; it only yields a short result (or a bounds panic on `x`), so this stays
    /// crate-private.
    pub(crate) fn mul_unchecked_len(&self, x: &[f64], y: &mut [f64]) {
        let indices = self.indices;
        let data = self.data;
        for (yi, w) in y.iter_mut().zip(self.indptr.windows(2)) {
            let (s, e) = (w[0], w[1]);
            let mut acc0 = 0.0;
            let mut acc1 = 0.0;
            let cols = &indices[s..e];
            let vals = &data[s..e];
            let mut ci = cols.chunks_exact(2);
            let mut vi = vals.chunks_exact(2);
            for (c, v) in (&mut ci).zip(&mut vi) {
                acc0 += v[0] * x[c[0]];
                acc1 += v[1] * x[c[1]];
            }
            for (&c, &v) in ci.remainder().iter().zip(vi.remainder()) {
                acc0 += v * x[c];
            }
            *yi = acc0 + acc1;
        }
    }
}

/// `y = A x` for a square CSR matrix. Dimension mismatches are errors.
pub fn spmv(a: &CsMat<f64>, x: &[f64], y: &mut [f64]) -> Result<(), KrylovError> {
    Csr::new(a)?.mul(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprs::TriMat;

    #[test]
    fn spmv_matches_dense() {
        let mut t = TriMat::new((4, 4));
        let dense = [
            [4.0, -1.0, 0.0, 2.0],
            [0.0, 3.0, 5.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.5, 0.25, 7.0, -2.0],
        ];
        for (i, row) in dense.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    t.add_triplet(i, j, v);
                }
            }
        }
        let a: CsMat<f64> = t.to_csr();
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut y = [0.0; 4];
        spmv(&a, &x, &mut y).unwrap();
        for i in 0..4 {
            let e: f64 = (0..4).map(|j| dense[i][j] * x[j]).sum();
            assert!((y[i] - e).abs() < 1e-14);
        }
        let mut short = [0.0; 3];
        assert!(spmv(&a, &x, &mut short).is_err());
        let rect: CsMat<f64> = TriMat::<f64>::new((2, 3)).to_csr();
        assert!(matches!(
            Csr::new(&rect),
            Err(KrylovError::NotSquare { .. })
        ));
    }
}
