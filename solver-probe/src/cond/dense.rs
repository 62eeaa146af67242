//! Private dense factorizations (faer) used for solves: LU with partial pivoting for A and Aᵀ.
//!
//! One LU serves both: Aᵀ x = b is solved with the transposed factors, so no second
//! factorization is formed.

use faer::linalg::solvers::{PartialPivLu, Solve};
use faer::{Mat, MatMut};

use super::CondError;

/// LU factorization of A (partial pivoting), solving with A and Aᵀ.
pub(crate) struct DenseLu {
    lu: PartialPivLu<f64>,
    /// True when a pivot is exactly zero.
    pub(crate) singular: bool,
}

impl DenseLu {
    /// Factors A.
    pub(crate) fn new(m: &Mat<f64>) -> DenseLu {
        let lu = m.partial_piv_lu();
        let u = lu.U();
        let singular = (0..u.nrows().min(u.ncols())).any(|i| u[(i, i)] == 0.0);
        DenseLu { lu, singular }
    }

    /// Factors A given row-major (n×n).
    pub(crate) fn from_row_major(n: usize, a: &[f64]) -> DenseLu {
        DenseLu::new(&Mat::from_fn(n, n, |i, j| a[i * n + j]))
    }

    /// Solves A x = b.
    pub(crate) fn solve(&self, b: &[f64]) -> Result<Vec<f64>, CondError> {
        self.solve_with(b, false)
    }

    /// Solves Aᵀ x = b.
    pub(crate) fn solve_t(&self, b: &[f64]) -> Result<Vec<f64>, CondError> {
        self.solve_with(b, true)
    }

    fn solve_with(&self, b: &[f64], transpose: bool) -> Result<Vec<f64>, CondError> {
        if self.singular {
            return Err(CondError::Numerical("LU has a zero pivot".into()));
        }
        let mut x = b.to_vec();
        let n = x.len();
        let rhs = MatMut::from_column_major_slice_mut(&mut x, n, 1);
        if transpose {
            self.lu.solve_transpose_in_place(rhs);
        } else {
            self.lu.solve_in_place(rhs);
        }
        if x.iter().all(|v| v.is_finite()) {
            Ok(x)
        } else {
            Err(CondError::Numerical("LU solve overflowed".into()))
        }
    }
}
