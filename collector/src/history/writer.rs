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
    /// Every sink has been dropped.
    pub(super) disconnected: bool,
}

impl Writer {
    pub(super) fn run(mut self) {
        let prune_every =
            (self.retention / 24).clamp(Duration::from_secs(60), Duration::from_secs(3600));
        let mut next_prune = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        let mut retry = RETRY_FIRST;
        let mut stopping_since: Option<Instant> = None;
        loop {
            let stopping = self.disconnected || self.stop.load(Ordering::Acquire);
            if stopping && stopping_since.is_none() {
                stopping_since = Some(Instant::now());
            }
            self.take(&mut batch, stopping);
            if batch.is_empty() && stopping {
                break;
            }
            let wrote = !batch.is_empty();
            if self.connected() && (batch.is_empty() || self.write(&mut batch)) {
                if wrote {
                    retry = RETRY_FIRST;
                }
                // Checked after every write too: under steady load the writer is never idle,
                // and retention must still run.
                if Instant::now() >= next_prune {
                    let more = self.prune();
                    next_prune = Instant::now() + if more { Duration::ZERO } else { prune_every };
                }
                continue;
            }
            // The database is away: wait (waking for a stop), then try again.
            if stopping_since.is_some_and(|at| at.elapsed() >= SHUTDOWN_RETRY) {
                self.give_up(batch.len());
                break;
            }
            self.pause(retry);
            retry = (retry * 2).min(RETRY_MAX);
        }
        tracing::debug!("history writer stopped");
    }

    /// Tops the batch up from the channel: waits up to `IDLE_WAIT` for the first record when
    /// the batch is empty and the writer is not stopping.
    fn take(&mut self, batch: &mut Vec<Record>, stopping: bool) {
        if batch.is_empty() && !stopping {
            match self.inbox.recv_timeout(IDLE_WAIT) {
                Ok(record) => batch.push(record),
                Err(RecvTimeoutError::Timeout) => {}
                // Every sink is gone (the history dropped without `close`): stop, or this
                // loop would spin.
                Err(RecvTimeoutError::Disconnected) => self.disconnected = true,
            }
        }
        while batch.len() < BATCH {
            match self.inbox.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
    }

    /// Sleeps `wait`, waking early when the history is being closed.
    fn pause(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until && !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
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

    /// Writes the batch: true when it is done with (written, or lost to a refusal), false
    /// when the database went away (the batch, or what is left of it, is kept).
    fn write(&mut self, batch: &mut Vec<Record>) -> bool {
        let Some(db) = self.db.as_mut() else {
            return false;
        };
        let count = batch.len() as u64;
        match write_batch(db.as_mut(), batch, &self.me) {
            Ok(()) => {
                written(&self.stats, batch);
                batch.clear();
                true
            }
            Err(error) if error.unavailable => {
                tracing::warn!(%error, records = count, "history database away: keeping the batch, events queue");
                self.away();
                false
            }
            Err(error) => {
                // One bad record (a text the database will not store) must not cost the
                // others: each is tried alone, and only what is refused is lost.
                tracing::warn!(%error, records = count, "history batch refused: writing its records one by one");
                self.stats
                    .write_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                self.one_by_one(batch)
            }
        }
    }

    fn one_by_one(&mut self, batch: &mut Vec<Record>) -> bool {
        let Some(db) = self.db.as_mut() else {
            return false;
        };
        for (done, record) in batch.iter().enumerate() {
            match write_batch(db.as_mut(), std::slice::from_ref(record), &self.me) {
                Ok(()) => written(&self.stats, std::slice::from_ref(record)),
                Err(error) if error.unavailable => {
                    batch.drain(..done);
                    self.away();
                    return false;
                }
                Err(error) => {
                    self.stats.lost_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%error, node = record.node(), "history record refused: lost");
                }
            }
        }
        batch.clear();
        true
    }

    fn away(&mut self) {
        self.db = None;
        self.set_available(false);
    }

    /// One round of retention; true when it stopped at its cap with more to delete.
    fn prune(&mut self) -> bool {
        let Some(db) = self.db.as_mut() else {
            return false;
        };
        match prune(db.as_mut(), SystemTime::now(), self.retention) {
            Ok((rows, more)) => {
                if rows > 0 {
                    self.stats.pruned_total.fetch_add(rows, Ordering::Relaxed);
                    tracing::info!(rows, retention = %humantime::format_duration(self.retention), "history pruned");
                }
                more
            }
            Err(error) => {
                if error.unavailable {
                    self.away();
                }
                tracing::warn!(%error, "history pruning failed");
                false
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

/// Counts records written, and their write lag.
fn written(stats: &HistoryStats, records: &[Record]) {
    stats
        .written_total
        .fetch_add(records.len() as u64, Ordering::Relaxed);
    let now = system_ms(SystemTime::now());
    for made in records.iter().filter_map(Record::made_ms) {
        let lag = u64::try_from(now.saturating_sub(made)).unwrap_or(0);
        stats.write_lag.observe(Duration::from_millis(lag));
    }
}
