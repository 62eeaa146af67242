//! The periodic sweep over the fleet's silent nodes: one silent for `stale_after` is marked
//! stale and NODE_STALE fires for it; one silent for `forget_after` is forgotten (removed from
//! the fleet) and every alert it still has is resolved. It also fires pending alerts whose
//! `for` duration has passed.
//!
//! It also carries the systemd watchdog pings: a sweep touches the fleet lock and the alert
//! book, so a collector whose state is wedged stops sweeping and, with it, stops pinging.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use health_daemon::systemd;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::fleet::Fleet;

/// Sweeps every `interval` (or more often if the watchdog needs it) until `shutdown`.
pub async fn run(
    fleet: Arc<Fleet>,
    alerts: Arc<Alerts>,
    interval: Duration,
    watchdog: Option<Duration>,
    collector: String,
    shutdown: CancellationToken,
) {
    let period = watchdog.map_or(interval, |ping_every| interval.min(ping_every));
    if period < interval {
        tracing::info!(
            sweep_interval = %humantime::format_duration(interval),
            period = %humantime::format_duration(period),
            "sweeping more often than configured to keep the systemd watchdog fed"
        );
    }
    let mut ticker = tokio::time::interval(period);
    // After a stall, sweep once and carry on: a burst of catch-up sweeps would find nothing new.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        sweep(&fleet, &alerts, Instant::now(), SystemTime::now());
        alerts.check_history(&collector, SystemTime::now());
        if watchdog.is_some() {
            systemd::watchdog_ping();
        }
    }
}

/// One sweep: every node that has just gone stale fires NODE_STALE; every node just forgotten
/// has its alerts resolved.
pub fn sweep(fleet: &Fleet, alerts: &Alerts, now: Instant, wall: SystemTime) {
    // Pending alerts whose `for` has passed fire now, not at their node's next report.
    alerts.promote_due(now, wall);
    let swept = fleet.sweep(now);
    for went in swept.went_stale {
        alerts.node_stale(
            &went.node,
            went.generation,
            went.silent_for,
            fleet.stale_after(),
            wall,
        );
    }
    for gone in swept.forgotten {
        alerts.forget(
            &gone.node,
            gone.generation,
            gone.silent_for,
            fleet.forget_after(),
            wall,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Applied, Arrival, Limits, Report};
    use health_proto::v1::{
        AlertEvent, AlertStatus, Condition, ConditionCode, HostHealth, NodeSnapshot, Severity,
    };

    const LIMITS: Limits = Limits {
        stale_after: Duration::from_secs(10),
        forget_after: Duration::from_secs(60),
        max_nodes: 16,
    };

    /// What the service does with a report: apply it to the fleet, evaluate it for alerts.
    fn report(fleet: &Fleet, alerts: &Alerts, seq: u64, disk_full: bool, at: Instant) {
        let conditions = if disk_full {
            vec![Condition {
                code: ConditionCode::DiskFull as i32,
                severity: Severity::Critical as i32,
                message: "99%".to_string(),
                ..Default::default()
            }]
        } else {
            Vec::new()
        };
        let snapshot = NodeSnapshot {
            host: Some(HostHealth {
                conditions,
                ..Default::default()
            }),
            ..Default::default()
        };
        let report = Report {
            node: "n1".to_string(),
            boot_id: "b1".to_string(),
            seq,
            snapshot,
        };
        let arrival = Arrival {
            peer: "127.0.0.1:1",
            at,
            wall: SystemTime::now(),
        };
        let applied = fleet.apply(report, arrival).expect("the fleet is not full");
        if let Applied::Current {
            generation,
            snapshot,
            ..
        } = applied
        {
            alerts.observe("n1", generation, &snapshot, None, SystemTime::now());
        }
    }

    fn drain(rx: &mut tokio::sync::broadcast::Receiver<AlertEvent>) -> Vec<(String, i32)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|event| event.alert)
            .map(|alert| (alert.fingerprint, alert.status))
            .collect()
    }

    #[test]
    fn a_sweep_marks_the_fleet_and_fires_node_stale() {
        let fleet = Fleet::new(LIMITS, 16);
        let alerts = Alerts::new(16);
        let t0 = Instant::now();
        report(&fleet, &alerts, 1, false, t0);
        let (_, mut rx) = alerts.watch();

        sweep(
            &fleet,
            &alerts,
            t0 + Duration::from_secs(5),
            SystemTime::now(),
        );
        assert!(rx.try_recv().is_err());

        sweep(
            &fleet,
            &alerts,
            t0 + Duration::from_secs(10),
            SystemTime::now(),
        );
        let event = rx.try_recv().expect("NODE_STALE fired");
        let alert = event.alert.expect("alert");
        assert_eq!(alert.fingerprint, "n1/node/NODE_STALE");
        assert_eq!(alert.status, AlertStatus::Firing as i32);
        assert!(fleet.nodes()[0].stale);
    }

    #[test]
    fn a_sweep_forgets_a_long_silent_node_and_resolves_its_alerts() {
        let fleet = Fleet::new(LIMITS, 16);
        let alerts = Alerts::new(16);
        let t0 = Instant::now();
        report(&fleet, &alerts, 1, true, t0);
        let (firing, mut rx) = alerts.watch();
        assert_eq!(firing.len(), 1, "DISK_FULL fires");

        sweep(&fleet, &alerts, t0 + LIMITS.stale_after, SystemTime::now());
        let firing = AlertStatus::Firing as i32;
        let resolved = AlertStatus::Resolved as i32;
        assert_eq!(
            drain(&mut rx),
            vec![("n1/node/NODE_STALE".to_string(), firing)]
        );

        let wall = SystemTime::now();
        sweep(&fleet, &alerts, t0 + LIMITS.forget_after, wall);
        assert!(fleet.nodes().is_empty(), "the node is forgotten");
        assert!(alerts.watch().0.is_empty(), "and so are its alerts");
        assert_eq!(
            drain(&mut rx),
            vec![
                ("n1/node/NODE_STALE".to_string(), resolved),
                ("n1/host/DISK_FULL".to_string(), resolved),
            ]
        );

        // Nothing more to sweep, however long it stays away.
        sweep(&fleet, &alerts, t0 + LIMITS.forget_after * 10, wall);
        assert!(drain(&mut rx).is_empty());

        // It reports again, seq 1 of the same boot: a new node, its alerts firing as new.
        let back = t0 + LIMITS.forget_after * 10;
        report(&fleet, &alerts, 1, true, back);
        assert_eq!(fleet.nodes().len(), 1);
        assert!(!fleet.nodes()[0].stale);
        assert_eq!(
            drain(&mut rx),
            vec![("n1/host/DISK_FULL".to_string(), firing)]
        );
    }
}
