//! `solver-probe analyze FILE [--rhs FILE] [--bits B] [--json]`: the probe from the command
//! line. Exit status 0 when the analysis ran (findings or not), 2 when the input could not be
//! read (with one line naming the file and what is wrong).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use solver_probe::report::{analyze_file, ProbeOptions, Report};

#[derive(Parser)]
#[command(
    name = "solver-probe",
    version,
    about = "Conditioning, convergence and reachable accuracy of a linear system"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The watched solver's own settings: convergence is judged at these numbers.
#[derive(clap::Args)]
struct SolverArgs {
    /// The solver's relative tolerance (default 1e-8).
    #[arg(long)]
    rtol: Option<f64>,
    /// The solver's iteration limit (default 10000).
    #[arg(long)]
    max_iter: Option<usize>,
    /// The solver's GMRES restart length (default 30).
    #[arg(long)]
    restart: Option<usize>,
    /// The solver's method: cg, gmres or bicgstab (default gmres when --preconditioner is given).
    #[arg(long)]
    method: Option<String>,
    /// The solver's preconditioner: none, jacobi, ilu or ic.
    #[arg(long)]
    preconditioner: Option<String>,
}

impl SolverArgs {
    /// Applies the settings to `opts`; the error names the flag.
    fn apply(&self, opts: &mut ProbeOptions) -> Result<(), String> {
        if let Some(r) = self.rtol {
            if !(r.is_finite() && r > 0.0 && r < 1.0) {
                return Err(format!("--rtol: expected a number in (0, 1), found {r}"));
            }
            opts.solve.rtol = r;
        }
        if let Some(m) = self.max_iter {
            if m == 0 {
                return Err("--max-iter: expected at least 1".into());
            }
            opts.solve.max_iter = m;
        }
        if let Some(m) = self.restart {
            if m == 0 {
                return Err("--restart: expected at least 1".into());
            }
            opts.solve.restart = m;
        }
        opts.solver = solver_probe::report::SolverSetting::from_names(
            self.method.as_deref(),
            self.preconditioner.as_deref(),
        )
        .map_err(|e| format!("--{e}"))?;
        Ok(())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Analyze a matrix (.npy, SciPy .npz, Matrix Market .mtx).
    Analyze {
        file: PathBuf,
        /// Right-hand side (.npy); default b = A·1.
        #[arg(long)]
        rhs: Option<PathBuf>,
        /// Conductance bits of the analog array it is meant for.
        #[arg(long)]
        bits: Option<u32>,
        /// Relative read noise of that array.
        #[arg(long, default_value_t = 0.0)]
        read_noise: f64,
        /// κ at or above this is ILL_CONDITIONED.
        #[arg(long, default_value_t = 1e12)]
        threshold: f64,
        /// Print the report as JSON (the stable schema).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        solver: SolverArgs,
    },
    /// Time the kernels on a matrix (SpMV, CG to rtol 1e-8, optionally the condition estimate)
    /// and print JSON. For the benchmark script (solver-probe/bench/poisson.sh), not for tests.
    Bench {
        file: PathBuf,
        /// SpMV repetitions (the median is reported).
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// Also time the condition estimate.
        #[arg(long)]
        cond: bool,
    },
}

/// Peak resident set size of this process so far (`VmHWM`), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bench(
    file: &std::path::Path,
    repeat: usize,
    with_cond: bool,
) -> Result<serde_json::Value, String> {
    use solver_probe::krylov::{cg, Csr, SolveOptions};
    use solver_probe::precond::Identity;
    use std::time::Instant;
    let t = Instant::now();
    let a = solver_probe::read::read_matrix(file, &solver_probe::read::Budget::default())
        .map_err(|e| e.to_string())?;
    let read_s = t.elapsed().as_secs_f64();
    let n = a.rows();
    let x: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64 * 0.01).collect();
    let mut y = vec![0.0; n];
    // The solvers' own product: the u32 pattern copy and row chunks are made once per solve.
    let m = Csr::for_products(&a).map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        m.mul(&x, &mut y).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let spmv_s = times[times.len() / 2];
    drop(m);
    let opts = SolveOptions {
        rtol: 1e-8,
        max_iter: 20_000,
        stagnation_window: 0,
        ..SolveOptions::default()
    };
    let t = Instant::now();
    let r = cg(&a, &y, None, &Identity, &opts).map_err(|e| e.to_string())?;
    let cg_s = t.elapsed().as_secs_f64();
    // The true relative residual ‖y − A x‖/‖y‖, as the bench computes SciPy's: what the
    // iteration's own residual recurrence may drift from.
    let mut ax = vec![0.0; n];
    Csr::new(&a)
        .map_err(|e| e.to_string())?
        .mul(&r.x, &mut ax)
        .map_err(|e| e.to_string())?;
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|e| e * e).sum::<f64>().sqrt();
    let true_residual =
        norm(&mut y.iter().zip(&ax).map(|(b, v)| b - v)) / norm(&mut y.iter().copied());
    let rss_solve = peak_rss_bytes();
    let cond = if with_cond {
        let t = Instant::now();
        let e = solver_probe::cond::estimate(&a).map_err(|e| e.to_string())?;
        let full_s = t.elapsed().as_secs_f64();
        let rss_full = peak_rss_bytes();
        let t = Instant::now();
        let e1 = solver_probe::cond::one_norm_estimate(&a).map_err(|e| e.to_string())?;
        let k1_s = t.elapsed().as_secs_f64();
        // Both from one factorization, as the agent's probe asks for them.
        let t = Instant::now();
        let (_, both_one) =
            solver_probe::cond::estimate_both(&a, &solver_probe::cond::EstimateOptions::default())
                .map_err(|e| e.to_string())?;
        let both_s = t.elapsed().as_secs_f64();
        let both_kappa1 = both_one.map(|k| k.kappa).map_err(|e| e.to_string())?;
        Some(serde_json::json!({
            "kappa": e.kappa, "norm": format!("{:?}", e.norm),
            "method": format!("{:?}", e.method), "confidence": e.confidence,
            "note": e.note, "seconds": full_s, "peak_rss_bytes": rss_full,
            "kappa1": e1.kappa, "kappa1_note": e1.note, "kappa1_seconds": k1_s,
            "both_seconds": both_s, "both_kappa1": both_kappa1,
        }))
    } else {
        None
    };
    Ok(serde_json::json!({
        "n": n, "nnz": a.nnz(), "read_seconds": read_s,
        "spmv_seconds_median": spmv_s,
        "cg_reason": format!("{:?}", r.reason), "cg_iterations": r.iterations,
        "cg_seconds": cg_s, "cg_seconds_per_iteration": cg_s / r.iterations.max(1) as f64,
        "cg_true_residual": true_residual,
        "peak_rss_bytes_solve": rss_solve,
        "workers": solver_probe::krylov::Workers::get().count(),
        "cond": cond,
        "peak_rss_bytes": peak_rss_bytes(),
    }))
}

/// "yes (sparse Cholesky)", "no (dense Cholesky)", or "undecided" without a factorization.
fn spd(r: &Report) -> String {
    match r
        .conditioning
        .as_ref()
        .and_then(|e| e.positive_definite.as_ref())
    {
        Some(d) => format!("{} ({})", if d.spd { "yes" } else { "no" }, d.by),
        None => "undecided (no factorization)".to_string(),
    }
}

fn text(r: &Report) -> String {
    let s = &r.structure;
    let mut out = format!("{}\n", r.file);
    out.push_str(&format!(
        "  n {}  nnz {}  bandwidth {}\n",
        s.n, s.nnz, s.bandwidth
    ));
    out.push_str(&format!(
        "  symmetric {}  SPD {}  diagonally dominant rows {:.0} % (weak {:.0} %)\n",
        s.symmetric,
        spd(r),
        s.strictly_dominant_fraction * 100.0,
        s.weakly_dominant_fraction * 100.0
    ));
    match (&r.conditioning, &r.conditioning_error) {
        (Some(e), _) => out.push_str(&format!(
            "  condition {}  ({:?} norm, {:?}, {:?})\n",
            e.kappa
                .map_or("numerically singular".to_string(), |k| format!("{k:.4e}")),
            e.norm,
            e.method,
            e.confidence
        )),
        (None, Some(err)) => out.push_str(&format!("  condition: not estimated: {err}\n")),
        _ => {}
    }
    if let Some(x) = r.reachable_relative_error {
        out.push_str(&format!("  reachable relative error in f64 ≈ {x:.2e}\n"));
    }
    if let Some(c) = &r.convergence {
        for run in &c.runs {
            out.push_str(&format!(
                "  {:?}+{:<6} {:<22} {:>6} it  rel.res {:.2e}  {:.3} s\n",
                run.method,
                run.preconditioner,
                run.reason.map_or("-".to_string(), |x| format!("{x:?}")),
                run.iterations,
                run.relative_residual,
                run.solve_secs
            ));
        }
        if let (Some(best), Some(red)) = (c.best_run(), c.iteration_reduction) {
            out.push_str(&format!(
                "  best: {:?} with {} ({:.1}x fewer iterations than none)\n",
                best.method, best.preconditioner, red
            ));
        }
    }
    if let Some(run) = &r.solver_run {
        out.push_str(&format!(
            "  the solver's setting: {:?}+{} {} after {} it, rel.res {:.2e}{}\n",
            run.method,
            run.preconditioner,
            run.reason
                .map_or("-".to_string(), |x| x.as_str().to_string()),
            run.iterations,
            run.relative_residual,
            if run.out_of_time {
                " (cut by the time budget)"
            } else {
                ""
            }
        ));
    }
    if let Some(a) = &r.analog {
        out.push_str(&format!(
            "  analog {} bits: worst-case error {}; typical {}; refinement {}\n",
            a.bits,
            a.worst_case_error
                .map_or("unbounded (κ·2^-b ≥ 1)".to_string(), |e| format!(
                    "{e:.2e}"
                )),
            a.monte_carlo
                .as_ref()
                .map_or("-".to_string(), |m| format!("{:.2e}", m.median)),
            a.refinement
                .as_ref()
                .map_or("-".to_string(), |x| if x.converged {
                    format!("converges in {} steps", x.steps)
                } else {
                    "does not converge".to_string()
                })
        ));
    }
    if r.findings.is_empty() {
        out.push_str("  findings: none\n");
    }
    for f in &r.findings {
        out.push_str(&format!("  {:?} {:?}: {}\n", f.severity, f.code, f.message));
    }
    out
}

fn main() -> ExitCode {
    let (file, rhs, bits, read_noise, threshold, json, solver) = match Cli::parse().command {
        Command::Analyze {
            file,
            rhs,
            bits,
            read_noise,
            threshold,
            json,
            solver,
        } => (file, rhs, bits, read_noise, threshold, json, solver),
        Command::Bench { file, repeat, cond } => {
            return match bench(&file, repeat, cond) {
                Ok(v) => {
                    println!("{v}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("solver-probe: {e}");
                    ExitCode::from(2)
                }
            };
        }
    };
    if !(threshold.is_finite() && threshold > 1.0) {
        eprintln!("solver-probe: --threshold: expected a number > 1, found {threshold}");
        return ExitCode::from(2);
    }
    let mut opts = ProbeOptions {
        bits,
        read_noise,
        kappa_threshold: threshold,
        ..ProbeOptions::default()
    };
    if let Err(e) = solver.apply(&mut opts) {
        eprintln!("solver-probe: {e}");
        return ExitCode::from(2);
    }
    match analyze_file(&file, rhs.as_deref(), &opts) {
        Ok(r) => {
            if json {
                match serde_json::to_string(&r) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("solver-probe: cannot encode the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", text(&r));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("solver-probe: {e}");
            ExitCode::from(2)
        }
    }
}
