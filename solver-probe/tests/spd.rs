//! Positive definiteness is decided by a factorization, never by the entries: real SPD
//! matrices that are neither diagonally dominant nor Gershgorin-positive are reported SPD,
//! and symmetric matrices with a positive diagonal that are indefinite are reported not SPD.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use solver_probe::cond;
use solver_probe::report::{analyze, ProbeOptions};
use solver_probe::structure;
use sprs::{CsMat, TriMat};

/// A = L Lᵀ with L = I + S + S² (S the down-shift): SPD (L is unit lower triangular), with
/// rows [1 2 3 2 1] inside: off-diagonal sum 6 against a diagonal of 3, so no row is
/// dominant and the Gershgorin lower bound is −3.
fn llt_pentadiagonal(n: usize) -> CsMat<f64> {
    llt_triplets(n).to_csr()
}

fn llt_triplets(n: usize) -> TriMat<f64> {
    let mut t = TriMat::new((n, n));
    for i in 0..n {
        for j in i.saturating_sub(2)..(i + 3).min(n) {
            // (L Lᵀ)ᵢⱼ = Σₖ Lᵢₖ Lⱼₖ over k ≤ min(i, j), Lᵢₖ = 1 for i − 2 ≤ k ≤ i.
            let lo = i.max(j).saturating_sub(2);
            let hi = i.min(j);
            if lo <= hi {
                t.add_triplet(i, j, (hi - lo + 1) as f64);
            }
        }
    }
    t
}

fn dense(rows: &[&[f64]]) -> CsMat<f64> {
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

fn decided(a: &CsMat<f64>) -> cond::Definite {
    let e = cond::estimate(a).expect("estimates");
    e.positive_definite.expect("decided by a factorization")
}

#[test]
fn spd_without_dominance_is_spd_by_sparse_cholesky() {
    let a = llt_pentadiagonal(2000);
    let s = structure::analyze(&a);
    assert!(s.symmetric);
    assert_eq!(s.strictly_dominant_fraction, 0.0, "not diagonally dominant");
    assert!(s.gershgorin_min < 0.0, "Gershgorin cannot prove it");
    let d = decided(&a);
    assert!(d.spd, "{d:?}");
    assert_eq!(d.by, "sparse Cholesky");
}

#[test]
fn small_spd_without_dominance_is_spd_by_dense_cholesky() {
    let d = decided(&llt_pentadiagonal(50));
    assert!(d.spd, "{d:?}");
    assert_eq!(d.by, "dense Cholesky");
}

#[test]
fn indefinite_with_positive_diagonal_is_not_spd() {
    // Eigenvalues −1, 1, 3.
    let small = dense(&[&[1.0, 0.0, 2.0], &[0.0, 1.0, 0.0], &[2.0, 0.0, 1.0]]);
    let d = decided(&small);
    assert!(!d.spd && d.by == "dense Cholesky", "{d:?}");
    // Large: the pentadiagonal SPD matrix shifted by −0.9 I keeps a positive diagonal (its
    // smallest entry is 1) while λ_min = σ_min(L)² (well under 0.9) goes negative.
    let n = 1000;
    let mut t = llt_triplets(n);
    for i in 0..n {
        t.add_triplet(i, i, -0.9);
    }
    let d = decided(&t.to_csr());
    assert!(!d.spd, "{d:?}");
    assert!(d.by.contains("non-positive pivot"), "{d:?}");
}

#[test]
fn nonsymmetric_is_not_spd() {
    let n = 1000;
    let mut t = TriMat::new((n, n));
    for i in 0..n {
        t.add_triplet(i, i, 4.0);
        if i + 1 < n {
            t.add_triplet(i, i + 1, -1.0);
            t.add_triplet(i + 1, i, -2.0);
        }
    }
    let d = decided(&t.to_csr());
    assert!(!d.spd);
    assert_eq!(d.by, "not symmetric");
}

#[test]
fn the_report_carries_the_decision_in_its_json() {
    let r = analyze(
        &llt_pentadiagonal(600),
        None,
        "a.mtx",
        &ProbeOptions::default(),
    );
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["conditioning"]["positive_definite"]["spd"], true, "{j:#}");
    assert!(j["structure"].get("likely_spd").is_none());
}
