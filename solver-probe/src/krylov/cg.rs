//! Preconditioned conjugate gradients for symmetric positive definite systems.
//!
//! Detects an indefinite operator or preconditioner (`p·Ap ≤ 0` or `r·z ≤ 0`) and stops with
//! `DIVERGED_INDEFINITE_PC`. The residual history is the recursively updated `‖r‖₂`
//! (unpreconditioned).

use std::time::Instant;

use sprs::CsMat;

use super::{axpy, dot, norm2, residual, setup, ConvergedReason, KrylovError, Monitor};
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
    let (m, mut x) = setup(a, b, x0, pc, opts)?;
    let n = m.n();
    let mut r = vec![0.0; n];
    residual(&m, b, &x, &mut r);
    let mut mon = Monitor::new(opts, norm2(&r), start);
    if let Some(reason) = mon.initial() {
        return Ok(mon.finish(reason, 0, x));
    }
    let mut z = vec![0.0; n];
    pc.apply(&r, &mut z);
    let mut rz = dot(&r, &z);
    if !rz.is_finite() {
        return Ok(mon.finish(ConvergedReason::DivergedNanorinf, 0, x));
    }
    if rz <= 0.0 {
        return Ok(mon.finish(ConvergedReason::DivergedIndefinitePc, 0, x));
    }
    let mut p = z.clone();
    let mut q = vec![0.0; n];
    let mut it = 0;
    loop {
        m.mul_unchecked_len(&p, &mut q);
        let pq = dot(&p, &q);
        if !pq.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if pq <= 0.0 {
            return Ok(mon.finish(ConvergedReason::DivergedIndefinitePc, it, x));
        }
        it += 1;
        let alpha = rz / pq;
        axpy(alpha, &p, &mut x);
        axpy(-alpha, &q, &mut r);
        if let Some(reason) = mon.check(norm2(&r), it) {
            return Ok(mon.finish(reason, it, x));
        }
        pc.apply(&r, &mut z);
        let rz_new = dot(&r, &z);
        if !rz_new.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if rz_new <= 0.0 {
            return Ok(mon.finish(ConvergedReason::DivergedIndefinitePc, it, x));
        }
        let beta = rz_new / rz;
        rz = rz_new;
        for (pi, zi) in p.iter_mut().zip(&z) {
            *pi = zi + beta * *pi;
        }
    }
}
