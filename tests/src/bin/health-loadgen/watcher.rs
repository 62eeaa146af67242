//! The WatchAlerts subscriber: the control plane's view, where send-to-alert latency is
//! measured from each event's `report_sent_at` (the agent-side send time of the report that
//! caused it) to the moment the event arrives here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use health_proto::v1::collector_client::CollectorClient;
use health_proto::v1::{AlertStatus, WatchAlertsRequest};
use tonic::transport::Channel;

use crate::histogram::Histogram;

#[derive(Default)]
pub struct Counts {
    /// Events about our nodes caused by a report (they carry `report_sent_at`).
    pub from_reports: AtomicU64,
    pub firing: AtomicU64,
    pub resolved: AtomicU64,
    /// NODE_STALE firing and resolving for our nodes: under load, a sign that reports arrive
    /// later than `stale_after`. (Its resolution carries the resolving report's send time.)
    pub node_stale: AtomicU64,
    /// Other events the collector raised itself, without a report (a node forgotten).
    pub without_report: AtomicU64,
}

/// Subscribes, then counts and times events until the stream ends or the task is aborted.
/// Returns once subscribed (the response headers arrived), with the task reading on.
pub async fn start(
    channel: Channel,
    node_prefix: String,
    measure_from: SystemTime,
    latency: Arc<Histogram>,
    counts: Arc<Counts>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut client = CollectorClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut events = client
        .watch_alerts(WatchAlertsRequest {})
        .await
        .map_err(|status| anyhow::anyhow!("WatchAlerts: {status}"))?
        .into_inner();
    Ok(tokio::spawn(async move {
        loop {
            let event = match events.message().await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(status) => {
                    eprintln!("health-loadgen: WatchAlerts ended: {status}");
                    break;
                }
            };
            let arrived = SystemTime::now();
            let Some(alert) = event.alert else { continue };
            if !alert.node.starts_with(&node_prefix) {
                continue;
            }
            if alert.name == "NODE_STALE" {
                counts.node_stale.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(sent_at) = event.report_sent_at else {
                counts.without_report.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            counts.from_reports.fetch_add(1, Ordering::Relaxed);
            if alert.status == AlertStatus::Resolved as i32 {
                counts.resolved.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.firing.fetch_add(1, Ordering::Relaxed);
            }
            let Ok(sent_at) = SystemTime::try_from(sent_at) else {
                continue;
            };
            if sent_at >= measure_from {
                // Same host, same clock: the difference is the pipeline's latency.
                latency.record(arrived.duration_since(sent_at).unwrap_or_default());
            }
        }
    }))
}
