//! Property tests for the Krylov solvers: random small diagonally dominant systems are solved
//! to the requested accuracy by every method/preconditioner pair that applies, and random
//! inputs never panic.

use proptest::prelude::*;
use solver_probe::krylov::{compare, solve_with, spmv, Method, PcKind, SolveOptions};
use sprs::{CsMat, TriMat};

/// Random sparse matrix with a strictly dominant diagonal; symmetric when `sym`.
fn dominant(n: usize, entries: &[(usize, usize, f64)], sym: bool) -> CsMat<f64> {
    let mut dense = vec![vec![0.0; n]; n];
    for &(i, j, v) in entries {
        let (i, j) = (i % n, j % n);
        if i != j {
            dense[i][j] = v;
            if sym {
                dense[j][i] = v;
            }
        }
    }
    let mut t = TriMat::new((n, n));
    for (i, row) in dense.iter().enumerate() {
        let off: f64 = row.iter().map(|v| v.abs()).sum();
        t.add_triplet(i, i, off + 1.0);
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                t.add_triplet(i, j, v);
            }
        }
    }
    t.to_csr()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn solvers_recover_known_solution(
        n in 1usize..25,
        entries in prop::collection::vec((0usize..25, 0usize..25, -2.0f64..2.0), 0..60),
        xs in prop::collection::vec(-5.0f64..5.0, 25),
        sym in any::<bool>(),
    ) {
        let a = dominant(n, &entries, sym);
        let xt = &xs[..n];
        let mut b = vec![0.0; n];
        spmv(&a, xt, &mut b).unwrap();
        let opts = SolveOptions { rtol: 1e-10, ..SolveOptions::default() };
        let mut pairs = vec![
            (Method::Gmres, PcKind::None), (Method::Gmres, PcKind::Jacobi),
            (Method::Gmres, PcKind::Ilu0), (Method::Bicgstab, PcKind::Ilu0),
        ];
        if sym {
            pairs.extend([(Method::Cg, PcKind::None), (Method::Cg, PcKind::Jacobi),
                          (Method::Cg, PcKind::Ic0)]);
        }
        for (m, k) in pairs {
            let res = solve_with(m, k, &a, &b, &opts).unwrap();
            prop_assert!(res.reason.is_converged(), "{:?}/{:?}: {:?}", m, k, res.reason);
            let err = res.x.iter().zip(xt).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            let scale = xt.iter().map(|v| v.abs()).fold(1.0, f64::max);
            // Diagonal dominance by at least 1 keeps κ small, so 1e-10 relative residual
            // gives a tiny error.
            prop_assert!(err <= 1e-7 * scale, "{:?}/{:?}: error {}", m, k, err);
        }
        let cmp = compare(&a, &b, &opts).unwrap();
        prop_assert!(cmp.best.is_some());
    }

    #[test]
    fn arbitrary_matrices_never_panic(
        n in 1usize..8,
        entries in prop::collection::vec(
            (0usize..8, 0usize..8, prop_oneof![Just(0.0), Just(f64::NAN), Just(f64::INFINITY), -3.0f64..3.0]),
            0..30),
        b in prop::collection::vec(-3.0f64..3.0, 8),
    ) {
        let mut t = TriMat::new((n, n));
        for (i, j, v) in entries {
            t.add_triplet(i % n, j % n, v);
        }
        let a: CsMat<f64> = t.to_csr();
        let opts = SolveOptions { max_iter: 200, ..SolveOptions::default() };
        for m in [Method::Cg, Method::Gmres, Method::Bicgstab] {
            for k in [PcKind::None, PcKind::Jacobi, PcKind::Ilu0, PcKind::Ic0] {
                let _ = solve_with(m, k, &a, &b[..n], &opts);
            }
        }
        let _ = compare(&a, &b[..n], &opts);
    }
}
