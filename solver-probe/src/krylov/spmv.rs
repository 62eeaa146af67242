//! Sparse matrix–vector product `y = A x` over a square CSR matrix.
//!
//! Everything in [`crate::krylov`] and [`crate::precond`] multiplies through [`Csr`], a borrowed
//! view of the raw `indptr` / `indices` / `data` slices of a `sprs::CsMat<f64>`. The shape is
//! checked once when the view is made, so the hot loop is plain iterator code with no
//! allocation and no per-call validation.
//!
//! The product is memory-bound (2 flops against the bytes of a nonzero), so the solvers (CG
//! and its fused Chronopoulos–Gear pass, GMRES, BiCGSTAB, the preconditioned paths, Lanczos
//! λ_max) use [`Csr::for_products`], which keeps a compressed, lossless copy for the products
//! and cuts the rows into [`PARTS`](super::parallel::PARTS) parts of equal nonzero count that
//! the worker threads take from a shared counter ([`super::parallel::run_parts`]), so a thread
//! that the host stalls costs only the part it holds. The copy's layout is chosen per matrix
//! when it is made, each half on its own test:
//!
//! - column indices as `i16` offsets `col − row` (2 B) when every one fits (banded and stencil
//!   matrices: the 2-D Poisson on an N × N grid has ±1, ±N; the 3-D one on 100³ has ±10 000),
//!   else `u32` columns (4 B) as before;
//! - values as a `u8` code (1 B) into a 256-entry table when the matrix has at most 256
//!   distinct values, compared by bit pattern (so -0.0 and NaN payloads survive), else the
//!   matrix's own `f64` values (8 B), borrowed, not copied.
//!
//! Row pointers are `u32` in every layout. A 5-point stencil thus moves 3 B per nonzero for its
//! pattern and values instead of 12; that, not faster arithmetic, is where the speed-up on the
//! Poisson benchmark comes from. A variable-coefficient matrix keeps its `f64` values
//! (10 B/nonzero with `i16` offsets), a matrix with entries far from the diagonal keeps `u32`
//! columns, and one with neither gets the old 12 B layout. Products with fewer than
//! [`PARALLEL_MIN_NNZ`](super::parallel::PARALLEL_MIN_NNZ) nonzeros (cache-resident anyway),
//! or with n or nnz beyond `u32`, use the borrowed `usize` arrays with no copy.
//!
//! Every layout is validated once when it is built, and every row is summed in the same order
//! whichever layout and thread computes it, so the product is bit-identical to the serial one
//! over the original arrays.
use std::borrow::Cow;

use sprs::CsMat;

use super::parallel::{run_parts, split_mut, Split};
use super::KrylovError;

/// Column indices of the compact copy: offsets from the row when they all fit in `i16`.
#[derive(Debug, Clone)]
enum Cols {
    /// `col - row` (2 B/nonzero): banded and stencil matrices.
    Offset(Vec<i16>),
    /// `col` (4 B/nonzero): every other matrix.
    Absolute(Vec<u32>),
}

/// Values of the compact copy: a dictionary when the matrix has at most 256 distinct values.
#[derive(Debug, Clone)]
enum Vals {
    /// A `u8` code per nonzero (1 B/nonzero) into `table` (distinct bit patterns, unused slots
    /// 0.0): stencil matrices with a handful of coefficients.
    Dict {
        table: Box<[f64; 256]>,
        codes: Vec<u8>,
    },
    /// The matrix's own `f64` values, borrowed (8 B/nonzero, no copy).
    Plain,
}

/// The compressed copy of the matrix the products read, and the row parts of the threaded
/// product.
#[derive(Debug, Clone)]
struct Compact {
    indptr: Vec<u32>,
    cols: Cols,
    vals: Vals,
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

    /// As [`Csr::new`], prepared for many products: the compressed copy of the module comment
    /// (16-bit column offsets or `u32` columns, a 1-byte value dictionary or the `f64`s; when
    /// n and nnz fit) and row parts balanced by nonzeros for the worker threads.
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
        let cols = match offsets(&m.indptr, m.indices) {
            Some(off) => Cols::Offset(off),
            None => Cols::Absolute(m.indices.iter().map(|&j| j as u32).collect()),
        };
        let vals = match dictionary(m.data) {
            Some((table, codes)) => Vals::Dict { table, codes },
            None => Vals::Plain,
        };
        m.compact = Some(Compact {
            indptr: m.indptr.iter().map(|&p| p as u32).collect(),
            cols,
            vals,
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
        let Some(c) = &self.compact else {
            return rows_dot(&self.indptr, self.indices, self.data, Plain, x, y, 0);
        };
        // One monomorphised kernel per layout, chosen once per product, not per row.
        match (&c.cols, &c.vals) {
            (Cols::Offset(o), Vals::Dict { table, codes }) => {
                self.threaded(c, o, codes, Dict(table), x, y)
            }
            (Cols::Offset(o), Vals::Plain) => self.threaded(c, o, self.data, Plain, x, y),
            (Cols::Absolute(a), Vals::Dict { table, codes }) => {
                self.threaded(c, a, codes, Dict(table), x, y)
            }
            (Cols::Absolute(a), Vals::Plain) => self.threaded(c, a, self.data, Plain, x, y),
        }
    }

    /// The product over the parts of `c`, taken by the worker threads.
    fn threaded<C: Column, V: Values>(
        &self,
        c: &Compact,
        cols: &[C],
        vals: &[V::Stored],
        v: V,
        x: &[f64],
        y: &mut [f64],
    ) -> f64 {
        let rows = split_mut(y, &c.chunks);
        let parts: Vec<(usize, &mut [f64])> = c.chunks.iter().copied().zip(rows).collect();
        let indptr = &c.indptr[..];
        let sums = run_parts(self.split.workers, parts, f64::NAN, |(row0, ys)| {
            let ptr = &indptr[row0..row0 + ys.len() + 1];
            rows_dot(ptr, cols, vals, v, x, ys, row0)
        });
        // In part order: the same sum for any worker count.
        sums.iter().sum()
    }

    /// Which layout the products use: (`i16` column offsets, `u8` value dictionary), or `None`
    /// without a compact copy (small matrices, the plain view of [`Csr::new`]).
    #[cfg(test)]
    fn layout(&self) -> Option<(bool, bool)> {
        self.compact.as_ref().map(|c| {
            (
                matches!(c.cols, Cols::Offset(_)),
                matches!(c.vals, Vals::Dict { .. }),
            )
        })
    }
}

/// `col - row` for every nonzero when all of them fit in `i16`, else `None` (at the first
/// that does not, so a wide matrix costs a partial pass).
fn offsets(indptr: &[usize], indices: &[usize]) -> Option<Vec<i16>> {
    let mut out = Vec::with_capacity(indices.len());
    for (row, w) in indptr.windows(2).enumerate() {
        for &col in indices.get(w[0]..w[1])? {
            let d = i64::try_from(col).ok()? - i64::try_from(row).ok()?;
            out.push(i16::try_from(d).ok()?);
        }
    }
    Some(out)
}

/// A table of the distinct values (by bit pattern, so -0.0, 0.0 and every NaN payload stay
/// what they were) and a `u8` code per nonzero, when there are at most 256 of them.
fn dictionary(data: &[f64]) -> Option<(Box<[f64; 256]>, Vec<u8>)> {
    // Open addressing over 512 slots keyed by the bits: at most 256 keys, so a probe always
    // ends at the key or an empty slot, and a lookup is a multiply and a compare or two
    // (std's SipHash map would cost several times the product it prepares).
    const SLOTS: usize = 512;
    let mut keys = [0u64; SLOTS];
    let mut code = [0u16; SLOTS]; // code + 1; 0 = empty
    let mut table = Box::new([0.0; 256]);
    let mut distinct = 0usize;
    let mut codes = Vec::with_capacity(data.len());
    // Stencil values come in runs (the off-diagonal -1s): the previous code first.
    let mut last: Option<(u64, u8)> = None;
    for &v in data {
        let bits = v.to_bits();
        if let Some((b, c)) = last {
            if b == bits {
                codes.push(c);
                continue;
            }
        }
        let mut h = (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 55) as usize;
        let c = loop {
            let slot = h % SLOTS;
            if code[slot] == 0 {
                let c = u8::try_from(distinct).ok()?;
                keys[slot] = bits;
                code[slot] = u16::from(c) + 1;
                table[usize::from(c)] = v;
                distinct += 1;
                break c;
            }
            if keys[slot] == bits {
                break u8::try_from(code[slot] - 1).ok()?;
            }
            h += 1;
        };
        last = Some((bits, c));
        codes.push(c);
    }
    Some((table, codes))
}

/// A stored row pointer.
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

/// A stored column: absolute (`usize`, `u32`) or an offset from the row (`i16`).
trait Column: Copy + Sync {
    fn col(self, row: usize) -> usize;
}

impl Column for usize {
    #[inline(always)]
    fn col(self, _row: usize) -> usize {
        self
    }
}

impl Column for u32 {
    #[inline(always)]
    fn col(self, _row: usize) -> usize {
        self as usize
    }
}

impl Column for i16 {
    #[inline(always)]
    fn col(self, row: usize) -> usize {
        // Gives back exactly the stored column (the offset was taken from it when the copy
        // was made); a column outside 0..n fails `x`'s bounds check, as in the plain path.
        row.wrapping_add_signed(isize::from(self))
    }
}

/// How a stored value becomes the `f64` it stands for.
trait Values: Copy + Sync {
    type Stored: Copy + Sync;
    fn value(self, s: Self::Stored) -> f64;
}

/// The values themselves.
#[derive(Clone, Copy)]
struct Plain;

impl Values for Plain {
    type Stored = f64;
    #[inline(always)]
    fn value(self, s: f64) -> f64 {
        s
    }
}

/// A `u8` code into a 256-entry table: the index cannot be out of range, so no check.
#[derive(Clone, Copy)]
struct Dict<'t>(&'t [f64; 256]);

impl Values for Dict<'_> {
    type Stored = u8;
    #[inline(always)]
    fn value(self, s: u8) -> f64 {
        self.0[usize::from(s)]
    }
}

/// Rows `row0 .. row0 + y.len()`: `ptr` holds their `len + 1` row pointers into the full
/// `cols` / `vals`. Returns `Σ x_i y_i` over those rows. Every layout sums a row in the same
/// order (even positions into one accumulator, odd into another, then the two added), so all
/// give the same bits.
fn rows_dot<I: Index, C: Column, V: Values>(
    ptr: &[I],
    cols: &[C],
    vals: &[V::Stored],
    v: V,
    x: &[f64],
    y: &mut [f64],
    row0: usize,
) -> f64 {
    let mut dot = 0.0;
    let first = ptr.first().map_or(0, |p| p.at());
    let (mut rest_c, mut rest_v) = (&cols[first..], &vals[first..]);
    let xs = &x[row0..row0 + y.len()];
    for (k, ((yi, w), &xr)) in y.iter_mut().zip(ptr.windows(2)).zip(xs).enumerate() {
        let row = row0 + k;
        let len = w[1].at() - w[0].at();
        let (c, rc) = rest_c.split_at(len);
        let (a, ra) = rest_v.split_at(len);
        (rest_c, rest_v) = (rc, ra);
        let mut acc0 = 0.0;
        let mut acc1 = 0.0;
        let mut ci = c.chunks_exact(2);
        let mut vi = a.chunks_exact(2);
        for (c, a) in (&mut ci).zip(&mut vi) {
            acc0 += v.value(a[0]) * x[c[0].col(row)];
            acc1 += v.value(a[1]) * x[c[1].col(row)];
        }
        for (&c, &a) in ci.remainder().iter().zip(vi.remainder()) {
            acc0 += v.value(a) * x[c.col(row)];
        }
        let yv = acc0 + acc1;
        *yi = yv;
        dot += xr * yv;
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

    /// The 5-point Laplacian on a `g × g` grid, with its values from `value(i, j, stencil)`.
    fn grid(g: usize, value: impl Fn(usize, usize, f64) -> f64) -> CsMat<f64> {
        let n = g * g;
        let mut t = TriMat::new((n, n));
        for i in 0..n {
            let (r, c) = (i / g, i % g);
            let mut put = |j: usize, s: f64| t.add_triplet(i, j, value(i, j, s));
            if r > 0 {
                put(i - g, -1.0);
            }
            if c > 0 {
                put(i - 1, -1.0);
            }
            put(i, 4.0);
            if c + 1 < g {
                put(i + 1, -1.0);
            }
            if r + 1 < g {
                put(i + g, -1.0);
            }
        }
        t.to_csr()
    }

    /// A value in (-1, 1) that differs for almost every (i, j): more than 256 distinct.
    fn noise(i: usize, j: usize) -> f64 {
        let h = ((i * 7919 + j * 104_729) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    /// The product through every split of the compact copy equals the plain serial product
    /// bit for bit, and the compact copy has the `expected` layout (i16 offsets, dictionary).
    fn check_layout(a: &CsMat<f64>, expected: (bool, bool)) {
        let n = a.rows();
        let x: Vec<f64> = (0..n).map(|i| 0.5 + ((i * 37) % 11) as f64 / 7.0).collect();
        let mut serial = vec![0.0; n];
        let plain = Csr::new(a).unwrap();
        assert_eq!(plain.layout(), None);
        let serial_dot = plain.mul_dot_unchecked_len(&x, &mut serial);
        for parts in [1, 5, 32] {
            let mut dots = Vec::new();
            for workers in [1, 2, 3] {
                let split = Split {
                    workers,
                    parts,
                    min_len: 0,
                    min_nnz: 0,
                };
                let m = Csr::with_split(a, split).unwrap();
                assert_eq!(m.layout(), Some(expected), "n {n}");
                let mut y = vec![f64::NAN; n];
                let d = m.mul_dot_unchecked_len(&x, &mut y);
                let (yb, sb): (Vec<u64>, Vec<u64>) = (
                    y.iter().map(|v| v.to_bits()).collect(),
                    serial.iter().map(|v| v.to_bits()).collect(),
                );
                assert!(yb == sb, "{expected:?} parts {parts} workers {workers}");
                if parts == 1 {
                    assert_eq!(d.to_bits(), serial_dot.to_bits());
                }
                dots.push(d.to_bits());
            }
            assert!(dots.iter().all(|&d| d == dots[0]));
        }
    }

    #[test]
    fn every_layout_gives_the_serial_product_bit_for_bit() {
        // Stencil values, offsets ±1, ±40: i16 offsets and a dictionary (3 B/nonzero).
        check_layout(&grid(40, |_, _, s| s), (true, true));
        // Variable coefficients on the same pattern: i16 offsets, f64 values.
        check_layout(&grid(40, |i, j, s| s * (1.5 + noise(i, j))), (true, false));
        // Random pattern and values within ±997 of the diagonal: i16, f64.
        check_layout(&random_csr(997, 5), (true, false));
        // A far off-diagonal entry (col − row = 40 000 > i16::MAX): u32 columns.
        let far = |value: &dyn Fn(usize, usize) -> f64| {
            let n = 40_001;
            let mut t = TriMat::new((n, n));
            for i in 0..n {
                t.add_triplet(i, i, value(i, i));
                if i + 1 < n {
                    t.add_triplet(i, i + 1, value(i, i + 1));
                }
            }
            t.add_triplet(0, n - 1, value(0, n - 1));
            t.add_triplet(n - 1, 0, value(n - 1, 0));
            t.to_csr()
        };
        check_layout(&far(&|i, j| if i == j { 2.0 } else { -0.5 }), (false, true));
        check_layout(&far(&|i, j| noise(i, j)), (false, false));
    }

    #[test]
    fn layout_limits_are_exact() {
        // An offset of exactly i16::MIN fits (one entry 32768 below the diagonal, none above).
        {
            let n = 32_769;
            let mut t = TriMat::new((n, n));
            for i in 0..n {
                t.add_triplet(i, i, 1.0);
            }
            t.add_triplet(32_768, 0, 3.0);
            check_layout(&t.to_csr(), (true, true));
        }
        // Offsets of ±i16::MAX fit; one further does not (+32768 is past i16::MAX).
        for (reach, fits) in [(32_767usize, true), (32_768, false)] {
            let n = reach + 1;
            let mut t = TriMat::new((n, n));
            for i in 0..n {
                t.add_triplet(i, i, 1.0);
            }
            t.add_triplet(0, reach, 2.0);
            t.add_triplet(reach, 0, 3.0);
            check_layout(&t.to_csr(), (fits, true));
        }
        // 256 distinct bit patterns fit the dictionary, 257 do not; -0.0 and 0.0 and two NaN
        // payloads count as distinct and come back as they were.
        for (count, fits) in [(256usize, true), (257, false)] {
            let n = count;
            let mut t = TriMat::new((n, n));
            for i in 0..n {
                let v = match i {
                    0 => -0.0,
                    1 => 0.0,
                    2 => f64::from_bits(0x7FF8_0000_0000_0001),
                    3 => f64::from_bits(0x7FF8_0000_0000_0002),
                    _ => 100.0 + i as f64 * 0.25,
                };
                t.add_triplet(i, i, v);
                // Row 4's diagonal value again: no new value.
                t.add_triplet(i, (i + 1) % n, 101.0);
            }
            let a: CsMat<f64> = t.to_csr();
            let distinct: std::collections::HashSet<u64> =
                a.data().iter().map(|v| v.to_bits()).collect();
            assert_eq!(distinct.len(), count);
            check_layout(&a, (true, fits));
        }
    }

    #[test]
    fn the_solvers_product_of_a_large_stencil_is_compressed() {
        // 210² unknowns, ≈ 220k nonzeros: above the threaded size, as the solvers make it.
        let a = grid(210, |_, _, s| s);
        assert!(a.nnz() >= super::super::parallel::PARALLEL_MIN_NNZ);
        let m = Csr::for_products(&a).unwrap();
        assert_eq!(m.layout(), Some((true, true)));
    }
}
