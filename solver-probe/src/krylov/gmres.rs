//! Restarted GMRES(m) with modified Gram–Schmidt Arnoldi and Givens rotations.
//!
//! Preconditioning is on the **right** (`A M⁻¹ u = b`, `x = M⁻¹ u`), so the Givens residual
//! estimate recorded in the history is the unpreconditioned `‖b − A x‖₂` (in exact
//! arithmetic). At each restart the true residual is recomputed. An iteration is one Arnoldi
//! step; a zero diagonal in the triangular factor (A M⁻¹ singular on the Krylov space) stops
//! with `DIVERGED_BREAKDOWN`.

use std::time::Instant;

use sprs::CsMat;

use super::{axpy, dot, norm2, residual, setup, ConvergedReason, KrylovError, Monitor};
use super::{SolveOptions, SolveResult};
use crate::precond::Preconditioner;

/// Solve `A x = b` by right-preconditioned GMRES(`opts.restart`) from `x0` (zero when `None`).
pub fn gmres(
    a: &CsMat<f64>,
    b: &[f64],
    x0: Option<&[f64]>,
    pc: &dyn Preconditioner,
    opts: &SolveOptions,
) -> Result<SolveResult, KrylovError> {
    let start = Instant::now();
    if opts.restart == 0 {
        return Err(KrylovError::InvalidOption(
            "GMRES restart must be at least 1",
        ));
    }
    let (m, mut x, mut r) = setup(a, b, x0, pc, opts)?;
    let n = m.n();
    let mut beta = norm2(&r);
    let mut mon = Monitor::new(opts, beta, start);
    if let Some(reason) = mon.initial() {
        return Ok(mon.finish(reason, 0, x));
    }
    let restart = opts.restart.min(n.max(1));
    // Krylov basis V (restart+1 vectors), Hessenberg columns H (each restart+1 long).
    let mut v: Vec<Vec<f64>> = vec![vec![0.0; n]; restart + 1];
    let mut h: Vec<Vec<f64>> = vec![vec![0.0; restart + 1]; restart];
    let mut cs = vec![0.0; restart];
    let mut sn = vec![0.0; restart];
    let mut g = vec![0.0; restart + 1];
    let mut y = vec![0.0; restart];
    let mut w = vec![0.0; n];
    let mut z = vec![0.0; n];
    let mut it = 0;
    loop {
        for (vi, ri) in v[0].iter_mut().zip(&r) {
            *vi = ri / beta;
        }
        g.iter_mut().for_each(|gi| *gi = 0.0);
        g[0] = beta;
        let mut k = 0;
        let mut stop = None;
        for j in 0..restart {
            it += 1;
            pc.apply(&v[j], &mut z);
            m.mul_unchecked_len(&z, &mut w);
            let wnorm0 = norm2(&w);
            let col = &mut h[j];
            for (i, vi) in v.iter().enumerate().take(j + 1) {
                let hij = dot(&w, vi);
                col[i] = hij;
                axpy(-hij, vi, &mut w);
            }
            let hnext = norm2(&w);
            col[j + 1] = hnext;
            for i in 0..j {
                let t = cs[i] * col[i] + sn[i] * col[i + 1];
                col[i + 1] = -sn[i] * col[i] + cs[i] * col[i + 1];
                col[i] = t;
            }
            let (c, s) = givens(col[j], col[j + 1]);
            cs[j] = c;
            sn[j] = s;
            col[j] = c * col[j] + s * col[j + 1];
            col[j + 1] = 0.0;
            g[j + 1] = -s * g[j];
            g[j] *= c;
            k = j + 1;
            stop = mon.check(g[j + 1].abs(), it);
            if stop.is_some() {
                break;
            }
            if !hnext.is_finite() {
                stop = Some(ConvergedReason::DivergedNanorinf);
                break;
            }
            if hnext <= f64::EPSILON * wnorm0 {
                // Happy breakdown: the Krylov space is invariant; solve and restart.
                break;
            }
            for (vn, wi) in v[j + 1].iter_mut().zip(&w) {
                *vn = wi / hnext;
            }
        }
        if !back_substitute(&h, &g, &mut y[..k]) {
            let reason = match stop {
                Some(reason) if reason.is_converged() => reason,
                _ => ConvergedReason::DivergedBreakdown,
            };
            return Ok(mon.finish(reason, it, x));
        }
        // x += M⁻¹ (V y).
        w.iter_mut().for_each(|wi| *wi = 0.0);
        for (vi, &yi) in v.iter().zip(&y[..k]) {
            axpy(yi, vi, &mut w);
        }
        pc.apply(&w, &mut z);
        axpy(1.0, &z, &mut x);
        if let Some(reason) = stop {
            return Ok(mon.finish(reason, it, x));
        }
        residual(&m, b, &x, &mut r);
        beta = norm2(&r);
        if !beta.is_finite() {
            return Ok(mon.finish(ConvergedReason::DivergedNanorinf, it, x));
        }
        if mon.is_converged(beta) {
            let reason = mon.converged_reason(beta);
            if let Some(last) = mon.history.last_mut() {
                *last = beta;
            }
            return Ok(mon.finish(reason, it, x));
        }
    }
}

/// Solves `R y = g[..k]` for the k = `y.len()` leading columns of the rotated Hessenberg
/// matrix (`h[j]` is column j, upper triangular after the Givens rotations). False when R has
/// a zero diagonal (A M⁻¹ singular on the Krylov space); `y` is then incomplete.
fn back_substitute(h: &[Vec<f64>], g: &[f64], y: &mut [f64]) -> bool {
    let k = y.len();
    for i in (0..k).rev() {
        let mut acc = g[i];
        for jj in i + 1..k {
            acc -= h[jj][i] * y[jj];
        }
        let d = h[i][i];
        if d == 0.0 {
            return false;
        }
        y[i] = acc / d;
    }
    true
}

/// Rotation `(c, s)` with `[c s; −s c] [a; b] = [ρ; 0]`.
fn givens(a: f64, b: f64) -> (f64, f64) {
    if b == 0.0 {
        (1.0, 0.0)
    } else if b.abs() > a.abs() {
        let t = a / b;
        let s = 1.0 / (1.0 + t * t).sqrt();
        (s * t, s)
    } else {
        let t = b / a;
        let c = 1.0 / (1.0 + t * t).sqrt();
        (c, c * t)
    }
}
