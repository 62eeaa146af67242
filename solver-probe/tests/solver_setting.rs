//! Convergence judged as the solver runs: at its own rtol, max_iter, restart, method and
//! preconditioner; and a probe cut short by its own time budget is PROBE_FAILED, never
//! NOT_CONVERGING.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use solver_probe::report::{analyze, FindingCode, ProbeOptions, Report, SolverSetting};
use sprs::{CsMat, TriMat};

/// Rows of tridiag(−1, 4, −1) scaled by 10^e, e spread over [0, 6) by a fixed pseudo-random
/// sequence: well conditioned once Jacobi undoes the row scaling, hard for unpreconditioned
/// GMRES (eigenvalues spread over six decades).
fn badly_scaled(n: usize) -> CsMat<f64> {
    let mut t = TriMat::new((n, n));
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..n {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let d = 10f64.powf(6.0 * (state >> 11) as f64 / (1u64 << 53) as f64);
        t.add_triplet(i, i, 4.0 * d);
        if i > 0 {
            t.add_triplet(i, i - 1, -d);
        }
        if i + 1 < n {
            t.add_triplet(i, i + 1, -d);
        }
    }
    t.to_csr()
}

fn probe(method: &str, pc: &str, rtol: f64, max_iter: usize) -> Report {
    let mut opts = ProbeOptions::default();
    opts.solve.rtol = rtol;
    opts.solve.max_iter = max_iter;
    opts.solver = SolverSetting::from_names(Some(method), Some(pc)).unwrap();
    analyze(&badly_scaled(3000), None, "scaled.mtx", &opts)
}

fn finding(r: &Report, code: FindingCode) -> Option<String> {
    r.findings
        .iter()
        .find(|f| f.code == code)
        .map(|f| f.message.clone())
}

#[test]
fn the_solvers_own_setting_decides_not_converging() {
    let r = probe("gmres", "none", 1e-4, 100);
    let run = r.solver_run.as_ref().expect("the solver's run");
    assert_eq!(run.preconditioner, "none");
    assert_eq!(
        run.iterations, 100,
        "stopped at the solver's max_iter: {run:?}"
    );
    let m = finding(&r, FindingCode::NotConverging).expect("NOT_CONVERGING");
    assert!(
        m.contains("the solver's setting (GMRES(30) + none at rtol 1e-4, max_iter 100)"),
        "{m}"
    );
    assert!(m.contains("DIVERGED_ITS after 100 iterations"), "{m}");
    assert!(
        m.contains("jacobi") || m.contains("ilu0"),
        "names a pair that works: {m}"
    );
    assert!(finding(&r, FindingCode::ProbeFailed).is_none());
}

#[test]
fn relaxed_tolerance_with_jacobi_is_checked_at_those_numbers() {
    let r = probe("gmres", "jacobi", 1e-4, 2000);
    let run = r.solver_run.as_ref().expect("the solver's run");
    assert_eq!(run.preconditioner, "jacobi");
    assert!(run.reason.is_some_and(|x| x.is_converged()), "{run:?}");
    assert!(run.relative_residual <= 1e-4, "{run:?}");
    assert!(
        finding(&r, FindingCode::NotConverging).is_none(),
        "{:?}",
        r.findings
    );
    // The same solver at a tighter tolerance needs more iterations: the rtol is really used.
    let tight = probe("gmres", "jacobi", 1e-10, 2000);
    let tight_run = tight.solver_run.as_ref().unwrap();
    assert!(
        tight_run.iterations > run.iterations,
        "{tight_run:?} vs {run:?}"
    );
}

#[test]
fn a_gmres_restart_shorter_than_needed_is_the_solvers_problem() {
    let mut opts = ProbeOptions::default();
    opts.solve.rtol = 1e-8;
    opts.solve.max_iter = 300;
    opts.solve.restart = 2;
    opts.solver = SolverSetting::from_names(Some("gmres"), Some("none")).unwrap();
    let r = analyze(&badly_scaled(3000), None, "scaled.mtx", &opts);
    let m = finding(&r, FindingCode::NotConverging).expect("NOT_CONVERGING");
    assert!(m.contains("GMRES(2)"), "{m}");
}

#[test]
fn a_probe_out_of_time_is_probe_failed_not_not_converging() {
    let mut opts = ProbeOptions::default();
    opts.solve.time_budget = Some(Duration::ZERO);
    let r = analyze(&badly_scaled(3000), None, "scaled.mtx", &opts);
    assert!(
        finding(&r, FindingCode::NotConverging).is_none(),
        "{:?}",
        r.convergence
    );
    assert!(
        finding(&r, FindingCode::NotConverging).is_none(),
        "{:?}",
        r.findings
    );
    // Same with the solver's setting given: its run was cut, so there is no verdict on it.
    opts.solver = SolverSetting::from_names(Some("gmres"), Some("jacobi")).unwrap();
    let r = analyze(&badly_scaled(3000), None, "scaled.mtx", &opts);
    assert!(finding(&r, FindingCode::NotConverging).is_none());
    let m = finding(&r, FindingCode::ProbeFailed).expect("PROBE_FAILED");
    assert!(m.contains("time budget"), "{m}");
}

#[test]
fn setting_names_are_checked() {
    assert!(SolverSetting::from_names(None, None).unwrap().is_none());
    let e = SolverSetting::from_names(Some("minres"), None).unwrap_err();
    assert!(e.contains("expected cg, gmres or bicgstab"), "{e}");
    let e = SolverSetting::from_names(None, Some("amg")).unwrap_err();
    assert!(e.contains("expected none, jacobi"), "{e}");
    let s = SolverSetting::from_names(None, Some("ILU"))
        .unwrap()
        .unwrap();
    assert_eq!(format!("{:?}", s.method), "Gmres");
    assert!(SolverSetting::from_names(Some("gmres"), Some("ic")).is_err());
}
