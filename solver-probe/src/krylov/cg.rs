//! Preconditioned conjugate gradients for symmetric positive definite systems.
//!
//! Detects an indefinite operator or preconditioner (`p·Ap ≤ 0` or `r·z ≤ 0`) and stops with
//! `DIVERGED_INDEFINITE_PC`. The residual history is the recursively updated `‖r‖₂`
//! (unpreconditioned).
//!
//! The recurrence is Chronopoulos–Gear CG (Chronopoulos & Gear, J. Comput. Appl. Math. 25,
//! 1989): it carries `s = A p` as a vector and gets `p·Ap` from the scalars
//! `δ = u·Au` and `γ = r·u`, so an iteration is two passes over memory instead of three:
//! - the SpMV `w = A u` returning `u·w` (δ), then
//! - one vector pass `p = u + βp, s = w + βs, x += αp, r −= αs` returning `r·r` (γ without a
//!   preconditioner, and the residual norm) and `x·x`,
//!
//! each cut into parts that the worker threads take ([`super::parallel`]). Without a
//! preconditioner `u` is `r` itself (no copy, no second dot).
//!
//! Systems shorter than the threaded size ([`Split::min_len`], 100k unknowns) keep the
//! textbook (Hestenes–Stiefel) recurrence: their vectors sit in cache, so a pass saved buys
//! little there, and its trajectory is the one the stagnation heuristic was tuned on. Both
//! recurrences agree in exact arithmetic; in rounding they differ by a few iterations on
//! ill-conditioned systems, and on a badly scaled one (`tests/krylov.rs`,
//! `cg_slow_convergence_with_a_long_plateau_is_not_stagnation`) the energy window sits within
//! a factor 1.6 of the stall threshold for either, so which one trips it is rounding luck.
//!
//! The recursively updated `r` and `s` drift from `b − Ax` and `Ap` by rounding, a little
//! faster than in the textbook recurrence. Residual replacement (van der Vorst & Ye, SIAM J.
//! Sci. Comput. 22, 2000) bounds the drift: it accumulates `d += ε(N‖A‖‖x‖ + ‖r‖)` and, when
//! `d` crosses `√ε‖r‖`, recomputes `r = b − Ax` and `s = Ap` (two extra products, a few times a
//! run), so the true residual at convergence is as small as plain CG's.

use std::time::Instant;

use sprs::CsMat;

use super::parallel::{cg_update, par_dot, CgVectors, Split};
use super::spmv::Csr;
use super::{cg_stagnation_window, dot, norm2, residual, setup};
use super::{ConvergedReason, KrylovError, Monitor};
use super::{SolveOptions, SolveResult};
use crate::precond::Preconditioner;

/// Solve `A x = b` by preconditioned CG from `x0` (zero when `None`).
pub fn cg(
    a: &CsMat<f64>,
    b: &[f64],
    x0: Option<&[f64]>,
    pc: &dyn Preconditioner,
    opts: &SolveOptions,
) -> Result<SolveResult, KrylovError> {
    let start = Instant::now();
    let (m, x, r) = setup(a, b, x0, pc, opts)?;
    run(&m, b, x, r, pc, opts, start)
}

/// The van der Vorst–Ye estimate of how far the recursive residual has drifted from the true
/// one, and the test that decides a replacement.
struct Drift {
    /// `N‖A‖`: rounding scale of one product per unit of ‖x‖.
    scale: f64,
    /// Accumulated deviation bound, and its value after the last replacement.
    d: f64,
    d_init: f64,
    /// `‖r‖` of the previous iteration.
    prev_r: f64,
}

impl Drift {
    fn new(m: &Csr<'_>, x_norm: f64, r_norm: f64) -> Drift {
        let (norm, widest) = m.norm_bound();
        let scale = widest as f64 * norm;
        let d = f64::EPSILON * (scale * x_norm + r_norm);
        Drift {
            scale,
            d,
            d_init: d,
            prev_r: r_norm,
        }
    }

    /// Adds this iteration's rounding; true when `r` (and `s`) should be recomputed.
    fn step(&mut self, x_norm: f64, r_norm: f64) -> bool {
        let eps = f64::EPSILON;
        let before = self.d;
        self.d += eps * (self.scale * x_norm + r_norm);
        let root = eps.sqrt();
        let replace =
            before <= root * self.prev_r && self.d > root * r_norm && self.d > 1.1 * self.d_init;
        self.prev_r = r_norm;
        replace
    }

    /// After a replacement the drift restarts from one product's rounding.
    fn reset(&mut self, x_norm: f64, r_norm: f64) {
        self.d = f64::EPSILON * (self.scale * x_norm + r_norm);
        self.d_init = self.d;
        self.prev_r = r_norm;
    }
}

/// The CG iteration on a prepared matrix from `x` with residual `r = b − Ax`.
fn run(
    m: &Csr<'_>,
    b: &[f64],
    x: Vec<f64>,
    r: Vec<f64>,
    pc: &dyn Preconditioner,
    opts: &SolveOptions,
    start: Instant,
) -> Result<SolveResult, KrylovError> {
    let n = m.n();
    let window = cg_stagnation_window(opts, n);
    let mon = Monitor::with_window(opts, norm2(&r), start, window);
    if let Some(reason) = mon.initial() {
        return Ok(mon.finish(reason, 0, x));
    }
    if n < m.split().min_len {
        Ok(textbook(m, x, r, pc, mon))
    } else {
        Ok(gear(m, b, x, r, pc, mon))
    }
}

/// Hestenes–Stiefel CG, serial: three passes an iteration (`q = Ap` with `p·q`,
/// `x += αp, r −= αq` with `r·r`, `p = z + βp`).
fn textbook(
    m: &Csr<'_>,
    mut x: Vec<f64>,
    mut r: Vec<f64>,
    pc: &dyn Preconditioner,
    mut mon: Monitor<'_>,
) -> SolveResult {
    use ConvergedReason::{DivergedIndefinitePc as Indefinite, DivergedNanorinf as NanOrInf};
    let n = m.n();
    let identity = pc.is_identity();
    let mut z = if identity { Vec::new() } else { vec![0.0; n] };
    let mut rz = if identity {
        dot(&r, &r)
    } else {
        pc.apply(&r, &mut z);
        dot(&r, &z)
    };
    if !rz.is_finite() {
        return mon.finish(NanOrInf, 0, x);
    }
    if rz <= 0.0 {
        return mon.finish(Indefinite, 0, x);
    }
    let mut p = if identity { r.clone() } else { z.clone() };
    let mut q = vec![0.0; n];
    let mut it = 0;
    loop {
        let pq = m.mul_dot_unchecked_len(&p, &mut q);
        if !pq.is_finite() {
            return mon.finish(NanOrInf, it, x);
        }
        if pq <= 0.0 {
            return mon.finish(Indefinite, it, x);
        }
        it += 1;
        let alpha = rz / pq;
        for (xi, pi) in x.iter_mut().zip(&p) {
            *xi += alpha * pi;
        }
        for (ri, qi) in r.iter_mut().zip(&q) {
            *ri -= alpha * qi;
        }
        let rr = dot(&r, &r);
        mon.record_energy(alpha * rz);
        if let Some(reason) = mon.check(rr.sqrt(), it) {
            return mon.finish(reason, it, x);
        }
        let rz_new = if identity {
            rr
        } else {
            pc.apply(&r, &mut z);
            dot(&r, &z)
        };
        if !rz_new.is_finite() {
            return mon.finish(NanOrInf, it, x);
        }
        if rz_new <= 0.0 {
            return mon.finish(Indefinite, it, x);
        }
        let beta = rz_new / rz;
        rz = rz_new;
        for (pi, zi) in p.iter_mut().zip(if identity { &r } else { &z }) {
            *pi = zi + beta * *pi;
        }
    }
}

/// Chronopoulos–Gear CG with residual replacement, threaded: two passes an iteration.
fn gear(
    m: &Csr<'_>,
    b: &[f64],
    mut x: Vec<f64>,
    mut r: Vec<f64>,
    pc: &dyn Preconditioner,
    mut mon: Monitor<'_>,
) -> SolveResult {
    use ConvergedReason::{DivergedIndefinitePc as Indefinite, DivergedNanorinf as NanOrInf};
    let n = m.n();
    let split: Split = m.split();
    let identity = pc.is_identity();
    let mut u = if identity { Vec::new() } else { vec![0.0; n] };
    let mut w = vec![0.0; n];
    // γ = r·u and δ = u·Au of the current residual; u = M r, w = A u.
    let next = |r: &[f64], u: &mut Vec<f64>, w: &mut Vec<f64>, rr: f64| -> (f64, f64) {
        if identity {
            (rr, m.mul_dot_unchecked_len(r, w))
        } else {
            pc.apply(r, u);
            (par_dot(&split, r, u), m.mul_dot_unchecked_len(u, w))
        }
    };
    let mut rr = mon.r0 * mon.r0;
    let (mut gamma, delta) = next(&r, &mut u, &mut w, rr);
    if !gamma.is_finite() {
        return mon.finish(NanOrInf, 0, x);
    }
    if gamma <= 0.0 {
        return mon.finish(Indefinite, 0, x);
    }
    // The first p is u, so p·Ap = δ.
    if !delta.is_finite() {
        return mon.finish(NanOrInf, 0, x);
    }
    if delta <= 0.0 {
        return mon.finish(Indefinite, 0, x);
    }
    let mut alpha = gamma / delta;
    let mut beta = 0.0;
    let mut p = vec![0.0; n];
    let mut s = vec![0.0; n];
    let mut drift = Drift::new(m, norm2(&x), mon.r0);
    let mut it = 0;
    loop {
        let vectors = CgVectors {
            p: &mut p,
            s: &mut s,
            x: &mut x,
            r: &mut r,
            w: &w,
            u: if identity { None } else { Some(&u) },
        };
        let [rr_new, xx] = cg_update(&split, alpha, beta, vectors);
        rr = rr_new;
        it += 1;
        mon.record_energy(alpha * gamma);
        let x_norm = xx.sqrt();
        if drift.step(x_norm, rr.sqrt()) {
            residual(m, b, &x, &mut r);
            m.mul_unchecked_len(&p, &mut s);
            rr = par_dot(&split, &r, &r);
            drift.reset(x_norm, rr.sqrt());
        }
        if let Some(reason) = mon.check(rr.sqrt(), it) {
            return mon.finish(reason, it, x);
        }
        let (gamma_new, delta) = next(&r, &mut u, &mut w, rr);
        if !gamma_new.is_finite() {
            return mon.finish(NanOrInf, it, x);
        }
        if gamma_new <= 0.0 {
            return mon.finish(Indefinite, it, x);
        }
        beta = gamma_new / gamma;
        // p_new·A p_new = u·Au − β²·p·Ap, with p·Ap = γ/α of the step just taken.
        let pap = delta - beta * gamma_new / alpha;
        if !pap.is_finite() {
            return mon.finish(NanOrInf, it, x);
        }
        let pap = if pap > 0.0 {
            pap
        } else {
            // The recurrence's p·Ap is a difference of two large terms: on an ill-conditioned
            // SPD matrix its rounding can take it to zero or below. Before calling the matrix
            // indefinite, form p·Ap directly from the vectors the next update will build
            // (p = u + βp, Ap = w + βs): a rare extra pass, never a false verdict.
            let uu: &[f64] = if identity { &r } else { &u };
            let direct: f64 = uu
                .iter()
                .zip(&p)
                .zip(w.iter().zip(&s))
                .map(|((ui, pi), (wi, si))| (ui + beta * pi) * (wi + beta * si))
                .sum();
            if !direct.is_finite() {
                return mon.finish(NanOrInf, it, x);
            }
            if direct <= 0.0 {
                return mon.finish(Indefinite, it, x);
            }
            direct
        };
        alpha = gamma_new / pap;
        gamma = gamma_new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::krylov::dot;
    use crate::krylov::parallel::Split;
    use crate::precond::{Identity, Jacobi};
    use crate::test_matrices::poisson_2d as poisson2d;
    use sprs::TriMat;

    /// The textbook (Hestenes–Stiefel) preconditioned CG, serial, as the reference.
    fn cg_textbook(
        a: &CsMat<f64>,
        b: &[f64],
        pc: &dyn Preconditioner,
        rtol: f64,
    ) -> (usize, Vec<f64>) {
        let m = Csr::new(a).unwrap();
        let n = m.n();
        let mut x = vec![0.0; n];
        let mut r = b.to_vec();
        let r0 = norm2(&r);
        let mut z = vec![0.0; n];
        pc.apply(&r, &mut z);
        let mut p = z.clone();
        let mut q = vec![0.0; n];
        let mut rz = dot(&r, &z);
        for it in 1..=20 * n {
            let pq = m.mul_dot_unchecked_len(&p, &mut q);
            let alpha = rz / pq;
            for i in 0..n {
                x[i] += alpha * p[i];
                r[i] -= alpha * q[i];
            }
            if norm2(&r) <= rtol * r0 {
                return (it, x);
            }
            pc.apply(&r, &mut z);
            let rz_new = dot(&r, &z);
            let beta = rz_new / rz;
            rz = rz_new;
            for i in 0..n {
                p[i] = z[i] + beta * p[i];
            }
        }
        (usize::MAX, x)
    }

    /// D·T·D for the 1D Laplacian T and a diagonal D spanning `decades` decades: SPD with
    /// κ ≈ 10^(2·decades)·κ(T).
    fn ill_conditioned(n: usize, decades: f64) -> CsMat<f64> {
        let d: Vec<f64> = (0..n)
            .map(|i| 10f64.powf(decades * ((i * 7919) % n) as f64 / n as f64))
            .collect();
        let mut t = TriMat::new((n, n));
        for i in 0..n {
            t.add_triplet(i, i, 2.0 * d[i] * d[i]);
            if i + 1 < n {
                t.add_triplet(i, i + 1, -d[i] * d[i + 1]);
                t.add_triplet(i + 1, i, -d[i] * d[i + 1]);
            }
        }
        t.to_csr()
    }

    fn true_residual(a: &CsMat<f64>, b: &[f64], x: &[f64]) -> f64 {
        let m = Csr::new(a).unwrap();
        let mut r = vec![0.0; b.len()];
        residual(&m, b, x, &mut r);
        norm2(&r) / norm2(b)
    }

    fn opts(rtol: f64) -> SolveOptions {
        SolveOptions {
            rtol,
            max_iter: 100_000,
            stagnation_window: 0,
            ..SolveOptions::default()
        }
    }

    /// The threaded Chronopoulos–Gear path on a small system: `workers` threads, 32 parts.
    fn gear_cg(
        a: &CsMat<f64>,
        b: &[f64],
        pc: &dyn Preconditioner,
        o: &SolveOptions,
        workers: usize,
    ) -> SolveResult {
        let split = Split {
            workers,
            parts: 32,
            min_len: 0,
            min_nnz: 0,
        };
        let m = Csr::with_split(a, split).unwrap();
        let mut r = vec![0.0; b.len()];
        residual(&m, b, &vec![0.0; b.len()], &mut r);
        run(&m, b, vec![0.0; b.len()], r, pc, o, Instant::now()).unwrap()
    }

    fn rhs(a: &CsMat<f64>) -> Vec<f64> {
        let n = a.rows();
        let xt: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64 * 0.01).collect();
        let mut b = vec![0.0; n];
        Csr::new(a).unwrap().mul(&xt, &mut b).unwrap();
        b
    }

    /// CG against the textbook recurrence: converged, within 2 iterations, and a true
    /// residual no worse than the textbook's (to a factor 10) and below the tolerance.
    fn agrees_with_textbook(a: &CsMat<f64>, pc: &dyn Preconditioner, rtol: f64) -> usize {
        let b = rhs(a);
        let (it_ref, x_ref) = cg_textbook(a, &b, pc, rtol);
        let res = gear_cg(a, &b, pc, &opts(rtol), 2);
        assert_eq!(res.reason, ConvergedReason::ConvergedRtol);
        assert!(
            res.iterations.abs_diff(it_ref) <= 2,
            "{} vs textbook {}",
            res.iterations,
            it_ref
        );
        let (t_new, t_ref) = (true_residual(a, &b, &res.x), true_residual(a, &b, &x_ref));
        assert!(
            t_new <= 10.0 * t_ref.max(rtol),
            "true residual {t_new:e} vs {t_ref:e}"
        );
        assert!(t_new <= 2.0 * rtol, "true residual {t_new:e}");
        res.iterations
    }

    #[test]
    fn same_iterations_and_true_residual_as_textbook_cg_on_poisson() {
        let a = poisson2d(60);
        agrees_with_textbook(&a, &Identity, 1e-8);
        agrees_with_textbook(&a, &Jacobi::new(&a).unwrap(), 1e-8);
        agrees_with_textbook(&a, &Identity, 1e-12);
    }

    #[test]
    fn same_iterations_and_true_residual_on_an_ill_conditioned_matrix() {
        // κ ≈ 1e6 · 4e4: thousands of iterations, where the recursive residuals drift most.
        let a = ill_conditioned(200, 3.0);
        let it = agrees_with_textbook(&a, &Jacobi::new(&a).unwrap(), 1e-10);
        assert!(it > 50);
        let b = rhs(&a);
        let res = gear_cg(&a, &b, &Identity, &opts(1e-8), 2);
        assert_eq!(res.reason, ConvergedReason::ConvergedRtol);
        assert!(true_residual(&a, &b, &res.x) <= 1e-7);
    }

    #[test]
    fn an_spd_matrix_is_never_called_indefinite_however_ill_conditioned() {
        // The recurrence's p·Ap is a difference; at κ up to 1e16 its rounding reaches zero.
        // An SPD matrix must then run out of iterations or stagnate, never be "indefinite".
        // n 100 at 8 decades (κ ≈ 1e16·4e3) is a case the difference alone called indefinite.
        for (n, decades) in [(100, 8.0), (300, 6.0)] {
            let a = ill_conditioned(n, decades);
            let b = rhs(&a);
            let o = SolveOptions {
                max_iter: 20_000,
                ..opts(1e-14)
            };
            let res = gear_cg(&a, &b, &Identity, &o, 2);
            assert_ne!(
                res.reason,
                ConvergedReason::DivergedIndefinitePc,
                "n {n} decades {decades}: {} iterations",
                res.iterations
            );
        }
    }

    #[test]
    fn threaded_solve_is_bit_identical_for_any_worker_count() {
        let a = poisson2d(30);
        let b = rhs(&a);
        let o = opts(1e-10);
        let mut first: Option<SolveResult> = None;
        for workers in [1, 2, 3] {
            let res = gear_cg(&a, &b, &Identity, &o, workers);
            assert_eq!(res.reason, ConvergedReason::ConvergedRtol);
            match &first {
                None => first = Some(res),
                Some(f) => {
                    assert_eq!(f.iterations, res.iterations);
                    assert_eq!(f.x, res.x);
                    assert_eq!(f.residual_history, res.residual_history);
                }
            }
        }
    }
}
