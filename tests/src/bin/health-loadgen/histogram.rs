//! A latency histogram many tasks record into at once without a lock.
//!
//! Log-linear buckets (64 per power of two) over microseconds: any percentile read back is
//! within 1.6% of the true value, which is finer than anything the benchmark can resolve on a
//! shared 2-core machine. Recording is two atomic operations and no lock: an add to the
//! sample's bucket and a max into the largest sample seen. The count is the buckets' sum, read
//! at summary time, so it always agrees with the percentiles it was read with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two, as a bit count (64 sub-buckets).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any u64 microsecond count.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
}

/// Percentiles read from a histogram.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }

    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        let at = |q: f64| -> f64 {
            if count == 0 {
                return 0.0;
            }
            // The smallest value with at least q of the samples at or below it.
            let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
            let mut seen = 0;
            for (index, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return midpoint_us(index) / 1000.0;
                }
            }
            0.0
        };
        Summary {
            count,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: self.max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    ((shift as u64 + 1) * SUB + sub) as usize
}

/// The middle of a bucket's range, in microseconds.
fn midpoint_us(index: usize) -> f64 {
    let index = index as u64;
    if index < SUB {
        return index as f64;
    }
    let shift = index / SUB - 1;
    let sub = index % SUB;
    let low = (SUB + sub) << shift;
    let width = 1u64 << shift;
    low as f64 + (width as f64 - 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [
            0u64, 1, 63, 64, 65, 127, 128, 1000, 12_345, 250_000, 10_000_000,
        ] {
            let b = bucket_of(us);
            assert!(b >= last, "bucket order at {us}");
            last = b;
            let mid = midpoint_us(b);
            assert!(
                (mid - us as f64).abs() <= us as f64 / 64.0 + 0.5,
                "{us} -> {mid}"
            );
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let h = Histogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 1.6, "{s:?}");
        assert_eq!(s.max_ms, 100.0);
    }
}
