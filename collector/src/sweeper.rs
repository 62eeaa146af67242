//! The periodic sweep that marks silent nodes stale and raises NODE_STALE for them.
//!
//! It also carries the systemd watchdog pings: a sweep touches the fleet lock and the alert
//! book, so a collector whose state is wedged stops sweeping and, with it, stops pinging.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::fleet::Fleet;
use crate::systemd;

/// Sweeps every `interval` (or more often if the watchdog needs it) until `shutdown`.
pub async fn run(
    fleet: Arc<Fleet>,
    alerts: Arc<Alerts>,
    interval: Duration,
    watchdog: Option<Duration>,
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
        if watchdog.is_some() {
            systemd::watchdog_ping();
        }
    }
}

/// One sweep: every node that has just gone stale fires NODE_STALE.
pub fn sweep(fleet: &Fleet, alerts: &Alerts, now: Instant, wall: SystemTime) {
    for went in fleet.sweep(now) {
        alerts.node_stale(
            &went.node,
            went.generation,
            went.silent_for,
            fleet.stale_after(),
            wall,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Arrival, Report};
    use health_proto::v1::{AlertStatus, NodeSnapshot};

    #[test]
    fn a_sweep_marks_the_fleet_and_fires_node_stale() {
        let fleet = Fleet::new(Duration::from_secs(10), 16);
        let alerts = Alerts::new(16);
        let t0 = Instant::now();
        let report = Report {
            node: "n1".to_string(),
            boot_id: "b1".to_string(),
            seq: 1,
            snapshot: NodeSnapshot::default(),
        };
        let arrival = Arrival {
            peer: "127.0.0.1:1",
            at: t0,
            wall: SystemTime::now(),
        };
        fleet.apply(report, arrival);
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
}
