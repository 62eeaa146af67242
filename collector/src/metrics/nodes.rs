//! The per-node series of the nodes a scrape selected: every node through `health-metrics`
//! (the series an agent exports for itself; a stale node without its readings, its states
//! UNKNOWN) and the collector's own view of each node (staleness, last seen, seq, ingest
//! counters, the reporting agent), labelled with the name the collector holds the node under.
//!
//! Written family by family (`health_metrics::stream::write_by_family`): the text format wants
//! a family's samples together, and the page is never held whole, so each family is one pass
//! over the selected nodes that formats that family's samples alone.

use std::sync::Arc;

use health_metrics::node;
use health_metrics::stream::{write_by_family, ChunkWriter, ScraperGone};
use health_metrics::Exposition;
use health_proto::v1::{NodeSnapshot, NodeSummary};

/// Writes the per-node families of `nodes`.
pub fn write(
    out: &mut ChunkWriter,
    nodes: &[(NodeSummary, Arc<NodeSnapshot>)],
) -> Result<(), ScraperGone> {
    let mut all = Exposition::new();
    declare(&mut all);
    let families: Vec<&'static str> = all.family_names().collect();
    write_by_family(out, &families, nodes, declare, |e, (summary, snapshot)| {
        render(e, summary, snapshot);
    })?;
    Ok(())
}

/// Declares every per-node family, so a scrape that selects no node still lists them.
pub fn declare(out: &mut Exposition) {
    node::declare(out);
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
}

/// One node's series (in an `Exposition::only`, those of one family).
pub fn render(out: &mut Exposition, summary: &NodeSummary, snapshot: &NodeSnapshot) {
    let name = summary.node.as_str();
    let n = [("node", name)];
    node::render_named(out, name, snapshot, summary.state, !summary.stale);
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
