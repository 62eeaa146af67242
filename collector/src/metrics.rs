//! The collector's `/metrics`: every node it holds (the same series an agent exports for
//! itself, from the node's latest report), per-node ingest counters (reports, duplicates,
//! missing seqs, staleness), firing alerts, the remediation lease budget (grants, refusals by
//! reason, leases held, the circuit breaker), and gRPC latencies.
//!
//! Rendered at scrape time: the fleet hands over its summaries and snapshot `Arc`s under its
//! read lock, the alert book its firing set, and the text is formatted after both are
//! released, on the blocking pool (see `health_metrics::http`), so ingest never waits on a
//! scrape for longer than it takes to copy the pointers.

use std::collections::BTreeMap;
use std::sync::Arc;

use health_metrics::node;
use health_metrics::rpc::RpcStats;
use health_metrics::Exposition;

use crate::alerts::Alerts;
use crate::fleet::Fleet;
use crate::leases::Leases;

/// Everything a scrape reads.
pub struct CollectorMetrics {
    pub fleet: Arc<Fleet>,
    pub alerts: Arc<Alerts>,
    pub leases: Arc<Leases>,
    pub rpc: Arc<RpcStats>,
    pub silences: Arc<crate::silences::Silences>,
    /// The history writer's counters, when history is kept.
    pub history: Option<Arc<crate::history::HistoryStats>>,
}

impl CollectorMetrics {
    pub fn render(&self) -> String {
        let (nodes, refused_total) = self.fleet.scrape();
        let (firing, receiver) = self.alerts.watch();
        // Only the firing set is wanted; unsubscribe at once.
        drop(receiver);

        let mut out = Exposition::new();
        out.gauge("health_collector_nodes", "Nodes the collector holds.")
            .sample(&[], nodes.len() as f64);
        out.gauge(
            "health_collector_max_nodes",
            "Most nodes the collector holds (max_nodes); reports from new nodes beyond it are refused.",
        )
        .sample(&[], self.fleet.max_nodes() as f64);
        out.counter(
            "health_collector_reports_refused_total",
            "Reports refused because they came from a new node while the fleet was full.",
        )
        .sample(&[], refused_total as f64);

        self.render_leases(&mut out);
        if let Some(history) = &self.history {
            history.render(&mut out);
        }
        out.counter(
            "health_collector_silence_sync_failures_total",
            "Rounds of keeping maintenance silences in Alertmanager that failed (retried with backoff).",
        )
        .sample(
            &[],
            self.silences
                .sync_failures
                .load(std::sync::atomic::Ordering::Relaxed) as f64,
        );

        let mut by_code: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        // The watch set also holds alerts suppressed for maintenance: those do not fire.
        let firing_status = health_proto::v1::AlertStatus::Firing as i32;
        for event in &firing {
            if let Some(alert) = event.alert.as_ref().filter(|a| a.status == firing_status) {
                *by_code
                    .entry((alert.name.clone(), node::severity_name(alert.severity)))
                    .or_insert(0) += 1;
            }
        }
        let mut alerts = out.gauge(
            "health_collector_alerts_firing",
            "Alerts firing in the collector's own evaluation (WatchAlerts), by code and severity.",
        );
        for ((code, severity), count) in &by_code {
            alerts.sample(&[("code", code), ("severity", severity)], *count as f64);
        }

        node::declare(&mut out);
        // Declared before the loop so an empty fleet still shows every family.
        out.gauge(
            "health_node_stale",
            "1 while the node has sent no report for stale_after (its data is old).",
        );
        out.gauge(
            "health_node_last_seen_timestamp_seconds",
            "When the collector last received a report from the node, Unix seconds.",
        );
        out.gauge(
            "health_node_last_seq",
            "Highest report seq applied for the node's current boot.",
        );
        out.gauge(
            "health_node_devices",
            "Devices in the node's latest report.",
        );
        out.counter(
            "health_node_reports_total",
            "Reports received from the node, duplicates included.",
        );
        out.counter(
            "health_node_duplicate_reports_total",
            "Reports from the node whose seq was already applied (dropped).",
        );
        out.counter(
            "health_node_missing_reports_total",
            "Report seqs of the node never received (gaps in its sequence).",
        );
        out.gauge(
            "health_node_info",
            "The node's reporting agent (always 1): boot id and agent version.",
        );
        for (summary, snapshot) in &nodes {
            let name = summary.node.as_str();
            let n = [("node", name)];
            node::render(&mut out, snapshot, summary.state, !summary.stale);
            out.gauge("health_node_stale", "")
                .sample(&n, if summary.stale { 1.0 } else { 0.0 });
            if let Some(t) = &summary.last_seen {
                out.gauge("health_node_last_seen_timestamp_seconds", "")
                    .sample(&n, node::seconds(t));
            }
            out.gauge("health_node_last_seq", "")
                .sample(&n, summary.last_seq as f64);
            out.gauge("health_node_devices", "")
                .sample(&n, f64::from(summary.device_count));
            out.counter("health_node_reports_total", "")
                .sample(&n, summary.reports_total as f64);
            out.counter("health_node_duplicate_reports_total", "")
                .sample(&n, summary.duplicates_total as f64);
            out.counter("health_node_missing_reports_total", "")
                .sample(&n, summary.missing_total as f64);
            out.gauge("health_node_info", "").sample(
                &[
                    ("node", name),
                    ("boot_id", summary.boot_id.as_str()),
                    ("agent_version", snapshot.agent_version.as_str()),
                ],
                1.0,
            );
        }
        self.rpc.render(&mut out, &[]);
        out.render()
    }

    fn render_leases(&self, out: &mut Exposition) {
        let leases = self.leases.status();
        out.counter(
            "health_collector_lease_grants_total",
            "Remediation leases granted to agents (a retried request granted again counts once).",
        )
        .sample(&[], leases.grants_total as f64);
        let mut refusals = out.counter(
            "health_collector_lease_refusals_total",
            "Remediation lease requests refused, by reason: max_concurrent, window (the \
             max_fraction budget), breaker (circuit breaker open), busy (the device holds one).",
        );
        for (why, count) in leases.refusals_total {
            refusals.sample(&[("reason", why.label())], count as f64);
        }
        out.gauge(
            "health_collector_leases_active",
            "Remediation leases held now (granted, neither released nor expired).",
        )
        .sample(&[], leases.active as f64);
        out.gauge(
            "health_collector_lease_breaker_open",
            "1 while the lease circuit breaker is open (a storm of failing devices, or its cooldown).",
        )
        .sample(&[], if leases.breaker_open { 1.0 } else { 0.0 });
    }
}
