//! Bounded waits on observable state: the end-to-end tests synchronise with the real binaries
//! by polling something the test can see (an RPC answer, a log line, a scrape, a file) until it
//! holds or a deadline passes, never by sleeping for a guessed time. A deadline that passes
//! fails the test, naming what it waited for.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns Some, and returns that; panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(what, limit, Duration::from_millis(50), check)
}

/// Polls `ready` every 20 ms until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    poll(what, limit, Duration::from_millis(20), || {
        ready().then_some(())
    })
}

fn poll<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// The async form of [`wait_for`], for checks that make RPCs: polls `check` every 50 ms until
/// it returns Some, and returns that; panics after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
