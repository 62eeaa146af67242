//! The worker threads of the memory-bound kernels, and CG's fused vector updates.
//!
//! A 2-core host's memory bandwidth is not reached by one core, so the SpMV and the vector
//! updates of CG split their rows over [`Workers`] scoped threads (`std::thread::scope`: no
//! pool, no `unsafe`). The probe is a background health check, so it takes at most
//! [`MAX_WORKERS`] cores. Vectors shorter than [`PARALLEL_MIN_LEN`] (and products with fewer
//! than [`PARALLEL_MIN_NNZ`] nonzeros) stay on the calling thread, where a spawn would cost
//! more than it saves.
//!
//! The fused updates read and write each vector once per iteration instead of once per
//! operation: `x += αp; r −= αq` returns `r·r` from the same pass.

/// Most threads a kernel uses.
pub const MAX_WORKERS: usize = 2;

/// Products with fewer nonzeros run on the calling thread.
pub const PARALLEL_MIN_NNZ: usize = 200_000;

/// Vector updates shorter than this run on the calling thread.
pub const PARALLEL_MIN_LEN: usize = 100_000;

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

/// Splits `0..n` into `parts` contiguous ranges of near-equal length; returns the boundaries.
fn bounds(n: usize, parts: usize) -> Vec<usize> {
    (0..=parts).map(|k| n * k / parts).collect()
}

/// Runs `f` on matching chunks of the mutable slices `a`, `b` and the shared slices `c`, `d`
/// (all of one length), on the worker threads when long enough, and sums the results.
fn split4<F>(a: &mut [f64], b: &mut [f64], c: &[f64], d: &[f64], f: F) -> f64
where
    F: Fn(&mut [f64], &mut [f64], &[f64], &[f64]) -> f64 + Sync,
{
    let n = a.len();
    let workers = Workers::get().count();
    if n < PARALLEL_MIN_LEN || workers == 1 {
        return f(a, b, c, d);
    }
    let cuts = bounds(n, workers);
    let f = &f;
    std::thread::scope(|s| {
        let mut handles = Vec::with_capacity(workers);
        let (mut ra, mut rb) = (a, b);
        for w in cuts.windows(2) {
            let len = w[1] - w[0];
            let (ha, ta) = ra.split_at_mut(len);
            let (hb, tb) = rb.split_at_mut(len);
            ra = ta;
            rb = tb;
            let (hc, hd) = (&c[w[0]..w[1]], &d[w[0]..w[1]]);
            handles.push(s.spawn(move || f(ha, hb, hc, hd)));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(f64::NAN))
            .sum()
    })
}

/// `x += α p; r −= α q`; returns `r · r`. All four slices have one length (checked by the
/// callers' setup).
pub(crate) fn update_xr(alpha: f64, p: &[f64], q: &[f64], x: &mut [f64], r: &mut [f64]) -> f64 {
    split4(x, r, p, q, |x, r, p, q| {
        let mut rr0 = 0.0;
        let mut rr1 = 0.0;
        let mut k = 0;
        let n = x.len();
        while k + 1 < n {
            x[k] += alpha * p[k];
            x[k + 1] += alpha * p[k + 1];
            let r0 = r[k] - alpha * q[k];
            let r1 = r[k + 1] - alpha * q[k + 1];
            r[k] = r0;
            r[k + 1] = r1;
            rr0 += r0 * r0;
            rr1 += r1 * r1;
            k += 2;
        }
        if k < n {
            x[k] += alpha * p[k];
            r[k] -= alpha * q[k];
            rr0 += r[k] * r[k];
        }
        rr0 + rr1
    })
}

/// `p = z + β p`.
pub(crate) fn update_p(beta: f64, z: &[f64], p: &mut [f64]) {
    let step = |p: &mut [f64], z: &[f64]| {
        for (pi, zi) in p.iter_mut().zip(z) {
            *pi = zi + beta * *pi;
        }
    };
    let workers = Workers::get().count();
    if p.len() < PARALLEL_MIN_LEN || workers == 1 {
        return step(p, z);
    }
    let cuts = bounds(p.len(), workers);
    let step = &step;
    std::thread::scope(|s| {
        let mut rest = p;
        for w in cuts.windows(2) {
            let (head, tail) = rest.split_at_mut(w[1] - w[0]);
            rest = tail;
            let zc = &z[w[0]..w[1]];
            s.spawn(move || step(head, zc));
        }
    });
}
