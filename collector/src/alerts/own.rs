//! The collector's own conditions, raised as alerts like a node's so they reach the same
//! watchers, `agent-ctl alerts`, the status page and Alertmanager: today one,
//! HISTORY_UNAVAILABLE, while the history writer cannot reach its database (events then
//! queue up to a bound and are dropped beyond it, so someone should know).
//!
//! They live in the alert book under the pseudo-node `collector/<collector_name>`, which no
//! agent reports as and the sweeper never marks stale or forgets; they are not written to the
//! history (the database is what is away).

use std::time::SystemTime;

use health_proto::v1::{Alert, AlertStatus, Severity};

use super::{resolved, Alerts, Phase, Tracked};

/// The code of the history outage.
pub const HISTORY_UNAVAILABLE: &str = "HISTORY_UNAVAILABLE";
const SUBJECT: &str = "history";

impl Alerts {
    /// Fires or resolves HISTORY_UNAVAILABLE for `collector` from the history writer's state
    /// (a no-op without history). Called by every sweep.
    pub fn check_history(&self, collector: &str, now: SystemTime) {
        let Some(history) = &self.history else {
            return;
        };
        let down_since = history.unavailable_since();
        let node = format!("collector/{collector}");
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let alerts = book.nodes.entry(node.clone()).or_default();
        let fingerprint = format!("{node}/{SUBJECT}/{HISTORY_UNAVAILABLE}");
        match (down_since, alerts.conditions.contains_key(&fingerprint)) {
            (Some(since), false) => {
                let alert = Alert {
                    fingerprint: fingerprint.clone(),
                    name: HISTORY_UNAVAILABLE.to_string(),
                    node: node.clone(),
                    subject: SUBJECT.to_string(),
                    severity: Severity::Warning as i32,
                    message: format!(
                        "collector {collector} cannot reach its history database: events queue \
                         in memory up to the bound, then are dropped (health_collector_history_dropped_total)"
                    ),
                    status: AlertStatus::Firing as i32,
                    starts_at: Some(since.into()),
                    alertname: "CollectorHistoryUnavailable".to_string(),
                    priority: self
                        .priorities
                        .priority_of(HISTORY_UNAVAILABLE, Severity::Warning as i32, 0)
                        .to_string(),
                    ..Alert::default()
                };
                tracing::warn!(%fingerprint, "alert firing");
                self.publish(alert.clone(), None);
                alerts.conditions.insert(
                    fingerprint,
                    Tracked {
                        alert,
                        report_sent_at: None,
                        phase: Phase::Firing,
                        escalate_at: None,
                    },
                );
            }
            (None, true) => {
                if let Some(tracked) = alerts.conditions.remove(&fingerprint) {
                    tracing::info!(%fingerprint, "alert resolved: history database reachable");
                    self.publish(resolved(tracked.alert, now), None);
                }
                book.nodes.remove(&node);
            }
            (None, false) => {
                book.nodes.remove(&node);
            }
            (Some(_), true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::alerts::PendingRules;
    use crate::history::{History, HistoryBackend, PgTarget};

    fn wait_for(what: &str, done: &dyn Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_history_outage_fires_an_alert_on_the_collector_and_its_return_resolves_it() {
        let mut server = health_e2e::postgres::PgServer::start().expect("start PostgreSQL");
        let url = server.create_database("own").expect("database");
        let target = PgTarget::new(
            &format!("{url}?sslmode=disable"),
            Some(server.password_file()),
        )
        .expect("target");
        let history = History::open_backend(
            &HistoryBackend::Postgres(Box::new(target)),
            "c1",
            Duration::from_secs(3600),
            16,
        )
        .expect("open");
        let alerts = Alerts::with(16, PendingRules::default(), Some(history.sink()));
        let firing = |alerts: &Alerts| -> Vec<String> {
            alerts
                .watch()
                .0
                .into_iter()
                .filter_map(|event| event.alert.map(|alert| alert.fingerprint))
                .collect()
        };
        alerts.check_history("c1", SystemTime::now());
        assert!(firing(&alerts).is_empty(), "reachable: nothing fires");

        server.stop().expect("stop");
        // The writer notices on its next statement: a record makes one.
        history.sink().held("n1", SystemTime::now());
        let sink = history.sink();
        wait_for("the outage seen", &|| sink.unavailable_since().is_some());
        alerts.check_history("c1", SystemTime::now());
        assert_eq!(
            firing(&alerts),
            vec!["collector/c1/history/HISTORY_UNAVAILABLE".to_string()]
        );

        server.restart().expect("restart");
        wait_for("the database back", &|| sink.unavailable_since().is_none());
        let (_, mut events) = alerts.watch();
        alerts.check_history("c1", SystemTime::now());
        assert!(firing(&alerts).is_empty(), "back: resolved");
        let resolved = events.try_recv().expect("a resolved event");
        assert_eq!(
            resolved.alert.map(|alert| alert.status),
            Some(AlertStatus::Resolved as i32)
        );
        history.close();
    }
}
