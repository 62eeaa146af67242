//! The worker threads of the memory-bound kernels: a work-sharing runner over many small parts,
//! CG's fused vector update and a threaded dot product.
//!
//! A 2-core host's memory bandwidth is not reached by one core, so the SpMV and CG's vector
//! passes run on up to [`Workers`] scoped threads (`std::thread::scope`: no pool, no `unsafe`).
//! The probe is a background health check, so it takes at most [`MAX_WORKERS`] cores.
//!
//! The rows are cut into [`PARTS`] parts, many more than threads, and every thread (the calling
//! one included) takes the next untaken part from a shared atomic counter until none is left.
//! On a busy host one vCPU is often descheduled for a few milliseconds; with one part per
//! thread the whole product waited for it, with many parts the other thread takes its share
//! and the slow one costs only the part it holds. A helper that starts late finds the work
//! done, so a product is never slower than the calling thread alone (plus one spawn, ~20 µs).
//!
//! The parts do not depend on the worker count, and the partial sums are added in part order,
//! so every result (vectors and dot products) is bit-identical for any `SOLVER_PROBE_WORKERS`.
//! Vectors shorter than [`PARALLEL_MIN_LEN`] (and products with fewer than [`PARALLEL_MIN_NNZ`]
//! nonzeros) stay on the calling thread, where a spawn would cost more than it saves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Most threads a kernel uses.
pub const MAX_WORKERS: usize = 2;

/// Products with fewer nonzeros run on the calling thread.
pub const PARALLEL_MIN_NNZ: usize = 200_000;

/// Vector updates shorter than this run on the calling thread.
pub const PARALLEL_MIN_LEN: usize = 100_000;

/// Parts a threaded kernel is cut into: 16 per worker at [`MAX_WORKERS`], small enough that a
/// stalled thread's last part is a few percent of the pass, large enough (≥ 30k rows at the
/// smallest threaded size) that taking a part costs nothing against computing it.
pub const PARTS: usize = 16 * MAX_WORKERS;

/// How many threads the kernels use on this host.
#[derive(Debug, Clone, Copy)]
pub struct Workers(usize);

impl Workers {
    /// `min(available cores, MAX_WORKERS)`, at least 1; the environment variable
    /// `SOLVER_PROBE_WORKERS` lowers it (1 = everything on the calling thread), for hosts where
    /// the probe must stay on one core and for measuring the split.
    pub fn get() -> Workers {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cap = std::env::var("SOLVER_PROBE_WORKERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(MAX_WORKERS);
        Workers(cores.min(cap).clamp(1, MAX_WORKERS))
    }

    /// Thread count.
    pub fn count(self) -> usize {
        self.0
    }
}

/// How a kernel splits its work: threads, parts, and the sizes below which it stays serial.
/// The solvers take [`Split::get`]; the tests force threads and parts on small inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Split {
    /// Threads, the calling one included (≥ 1).
    pub workers: usize,
    /// Parts of a threaded pass (≥ 1).
    pub parts: usize,
    /// Vectors shorter than this are one part.
    pub min_len: usize,
    /// Products with fewer nonzeros are one part.
    pub min_nnz: usize,
}

impl Split {
    /// The host's split: [`Workers::get`] threads, [`PARTS`] parts above the size thresholds.
    pub fn get() -> Split {
        Split {
            workers: Workers::get().count(),
            parts: PARTS,
            min_len: PARALLEL_MIN_LEN,
            min_nnz: PARALLEL_MIN_NNZ,
        }
    }

    /// Part boundaries of a vector of length `n` (`[0, n]` when it stays serial).
    pub fn cuts(&self, n: usize) -> Vec<usize> {
        let parts = if n < self.min_len {
            1
        } else {
            self.parts.max(1)
        };
        (0..=parts).map(|k| n * k / parts).collect()
    }
}

/// Runs `f` on every part, on `workers` threads (the caller is one) that each take the next
/// untaken part from a shared counter; returns the results in part order. A part whose thread
/// panicked (an out-of-bounds index from a malformed input) yields `failed`.
pub(crate) fn run_parts<T, R, F>(workers: usize, parts: Vec<T>, failed: R, f: F) -> Vec<R>
where
    T: Send,
    R: Copy + Send,
    F: Fn(T) -> R + Sync,
{
    let count = parts.len();
    if workers <= 1 || count <= 1 {
        return parts.into_iter().map(f).collect();
    }
    // Each slot is taken exactly once (the counter hands out each index once), so its lock is
    // never contended; it is there because the part holds `&mut` slices that must move to
    // whichever thread draws it.
    let slots: Vec<Mutex<Option<T>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let next = AtomicUsize::new(0);
    let take = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= count {
                return done;
            }
            if let Some(part) = slots[k].lock().ok().and_then(|mut s| s.take()) {
                done.push((k, f(part)));
            }
        }
    };
    let mut out = vec![failed; count];
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..workers.min(count)).map(|_| s.spawn(take)).collect();
        for (k, v) in take() {
            out[k] = v;
        }
        for h in helpers {
            if let Ok(done) = h.join() {
                for (k, v) in done {
                    out[k] = v;
                }
            }
        }
    });
    out
}

/// Cuts `v` at `cuts` (ascending, first 0, last `v.len()`) into disjoint mutable parts.
pub(crate) fn split_mut<'a>(mut v: &'a mut [f64], cuts: &[usize]) -> Vec<&'a mut [f64]> {
    let mut out = Vec::with_capacity(cuts.len().saturating_sub(1));
    for w in cuts.windows(2) {
        let (head, tail) = v.split_at_mut(w[1] - w[0]);
        out.push(head);
        v = tail;
    }
    out
}

/// `a · b` (one length), threaded per `split`; the same sum for any worker count.
pub(crate) fn par_dot(split: &Split, a: &[f64], b: &[f64]) -> f64 {
    let cuts = split.cuts(a.len());
    let parts: Vec<(&[f64], &[f64])> = cuts
        .windows(2)
        .map(|w| (&a[w[0]..w[1]], &b[w[0]..w[1]]))
        .collect();
    run_parts(split.workers, parts, f64::NAN, |(a, b)| super::dot(a, b))
        .iter()
        .sum()
}

/// One part of CG's vector pass.
struct CgPart<'a> {
    p: &'a mut [f64],
    s: &'a mut [f64],
    x: &'a mut [f64],
    r: &'a mut [f64],
    w: &'a [f64],
    u: Option<&'a [f64]>,
}

/// The vectors of the Chronopoulos–Gear CG iteration ([`super::cg`]); `u` is the
/// preconditioned residual, `None` when it is `r` itself.
pub(crate) struct CgVectors<'a> {
    pub p: &'a mut [f64],
    pub s: &'a mut [f64],
    pub x: &'a mut [f64],
    pub r: &'a mut [f64],
    pub w: &'a [f64],
    pub u: Option<&'a [f64]>,
}

/// The whole vector work of one Chronopoulos–Gear iteration in one pass over memory:
/// `p = u + βp; s = w + βs; x += αp; r −= αs`. Returns `[r·r, x·x]` of the new `r` and `x`
/// (the residual norm, and ‖x‖ for the residual-replacement test).
pub(crate) fn cg_update(split: &Split, alpha: f64, beta: f64, v: CgVectors<'_>) -> [f64; 2] {
    let cuts = split.cuts(v.x.len());
    let ps = split_mut(v.p, &cuts);
    let ss = split_mut(v.s, &cuts);
    let xs = split_mut(v.x, &cuts);
    let rs = split_mut(v.r, &cuts);
    let parts: Vec<CgPart<'_>> = ps
        .into_iter()
        .zip(ss)
        .zip(xs.into_iter().zip(rs))
        .zip(cuts.windows(2))
        .map(|(((p, s), (x, r)), c)| CgPart {
            p,
            s,
            x,
            r,
            w: &v.w[c[0]..c[1]],
            u: v.u.map(|u| &u[c[0]..c[1]]),
        })
        .collect();
    let sums = run_parts(split.workers, parts, [f64::NAN; 2], |part| {
        cg_update_part(alpha, beta, part)
    });
    sums.iter()
        .fold([0.0, 0.0], |acc, s| [acc[0] + s[0], acc[1] + s[1]])
}

/// [`cg_update`] on one part: a single zipped loop the compiler keeps free of bounds checks.
fn cg_update_part(alpha: f64, beta: f64, part: CgPart<'_>) -> [f64; 2] {
    let CgPart { p, s, x, r, w, u } = part;
    let (mut rr, mut xx) = (0.0, 0.0);
    let vecs = p.iter_mut().zip(s.iter_mut()).zip(x.iter_mut()).zip(w);
    match u {
        // Unpreconditioned: u is r, read before r is overwritten.
        None => {
            for ((((pi, si), xi), wi), ri) in vecs.zip(r.iter_mut()) {
                let pn = *ri + beta * *pi;
                let sn = wi + beta * *si;
                *pi = pn;
                *si = sn;
                *xi += alpha * pn;
                *ri -= alpha * sn;
                rr += *ri * *ri;
                xx += *xi * *xi;
            }
        }
        Some(u) => {
            for (((((pi, si), xi), wi), ri), ui) in vecs.zip(r.iter_mut()).zip(u) {
                let pn = ui + beta * *pi;
                let sn = wi + beta * *si;
                *pi = pn;
                *si = sn;
                *xi += alpha * pn;
                *ri -= alpha * sn;
                rr += *ri * *ri;
                xx += *xi * *xi;
            }
        }
    }
    [rr, xx]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forced(workers: usize, parts: usize) -> Split {
        Split {
            workers,
            parts,
            min_len: 0,
            min_nnz: 0,
        }
    }

    #[test]
    fn every_part_runs_once_in_order() {
        for workers in [1, 2, 3, 8] {
            let parts: Vec<usize> = (0..50).collect();
            let out = run_parts(workers, parts, usize::MAX, |k| k * k);
            assert_eq!(out, (0..50).map(|k| k * k).collect::<Vec<_>>());
        }
    }

    #[test]
    fn update_and_dot_are_the_same_for_any_worker_count() {
        let n = 1001;
        let init = |seed: f64| -> Vec<f64> { (0..n).map(|i| (i as f64 * seed).sin()).collect() };
        let w = init(0.7);
        let u = init(0.9);
        let mut reference = None;
        for (workers, parts) in [(1, 1), (1, 32), (2, 32), (3, 32), (2, 5000)] {
            let split = forced(workers, parts);
            let (mut p, mut s, mut x, mut r) = (init(0.1), init(0.2), init(0.3), init(0.4));
            let sums = cg_update(
                &split,
                0.25,
                0.5,
                CgVectors {
                    p: &mut p,
                    s: &mut s,
                    x: &mut x,
                    r: &mut r,
                    w: &w,
                    u: Some(&u),
                },
            );
            let d = par_dot(&split, &x, &r);
            // Serial formula, element by element.
            let (p0, s0, x0, r0) = (init(0.1), init(0.2), init(0.3), init(0.4));
            for i in 0..n {
                let pn = u[i] + 0.5 * p0[i];
                let sn = w[i] + 0.5 * s0[i];
                assert_eq!(p[i], pn);
                assert_eq!(s[i], sn);
                assert_eq!(x[i], x0[i] + 0.25 * pn);
                assert_eq!(r[i], r0[i] - 0.25 * sn);
            }
            let rr: f64 = r.iter().map(|v| v * v).sum();
            assert!((sums[0] - rr).abs() <= 1e-12 * rr);
            if parts == 32 {
                // Same parts: bit-identical sums whatever the thread count.
                match reference {
                    None => reference = Some((sums, d)),
                    Some(prev) => assert_eq!(prev, (sums, d)),
                }
            }
        }
    }
}
