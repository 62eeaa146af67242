//! Sparse matrix–vector product `y = A x` over a square CSR matrix.
//!
//! Everything in [`crate::krylov`] and [`crate::precond`] multiplies through [`Csr`], a borrowed
//! view of the raw `indptr` / `indices` / `data` slices of a `sprs::CsMat<f64>`. The shape is
//! checked once when the view is made, so the hot loop is plain iterator code with no
//! allocation and no per-call validation.
//!
//! The product is memory-bound (≈ 12–16 bytes per nonzero against 2 flops), so the solvers use
//! [`Csr::for_products`], which also keeps a compact copy of the pattern with `u32` row
//! pointers and column indices (20% fewer bytes per product for a 5-point stencil) and splits
//! the rows into [`Workers`] chunks of equal nonzero count, multiplied on scoped threads. A
//! thread spawn costs tens of microseconds against milliseconds for the products where the
//! split is used (at least [`PARALLEL_MIN_NNZ`] nonzeros), so no pool is kept.

use std::borrow::Cow;

use sprs::CsMat;

use super::parallel::{Workers, PARALLEL_MIN_NNZ};
use super::KrylovError;

/// The pattern with `u32` indices and the row chunks of the threaded product.
#[derive(Debug, Clone)]
struct Compact {
    indptr: Vec<u32>,
    indices: Vec<u32>,
    /// Row boundaries of the chunks (`chunks[0] = 0`, last = n).
    chunks: Vec<usize>,
}

/// A validated, borrowed view of a square CSR matrix.
#[derive(Debug, Clone)]
pub struct Csr<'a> {
    n: usize,
    indptr: Cow<'a, [usize]>,
    indices: &'a [usize],
    data: &'a [f64],
    compact: Option<Compact>,
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
            compact: None,
        })
    }

    /// As [`Csr::new`], prepared for many products: a `u32` copy of the pattern (when n and
    /// nnz fit) and row chunks balanced by nonzeros for the worker threads.
    pub fn for_products(a: &'a CsMat<f64>) -> Result<Self, KrylovError> {
        let mut m = Self::new(a)?;
        let nnz = m.data.len();
        if nnz < PARALLEL_MIN_NNZ || m.n >= u32::MAX as usize || nnz >= u32::MAX as usize {
            return Ok(m);
        }
        let workers = Workers::get().count();
        let mut chunks = vec![0];
        for k in 1..workers {
            let target = nnz * k / workers;
            let row = m.indptr.partition_point(|&p| p < target).min(m.n);
            chunks.push(row.max(*chunks.last().unwrap_or(&0)));
        }
        chunks.push(m.n);
        m.compact = Some(Compact {
            indptr: m.indptr.iter().map(|&p| p as u32).collect(),
            indices: m.indices.iter().map(|&j| j as u32).collect(),
            chunks,
        });
        Ok(m)
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
        self.mul_dot_unchecked_len(x, y);
    }

    /// `y = A x` and returns `x · y` from the same pass (CG's `p · Ap`).
    pub(crate) fn mul_dot_unchecked_len(&self, x: &[f64], y: &mut [f64]) -> f64 {
        match &self.compact {
            None => rows_dot(&self.indptr, self.indices, self.data, x, y, 0),
            Some(c) => {
                let mut parts: Vec<(usize, &mut [f64])> = Vec::with_capacity(c.chunks.len());
                let mut rest = y;
                for w in c.chunks.windows(2) {
                    let (head, tail) = rest.split_at_mut(w[1] - w[0]);
                    parts.push((w[0], head));
                    rest = tail;
                }
                let (indptr, indices, data) = (&c.indptr[..], &c.indices[..], self.data);
                let sums: Vec<f64> = std::thread::scope(|s| {
                    let handles: Vec<_> = parts
                        .into_iter()
                        .map(|(row0, ys)| {
                            let ptr = &indptr[row0..row0 + ys.len() + 1];
                            s.spawn(move || rows_dot(ptr, indices, data, x, ys, row0))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or(f64::NAN))
                        .collect()
                });
                sums.into_iter().sum()
            }
        }
    }
}

/// A stored row pointer or column index.
trait Index: Copy {
    fn at(self) -> usize;
}

impl Index for usize {
    #[inline(always)]
    fn at(self) -> usize {
        self
    }
}

impl Index for u32 {
    #[inline(always)]
    fn at(self) -> usize {
        self as usize
    }
}

/// Rows `row0 .. row0 + y.len()`: `ptr` holds their `len + 1` row pointers into the full
/// `indices` / `data`. Returns `Σ x_i y_i` over those rows.
fn rows_dot<I: Index>(
    ptr: &[I],
    indices: &[I],
    data: &[f64],
    x: &[f64],
    y: &mut [f64],
    row0: usize,
) -> f64 {
    let at = |i: I| i.at();
    let mut dot = 0.0;
    for (k, (yi, w)) in y.iter_mut().zip(ptr.windows(2)).enumerate() {
        let (s, e) = (at(w[0]), at(w[1]));
        let mut acc0 = 0.0;
        let mut acc1 = 0.0;
        let cols = &indices[s..e];
        let vals = &data[s..e];
        let mut ci = cols.chunks_exact(2);
        let mut vi = vals.chunks_exact(2);
        for (c, v) in (&mut ci).zip(&mut vi) {
            acc0 += v[0] * x[at(c[0])];
            acc1 += v[1] * x[at(c[1])];
        }
        for (&c, &v) in ci.remainder().iter().zip(vi.remainder()) {
            acc0 += v * x[at(c)];
        }
        let yv = acc0 + acc1;
        *yi = yv;
        dot += x[row0 + k] * yv;
    }
    dot
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
