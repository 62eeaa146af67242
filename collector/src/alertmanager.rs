//! Pushes the collector's alerts to Alertmanager (`POST <url>/api/v2/alerts`), so on-call gets
//! paged without a Prometheus in between.
//!
//! A dispatcher task watches the alert book like any WatchAlerts client and turns each firing
//! or resolved alert into Alertmanager's form: labels `alertname` (the on-call name), `node`,
//! `subject`, `device` (when about a device), `severity`, `code`, `priority` (P0..P3), and
//! `escalated="true"` once escalated; annotations `summary`,
//! `description`, `runbook`; `startsAt` (the condition's start on the agent's clock, but never
//! after now or endsAt, which Alertmanager would refuse); and `endsAt` = the resolve time, or for a firing
//! alert now + 4 × `resend_interval`. Firing alerts are sent again every `resend_interval`,
//! so Alertmanager keeps them while the collector lives and resolves them by itself soon
//! after it dies (what Prometheus does). If the dispatcher falls behind the broadcast, it
//! re-reads the firing set and resolves whatever it had sent that is no longer there.
//!
//! Each Alertmanager has its own outbox and delivery task: one being down delays nobody else.
//! The outbox holds the latest state per alert (keyed by fingerprint, severity, priority and
//! escalation, the labels that identify it in Alertmanager), so it is bounded by the number of distinct
//! alerts, capped at `push_queue`; updates beyond the cap are dropped and counted. A failed
//! POST (connection error, timeout after `push_timeout`, a non-2xx reply) keeps the batch's
//! alerts unless a newer state has arrived meanwhile, and waits with exponential backoff
//! (1 s doubling to 1 min) before trying again.
//!
//! Ingest never waits on this: the alert book's broadcast send does not block, and nothing
//! here holds the book's lock while talking to the network.
//!
//! HTTP: hyper 1 through hyper-util's pooled legacy client, both already in the dependency
//! tree under tonic; plain http (an Alertmanager on loopback or a management network).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use health_proto::v1::{Alert, AlertEvent, AlertStatus, Severity};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::config::AlertsConfig;

const API_PATH: &str = "/api/v2/alerts";
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Alerts per POST at most; a big outbox goes in several requests.
const BATCH: usize = 500;
/// Most bytes of an error reply kept for the log.
const REPLY_LIMIT: usize = 64 * 1024;

/// Counters of the push, for logs and metrics.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Alert states Alertmanager accepted (an alert re-sent counts again).
    pub sent_total: AtomicU64,
    /// POSTs that failed (connection, timeout, non-2xx).
    pub failed_total: AtomicU64,
    /// Alert states dropped because an outbox was full.
    pub dropped_total: AtomicU64,
}

/// One alert in Alertmanager's v2 `postableAlert` form.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    starts_at: String,
    ends_at: String,
}

/// What is waiting for one Alertmanager.
struct Outbox {
    url: String,
    waiting: Mutex<BTreeMap<String, PostableAlert>>,
    wake: Notify,
}

/// Starts the push if any Alertmanager is configured; the tasks end at `shutdown`.
pub fn spawn(
    config: &AlertsConfig,
    alerts: Arc<Alerts>,
    shutdown: CancellationToken,
) -> Option<(Vec<JoinHandle<()>>, Arc<PushStats>)> {
    if config.alertmanager.is_empty() {
        return None;
    }
    let stats = Arc::new(PushStats::default());
    let outboxes: Vec<Arc<Outbox>> = config
        .alertmanager
        .iter()
        .map(|url| {
            Arc::new(Outbox {
                url: format!("{url}{API_PATH}"),
                waiting: Mutex::new(BTreeMap::new()),
                wake: Notify::new(),
            })
        })
        .collect();
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.push_timeout));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);

    let mut tasks = Vec::with_capacity(outboxes.len() + 1);
    for outbox in &outboxes {
        tasks.push(tokio::spawn(deliver(
            Arc::clone(outbox),
            client.clone(),
            config.push_timeout,
            Arc::clone(&stats),
            shutdown.clone(),
        )));
    }
    let dispatcher = Dispatcher {
        outboxes,
        sent: HashMap::new(),
        resend_interval: config.resend_interval,
        capacity: config.push_queue,
        stats: Arc::clone(&stats),
    };
    tasks.push(tokio::spawn(dispatcher.run(alerts, shutdown)));
    tracing::info!(alertmanagers = ?config.alertmanager, resend_interval = %humantime::format_duration(config.resend_interval), "pushing alerts to Alertmanager");
    Some((tasks, stats))
}

/// Turns alert events into outbox entries, and re-sends the firing set periodically.
struct Dispatcher {
    outboxes: Vec<Arc<Outbox>>,
    /// Firing alerts as last handed to the outboxes, by fingerprint.
    sent: HashMap<String, Alert>,
    resend_interval: Duration,
    capacity: usize,
    stats: Arc<PushStats>,
}

impl Dispatcher {
    async fn run(mut self, alerts: Arc<Alerts>, shutdown: CancellationToken) {
        let (firing, mut events) = alerts.watch();
        for event in firing {
            if let Some(alert) = event.alert {
                self.update(alert);
            }
        }
        let mut resend = tokio::time::interval(self.resend_interval);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resend.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                event = events.recv() => match event {
                    Ok(event) => {
                        if let Some(alert) = event.alert {
                            self.update(alert);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        tracing::warn!(skipped, "Alertmanager push fell behind the alerts: re-reading the firing set");
                        events = self.reconcile(&alerts);
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = resend.tick() => {
                    let now = SystemTime::now();
                    let all: Vec<(String, PostableAlert)> = self
                        .sent
                        .values()
                        .map(|alert| (outbox_key(alert), self.postable(alert, now)))
                        .collect();
                    for (key, postable) in all {
                        self.enqueue(key, postable);
                    }
                }
            }
        }
    }

    /// Takes one alert event: a firing alert is (re)sent; a resolved one is sent resolved.
    fn update(&mut self, alert: Alert) {
        let now = SystemTime::now();
        let previous = self.sent.remove(&alert.fingerprint);
        if previous.is_none() && !alert.suppressed_by.is_empty() {
            // Suppressed (or resolved while suppressed) and never sent: nothing to take back.
            return;
        }
        if alert.status == AlertStatus::Firing as i32 {
            if let Some(old) = previous.filter(|old| outbox_key(old) != outbox_key(&alert)) {
                // Severity, priority and escalation are labels: to Alertmanager the old ones
                // are another alert, which must be resolved or it would linger until endsAt.
                let resolved = Alert {
                    status: AlertStatus::Resolved as i32,
                    ends_at: Some(now.into()),
                    ..old
                };
                let postable = self.postable(&resolved, now);
                self.enqueue(outbox_key(&resolved), postable);
            }
            let postable = self.postable(&alert, now);
            self.enqueue(outbox_key(&alert), postable);
            self.sent.insert(alert.fingerprint.clone(), alert);
        } else {
            // Resolve under the labels it was sent with.
            let resolved = match previous {
                Some(old) => Alert {
                    severity: old.severity,
                    priority: old.priority,
                    escalated: old.escalated,
                    ..alert
                },
                None => alert,
            };
            let postable = self.postable(&resolved, now);
            self.enqueue(outbox_key(&resolved), postable);
        }
    }

    /// After missing events: the firing set is read again; what was sent and is no longer
    /// firing is resolved. Returns the new event receiver.
    fn reconcile(&mut self, alerts: &Alerts) -> broadcast::Receiver<AlertEvent> {
        let (firing, events) = alerts.watch();
        let firing: HashMap<String, Alert> = firing
            .into_iter()
            .filter_map(|event| event.alert)
            .map(|alert| (alert.fingerprint.clone(), alert))
            .collect();
        let now = SystemTime::now();
        let gone: Vec<Alert> = self
            .sent
            .values()
            .filter(|alert| !firing.contains_key(&alert.fingerprint))
            .cloned()
            .collect();
        for alert in gone {
            self.update(Alert {
                status: AlertStatus::Resolved as i32,
                ends_at: Some(now.into()),
                ..alert
            });
        }
        for alert in firing.into_values() {
            self.update(alert);
        }
        events
    }

    fn postable(&self, alert: &Alert, now: SystemTime) -> PostableAlert {
        postable(alert, now, self.resend_interval)
    }

    fn enqueue(&self, key: String, alert: PostableAlert) {
        for outbox in &self.outboxes {
            {
                let mut waiting = outbox
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if waiting.len() >= self.capacity && !waiting.contains_key(&key) {
                    let dropped = self.stats.dropped_total.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(url = %outbox.url, dropped_total = dropped, "Alertmanager outbox full: alert update dropped");
                    }
                    continue;
                }
                waiting.insert(key.clone(), alert.clone());
            }
            outbox.wake.notify_one();
        }
    }
}

/// The labels that identify an alert in Alertmanager, as an outbox key.
fn outbox_key(alert: &Alert) -> String {
    format!(
        "{}|{}|{}|{}",
        alert.fingerprint, alert.severity, alert.priority, alert.escalated
    )
}

fn postable(alert: &Alert, now: SystemTime, resend_interval: Duration) -> PostableAlert {
    let mut labels = BTreeMap::new();
    let alertname = if alert.alertname.is_empty() {
        alert.name.clone()
    } else {
        alert.alertname.clone()
    };
    labels.insert("alertname", alertname.clone());
    labels.insert("node", alert.node.clone());
    labels.insert("subject", alert.subject.clone());
    if !alert.device.is_empty() {
        labels.insert("device", alert.device.clone());
    }
    labels.insert("severity", severity_label(alert.severity).to_string());
    labels.insert("code", alert.name.clone());
    if !alert.priority.is_empty() {
        labels.insert("priority", alert.priority.clone());
    }
    if alert.escalated {
        labels.insert("escalated", "true".to_string());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary",
        format!("{alertname} on {} ({})", alert.node, alert.subject),
    );
    annotations.insert("description", alert.message.clone());
    if !alert.runbook.is_empty() {
        annotations.insert("runbook", alert.runbook.clone());
    }
    let starts_at = alert
        .starts_at
        .and_then(|at| SystemTime::try_from(at).ok())
        .unwrap_or(now);
    // Resolved, or suppressed for maintenance (which resolves it in Alertmanager).
    let ends_at = if alert.status != AlertStatus::Firing as i32 {
        alert
            .ends_at
            .and_then(|at| SystemTime::try_from(at).ok())
            .unwrap_or(now)
    } else {
        now + resend_interval * 4
    };
    // startsAt is the condition's `since`, from the agent's wall clock; endsAt is from this
    // collector's. When the agent's clock is ahead (or this one was stepped back) the start can
    // fall after the end, and Alertmanager refuses such an alert ("start time must be before
    // end time") on every resend, so it would never page. Nothing can have started after now,
    // nor after it ended.
    let starts_at = starts_at.min(now).min(ends_at);
    PostableAlert {
        labels,
        annotations,
        starts_at: humantime::format_rfc3339_millis(starts_at).to_string(),
        ends_at: humantime::format_rfc3339_millis(ends_at).to_string(),
    }
}

/// The labels an alert carries in Alertmanager, which silence matchers are matched against.
pub fn labels(alert: &Alert) -> BTreeMap<&'static str, String> {
    postable(alert, SystemTime::now(), Duration::ZERO).labels
}

fn severity_label(severity: i32) -> &'static str {
    match Severity::try_from(severity) {
        Ok(Severity::Critical) => "critical",
        Ok(Severity::Warning) => "warning",
        Ok(Severity::Info) => "info",
        _ => "unknown",
    }
}

/// One Alertmanager's delivery loop: wait for work, POST it, back off on failure.
async fn deliver(
    outbox: Arc<Outbox>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    stats: Arc<PushStats>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF_INITIAL;
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = outbox.wake.notified() => {}
        }
        loop {
            let batch: Vec<(String, PostableAlert)> = {
                let mut waiting = outbox
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let keys: Vec<String> = waiting.keys().take(BATCH).cloned().collect();
                keys.into_iter()
                    .filter_map(|key| waiting.remove(&key).map(|alert| (key, alert)))
                    .collect()
            };
            if batch.is_empty() {
                break;
            }
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = post(&client, &outbox.url, &batch, timeout) => result,
            };
            match result {
                Ok(()) => {
                    stats
                        .sent_total
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    if failing {
                        tracing::info!(url = %outbox.url, "Alertmanager reachable again");
                    }
                    failing = false;
                    backoff = BACKOFF_INITIAL;
                }
                Err(error) => {
                    stats.failed_total.fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        tracing::warn!(url = %outbox.url, %error, "Alertmanager push failed; retrying with backoff");
                    } else {
                        tracing::debug!(url = %outbox.url, %error, "Alertmanager push failed again");
                    }
                    failing = true;
                    {
                        // Keep what failed, unless a newer state of the same alert came in.
                        let mut waiting = outbox
                            .waiting
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        for (key, alert) in batch {
                            waiting.entry(key).or_insert(alert);
                        }
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    batch: &[(String, PostableAlert)],
    timeout: Duration,
) -> Result<(), String> {
    let alerts: Vec<&PostableAlert> = batch.iter().map(|(_, alert)| alert).collect();
    let body = serde_json::to_vec(&alerts).map_err(|e| format!("cannot encode: {e}"))?;
    let request = hyper::Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("bad request for {url}: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let reply = Limited::new(response.into_body(), REPLY_LIMIT)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&reply);
            Err(format!("{url}: HTTP {status}: {}", text.trim()))
        }
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        format!(
            "{url}: no reply within {}",
            humantime::format_duration(timeout)
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn alert(status: AlertStatus) -> Alert {
        Alert {
            fingerprint: "n1/loihi-0/THERMAL_CRITICAL".to_string(),
            name: "THERMAL_CRITICAL".to_string(),
            alertname: "DeviceOverheating".to_string(),
            node: "n1".to_string(),
            subject: "loihi-0".to_string(),
            device: "loihi-0".to_string(),
            severity: Severity::Critical as i32,
            message: "91.0 C (critical above 90 C)".to_string(),
            status: status as i32,
            starts_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ends_at: Some(Timestamp {
                seconds: 1_700_000_600,
                nanos: 0,
            }),
            runbook: "Check the cooling".to_string(),
            pending_since: None,
            priority: "P0".to_string(),
            ..Alert::default()
        }
    }

    #[test]
    fn priority_and_escalation_are_labels() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let p = postable(&alert(AlertStatus::Firing), now, Duration::from_secs(60));
        assert_eq!(p.labels["priority"], "P0");
        assert!(!p.labels.contains_key("escalated"));
        let escalated = Alert {
            escalated: true,
            ..alert(AlertStatus::Firing)
        };
        let p = postable(&escalated, now, Duration::from_secs(60));
        assert_eq!(p.labels["escalated"], "true");
        // Another label set to Alertmanager: the outbox keeps both until the old one resolves.
        assert_ne!(
            outbox_key(&escalated),
            outbox_key(&alert(AlertStatus::Firing))
        );
    }

    #[test]
    fn a_firing_alert_has_the_labels_on_call_routes_on_and_expires_after_four_resends() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let p = postable(&alert(AlertStatus::Firing), now, Duration::from_secs(60));
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(json["labels"]["alertname"], "DeviceOverheating");
        assert_eq!(json["labels"]["node"], "n1");
        assert_eq!(json["labels"]["device"], "loihi-0");
        assert_eq!(json["labels"]["severity"], "critical");
        assert_eq!(json["labels"]["code"], "THERMAL_CRITICAL");
        assert_eq!(
            json["annotations"]["description"],
            "91.0 C (critical above 90 C)"
        );
        assert_eq!(json["annotations"]["runbook"], "Check the cooling");
        assert_eq!(json["startsAt"], "2023-11-14T22:13:20.000Z");
        // now + 4 min: Alertmanager resolves it by itself if the collector goes away.
        assert_eq!(json["endsAt"], "2023-11-14T22:19:00.000Z");
    }

    #[test]
    fn a_resolved_alert_ends_when_it_resolved() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_900);
        let p = postable(&alert(AlertStatus::Resolved), now, Duration::from_secs(60));
        assert_eq!(p.ends_at, "2023-11-14T22:23:20.000Z");
    }

    #[test]
    fn an_alert_dated_by_a_clock_ahead_of_the_collector_starts_no_later_than_now_or_its_end() {
        // The agent's clock is an hour ahead: its condition's `since` is in the collector's future.
        let since = Timestamp {
            seconds: 1_700_003_600,
            nanos: 0,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let firing = Alert {
            starts_at: Some(since),
            ..alert(AlertStatus::Firing)
        };
        let p = postable(&firing, now, Duration::from_secs(60));
        assert_eq!(
            p.starts_at, "2023-11-14T22:15:00.000Z",
            "now, not the future"
        );
        assert!(p.starts_at < p.ends_at, "{p:?}");

        let resolved = Alert {
            starts_at: Some(since),
            ..alert(AlertStatus::Resolved)
        };
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_900);
        let p = postable(&resolved, later, Duration::from_secs(60));
        assert_eq!(p.ends_at, "2023-11-14T22:23:20.000Z");
        assert_eq!(p.starts_at, p.ends_at, "it cannot start after it ended");
    }

    #[test]
    fn a_host_alert_has_no_device_label() {
        let host = Alert {
            device: String::new(),
            subject: "host".to_string(),
            ..alert(AlertStatus::Firing)
        };
        let p = postable(&host, SystemTime::now(), Duration::from_secs(60));
        assert!(!p.labels.contains_key("device"));
        assert_eq!(p.labels["subject"], "host");
    }
}
