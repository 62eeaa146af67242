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
use std::sync::atomic::Ordering;
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
use crate::node::{NodeSnapshot, UplinkStats};

struct Pending {
    report: pb::HealthReport,
    sent_at: Option<Instant>,
}

/// Reports not yet acknowledged, oldest first, and how far the current stream has sent them.
/// Kept apart from the network code so its bookkeeping is tested on its own.
struct Outbox {
    buffer: VecDeque<Pending>,
    /// Index of the first report not yet sent on the current stream.
    next: usize,
    capacity: usize,
}

impl Outbox {
    fn new(capacity: usize) -> Outbox {
        Outbox {
            buffer: VecDeque::new(),
            next: 0,
            capacity,
        }
    }

    /// Buffers a report; returns true when the buffer was full and the oldest report was
    /// dropped to make room.
    fn push(&mut self, report: pb::HealthReport) -> bool {
        let dropped = self.buffer.len() >= self.capacity;
        if dropped {
            self.buffer.pop_front();
            // Everything after it moved down a place, the send position with it.
            self.next = self.next.saturating_sub(1);
        }
        self.buffer.push_back(Pending {
            report,
            sent_at: None,
        });
        dropped
    }

    /// Releases every report of `boot_id` up to `seq`.
    fn ack(&mut self, boot_id: &str, seq: u64) {
        while self
            .buffer
            .front()
            .is_some_and(|p| p.report.boot_id == boot_id && p.report.seq <= seq)
        {
            self.buffer.pop_front();
            self.next = self.next.saturating_sub(1);
        }
    }

    /// A new stream: everything buffered is unacknowledged and is sent again, in order.
    fn rewind(&mut self) {
        self.next = 0;
        for p in &mut self.buffer {
            p.sent_at = None;
        }
    }

    fn has_unsent(&self) -> bool {
        self.next < self.buffer.len()
    }

    /// The next report to send, marked as sent now.
    fn take_next(&mut self) -> Option<pb::HealthReport> {
        let p = self.buffer.get_mut(self.next)?;
        p.sent_at = Some(Instant::now());
        self.next += 1;
        Some(p.report.clone())
    }

    /// When the oldest report still waiting for its acknowledgement was sent.
    fn oldest_unacked_sent_at(&self) -> Option<Instant> {
        self.buffer.front().and_then(|p| p.sent_at)
    }

    fn len(&self) -> usize {
        self.buffer.len()
    }
}

pub struct Uplink {
    url: String,
    cfg: UplinkConfig,
    outbox: Outbox,
    pub stats: Arc<UplinkStats>,
    /// For an `https://` collector (see `tls.rs`).
    tls: Option<tonic::transport::ClientTlsConfig>,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl Uplink {
    pub fn new(url: String, cfg: UplinkConfig, stats: Arc<UplinkStats>) -> Uplink {
        let outbox = Outbox::new(cfg.buffer_reports);
        Uplink {
            url,
            cfg,
            outbox,
            stats,
            tls: None,
        }
    }

    /// Connects with TLS (`crate::tls::uplink`): the collector is verified, the agent presents
    /// its certificate.
    pub fn with_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Uplink {
        self.tls = tls;
        self
    }

    fn endpoint_tls(&self, e: Endpoint) -> Result<Endpoint, String> {
        match &self.tls {
            Some(tls) => e
                .tls_config(tls.clone())
                .map_err(|e| format!("collector TLS config: {e}")),
            None => Ok(e),
        }
    }

    fn push(&mut self, snap: &NodeSnapshot) {
        let report = pb::HealthReport {
            node: snap.node.clone(),
            boot_id: snap.boot_id.clone(),
            seq: snap.seq,
            sent_at: None,
            snapshot: Some(convert::snapshot(snap)),
        };
        if self.outbox.push(report) {
            self.stats.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .buffered
            .store(self.outbox.len() as u64, Ordering::Relaxed);
    }

    fn ack(&mut self, boot_id: &str, seq: u64) {
        self.outbox.ack(boot_id, seq);
        self.stats.acked_seq.fetch_max(seq, Ordering::Relaxed);
        self.stats
            .buffered
            .store(self.outbox.len() as u64, Ordering::Relaxed);
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
                        buffered = self.outbox.len(), "collector stream lost");
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
        let endpoint = match self.endpoint_tls(endpoint) {
            Ok(e) => e,
            Err(e) => return SessionEnd::Lost(e),
        };
        // While connecting and opening the stream, keep taking reports from the main loop so
        // its hand-off queue never fills (that would count as dropped reports).
        let connect = tokio::time::timeout(self.cfg.connect_timeout, endpoint.connect());
        tokio::pin!(connect);
        let channel = loop {
            tokio::select! {
                _ = cancel.cancelled() => return SessionEnd::Shutdown,
                Some(r) = reports.recv() => self.push(&r),
                c = &mut connect => match c {
                    Ok(Ok(c)) => break c,
                    Ok(Err(e)) => return SessionEnd::Lost(format!("connect: {e}")),
                    Err(_) => return SessionEnd::Lost("connect: no connection within the connect timeout".to_string()),
                },
            }
        };
        let mut client = CollectorClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::HealthReport>(64);
        let opened = tokio::time::timeout(
            self.cfg.connect_timeout,
            client.report(tokio_stream::wrappers::ReceiverStream::new(rx)),
        );
        tokio::pin!(opened);
        let mut acks = loop {
            tokio::select! {
                _ = cancel.cancelled() => return SessionEnd::Shutdown,
                Some(r) = reports.recv() => self.push(&r),
                r = &mut opened => match r {
                    Ok(Ok(resp)) => break resp.into_inner(),
                    Ok(Err(status)) => return SessionEnd::Lost(format!("open Report stream: {status}")),
                    Err(_) => return SessionEnd::Lost("open Report stream: no answer within the connect timeout".to_string()),
                },
            }
        };
        tracing::info!(collector = %self.url, buffered = self.outbox.len(), "collector stream open");
        self.stats.connected.store(true, Ordering::Relaxed);
        self.outbox.rewind();
        let mut ack_check = tokio::time::interval(self.cfg.ack_timeout / 4);
        loop {
            let has_unsent = self.outbox.has_unsent();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return SessionEnd::Shutdown,
                ack = acks.message() => match ack {
                    Ok(Some(a)) => self.ack(&a.boot_id, a.acked_seq),
                    Ok(None) => return SessionEnd::Lost("collector closed the stream".to_string()),
                    Err(status) => return SessionEnd::Lost(format!("stream error: {status}")),
                },
                Some(r) = reports.recv() => self.push(&r),
                permit = tx.reserve(), if has_unsent => match (permit, self.outbox.take_next()) {
                    (Ok(permit), Some(mut report)) => {
                        report.sent_at = Some(prost_types::Timestamp::from(std::time::SystemTime::now()));
                        permit.send(report);
                        self.stats.sent_total.fetch_add(1, Ordering::Relaxed);
                    }
                    (Ok(_), None) => {}
                    (Err(_), _) => return SessionEnd::Lost("request stream closed".to_string()),
                },
                _ = ack_check.tick() => {
                    if let Some(oldest) = self.outbox.oldest_unacked_sent_at() {
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
            agent: Default::default(),
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

    fn report(seq: u64) -> pb::HealthReport {
        pb::HealthReport {
            node: "n".into(),
            boot_id: "b".into(),
            seq,
            ..Default::default()
        }
    }

    fn seqs(o: &Outbox) -> Vec<u64> {
        o.buffer.iter().map(|p| p.report.seq).collect()
    }

    #[test]
    fn buffer_is_bounded_drops_oldest_and_acks_release_in_order() {
        let mut u = Uplink::new("http://127.0.0.1:1".into(), cfg(3), Arc::default());
        for s in 1..=5 {
            u.push(&snap(s));
        }
        assert_eq!(seqs(&u.outbox), vec![3, 4, 5]);
        assert_eq!(u.stats.dropped_total.load(Ordering::Relaxed), 2);
        assert_eq!(u.stats.buffered.load(Ordering::Relaxed), 3);
        u.ack("b", 4);
        assert_eq!(seqs(&u.outbox), vec![5]);
        assert_eq!(u.stats.acked_seq.load(Ordering::Relaxed), 4);
        u.ack("another-boot", 5);
        assert_eq!(
            seqs(&u.outbox),
            vec![5],
            "an ack for another boot releases nothing"
        );
    }

    #[test]
    fn a_report_buffered_while_full_is_still_sent() {
        // The trace from review: capacity 3, all sent, then a push drops the oldest. The new
        // report must still be sent, and nothing is released unsent.
        let mut o = Outbox::new(3);
        for s in 1..=3 {
            o.push(report(s));
        }
        let sent: Vec<u64> = std::iter::from_fn(|| o.take_next())
            .map(|r| r.seq)
            .collect();
        assert_eq!(sent, vec![1, 2, 3]);
        assert!(o.push(report(4)), "full: the oldest is dropped");
        assert_eq!(
            o.take_next().map(|r| r.seq),
            Some(4),
            "4 is sent, not skipped"
        );
        o.ack("b", 2);
        assert!(!o.has_unsent());
        o.push(report(5));
        assert_eq!(o.take_next().map(|r| r.seq), Some(5));
        o.ack("b", 5);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn rewind_resends_everything_unacknowledged_in_order() {
        let mut o = Outbox::new(10);
        for s in 1..=4 {
            o.push(report(s));
        }
        let _ = (o.take_next(), o.take_next());
        o.ack("b", 1);
        o.rewind();
        let again: Vec<u64> = std::iter::from_fn(|| o.take_next())
            .map(|r| r.seq)
            .collect();
        assert_eq!(again, vec![2, 3, 4]);
        assert!(o.oldest_unacked_sent_at().is_some());
    }
}
