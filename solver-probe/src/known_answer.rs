//! Known-answer refinement: does an analog array still compute the operator it was programmed
//! with, as accurately as a solver that relies on it needs?
//!
//! The host knows the matrix A the array holds (it wrote it), so it can pose a system A x = b
//! whose f64 solution it computes itself, and watch a refinement in which every operator
//! product is the device's. Each step:
//!
//! 1. r = b − A x, in f64 on the host (the residual never touches the device);
//! 2. z = M r, the host's correction (M is the f64 LU inverse of A);
//! 3. y = Ã z, **on the device**;
//! 4. x += z + M (r − y): the correction, defect-corrected by what the device made of it.
//!
//! With Ã = A + E the error obeys e_{k+1} = −A⁻¹E e_k: the run is a power iteration on the
//! device's deviation as the problem sees it. Its contraction rate is ρ(A⁻¹E) ≈ ‖A⁻¹E‖, the
//! rate at which a mixed-precision refinement that solves with the array would converge
//! (Ã⁻¹ ≈ A⁻¹ to first order), bounded by κ·δ for a relative device error δ. An exact device
//! converges in one step to f64 accuracy; κ·δ < 1 converges at about κ·δ per step; κ·δ > 1
//! diverges. Read noise proportional to the input's full scale shrinks with the correction, so
//! it slows the run but does not floor it.
//!
//! The run is a stepper ([`KnownAnswerRun`]: `next_input` → device → `accept`), so a caller
//! whose device is asynchronous (the agent's supervisor) drives it between awaits; [`refine`]
//! drives it with a synchronous closure. Pure computation: no I/O, no clock.

use crate::cond::DenseLu;
use serde::Serialize;

/// Largest system accepted: the host factors A densely (O(n³) once) and every step costs
/// O(n²) on the calling thread, which for the agent is a device's supervisor task.
pub const MAX_N: usize = 1024;

/// Errors of the problem set-up or of the device during a run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KnownAnswerError {
    #[error("known-answer problem: {0}")]
    InvalidProblem(String),
    #[error("known-answer run: device product {step}: {message}")]
    Device { step: usize, message: String },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Reached the target error within the step budget: the array is as precise as the
    /// problem needs.
    Converged,
    /// The error fell (rate < 1) but not to the target within the budget.
    ConvergedSlowly,
    /// The error did not fall, grew, or the device returned non-finite values.
    DivergedOrStalled,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Converged => "converged",
            Verdict::ConvergedSlowly => "converged-slowly",
            Verdict::DivergedOrStalled => "diverged-or-stalled",
        }
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownAnswerOptions {
    /// Device products at most (one per step).
    pub max_steps: usize,
    /// Relative error against the host's f64 solution at which the run has converged.
    pub target_error: f64,
}

impl Default for KnownAnswerOptions {
    fn default() -> Self {
        KnownAnswerOptions {
            max_steps: 10,
            target_error: 1e-6,
        }
    }
}

impl KnownAnswerOptions {
    fn check(&self) -> Result<(), KnownAnswerError> {
        if self.max_steps == 0 || self.max_steps > 1000 {
            return Err(KnownAnswerError::InvalidProblem(format!(
                "max_steps must be in 1..=1000, got {}",
                self.max_steps
            )));
        }
        // Below ~1e-13 the f64 solution itself is not that accurate for a moderately
        // conditioned A, and a healthy device would be reported as stalling.
        if !(1e-13..=0.5).contains(&self.target_error) {
            return Err(KnownAnswerError::InvalidProblem(format!(
                "target_error must be in [1e-13, 0.5], got {}",
                self.target_error
            )));
        }
        Ok(())
    }
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnownAnswer {
    pub verdict: Verdict,
    /// ‖x − x_f64‖₂ / ‖x_f64‖₂ when the run ended.
    pub relative_error: f64,
    /// The same error before the first step (1: the run starts from x = 0) and after each.
    pub history: Vec<f64>,
    /// Per-step contraction: the geometric mean of e_{k+1}/e_k after the first step (the first
    /// step only removes the zero starting guess); e_1/e_0 when the run took one step.
    pub rate: f64,
    /// Median over the steps of the device's product error ‖Ãz − Az‖ / ‖|A||z|‖: about the
    /// array's relative conductance error δ (2^-bits for a b-bit array), whatever the input.
    pub matvec_error: f64,
    /// Device products used.
    pub steps: usize,
}

/// A system A x = b with its f64 solution, ready to be checked against a device holding A.
pub struct KnownAnswerProblem {
    n: usize,
    /// A, row-major.
    a: Vec<f64>,
    lu: DenseLu,
    b: Vec<f64>,
    x_host: Vec<f64>,
}

impl std::fmt::Debug for KnownAnswerProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnownAnswerProblem")
            .field("n", &self.n)
            .finish_non_exhaustive()
    }
}

/// A rough solution vector (entries cos(2.1·(i+1))): its product with a Laplacian-like
/// operator is not small by cancellation, so read noise relative to the converter's full scale
/// does not swamp it.
pub fn default_solution(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i + 1) as f64 * 2.1).cos()).collect()
}

impl KnownAnswerProblem {
    /// `weights` is A row-major (n×n); b = A·`solution`, and the reference is the host's f64
    /// solve of that b (not `solution` itself, which rounding and κ move slightly).
    pub fn new(
        n: usize,
        weights: &[f64],
        solution: &[f64],
    ) -> Result<KnownAnswerProblem, KnownAnswerError> {
        let bad = |m: String| Err(KnownAnswerError::InvalidProblem(m));
        if n == 0 || n > MAX_N {
            return bad(format!("size must be in 1..={MAX_N}, got {n}"));
        }
        if weights.len() != n * n {
            return bad(format!(
                "matrix has {} entries, expected {n}×{n} = {}",
                weights.len(),
                n * n
            ));
        }
        if solution.len() != n {
            return bad(format!(
                "solution has {} entries, expected {n}",
                solution.len()
            ));
        }
        if let Some(k) = weights.iter().position(|v| !v.is_finite()) {
            return bad(format!("matrix entry ({}, {}) is not finite", k / n, k % n));
        }
        if let Some(k) = solution.iter().position(|v| !v.is_finite()) {
            return bad(format!("solution entry {k} is not finite"));
        }
        let a = weights.to_vec();
        let lu = DenseLu::from_row_major(n, &a);
        let b = mul(n, &a, solution);
        let Some(x_host) = lu.solve(&b).ok() else {
            return bad("matrix is singular: no f64 solution to compare against".into());
        };
        if norm(&x_host) == 0.0 || !x_host.iter().all(|v| v.is_finite()) {
            return bad("the f64 solution is zero or not finite".into());
        }
        Ok(KnownAnswerProblem {
            n,
            a,
            lu,
            b,
            x_host,
        })
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// The host's f64 solution the run is compared against.
    pub fn host_solution(&self) -> &[f64] {
        &self.x_host
    }

    /// Starts a run from x = 0.
    pub fn start(
        &self,
        options: KnownAnswerOptions,
    ) -> Result<KnownAnswerRun<'_>, KnownAnswerError> {
        options.check()?;
        Ok(KnownAnswerRun {
            problem: self,
            options,
            x: vec![0.0; self.n],
            pending: None,
            history: vec![1.0],
            matvec_errors: Vec::new(),
            ended: None,
        })
    }

    fn error_of(&self, x: &[f64]) -> f64 {
        norm(&sub(x, &self.x_host)) / norm(&self.x_host)
    }
}

/// One run in progress: ask [`next_input`](Self::next_input) for the vector the device must
/// multiply, hand the device's product to [`accept`](Self::accept), until `next_input` says
/// the run is over; then [`finish`](Self::finish).
#[derive(Debug)]
pub struct KnownAnswerRun<'a> {
    problem: &'a KnownAnswerProblem,
    options: KnownAnswerOptions,
    x: Vec<f64>,
    /// (r, z) of the step whose product is awaited.
    pending: Option<(Vec<f64>, Vec<f64>)>,
    history: Vec<f64>,
    matvec_errors: Vec<f64>,
    ended: Option<Verdict>,
}

impl KnownAnswerRun<'_> {
    /// The vector the device must multiply next, or `None` when the run has ended.
    pub fn next_input(&mut self) -> Option<Vec<f64>> {
        if self.ended.is_some() {
            return None;
        }
        if self.pending.is_none() {
            let p = self.problem;
            let r = sub(&p.b, &mul(p.n, &p.a, &self.x));
            let z = p.lu.solve(&r).ok()?;
            self.pending = Some((r, z));
        }
        self.pending.as_ref().map(|(_, z)| z.clone())
    }

    /// The device's product of the vector `next_input` returned. A product of the wrong length
    /// is an error (the device is not the array this problem describes); a non-finite one ends
    /// the run as diverged.
    pub fn accept(&mut self, product: &[f64]) -> Result<(), KnownAnswerError> {
        let step = self.history.len();
        let Some((r, z)) = self.pending.take() else {
            return Err(KnownAnswerError::Device {
                step,
                message: "a product was handed in without a pending input".into(),
            });
        };
        let p = self.problem;
        if product.len() != p.n {
            return Err(KnownAnswerError::Device {
                step,
                message: format!("product has {} entries, expected {}", product.len(), p.n),
            });
        }
        if product.iter().any(|v| !v.is_finite()) {
            self.history.push(f64::INFINITY);
            self.ended = Some(Verdict::DivergedOrStalled);
            return Ok(());
        }
        let y = product;
        let exact = mul(p.n, &p.a, &z);
        // Scaled by |A||z|, not |Az|: a correction is smooth, its product small by
        // cancellation, and the ratio would then measure A's conditioning, not the device.
        let en = norm(&mul_abs(p.n, &p.a, &z));
        if en > 0.0 {
            self.matvec_errors.push(norm(&sub(y, &exact)) / en);
        }
        let Some(fix) = p.lu.solve(&sub(&r, y)).ok() else {
            self.ended = Some(Verdict::DivergedOrStalled);
            return Ok(());
        };
        for ((x, z), f) in self.x.iter_mut().zip(&z).zip(&fix) {
            *x += z + f;
        }
        let e = p.error_of(&self.x);
        self.history.push(e);
        let steps = self.history.len() - 1;
        self.ended = if !e.is_finite() || e > 10.0 * self.history[0] {
            Some(Verdict::DivergedOrStalled)
        } else if e <= self.options.target_error {
            Some(Verdict::Converged)
        } else if steps >= self.options.max_steps {
            Some(if self.rate() < 1.0 {
                Verdict::ConvergedSlowly
            } else {
                Verdict::DivergedOrStalled
            })
        } else {
            None
        };
        Ok(())
    }

    fn rate(&self) -> f64 {
        let h = &self.history;
        match h.len() {
            0 | 1 => f64::NAN,
            2 => h[1] / h[0],
            k => {
                let (first, last) = (h[1], h[k - 1]);
                if first > 0.0 && last.is_finite() {
                    (last / first).powf(1.0 / (k - 2) as f64)
                } else if last == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            }
        }
    }

    /// The result; a run stopped before it ended (a deadline) is judged on the steps it took.
    pub fn finish(self) -> KnownAnswer {
        let rate = self.rate();
        let verdict = self.ended.unwrap_or(if rate < 1.0 {
            Verdict::ConvergedSlowly
        } else {
            Verdict::DivergedOrStalled
        });
        let mut mv = self.matvec_errors.clone();
        mv.sort_by(f64::total_cmp);
        let matvec_error = if mv.is_empty() {
            f64::NAN
        } else {
            mv[mv.len() / 2]
        };
        KnownAnswer {
            verdict,
            relative_error: *self.history.last().unwrap_or(&1.0),
            steps: self.history.len() - 1,
            rate,
            matvec_error,
            history: self.history,
        }
    }
}

/// y = A x for A row-major n×n.
fn mul(n: usize, a: &[f64], x: &[f64]) -> Vec<f64> {
    a.chunks_exact(n)
        .map(|row| row.iter().zip(x).map(|(a, x)| a * x).sum())
        .collect()
}

/// y = |A| |x|.
fn mul_abs(n: usize, a: &[f64], x: &[f64]) -> Vec<f64> {
    a.chunks_exact(n)
        .map(|row| row.iter().zip(x).map(|(a, x)| (a * x).abs()).sum())
        .collect()
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(a, b)| a - b).collect()
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Runs the refinement to its end with a synchronous device.
pub fn refine<E: std::fmt::Display>(
    problem: &KnownAnswerProblem,
    options: KnownAnswerOptions,
    mut matvec: impl FnMut(&[f64]) -> Result<Vec<f64>, E>,
) -> Result<KnownAnswer, KnownAnswerError> {
    let mut run = problem.start(options)?;
    while let Some(z) = run.next_input() {
        let y = matvec(&z).map_err(|e| KnownAnswerError::Device {
            step: run.history.len(),
            message: e.to_string(),
        })?;
        run.accept(&y)?;
    }
    Ok(run.finish())
}

/// The 1D Dirichlet Laplacian tridiag(−1, 2, −1), row-major: the operator analog PDE arrays
/// are commonly programmed with, and the simulated crossbar's.
pub fn laplacian_1d(n: usize) -> Vec<f64> {
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        a[i * n + i] = 2.0;
        if i > 0 {
            a[i * n + i - 1] = -1.0;
        }
        if i + 1 < n {
            a[i * n + i + 1] = -1.0;
        }
    }
    a
}
