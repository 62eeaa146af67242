//! The process watchdog: the `[[process]]` rules' processes (ngspice runs, the solver service),
//! their runtime, memory and state, and the conditions they raise (PROCESS_STUCK,
//! PROCESS_ZOMBIE, PROCESS_MISSING, HOST_MEMORY_HIGH about a process). The rules themselves are
//! parsed and matched by `config::process`. Killing one is an action (`action::kill`) that
//! goes through `action::Actions::run` like a device reset.
//!
//! /proc is read with the `procfs` crate rather than sysinfo: the kill guard needs the kernel's
//! exact start time in clock ticks (sysinfo rounds it to seconds), reports need the raw state
//! letter (D vs S), and the scan reads only `stat` (plus `cmdline` for candidates) instead of
//! refreshing sysinfo's whole process table each interval.
//!
//! Scanning runs on the blocking pool under `[host] deadline` every `[host] interval`, with the
//! same bounded-job rule as the host monitor: a scan stuck in a /proc read is waited on, not
//! restarted, and the report is marked stale (at least UNKNOWN) meanwhile.

pub mod conditions;
pub mod scan;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health_hal::{rollup, Condition, ConditionTracker, HealthState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use crate::config::ProcessRule;
use crate::host::BoundedJob;
pub use scan::ProcessInfo;

/// The newest scan and what it means.
#[derive(Debug, Clone, Default)]
pub struct ProcessReport {
    pub processes: Vec<ProcessInfo>,
    pub conditions: Vec<Condition>,
    pub state: HealthState,
}

/// What the node and the kill action need: the rules and the newest report.
#[derive(Clone)]
pub struct ProcessWatch {
    pub rules: Arc<Vec<ProcessRule>>,
    pub report: watch::Receiver<Arc<ProcessReport>>,
}

/// Starts the watchdog; `None` when no `[[process]]` rule is configured.
pub fn spawn(
    rules: Vec<ProcessRule>,
    interval: Duration,
    deadline: Duration,
    cancel: CancellationToken,
) -> Option<ProcessWatch> {
    if rules.is_empty() {
        return None;
    }
    let rules = Arc::new(rules);
    let (tx, rx) = watch::channel(Arc::new(ProcessReport {
        state: HealthState::Unknown,
        ..Default::default()
    }));
    let scan_rules = rules.clone();
    tokio::spawn(async move {
        let mut tracker = ConditionTracker::default();
        let mut job = BoundedJob::new();
        let mut cpu_seen = scan::CpuSeen::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let scanned = job
                .poll(deadline, || {
                    let rules = scan_rules.clone();
                    tokio::task::spawn_blocking(move || scan::scan(&rules))
                })
                .await;
            let report = match scanned {
                Some(Ok(mut processes)) => {
                    scan::rate_cpu(&mut cpu_seen, &mut processes, std::time::Instant::now());
                    let found = conditions::evaluate(&scan_rules, &processes, SystemTime::now());
                    let conditions = tracker.track(found);
                    ProcessReport {
                        state: rollup(&conditions),
                        processes,
                        conditions,
                    }
                }
                failed => {
                    match failed {
                        Some(Err(e)) => tracing::warn!(error = %e, "process scan failed"),
                        _ => tracing::warn!(
                            deadline_s = deadline.as_secs_f64(),
                            "process scan missed its deadline"
                        ),
                    }
                    // Old data: never better than UNKNOWN, never hiding a fault it showed.
                    let mut previous = (**tx.borrow()).clone();
                    previous.state = previous.state.max(HealthState::Unknown);
                    previous
                }
            };
            tx.send_replace(Arc::new(report));
        }
    });
    Some(ProcessWatch { rules, report: rx })
}
