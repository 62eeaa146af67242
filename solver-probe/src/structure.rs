//! Matrix structure analysis: size, numerical symmetry, diagonal dominance, diagonal signs,
//! bandwidth and Gershgorin bounds. Whether A is positive definite is not guessed here from the
//! entries: the conditioning analysis decides it with a factorization (`cond::Definite`).
//!
//! All quantities come from one pass over the CSR rows plus one transpose for the symmetry
//! check, so the cost is O(nnz) time and memory.

use serde::Serialize;
use sprs::CsMat;

/// Relative tolerance for numerical symmetry: `|a_ij - a_ji| <= SYMMETRY_RTOL * max|a|`.
pub const SYMMETRY_RTOL: f64 = 1e-12;

/// Structural and numerical properties of a square sparse matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Structure {
    /// Dimension (the matrix is n×n).
    pub n: usize,
    /// Stored entries (explicit zeros included).
    pub nnz: usize,
    /// Largest |a_ij| (0 for an all-zero matrix).
    pub max_abs: f64,
    /// Numerically symmetric: `max_asymmetry <= symmetry_tolerance`.
    pub symmetric: bool,
    /// Largest |a_ij − a_ji| over all pairs.
    pub max_asymmetry: f64,
    /// Absolute tolerance used: `SYMMETRY_RTOL × max_abs`.
    pub symmetry_tolerance: f64,
    /// Fraction of rows with |a_ii| > Σ_{j≠i} |a_ij|.
    pub strictly_dominant_fraction: f64,
    /// Fraction of rows with |a_ii| ≥ Σ_{j≠i} |a_ij|.
    pub weakly_dominant_fraction: f64,
    /// Number of zero (or missing) diagonal entries.
    pub zero_diagonal: usize,
    /// Number of negative diagonal entries.
    pub negative_diagonal: usize,
    /// Max |i − j| over stored nonzeros (0 for a diagonal matrix).
    pub bandwidth: usize,
    /// Gershgorin lower bound on the real parts of the eigenvalues: min_i (a_ii − R_i).
    pub gershgorin_min: f64,
    /// Gershgorin upper bound: max_i (a_ii + R_i).
    pub gershgorin_max: f64,
}

/// Analyze a square matrix (CSR or CSC storage; CSC is converted first).
pub fn analyze(a: &CsMat<f64>) -> Structure {
    let owned;
    let a = if a.is_csr() {
        a
    } else {
        owned = a.to_csr();
        &owned
    };
    let n = a.rows().max(a.cols());
    let nnz = a.nnz();

    let mut max_abs = 0.0f64;
    let mut strict = 0usize;
    let mut weak = 0usize;
    let mut zero_diag = 0usize;
    let mut neg_diag = 0usize;
    let mut bandwidth = 0usize;
    let mut g_min = f64::INFINITY;
    let mut g_max = f64::NEG_INFINITY;

    for (i, row) in a.outer_iterator().enumerate() {
        let mut diag = 0.0f64;
        let mut off = 0.0f64;
        for (j, &v) in row.iter() {
            max_abs = max_abs.max(v.abs());
            if j == i {
                diag += v;
            } else {
                off += v.abs();
            }
            if v != 0.0 {
                bandwidth = bandwidth.max(i.abs_diff(j));
            }
        }
        if diag == 0.0 {
            zero_diag += 1;
        } else if diag < 0.0 {
            neg_diag += 1;
        }
        if diag.abs() > off {
            strict += 1;
        }
        if diag.abs() >= off {
            weak += 1;
        }
        g_min = g_min.min(diag - off);
        g_max = g_max.max(diag + off);
    }
    // Rows beyond the stored ones (only if rows < n) have zero diagonals.
    zero_diag += n - a.rows();
    if n == 0 {
        g_min = 0.0;
        g_max = 0.0;
    }

    let max_asym = max_asymmetry(a);
    // Non-square input is never symmetric.
    let square = a.rows() == a.cols();
    let tol = SYMMETRY_RTOL * max_abs;
    let symmetric = square && max_asym <= tol;

    let frac = |k: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };

    Structure {
        n,
        nnz,
        max_abs,
        symmetric,
        max_asymmetry: max_asym,
        symmetry_tolerance: tol,
        strictly_dominant_fraction: frac(strict),
        weakly_dominant_fraction: frac(weak),
        zero_diagonal: zero_diag,
        negative_diagonal: neg_diag,
        bandwidth,
        gershgorin_min: g_min,
        gershgorin_max: g_max,
    }
}

/// max |a_ij − a_ji| over a CSR matrix with sorted rows: row i of A is merged with row i of
/// Aᵀ (column i of A), an entry present on one side only counting whole. Rows or columns past
/// the square part of a non-square matrix are not compared.
pub(crate) fn max_asymmetry(a: &CsMat<f64>) -> f64 {
    let at = a.to_csc();
    let mut max_asym = 0.0f64;
    for (row, col) in a.outer_iterator().zip(at.outer_iterator()) {
        let (ri, rv) = (row.indices(), row.data());
        let (ci, cv) = (col.indices(), col.data());
        let (mut p, mut q) = (0, 0);
        while p < ri.len() || q < ci.len() {
            let d = match (ri.get(p), ci.get(q)) {
                (Some(&x), Some(&y)) if x == y => {
                    p += 1;
                    q += 1;
                    rv[p - 1] - cv[q - 1]
                }
                (Some(&x), Some(&y)) if x < y => {
                    p += 1;
                    rv[p - 1]
                }
                (Some(_), None) => {
                    p += 1;
                    rv[p - 1]
                }
                _ => {
                    q += 1;
                    cv[q - 1]
                }
            };
            max_asym = max_asym.max(d.abs());
        }
    }
    max_asym
}

#[cfg(test)]
mod tests {
    use super::*;
    use sprs::TriMat;

    fn from_dense(rows: &[&[f64]]) -> CsMat<f64> {
        let n = rows.len();
        let mut t = TriMat::new((n, n));
        for (i, r) in rows.iter().enumerate() {
            for (j, &v) in r.iter().enumerate() {
                if v != 0.0 {
                    t.add_triplet(i, j, v);
                }
            }
        }
        t.to_csr()
    }

    fn laplacian_1d(n: usize) -> CsMat<f64> {
        let mut t = TriMat::new((n, n));
        for i in 0..n {
            t.add_triplet(i, i, 2.0);
            if i > 0 {
                t.add_triplet(i, i - 1, -1.0);
            }
            if i + 1 < n {
                t.add_triplet(i, i + 1, -1.0);
            }
        }
        t.to_csr()
    }

    #[test]
    fn laplacian_1d_is_symmetric_dominant_spd() {
        let s = analyze(&laplacian_1d(64));
        assert_eq!(s.n, 64);
        assert_eq!(s.nnz, 3 * 64 - 2);
        assert!(s.symmetric);
        assert_eq!(s.max_asymmetry, 0.0);
        assert_eq!(s.bandwidth, 1);
        assert_eq!(s.zero_diagonal, 0);
        assert_eq!(s.negative_diagonal, 0);
        // The two end rows are strictly dominant, the others only weakly.
        assert!((s.strictly_dominant_fraction - 2.0 / 64.0).abs() < 1e-15);
        assert_eq!(s.weakly_dominant_fraction, 1.0);
        assert_eq!(s.gershgorin_min, 0.0);
        assert_eq!(s.gershgorin_max, 4.0);
        let json = serde_json::to_value(&s).expect("serializes");
        assert_eq!(json["n"], 64);
        assert!(json.get("likely_spd").is_none(), "no heuristic SPD verdict");
    }

    #[test]
    fn nonsymmetric_matrix() {
        let a = from_dense(&[&[4.0, 1.0, 0.0], &[0.0, 5.0, 0.0], &[0.0, 3.0, -6.0]]);
        let s = analyze(&a);
        assert!(!s.symmetric);
        assert_eq!(s.max_asymmetry, 3.0);
        assert_eq!(s.bandwidth, 1);
        assert_eq!(s.negative_diagonal, 1);
        assert_eq!(s.strictly_dominant_fraction, 1.0);
        assert_eq!(s.gershgorin_min, -9.0);
        assert_eq!(s.gershgorin_max, 5.0);
        // Tiny asymmetry below 1e-12 relative counts as symmetric.
        let b = from_dense(&[&[2.0, 1.0], &[1.0 + 1e-13, 2.0]]);
        assert!(analyze(&b).symmetric);
        let c = from_dense(&[&[2.0, 1.0], &[1.0 + 1e-9, 2.0]]);
        assert!(!analyze(&c).symmetric);
    }

    #[test]
    fn zero_diagonal() {
        let a = from_dense(&[&[0.0, 1.0, 0.0], &[1.0, 2.0, 0.0], &[0.0, 0.0, 3.0]]);
        let s = analyze(&a);
        assert!(s.symmetric);
        assert_eq!(s.zero_diagonal, 1);
        assert_eq!(s.negative_diagonal, 0);
        assert!((s.weakly_dominant_fraction - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(s.gershgorin_min, -1.0);
    }

    #[test]
    fn wide_band_and_gershgorin_spd() {
        // Symmetric with a positive diagonal but neither dominant nor Gershgorin-positive
        // (eigenvalues -1, 1, 3).
        let a = from_dense(&[&[1.0, 0.0, 2.0], &[0.0, 1.0, 0.0], &[2.0, 0.0, 1.0]]);
        let s = analyze(&a);
        assert!(s.symmetric);
        assert_eq!(s.bandwidth, 2);
    }
}
