//! Sparse matrix–vector product `y = A x` over a square CSR matrix.
//!
//! Everything in [`crate::krylov`] and [`crate::precond`] multiplies through [`Csr`], a borrowed
//! view of the raw `indptr` / `indices` / `data` slices of a `sprs::CsMat<f64>`. The shape is
//! checked once when the view is made, so the hot loop is plain iterator code with no
//! allocation and no per-call validation.
//!
//! The product is memory-bound (≈ 12–16 bytes per nonzero against 2 flops), so the solvers use
//! [`Csr::for_products`], which also keeps a compact copy of the pattern with `u32` row
//! pointers and column indices (20% fewer bytes per product for a 5-point stencil) and cuts
//! the rows into [`PARTS`](super::parallel::PARTS) parts of equal nonzero count that the
//! worker threads take from a shared counter ([`super::parallel::run_parts`]), so a thread
//! that the host stalls costs only the part it holds. Every row is summed in the same order
//! whichever thread computes it, so the product is bit-identical to the serial one.
use std::borrow::Cow;

use sprs::CsMat;

use super::parallel::{run_parts, split_mut, Split};
use super::KrylovError;

/// The pattern with `u32` indices and the row parts of the threaded product.
#[derive(Debug, Clone)]
struct Compact {
    indptr: Vec<u32>,
    indices: Vec<u32>,
    /// Row boundaries of the parts (`chunks[0] = 0`, last = n, non-decreasing; a part may be
    /// empty when there are more parts than rows).
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
    split: Split,
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
            split: Split {
                workers: 1,
                parts: 1,
                min_len: usize::MAX,
                min_nnz: usize::MAX,
            },
        })
    }

    /// As [`Csr::new`], prepared for many products: a `u32` copy of the pattern (when n and
    /// nnz fit) and row parts balanced by nonzeros for the worker threads.
    pub fn for_products(a: &'a CsMat<f64>) -> Result<Self, KrylovError> {
        Self::with_split(a, Split::get())
    }

    /// As [`Csr::for_products`] with an explicit split (the tests force threads and parts).
    pub(crate) fn with_split(a: &'a CsMat<f64>, split: Split) -> Result<Self, KrylovError> {
        let mut m = Self::new(a)?;
        m.split = split;
        let nnz = m.data.len();
        if nnz < split.min_nnz || m.n >= u32::MAX as usize || nnz >= u32::MAX as usize {
            return Ok(m);
        }
        let parts = split.parts.max(1);
        let mut chunks = vec![0];
        for k in 1..parts {
            let target = nnz * k / parts;
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

    /// The thread split the vector kernels of a solve on this matrix should use.
    pub(crate) fn split(&self) -> Split {
        self.split
    }

    /// `‖A‖∞` (the largest absolute row sum, an upper bound on ‖A‖₂ for symmetric A) and the
    /// most nonzeros in a row: the scale of the rounding error of one product.
    pub(crate) fn norm_bound(&self) -> (f64, usize) {
        let mut norm: f64 = 0.0;
        let mut widest = 0;
        for w in self.indptr.windows(2) {
            let row = &self.data[w[0]..w[1]];
            norm = norm.max(row.iter().map(|v| v.abs()).sum());
            widest = widest.max(row.len());
        }
        (norm, widest)
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
                let rows = split_mut(y, &c.chunks);
                let parts: Vec<(usize, &mut [f64])> = c.chunks.iter().copied().zip(rows).collect();
                let (indptr, indices, data) = (&c.indptr[..], &c.indices[..], self.data);
                let sums = run_parts(self.split.workers, parts, f64::NAN, |(row0, ys)| {
                    let ptr = &indptr[row0..row0 + ys.len() + 1];
                    rows_dot(ptr, indices, data, x, ys, row0)
                });
                // In part order: the same sum for any worker count.
                sums.iter().sum()
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
    /// A random sparse matrix with rows of 0 to 12 nonzeros (odd and even lengths, empty rows).
    fn random_csr(n: usize, seed: u64) -> CsMat<f64> {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        let mut t = TriMat::new((n, n));
        for i in 0..n {
            for _ in 0..next() % 13 {
                t.add_triplet(i, next() % n, (next() % 2001) as f64 / 1000.0 - 1.0);
            }
        }
        t.to_csr()
    }

    #[test]
    fn threaded_product_equals_the_serial_one_exactly() {
        for (n, seed) in [(1, 1), (7, 2), (40, 3), (997, 4)] {
            let a = random_csr(n, seed);
            let x: Vec<f64> = (0..n).map(|i| 1.0 + ((i * 37) % 11) as f64 / 7.0).collect();
            let mut serial = vec![0.0; n];
            let serial_dot = Csr::new(&a).unwrap().mul_dot_unchecked_len(&x, &mut serial);
            for parts in [1, 3, 32, 3 * n + 5] {
                let mut dots = Vec::new();
                for workers in [1, 2, 3, 8] {
                    let split = Split {
                        workers,
                        parts,
                        min_len: 0,
                        min_nnz: 0,
                    };
                    let m = Csr::with_split(&a, split).unwrap();
                    assert!(m.compact.is_some());
                    let mut y = vec![f64::NAN; n];
                    dots.push(m.mul_dot_unchecked_len(&x, &mut y));
                    // Same summation order within each row: bit-identical.
                    assert_eq!(y, serial, "n {n} parts {parts} workers {workers}");
                    let scale: f64 = x.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum();
                    assert!((dots[dots.len() - 1] - serial_dot).abs() <= 1e-13 * scale.max(1.0));
                }
                // Partial sums added in part order: the same dot for any worker count.
                assert!(dots.iter().all(|d| d.to_bits() == dots[0].to_bits()));
            }
        }
    }
}
