//! The uplink: streams numbered health reports to the collector and survives its absence.
//!
//! Reports wait until the collector acknowledges them by seq. After a reconnect, everything
//! unacknowledged is sent again, in order (oldest first, keyed by (boot id, seq)); the
//! collector drops duplicates. Reconnects back off exponentially with jitter. A collector that
//! accepts the stream but stops acknowledging is treated as dead after `ack_timeout`, so a
//! half-open connection cannot hold the agent's data hostage.
//!
//! Where the reports wait (`Outbox`):
//! - without a spill, in memory, at most `buffer_reports`; when full the oldest is dropped;
//! - with `spill_path`, every report is also written to the spill (`spill.rs`), which holds up
//!   to `spill_max_bytes`; memory keeps the oldest `buffer_reports` of them and the rest are
//!   read back from disk as acknowledgements make room. When the spill is full the oldest are
//!   dropped. An agent that restarts finds the earlier boots' unacknowledged reports in the
//!   spill and sends them first, with their own boot ids.
//!
//! Every dropped report is counted and its range (boot id, first seq, last seq) is reported in
//! `AgentStatus.dropped_ranges`, so the collector can record the gap explicitly.
//!
//! Failover: the agent has a list of collectors. It streams to one; when that session fails
//! (connect error, stream error, acknowledgement timeout) it moves to the next one after a
//! short pause, and backs off exponentially only once every collector has failed in a row. It
//! stays on a working collector rather than moving back to the first (no flapping); everything
//! unacknowledged is resent to the new one.

pub mod spill;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use health_proto::v1 as pb;
use health_proto::v1::collector_client::CollectorClient;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::config::UplinkConfig;
use crate::model::{note_dropped, NodeSnapshot, UplinkStats};
use crate::wire::convert;
use spill::{key_of, Key, ReadReply, RecoveredRecord, Spill};

struct Entry {
    key: Key,
    /// Bytes in the spill (0 without one).
    bytes: u64,
    /// In memory; `None` while it is only in the spill.
    report: Option<pb::HealthReport>,
    sent_at: Option<Instant>,
}

/// Reports not yet acknowledged, oldest first, and how far the current stream has sent them.
/// Kept apart from the network and disk code so its bookkeeping is tested on its own.
struct Outbox {
    entries: VecDeque<Entry>,
    /// `entries[..loaded]` are in memory; the rest are only in the spill.
    loaded: usize,
    /// Index of the first report not yet sent on the current stream (`<= loaded`).
    next: usize,
    /// Most reports in memory.
    memory: usize,
    /// With a spill: most bytes in it. Without: `None`, and `memory` is the whole capacity.
    spill_max: Option<u64>,
    bytes: u64,
}

impl Outbox {
    fn new(memory: usize, spill_max: Option<u64>) -> Outbox {
        Outbox {
            entries: VecDeque::new(),
            loaded: 0,
            next: 0,
            memory: memory.max(1),
            spill_max,
            bytes: 0,
        }
    }

    /// Reports an earlier run left in the spill: they come first, read back as room allows.
    fn recovered(&mut self, records: Vec<RecoveredRecord>) {
        for r in records {
            self.bytes += r.bytes;
            self.entries.push_back(Entry {
                key: r.key,
                bytes: r.bytes,
                report: None,
                sent_at: None,
            });
        }
    }

    /// Whether the next report pushed will be kept in memory too.
    fn next_push_in_memory(&self) -> bool {
        self.spill_max.is_none() || (self.loaded == self.entries.len() && self.loaded < self.memory)
    }

    /// Buffers a report (`bytes` in the spill, 0 without one); returns the keys of the oldest
    /// reports dropped to make room, oldest first.
    fn push(&mut self, report: pb::HealthReport, bytes: u64) -> Vec<Key> {
        let in_memory = self.next_push_in_memory();
        let mut dropped = Vec::new();
        if self.spill_max.is_none() && self.entries.len() >= self.memory {
            dropped.extend(self.drop_oldest());
        }
        self.bytes += bytes;
        self.entries.push_back(Entry {
            key: key_of(&report),
            bytes,
            report: in_memory.then_some(report),
            sent_at: None,
        });
        if in_memory {
            self.loaded += 1;
        }
        if let Some(max) = self.spill_max {
            while self.bytes > max && self.entries.len() > 1 {
                dropped.extend(self.drop_oldest());
            }
        }
        dropped
    }

    fn drop_oldest(&mut self) -> Option<Key> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.bytes;
        if e.report.is_some() {
            self.loaded -= 1;
        }
        // Everything after it moved down a place, the send position with it.
        self.next = self.next.saturating_sub(1);
        Some(e.key)
    }

    /// Releases every report of `boot_id` up to `seq` at the front; returns the last released.
    fn ack(&mut self, boot_id: &str, seq: u64) -> Option<Key> {
        let mut last = None;
        while self
            .entries
            .front()
            .is_some_and(|e| e.key.0 == boot_id && e.key.1 <= seq)
        {
            last = self.drop_oldest();
        }
        last
    }

    /// How many reports to read back from the spill now, if any.
    fn wants_load(&self) -> Option<usize> {
        let room = self.memory.saturating_sub(self.loaded);
        let on_disk = self.entries.len() - self.loaded;
        (self.spill_max.is_some() && room > 0 && on_disk > 0).then(|| room.min(on_disk))
    }

    /// The key of the newest report, to tell which reports a read could have returned.
    fn newest_key(&self) -> Option<Key> {
        self.entries.back().map(|e| e.key.clone())
    }

    /// Takes a read's reports into memory. Reports released meanwhile are ignored; a report
    /// the spill could not give back (unreadable, or never written) is dropped as lost.
    /// Returns the keys of the lost reports.
    fn fill(&mut self, reply: ReadReply, newest_at_request: Option<&Key>) -> Vec<Key> {
        let mut lost = Vec::new();
        for (key, report) in reply.records {
            let Some(offset) = self
                .entries
                .iter()
                .skip(self.loaded)
                .position(|e| e.key == key)
            else {
                continue; // released (acknowledged or dropped) since the read was asked for
            };
            // Unloaded reports before it are not on disk: lost.
            for _ in 0..offset {
                lost.extend(self.remove_unloaded());
            }
            match report {
                Some(r) => {
                    self.entries[self.loaded].report = Some(r);
                    self.loaded += 1;
                }
                None => lost.extend(self.remove_unloaded()),
            }
        }
        if reply.exhausted {
            // Everything pushed before the read was asked for should have come back.
            if let Some(newest) = newest_at_request {
                if let Some(end) = self
                    .entries
                    .iter()
                    .skip(self.loaded)
                    .position(|e| &e.key == newest)
                {
                    for _ in 0..=end {
                        lost.extend(self.remove_unloaded());
                    }
                }
            }
        }
        lost
    }

    fn remove_unloaded(&mut self) -> Option<Key> {
        let e = self.entries.remove(self.loaded)?;
        self.bytes -= e.bytes;
        Some(e.key)
    }

    /// A new stream: everything buffered is unacknowledged and is sent again, in order.
    fn rewind(&mut self) {
        self.next = 0;
        for e in &mut self.entries {
            e.sent_at = None;
        }
    }

    fn has_unsent(&self) -> bool {
        self.next < self.loaded
    }

    /// The next report to send, marked as sent now.
    fn take_next(&mut self) -> Option<pb::HealthReport> {
        if self.next >= self.loaded {
            return None;
        }
        let e = self.entries.get_mut(self.next)?;
        let report = e.report.clone()?;
        e.sent_at = Some(Instant::now());
        self.next += 1;
        Some(report)
    }

    /// When the oldest report still waiting for its acknowledgement was sent.
    fn oldest_unacked_sent_at(&self) -> Option<Instant> {
        self.entries.front().and_then(|e| e.sent_at)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

pub struct Uplink {
    collectors: Vec<String>,
    /// Index into `collectors` of the one in use (or being tried).
    current: usize,
    cfg: UplinkConfig,
    outbox: Outbox,
    spill: Option<Spill>,
    /// A read from the spill in flight, with the newest key at the time it was asked for.
    pending_read: Option<(oneshot::Receiver<ReadReply>, Option<Key>)>,
    /// The boot id of this run: acknowledgements of earlier boots do not move `acked_seq`.
    boot_id: Option<String>,
    pub stats: Arc<UplinkStats>,
    /// For an `https://` collector (see `tls.rs`).
    tls: Option<tonic::transport::ClientTlsConfig>,
}

enum SessionEnd {
    Shutdown,
    Lost(String),
}

impl Uplink {
    /// An uplink to `collectors` (in order of preference). With a spill, `recovered` are the
    /// reports an earlier run left unacknowledged in it.
    pub fn new(
        collectors: Vec<String>,
        cfg: UplinkConfig,
        stats: Arc<UplinkStats>,
        spill: Option<(Spill, Vec<RecoveredRecord>)>,
    ) -> Uplink {
        let spill_max = spill.as_ref().map(|_| cfg.spill_max_bytes);
        let mut outbox = Outbox::new(cfg.buffer_reports, spill_max);
        let spill = spill.map(|(spill, recovered)| {
            if !recovered.is_empty() {
                tracing::info!(reports = recovered.len(), first = ?recovered.first().map(|r| &r.key),
                    last = ?recovered.last().map(|r| &r.key), "spill: unacknowledged reports of earlier runs will be sent first");
            }
            outbox.recovered(recovered);
            spill
        });
        let mut up = Uplink {
            collectors,
            current: 0,
            cfg,
            outbox,
            spill,
            pending_read: None,
            boot_id: None,
            stats,
            tls: None,
        };
        // A spill that shrank below what the last run left: the oldest go.
        if let Some(max) = spill_max {
            let mut dropped = Vec::new();
            while up.outbox.bytes > max && up.outbox.len() > 0 {
                dropped.extend(up.outbox.drop_oldest());
            }
            up.dropped(dropped);
        }
        up.set_collector();
        up.update_gauges();
        up
    }

    /// Opens the spill directory (blocking: creates it, recovers it, starts its thread).
    pub fn open_spill(
        cfg: &UplinkConfig,
    ) -> std::io::Result<Option<(Spill, Vec<RecoveredRecord>)>> {
        let Some(dir) = &cfg.spill_path else {
            return Ok(None);
        };
        let segment = (cfg.spill_max_bytes / 16).clamp(64 << 10, 8 << 20);
        Spill::open(dir, segment).map(Some)
    }

    /// Connects with TLS (`crate::wire::tls::uplink`): the collector is verified, the agent presents
    /// its certificate.
    pub fn with_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> Uplink {
        self.tls = tls;
        self
    }

    fn endpoint_tls(&self, e: Endpoint) -> Result<Endpoint, String> {
        match &self.tls {
            Some(tls) if self.url().starts_with("https://") => e
                .tls_config(tls.clone())
                .map_err(|e| format!("collector TLS config: {e}")),
            _ => Ok(e),
        }
    }

    fn url(&self) -> &str {
        self.collectors.get(self.current).map_or("", String::as_str)
    }

    fn set_collector(&self) {
        *self
            .stats
            .collector
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.url().to_string();
    }

    fn update_gauges(&self) {
        self.stats
            .buffered
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        self.stats.spill_bytes.store(
            if self.spill.is_some() {
                self.outbox.bytes
            } else {
                0
            },
            Ordering::Relaxed,
        );
    }

    fn dropped(&mut self, keys: Vec<Key>) {
        if keys.is_empty() {
            return;
        }
        self.stats
            .dropped_total
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        if let (Some(spill), Some(last)) = (&self.spill, keys.last()) {
            spill.release_through(last.clone());
        }
        let mut ranges = self
            .stats
            .dropped_ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = ranges.len();
        note_dropped(&mut ranges, &keys);
        if ranges.len() != before || keys.len() > 1 {
            tracing::warn!(dropped = keys.len(), first = ?keys.first(), last = ?keys.last(),
                "uplink buffer full: oldest reports dropped unsent");
        }
    }

    fn push(&mut self, snap: &NodeSnapshot) {
        if self.boot_id.as_deref() != Some(snap.boot_id.as_str()) {
            self.boot_id = Some(snap.boot_id.clone());
        }
        let report = pb::HealthReport {
            node: snap.node.clone(),
            boot_id: snap.boot_id.clone(),
            seq: snap.seq,
            sent_at: None,
            snapshot: Some(convert::snapshot(snap)),
        };
        let bytes = match &self.spill {
            Some(spill) => {
                let b = spill.append(&report, self.outbox.next_push_in_memory());
                self.stats.spilled_total.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => 0,
        };
        let dropped = self.outbox.push(report, bytes);
        self.dropped(dropped);
        self.request_read();
        self.update_gauges();
    }

    fn ack(&mut self, boot_id: &str, seq: u64) {
        if let (Some(last), Some(spill)) = (self.outbox.ack(boot_id, seq), &self.spill) {
            spill.release_through(last);
        }
        if self.boot_id.as_deref() == Some(boot_id) {
            self.stats.acked_seq.fetch_max(seq, Ordering::Relaxed);
        }
        self.request_read();
        self.update_gauges();
    }

    /// Asks the spill for the next reports when memory has room for them (one read at a time).
    fn request_read(&mut self) {
        if self.pending_read.is_some() {
            return;
        }
        if let (Some(n), Some(spill)) = (self.outbox.wants_load(), &self.spill) {
            self.pending_read = Some((spill.read(n), self.outbox.newest_key()));
        }
    }

    fn read_done(&mut self, reply: ReadReply, newest: Option<Key>) {
        let lost = self.outbox.fill(reply, newest.as_ref());
        if !lost.is_empty() {
            tracing::error!(
                reports = lost.len(),
                "spill: reports could not be read back and are lost"
            );
        }
        self.dropped(lost);
        self.request_read();
        self.update_gauges();
    }

    /// Runs until `cancel` fires.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<Arc<NodeSnapshot>>,
        cancel: CancellationToken,
    ) {
        self.request_read();
        let mut backoff = self.cfg.backoff_initial;
        let mut failed_in_row = 0usize;
        loop {
            let started = Instant::now();
            match self.session(&mut reports, &cancel).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Lost(why) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    self.stats.reconnects_total.fetch_add(1, Ordering::Relaxed);
                    // A session that lived a while was healthy: start backing off afresh.
                    if started.elapsed() > self.cfg.backoff_max {
                        backoff = self.cfg.backoff_initial;
                        failed_in_row = 0;
                    }
                    failed_in_row += 1;
                    let failed = self.url().to_string();
                    self.current = (self.current + 1) % self.collectors.len().max(1);
                    self.set_collector();
                    // The next collector is tried after a short pause; only once every one has
                    // failed in a row does the wait grow.
                    let round_over = failed_in_row.is_multiple_of(self.collectors.len().max(1));
                    let base = if round_over {
                        let b = backoff;
                        backoff = (backoff * 2).min(self.cfg.backoff_max);
                        b
                    } else {
                        self.cfg.backoff_initial
                    };
                    let wait = base.mul_f64(0.8 + 0.4 * rand::random::<f64>());
                    tracing::warn!(collector = %failed, error = %why, next = %self.url(), retry_in_ms = wait.as_millis() as u64,
                        buffered = self.outbox.len(), "collector stream lost");
                    // Keep taking reports while waiting, so the hand-off queue never fills.
                    let sleep = tokio::time::sleep(wait);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return self.close().await,
                            _ = &mut sleep => break,
                            Some(r) = reports.recv() => self.push(&r),
                            (reply, newest) = read_finished(&mut self.pending_read) => self.read_done(reply, newest),
                        }
                    }
                }
            }
        }
        self.close().await;
    }

    /// Lets the spill thread write, fsync and record its head before the agent exits.
    async fn close(mut self) {
        if let Some(spill) = self.spill.take() {
            let _ = tokio::task::spawn_blocking(move || spill.close()).await;
        }
    }

    async fn session(
        &mut self,
        reports: &mut mpsc::Receiver<Arc<NodeSnapshot>>,
        cancel: &CancellationToken,
    ) -> SessionEnd {
        let url = self.url().to_string();
        let endpoint = match Endpoint::from_shared(url.clone()) {
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
                (reply, newest) = read_finished(&mut self.pending_read) => self.read_done(reply, newest),
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
                (reply, newest) = read_finished(&mut self.pending_read) => self.read_done(reply, newest),
                r = &mut opened => match r {
                    Ok(Ok(resp)) => break resp.into_inner(),
                    Ok(Err(status)) => return SessionEnd::Lost(format!("open Report stream: {status}")),
                    Err(_) => return SessionEnd::Lost("open Report stream: no answer within the connect timeout".to_string()),
                },
            }
        };
        tracing::info!(collector = %url, buffered = self.outbox.len(), "collector stream open");
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
                (reply, newest) = read_finished(&mut self.pending_read) => self.read_done(reply, newest),
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

/// Resolves when the spill read in flight (if any) answers; never, if there is none. A spill
/// thread that is gone answers "nothing more", so the reports it held count as lost.
async fn read_finished(
    pending: &mut Option<(oneshot::Receiver<ReadReply>, Option<Key>)>,
) -> (ReadReply, Option<Key>) {
    let Some((rx, _)) = pending.as_mut() else {
        return std::future::pending().await;
    };
    let reply = rx.await.unwrap_or(ReadReply {
        records: Vec::new(),
        exhausted: true,
    });
    let newest = pending.take().and_then(|(_, newest)| newest);
    (reply, newest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostStatus;
    use crate::model::{DroppedRange, DROPPED_RANGES_SHOWN};
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
            maintenance: None,
        }
    }

    fn cfg(buffer: usize) -> UplinkConfig {
        UplinkConfig {
            buffer_reports: buffer,
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(100),
            ack_timeout: Duration::from_secs(1),
            spill_path: None,
            spill_max_bytes: 1 << 20,
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
        o.entries.iter().map(|e| e.key.1).collect()
    }

    fn key(seq: u64) -> Key {
        ("b".to_string(), seq)
    }

    #[test]
    fn buffer_is_bounded_drops_oldest_and_acks_release_in_order() {
        let mut u = Uplink::new(
            vec!["http://127.0.0.1:1".into()],
            cfg(3),
            Arc::default(),
            None,
        );
        for s in 1..=5 {
            u.push(&snap(s));
        }
        assert_eq!(seqs(&u.outbox), vec![3, 4, 5]);
        assert_eq!(u.stats.dropped_total.load(Ordering::Relaxed), 2);
        assert_eq!(
            *u.stats.dropped_ranges.lock().expect("lock"),
            vec![DroppedRange {
                boot_id: "b".into(),
                first_seq: 1,
                last_seq: 2
            }]
        );
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
    fn dropped_ranges_merge_runs_and_keep_the_most_recent() {
        let mut ranges = Vec::new();
        note_dropped(&mut ranges, &[key(1), key(2), key(3), key(7)]);
        note_dropped(&mut ranges, &[key(8), ("c".into(), 9)]);
        let shown: Vec<(String, u64, u64)> = ranges
            .iter()
            .map(|r| (r.boot_id.clone(), r.first_seq, r.last_seq))
            .collect();
        assert_eq!(
            shown,
            vec![("b".into(), 1, 3), ("b".into(), 7, 8), ("c".into(), 9, 9)]
        );
        for s in 0..40 {
            note_dropped(&mut ranges, &[key(100 + 2 * s)]);
        }
        assert_eq!(ranges.len(), DROPPED_RANGES_SHOWN);
        assert_eq!(ranges.last().map(|r| r.first_seq), Some(178));
    }

    #[test]
    fn a_report_buffered_while_full_is_still_sent() {
        // The trace from review: capacity 3, all sent, then a push drops the oldest. The new
        // report must still be sent, and nothing is released unsent.
        let mut o = Outbox::new(3, None);
        for s in 1..=3 {
            o.push(report(s), 0);
        }
        let sent: Vec<u64> = std::iter::from_fn(|| o.take_next())
            .map(|r| r.seq)
            .collect();
        assert_eq!(sent, vec![1, 2, 3]);
        assert_eq!(
            o.push(report(4), 0),
            vec![key(1)],
            "full: the oldest is dropped"
        );
        assert_eq!(
            o.take_next().map(|r| r.seq),
            Some(4),
            "4 is sent, not skipped"
        );
        o.ack("b", 2);
        assert!(!o.has_unsent());
        o.push(report(5), 0);
        assert_eq!(o.take_next().map(|r| r.seq), Some(5));
        o.ack("b", 5);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn rewind_resends_everything_unacknowledged_in_order() {
        let mut o = Outbox::new(10, None);
        for s in 1..=4 {
            o.push(report(s), 0);
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

    #[test]
    fn with_a_spill_memory_holds_the_oldest_and_the_rest_is_read_back_in_order() {
        let mut o = Outbox::new(2, Some(1000));
        for s in 1..=5 {
            assert!(o.push(report(s), 10).is_empty());
        }
        assert_eq!(o.loaded, 2);
        assert_eq!(o.wants_load(), None, "memory is full");
        let sent: Vec<u64> = std::iter::from_fn(|| o.take_next())
            .map(|r| r.seq)
            .collect();
        assert_eq!(sent, vec![1, 2]);
        o.ack("b", 1);
        assert_eq!(o.wants_load(), Some(1));
        let newest = o.newest_key();
        // The spill answers with 3 (and, as it may, more than asked for is never sent).
        let lost = o.fill(
            ReadReply {
                records: vec![(key(3), Some(report(3)))],
                exhausted: false,
            },
            newest.as_ref(),
        );
        assert!(lost.is_empty());
        assert_eq!(o.take_next().map(|r| r.seq), Some(3));
        o.ack("b", 3);
        assert_eq!(o.wants_load(), Some(2));
        // 4 could not be read back; 5 could: 4 is lost, 5 is sent.
        let lost = o.fill(
            ReadReply {
                records: vec![(key(4), None), (key(5), Some(report(5)))],
                exhausted: true,
            },
            newest.as_ref(),
        );
        assert_eq!(lost, vec![key(4)]);
        assert_eq!(o.take_next().map(|r| r.seq), Some(5));
        assert_eq!(o.bytes, 10);
    }

    #[test]
    fn a_full_spill_drops_the_oldest_and_a_read_of_released_reports_is_ignored() {
        let mut o = Outbox::new(1, Some(30));
        for s in 1..=3 {
            assert!(o.push(report(s), 10).is_empty());
        }
        let newest = o.newest_key();
        assert_eq!(o.push(report(4), 10), vec![key(1)]);
        assert_eq!(seqs(&o), vec![2, 3, 4]);
        assert_eq!(o.loaded, 0, "1 was the one in memory");
        // A read asked for before the drop may still return 1: ignored.
        let lost = o.fill(
            ReadReply {
                records: vec![(key(1), Some(report(1))), (key(2), Some(report(2)))],
                exhausted: false,
            },
            newest.as_ref(),
        );
        assert!(lost.is_empty());
        assert_eq!(o.take_next().map(|r| r.seq), Some(2));
    }

    #[test]
    fn an_exhausted_spill_means_the_unread_reports_before_the_request_are_lost() {
        let mut o = Outbox::new(1, Some(1000));
        for s in 1..=3 {
            o.push(report(s), 10);
        }
        o.ack("b", 1);
        let newest = o.newest_key();
        o.push(report(4), 10); // pushed after the read was asked for: not lost
        let lost = o.fill(
            ReadReply {
                records: vec![],
                exhausted: true,
            },
            newest.as_ref(),
        );
        assert_eq!(lost, vec![key(2), key(3)]);
        assert_eq!(seqs(&o), vec![4]);
    }

    #[tokio::test]
    async fn reports_of_an_earlier_run_come_back_from_the_spill_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = cfg(4);
        c.spill_path = Some(dir.path().join("spill"));
        {
            let opened = Uplink::open_spill(&c).expect("open");
            let mut u = Uplink::new(
                vec!["http://127.0.0.1:1".into()],
                c.clone(),
                Arc::default(),
                opened,
            );
            for s in 1..=10 {
                u.push(&snap(s));
            }
            u.ack("b", 3);
            u.close().await;
        }
        let opened = Uplink::open_spill(&c).expect("reopen");
        let mut u = Uplink::new(vec!["http://127.0.0.1:1".into()], c, Arc::default(), opened);
        assert_eq!(seqs(&u.outbox), (4..=10).collect::<Vec<_>>());
        let mut sent = Vec::new();
        for _ in 0..100 {
            u.request_read();
            let (reply, newest) = read_finished(&mut u.pending_read).await;
            u.read_done(reply, newest);
            while let Some(r) = u.outbox.take_next() {
                sent.push(r.seq);
                u.ack(&r.boot_id, r.seq);
            }
            if u.outbox.len() == 0 {
                break;
            }
        }
        assert_eq!(sent, (4..=10).collect::<Vec<_>>());
        u.close().await;
    }
}
