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
