//! Analog precision: what a crossbar with b-bit conductances (and read noise) can solve.
//!
//! - [`analog_bound`]: worst-case relative error κ·2^-b / (1 − κ·2^-b), valid only when
//!   κ·2^-b < 1;
//! - [`monte_carlo_typical`]: median relative error of solves with the matrix perturbed
//!   entrywise by relative uniform quantization noise in [−2^-b, 2^-b] plus Gaussian read
//!   noise (relative standard deviation `read_noise`), solved with a dense LU;
//! - [`iterative_refinement`]: mixed-precision refinement with the residual in f64 on the host
//!   and the correction solved with the perturbed matrix; converges when κ·2^-b is well
//!   below 1.

use faer::Mat;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sprs::CsMat;

use super::dense::DenseLu;
use super::{sparse, CondError, DENSE_LU_MAX_N};

/// Normwise backward error at which [`iterative_refinement`] counts as converged.
pub const REFINEMENT_TOL: f64 = 1e-12;

/// Worst-case relative solution error κ·2^-b / (1 − κ·2^-b) for b-bit relative precision;
/// `None` (the bound is invalid) when κ·2^-b ≥ 1 or the inputs are not finite.
pub fn analog_bound(kappa: f64, bits: u32) -> Option<f64> {
    if !kappa.is_finite() || kappa < 0.0 {
        return None;
    }
    let e = kappa * 2f64.powi(-(bits.min(1100) as i32));
    (e < 1.0).then(|| e / (1.0 - e))
}

/// Result of [`monte_carlo_typical`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonteCarlo {
    /// Conductance bits.
    pub bits: u32,
    /// Relative Gaussian read noise (standard deviation).
    pub read_noise: f64,
    /// Trials run.
    pub trials: usize,
    /// Median of ‖x̃ − x‖₂/‖x‖₂ (∞ counts for singular perturbed matrices).
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest error.
    pub max: f64,
    /// Trials whose perturbed matrix was singular.
    pub singular_trials: usize,
}

fn check_params(n: usize, bits: u32, read_noise: f64) -> Result<(), CondError> {
    if n > DENSE_LU_MAX_N {
        return Err(CondError::TooLarge {
            method: "analog simulation with dense LU",
            n,
            limit: DENSE_LU_MAX_N,
        });
    }
    if bits == 0 || bits > 64 {
        return Err(CondError::InvalidParameter(format!(
            "bits must be in 1..=64, got {bits}"
        )));
    }
    if !(read_noise.is_finite() && read_noise >= 0.0) {
        return Err(CondError::InvalidParameter(format!(
            "read noise must be finite and ≥ 0, got {read_noise}"
        )));
    }
    Ok(())
}

/// A standard normal sample (Box–Muller).
fn gauss(rng: &mut SmallRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A sample of U[−1, 1].
fn uniform_signed(rng: &mut SmallRng) -> f64 {
    rng.random::<f64>() * 2.0 - 1.0
}

/// Multiplies each entry of `m` (a dense copy of `a`) at a position `a` stores by `factor()`,
/// row by row, so a seeded generator draws the same noise for the same entry every time.
fn scale_stored(m: &mut Mat<f64>, a: &CsMat<f64>, mut factor: impl FnMut() -> f64) {
    for (i, row) in a.outer_iterator().enumerate() {
        for (j, _) in row.iter() {
            m[(i, j)] *= factor();
        }
    }
}

/// Dense copy of A with each stored entry multiplied by (1 + δ + g), δ ~ U[−2^-b, 2^-b],
/// g ~ N(0, read_noise²).
fn perturbed(a: &CsMat<f64>, bits: u32, read_noise: f64, rng: &mut SmallRng) -> DenseLu {
    let q = 2f64.powi(-(bits as i32));
    let mut m = sparse::to_dense(a);
    scale_stored(&mut m, a, || {
        let delta = uniform_signed(rng) * q;
        let noise = if read_noise > 0.0 {
            read_noise * gauss(rng)
        } else {
            0.0
        };
        1.0 + delta + noise
    });
    DenseLu::new(&m)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Median (and spread) of the relative error of solves with perturbed copies of A, against
/// the f64 solve, for a random right-hand side b = A x_true.
pub fn monte_carlo_typical(
    a: &CsMat<f64>,
    bits: u32,
    read_noise: f64,
    trials: usize,
    seed: u64,
) -> Result<MonteCarlo, CondError> {
    let a = sparse::validate(a)?;
    let n = a.rows();
    check_params(n, bits, read_noise)?;
    if trials == 0 {
        return Err(CondError::InvalidParameter("trials must be ≥ 1".into()));
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    let x_true: Vec<f64> = (0..n).map(|_| uniform_signed(&mut rng)).collect();
    let mut b = vec![0.0; n];
    sparse::matvec(&a, &x_true, &mut b);
    let x_ref = DenseLu::new(&sparse::to_dense(&a)).solve(&b)?;
    let nref = sparse::norm2(&x_ref);
    if nref == 0.0 {
        return Err(CondError::Numerical("reference solution is zero".into()));
    }
    let mut errors = Vec::with_capacity(trials);
    let mut singular_trials = 0;
    for _ in 0..trials {
        let lu = perturbed(&a, bits, read_noise, &mut rng);
        match lu.solve(&b) {
            Ok(x) => errors.push(sparse::distance2(&x, &x_ref) / nref),
            Err(_) => {
                singular_trials += 1;
                errors.push(f64::INFINITY);
            }
        }
    }
    errors.sort_by(f64::total_cmp);
    Ok(MonteCarlo {
        bits,
        read_noise,
        trials,
        median: percentile(&errors, 0.5),
        p90: percentile(&errors, 0.9),
        max: errors[errors.len() - 1],
        singular_trials,
    })
}

/// Result of [`iterative_refinement`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refinement {
    /// The normwise backward error reached [`REFINEMENT_TOL`].
    pub converged: bool,
    /// Corrections applied (0 when the first analog solve was already good enough).
    pub steps: usize,
    /// Normwise backward error ‖b − A x‖∞ / (‖A‖∞‖x‖∞ + ‖b‖∞) after each step, starting with
    /// the first analog solve.
    pub history: Vec<f64>,
    /// Final relative error ‖x − x_f64‖₂/‖x_f64‖₂ against the host's f64 solve.
    pub relative_error: Option<f64>,
    /// Geometric mean reduction of the backward error per step (< 1: contracting).
    pub rate: Option<f64>,
    /// Stopped because the error grew or became non-finite.
    pub diverged: bool,
}

/// Mixed-precision iterative refinement: x₀ = Ã⁻¹b, then r = b − A x in f64 on the host and
/// x += Ã⁻¹ r, where Ã is A with b-bit quantization noise (programmed once) and fresh read
/// noise on every solve. Up to `max_steps` corrections; `seed` fixes the noise.
pub fn iterative_refinement(
    a: &CsMat<f64>,
    b: &[f64],
    bits: u32,
    read_noise: f64,
    max_steps: usize,
    seed: u64,
) -> Result<Refinement, CondError> {
    let a = sparse::validate(a)?;
    let n = a.rows();
    sparse::check_len(n, b.len())?;
    check_params(n, bits, read_noise)?;
    if let Some(v) = b.iter().find(|v| !v.is_finite()) {
        return Err(CondError::InvalidParameter(format!(
            "right-hand side has a non-finite entry {v}"
        )));
    }
    let mut rng = SmallRng::seed_from_u64(seed);
    // Programmed conductances: quantization only; read noise is drawn per solve below.
    let q = 2f64.powi(-(bits as i32));
    let mut programmed = sparse::to_dense(&a);
    scale_stored(&mut programmed, &a, || 1.0 + uniform_signed(&mut rng) * q);
    let fixed = DenseLu::new(&programmed);
    let analog_solve = |r: &[f64], rng: &mut SmallRng| -> Result<Vec<f64>, CondError> {
        if read_noise > 0.0 {
            let mut m = programmed.clone();
            scale_stored(&mut m, &a, || 1.0 + read_noise * gauss(rng));
            DenseLu::new(&m).solve(r)
        } else {
            fixed.solve(r)
        }
    };
    let norm_inf_a = a
        .outer_iterator()
        .map(|row| row.iter().map(|(_, v)| v.abs()).sum::<f64>())
        .fold(0.0, f64::max);
    let inf = |v: &[f64]| v.iter().fold(0.0_f64, |m, x| m.max(x.abs()));
    let nb = inf(b);
    let mut history = Vec::new();
    let mut x = match analog_solve(b, &mut rng) {
        Ok(x) => x,
        Err(_) => {
            return Ok(Refinement {
                converged: false,
                steps: 0,
                history,
                relative_error: None,
                rate: None,
                diverged: true,
            })
        }
    };
    let mut r = vec![0.0; n];
    let mut converged = false;
    let mut diverged = false;
    let mut steps = 0;
    loop {
        let mut ax = vec![0.0; n];
        sparse::matvec(&a, &x, &mut ax);
        r.iter_mut()
            .zip(b.iter().zip(&ax))
            .for_each(|(ri, (bi, axi))| *ri = bi - axi);
        let denom = norm_inf_a * inf(&x) + nb;
        let eta = if denom > 0.0 { inf(&r) / denom } else { 0.0 };
        history.push(eta);
        if eta <= REFINEMENT_TOL {
            converged = true;
            break;
        }
        if !eta.is_finite() || eta > 1e3 * history[0].max(f64::MIN_POSITIVE) || eta > 1.0 {
            diverged = true;
            break;
        }
        if steps >= max_steps {
            break;
        }
        match analog_solve(&r, &mut rng) {
            Ok(d) => x.iter_mut().zip(&d).for_each(|(xi, di)| *xi += di),
            Err(_) => {
                diverged = true;
                break;
            }
        }
        steps += 1;
    }
    let relative_error = DenseLu::new(&sparse::to_dense(&a))
        .solve(b)
        .ok()
        .and_then(|xr| sparse::relative_error(&x, &xr));
    let rate = match (history.first(), history.last()) {
        (Some(&f), Some(&l)) if history.len() > 1 && f > 0.0 && l > 0.0 => {
            Some((l / f).powf(1.0 / (history.len() - 1) as f64))
        }
        _ => None,
    };
    Ok(Refinement {
        converged,
        steps,
        history,
        relative_error,
        rate,
        diverged,
    })
}
