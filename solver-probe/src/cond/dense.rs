//! Private dense factorizations (nalgebra) used for solves: LU for A and Aᵀ.

use nalgebra::{DMatrix, DVector, LU};

use super::CondError;

/// LU factorizations of A and Aᵀ (partial pivoting).
pub(crate) struct DenseLu {
    lu: LU<f64, nalgebra::Dyn, nalgebra::Dyn>,
    lut: Option<LU<f64, nalgebra::Dyn, nalgebra::Dyn>>,
    /// True when a pivot is exactly zero.
    pub(crate) singular: bool,
}

impl DenseLu {
    /// Factors A (and Aᵀ when `transpose` is set).
    pub(crate) fn new(m: &DMatrix<f64>, transpose: bool) -> DenseLu {
        let lu = m.clone().lu();
        let singular = !lu.is_invertible();
        let lut = if transpose {
            Some(m.transpose().lu())
        } else {
            None
        };
        DenseLu { lu, lut, singular }
    }

    /// Solves A x = b.
    pub(crate) fn solve(&self, b: &[f64]) -> Result<Vec<f64>, CondError> {
        Self::solve_with(&self.lu, b)
    }

    /// Solves Aᵀ x = b.
    pub(crate) fn solve_t(&self, b: &[f64]) -> Result<Vec<f64>, CondError> {
        match &self.lut {
            Some(lut) => Self::solve_with(lut, b),
            None => Err(CondError::Numerical(
                "transpose factorization missing".into(),
            )),
        }
    }

    fn solve_with(
        lu: &LU<f64, nalgebra::Dyn, nalgebra::Dyn>,
        b: &[f64],
    ) -> Result<Vec<f64>, CondError> {
        let x: DVector<f64> = lu
            .solve(&DVector::from_column_slice(b))
            .ok_or_else(|| CondError::Numerical("LU has a zero pivot".into()))?;
        if x.iter().all(|v| v.is_finite()) {
            Ok(x.as_slice().to_vec())
        } else {
            Err(CondError::Numerical("LU solve overflowed".into()))
        }
    }
}
