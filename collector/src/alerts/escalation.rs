//! Escalation of firing alerts: the alert book's side of `priority.rs`. A firing alert gets
//! an entry in the escalation clock (a second due-time index, beside the pending one); the
//! sweeper pops what is due, and only a still-firing alert is re-sent one priority higher.

use super::*;

impl Alerts {
    /// When an alert that fired at `at` escalates, entered on the escalation clock.
    pub(super) fn schedule_escalation(&self, alert: &Alert, at: Instant) -> Option<Instant> {
        let priority = Priority::parse(&alert.priority)?;
        let mut clock = self
            .escalations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        clock.schedule(
            &self.priorities,
            priority,
            at,
            &alert.node,
            &alert.fingerprint,
        )
    }

    pub(super) fn cancel_escalation(&self, node: &str, tracked: &Tracked) {
        let mut clock = self
            .escalations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        clock.cancel(tracked.escalate_at, node, &tracked.alert.fingerprint);
    }

    /// Escalates the firing alerts whose priority's `escalate_after` has passed by `at`: one
    /// priority higher, `escalated`, re-sent to watchers (and so to Alertmanager), and an
    /// ESCALATION in the history. Looks only at the clock's head.
    pub(super) fn escalate_due(
        &self,
        nodes: &mut BTreeMap<String, NodeAlerts>,
        at: Instant,
        now: SystemTime,
    ) {
        loop {
            let next = {
                let mut clock = self
                    .escalations
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                clock.pop_due(at)
            };
            let Some((when, node, fingerprint)) = next else {
                break;
            };
            let Some(alerts) = nodes.get_mut(&node) else {
                continue;
            };
            let last_heard = alerts.last_report;
            let (tracked, stale) = match alerts.stale.as_mut() {
                Some(stale) if stale.alert.fingerprint == fingerprint => (Some(stale), true),
                _ => (alerts.conditions.get_mut(&fingerprint), false),
            };
            // A leftover of an alert that resolved (and maybe fired again) since.
            let Some(tracked) = tracked.filter(|t| t.escalate_at == Some(when)) else {
                continue;
            };
            if !matches!(tracked.phase, Phase::Firing) {
                tracked.escalate_at = None;
                continue;
            }
            tracked.escalate_at = None;
            let Some((from, after)) = escalate(&self.priorities, &mut tracked.alert, now) else {
                continue;
            };
            if let Some(history) = &self.history {
                if stale {
                    // Like NODE_STALE itself: not written if the node reports elsewhere.
                    history
                        .for_absent_node(last_heard.unwrap_or(SystemTime::UNIX_EPOCH))
                        .escalation(&tracked.alert, from, after, now);
                } else {
                    history.escalation(&tracked.alert, from, after, now);
                }
            }
            self.publish(tracked.alert.clone(), tracked.report_sent_at);
        }
    }
}
