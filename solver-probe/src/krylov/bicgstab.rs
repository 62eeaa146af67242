//! Right-preconditioned BiCGSTAB (van der Vorst) for general square systems.
//!
//! Breakdown (`r̂·r ≈ 0`, `r̂·v ≈ 0` relative to the norms, or `ω = 0`) stops with
//! `DIVERGED_BREAKDOWN`. Because preconditioning is on the right, the recursively updated
//! residual recorded in the history is the unpreconditioned `‖b − A x‖₂`.

use std::time::Instant;

use sprs::CsMat;

use super::{axpy, dot, norm2, setup, ConvergedReason, KrylovError, Monitor};
use super::{SolveOptions, SolveResult};
use crate::precond::Preconditioner;

/// Solve `A x = b` by BiCGSTAB with right preconditioning, from `x0` (zero when `None`).
pub fn bicgstab(
    a: &CsMat<f64>,
    b: &[f64],
    x0: Option<&[f64]>,
    pc: &dyn Preconditioner,
    opts: &SolveOptions,
) -> Result<SolveResult, KrylovError> {
    let start = Instant::now();
    let (m, mut x, mut r) = setup(a, b, x0, pc, opts)?;
    let n = m.n();
    let mut mon = Monitor::new(opts, norm2(&r), start);
    if let Some(reason) = mon.initial() {
        return Ok(mon.finish(reason, 0, x));
    }
    let r_hat = r.clone();
    let r_hat_norm = norm2(&r_hat);
    let mut p = vec![0.0; n];
    let mut v = vec![0.0; n];
    let mut p_hat = vec![0.0; n];
    let mut s_hat = vec![0.0; n];
    let mut t = vec![0.0; n];
    let (mut rho_old, mut alpha, mut omega) = (1.0, 1.0, 1.0);
    let eps = f64::EPSILON;
    let mut it = 0;
    loop {
        let rho = dot(&r_hat, &r);
        if !rho.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if rho.abs() <= eps * r_hat_norm * norm2(&r) {
            return Ok(mon.finish(ConvergedReason::DivergedBreakdown, it, x));
        }
        if it == 0 {
            p.copy_from_slice(&r);
        } else {
            let beta = (rho / rho_old) * (alpha / omega);
            for ((pi, ri), vi) in p.iter_mut().zip(&r).zip(&v) {
                *pi = ri + beta * (*pi - omega * vi);
            }
        }
        pc.apply(&p, &mut p_hat);
        m.mul_unchecked_len(&p_hat, &mut v);
        let rv = dot(&r_hat, &v);
        if !rv.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if rv.abs() <= eps * r_hat_norm * norm2(&v) {
            return Ok(mon.finish(ConvergedReason::DivergedBreakdown, it, x));
        }
        it += 1;
        alpha = rho / rv;
        // s overwrites r.
        axpy(-alpha, &v, &mut r);
        let snorm = norm2(&r);
        if snorm.is_finite() && mon.is_converged(snorm) {
            axpy(alpha, &p_hat, &mut x);
            let reason = mon
                .check(snorm, it)
                .unwrap_or(ConvergedReason::ConvergedRtol);
            return Ok(mon.finish(reason, it, x));
        }
        pc.apply(&r, &mut s_hat);
        m.mul_unchecked_len(&s_hat, &mut t);
        let tt = dot(&t, &t);
        let ts = dot(&t, &r);
        if !tt.is_finite() || !ts.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if tt == 0.0 || ts == 0.0 {
            axpy(alpha, &p_hat, &mut x);
            mon.check(snorm, it);
            return Ok(mon.finish(ConvergedReason::DivergedBreakdown, it, x));
        }
        omega = ts / tt;
        axpy(alpha, &p_hat, &mut x);
        axpy(omega, &s_hat, &mut x);
        axpy(-omega, &t, &mut r);
        rho_old = rho;
        if let Some(reason) = mon.check(norm2(&r), it) {
            return Ok(mon.finish(reason, it, x));
        }
    }
}
