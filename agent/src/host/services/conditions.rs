//! From one look at a service to its conditions: a pure function, so what each state means is
//! tested without systemd, servers or sockets.
//!
//! - SERVICE_DOWN (critical): the unit is failed or inactive, not found, or has been starting
//!   (or stopping) for longer than the rule's interval. The message gives the states and the
//!   restarts systemd made since the last check.
//! - SERVICE_UNHEALTHY: critical when the health URL did not answer 2xx (the solver is up but
//!   not serving, which is what its users see as down: the runbook's AnalogPDESolverDown starts
//!   from "HTTP health check failures"); a warning when the checks themselves could not run or
//!   systemd restarted an active unit since the last check (a restart loop that happens to be
//!   up right now). One condition per service, its reasons joined.
//! - PORT_NOT_LISTENING (critical): no listener on the port; nobody can reach the service.

use std::time::{Duration, SystemTime};

use health_hal::{Condition, ConditionCode, Severity};

use super::ServiceStatus;
use crate::config::ServiceRule;

/// States systemd passes through; one that lasts longer than an interval is a service that
/// does not come up (a crash loop shows as `activating`/`auto-restart`).
pub fn transitional(active_state: &str) -> bool {
    matches!(active_state, "activating" | "deactivating")
}

pub fn evaluate(
    rule: &ServiceRule,
    s: &ServiceStatus,
    transitional_for: Option<Duration>,
    now: SystemTime,
) -> Vec<Condition> {
    let subject = rule.subject();
    let mut out = Vec::new();
    let mut unhealthy: Vec<(Severity, String)> = Vec::new();
    let restarts = if s.restarts_since_last > 0 {
        format!(
            "; systemd restarted it {} time(s) since the last check",
            s.restarts_since_last
        )
    } else {
        String::new()
    };
    if let (Some(unit), Some(u)) = (&rule.unit, &s.unit_state) {
        let down = if u.load_state == "not-found" {
            Some(format!("unit {unit} does not exist (LoadState=not-found)"))
        } else if matches!(u.active_state.as_str(), "failed" | "inactive") {
            Some(format!(
                "unit {unit} is {} (SubState={}, NRestarts={}){restarts}",
                u.active_state, u.sub_state, u.restarts
            ))
        } else {
            transitional_for.filter(|d| *d >= rule.interval).map(|d| {
                format!(
                    "unit {unit} has been {} for {} (SubState={}, NRestarts={}){restarts}",
                    u.active_state,
                    humantime::format_duration(Duration::from_secs(d.as_secs())),
                    u.sub_state,
                    u.restarts
                )
            })
        };
        match down {
            Some(m) => out.push(Condition::new(
                ConditionCode::ServiceDown,
                Severity::Critical,
                subject.clone(),
                m,
                now,
            )),
            None if s.restarts_since_last > 0 => unhealthy.push((
                Severity::Warning,
                format!(
                    "unit {unit} is {} but systemd restarted it {} time(s) since the last check (NRestarts={})",
                    u.active_state, s.restarts_since_last, u.restarts
                ),
            )),
            None => {}
        }
    }
    if let Some(unit) = &rule.unit {
        if !s.unit_error.is_empty() {
            unhealthy.push((
                Severity::Warning,
                format!("cannot read unit {unit}'s state: {}", s.unit_error),
            ));
        }
    }
    if let Some(h) = &s.health {
        if !h.error.is_empty() {
            unhealthy.push((Severity::Critical, h.error.clone()));
        }
    }
    if let Some(port) = rule.port {
        match s.listening {
            Some(false) => out.push(Condition::new(
                ConditionCode::PortNotListening,
                Severity::Critical,
                subject.clone(),
                format!("nothing listens on TCP port {port} (no LISTEN socket in /proc/net/tcp or tcp6)"),
                now,
            )),
            Some(true) => {}
            None => unhealthy.push((
                Severity::Warning,
                format!("cannot tell whether TCP port {port} listens: {}", s.port_error),
            )),
        }
    }
    if !s.requests_error.is_empty() {
        unhealthy.push((
            Severity::Warning,
            format!("cannot read the request counter: {}", s.requests_error),
        ));
    }
    if let Some(severity) = unhealthy.iter().map(|(sev, _)| *sev).max() {
        unhealthy.sort_by_key(|(sev, _)| std::cmp::Reverse(*sev));
        let message = unhealthy
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Condition::new(
            ConditionCode::ServiceUnhealthy,
            severity,
            subject,
            message,
            now,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::check::{HealthAnswer, UnitState};
    use super::*;

    fn rule() -> ServiceRule {
        ServiceRule {
            name: "solver".into(),
            unit: Some("analog-pde-solver.service".into()),
            health_url: Some("http://127.0.0.1:8000/health".into()),
            port: Some(8000),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            error_counter: None,
        }
    }

    fn healthy() -> ServiceStatus {
        ServiceStatus {
            name: "solver".into(),
            unit_state: Some(UnitState {
                load_state: "loaded".into(),
                active_state: "active".into(),
                sub_state: "running".into(),
                restarts: 2,
            }),
            health: Some(HealthAnswer {
                status: 200,
                ..Default::default()
            }),
            listening: Some(true),
            ..Default::default()
        }
    }

    fn codes(c: &[Condition]) -> Vec<(ConditionCode, Severity)> {
        c.iter().map(|c| (c.code, c.severity)).collect()
    }

    #[test]
    fn a_healthy_service_has_no_conditions() {
        assert!(evaluate(&rule(), &healthy(), None, SystemTime::now()).is_empty());
    }

    #[test]
    fn each_failure_names_what_was_seen() {
        let mut s = healthy();
        if let Some(u) = s.unit_state.as_mut() {
            u.active_state = "failed".into();
            u.sub_state = "failed".into();
        }
        s.restarts_since_last = 1;
        s.health = Some(HealthAnswer {
            status: 500,
            error: "GET http://127.0.0.1:8000/health: status 500: db down".into(),
            latency: Duration::ZERO,
        });
        s.listening = Some(false);
        let c = evaluate(&rule(), &s, None, SystemTime::now());
        assert_eq!(
            codes(&c),
            vec![
                (ConditionCode::ServiceDown, Severity::Critical),
                (ConditionCode::PortNotListening, Severity::Critical),
                (ConditionCode::ServiceUnhealthy, Severity::Critical),
            ]
        );
        assert!(
            c[0].message.contains("analog-pde-solver.service is failed"),
            "{}",
            c[0].message
        );
        assert!(
            c[0].message.contains("restarted it 1 time"),
            "{}",
            c[0].message
        );
        assert!(c[1].message.contains("port 8000"), "{}", c[1].message);
        assert!(
            c[2].message.contains("status 500: db down"),
            "{}",
            c[2].message
        );
        assert!(c.iter().all(|c| c.subject == "service:solver"));
    }

    #[test]
    fn starting_longer_than_an_interval_is_down_and_a_restart_of_an_active_unit_a_warning() {
        let mut s = healthy();
        if let Some(u) = s.unit_state.as_mut() {
            u.active_state = "activating".into();
            u.sub_state = "auto-restart".into();
        }
        let now = SystemTime::now();
        assert!(evaluate(&rule(), &s, Some(Duration::from_secs(3)), now).is_empty());
        let c = evaluate(&rule(), &s, Some(Duration::from_secs(30)), now);
        assert_eq!(
            codes(&c),
            vec![(ConditionCode::ServiceDown, Severity::Critical)]
        );
        assert!(
            c[0].message.contains("activating for 30s"),
            "{}",
            c[0].message
        );
        let mut s = healthy();
        s.restarts_since_last = 2;
        let c = evaluate(&rule(), &s, None, now);
        assert_eq!(
            codes(&c),
            vec![(ConditionCode::ServiceUnhealthy, Severity::Warning)]
        );
    }
}
