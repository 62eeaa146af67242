//! Preconditioned conjugate gradients for symmetric positive definite systems.
//!
//! Detects an indefinite operator or preconditioner (`p·Ap ≤ 0` or `r·z ≤ 0`) and stops with
//! `DIVERGED_INDEFINITE_PC`. The residual history is the recursively updated `‖r‖₂`
//! (unpreconditioned).
//!
//! Each iteration makes three passes over memory: the SpMV `q = A p` returning `p·q`, the
//! update `x += αp, r −= αq` returning `r·r`, and `p = z + βp`, each on the worker threads
//! ([`super::parallel`]). Without a preconditioner `z` is `r` itself (no copy, no second dot).

use std::time::Instant;

use sprs::CsMat;

use super::parallel::{update_p, update_xr};
use super::{cg_stagnation_window, dot, norm2, setup};
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
    let (m, mut x, mut r) = setup(a, b, x0, pc, opts)?;
    let n = m.n();
    let window = cg_stagnation_window(opts, n);
    let mut mon = Monitor::with_window(opts, norm2(&r), start, window);
    if let Some(reason) = mon.initial() {
        return Ok(mon.finish(reason, 0, x));
    }
    let identity = pc.is_identity();
    let mut z = if identity { Vec::new() } else { vec![0.0; n] };
    let mut rz = if identity {
        dot(&r, &r)
    } else {
        pc.apply(&r, &mut z);
        dot(&r, &z)
    };
    if !rz.is_finite() {
        return Ok(mon.finish(ConvergedReason::DivergedNanorinf, 0, x));
    }
    if rz <= 0.0 {
        return Ok(mon.finish(ConvergedReason::DivergedIndefinitePc, 0, x));
    }
    let mut p = if identity { r.clone() } else { z.clone() };
    let mut q = vec![0.0; n];
    let mut it = 0;
    loop {
        let pq = m.mul_dot_unchecked_len(&p, &mut q);
        if !pq.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if pq <= 0.0 {
            return Ok(mon.finish(ConvergedReason::DivergedIndefinitePc, it, x));
        }
        it += 1;
        let alpha = rz / pq;
        let rr = update_xr(alpha, &p, &q, &mut x, &mut r);
        mon.record_energy(alpha * rz);
        if let Some(reason) = mon.check(rr.sqrt(), it) {
            return Ok(mon.finish(reason, it, x));
        }
        let rz_new = if identity {
            rr
        } else {
            pc.apply(&r, &mut z);
            dot(&r, &z)
        };
        if !rz_new.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if rz_new <= 0.0 {
            return Ok(mon.finish(ConvergedReason::DivergedIndefinitePc, it, x));
        }
        let beta = rz_new / rz;
        rz = rz_new;
        update_p(beta, if identity { &r } else { &z }, &mut p);
    }
}
