//! Known-answer tests for `solver_probe::cond`.

use nalgebra::DMatrix;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use solver_probe::cond::{self, CondError, Confidence, LanczosOptions, Method, Norm};
use sprs::{CsMat, TriMat};

fn laplacian_1d(n: usize) -> CsMat<f64> {
    let mut t = TriMat::new((n, n));
    for i in 0..n {
        t.add_triplet(i, i, 2.0);
        if i > 0 {
            t.add_triplet(i, i - 1, -1.0);
            t.add_triplet(i - 1, i, -1.0);
        }
    }
    t.to_csr()
}

/// The 5-point Laplacian on an n×n grid: [`convection_diffusion_2d`] without convection.
fn laplacian_2d(n: usize) -> CsMat<f64> {
    convection_diffusion_2d(n, 0.0)
}

fn kappa_laplacian(n: usize) -> f64 {
    let c = 1.0 / (std::f64::consts::PI / (2.0 * (n as f64 + 1.0))).tan();
    c * c
}

fn dense_to_csr(m: &DMatrix<f64>) -> CsMat<f64> {
    let mut t = TriMat::new((m.nrows(), m.ncols()));
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            if m[(i, j)] != 0.0 {
                t.add_triplet(i, j, m[(i, j)]);
            }
        }
    }
    t.to_csr()
}

fn hilbert(n: usize) -> CsMat<f64> {
    dense_to_csr(&DMatrix::from_fn(n, n, |i, j| 1.0 / (i + j + 1) as f64))
}

fn random_dense(n: usize, rng: &mut SmallRng) -> DMatrix<f64> {
    DMatrix::from_fn(n, n, |_, _| rng.random::<f64>() * 2.0 - 1.0)
}

fn one_norm(m: &DMatrix<f64>) -> f64 {
    (0..m.ncols())
        .map(|j| m.column(j).iter().map(|v| v.abs()).sum::<f64>())
        .fold(0.0, f64::max)
}

/// The estimate carries rigorous bounds, and they hold `exact` (to rounding).
fn assert_bounds_contain(e: &cond::Estimate, exact: f64) {
    match e.confidence {
        Confidence::Bounds { lower, upper } => {
            assert!(lower <= exact * (1.0 + 1e-9) && exact <= upper * (1.0 + 1e-9))
        }
        c => panic!("unexpected confidence {c:?}"),
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn laplacian_1d_lanczos_cholesky() {
    for n in [64, 300] {
        let e = cond::lanczos_spd(&laplacian_1d(n), 120, 1).unwrap();
        let k = e.kappa.unwrap();
        let exact = kappa_laplacian(n);
        eprintln!(
            "1D n={n}: {k:.6e} vs {exact:.6e}, rel {:.2e}",
            rel(k, exact)
        );
        assert!(rel(k, exact) < 0.01);
        assert_eq!(e.method, Method::LanczosWithInverseIteration);
        assert_eq!(e.norm, Norm::Two);
        assert_bounds_contain(&e, exact);
    }
}

#[test]
fn laplacian_1d_lanczos_cg_path_and_estimate() {
    let n = 300;
    let opts = LanczosOptions {
        cholesky_max_n: 10,
        ..LanczosOptions::default()
    };
    let e = cond::lanczos_spd_with(&laplacian_1d(n), &opts).unwrap();
    assert_eq!(e.method, Method::LanczosWithCgInverseIteration);
    assert!(rel(e.kappa.unwrap(), kappa_laplacian(n)) < 0.01);
    // estimate() on a small matrix uses the exact SVD.
    let e = cond::estimate(&laplacian_1d(64)).unwrap();
    assert_eq!(e.method, Method::ExactDenseSvd);
    assert!(rel(e.kappa.unwrap(), kappa_laplacian(64)) < 1e-6);
}

#[test]
fn laplacian_2d_lanczos() {
    for n in [16, 64] {
        let a = laplacian_2d(n);
        let e = cond::estimate(&a).unwrap();
        let k = e.kappa.unwrap();
        let exact = kappa_laplacian(n);
        eprintln!(
            "2D {n}x{n}: {k:.6e} vs {exact:.6e}, rel {:.2e}, {:?}",
            rel(k, exact),
            e.method
        );
        assert!(rel(k, exact) < 0.01);
        let e = cond::lanczos_spd(&a, 120, 3).unwrap();
        assert!(rel(e.kappa.unwrap(), exact) < 0.01);
    }
}

#[test]
fn hilbert_known_answers() {
    for (n, k2, k1) in [(8, 1.5258e10, 3.387e10), (10, 1.6026e13, 3.536e13)] {
        let a = hilbert(n);
        let e2 = cond::exact_dense_2(&a).unwrap();
        let got2 = e2.kappa.unwrap();
        let e1 = cond::one_norm_estimate(&a).unwrap();
        let got1 = e1.kappa.unwrap();
        eprintln!(
            "Hilbert {n}: κ₂ {got2:.5e} (rel {:.2e}), κ₁ {got1:.4e} (ratio {:.3})",
            rel(got2, k2),
            got1 / k1
        );
        let tol2 = if n == 8 { 1e-3 } else { 1e-2 };
        assert!(rel(got2, k2) < tol2);
        assert!(got1 / k1 > 1.0 / 3.0 && got1 / k1 < 3.0);
        assert_eq!(e1.norm, Norm::One);
    }
    let e = cond::estimate(&hilbert(12)).unwrap();
    eprintln!("Hilbert 12: {e:?}");
    assert!(e.numerically_singular || rel(e.kappa.unwrap(), 1.7e16) < 10.0);
    if e.numerically_singular {
        assert!(e.kappa.is_none() && e.note.contains("numerically singular"));
    }
}

#[test]
fn one_norm_estimate_within_factor_3_on_random_matrices() {
    let mut rng = SmallRng::seed_from_u64(2024);
    let mut worst = 1.0_f64;
    for _ in 0..20 {
        let m = random_dense(50, &mut rng);
        let exact = one_norm(&m) * one_norm(&m.clone().try_inverse().unwrap());
        let est = cond::one_norm_estimate(&dense_to_csr(&m))
            .unwrap()
            .kappa
            .unwrap();
        let ratio = exact / est;
        worst = worst.max(ratio.max(1.0 / ratio));
        assert!(ratio < 3.0 && ratio > 1.0 / 3.0, "ratio {ratio}");
    }
    eprintln!("worst κ₁ ratio over 20 random 50x50: {worst:.3}");
}

#[test]
fn estimate_general_mid_size_uses_one_norm() {
    let mut rng = SmallRng::seed_from_u64(11);
    let m = random_dense(450, &mut rng);
    let e = cond::estimate(&dense_to_csr(&m)).unwrap();
    assert_eq!(e.method, Method::HighamTisseur1Norm);
    assert_eq!(e.norm, Norm::One);
    let exact = one_norm(&m) * one_norm(&m.clone().try_inverse().unwrap());
    let ratio = exact / e.kappa.unwrap();
    eprintln!("450x450 random: κ₁ exact {exact:.4e}, ratio {ratio:.3}");
    assert!(ratio < 3.0 && ratio > 1.0 / 3.0);
}

#[test]
fn singular_and_bad_input() {
    let mut t = TriMat::new((3, 3));
    t.add_triplet(0, 0, 1.0);
    t.add_triplet(1, 1, 1.0);
    let s: CsMat<f64> = t.to_csr();
    let e = cond::estimate(&s).unwrap();
    assert!(e.numerically_singular && e.kappa.is_none());
    let e = cond::one_norm_estimate(&s).unwrap();
    assert!(e.numerically_singular);

    let rect: CsMat<f64> = TriMat::new((2, 3)).to_csr();
    assert!(matches!(
        cond::estimate(&rect),
        Err(CondError::NotSquare { rows: 2, cols: 3 })
    ));
    let empty: CsMat<f64> = TriMat::new((0, 0)).to_csr();
    assert_eq!(cond::estimate(&empty), Err(CondError::Empty));
    let mut t = TriMat::new((2, 2));
    t.add_triplet(0, 0, f64::NAN);
    t.add_triplet(1, 1, 1.0);
    let nan: CsMat<f64> = t.to_csr();
    assert!(matches!(
        cond::estimate(&nan),
        Err(CondError::NonFinite { .. })
    ));
    let a = laplacian_1d(5);
    assert!(matches!(
        cond::iterative_refinement(&a, &[1.0; 4], 16, 0.0, 10, 1),
        Err(CondError::SizeMismatch { n: 5, len: 4 })
    ));
    let mut t = TriMat::new((2, 2));
    t.add_triplet(0, 0, 1.0);
    t.add_triplet(0, 1, 2.0);
    t.add_triplet(1, 1, 1.0);
    let nonsym: CsMat<f64> = t.to_csr();
    assert!(matches!(
        cond::lanczos_spd(&nonsym, 10, 1),
        Err(CondError::NotSymmetric { .. })
    ));
    // Symmetric indefinite: Lanczos refuses, estimate() falls back to κ₁.
    let mut t = TriMat::new((2, 2));
    t.add_triplet(0, 0, 1.0);
    t.add_triplet(0, 1, 2.0);
    t.add_triplet(1, 0, 2.0);
    t.add_triplet(1, 1, 1.0);
    let indef: CsMat<f64> = t.to_csr();
    assert!(matches!(
        cond::lanczos_spd(&indef, 10, 1),
        Err(CondError::NotPositiveDefinite { .. })
    ));
    let json = serde_json::to_string(&cond::estimate(&indef).unwrap()).unwrap();
    assert!(json.contains("\"kappa\""));
}

#[test]
fn analog_bound_valid_and_invalid() {
    let b = cond::analog_bound(1e3, 16).unwrap();
    let e = 1e3 / 65536.0;
    assert!(rel(b, e / (1.0 - e)) < 1e-12);
    assert_eq!(cond::analog_bound(1e5, 16), None);
    assert_eq!(cond::analog_bound(65536.0, 16), None);
    assert_eq!(cond::analog_bound(f64::NAN, 16), None);
}

#[test]
fn monte_carlo_error_grows_as_bits_drop() {
    let a = laplacian_1d(40);
    let mut last = 0.0;
    for bits in [24, 16, 8] {
        let mc = cond::monte_carlo_typical(&a, bits, 0.0, 30, 5).unwrap();
        eprintln!("bits {bits}: median {:.3e}, p90 {:.3e}", mc.median, mc.p90);
        assert!(mc.median > last);
        last = mc.median;
    }
    let with_noise = cond::monte_carlo_typical(&a, 24, 1e-3, 30, 5).unwrap();
    assert!(with_noise.median > 1e-4);
}

#[test]
fn iterative_refinement_converges_or_fails() {
    let a = laplacian_1d(64); // κ ≈ 1.7e3
    let b = vec![1.0; 64];
    let r = cond::iterative_refinement(&a, &b, 20, 0.0, 50, 9).unwrap();
    eprintln!("laplacian, 20 bits: {r:?}");
    assert!(r.converged && r.steps <= 10);
    assert!(r.relative_error.unwrap() < 1e-9);
    // κ·2^-b ≈ 1.5e10 · 2^-8 ≫ 1.
    let h = hilbert(8);
    let r = cond::iterative_refinement(&h, &[1.0; 8], 8, 0.0, 50, 9).unwrap();
    eprintln!(
        "hilbert 8, 8 bits: converged {} steps {}",
        r.converged, r.steps
    );
    assert!(!r.converged);
}

#[test]
fn jacobi_scaling_recovers_orders_of_magnitude() {
    let n = 64;
    let a = laplacian_1d(n);
    let d: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-3.0 + 6.0 * i as f64 / (n - 1) as f64))
        .collect();
    let mut t = TriMat::new((n, n));
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            t.add_triplet(i, j, d[i] * v * d[j]);
        }
    }
    let dad: CsMat<f64> = t.to_csr();
    let sc = cond::scaled_condition(&dad).unwrap();
    eprintln!(
        "DAD: before {:?}, after {:?}",
        sc.before.kappa, sc.after.kappa
    );
    assert_eq!(sc.scaling, cond::Scaling::Jacobi);
    assert!(sc.improvement.unwrap() > 1e6);
    assert!(rel(sc.after.kappa.unwrap(), kappa_laplacian(n)) < 1e-6);
    // General (non-symmetric) matrix: equilibration.
    let mut rng = SmallRng::seed_from_u64(3);
    let m = random_dense(30, &mut rng) + DMatrix::identity(30, 30) * 5.0;
    let rows = DMatrix::from_fn(30, 30, |i, j| {
        m[(i, j)] * 10f64.powi((i % 7) as i32 * 2 - 6)
    });
    let sc = cond::scaled_condition(&dense_to_csr(&rows)).unwrap();
    assert_eq!(sc.scaling, cond::Scaling::Equilibration);
    assert!(sc.improvement.unwrap() > 1e3);
}

#[test]
fn shift_brings_kappa_under_threshold() {
    let a = laplacian_1d(200); // κ ≈ 1.6e4
    let s = cond::shift_for_threshold(&a, 1e3).unwrap();
    eprintln!("{s:?}");
    assert!(s.sigma > 0.0 && s.kappa_after.unwrap() < 1e3);
    // Nearly minimal: (λmax+σ)/(λmin+σ) = T at the exact σ.
    let lmin = 4.0 * (std::f64::consts::PI / (2.0 * 201.0)).sin().powi(2);
    let lmax = 4.0 * (200.0 * std::f64::consts::PI / (2.0 * 201.0)).sin().powi(2);
    let exact = (lmax - 1e3 * lmin) / (1e3 - 1.0);
    assert!(rel(s.sigma, exact) < 0.01, "σ {} vs {exact}", s.sigma);
    let m = s.error_measured.unwrap();
    assert!(m > 0.0 && m <= s.error_bound * 1.01);
    let none = cond::shift_for_threshold(&a, 1e6).unwrap();
    assert_eq!(none.sigma, 0.0);
    assert!(cond::shift_for_threshold(&a, 0.5).is_err());
    // A singular matrix gets a finite shift too.
    let h = hilbert(12);
    let s = cond::shift_for_threshold(&h, 1e12).unwrap();
    assert!(s.kappa_after.unwrap() < 1e12);
}

/// Upwind convection–diffusion on a k×k grid (nonsymmetric; Péclet number `pe` per cell).
fn convection_diffusion_2d(k: usize, pe: f64) -> CsMat<f64> {
    let idx = |i: usize, j: usize| i * k + j;
    let mut t = TriMat::new((k * k, k * k));
    for i in 0..k {
        for j in 0..k {
            t.add_triplet(idx(i, j), idx(i, j), 4.0 + pe);
            if i > 0 {
                t.add_triplet(idx(i, j), idx(i - 1, j), -1.0 - pe);
            }
            if i + 1 < k {
                t.add_triplet(idx(i, j), idx(i + 1, j), -1.0);
            }
            if j > 0 {
                t.add_triplet(idx(i, j), idx(i, j - 1), -1.0);
            }
            if j + 1 < k {
                t.add_triplet(idx(i, j), idx(i, j + 1), -1.0);
            }
        }
    }
    t.to_csr()
}

fn csr_to_dense(a: &CsMat<f64>) -> DMatrix<f64> {
    let mut m = DMatrix::zeros(a.rows(), a.cols());
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            m[(i, j)] += v;
        }
    }
    m
}

#[test]
fn laplacian_2d_sparse_cholesky_known_answer() {
    // n = 6400: above every dense limit, so κ₂ comes from Lanczos plus inverse iteration on
    // the sparse Cholesky factor.
    let k = 80;
    let a = laplacian_2d(k);
    let e = cond::estimate(&a).unwrap();
    let exact = kappa_laplacian(k);
    let got = e.kappa.unwrap();
    eprintln!("2D {k}x{k}: {got:.8e} vs {exact:.8e}; {}", e.note);
    assert_eq!(e.method, Method::LanczosWithInverseIteration);
    assert!(e.note.contains("sparse Cholesky"), "{}", e.note);
    assert!(rel(got, exact) < 1e-3, "rel {:.2e}", rel(got, exact));
    assert_bounds_contain(&e, exact);
}

#[test]
fn laplacian_2d_kappa1_on_sparse_cholesky_matches_green_function() {
    // A⁻¹ of the 2D Laplacian is entrywise positive and symmetric, so ‖A⁻¹‖₁ = max_i (A⁻¹·1)_i,
    // which CG (no factorization) gives independently. ‖A‖₁ = 8.
    use solver_probe::krylov::{cg, SolveOptions};
    use solver_probe::precond::Identity;
    let k = 70;
    let a = laplacian_2d(k);
    let ones = vec![1.0; k * k];
    let opts = SolveOptions {
        rtol: 1e-13,
        stagnation_window: 0,
        ..SolveOptions::default()
    };
    let u = cg(&a, &ones, None, &Identity, &opts).unwrap();
    assert!(u.reason.is_converged(), "{:?}", u.reason);
    let exact = 8.0 * u.x.iter().cloned().fold(0.0, f64::max);
    let e = cond::one_norm_estimate(&a).unwrap();
    let got = e.kappa.unwrap();
    eprintln!("κ₁ {got:.8e} vs {exact:.8e}; {}", e.note);
    assert_eq!(e.norm, Norm::One);
    assert!(e.note.contains("sparse Cholesky"), "{}", e.note);
    assert!(rel(got, exact) < 1e-6, "rel {:.2e}", rel(got, exact));
}

#[test]
fn convection_diffusion_kappa1_on_sparse_lu_within_3x_of_exact() {
    for (k, pe) in [(30, 0.5), (30, 5.0), (24, 50.0)] {
        let a = convection_diffusion_2d(k, pe);
        let m = csr_to_dense(&a);
        let inv = m.clone().try_inverse().unwrap();
        let exact = one_norm(&m) * one_norm(&inv);
        let e = cond::one_norm_estimate_sparse(&a, cond::DEFAULT_FACTOR_BYTES).unwrap();
        let got = e.kappa.unwrap();
        eprintln!(
            "k={k} pe={pe}: κ₁ {got:.6e} vs exact {exact:.6e}; {}",
            e.note
        );
        assert_eq!(e.method, Method::HighamTisseur1Norm);
        assert!(e.note.contains("sparse LU"), "{}", e.note);
        // A lower bound (up to rounding), within 3x.
        assert!(got <= exact * (1.0 + 1e-8) && got >= exact / 3.0);
    }
}

#[test]
fn estimate_large_nonsymmetric_takes_sparse_lu() {
    // n = 3600 > DENSE_LU_MAX_N: estimate() uses the sparse LU. The κ₁ of the same matrix with
    // a smaller factorization budget is refused with the bytes named.
    let a = convection_diffusion_2d(60, 2.0);
    let e = cond::estimate(&a).unwrap();
    assert_eq!(e.method, Method::HighamTisseur1Norm);
    assert!(e.note.contains("sparse LU"), "{}", e.note);
    let sparse_small = cond::one_norm_estimate_sparse(&a, 1 << 20);
    match sparse_small {
        Err(CondError::OverBudget(msg)) => assert!(msg.contains("MB"), "{msg}"),
        other => panic!("expected OverBudget, got {other:?}"),
    }
    // A true lower bound: κ₁ ≥ ‖A‖₁ ‖A⁻¹ b‖₁ / ‖b‖₁ for any b (here from GMRES, no LU).
    use solver_probe::krylov::{gmres, SolveOptions};
    use solver_probe::precond::Identity;
    let n = a.rows();
    let mut b = vec![0.0; n];
    b[n / 2] = 1.0;
    let opts = SolveOptions {
        rtol: 1e-12,
        restart: 200,
        max_iter: 20_000,
        ..SolveOptions::default()
    };
    let x = gmres(&a, &b, None, &Identity, &opts).unwrap();
    assert!(x.reason.is_converged(), "{:?}", x.reason);
    let norm_a = e.norm_a;
    let lower = norm_a * x.x.iter().map(|v| v.abs()).sum::<f64>();
    assert!(e.kappa.unwrap() >= lower * (1.0 - 1e-6));
}

#[test]
fn spd_over_factor_budget_falls_back_to_cg_and_says_why() {
    let k = 40;
    let opts = LanczosOptions {
        max_factor_bytes: 1024,
        ..LanczosOptions::default()
    };
    let e = cond::lanczos_spd_with(&laplacian_2d(k), &opts).unwrap();
    assert_eq!(e.method, Method::LanczosWithCgInverseIteration);
    assert!(
        e.note.contains("over the factorization budget"),
        "{}",
        e.note
    );
    assert!(rel(e.kappa.unwrap(), kappa_laplacian(k)) < 0.01);
}
