//! The history's writer thread: takes what has queued (up to `BATCH` records), writes it in
//! one transaction, and deletes what is past retention now and then.
//!
//! Ingest never waits on it: the sink `try_send`s into a bounded channel, and a full channel
//! drops the record and counts it. When the database goes away (PostgreSQL stopped, the
//! network to it down) the batch in hand is kept, not lost: the writer reconnects with
//! backoff and writes it then, while the channel fills up to its bound and then drops. The
//! outage shows as `HistoryStats::available` = false (a metric and an alert on the
//! collector); nothing else in the collector stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::db::Db;
use super::write::{prune, write_batch};
use super::{system_ms, HistoryStats, Record, Store};

/// Records written per transaction at most.
const BATCH: usize = 1000;
/// How long the writer waits for a record before looking at the stop flag and the pruning
/// schedule again.
const IDLE_WAIT: Duration = Duration::from_millis(200);
/// Reconnection backoff: from the first to the longest wait between attempts.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// At shutdown with the database away, how long to keep trying before giving up on what is
/// queued (systemd's stop timeout is longer).
const SHUTDOWN_RETRY: Duration = Duration::from_secs(5);

pub(super) struct Writer {
    pub(super) store: Store,
    pub(super) db: Option<Box<dyn Db>>,
    pub(super) inbox: Receiver<Record>,
    pub(super) retention: Duration,
    pub(super) stats: Arc<HistoryStats>,
    pub(super) stop: Arc<AtomicBool>,
    /// This collector's name, for `holders`.
    pub(super) me: String,
}

impl Writer {
    pub(super) fn run(mut self) {
        let prune_every =
            (self.retention / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
        let mut last_prune: Option<Instant> = None;
        let mut batch = Vec::with_capacity(BATCH);
        let mut retry = RETRY_FIRST;
        let mut stopping_since: Option<Instant> = None;
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if stopping && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
            }
            self.take(&mut batch, stopping);
            if batch.is_empty() && stopping {
                break;
            }
            if !self.connected() {
                if stopping_since.is_some_and(|at| at.elapsed() >= SHUTDOWN_RETRY) {
                    self.give_up(batch.len());
                    break;
                }
                std::thread::sleep(retry);
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
            retry = RETRY_FIRST;
            if !batch.is_empty() {
                self.write(&mut batch);
                continue;
            }
            if last_prune.is_none_or(|at| at.elapsed() >= prune_every) {
                last_prune = Some(Instant::now());
                self.prune();
            }
        }
        tracing::debug!("history writer stopped");
    }

    /// Tops the batch up from the channel: waits up to `IDLE_WAIT` for the first record when
    /// the batch is empty and the writer is not stopping.
    fn take(&mut self, batch: &mut Vec<Record>, stopping: bool) {
        if batch.is_empty() && !stopping {
            match self.inbox.recv_timeout(IDLE_WAIT) {
                Ok(record) => batch.push(record),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
        while batch.len() < BATCH {
            match self.inbox.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
    }

    /// Whether there is a connection, made again if it was lost; false while the database
    /// is away.
    fn connected(&mut self) -> bool {
        if self.db.is_none() {
            match self.store.open_for_writing() {
                Ok(db) => {
                    tracing::info!(database = %self.store.describe(), "history database reachable again: writing what queued");
                    self.db = Some(db);
                    self.set_available(true);
                }
                Err(error) => {
                    self.set_available(false);
                    if error.unavailable {
                        tracing::debug!(%error, "history database still away");
                    } else {
                        // Reachable but refusing this collector (a newer schema written by
                        // another collector, a changed password): retried, but say why.
                        tracing::warn!(database = %self.store.describe(), %error, "history database refuses this collector");
                    }
                }
            }
        }
        self.db.is_some()
    }

    fn write(&mut self, batch: &mut Vec<Record>) {
        let Some(db) = self.db.as_mut() else {
            return;
        };
        let count = batch.len() as u64;
        match write_batch(db.as_mut(), batch, &self.me) {
            Ok(()) => {
                self.stats.written_total.fetch_add(count, Ordering::Relaxed);
                let now = system_ms(SystemTime::now());
                for made in batch.iter().filter_map(Record::made_ms) {
                    let lag = u64::try_from(now.saturating_sub(made)).unwrap_or(0);
                    self.stats.write_lag.observe(Duration::from_millis(lag));
                }
                batch.clear();
            }
            Err(error) if error.unavailable => {
                // Kept: written once the database is back.
                tracing::warn!(%error, records = count, "history database away: keeping the batch, events queue");
                self.db = None;
                self.set_available(false);
            }
            Err(error) => {
                self.stats
                    .write_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.lost_total.fetch_add(count, Ordering::Relaxed);
                tracing::warn!(%error, records = count, "history write failed: records lost");
                batch.clear();
            }
        }
    }

    fn prune(&mut self) {
        let Some(db) = self.db.as_mut() else {
            return;
        };
        match prune(db.as_mut(), SystemTime::now(), self.retention) {
            Ok(0) => {}
            Ok(rows) => {
                self.stats.pruned_total.fetch_add(rows, Ordering::Relaxed);
                tracing::info!(rows, retention = %humantime::format_duration(self.retention), "history pruned");
            }
            Err(error) => {
                if error.unavailable {
                    self.db = None;
                    self.set_available(false);
                }
                tracing::warn!(%error, "history pruning failed");
            }
        }
    }

    fn set_available(&self, available: bool) {
        let was = self.stats.available.swap(available, Ordering::Relaxed);
        if was && !available {
            self.stats
                .unavailable_since_ms
                .store(system_ms(SystemTime::now()), Ordering::Relaxed);
            tracing::error!(database = %self.store.describe(), "history database unavailable: events queue in memory up to the bound, then are dropped and counted");
        }
    }

    /// Shutdown with the database still away: what is queued is lost, and counted.
    fn give_up(&mut self, in_hand: usize) {
        let queued = self.inbox.try_iter().count();
        let lost = (in_hand + queued) as u64;
        self.stats.lost_total.fetch_add(lost, Ordering::Relaxed);
        tracing::error!(
            lost,
            "history database still away at shutdown: queued events lost"
        );
    }
}
