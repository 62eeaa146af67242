//! Integration tests for the Krylov solvers and preconditioners: known-answer solves on
//! Laplacians and convection–diffusion, preconditioner effectiveness, and one constructed
//! matrix per `ConvergedReason`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use std::time::Duration;

use solver_probe::krylov::{
    bicgstab, cg, cg_stagnation_window, compare, gmres, solve_with, spmv, ConvergedReason,
    KrylovError, Method, PcKind, SolveOptions, SolveResult,
};
use solver_probe::precond::{Ic0, Identity, Ilu0, Jacobi, PrecondError, Preconditioner};
use sprs::{CsMat, TriMat};

fn from_triplets(n: usize, entries: &[(usize, usize, f64)]) -> CsMat<f64> {
    let mut t = TriMat::new((n, n));
    for &(i, j, v) in entries {
        t.add_triplet(i, j, v);
    }
    t.to_csr()
}

/// 1D Dirichlet Laplacian tridiag(-1, 2, -1).
fn lap1d(n: usize) -> CsMat<f64> {
    let mut e = Vec::new();
    for i in 0..n {
        e.push((i, i, 2.0));
        if i > 0 {
            e.push((i, i - 1, -1.0));
        }
        if i + 1 < n {
            e.push((i, i + 1, -1.0));
        }
    }
    from_triplets(n, &e)
}

/// 2D Dirichlet Laplacian on a k×k grid (5-point stencil), optionally with a convection term
/// `c·∂u/∂x + c·∂u/∂y` (central differences, grid spacing 1), which makes it nonsymmetric.
fn lap2d(k: usize, c: f64) -> CsMat<f64> {
    let n = k * k;
    let id = |i: usize, j: usize| i * k + j;
    let mut e = Vec::new();
    for i in 0..k {
        for j in 0..k {
            let p = id(i, j);
            e.push((p, p, 4.0));
            if i > 0 {
                e.push((p, id(i - 1, j), -1.0 - c / 2.0));
            }
            if i + 1 < k {
                e.push((p, id(i + 1, j), -1.0 + c / 2.0));
            }
            if j > 0 {
                e.push((p, id(i, j - 1), -1.0 - c / 2.0));
            }
            if j + 1 < k {
                e.push((p, id(i, j + 1), -1.0 + c / 2.0));
            }
        }
    }
    from_triplets(n, &e)
}

fn x_true(n: usize) -> Vec<f64> {
    (0..n).map(|i| (0.37 * i as f64).sin() + 0.5).collect()
}

fn rhs(a: &CsMat<f64>, x: &[f64]) -> Vec<f64> {
    let mut b = vec![0.0; x.len()];
    spmv(a, x, &mut b).unwrap();
    b
}

fn rel_err(x: &[f64], y: &[f64]) -> f64 {
    let d: f64 = x.iter().zip(y).map(|(a, b)| (a - b).powi(2)).sum();
    let n: f64 = y.iter().map(|v| v * v).sum();
    (d / n).sqrt()
}

fn check_converged(res: &SolveResult, xt: &[f64], tol: f64) {
    assert_eq!(res.reason, ConvergedReason::ConvergedRtol, "{res:?}");
    assert!(res.final_residual() <= 1e-8 * res.residual_history[0] * 1.0001);
    assert_eq!(res.residual_history.len(), res.iterations + 1);
    let e = rel_err(&res.x, xt);
    assert!(e < tol, "relative error {e}");
    let rate = res.rate.unwrap();
    assert!(rate > 0.0 && rate < 1.0, "rate {rate}");
}

#[test]
fn cg_1d_laplacian_known_solution() {
    let a = lap1d(100);
    let xt = x_true(100);
    let b = rhs(&a, &xt);
    let opts = SolveOptions::default();
    // κ ≈ 4.1e3, so rtol 1e-8 bounds the error by ≈ 4e-5.
    let res = cg(&a, &b, None, &Identity, &opts).unwrap();
    check_converged(&res, &xt, 1e-4);
    // CG on the 1D Laplacian converges in at most n steps in exact arithmetic.
    assert!(res.iterations <= 110, "{}", res.iterations);
    let res_ic = cg(&a, &b, None, &Ic0::new(&a).unwrap(), &opts).unwrap();
    // IC(0) of a tridiagonal matrix is the exact Cholesky factor: one iteration.
    check_converged(&res_ic, &xt, 1e-8);
    assert!(res_ic.iterations <= 2);
}

#[test]
fn cg_2d_laplacian_known_solution() {
    let a = lap2d(30, 0.0);
    let xt = x_true(900);
    let b = rhs(&a, &xt);
    let opts = SolveOptions::default();
    let none = cg(&a, &b, None, &Identity, &opts).unwrap();
    check_converged(&none, &xt, 1e-5);
    let ic = cg(&a, &b, None, &Ic0::new(&a).unwrap(), &opts).unwrap();
    check_converged(&ic, &xt, 1e-5);
    assert!(ic.iterations < none.iterations);
    let ilu = cg(&a, &b, None, &Ilu0::new(&a).unwrap(), &opts).unwrap();
    check_converged(&ilu, &xt, 1e-5);
    // GMRES and BiCGSTAB also solve it.
    let g = gmres(&a, &b, None, &Identity, &opts).unwrap();
    check_converged(&g, &xt, 1e-5);
    let bs = bicgstab(&a, &b, None, &Identity, &opts).unwrap();
    check_converged(&bs, &xt, 1e-5);
}

/// D A D with D spanning 1e-3..1e3 (log-spaced) on the 2D Laplacian.
fn badly_scaled(k: usize) -> CsMat<f64> {
    let a = lap2d(k, 0.0);
    let n = k * k;
    let d: Vec<f64> = (0..n)
        .map(|i| 10f64.powf(-3.0 + 6.0 * i as f64 / (n - 1) as f64))
        .collect();
    let mut e = Vec::new();
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, &v) in row.iter() {
            e.push((i, j, d[i] * v * d[j]));
        }
    }
    from_triplets(n, &e)
}

#[test]
fn jacobi_and_ic0_reduce_cg_iterations_on_badly_scaled_spd() {
    let a = badly_scaled(10);
    let xt = x_true(100);
    let b = rhs(&a, &xt);
    let opts = SolveOptions {
        max_iter: 2000,
        ..SolveOptions::default()
    };
    let none = cg(&a, &b, None, &Identity, &opts).unwrap();
    let jac = cg(&a, &b, None, &Jacobi::new(&a).unwrap(), &opts).unwrap();
    let ic = cg(&a, &b, None, &Ic0::new(&a).unwrap(), &opts).unwrap();
    assert!(jac.reason.is_converged(), "{:?}", jac.reason);
    assert!(ic.reason.is_converged(), "{:?}", ic.reason);
    assert!(
        !none.reason.is_converged() || none.iterations > 2 * jac.iterations,
        "none {} ({}) vs jacobi {}",
        none.iterations,
        none.reason,
        jac.iterations
    );
    assert!(ic.iterations < jac.iterations);

    let cmp = compare(&a, &b, &opts).unwrap();
    assert!(cmp.spd_candidate);
    let best = cmp.best_run().unwrap();
    assert_eq!(best.method, Method::Cg);
    assert_ne!(best.preconditioner, "none");
    assert!(cmp.iteration_reduction.unwrap() > 2.0, "{cmp:?}");
    serde_json::to_string(&cmp).unwrap();
}

#[test]
fn gmres_and_bicgstab_on_convection_diffusion() {
    // Péclet-like cell number c = 1.5: strongly nonsymmetric but still an M-matrix-ish stencil.
    let a = lap2d(20, 1.5);
    let xt = x_true(400);
    let b = rhs(&a, &xt);
    let opts = SolveOptions::default();
    for pc in [
        Box::new(Identity) as Box<dyn Preconditioner>,
        Box::new(Jacobi::new(&a).unwrap()),
        Box::new(Ilu0::new(&a).unwrap()),
    ] {
        let g = gmres(&a, &b, None, pc.as_ref(), &opts).unwrap();
        check_converged(&g, &xt, 1e-5);
        let bs = bicgstab(&a, &b, None, pc.as_ref(), &opts).unwrap();
        check_converged(&bs, &xt, 1e-5);
    }
    let cmp = compare(&a, &b, &opts).unwrap();
    assert!(!cmp.spd_candidate);
    let best = cmp.best_run().unwrap();
    assert_ne!(best.method, Method::Cg);
    assert!(cmp.runs.iter().all(|r| r.preconditioner != "ic0"));
}

#[test]
fn reason_rtol() {
    let a = lap1d(20);
    let b = rhs(&a, &x_true(20));
    let res = cg(&a, &b, None, &Identity, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::ConvergedRtol);
}

#[test]
fn reason_atol() {
    // b of size ~1e-30 with rtol = 0: only the absolute test can stop the solve.
    let a = lap1d(20);
    let xt: Vec<f64> = x_true(20).iter().map(|v| v * 1e-30).collect();
    let b = rhs(&a, &xt);
    let opts = SolveOptions {
        rtol: 0.0,
        atol: 1e-36,
        ..SolveOptions::default()
    };
    for res in [
        cg(&a, &b, None, &Identity, &opts).unwrap(),
        gmres(&a, &b, None, &Identity, &opts).unwrap(),
        bicgstab(&a, &b, None, &Identity, &opts).unwrap(),
    ] {
        assert_eq!(res.reason, ConvergedReason::ConvergedAtol, "{res:?}");
        assert!(res.final_residual() <= 1e-36);
    }
    // b = 0: converged before the first iteration.
    let res = cg(&a, &[0.0; 20], None, &Identity, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::ConvergedAtol);
    assert_eq!(res.iterations, 0);
}

#[test]
fn reason_its() {
    let a = lap1d(50);
    let b = rhs(&a, &x_true(50));
    let opts = SolveOptions {
        max_iter: 3,
        ..SolveOptions::default()
    };
    for res in [
        cg(&a, &b, None, &Identity, &opts).unwrap(),
        gmres(&a, &b, None, &Identity, &opts).unwrap(),
        bicgstab(&a, &b, None, &Identity, &opts).unwrap(),
    ] {
        assert_eq!(res.reason, ConvergedReason::DivergedIts);
        assert_eq!(res.iterations, 3);
        assert!(!res.time_budget_exceeded);
    }
    // A spent time budget also stops with DIVERGED_ITS, flagged.
    let opts = SolveOptions {
        time_budget: Some(Duration::ZERO),
        ..SolveOptions::default()
    };
    let res = cg(&a, &b, None, &Identity, &opts).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedIts);
    assert!(res.time_budget_exceeded);
    assert_eq!(res.iterations, 1);
}

#[test]
fn reason_dtol() {
    // A = [[ε, 1], [−1, ε]] = S + εI with S a rotation (skew-symmetric), b = e1, ε = 1e-8.
    // BiCGSTAB's first step length is α = (r̂·r)/(r̂·A r) = ‖r₀‖²/(ε‖r₀‖²) = 1/ε, because
    // r·S r = 0 for skew S. The half-step residual s = r₀ − α A r₀ = −S r₀/ε has norm ‖r₀‖/ε,
    // and in two dimensions the stabilising step ω (minimising ‖s − ω A s‖ with A s ≈ S s ⟂ s)
    // can remove only an O(ε) fraction of it, so ‖r₁‖ ≈ 1e8·‖r₀‖ > dtol·‖r₀‖ = 1e5·‖r₀‖.
    // r̂·A r = ε‖r₀‖² is far above the breakdown threshold (machine ε relative), so this is a
    // genuine near-breakdown blow-up, not a detected breakdown.
    let eps = 1e-8;
    let a = from_triplets(2, &[(0, 0, eps), (0, 1, 1.0), (1, 0, -1.0), (1, 1, eps)]);
    let res = bicgstab(&a, &[1.0, 0.0], None, &Identity, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedDtol, "{res:?}");
    assert_eq!(res.iterations, 1);
    assert!(res.final_residual() > 1e7);
}

#[test]
fn reason_breakdown() {
    // A = [[0, 1], [−1, 0]] is skew-symmetric: r̂·A p = r₀·S r₀ = 0 exactly on the first step
    // (r̂ = p = r₀ = b = [1, 2], A b = [2, −1], b·A b = 2 − 2 = 0), so α = ρ/0 is undefined.
    let a = from_triplets(2, &[(0, 1, 1.0), (1, 0, -1.0)]);
    let res = bicgstab(&a, &[1.0, 2.0], None, &Identity, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedBreakdown);
    assert_eq!(res.iterations, 0);
}

#[test]
fn reason_indefinite_pc() {
    // CG on the symmetric indefinite diag(1, −1) with b = [1, 1]: p = b, p·A p = 1 − 1 = 0.
    let a = from_triplets(2, &[(0, 0, 1.0), (1, 1, -1.0)]);
    let res = cg(&a, &[1.0, 1.0], None, &Identity, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedIndefinitePc);
    // Symmetric indefinite tridiag(2, 1, 2): eigenvalues 1 + 4cos(kπ/(n+1)) of both signs.
    let a = from_triplets(
        3,
        &[
            (0, 0, 1.0),
            (0, 1, 2.0),
            (1, 0, 2.0),
            (1, 1, 1.0),
            (1, 2, 2.0),
            (2, 1, 2.0),
            (2, 2, 1.0),
        ],
    );
    let b = [1.0, 0.0, 0.0];
    let res = cg(&a, &b, None, &Identity, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedIndefinitePc, "{res:?}");
    // IC(0) on it: pivot 1 − 2² < 0 in row 1 → DIVERGED_INDEFINITE_PC through solve_with.
    assert!(matches!(
        Ic0::new(&a),
        Err(PrecondError::NonPositivePivot { row: 1, .. })
    ));
    let res = solve_with(Method::Cg, PcKind::Ic0, &a, &b, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedIndefinitePc);
    assert_eq!(res.iterations, 0);
    // An indefinite preconditioner on an SPD matrix: r·z = −‖r‖² < 0.
    struct Negate;
    impl Preconditioner for Negate {
        fn apply(&self, r: &[f64], z: &mut [f64]) {
            for (zi, ri) in z.iter_mut().zip(r) {
                *zi = -ri;
            }
        }
        fn name(&self) -> &'static str {
            "negate"
        }
        fn dim(&self) -> Option<usize> {
            None
        }
    }
    let a = lap1d(5);
    let res = cg(&a, &[1.0; 5], None, &Negate, &SolveOptions::default()).unwrap();
    assert_eq!(res.reason, ConvergedReason::DivergedIndefinitePc);
}

#[test]
fn reason_nanorinf() {
    let a = lap1d(10);
    let mut b = vec![1.0; 10];
    b[4] = f64::NAN;
    let opts = SolveOptions::default();
    for res in [
        cg(&a, &b, None, &Identity, &opts).unwrap(),
        gmres(&a, &b, None, &Identity, &opts).unwrap(),
        bicgstab(&a, &b, None, &Identity, &opts).unwrap(),
    ] {
        assert_eq!(res.reason, ConvergedReason::DivergedNanorinf);
    }
    // A matrix with an Inf entry: the first product A p is Inf/NaN.
    let mut a = lap1d(10);
    a.set(3, 3, f64::INFINITY);
    let b = vec![1.0; 10];
    for res in [
        cg(&a, &b, None, &Identity, &opts).unwrap(),
        gmres(&a, &b, None, &Identity, &opts).unwrap(),
        bicgstab(&a, &b, None, &Identity, &opts).unwrap(),
    ] {
        assert_eq!(res.reason, ConvergedReason::DivergedNanorinf, "{res:?}");
    }
}

#[test]
fn reason_stagnated() {
    // Cyclic shift (permutation) P e_i = e_{i+1 mod n}, b = e_1. The Krylov space
    // K_m(P, e_1) ⊂ span{e_1..e_m}, and P maps it onto span{e_2..e_{m+1}} ⟂ e_1 for m < n, so
    // the GMRES(m) minimiser of ‖e_1 − P y‖ is y = 0: every restart cycle makes exactly no
    // progress (the classic total stagnation of restarted GMRES). n = 2 is [[0,1],[1,0]].
    for n in [2usize, 5] {
        let e: Vec<_> = (0..n).map(|i| ((i + 1) % n, i, 1.0)).collect();
        let a = from_triplets(n, &e);
        let mut b = vec![0.0; n];
        b[0] = 1.0;
        let opts = SolveOptions {
            restart: 1,
            ..SolveOptions::default()
        };
        let res = gmres(&a, &b, None, &Identity, &opts).unwrap();
        assert_eq!(res.reason, ConvergedReason::Stagnated, "{res:?}");
        assert_eq!(res.iterations, opts.stagnation_window);
        // Full GMRES (restart ≥ n) solves it in n steps.
        let full = gmres(&a, &b, None, &Identity, &SolveOptions::default()).unwrap();
        assert!(full.reason.is_converged(), "{full:?}");
        assert!(
            rel_err(&full.x, &{
                let mut x = vec![0.0; n];
                x[n - 1] = 1.0;
                x
            }) < 1e-12
        );
    }
}

#[test]
fn reasons_serialize_with_petsc_names() {
    let all = [
        (ConvergedReason::ConvergedRtol, "CONVERGED_RTOL"),
        (ConvergedReason::ConvergedAtol, "CONVERGED_ATOL"),
        (ConvergedReason::DivergedIts, "DIVERGED_ITS"),
        (ConvergedReason::DivergedDtol, "DIVERGED_DTOL"),
        (ConvergedReason::DivergedBreakdown, "DIVERGED_BREAKDOWN"),
        (
            ConvergedReason::DivergedIndefinitePc,
            "DIVERGED_INDEFINITE_PC",
        ),
        (ConvergedReason::DivergedNanorinf, "DIVERGED_NANORINF"),
        (ConvergedReason::Stagnated, "STAGNATED"),
    ];
    for (r, name) in all {
        assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{name}\""));
        assert_eq!(r.to_string(), name);
        let back: ConvergedReason = serde_json::from_str(&format!("\"{name}\"")).unwrap();
        assert_eq!(back, r);
    }
}

#[test]
fn dimension_mismatches_are_errors() {
    let a = lap1d(5);
    let opts = SolveOptions::default();
    assert!(matches!(
        cg(&a, &[1.0; 4], None, &Identity, &opts),
        Err(KrylovError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        gmres(&a, &[1.0; 5], Some(&[0.0; 3]), &Identity, &opts),
        Err(KrylovError::DimensionMismatch { .. })
    ));
    let other = lap1d(6);
    let pc = Ilu0::new(&other).unwrap();
    assert!(matches!(
        bicgstab(&a, &[1.0; 5], None, &pc, &opts),
        Err(KrylovError::DimensionMismatch { .. })
    ));
    let rect: CsMat<f64> = TriMat::<f64>::new((2, 3)).to_csr();
    assert!(matches!(
        cg(&rect, &[1.0; 2], None, &Identity, &opts),
        Err(KrylovError::NotSquare { .. })
    ));
    assert!(compare(&a, &[1.0; 3], &opts).is_err());
    let csc = a.to_csc();
    assert!(matches!(
        cg(&csc, &[1.0; 5], None, &Identity, &opts),
        Err(KrylovError::NotCsr)
    ));
    let bad = SolveOptions {
        restart: 0,
        ..SolveOptions::default()
    };
    assert!(gmres(&a, &[1.0; 5], None, &Identity, &bad).is_err());
}

#[test]
fn empty_matrix_does_not_panic() {
    let a: CsMat<f64> = TriMat::<f64>::new((0, 0)).to_csr();
    let opts = SolveOptions::default();
    for m in [Method::Cg, Method::Gmres, Method::Bicgstab] {
        let res = solve_with(m, PcKind::None, &a, &[], &opts).unwrap();
        assert_eq!(res.reason, ConvergedReason::ConvergedAtol);
    }
    let _ = compare(&a, &[], &opts).unwrap();
}

/// D·A·D with A the 1D Laplacian and D = diag(10^u), u uniform in [0, decades): badly scaled
/// SPD, on which CG's residual rises far above ‖r₀‖ before it converges.
fn scaled_lap1d(n: usize, decades: f64, seed: u64) -> CsMat<f64> {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let mut rng = SmallRng::seed_from_u64(seed);
    let d: Vec<f64> = (0..n)
        .map(|_| 10f64.powf(decades * rng.random::<f64>()))
        .collect();
    let mut e = Vec::new();
    for i in 0..n {
        e.push((i, i, 2.0 * d[i] * d[i]));
        if i > 0 {
            e.push((i, i - 1, -d[i] * d[i - 1]));
            e.push((i - 1, i, -d[i] * d[i - 1]));
        }
    }
    from_triplets(n, &e)
}

/// Longest run of iterations over which the best residual so far improved by less than `rtol`.
fn longest_plateau(history: &[f64], rtol: f64) -> usize {
    let mut best = Vec::with_capacity(history.len());
    let mut b = f64::INFINITY;
    for &r in history {
        b = b.min(r);
        best.push(b);
    }
    let mut longest = 0;
    for i in 0..best.len() {
        let j = (i + 1..best.len())
            .find(|&j| best[j] <= (1.0 - rtol) * best[i])
            .unwrap_or(best.len());
        longest = longest.max(j - i);
    }
    longest
}

#[test]
fn cg_slow_convergence_with_a_long_plateau_is_not_stagnation() {
    let n = 200;
    let a = scaled_lap1d(n, 1.0, 3);
    let b: Vec<f64> = (0..n).map(|i| 1.0 + (i % 5) as f64).collect();
    let opts = SolveOptions::default();
    let res = cg(&a, &b, None, &Identity, &opts).unwrap();
    assert_eq!(
        res.reason,
        ConvergedReason::ConvergedRtol,
        "{:?}",
        res.reason
    );
    // The residual plateau is far longer than the plain 50-iteration window, which would have
    // called this run STAGNATED.
    let plateau = longest_plateau(&res.residual_history, opts.stagnation_rtol);
    eprintln!(
        "converged in {} iterations, plateau {plateau}",
        res.iterations
    );
    assert!(plateau > 2 * opts.stagnation_window, "plateau {plateau}");
}

/// A rank-deficient preconditioner (it drops the second half of the residual): CG's residual
/// and its energy both stop improving for good.
struct HalfIdentity(usize);

impl Preconditioner for HalfIdentity {
    fn apply(&self, r: &[f64], z: &mut [f64]) {
        for (i, (zi, ri)) in z.iter_mut().zip(r).enumerate() {
            *zi = if i < self.0 { *ri } else { 0.0 };
        }
    }
    fn name(&self) -> &'static str {
        "half"
    }
    fn dim(&self) -> Option<usize> {
        None
    }
}

#[test]
fn cg_truly_stagnating_is_still_stagnated() {
    let n = 400;
    let a = lap1d(n);
    let b: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 / n as f64).collect();
    let opts = SolveOptions::default();
    let res = cg(&a, &b, None, &HalfIdentity(n / 2), &opts).unwrap();
    assert_eq!(res.reason, ConvergedReason::Stagnated, "{:?}", res.reason);
    assert!(res.iterations < 10 * cg_stagnation_window(&opts, n));
}
