//! The service checker: the `[[service]]` rules' units, health URLs and ports, looked at from
//! outside every rule's `interval`, and the conditions they raise (SERVICE_DOWN,
//! SERVICE_UNHEALTHY, PORT_NOT_LISTENING, subject `service:<name>`). The rules are parsed by
//! `config::service`; restarting a unit is an action (`action::service`) that goes through
//! `action::Actions::run` like a device reset.
//!
//! One task per rule, so a slow service delays only its own checks; every part of a check is
//! bounded by the rule's `timeout` (see `check.rs`), so a task never waits longer than that
//! per interval. The node merges the newest report into the host, as it does the process
//! watchdog's. `check_now` lets the remediation engine verify a restart on a fresh check
//! instead of one taken before the restart.

pub mod check;
pub mod conditions;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use health_hal::{rollup, Condition, ConditionTracker, HealthState};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

pub use crate::config::ServiceRule;
use check::{HealthAnswer, Http, RequestCounts, UnitState};

/// One service as last checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub unit: Option<String>,
    /// `None` without a unit, or when `systemctl show` failed (`unit_error` says why).
    pub unit_state: Option<UnitState>,
    pub unit_error: String,
    /// NRestarts growth since the previous check (systemd's own restarts).
    pub restarts_since_last: u32,
    pub health_url: Option<String>,
    pub health: Option<HealthAnswer>,
    pub port: Option<u16>,
    /// `None` without a port, or when the socket tables could not be read (`port_error`).
    pub listening: Option<bool>,
    pub port_error: String,
    /// The service's own request counter by class (`error_counter`), for HighErrorRate.
    pub requests: Option<RequestCounts>,
    pub requests_error: String,
    /// `None` until the first check has finished.
    pub checked_at: Option<SystemTime>,
}

/// The newest check of every rule, in rule order.
#[derive(Debug, Clone, Default)]
pub struct ServiceReport {
    pub services: Vec<ServiceStatus>,
    by_rule: Vec<Vec<Condition>>,
}

impl ServiceReport {
    pub fn conditions(&self) -> impl Iterator<Item = &Condition> {
        self.by_rule.iter().flatten()
    }

    pub fn state(&self) -> HealthState {
        rollup(self.conditions())
    }
}

/// What the node, the restart action and the remediation engine need: the rules, the newest
/// report and a way to ask for a check now.
#[derive(Clone)]
pub struct ServiceWatch {
    pub rules: Arc<Vec<ServiceRule>>,
    pub report: watch::Receiver<Arc<ServiceReport>>,
    recheck: Arc<Vec<Notify>>,
}

impl ServiceWatch {
    pub fn rule(&self, name: &str) -> Option<&ServiceRule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Checks the service now and waits for the result (bounded: a few of its timeouts).
    /// Returns whether a fresh result arrived.
    pub async fn check_now(&self, name: &str) -> bool {
        let Some(i) = self.rules.iter().position(|r| r.name == name) else {
            return false;
        };
        let before = self
            .report
            .borrow()
            .services
            .get(i)
            .and_then(|s| s.checked_at);
        let mut rx = self.report.clone();
        self.recheck[i].notify_one();
        let bound = self.rules[i].timeout * 4 + Duration::from_secs(1);
        let fresh = async {
            rx.wait_for(|r| r.services.get(i).and_then(|s| s.checked_at) != before)
                .await
                .is_ok()
        };
        tokio::time::timeout(bound, fresh).await.unwrap_or(false)
    }
}

/// Starts one checker task per rule; `None` when no `[[service]]` rule is configured.
pub fn spawn(rules: Vec<ServiceRule>, cancel: CancellationToken) -> Option<ServiceWatch> {
    if rules.is_empty() {
        return None;
    }
    let initial = ServiceReport {
        services: rules
            .iter()
            .map(|r| ServiceStatus {
                name: r.name.clone(),
                unit: r.unit.clone(),
                health_url: r.health_url.clone(),
                port: r.port,
                ..Default::default()
            })
            .collect(),
        by_rule: vec![Vec::new(); rules.len()],
    };
    let (tx, rx) = watch::channel(Arc::new(initial));
    let recheck: Arc<Vec<Notify>> = Arc::new(rules.iter().map(|_| Notify::new()).collect());
    let rules = Arc::new(rules);
    for i in 0..rules.len() {
        let (rules, tx, recheck, cancel) =
            (rules.clone(), tx.clone(), recheck.clone(), cancel.clone());
        tokio::spawn(async move { run(i, &rules[i], &tx, &recheck[i], cancel).await });
    }
    Some(ServiceWatch {
        rules,
        report: rx,
        recheck,
    })
}

/// One rule's loop: check every interval (or when asked), publish status and conditions.
async fn run(
    i: usize,
    rule: &ServiceRule,
    tx: &watch::Sender<Arc<ServiceReport>>,
    recheck: &Notify,
    cancel: CancellationToken,
) {
    let client = check::http_client(rule.timeout);
    let mut tracker = ConditionTracker::default();
    let mut last_restarts: Option<u32> = None;
    let mut transitional_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(rule.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            _ = recheck.notified() => tick.reset(),
        }
        let mut status = look(rule, &client).await;
        if let Some(u) = &status.unit_state {
            status.restarts_since_last = last_restarts.map_or(0, |p| u.restarts.saturating_sub(p));
            last_restarts = Some(u.restarts);
            if conditions::transitional(&u.active_state) {
                transitional_since.get_or_insert_with(Instant::now);
            } else {
                transitional_since = None;
            }
        }
        let now = SystemTime::now();
        let found =
            conditions::evaluate(rule, &status, transitional_since.map(|t| t.elapsed()), now);
        let found = tracker.track(found);
        tx.send_modify(|r| {
            let mut next = (**r).clone();
            if let (Some(s), Some(c)) = (next.services.get_mut(i), next.by_rule.get_mut(i)) {
                *s = status;
                *c = found;
            }
            *r = Arc::new(next);
        });
    }
}

/// The parts of one check, run side by side, each bounded by the rule's timeout.
async fn look(rule: &ServiceRule, client: &Http) -> ServiceStatus {
    let unit = async {
        match &rule.unit {
            Some(u) => Some(check::unit_state(u, rule.timeout).await),
            None => None,
        }
    };
    let health = async {
        match &rule.health_url {
            Some(url) => Some(check::health(client, url, rule.timeout).await),
            None => None,
        }
    };
    let port = async {
        match rule.port {
            Some(p) => Some(check::listening(p, rule.timeout).await),
            None => None,
        }
    };
    let requests = async {
        match &rule.error_counter {
            Some(c) => {
                Some(check::request_counts(client, &c.metrics_url, &c.name, rule.timeout).await)
            }
            None => None,
        }
    };
    let (unit, health, port, requests) = tokio::join!(unit, health, port, requests);
    let (unit_state, unit_error) = split(unit);
    let (listening, port_error) = split(port);
    let (requests, requests_error) = split(requests);
    ServiceStatus {
        name: rule.name.clone(),
        unit: rule.unit.clone(),
        unit_state,
        unit_error,
        restarts_since_last: 0,
        health_url: rule.health_url.clone(),
        health,
        port: rule.port,
        listening,
        port_error,
        requests,
        requests_error,
        checked_at: Some(SystemTime::now()),
    }
}

fn split<T>(r: Option<Result<T, String>>) -> (Option<T>, String) {
    match r {
        None => (None, String::new()),
        Some(Ok(v)) => (Some(v), String::new()),
        Some(Err(e)) => (None, e),
    }
}
