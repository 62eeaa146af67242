//! The collector's `/metrics`, built to be scraped every 15 s however large the fleet.
//!
//! - A scrape with no query gets the fleet aggregates (`aggregate.rs`: nodes by state and by
//!   report age, devices by kind and state, conditions by code and severity, fleet-wide ingest
//!   counters, alerts firing by code, severity and priority) and the collector's own series
//!   (the lease budget, silences, gRPC latencies). Its size does not grow with the fleet.
//! - The per-node series (what an agent exports for itself, plus the collector's per-node
//!   ingest counters and staleness) are written only for the nodes a scrape selects, with
//!   `match[]={node=~"..."}` or `shard=i&of=n` (`select.rs`), so one Prometheus job can spread
//!   a large fleet over several scrape targets. A scrape that selects nodes gets their series
//!   and nothing else, so aggregates are never stored once per shard.
//!
//! Both are written as a stream (`health_metrics::stream`): the fleet hands over its summaries
//! and snapshot `Arc`s under its read lock, the alert book its firing set, and the text is
//! formatted after both are released, on the blocking pool, into bounded chunks; the page is
//! never in memory whole, whatever it selects.

mod aggregate;
mod nodes;
pub mod select;

use std::sync::Arc;

use health_metrics::http::StreamedPage;
use health_metrics::rpc::RpcStats;
use health_metrics::stream::{ChunkWriter, ScraperGone};
use health_metrics::Exposition;

use crate::alerts::Alerts;
use crate::fleet::Fleet;
use crate::leases::Leases;
use select::Selection;

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

impl StreamedPage for CollectorMetrics {
    type Plan = Selection;

    fn plan(&self, query: Option<&str>) -> Result<Selection, String> {
        select::parse(query)
    }

    fn write(&self, plan: Selection, out: &mut ChunkWriter) -> Result<(), ScraperGone> {
        match plan {
            // Bounded by the number of codes, kinds and methods, not by the fleet: one piece.
            Selection::Aggregates => out.write_str(&self.render_aggregates()),
            Selection::Nodes(filter) => {
                // Only the selected nodes' snapshots are held while their text is written.
                let selected = self.fleet.scrape_where(|node| filter.selects(node));
                nodes::write(out, &selected)
            }
        }
    }
}

impl CollectorMetrics {
    /// The default scrape: the fleet aggregates and the collector's own series.
    pub fn render_aggregates(&self) -> String {
        let scraped = self.fleet.scrape();
        let (firing, receiver) = self.alerts.watch();
        // Only the firing set is wanted; unsubscribe at once.
        drop(receiver);

        let mut out = Exposition::new();
        out.gauge("health_collector_nodes", "Nodes the collector holds.")
            .sample(&[], scraped.nodes.len() as f64);
        out.gauge(
            "health_collector_max_nodes",
            "Most nodes the collector holds (max_nodes); reports from new nodes beyond it are refused.",
        )
        .sample(&[], self.fleet.max_nodes() as f64);
        out.counter(
            "health_collector_reports_refused_total",
            "Reports refused because they came from a new node while the fleet was full.",
        )
        .sample(&[], scraped.refused_total as f64);
        aggregate::render_fleet(&mut out, &scraped, std::time::SystemTime::now());
        // The snapshots are not needed for the rest: let ingest free replaced ones now.
        drop(scraped);
        aggregate::render_alerts(&mut out, &firing);
        drop(firing);

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use health_proto::v1 as pb;

    use super::*;
    use crate::fleet::{Arrival, Limits, Report};

    fn snapshot(node: &str) -> pb::NodeSnapshot {
        let device = |i: usize| pb::Device {
            identity: Some(pb::DeviceIdentity {
                id: format!("dev-{i}"),
                kind: pb::DeviceKind::Photonic as i32,
                ..Default::default()
            }),
            state: pb::HealthState::Warning as i32,
            readings: vec![pb::Reading {
                sensor: "chip".into(),
                quantity: pb::Quantity::TemperatureCelsius as i32,
                value: 40.0,
                observed_at: None,
            }],
            conditions: vec![pb::Condition {
                code: pb::ConditionCode::ThermalWarning as i32,
                severity: pb::Severity::Warning as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        pb::NodeSnapshot {
            node: node.into(),
            state: pb::HealthState::Warning as i32,
            devices: (0..8).map(device).collect(),
            ..Default::default()
        }
    }

    fn metrics_of(nodes: usize) -> CollectorMetrics {
        let fleet = Arc::new(Fleet::new(
            Limits {
                stale_after: Duration::from_secs(3600),
                forget_after: Duration::from_secs(7200),
                max_nodes: 100_000,
            },
            16,
        ));
        let arrival = Arrival {
            peer: "test",
            at: Instant::now(),
            wall: SystemTime::now(),
        };
        for i in 0..nodes {
            let node = format!("n{i}");
            let report = Report {
                snapshot: snapshot(&node),
                node,
                boot_id: "b".into(),
                seq: 1,
            };
            fleet.apply(report, arrival).unwrap();
        }
        CollectorMetrics {
            fleet,
            alerts: Arc::new(Alerts::new(16)),
            leases: Arc::new(Leases::new(crate::config::LeasesConfig::default())),
            rpc: RpcStats::new(),
            silences: crate::silences::Silences::new(None, Arc::default()),
            history: None,
        }
    }

    #[test]
    fn the_default_scrape_is_the_same_size_for_a_small_and_a_large_fleet() {
        let small = metrics_of(3).render_aggregates();
        let large = metrics_of(400).render_aggregates();
        assert_eq!(small.lines().count(), large.lines().count(), "{large}");
        assert!(!large.contains("node=\""), "{large}");
        for line in [
            "health_collector_nodes 400\n",
            "health_collector_nodes_by_state{state=\"warning\"} 400\n",
            "health_collector_devices{kind=\"photonic\",state=\"warning\"} 3200\n",
            "health_collector_conditions{code=\"THERMAL_WARNING\",severity=\"warning\"} 3200\n",
            "health_collector_reports_total 400\n",
            "health_collector_node_report_age_seconds_count 400\n",
        ] {
            assert!(large.contains(line), "{line} in\n{large}");
        }
    }

    #[test]
    fn a_node_scrape_writes_the_selected_nodes_family_by_family() {
        let metrics = metrics_of(50);
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut out = ChunkWriter::new(tx);
        let plan = metrics
            .plan(Some("match[]=%7Bnode%3D~%22n1.%22%7D"))
            .unwrap();
        metrics.write(plan, &mut out).unwrap();
        out.finish().unwrap();
        let mut text = String::new();
        while let Ok(chunk) = rx.try_recv() {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        let nodes: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split("node=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .collect();
        let want: std::collections::BTreeSet<String> = (10..20).map(|i| format!("n{i}")).collect();
        assert_eq!(nodes, want.iter().map(String::as_str).collect(), "{text}");
        // One HELP per family, and every family's samples together.
        let mut families = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            if families.last() != Some(&name) {
                assert!(!families.contains(&name), "{name} split in two");
                families.push(name);
            }
        }
        assert_eq!(
            text.matches("# HELP health_node_state ").count(),
            1,
            "{text}"
        );
        assert!(!text.contains("health_collector_"), "{text}");
    }
}
