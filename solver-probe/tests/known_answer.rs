//! The known-answer refinement against devices whose error is known exactly: an exact
//! product, a worst-case bounded relative perturbation (κδ below and above 1), a random
//! entrywise one, and devices that misbehave.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step fails the test

use solver_probe::known_answer::{
    default_solution, laplacian_1d, refine, KnownAnswerError, KnownAnswerOptions,
    KnownAnswerProblem, Verdict,
};

const N: usize = 32;

fn matvec(a: &[f64], x: &[f64]) -> Vec<f64> {
    let n = x.len();
    (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
        .collect()
}

/// λ_min, λ_max and the unit eigenvector of λ_min of the n×n 1D Laplacian (closed form).
fn laplacian_spectrum(n: usize) -> (f64, f64, Vec<f64>) {
    let h = std::f64::consts::PI / (n + 1) as f64;
    let lmin = 4.0 * (h / 2.0).sin().powi(2);
    let lmax = 4.0 * ((n as f64) * h / 2.0).sin().powi(2);
    let s = (2.0 / (n + 1) as f64).sqrt();
    let v = (1..=n).map(|i| s * (i as f64 * h).sin()).collect();
    (lmin, lmax, v)
}

fn problem() -> (Vec<f64>, KnownAnswerProblem) {
    let a = laplacian_1d(N);
    let p = KnownAnswerProblem::new(N, &a, &default_solution(N)).unwrap();
    (a, p)
}

/// A device whose error E = δ·λ_max·v vᵀ has ‖E‖ = δ‖A‖ and points where A⁻¹ amplifies it
/// most: ‖A⁻¹E‖ = κδ exactly, the worst case for a relative error δ.
fn worst_case_device(a: &[f64], delta: f64) -> impl FnMut(&[f64]) -> Result<Vec<f64>, String> + '_ {
    let (_, lmax, v) = laplacian_spectrum(N);
    move |x: &[f64]| {
        let vx: f64 = v.iter().zip(x).map(|(p, q)| p * q).sum();
        Ok(matvec(a, x)
            .iter()
            .zip(&v)
            .map(|(y, vi)| y + delta * lmax * vi * vx)
            .collect())
    }
}

#[test]
fn exact_device_converges_to_f64_accuracy_in_one_step() {
    let (a, p) = problem();
    let opts = KnownAnswerOptions {
        max_steps: 10,
        target_error: 1e-13,
    };
    let r = refine(&p, opts, |x: &[f64]| Ok::<_, String>(matvec(&a, x))).unwrap();
    assert_eq!(r.verdict, Verdict::Converged, "{r:?}");
    assert_eq!(r.steps, 1);
    assert!(r.relative_error < 1e-14, "{r:?}");
    assert!(r.matvec_error < 1e-15, "{r:?}");
    assert_eq!(r.history.len(), 2);
    assert_eq!(r.history[0], 1.0);
}

#[test]
fn bounded_perturbation_below_the_limit_converges_at_kappa_delta() {
    let (a, p) = problem();
    let (lmin, lmax, _) = laplacian_spectrum(N);
    let kappa = lmax / lmin;
    for kd in [0.05, 0.3, 0.6] {
        let delta = kd / kappa;
        let opts = KnownAnswerOptions {
            max_steps: 60,
            target_error: 1e-10,
        };
        let r = refine(&p, opts, worst_case_device(&a, delta)).unwrap();
        assert_eq!(r.verdict, Verdict::Converged, "κδ = {kd}: {r:?}");
        assert!(
            (r.rate - kd).abs() < 0.02 * kd.max(0.1),
            "κδ = {kd}: measured rate {} (history {:?})",
            r.rate,
            r.history
        );
        assert!(r.relative_error <= 1e-10);
        // The device's own error is at most δ relative (‖E‖ = δ‖A‖), seen through ‖Az‖.
        assert!(
            r.matvec_error > 0.0 && r.matvec_error <= delta * kappa,
            "{r:?}"
        );
        // Each step after the first shrinks the error by κδ.
        for w in r.history[1..].windows(2) {
            assert!((w[1] / w[0] - kd).abs() < 0.02 * kd.max(0.1) || w[1] < 1e-13);
        }
    }
}

#[test]
fn slow_contraction_within_the_budget_is_converged_slowly() {
    let (a, p) = problem();
    let (lmin, lmax, _) = laplacian_spectrum(N);
    let opts = KnownAnswerOptions {
        max_steps: 4,
        target_error: 1e-10,
    };
    let r = refine(&p, opts, worst_case_device(&a, 0.7 * lmin / lmax)).unwrap();
    assert_eq!(r.verdict, Verdict::ConvergedSlowly, "{r:?}");
    assert_eq!(r.steps, 4);
    assert!(r.rate < 1.0 && r.relative_error > 1e-10, "{r:?}");
}

#[test]
fn perturbation_beyond_the_limit_diverges_and_is_flagged() {
    let (a, p) = problem();
    let (lmin, lmax, _) = laplacian_spectrum(N);
    let opts = KnownAnswerOptions {
        max_steps: 30,
        target_error: 1e-8,
    };
    let r = refine(&p, opts, worst_case_device(&a, 1.5 * lmin / lmax)).unwrap();
    assert_eq!(r.verdict, Verdict::DivergedOrStalled, "{r:?}");
    assert!((r.rate - 1.5).abs() < 0.05, "{r:?}");
    assert!(r.relative_error > r.history[1], "{r:?}");
}

#[test]
fn random_entrywise_relative_error_converges_within_the_kappa_delta_bound() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    let (a, p) = problem();
    let (lmin, lmax, _) = laplacian_spectrum(N);
    let delta = 1e-3;
    let mut rng = SmallRng::seed_from_u64(11);
    let g: Vec<f64> = a
        .iter()
        .map(|w| w * (1.0 + delta * (2.0 * rng.random::<f64>() - 1.0)))
        .collect();
    let r = refine(&p, KnownAnswerOptions::default(), |x: &[f64]| {
        Ok::<_, String>(matvec(&g, x))
    })
    .unwrap();
    assert_eq!(r.verdict, Verdict::Converged, "{r:?}");
    assert!(r.rate < delta * lmax / lmin, "{r:?}");
    // Entrywise relative error δ: ‖Ez‖ ≤ δ‖|A||z|‖.
    assert!(
        r.matvec_error < delta && r.matvec_error > 0.1 * delta,
        "{r:?}"
    );
}

#[test]
fn misbehaving_devices_end_the_run_with_a_clear_outcome() {
    let (_, p) = problem();
    let opts = KnownAnswerOptions::default();
    let r = refine(&p, opts, |_: &[f64]| Ok::<_, String>(vec![f64::NAN; N])).unwrap();
    assert_eq!(r.verdict, Verdict::DivergedOrStalled);
    let e = refine(&p, opts, |_: &[f64]| Ok::<_, String>(vec![0.0; 3])).unwrap_err();
    assert!(e.to_string().contains("3 entries, expected 32"), "{e}");
    let e = refine(&p, opts, |_: &[f64]| Err::<Vec<f64>, _>("no answer")).unwrap_err();
    assert_eq!(
        e,
        KnownAnswerError::Device {
            step: 1,
            message: "no answer".into()
        }
    );
}

#[test]
fn bad_problems_and_options_are_refused_naming_what_is_wrong() {
    let a = laplacian_1d(4);
    let e = KnownAnswerProblem::new(4, &a[..15], &[1.0; 4]).unwrap_err();
    assert!(e.to_string().contains("15 entries, expected 4×4"), "{e}");
    let e = KnownAnswerProblem::new(4, &a, &[1.0; 3]).unwrap_err();
    assert!(e.to_string().contains("solution has 3 entries"), "{e}");
    let e = KnownAnswerProblem::new(2, &[1.0, 2.0, 2.0, 4.0], &[1.0, 1.0]).unwrap_err();
    assert!(e.to_string().contains("singular"), "{e}");
    let mut bad = a.clone();
    bad[5] = f64::INFINITY;
    let e = KnownAnswerProblem::new(4, &bad, &[1.0; 4]).unwrap_err();
    assert!(e.to_string().contains("(1, 1)"), "{e}");
    let p = KnownAnswerProblem::new(4, &a, &[1.0; 4]).unwrap();
    let e = p
        .start(KnownAnswerOptions {
            max_steps: 0,
            target_error: 1e-6,
        })
        .unwrap_err();
    assert!(e.to_string().contains("max_steps"), "{e}");
    let e = p
        .start(KnownAnswerOptions {
            max_steps: 5,
            target_error: 1e-16,
        })
        .unwrap_err();
    assert!(e.to_string().contains("target_error"), "{e}");
}
