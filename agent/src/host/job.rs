//! A blocking measurement bounded by a deadline, shared by the host monitor and the process
//! watchdog: both read the kernel through calls that can block (statfs on a dead mount, a /proc
//! read) and must keep reporting while one does.

use std::time::Duration;

use tokio::task::JoinHandle;

/// A blocking measurement bounded by a deadline. If one misses its deadline it is kept, not
/// restarted: the next poll waits on the same call, so a stuck mount costs one thread.
pub(crate) struct BoundedJob<T> {
    in_flight: Option<JoinHandle<T>>,
}

impl<T: Send + 'static> BoundedJob<T> {
    pub(crate) fn new() -> Self {
        BoundedJob { in_flight: None }
    }

    /// `None` when the measurement did not finish within `deadline`.
    pub(crate) async fn poll(
        &mut self,
        deadline: Duration,
        start: impl FnOnce() -> JoinHandle<T>,
    ) -> Option<T> {
        let mut job = self.in_flight.take().unwrap_or_else(start);
        match tokio::time::timeout(deadline, &mut job).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "host measurement task failed");
                None
            }
            Err(_) => {
                self.in_flight = Some(job);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn a_stuck_measurement_is_waited_on_not_restarted() {
        let started = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let mut job = BoundedJob::new();
        for _ in 0..3 {
            let (s, r) = (started.clone(), release_rx.clone());
            let got = job
                .poll(Duration::from_millis(50), move || {
                    s.fetch_add(1, Ordering::SeqCst);
                    tokio::task::spawn_blocking(move || {
                        let _ = r.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        7
                    })
                })
                .await;
            assert_eq!(got, None, "blocked measurement reports nothing");
        }
        assert_eq!(started.load(Ordering::SeqCst), 1, "only one blocked thread");
        release_tx.send(()).unwrap();
        let got = job
            .poll(Duration::from_secs(5), || unreachable!("still in flight"))
            .await;
        assert_eq!(
            got,
            Some(7),
            "the same call's result arrives once it returns"
        );
    }
}
