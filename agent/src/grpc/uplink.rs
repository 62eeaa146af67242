//! The uplink: streams numbered health reports to the collector and survives its absence.
//!
//! Reports wait in a bounded in-memory buffer until the collector acknowledges them by seq.
//! After a reconnect, everything unacknowledged is sent again, in order; the collector drops
//! duplicates by (boot id, seq). When the buffer is full the oldest report is dropped and
//! counted. Reconnects back off exponentially with jitter. A collector that accepts the stream
//! but stops acknowledging is treated as dead after `ack_timeout`, so a half-open connection
//! cannot hold the agent's data hostage.
//!
//! The spill to disk, so that an agent restart loses nothing either, is its own issue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use health_proto::v1 as pb;
use health_proto::v1::collector_client::CollectorClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::convert;
use crate::config::UplinkConfig;
use crate::node::NodeSnapshot;

/// Counters the agent exposes about its uplink.
#[derive(Debug, Default)]
pub struct UplinkStats {
    pub connected: AtomicBool,
    pub sent_total: AtomicU64,
    pub acked_seq: AtomicU64,
    pub dropped_total: AtomicU64,
    pub reconnects_total: AtomicU64,
}

struct Pending {
    report: pb::HealthReport,
    sent_at: Option<Instant>,
}

pub struct Uplink {
    url: String,
    cfg: UplinkConfig,
    buffer: VecDeque<Pending>,
    pub stats: Arc<UplinkStats>,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl Uplink {
    pub fn new(url: String, cfg: UplinkConfig) -> Uplink {
        Uplink {
            url,
            cfg,
            buffer: VecDeque::new(),
            stats: Arc::new(UplinkStats::default()),
        }
    }

    fn push(&mut self, snap: &NodeSnapshot) {
        if self.buffer.len() >= self.cfg.buffer_reports {
            self.buffer.pop_front();
            self.stats.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
        self.buffer.push_back(Pending {
            report: pb::HealthReport {
                node: snap.node.clone(),
                boot_id: snap.boot_id.clone(),
                seq: snap.seq,
                sent_at: None,
                snapshot: Some(convert::snapshot(snap)),
            },
            sent_at: None,
        });
    }

    fn ack(&mut self, seq: u64) {
        while self.buffer.front().is_some_and(|p| p.report.seq <= seq) {
            self.buffer.pop_front();
        }
        self.stats.acked_seq.fetch_max(seq, Ordering::Relaxed);
    }

    /// Runs until `cancel` fires.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<Arc<NodeSnapshot>>,
        cancel: CancellationToken,
    ) {
        let mut backoff = self.cfg.backoff_initial;
        loop {
            let started = Instant::now();
            match self.session(&mut reports, &cancel).await {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost(why) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.stats.reconnects_total.fetch_add(1, Ordering::Relaxed);
                    // A session that lived a while was healthy: start backing off afresh.
                    if started.elapsed() > self.cfg.backoff_max {
                        backoff = self.cfg.backoff_initial;
                    }
                    let jitter = 0.8 + 0.4 * rand::random::<f64>();
                    let wait = backoff.mul_f64(jitter);
                    tracing::warn!(collector = %self.url, error = %why, retry_in_ms = wait.as_millis() as u64,
                        buffered = self.buffer.len(), "collector stream lost");
                    backoff = (backoff * 2).min(self.cfg.backoff_max);
                    // Keep taking reports while waiting, so the hand-off queue never fills.
                    let sleep = tokio::time::sleep(wait);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = &mut sleep => break,
                            Some(r) = reports.recv() => self.push(&r),
                        }
                    }
                }
            }
        }
    }

    async fn session(
        &mut self,
        reports: &mut mpsc::Receiver<Arc<NodeSnapshot>>,
        cancel: &CancellationToken,
    ) -> SessionEnd {
        let endpoint = match Endpoint::from_shared(self.url.clone()) {
            Ok(e) => e
                .connect_timeout(self.cfg.connect_timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true),
            Err(e) => return SessionEnd::Lost(format!("bad collector URL: {e}")),
        };
        let channel = tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Shutdown,
            c = endpoint.connect() => match c {
                Ok(c) => c,
                Err(e) => return SessionEnd::Lost(format!("connect: {e}")),
            },
        };
        let mut client = CollectorClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::HealthReport>(64);
        let opened = tokio::time::timeout(
            self.cfg.connect_timeout,
            client.report(tokio_stream::wrappers::ReceiverStream::new(rx)),
        );
        let mut acks = tokio::select! {
            _ = cancel.cancelled() => return SessionEnd::Shutdown,
            r = opened => match r {
                Ok(Ok(resp)) => resp.into_inner(),
                Ok(Err(status)) => return SessionEnd::Lost(format!("open Report stream: {status}")),
                Err(_) => return SessionEnd::Lost("open Report stream: no answer within the connect timeout".to_string()),
            },
        };
        tracing::info!(collector = %self.url, buffered = self.buffer.len(), "collector stream open");
        self.stats.connected.store(true, Ordering::Relaxed);
        // Everything still buffered is unacknowledged: send it again, in order.
        for p in &mut self.buffer {
            p.sent_at = None;
        }
        let mut next = 0usize;
        let mut ack_check = tokio::time::interval(self.cfg.ack_timeout / 4);
        loop {
            let has_unsent = next < self.buffer.len();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return SessionEnd::Shutdown,
                ack = acks.message() => match ack {
                    Ok(Some(a)) => {
                        let before = self.buffer.len();
                        if let Some(front) = self.buffer.front() {
                            if a.boot_id == front.report.boot_id {
                                self.ack(a.acked_seq);
                            }
                        }
                        next = next.saturating_sub(before - self.buffer.len());
                    }
                    Ok(None) => return SessionEnd::Lost("collector closed the stream".to_string()),
                    Err(status) => return SessionEnd::Lost(format!("stream error: {status}")),
                },
                Some(r) = reports.recv() => self.push(&r),
                permit = tx.reserve(), if has_unsent => match permit {
                    Ok(permit) => {
                        let p = &mut self.buffer[next];
                        p.sent_at = Some(Instant::now());
                        let mut report = p.report.clone();
                        report.sent_at = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
                        permit.send(report);
                        self.stats.sent_total.fetch_add(1, Ordering::Relaxed);
                        next += 1;
                    }
                    Err(_) => return SessionEnd::Lost("request stream closed".to_string()),
                },
                _ = ack_check.tick() => {
                    if let Some(oldest) = self.buffer.front().and_then(|p| p.sent_at) {
                        if oldest.elapsed() > self.cfg.ack_timeout {
                            return SessionEnd::Lost(format!(
                                "no acknowledgement within {:.1} s", self.cfg.ack_timeout.as_secs_f64()
                            ));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostStatus;
    use health_hal::HealthState;

    fn snap(seq: u64) -> NodeSnapshot {
        NodeSnapshot {
            node: "n".into(),
            boot_id: "b".into(),
            seq,
            taken_at: std::time::SystemTime::now(),
            state: HealthState::Ok,
            host: Arc::new(HostStatus::default()),
            devices: vec![],
        }
    }

    fn cfg(buffer: usize) -> UplinkConfig {
        UplinkConfig {
            buffer_reports: buffer,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(100),
            ack_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn buffer_is_bounded_drops_oldest_and_acks_release_in_order() {
        let mut u = Uplink::new("http://127.0.0.1:1".into(), cfg(3));
        for s in 1..=5 {
            u.push(&snap(s));
        }
        let seqs: Vec<_> = u.buffer.iter().map(|p| p.report.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(u.stats.dropped_total.load(Ordering::Relaxed), 2);
        u.ack(4);
        let seqs: Vec<_> = u.buffer.iter().map(|p| p.report.seq).collect();
        assert_eq!(seqs, vec![5]);
        assert_eq!(u.stats.acked_seq.load(Ordering::Relaxed), 4);
    }
}
