//! The simulated analog crossbar array: a signed weight matrix stored as conductances
//! (a differential pair per weight), with the three error sources that limit real memristive
//! arrays:
//! - programming noise: each cell lands within a few percent of its target when written;
//! - drift: conductance relaxes over time, each cell at its own rate around the device's
//!   drift (the `drift` ratio that `SimDevice` integrates from time and temperature);
//! - read noise: every analog matrix-vector product carries fresh noise on its outputs.
//!
//! Calibration measures the conductance error with known input vectors (the unit vectors,
//! which read the array column by column) and reprograms the array from its targets.

use rand::rngs::SmallRng;
use rand::Rng;

/// One standard normal sample (Box-Muller), so the simulator needs no distribution crate.
pub fn gaussian(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[derive(Debug, Clone)]
pub struct CrossbarArray {
    pub n: usize,
    /// The weights the array is meant to hold, row-major.
    target: Vec<f64>,
    /// The weights as written, programming noise included, before drift.
    programmed: Vec<f64>,
    /// Each cell's drift rate relative to the device's drift.
    susceptibility: Vec<f64>,
    /// Relative programming error (one sigma).
    pub program_sigma: f64,
    /// Output read noise (one sigma) relative to the largest possible output.
    pub read_sigma: f64,
}

impl CrossbarArray {
    /// An `n`×`n` array holding the 1D Dirichlet Laplacian tridiag(-1, 2, -1): the kind of
    /// operator the analog PDE solvers on these hosts are given, and one whose exact behaviour
    /// a known-answer probe can check.
    pub fn laplacian(n: usize, rng: &mut SmallRng) -> CrossbarArray {
        let mut target = vec![0.0; n * n];
        for i in 0..n {
            target[i * n + i] = 2.0;
            if i > 0 {
                target[i * n + i - 1] = -1.0;
            }
            if i + 1 < n {
                target[i * n + i + 1] = -1.0;
            }
        }
        let susceptibility = (0..n * n)
            .map(|_| (1.0 + 0.3 * gaussian(rng)).max(0.0))
            .collect();
        let mut a = CrossbarArray {
            n,
            programmed: target.clone(),
            target,
            susceptibility,
            // Write-verify programming and a 12-bit output converter: the precision arrays
            // built for PDE solving reach, and enough that the fresh array supports a
            // mixed-precision refinement of its own Laplacian (κ ≈ 440 at n = 32).
            program_sigma: 0.001,
            read_sigma: 0.0002,
        };
        a.program(rng);
        a
    }

    /// Writes every cell from its target, with programming noise.
    pub fn program(&mut self, rng: &mut SmallRng) {
        for (g, w) in self.programmed.iter_mut().zip(&self.target) {
            *g = w * (1.0 + self.program_sigma * gaussian(rng));
        }
    }

    /// The weight a cell holds now, after `drift`.
    fn effective(&self, k: usize, drift: f64) -> f64 {
        self.programmed[k] * (1.0 - drift * self.susceptibility[k]).max(0.0)
    }

    /// y = G·x with drift and read noise. `x.len()` must be `n` (the caller checks).
    pub fn matvec(&self, x: &[f64], drift: f64, rng: &mut SmallRng) -> Vec<f64> {
        let n = self.n;
        let scale = self.full_scale(x);
        (0..n)
            .map(|i| {
                let row: f64 = (0..n)
                    .map(|j| self.effective(i * n + j, drift) * x[j])
                    .sum();
                row + self.read_sigma * scale * gaussian(rng)
            })
            .collect()
    }

    /// The largest output magnitude the array can produce for this input: read noise is a
    /// fraction of the converter's full scale, not of each output.
    fn full_scale(&self, x: &[f64]) -> f64 {
        let n = self.n;
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (self.target[i * n + j] * x[j]).abs())
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    /// Relative conductance error ‖G − W‖_F / ‖W‖_F, measured as calibration does: apply each
    /// unit vector, read the column, compare with the target.
    pub fn measured_error(&self, drift: f64, rng: &mut SmallRng) -> f64 {
        let n = self.n;
        let (mut err, mut norm) = (0.0, 0.0);
        let mut e = vec![0.0; n];
        for j in 0..n {
            e[j] = 1.0;
            let col = self.matvec(&e, drift, rng);
            for (i, y) in col.iter().enumerate() {
                let w = self.target[i * n + j];
                err += (y - w).powi(2);
                norm += w * w;
            }
            e[j] = 0.0;
        }
        if norm > 0.0 {
            (err / norm).sqrt()
        } else {
            0.0
        }
    }

    /// The weights the array is meant to hold, row-major.
    pub fn target(&self) -> &[f64] {
        &self.target
    }

    /// The exact product with the target weights, for tests and known-answer checks.
    pub fn ideal_matvec(&self, x: &[f64]) -> Vec<f64> {
        let n = self.n;
        (0..n)
            .map(|i| (0..n).map(|j| self.target[i * n + j] * x[j]).sum())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rel_err(a: &[f64], b: &[f64]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let n: f64 = b.iter().map(|y| y * y).sum();
        (d / n).sqrt()
    }

    #[test]
    fn fresh_array_computes_within_its_noise_and_drift_degrades_it() {
        let mut rng = SmallRng::seed_from_u64(3);
        let a = CrossbarArray::laplacian(32, &mut rng);
        // A rough input: a smooth one would make the Laplacian's output small by cancellation,
        // and read noise (relative to full scale) large relative to it.
        let x: Vec<f64> = (0..32).map(|i| (i as f64 * 2.1).sin()).collect();
        let exact = a.ideal_matvec(&x);
        let fresh = rel_err(&a.matvec(&x, 0.0, &mut rng), &exact);
        assert!(fresh < 0.05, "fresh error {fresh}");
        let drifted = rel_err(&a.matvec(&x, 0.1, &mut rng), &exact);
        assert!(
            drifted > 2.0 * fresh,
            "drift raises the error: {fresh} -> {drifted}"
        );
        let e0 = a.measured_error(0.0, &mut rng);
        let e1 = a.measured_error(0.1, &mut rng);
        assert!(
            e0 < 0.03 && e1 > 0.05,
            "measured conductance error {e0} -> {e1}"
        );
    }

    #[test]
    fn gaussian_has_unit_variance() {
        let mut rng = SmallRng::seed_from_u64(9);
        let xs: Vec<f64> = (0..20000).map(|_| gaussian(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
