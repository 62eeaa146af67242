//! The log follower: the `[[log]]` rules' files and journald units, the lines matching each
//! rule's pattern, and LOG_PATTERN (subject `log:<name>`) while a rule's window holds `count`
//! matches. The rules are parsed by `config::log`; the node merges this report into the host,
//! like the process watchdog's.
//!
//! File rules are read by one task that runs a pass over all of them every poll on the
//! blocking pool (`files`), bounded like the host monitor's jobs: a pass stuck on a dead mount
//! is waited on, not restarted. Each journal rule has its own journalctl child (`journal`).
//! Both feed a per-rule [`tally::RuleTally`], which the task reads after each poll to publish
//! statuses and conditions. Memory is bounded per rule (a cut line, `count` timestamps, the
//! last match) and CPU per poll (bytes read per file per pass), whatever the log rate.

pub mod files;
pub mod journal;
pub mod lines;
pub mod tally;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use health_hal::{rollup, Condition, ConditionTracker, HealthState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{LogRule, LogSource};
use crate::host::BoundedJob;
use files::FileSet;
use tally::RuleTally;

/// One rule as last seen, for reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRuleStatus {
    pub name: String,
    /// The files followed now, or the journal unit.
    pub files: Vec<String>,
    pub matches_total: u64,
    /// Matches within the window, at most the rule's `count` (only that many are kept).
    pub matches_in_window: u64,
    pub last_match: String,
    pub last_match_at: Option<SystemTime>,
    pub lines_total: u64,
    pub bytes_skipped: u64,
}

/// The newest statuses and what they mean.
#[derive(Debug, Clone, Default)]
pub struct LogReport {
    pub rules: Vec<LogRuleStatus>,
    pub conditions: Vec<Condition>,
    pub state: HealthState,
}

/// Files are looked at this often at most, whatever `[host] interval` is: a matching line
/// should become a condition within about a second.
const POLL_MAX: Duration = Duration::from_secs(1);

fn status(rule: &LogRule, t: &RuleTally, now: SystemTime) -> LogRuleStatus {
    LogRuleStatus {
        name: rule.name.clone(),
        files: t.sources.clone(),
        matches_total: t.matches_total,
        matches_in_window: t.in_window(rule, now),
        last_match: t.last.line.clone(),
        last_match_at: t.last.at,
        lines_total: t.lines_total,
        bytes_skipped: t.bytes_skipped,
    }
}

/// Starts the follower; `None` when no `[[log]]` rule is configured. Files are polled every
/// `interval` (at most every second), each pass bounded by `deadline`.
pub fn spawn(
    rules: Vec<LogRule>,
    interval: Duration,
    deadline: Duration,
    cancel: CancellationToken,
) -> Option<watch::Receiver<Arc<LogReport>>> {
    if rules.is_empty() {
        return None;
    }
    let rules: Vec<Arc<LogRule>> = rules.into_iter().map(Arc::new).collect();
    let tallies: Vec<Arc<Mutex<RuleTally>>> = rules.iter().map(|_| Arc::default()).collect();
    // (rule index, its files) for the file rules; journal rules get their own task.
    let mut sets = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        match &rule.source {
            LogSource::Files(globs) => sets.push((i, FileSet::new(globs.clone()))),
            LogSource::Journal(unit) => {
                tokio::spawn(journal::follow(
                    rule.clone(),
                    unit.clone(),
                    tallies[i].clone(),
                    cancel.clone(),
                ));
            }
        }
    }
    let sets = Arc::new(Mutex::new(sets));
    let (tx, rx) = watch::channel(Arc::new(LogReport {
        state: HealthState::Unknown,
        ..Default::default()
    }));
    tokio::spawn(async move {
        let mut tracker = ConditionTracker::default();
        let mut job = BoundedJob::new();
        let mut tick = tokio::time::interval(interval.min(POLL_MAX));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let fresh = job
                .poll(deadline, || {
                    let (sets, rules, tallies) = (sets.clone(), rules.clone(), tallies.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut sets = sets.lock().unwrap_or_else(|e| e.into_inner());
                        for (i, set) in sets.iter_mut() {
                            if let (Some(rule), Some(tally)) = (rules.get(*i), tallies.get(*i)) {
                                set.pass(rule, tally);
                            }
                        }
                    })
                })
                .await
                .is_some();
            if !fresh {
                tracing::warn!(
                    deadline_s = deadline.as_secs_f64(),
                    "log file pass missed its deadline"
                );
            }
            let now = SystemTime::now();
            let mut statuses = Vec::with_capacity(rules.len());
            let mut found = Vec::new();
            for (rule, tally) in rules.iter().zip(&tallies) {
                let t = tally.lock().unwrap_or_else(|e| e.into_inner());
                statuses.push(status(rule, &t, now));
                found.extend(t.condition(rule, now));
            }
            let conditions = tracker.track(found);
            let state = if fresh {
                rollup(&conditions)
            } else {
                rollup(&conditions).max(HealthState::Unknown)
            };
            tx.send_replace(Arc::new(LogReport {
                rules: statuses,
                conditions,
                state,
            }));
        }
    });
    Some(rx)
}
