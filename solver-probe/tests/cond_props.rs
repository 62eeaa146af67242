//! Property tests for `solver_probe::cond`: arbitrary small matrices (zeros, singular,
//! badly scaled, indefinite) never panic, and any κ reported is finite, ≥ 1 and below 1/eps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use proptest::prelude::*;
use solver_probe::cond;
use sprs::{CsMat, TriMat};

fn entry() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => Just(0.0),
        4 => -10.0..10.0f64,
        1 => (-8i32..8, any::<bool>()).prop_map(|(e, s)| if s { 10f64.powi(e) } else { -(10f64.powi(e)) }),
    ]
}

fn matrix() -> impl Strategy<Value = (usize, Vec<f64>, bool)> {
    (1usize..7).prop_flat_map(|n| {
        (
            Just(n),
            prop::collection::vec(entry(), n * n),
            any::<bool>(),
        )
    })
}

fn to_csr(n: usize, v: &[f64], symmetric: bool) -> CsMat<f64> {
    let mut t = TriMat::new((n, n));
    for i in 0..n {
        for j in 0..n {
            let x = if symmetric && j < i {
                v[j * n + i]
            } else {
                v[i * n + j]
            };
            if x != 0.0 {
                t.add_triplet(i, j, x);
            }
        }
    }
    t.to_csr()
}

fn check(e: &cond::Estimate) {
    match e.kappa {
        Some(k) => {
            assert!((1.0 - 1e-9..cond::SINGULAR_KAPPA).contains(&k), "{e:?}");
            assert!(!e.numerically_singular);
        }
        None => assert!(e.numerically_singular && e.note.contains("numerically singular")),
    }
    serde_json::to_string(e).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_panics_and_sane_kappa((n, v, sym) in matrix()) {
        let a = to_csr(n, &v, sym);
        check(&cond::estimate(&a).unwrap());
        check(&cond::exact_dense_2(&a).unwrap());
        check(&cond::one_norm_estimate(&a).unwrap());
        if let Ok(e) = cond::lanczos_spd(&a, 20, 1) {
            check(&e);
        }
        if let Ok(s) = cond::scaled_condition(&a) {
            check(&s.before);
            check(&s.after);
        }
        if let Ok(s) = cond::shift_for_threshold(&a, 1e6) {
            prop_assert!(s.sigma >= 0.0);
            prop_assert!(s.kappa_after.is_some_and(|k| k < 1e6));
        }
        let _ = cond::monte_carlo_typical(&a, 12, 1e-3, 3, 1);
        let b = vec![1.0; n];
        let _ = cond::iterative_refinement(&a, &b, 12, 1e-3, 5, 1);
    }

    #[test]
    fn analog_bound_is_valid_exactly_below_one(k in 0.0..1e6f64, bits in 1u32..40) {
        let e = k * 2f64.powi(-(bits as i32));
        match cond::analog_bound(k, bits) {
            Some(b) => prop_assert!(e < 1.0 && b >= 0.0),
            None => prop_assert!(e >= 1.0),
        }
    }
}
